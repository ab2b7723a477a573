//! Attackers, as a real user or a local attacker would be: files an attacker can
//! place in keel's directories, datagrams and connections from `nobody`. Each test
//! checks that keel refuses what it must, goes on serving root, and (where it
//! makes sense) prints how long the good client waited.

use keel_tests::{Keel, Scratch, Setup, Stats, as_nobody, bin, fd_count, wait_for};
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

fn mkfifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: mkfifo(3) with a NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// `mkfifo /etc/init/x.conf` (and a `.conf` symlink to a FIFO, a socket, a
/// directory named `x.conf`): present at boot, added while keel runs — keel
/// answers, names each file in an error, and loads every other job.
#[test]
fn special_files_in_the_confdir_never_block_the_supervisor() {
    let scratch = Scratch::new("hostile-conf");
    let conf = scratch.0.clone();
    fs::write(conf.join("good.conf"), "exec sleep 1000\n").unwrap();
    mkfifo(&conf.join("fifo.conf"));
    std::os::unix::fs::symlink(conf.join("fifo.conf"), conf.join("to-fifo.conf")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(conf.join("socket.conf")).unwrap();
    fs::create_dir(conf.join("dir.conf")).unwrap();
    fs::write(conf.join("dir.conf/inner.conf"), "exec sleep 1000\n").unwrap();

    // At boot: the first read of the confdir meets them.
    let keel = Keel::start_with(Setup {
        jobs: &[],
        supervisor: Some((bin("keel-supervisor"), supervisor_args(&conf))),
        env: &[],
    });
    assert_eq!(
        keel.ctl_ok(&["list"]),
        "dir.conf/inner stop/waiting\ngood stop/waiting\n"
    );
    let console = keel.console();
    for (file, what) in [
        ("fifo.conf", "a FIFO"),
        ("to-fifo.conf", "a FIFO"),
        ("socket.conf", "a socket"),
    ] {
        let line = format!(
            "{}: error: cannot read: not a regular file but {what}",
            conf.join(file).display()
        );
        assert!(console.contains(&line), "no {line:?} in {console}");
    }

    // While running: a new FIFO is seen (inotify, and an explicit reload) and
    // refused; root is answered at once.
    mkfifo(&conf.join("late.conf"));
    let started = Instant::now();
    keel.ctl_ok(&["reload-configuration"]);
    keel.ctl_ok(&["start", "good"]);
    println!(
        "root's reload and start answered in {:?} with a FIFO in the confdir",
        started.elapsed()
    );
    let late = format!(
        "{}: error: cannot read: not a regular file but a FIFO",
        conf.join("late.conf").display()
    );
    wait_for("the late FIFO's refusal", 5 * SECOND, || {
        keel.console().contains(&late)
    });
}

/// The supervisor's arguments for a confdir of the test's own; `$DIR` is the
/// test's directory.
fn supervisor_args(conf: &std::path::Path) -> Vec<String> {
    [
        "--confdir",
        &conf.display().to_string(),
        "--socket",
        "$DIR/control",
        "--logdir",
        "$DIR/log",
        "--cgroup-root",
        "none",
    ]
    .map(str::to_string)
    .to_vec()
}

/// A job file named with a newline would print a fake line in `initctl list`:
/// it is refused, with the name shown escaped.
#[test]
fn a_job_name_with_a_newline_is_refused() {
    let keel = Keel::start(&[("good", "exec sleep 1000\n")]);
    let conf = keel.path("conf");
    fs::write(
        conf.join("evil\nrootkit running, process 1.conf"),
        "exec sleep 1000\n",
    )
    .unwrap();
    keel.ctl_ok(&["reload-configuration"]);
    let list = keel.ctl_ok(&["list"]);
    assert_eq!(list, "good stop/waiting\n");
    let escaped = format!(
        "{}/evil\\nrootkit running, process 1.conf: error: job name contains a control character",
        conf.display()
    );
    wait_for("the refusal on the console", 5 * SECOND, || {
        keel.console().contains(&escaped)
    });
}

/// As `nobody`, 2,100 sd_notify datagrams each carrying 253 fds: the supervisor
/// closes every one at once (its fd count stays flat) and root's `status` keeps
/// working.
#[test]
fn fds_sent_to_the_notify_socket_are_closed_at_once() {
    let keel = Keel::start(&[("svc", "exec sleep 1000\n")]);
    let supervisor = keel.supervisor_pid().expect("a supervisor");
    let before = fd_count(supervisor);
    let mut attacker = as_nobody(&keel.dir.0, &bin("keel-hostile"))
        .args([
            "notify-fds",
            &keel.path("notify").display().to_string(),
            "2100",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the attacker");
    let mut latencies = Vec::new();
    while attacker.try_wait().expect("the attacker").is_none() {
        let asked = Instant::now();
        keel.ctl_ok(&["status", "svc"]);
        latencies.push(asked.elapsed().as_secs_f64() * 1e3);
        // One datagram's copies (253) exist for an instant, between the peek
        // that installs them and their close.
        assert!(
            fd_count(supervisor) <= before + 253 + 16,
            "the supervisor holds {} fds (it had {before})",
            fd_count(supervisor)
        );
    }
    let out = attacker.wait_with_output().expect("the attacker");
    assert!(out.status.success(), "the attacker failed: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2100");
    // Once the last datagram is read, no fd of them remains.
    wait_for("the supervisor's fd count to settle", 10 * SECOND, || {
        keel.ctl(&["status", "svc"]).status.success() && fd_count(supervisor) <= before
    });
    assert_eq!(keel.supervisor_pid(), Some(supervisor));
    print_latency("root's status during the notify flood", &latencies);
}

/// The good client's latency, as the hostile-client suite prints it.
fn print_latency(what: &str, ms: &[f64]) {
    if ms.is_empty() {
        println!("{what}: no sample");
        return;
    }
    let s = Stats::of(ms);
    println!(
        "{what}: {} calls, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms.len(),
        s.median,
        s.p90,
        s.max
    );
}
