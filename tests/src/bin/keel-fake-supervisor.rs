//! keel-fake-supervisor: stands in for keel-supervisor under keel-init to check one
//! promise of the init channel (`ToInit::Kill`): keel-init never signals a pid it
//! has reaped while that exit is unacknowledged, even once the pid names another
//! process. `keel-fake-supervisor OUT` writes its verdict to OUT, one line per
//! step, then waits for ever (keel-init would restart it if it exited):
//!
//! 1. an orphan `sleep` (keel-init's child) is killed; its exit arrives, unacknowledged;
//! 2. its pid is given to a new process (`ns_last_pid`: this runs as root in the
//!    PID namespace), and keel-init is asked to signal that pid: the new process
//!    must live on (`spared`);
//! 3. the exit acknowledged, the same request signals the pid's new owner
//!    (`killed after ack`).

use keel_proto::init::{self as wire, MAX_MESSAGE, ToInit, ToSupervisor};
use std::process::{Command, Stdio};

const CHANNEL: i32 = wire::SUPERVISOR_FD;

fn send(msg: &ToInit) {
    let mut buf = [0u8; MAX_MESSAGE];
    let bytes = wire::encode(msg, &mut buf).expect("fits");
    // SAFETY: send(2) of a buffer we own on the channel keel-init gave us.
    let sent = unsafe { libc::send(CHANNEL, bytes.as_ptr().cast(), bytes.len(), 0) };
    assert_eq!(sent, bytes.len() as isize, "send to keel-init");
}

/// The next message (blocking); an fd it carries is closed by the kernel, since
/// no room for it is given.
fn recv() -> ToSupervisor {
    loop {
        let mut buf = [0u8; MAX_MESSAGE];
        // SAFETY: recv(2) into a buffer we own.
        let got = unsafe { libc::recv(CHANNEL, buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(got > 0, "keel-init closed the channel");
        if let Some(msg) = wire::decode(&buf[..got as usize]) {
            return msg;
        }
    }
}

/// Reads messages until the exit of `pid`; returns its seq.
fn exit_of(pid: i32) -> u64 {
    loop {
        if let ToSupervisor::Exit { seq, pid: p, .. } = recv()
            && p == pid
        {
            return seq;
        }
    }
}

/// A `sleep` re-parented to keel-init (its shell has exited); its pid.
fn orphan(seconds: &str) -> i32 {
    let out = Command::new("/bin/sh")
        .args(["-c", &format!("sleep {seconds} >/dev/null 2>&1 & echo $!")])
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a pid")
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: keel-fake-supervisor OUT");
    let mut verdict = String::new();
    send(&ToInit::Hello {
        version: wire::VERSION,
    });
    while recv() != ToSupervisor::HandoverEnd {}

    // 1. An orphan ends; its exit stays unacknowledged.
    let victim = orphan("300001");
    // SAFETY: kill(2) of the process just made.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    exit_of(victim);

    // 2. Its pid goes to a new process, and keel-init is asked to signal it.
    std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", victim - 1)).expect("ns_last_pid");
    let mut heir = Command::new("sleep")
        .arg("300002")
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep");
    assert_eq!(heir.id() as i32, victim, "the pid was not recycled");
    send(&ToInit::Kill {
        pid: victim,
        signo: libc::SIGTERM as u8,
        group: true,
        cont: true,
    });
    // keel-init handles messages in order: once this marker is signalled and
    // reaped, the request before it has been handled.
    let marker = orphan("300003");
    send(&ToInit::Kill {
        pid: marker,
        signo: libc::SIGTERM as u8,
        group: false,
        cont: false,
    });
    let last = exit_of(marker);
    if matches!(heir.try_wait(), Ok(None)) && alive(victim) {
        verdict.push_str("spared\n");
    }

    // 3. Acknowledged: the pid is the heir's now, and keel-init signals it.
    send(&ToInit::Ack { seq: last });
    send(&ToInit::Kill {
        pid: victim,
        signo: libc::SIGTERM as u8,
        group: true,
        cont: false,
    });
    use std::os::unix::process::ExitStatusExt;
    if heir.wait().ok().and_then(|s| s.signal()) == Some(libc::SIGTERM) {
        verdict.push_str("killed after ack\n");
    }
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, verdict).expect("verdict");
    std::fs::rename(&tmp, &out).expect("verdict");
    loop {
        // SAFETY: pause(2) has no arguments.
        unsafe { libc::pause() };
    }
}
