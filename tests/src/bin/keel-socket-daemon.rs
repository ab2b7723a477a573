//! keel-socket-daemon: a socket-activated daemon for the tests, of either
//! tradition: `--listen-fds` takes its listening socket as systemd passes it
//! (`LISTEN_FDS=1`, `LISTEN_PID` = its own pid, the socket at fd 3), `--upstart-fds`
//! as Upstart did (`UPSTART_FDS=N`, `UPSTART_EVENTS=socket`). It refuses to run
//! (exit 2, the reason on stderr) unless the variables say exactly that and fd 3
//! is a listening socket. Then it answers each connection with
//! `hello from PID via listen-fds|upstart-fds\n` and closes it.

use std::io::Write;
use std::os::fd::FromRawFd;

fn refuse(why: String) -> ! {
    eprintln!("keel-socket-daemon: {why}");
    std::process::exit(2);
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| refuse(format!("{name} is not set")))
}

fn main() {
    let how = match std::env::args().nth(1).as_deref() {
        Some("--listen-fds") => {
            let (fds, pid) = (var("LISTEN_FDS"), var("LISTEN_PID"));
            if fds != "1" || pid != std::process::id().to_string() {
                refuse(format!(
                    "LISTEN_FDS={fds} LISTEN_PID={pid}, I am {}",
                    std::process::id()
                ));
            }
            "listen-fds"
        }
        Some("--upstart-fds") => {
            let (fds, events) = (var("UPSTART_FDS"), var("UPSTART_EVENTS"));
            if fds != "3" || events != "socket" {
                refuse(format!("UPSTART_FDS={fds} UPSTART_EVENTS={events}"));
            }
            "upstart-fds"
        }
        _ => refuse("usage: keel-socket-daemon --listen-fds|--upstart-fds".into()),
    };
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes an int into `listening` and its size into `len`.
    let r = unsafe {
        libc::getsockopt(
            3,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 || listening != 1 {
        refuse("fd 3 is not a listening socket".into());
    }
    // The socket may be non-blocking (keel's is): wait for each connection.
    loop {
        let mut poll = libc::pollfd {
            fd: 3,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        unsafe { libc::poll(&mut poll, 1, -1) };
        // SAFETY: accept on fd 3 with no address wanted.
        let conn = unsafe { libc::accept4(3, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        if conn < 0 {
            continue;
        }
        // SAFETY: `conn` is a new fd that nothing else owns.
        let mut stream = unsafe { std::fs::File::from_raw_fd(conn) };
        let _ = writeln!(stream, "hello from {} via {how}", std::process::id());
    }
}
