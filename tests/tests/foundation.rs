//! The foundation end to end: keel-init as PID 1 of a PID namespace, the real
//! supervisor, initctl.

use keel_tests::{Keel, Setup, bin, ns_pid, state, status_pid, wait_for};
use std::fs;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_job_started_on_startup_runs() {
    let keel = Keel::start(&[(
        "svc",
        "start on startup\nrespawn\nscript\n  echo $UPSTART_JOB > $DIR/ran\n  exec sleep 1000\nend script\n",
    )]);
    wait_for("the job's marker", 5 * SECOND, || keel.path("ran").exists());
    assert_eq!(fs::read_to_string(keel.path("ran")).unwrap(), "svc\n");
    let status = keel.ctl_ok(&["status", "svc"]);
    assert!(
        status.starts_with("svc start/running, process "),
        "{status}"
    );
    // The reported pid is the job's process, a child of keel-init (CLONE_PARENT).
    let pid = status_pid(&status).unwrap();
    let host = keel
        .processes()
        .into_iter()
        .find(|&p| ns_pid(p) == Some(pid))
        .expect("the reported pid exists in the namespace");
    assert_eq!(keel_tests::comm(host).as_deref(), Some("sleep"));
    assert!(keel_tests::children(keel.init_pid).contains(&host));
}

#[test]
fn an_orphaned_grandchild_leaves_no_zombie() {
    // The grandchild outlives its parent, is re-parented to keel-init, then exits.
    // (While main runs: once main has ended, whatever is left in the job's cgroup
    // is killed, see tests/tests/cgroups.rs.)
    let keel = Keel::start(&[(
        "orphaner",
        "start on startup\nscript\n  sh -c '(sleep 0.3; touch $DIR/grandchild-done) &'\n  exec sleep 1000\nend script\n",
    )]);
    wait_for("the grandchild to finish", 5 * SECOND, || {
        keel.path("grandchild-done").exists()
    });
    wait_for("no zombie under keel-init", 5 * SECOND, || {
        keel.zombies().is_empty()
    });
    wait_for("the grandchild to be gone", 5 * SECOND, || {
        keel.processes().iter().all(|&p| {
            std::fs::read(format!("/proc/{p}/cmdline")).map_or(true, |c| c != b"sleep\x000.3\x00")
        })
    });
}

#[test]
fn a_killed_supervisor_is_replaced_and_keeps_its_jobs() {
    let keel = Keel::start(&[("svc", "start on startup\nrespawn\nexec sleep 1000\n")]);
    // Running, not still spawned (its exec not yet seen): the state compared below.
    wait_for("svc to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "svc"]).contains("start/running")
    });
    let before = keel.ctl_ok(&["status", "svc"]);
    let pid = status_pid(&before).expect("running with a pid");
    let old = keel.supervisor_pid().unwrap();
    unsafe { libc::kill(old, libc::SIGKILL) };
    let killed = Instant::now();
    wait_for("a new supervisor to answer", 5 * SECOND, || {
        keel.supervisor_pid().is_some_and(|p| p != old)
            && keel.ctl(&["status", "svc"]).status.success()
    });
    let took = killed.elapsed();
    assert!(
        took < SECOND,
        "a new supervisor answered only after {took:?}"
    );
    let after = keel.ctl_ok(&["status", "svc"]);
    assert_eq!(after, before, "the job is still there, with the same pid");
    // And it is still tracked: a stop ends exactly that process.
    let host = keel
        .processes()
        .into_iter()
        .find(|&p| ns_pid(p) == Some(pid))
        .unwrap();
    assert_eq!(keel.ctl_ok(&["stop", "svc"]), "svc stop/waiting\n");
    wait_for("the job's process to end", 5 * SECOND, || {
        state(host).is_none_or(|s| s == 'Z')
    });
    wait_for("no zombie", 5 * SECOND, || keel.zombies().is_empty());
}

#[test]
fn poweroff_runs_post_stops_and_ends_the_namespace() {
    let mut keel = Keel::start(&[
        (
            "a",
            "start on startup\nexec sleep 1000\npost-stop exec touch $DIR/a-post-stop\n",
        ),
        (
            "b",
            "start on startup\nkill timeout 1\nscript\n  trap '' TERM\n  while :; do sleep 0.1; done\nend script\npost-stop exec touch $DIR/b-post-stop\n",
        ),
    ]);
    wait_for("both jobs to run", 5 * SECOND, || {
        let list = keel.ctl_ok(&["list"]);
        list.matches("start/running").count() == 2
    });
    assert!(keel.ctl(&["poweroff"]).status.success());
    let status = keel.wait_end(10 * SECOND);
    // The kernel ends a PID namespace whose init calls reboot(POWER_OFF) as if
    // its init was killed by SIGINT.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.signal().is_some() || status.code().is_some(),
        "{status:?}"
    );
    assert!(keel.path("a-post-stop").exists(), "a's post-stop ran");
    assert!(
        keel.path("b-post-stop").exists(),
        "b's post-stop ran after SIGKILL"
    );
    assert!(
        keel.console().contains("keel-init: power off"),
        "{}",
        keel.console()
    );
}

#[test]
fn init_survives_a_supervisor_that_keeps_dying() {
    // A "supervisor" that leaves an orphan behind and dies at once, every time.
    let mut keel = Keel::launch(Setup {
        jobs: &[],
        supervisor: Some((
            "/bin/sh".into(),
            vec!["-c".into(), "sleep 0.05 & exit 3".into()],
        )),
        env: &[],
    });
    wait_for("several deaths and a back-off", 15 * SECOND, || {
        keel.console().matches("exited with status 3").count() >= 5
            && keel.console().contains("next start in")
    });
    assert!(keel.alive(), "keel-init is still PID 1");
    // Orphans of the dead supervisors are all reaped.
    wait_for("no zombie", 5 * SECOND, || keel.zombies().is_empty());
    // The back-off grows: the delays announced are non-decreasing and capped.
    let delays: Vec<f64> = keel
        .console()
        .lines()
        .filter_map(|l| l.split("next start in ").nth(1))
        .filter_map(|d| d.trim_end_matches('s').parse().ok())
        .collect();
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
    assert!(delays.iter().all(|&d| d <= 5.0), "{delays:?}");
}

#[test]
fn initctl_reports_errors_in_upstarts_words() {
    let keel = Keel::start(&[("svc", "exec sleep 1000\n")]);
    let out = keel.ctl(&["start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "initctl: Unknown job: nope\n"
    );
    assert_eq!(keel.ctl_ok(&["status", "svc"]), "svc stop/waiting\n");
    let started = keel.ctl_ok(&["start", "svc"]);
    assert!(
        started.starts_with("svc start/running, process "),
        "{started}"
    );
    let again = keel.ctl(&["start", "svc"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr),
        "initctl: Job is already running: svc\n"
    );
    // Invoked through a link named `status`, initctl is that command.
    let out = keel.ctl_link("status", &["svc"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), started);
    let version = keel.ctl_ok(&["version"]);
    assert!(version.starts_with("keel "), "{version}");
}

#[test]
fn a_wrong_protocol_version_gets_a_clear_answer() {
    use keel_proto::ctl::{ClientHello, MAGIC, ServerHello};
    use std::io::{Read, Write};
    let keel = Keel::start(&[]);
    let mut s = std::os::unix::net::UnixStream::connect(keel.socket()).unwrap();
    let hello = keel_proto::frame::encode(&ClientHello {
        magic: MAGIC,
        version: 999,
    })
    .unwrap();
    s.write_all(&hello).unwrap();
    let mut header = [0u8; 4];
    s.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; u32::from_le_bytes(header) as usize];
    s.read_exact(&mut body).unwrap();
    let answer: ServerHello = keel_proto::frame::decode(&body).unwrap();
    assert!(!answer.accepted);
    assert_eq!(answer.version, keel_proto::ctl::VERSION);
    // …and the connection is closed.
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn the_supervisor_runs_without_keel_init() {
    // An ordinary process: it reaps its own children and ends on SIGTERM after
    // stopping every job (post-stop included).
    let dir = keel_tests::Scratch::new("standalone");
    let conf = dir.0.join("conf");
    fs::create_dir_all(&conf).unwrap();
    fs::write(
        conf.join("svc.conf"),
        format!(
            "start on startup\nexec sleep 1000\npost-stop exec touch {}/post-stop\n",
            dir.0.display()
        ),
    )
    .unwrap();
    let socket = dir.0.join("control");
    let mut sup = std::process::Command::new(bin("keel-supervisor"))
        .arg("--confdir")
        .arg(&conf)
        .arg("--socket")
        .arg(&socket)
        .arg("--logdir")
        .arg(dir.0.join("log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ctl = |args: &[&str]| {
        std::process::Command::new(bin("initctl"))
            .env("KEEL_SOCKET", &socket)
            .args(args)
            .output()
            .unwrap()
    };
    wait_for("the job to run", 5 * SECOND, || {
        String::from_utf8_lossy(&ctl(&["status", "svc"]).stdout).contains("start/running, process")
    });
    let status = String::from_utf8_lossy(&ctl(&["status", "svc"]).stdout).into_owned();
    let pid = status_pid(&status).unwrap();
    // Here the pid is a host pid, and the supervisor is its parent.
    assert_eq!(keel_tests::children(sup.id() as i32), vec![pid]);
    unsafe { libc::kill(sup.id() as i32, libc::SIGTERM) };
    let mut exit = None;
    wait_for("the supervisor to end", 10 * SECOND, || {
        exit = sup.try_wait().unwrap();
        exit.is_some()
    });
    assert!(exit.unwrap().success());
    assert!(dir.0.join("post-stop").exists());
    assert!(state(pid).is_none(), "the job's process is gone and reaped");
}

#[test]
fn reboot_and_halt_end_the_namespace_too() {
    use std::os::unix::process::ExitStatusExt;
    for (command, marker) in [("reboot", "keel-init: reboot"), ("halt", "keel-init: halt")] {
        let mut keel = Keel::start(&[(
            "svc",
            "start on startup\nexec sleep 1000\npost-stop exec touch $DIR/post-stop\n",
        )]);
        wait_for("svc to run", 5 * SECOND, || {
            keel.ctl_ok(&["status", "svc"]).contains("start/running")
        });
        assert!(keel.ctl(&[command]).status.success(), "{command}");
        let status = keel.wait_end(10 * SECOND);
        // A namespace's init calling reboot(2) ends as if killed by SIGHUP (reboot)
        // or SIGINT (halt, power off).
        let expected = if command == "reboot" {
            libc::SIGHUP
        } else {
            libc::SIGINT
        };
        assert!(
            status.signal() == Some(expected) || status.code() == Some(128 + expected),
            "{command}: {status:?}"
        );
        assert!(keel.path("post-stop").exists(), "{command}: post-stop ran");
        assert!(keel.console().contains(marker), "{}", keel.console());
    }
}

#[test]
fn emit_starts_the_jobs_waiting_for_the_event() {
    let keel = Keel::start(&[(
        "on-poke",
        "start on poke KIND=gentle\ntask\nexec sh -c 'echo $KIND > $DIR/poked'\n",
    )]);
    keel.ctl_ok(&["emit", "poke", "KIND=rough"]);
    keel.ctl_ok(&["emit", "nobody-waits-for-this"]);
    assert!(!keel.path("poked").exists());
    keel.ctl_ok(&["emit", "poke", "KIND=gentle"]);
    wait_for("the job started by the event", 5 * SECOND, || {
        keel.path("poked").exists()
    });
    assert_eq!(fs::read_to_string(keel.path("poked")).unwrap(), "gentle\n");
}

/// keel-init reaps the child each SIGCHLD names at once, and sweeps for those
/// whose SIGCHLD coalesced with another's once it is quiet — or a second after
/// the SIGCHLD when it never is. Here keel-init is stopped while 200 orphans
/// end (their SIGCHLDs coalesce into one), and after it goes on a client's
/// reloads keep it busy (each is a signal it sends for the supervisor): every
/// orphan must still be reaped.
#[test]
fn orphans_ending_together_are_reaped_while_keel_init_is_never_quiet() {
    let orphans = format!(
        "task\nconsole none\nscript\n  {} 200\n  echo > $DIR/orphaned\nend script\n",
        bin("keel-orphans").display()
    );
    let keel = Keel::start(&[
        // SIGCONT to a sleep: a signal keel-init sends, harmless to the job.
        (
            "target",
            "start on startup\nreload signal SIGCONT\nconsole none\nexec sleep 1000\n",
        ),
        ("orphans", orphans.as_str()),
    ]);
    wait_for("target to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "target"]).contains("start/running")
    });
    let orphans_left = || {
        keel_tests::children(keel.init_pid)
            .into_iter()
            .filter(|&p| keel_tests::comm(p).as_deref() == Some("keel-orphans"))
            .count()
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = keel.ctl(&["reload", "target"]);
            }
        });
        // SAFETY: kill(2) on the namespace's PID 1, by pid; no memory involved.
        unsafe { libc::kill(keel.init_pid, libc::SIGSTOP) };
        wait_for("keel-init to stop", 5 * SECOND, || {
            state(keel.init_pid) == Some('T')
        });
        keel.ctl_ok(&["start", "--no-wait", "orphans"]);
        wait_for("the orphans to be made", 10 * SECOND, || {
            keel.path("orphaned").exists()
        });
        wait_for("the orphans to end", 10 * SECOND, || {
            keel_tests::children(keel.init_pid)
                .into_iter()
                .filter(|&p| keel_tests::comm(p).as_deref() == Some("keel-orphans"))
                .all(|p| state(p) == Some('Z'))
        });
        // SAFETY: as above.
        unsafe { libc::kill(keel.init_pid, libc::SIGCONT) };
        let reaped = std::panic::catch_unwind(|| {
            wait_for("every orphan to be reaped", 10 * SECOND, || {
                orphans_left() == 0
            })
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = reaped {
            std::panic::resume_unwind(e);
        }
    });
}
