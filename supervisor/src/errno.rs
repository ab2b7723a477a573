//! An OS error in people's words: the message alone, without std's "(os error
//! N)". Used by every module that renders a failed system call for a job file's
//! author (setup, sandbox, cgroups, spawn), so that none of them depends on
//! another for it.

use std::io;

/// The message of `errno`.
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// `e`'s message; an OS error's without its number.
pub fn no_os_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => strerror(n),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_lose_their_number_and_others_keep_their_words() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        let os = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(no_os_error(&os), "Permission denied");
        let other = io::Error::other("no such user");
        assert_eq!(no_os_error(&other), "no such user");
    }
}
