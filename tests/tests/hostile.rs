//! Attackers, as a real user or a local attacker would be: files an attacker can
//! place in keel's directories, datagrams and connections from `nobody`. Each test
//! checks that keel refuses what it must, goes on serving root, and (where it
//! makes sense) prints how long the good client waited.

use keel_tests::{Keel, Scratch, Setup, bin, wait_for};
use std::fs;
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
