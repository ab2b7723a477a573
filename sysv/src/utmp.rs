//! The login records sysvinit kept for the system and that `who -b`, `runlevel`,
//! `last reboot` and sysvinit's own `halt`/`poweroff` read: the boot record
//! (BOOT_TIME) and the current runlevel (RUN_LVL) in utmp, and the same plus a
//! `shutdown` record appended to wtmp. The records are written exactly as sysvinit
//! writes them (user `reboot`/`runlevel`/`shutdown`, id `~~`, line `~`, the
//! runlevel and previous runlevel as characters in ut_pid, the kernel release in
//! ut_host), through glibc's own utmp functions, which lock the files the way
//! login, sshd and agetty do.

use std::ffi::{CString, c_char};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One of the records this module writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The machine booted at `at` running kernel `kernel`.
    Boot { at: SystemTime, kernel: String },
    /// The runlevel changed to `level` from `previous` (`N` for none).
    Runlevel {
        level: char,
        previous: char,
        at: SystemTime,
    },
    /// The system is going down (wtmp only, as sysvinit's halt).
    Shutdown { at: SystemTime, kernel: String },
}

fn copy_str(dest: &mut [c_char], text: &str) {
    // Truncated to the field, NUL-padded (utmp strings need no terminator).
    for (d, s) in dest.iter_mut().zip(text.bytes()) {
        *d = s as c_char;
    }
}

/// The glibc record for `record`.
pub fn to_utmpx(record: &Record) -> libc::utmpx {
    // SAFETY: utmpx is plain C data (integers and char arrays); all zeroes is
    // its empty record, and glibc's own code starts from one.
    let mut ut: libc::utmpx = unsafe { std::mem::zeroed() };
    let (kind, user, line, pid, at, host) = match record {
        Record::Boot { at, kernel } => (libc::BOOT_TIME, "reboot", "~", 0, *at, kernel.as_str()),
        Record::Runlevel {
            level,
            previous,
            at,
        } => {
            // sysvinit: thislevel + 256 * prevlevel, both as characters; a
            // previous level of none is 'N', which `runlevel` prints as such.
            let pid = (*level as i32) + 256 * (*previous as i32);
            (libc::RUN_LVL, "runlevel", "~", pid, *at, "")
        }
        Record::Shutdown { at, kernel } => {
            (libc::RUN_LVL, "shutdown", "~~", 0, *at, kernel.as_str())
        }
    };
    ut.ut_type = kind;
    ut.ut_pid = pid;
    copy_str(&mut ut.ut_user, user);
    copy_str(&mut ut.ut_line, line);
    copy_str(&mut ut.ut_id, "~~");
    copy_str(&mut ut.ut_host, host);
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    // utmp's time is 32-bit on x86_64 (glibc keeps the on-disk format); saturate.
    ut.ut_tv.tv_sec = i32::try_from(since.as_secs()).unwrap_or(i32::MAX);
    ut.ut_tv.tv_usec = since.subsec_micros() as i32;
    ut
}

fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains NUL"))
}

unsafe extern "C" {
    /// glibc: append one record to a wtmp file, under its lock.
    fn updwtmpx(file: *const c_char, ut: *const libc::utmpx);
}

/// Writes `ut` into the utmp file `path`, replacing the record of the same kind
/// and id (so there is one BOOT_TIME and one RUN_LVL record), as sysvinit does.
pub fn put_utmp(path: &Path, ut: &libc::utmpx) -> io::Result<()> {
    let file = c_path(path)?;
    // SAFETY: glibc's utmp functions keep process-global state; this program is
    // single-threaded and every pointer is valid for the duration of the calls.
    // utmpxname copies the name.
    let written = unsafe {
        if libc::utmpxname(file.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::setutxent();
        let r = libc::pututxline(ut);
        let err = io::Error::last_os_error();
        libc::endutxent();
        if r.is_null() { Err(err) } else { Ok(()) }
    };
    written.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Appends `ut` to the wtmp file `path` (which must exist: like glibc, keel does
/// not create wtmp; the job set creates it with its owner and mode).
pub fn append_wtmp(path: &Path, ut: &libc::utmpx) -> io::Result<()> {
    if !path.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no such file", path.display()),
        ));
    }
    let file = c_path(path)?;
    // SAFETY: both pointers are valid for the call; updwtmpx only reads them.
    unsafe { updwtmpx(file.as_ptr(), ut) };
    Ok(())
}

/// Reads every record of a utmp or wtmp file (for tests and `keel-utmp show`).
pub fn read_all(path: &Path) -> io::Result<Vec<libc::utmpx>> {
    let bytes = std::fs::read(path)?;
    let size = std::mem::size_of::<libc::utmpx>();
    Ok(bytes
        .chunks_exact(size)
        .map(|chunk| {
            // SAFETY: chunk holds size_of::<utmpx>() bytes and utmpx is plain
            // data for which every bit pattern is valid; read_unaligned copes
            // with the Vec's alignment.
            unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<libc::utmpx>()) }
        })
        .collect())
}

/// A record's text field as a string (up to the first NUL).
pub fn field(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn records_are_sysvinits() {
        let boot = to_utmpx(&Record::Boot {
            at: at(1_700_000_000),
            kernel: "6.1.0-9-cloud-amd64".into(),
        });
        assert_eq!(boot.ut_type, libc::BOOT_TIME);
        assert_eq!(field(&boot.ut_user), "reboot");
        assert_eq!(field(&boot.ut_line), "~");
        assert_eq!(field(&boot.ut_id), "~~");
        assert_eq!(field(&boot.ut_host), "6.1.0-9-cloud-amd64");
        assert_eq!(boot.ut_tv.tv_sec, 1_700_000_000);

        let level = to_utmpx(&Record::Runlevel {
            level: '2',
            previous: 'N',
            at: at(5),
        });
        assert_eq!(level.ut_type, libc::RUN_LVL);
        assert_eq!(level.ut_pid % 256, i32::from(b'2'));
        assert_eq!(level.ut_pid / 256, i32::from(b'N'));

        let down = to_utmpx(&Record::Shutdown {
            at: at(6),
            kernel: String::new(),
        });
        assert_eq!(
            (down.ut_type, field(&down.ut_user)),
            (libc::RUN_LVL, "shutdown".into())
        );
    }

    /// Through glibc and back: one BOOT_TIME and one RUN_LVL record in utmp (a
    /// second runlevel replaces the first), every record appended to wtmp.
    #[test]
    fn glibc_writes_and_replaces() {
        let dir = std::env::temp_dir().join(format!("keel-utmp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (utmp, wtmp) = (dir.join("utmp"), dir.join("wtmp"));
        std::fs::write(&utmp, b"").unwrap();
        std::fs::write(&wtmp, b"").unwrap();
        let records = [
            Record::Boot {
                at: at(100),
                kernel: "k".into(),
            },
            Record::Runlevel {
                level: '2',
                previous: 'N',
                at: at(101),
            },
            Record::Runlevel {
                level: '0',
                previous: '2',
                at: at(102),
            },
        ];
        for r in &records {
            put_utmp(&utmp, &to_utmpx(r)).unwrap();
            append_wtmp(&wtmp, &to_utmpx(r)).unwrap();
        }
        let in_utmp = read_all(&utmp).unwrap();
        let kinds: Vec<_> = in_utmp.iter().map(|u| (u.ut_type, u.ut_pid)).collect();
        assert_eq!(
            kinds,
            [
                (libc::BOOT_TIME, 0),
                (libc::RUN_LVL, i32::from(b'0') + 256 * i32::from(b'2'))
            ]
        );
        assert_eq!(read_all(&wtmp).unwrap().len(), 3);
        assert!(append_wtmp(&dir.join("absent"), &to_utmpx(&records[0])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
