//! keel-test-daemon: a daemon for readiness tests that does exactly what it is
//! told — fork N times, wait, then say it is ready by one protocol — and writes
//! what it did to a trace file, so a test can compare keel's view with the truth.
//!
//! ```text
//! keel-test-daemon [--fork N] [--delay-ms MS] [--trace FILE]
//!                  [--notify | --notify-status TEXT | --notify-mainpid | --fd N
//!                   | --listen PATH | --stop | --never]
//! ```
//!
//! Trace lines: `forked PID` (each new process after a fork), `ready PID` (just
//! before it signals readiness), `running PID` (after). `--notify-mainpid` forks a
//! child that goes on as the daemon; the parent says `MAINPID=child` and `READY=1`,
//! then exits.

use std::io::Write;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let has = |name: &str| args.iter().any(|a| a == name);
    let forks: u32 = value("--fork").and_then(|v| v.parse().ok()).unwrap_or(0);
    let delay: u64 = value("--delay-ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let trace = value("--trace");
    let log = |what: &str| {
        if let Some(path) = &trace {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("trace file");
            // One write(2) per line: O_APPEND keeps it whole when the parent and
            // child of a fork trace at the same moment (writeln! writes in pieces).
            let line = format!("{what} {}\n", std::process::id());
            f.write_all(line.as_bytes()).expect("trace write");
        }
    };

    for i in 0..forks {
        // SAFETY: single-threaded; the child only continues this program.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid > 0 {
            // The parent leaves once the child exists, as a daemon's does.
            std::process::exit(0);
        }
        if i == 0 {
            // SAFETY: plain syscall.
            unsafe { libc::setsid() };
        }
        log("forked");
    }

    std::thread::sleep(Duration::from_millis(delay));
    if has("--never") {
        log("running");
        pause();
    }
    if has("--notify-mainpid") {
        // SAFETY: single-threaded; the child only continues this program.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            log("forked");
            log("running");
            pause();
        }
        log("ready");
        let socket = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET is set");
        notify(&socket, format!("MAINPID={child}\nREADY=1\n").as_bytes());
        // Gone only once keel has the word (its own end would be an ordinary exit).
        std::thread::sleep(Duration::from_millis(200));
        std::process::exit(0);
    }
    log("ready");
    if has("--notify") || value("--notify-status").is_some() {
        let socket = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET is set");
        let mut message = String::new();
        if let Some(text) = value("--notify-status") {
            message.push_str(&format!("STATUS={text}\n"));
        }
        message.push_str("READY=1\n");
        notify(&socket, message.as_bytes());
    } else if let Some(fd) = value("--fd").and_then(|v| v.parse::<i32>().ok()) {
        // SAFETY: writing a byte from a valid buffer to an fd number.
        let n = unsafe { libc::write(fd, b"\n".as_ptr().cast(), 1) };
        assert_eq!(n, 1, "write to fd {fd}");
        // SAFETY: closing our copy of the fd.
        unsafe { libc::close(fd) };
    } else if let Some(path) = value("--listen") {
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("listen");
        std::mem::forget(listener);
    } else if has("--stop") {
        // SAFETY: raising a signal at ourselves.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
    log("running");
    pause();
}

fn notify(socket: &str, message: &[u8]) {
    use std::os::unix::net::UnixDatagram;
    let client = UnixDatagram::unbound().expect("datagram socket");
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("abstract address");
            client.send_to_addr(message, &addr).expect("notify");
        }
        None => {
            client.send_to(message, socket).expect("notify");
        }
    }
}

fn pause() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
