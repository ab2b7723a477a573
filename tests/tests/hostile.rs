//! Attackers, as a real user or a local attacker would be: files an attacker can
//! place in keel's directories, datagrams and connections from `nobody`. Each test
//! checks that keel refuses what it must, goes on serving root, and (where it
//! makes sense) prints how long the good client waited.

use keel_tests::{
    Keel, Scratch, Setup, Stats, as_nobody, bin, fd_count, rss_kib, supervisor_args,
    supervisor_with_fd_limit, wait_for,
};
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
        supervisor: Some((
            bin("keel-supervisor"),
            supervisor_args(&conf.display().to_string()),
        )),
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
    let reload = keel.ctl(&["reload-configuration"]);
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
    assert_eq!(
        reload.status.code(),
        Some(1),
        "the reload names what it refused"
    );
    assert!(String::from_utf8_lossy(&reload.stderr).contains(&late));
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
    let reload = keel.ctl(&["reload-configuration"]);
    let list = keel.ctl_ok(&["list"]);
    assert_eq!(list, "good stop/waiting\n");
    let escaped = format!(
        "{}/evil\\nrootkit running, process 1.conf: error: job name contains a control character",
        conf.display()
    );
    // initctl reports it escaped too: one line, no fake one.
    let report = String::from_utf8_lossy(&reload.stderr).into_owned();
    assert_eq!(reload.status.code(), Some(1));
    assert!(report.ends_with(&format!("\n{escaped}\n")), "{report}");
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

/// As `nobody`, hold more connections than the supervisor takes, each with
/// pipelined `show-config` requests whose answers are never read, reopening
/// each one dropped: root's `status` always gets through, and the supervisor's
/// memory stays bounded.
#[test]
fn nobody_filling_the_control_socket_never_locks_root_out() {
    // 64 connections at most (a supervisor with 128 fds), 40 jobs with long
    // descriptions: each show-config answer is ~100 KiB.
    let description = "d".repeat(2000);
    let texts: Vec<(String, String)> = (0..40)
        .map(|i| {
            (
                format!("job{i:02}"),
                format!("description \"{description}\"\nexec sleep 1000\n"),
            )
        })
        .collect();
    let jobs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let keel = Keel::start_with(Setup {
        jobs: &jobs,
        supervisor: Some(supervisor_with_fd_limit(128, "$DIR/conf")),
        env: &[],
    });
    let supervisor = keel.supervisor_pid().expect("a supervisor");
    let rss_before = rss_kib(supervisor).expect("VmRSS");
    let fds_before = fd_count(supervisor);
    let attack = Duration::from_secs(6);
    let attacker = as_nobody(&keel.dir.0, &bin("keel-hostile"))
        .args([
            "control-hog",
            &keel.socket().display().to_string(),
            "100",
            &attack.as_secs().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the attacker");
    // Let the attacker take every slot it can (its share: 7 of 64).
    wait_for("the attacker to hold connections", 10 * SECOND, || {
        fd_count(supervisor) >= fds_before + 5
    });
    let started = Instant::now();
    let (mut latencies, mut failures) = (Vec::new(), Vec::new());
    let mut rss_max = rss_before;
    while started.elapsed() < attack - SECOND {
        let asked = Instant::now();
        let out = keel.ctl(&["status", "job00"]);
        latencies.push(asked.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() {
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        rss_max = rss_max.max(rss_kib(supervisor).unwrap_or(0));
    }
    let out = attacker.wait_with_output().expect("the attacker");
    print_latency("root's status while nobody holds the socket", &latencies);
    println!(
        "nobody opened {} connections; supervisor VmRSS {rss_before} -> max {rss_max} KiB",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert!(
        failures.is_empty(),
        "{} of {} root calls failed: {:?}",
        failures.len(),
        latencies.len(),
        &failures[..failures.len().min(3)]
    );
    // One uid's answers are held to an eighth of the 32 MiB of all of them.
    assert!(
        rss_max < rss_before + 12 * 1024,
        "VmRSS {rss_before} -> {rss_max} KiB"
    );
    assert_eq!(keel.supervisor_pid(), Some(supervisor));
}

/// `nobody` makes the log directory before keel writes there, with a log file
/// of its own waiting: keel refuses it, with an error saying why, keeps the
/// output in memory (also across a restart of the supervisor), and writes it
/// out once the directory is root's and the file of nobody's is gone.
#[test]
fn a_log_directory_of_nobodys_is_refused_and_output_kept_in_memory() {
    const NOBODY: u32 = 65534;
    let keel = Keel::start(&[("leak", "task\nexec echo SECRET=hunter2\n")]);
    let logdir = keel.path("log");
    fs::create_dir(&logdir).unwrap();
    std::os::unix::fs::chown(&logdir, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::write(logdir.join("leak.log"), "").unwrap();
    std::os::unix::fs::chown(logdir.join("leak.log"), Some(NOBODY), Some(NOBODY)).unwrap();

    keel.ctl_ok(&["start", "leak"]);
    let refusal = format!(
        "log directory {0} refused: {0} is owned by uid 65534, not root",
        logdir.display()
    );
    wait_for("the refusal on the console", 5 * SECOND, || {
        keel.console().contains(&refusal)
    });
    assert_eq!(fs::read_to_string(logdir.join("leak.log")).unwrap(), "");

    // A new supervisor still refuses it.
    let old = keel.supervisor_pid().expect("a supervisor");
    // SAFETY: kill(2) of a pid we just read; no memory involved.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("a new supervisor to answer", 10 * SECOND, || {
        keel.supervisor_pid().is_some_and(|p| p != old) && keel.ctl(&["version"]).status.success()
    });
    keel.ctl_ok(&["notify-disk-writeable"]);
    keel.ctl_ok(&["version"]);
    assert_eq!(fs::read_to_string(logdir.join("leak.log")).unwrap(), "");

    // Root takes the directory back and removes nobody's file: written out.
    std::os::unix::fs::chown(&logdir, Some(0), Some(0)).unwrap();
    fs::remove_file(logdir.join("leak.log")).unwrap();
    keel.ctl_ok(&["notify-disk-writeable"]);
    wait_for("the kept output to be written", 5 * SECOND, || {
        fs::read_to_string(logdir.join("leak.log")).is_ok_and(|t| t == "SECRET=hunter2\n")
    });
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(logdir.join("leak.log")).unwrap().uid(), 0);
}

/// A disk with less room than the output kept while the log could not be
/// written: the output is dropped and a note in the log says how many bytes,
/// once the note can be written. The log directory is a 64 KiB tmpfs, 56 KiB
/// of it taken, mounted in keel's own mount namespace.
#[test]
fn a_disk_smaller_than_the_kept_output_gets_a_dropped_note() {
    let mut args = vec![
        "-c".to_string(),
        "mkdir -p \"$1\" && mount -t tmpfs -o size=64k,mode=0755 keel-log \"$1\" && \
         dd if=/dev/zero of=\"$1/filler\" bs=1k count=56 2>/dev/null && \
         shift && exec \"$0\" \"$@\""
            .to_string(),
        bin("keel-supervisor").display().to_string(),
        "$DIR/log".to_string(),
    ];
    args.extend(supervisor_args("$DIR/conf"));
    let line = "0123456789abcdefghijklmnopqrstuvwxyz\n";
    let keel = Keel::start_with(Setup {
        jobs: &[(
            "chatty",
            "task\nexec sh -c 'yes 0123456789abcdefghijklmnopqrstuvwxyz | head -n 3000'\n",
        )],
        supervisor: Some(("/bin/sh".into(), args)),
        env: &[],
    });
    keel.ctl_ok(&["start", "chatty"]);
    let supervisor = keel.supervisor_pid().expect("a supervisor");
    // The log as keel's mount namespace sees it.
    let inside = |rel: &str| {
        std::path::PathBuf::from(format!("/proc/{supervisor}/root"))
            .join(keel.path(rel).strip_prefix("/").unwrap())
    };
    fs::remove_file(inside("log/filler")).expect("the filler in keel's tmpfs");
    keel.ctl_ok(&["notify-disk-writeable"]);
    let total = line.len() * 3000;
    let mut text = String::new();
    wait_for("the dropped note", 10 * SECOND, || {
        keel.ctl(&["notify-disk-writeable"]);
        text = fs::read_to_string(inside("log/chatty.log")).unwrap_or_default();
        text.contains("[keel: ")
    });
    let (written, note) = text.split_at(text.find("[keel: ").unwrap());
    // Lines written straight to the file carry their time; the note counts
    // the job's own bytes.
    let written = keel_tests::untimed(written);
    assert!(
        line.repeat(3000).starts_with(&written),
        "the output before the note"
    );
    assert_eq!(
        note,
        format!(
            "[keel: {} bytes of output dropped while the log could not be written]\n",
            total - written.len()
        )
    );
}
