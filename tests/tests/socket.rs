//! Socket activation: keel binds the socket a job's `start on socket …` names,
//! starts the job on the first connection and hands it the listening socket,
//! and the daemon answers that very connection — a daemon of systemd's tradition
//! (`LISTEN_FDS`) and one of Upstart's (`UPSTART_FDS`); across a supervisor
//! killed with a connection waiting.

use keel_tests::{Keel, bin, status_pid, wait_for};
use std::io::{BufRead, BufReader};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// A TCP port free on loopback just now.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

fn daemon(how: &str) -> String {
    format!("exec {} {how}\n", bin("keel-socket-daemon").display())
}

/// The first line the peer writes, within a deadline.
fn first_line(stream: impl std::io::Read) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

/// A free port, and a job on it whose daemon speaks `LISTEN_FDS`.
fn tcp_job() -> (u16, String) {
    let port = free_port();
    let job = format!(
        "start on socket PROTO=inet PORT={port} ADDR=127.0.0.1\n{}",
        daemon("--listen-fds")
    );
    (port, job)
}

fn tcp(port: u16) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(10 * SECOND)).unwrap();
    stream
}

#[test]
fn a_tcp_job_is_started_by_its_first_connection_and_answers_it() {
    let (port, job) = tcp_job();
    let keel = Keel::start(&[("web", job.as_str())]);
    assert_eq!(keel.ctl_ok(&["status", "web"]), "web stop/waiting\n");

    let line = first_line(tcp(port));
    let pid = status_pid(&keel.ctl_ok(&["status", "web"])).unwrap();
    assert_eq!(line, format!("hello from {pid} via listen-fds\n"));
    // Later connections go to the running daemon; nothing starts twice.
    let again = first_line(tcp(port));
    assert_eq!(again, line);
    assert!(keel.ctl_ok(&["status", "web"]).contains("start/running"));
}

#[test]
fn a_unix_socket_job_gets_its_socket_as_upstart_gave_it() {
    let keel = Keel::start(&[(
        "echo",
        &format!(
            "start on socket PROTO=unix PATH=$DIR/echo.sock\n{}",
            daemon("--upstart-fds")
        ),
    )]);
    let path = keel.path("echo.sock");
    wait_for("the socket to be bound", 5 * SECOND, || path.exists());
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(10 * SECOND)).unwrap();
    let line = first_line(stream);
    let pid = status_pid(&keel.ctl_ok(&["status", "echo"])).unwrap();
    assert_eq!(line, format!("hello from {pid} via upstart-fds\n"));
    // The job's PATH is its own: the socket's path is SOCKET_PATH.
    let environ = keel_tests::proc_environ(keel.host_pid(pid).unwrap());
    assert!(
        environ.contains(&format!("SOCKET_PATH={}", path.display())),
        "{environ:?}"
    );
    assert!(
        environ.iter().any(|e| e.starts_with("PATH=/")),
        "{environ:?}"
    );
}

#[test]
fn a_connection_made_while_no_supervisor_runs_starts_the_job_after_it() {
    let (port, job) = tcp_job();
    let keel = Keel::start(&[("web", job.as_str())]);
    let old = keel.supervisor_pid().unwrap();
    // SAFETY: kill(2) of the supervisor, by pid; no memory involved.
    unsafe { libc::kill(old, libc::SIGSTOP) };
    // The kernel queues the connection on the socket keel-init keeps.
    let stream = tcp(port);
    // SAFETY: as above.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let line = first_line(stream);
    assert!(keel.supervisor_pid().is_some_and(|p| p != old));
    let pid = status_pid(&keel.ctl_ok(&["status", "web"])).unwrap();
    assert_eq!(line, format!("hello from {pid} via listen-fds\n"));
}

#[test]
fn a_socket_no_job_names_any_more_is_closed() {
    let keel = Keel::start(&[(
        "echo",
        "start on socket PROTO=unix PATH=$DIR/gone.sock\nexec true\n",
    )]);
    let path = keel.path("gone.sock");
    wait_for("the socket to be bound", 5 * SECOND, || path.exists());
    std::fs::write(keel.path("conf/echo.conf"), "exec true\n").unwrap();
    keel.ctl_ok(&["reload-configuration"]);
    wait_for("the socket to be closed", 5 * SECOND, || !path.exists());
}
