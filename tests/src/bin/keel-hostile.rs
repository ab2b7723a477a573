//! The attacker of `tests/tests/hostile.rs`, run as `nobody`:
//!
//! `keel-hostile notify-fds SOCKET COUNT` sends COUNT sd_notify datagrams to
//! SOCKET, each carrying as many fds as the kernel allows (253 copies of
//! /dev/null), and prints how many it sent.
//!
//! `keel-hostile control-hog SOCKET CONNECTIONS SECONDS` holds CONNECTIONS
//! control connections for SECONDS, each sending the hello and 64 pipelined
//! `show-config` requests whose answers it never reads, and reopens each one the
//! supervisor drops; prints how many it opened.

use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["notify-fds", socket, count] => notify_fds(socket, count.parse().expect("a count")),
        ["control-hog", socket, connections, seconds] => control_hog(
            socket,
            connections.parse().expect("a number of connections"),
            Duration::from_secs(seconds.parse().expect("seconds")),
        ),
        _ => {
            eprintln!(
                "usage: keel-hostile notify-fds SOCKET COUNT\n       keel-hostile control-hog SOCKET CONNECTIONS SECONDS"
            );
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

fn control_hog(socket: &str, connections: usize, duration: Duration) -> ExitCode {
    use keel_proto::ctl::{ClientHello, MAGIC, Request, VERSION};
    use keel_proto::frame;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let mut bytes = frame::encode(&ClientHello {
        magic: MAGIC,
        version: VERSION,
    })
    .expect("hello");
    let request = frame::encode(&Request::ShowConfig { job: None }).expect("request");
    for _ in 0..64 {
        bytes.extend_from_slice(&request);
    }
    let open = |opened: &mut usize| -> Option<UnixStream> {
        let mut s = UnixStream::connect(socket).ok()?;
        s.set_nonblocking(true).ok()?;
        // As much as the socket takes; the rest is never sent.
        let _ = s.write(&bytes);
        *opened += 1;
        Some(s)
    };
    let mut opened = 0;
    let deadline = Instant::now() + duration;
    let mut conns: Vec<Option<UnixStream>> = (0..connections).map(|_| open(&mut opened)).collect();
    while Instant::now() < deadline {
        let mut polls: Vec<libc::pollfd> = conns
            .iter()
            .map(|c| libc::pollfd {
                fd: c.as_ref().map_or(-1, |s| s.as_raw_fd()),
                events: libc::POLLRDHUP,
                revents: 0,
            })
            .collect();
        // SAFETY: poll(2) on a vector of pollfds it may write to.
        unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 10) };
        for (conn, p) in conns.iter_mut().zip(&polls) {
            let dropped = p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
            if conn.is_none() || dropped {
                *conn = open(&mut opened);
            }
        }
    }
    println!("{opened}");
    ExitCode::SUCCESS
}
