//! The attacker of `tests/tests/hostile.rs`, run as `nobody`:
//!
//! `keel-hostile notify-fds SOCKET COUNT` sends COUNT sd_notify datagrams to
//! SOCKET, each carrying as many fds as the kernel allows (253 copies of
//! /dev/null), and prints how many it sent.

use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["notify-fds", socket, count] => notify_fds(socket, count.parse().expect("a count")),
        _ => {
            eprintln!("usage: keel-hostile notify-fds SOCKET COUNT");
            ExitCode::from(2)
        }
    }
}

fn notify_fds(socket: &str, count: usize) -> ExitCode {
    let null = std::fs::File::open("/dev/null").expect("/dev/null");
    let client = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    let fds = [null.as_raw_fd(); 253];
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(&fds) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let path = std::ffi::CString::new(socket).expect("no NUL in the path");
    // SAFETY: an all-zero sockaddr_un is valid; the path is copied within it.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes_with_nul();
    assert!(bytes.len() <= addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent < count {
        let mut text = *b"STATUS=fds for you";
        let mut iov = libc::iovec {
            iov_base: text.as_mut_ptr().cast(),
            iov_len: text.len(),
        };
        // SAFETY: msghdr pointing at live buffers of the lengths given; the
        // control buffer is filled through CMSG_FIRSTHDR within its length.
        let rc = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = (&mut addr as *mut libc::sockaddr_un).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(&fds) as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<i32>(),
                fds.len(),
            );
            libc::sendmsg(client.as_raw_fd(), &msg, 0)
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // Too many fds in flight (the kernel's per-user limit): wait for the
            // receiver to take some.
            if e.raw_os_error() == Some(libc::ETOOMANYREFS) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            eprintln!("sendmsg: {e}");
            break;
        }
        sent += 1;
    }
    println!("{sent}");
    if sent == count {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
