//! Crash injection and live upgrade: the supervisor is killed with SIGKILL at
//! random instants (or re-executed) while a workload starts, stops and restarts
//! jobs, emits events and has jobs end on their own. After every recovery keel's
//! view is compared with /proc; at the end every job is stopped and the marker
//! counts are compared with what the lifecycle promises.
//!
//! `KEEL_CRASH_ROUNDS` sets the number of kills (default 200, CI's minimum).

use keel_tests::{Keel, Rng, descendants, ns_pid, wait_for};
use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);
const SERVICES: usize = 4;

fn service(i: usize) -> String {
    format!(
        "respawn\nrespawn limit unlimited\nkill timeout 1\n\
         pre-start script\n  echo pre-start >> $DIR/svc{i}.trace\nend script\n\
         script\n  echo main >> $DIR/svc{i}.trace\n  exec sleep 1000{i}\nend script\n\
         post-stop script\n  echo post-stop >> $DIR/svc{i}.trace\nend script\n"
    )
}

const TASK: &str = "task\nstart on poke\n\
    pre-start script\n  echo pre-start >> $DIR/task.trace\nend script\n\
    script\n  echo main >> $DIR/task.trace\n  sleep 0.02\nend script\n\
    post-stop script\n  echo post-stop >> $DIR/task.trace\nend script\n";

/// Ends by itself shortly after it starts (no respawn).
const SHORT: &str = "pre-start script\n  echo pre-start >> $DIR/short.trace\nend script\n\
    script\n  echo main >> $DIR/short.trace\n  sleep 0.03\nend script\n\
    post-stop script\n  echo post-stop >> $DIR/short.trace\nend script\n";

fn jobs() -> Vec<(String, String)> {
    let mut jobs: Vec<(String, String)> = (0..SERVICES)
        .map(|i| (format!("svc{i}"), service(i)))
        .collect();
    jobs.push(("task".into(), TASK.into()));
    jobs.push(("short".into(), SHORT.into()));
    jobs
}

fn start(jobs: &[(String, String)]) -> Keel {
    let refs: Vec<(&str, &str)> = jobs.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    Keel::start(&refs)
}

/// The host pids of every process in the namespace running `sleep 1000{i}`.
fn mains(keel: &Keel, i: usize) -> Vec<i32> {
    let want = format!("sleep\01000{i}\0");
    descendants(keel.init_pid)
        .into_iter()
        .filter(|p| fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .filter(|&p| keel_tests::state(p) != Some('Z'))
        .collect()
}

/// keel's view against /proc: never two mains of one service; a service keel says
/// runs has exactly that process.
fn check_view(keel: &Keel) {
    for i in 0..SERVICES {
        let running = mains(keel, i);
        assert!(running.len() <= 1, "svc{i} runs twice: {running:?}");
        let out = keel.ctl(&["status", &format!("svc{i}")]);
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        if status.contains("/running, process") {
            let pid = keel_tests::status_pid(&status).unwrap();
            wait_for(
                &format!("svc{i}'s reported pid {pid} to be its sleep"),
                5 * SECOND,
                || {
                    mains(keel, i).iter().any(|&p| ns_pid(p) == Some(pid))
                        || !keel
                            .ctl_ok(&["status", &format!("svc{i}")])
                            .contains("/running")
                },
            );
        }
    }
}

fn counts(keel: &Keel, job: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for line in fs::read_to_string(keel.path(&format!("{job}.trace")))
        .unwrap_or_default()
        .lines()
    {
        *m.entry(line.to_string()).or_insert(0) += 1;
    }
    m
}

/// Stops everything and checks the end state: nothing left but keel itself, no
/// zombie, and post-stop ran exactly once per start of every job.
fn finish(keel: &Keel) {
    wait_for("every job to settle and stop", 30 * SECOND, || {
        for (name, _) in jobs() {
            let _ = keel.ctl(&["stop", &name]);
        }
        keel.ctl_ok(&["list"])
            .lines()
            .all(|l| l.contains("stop/waiting"))
    });
    wait_for(
        "only keel-init and the supervisor left, no zombie",
        10 * SECOND,
        || {
            let left: Vec<i32> = descendants(keel.init_pid);
            left.len() == 1 && keel.zombies().is_empty()
        },
    );
    for (name, _) in jobs() {
        let c = counts(keel, &name);
        let pre = c.get("pre-start").copied().unwrap_or(0);
        let post = c.get("post-stop").copied().unwrap_or(0);
        let main = c.get("main").copied().unwrap_or(0);
        eprintln!("{name}: {pre} starts, {main} mains, {post} post-stops");
        if pre != post {
            let console = keel.console();
            let tail: Vec<&str> = console
                .lines()
                .filter(|l| {
                    !l.contains("was killed by signal 9")
                        && !l.contains("started supervisor")
                        && !l.contains("resumed from")
                })
                .collect();
            eprintln!("console (kills filtered):\n{}", tail.join("\n"));
            eprintln!(
                "{name}.trace:\n{}",
                fs::read_to_string(keel.path(&format!("{name}.trace"))).unwrap_or_default()
            );
        }
        assert_eq!(pre, post, "{name}: post-stop ran once per start");
        if name == "task" || name == "short" {
            assert!(main <= pre, "{name}: at most one main per start");
        }
    }
}

/// One random request, possibly left in flight.
fn request(keel: &Keel, rng: &mut Rng) -> (std::process::Child, Vec<String>) {
    let job = match rng.below(6) {
        0..=3 => format!("svc{}", rng.below(SERVICES as u64)),
        4 => "short".to_string(),
        _ => String::new(),
    };
    let mut args: Vec<String> = match (job.is_empty(), rng.below(4)) {
        (true, _) => vec!["emit".into(), "poke".into()],
        (false, 0 | 1) => vec!["start".into(), job],
        (false, 2) => vec!["stop".into(), job],
        (false, _) => vec!["restart".into(), job],
    };
    if rng.below(2) == 0 && args[0] != "emit" {
        args.insert(1, "--no-wait".into());
    }
    let child = Command::new(keel_tests::bin("initctl"))
        .env("KEEL_SOCKET", keel.socket())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, args)
}

fn wait_answering(keel: &Keel, old: Option<i32>) {
    wait_for("a supervisor to answer", 10 * SECOND, || {
        keel.supervisor_pid().is_some_and(|p| Some(p) != old)
            && keel.ctl(&["version"]).status.success()
    });
}

#[test]
fn kill_9_at_random_instants_loses_nothing() {
    let rounds: usize = std::env::var("KEEL_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let seed = 0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64;
    eprintln!("seed {seed:#x}, {rounds} kills");
    let mut rng = Rng(seed);
    let keel = start(&jobs());
    let began = Instant::now();
    for round in 0..rounds {
        let mut inflight: Vec<_> = (0..1 + rng.below(3))
            .map(|_| request(&keel, &mut rng))
            .collect();
        std::thread::sleep(Duration::from_micros(rng.below(4000)));
        let old = keel.supervisor_pid();
        if std::env::var_os("KEEL_CRASH_NOKILL").is_none() {
            if let Some(pid) = old {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            wait_answering(&keel, old);
        }
        for (c, args) in &mut inflight {
            // A request in flight at the crash gets an error, or its answer from
            // the next supervisor: never silence.
            let deadline = Instant::now() + 10 * SECOND;
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let console = keel.console();
                    let tail: Vec<&str> = console.lines().rev().take(30).collect();
                    panic!(
                        "initctl {args:?} never finished\nlist:\n{}\nconsole:\n{}",
                        keel.ctl_ok(&["list"]),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if round % 10 == 0 {
            check_view(&keel);
        }
    }
    eprintln!("{rounds} kills in {:?}", began.elapsed());
    check_view(&keel);
    finish(&keel);
}

#[test]
fn re_exec_under_the_same_workload_loses_nothing() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let keel = start(&jobs());
    for _ in 0..40 {
        let mut inflight: Vec<_> = (0..1 + rng.below(3))
            .map(|_| request(&keel, &mut rng))
            .collect();
        let pid = keel.supervisor_pid();
        keel.ctl_ok(&["reexec"]);
        // Same process, new image: the pid stays.
        wait_answering(&keel, None);
        assert_eq!(keel.supervisor_pid(), pid);
        for (c, args) in &mut inflight {
            wait_for(&format!("initctl {args:?} to finish"), 10 * SECOND, || {
                c.try_wait().unwrap().is_some()
            });
        }
        check_view(&keel);
    }
    finish(&keel);
    assert!(
        !keel.console().contains("cannot load the saved state"),
        "{}",
        keel.console()
    );
}

#[test]
fn a_planned_re_exec_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let keel = start(&jobs());
    let socket = keel.socket();
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    // Four clients, each starting and stopping its own service (waiting for
    // each), for as long as the re-execs go on.
    let clients: Vec<_> = (0..SERVICES)
        .map(|i| {
            let (socket, done, answered, failures) = (
                socket.clone(),
                done.clone(),
                answered.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                let job = format!("svc{i}");
                while !done.load(Ordering::Relaxed) {
                    for verb in ["start", "stop"] {
                        // A lost answer fails the request (124) instead of the test
                        // hanging.
                        let out = Command::new("timeout")
                            .arg("30")
                            .arg(keel_tests::bin("initctl"))
                            .env("KEEL_SOCKET", &socket)
                            .args([verb, &job])
                            .output()
                            .unwrap();
                        if !out.status.success() {
                            failures.lock().unwrap().push(format!(
                                "{verb} {job}: {}",
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                        }
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let reexecs = 20;
    for n in 1..=reexecs {
        // Some requests between each two re-execs, some in flight at each.
        let before = answered.load(Ordering::Relaxed);
        wait_for("the clients to go on", 20 * SECOND, || {
            answered.load(Ordering::Relaxed) >= before + 4
        });
        keel.ctl_ok(&["reexec"]);
        wait_for(&format!("re-exec {n}"), 10 * SECOND, || {
            keel.console().matches("re-executing").count() == n
                && keel.ctl(&["version"]).status.success()
        });
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let total = answered.load(Ordering::Relaxed);
    eprintln!(
        "{reexecs} re-execs, {total} start/stop requests, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    let handed = keel
        .console()
        .matches("control connections handed over")
        .count();
    assert!(handed > 0, "no re-exec found a connection to hand over");
    finish(&keel);
}

#[test]
fn a_change_whose_supervisor_is_killed_before_answering_is_not_repeated_and_its_outcome_said() {
    let keel = start(&[(
        "held".into(),
        "pre-start exec sleep 1000\nexec sleep 1001\n".into(),
    )]);
    let start = Command::new(keel_tests::bin("initctl"))
        .env("KEEL_SOCKET", keel.socket())
        .args(["start", "held"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the pre-start to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "held"])
            .starts_with("held start/pre-start")
    });
    let old = keel.supervisor_pid();
    unsafe { libc::kill(old.unwrap(), libc::SIGKILL) };
    let out = start.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // Not sent again: the next supervisor was asked where the job stands.
    assert!(
        err.contains("before answering (it crashed or was killed); the request took effect, its end was not awaited: held start/pre-start"),
        "{err}"
    );
    // A query across the same kind of restart is simply answered.
    wait_answering(&keel, old);
    assert!(
        keel.ctl_ok(&["status", "held"])
            .starts_with("held start/pre-start")
    );
}

#[test]
fn re_exec_to_a_binary_that_cannot_read_the_state_is_refused() {
    let keel = start(&[("svc0".into(), service(0))]);
    keel.ctl_ok(&["start", "svc0"]);
    // A "supervisor" that only reads state format 0.
    let fake = keel.path("old-supervisor");
    fs::write(&fake, "#!/bin/sh\necho 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let out = keel.ctl(&["reexec", "--binary", fake.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reads state format 0, older than this state's"),
        "{err}"
    );
    // The running supervisor carries on.
    assert!(keel.ctl_ok(&["status", "svc0"]).contains("start/running"));
}

/// A file at `rel` in the test's directory, executable, running `script`.
fn candidate(keel: &Keel, rel: &str, script: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = keel.path(rel);
    fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_re_exec_candidate_is_checked_without_stopping_the_loop() {
    let keel = start(&[("svc0".into(), service(0))]);
    keel.ctl_ok(&["start", "svc0"]);
    let exe = || {
        keel.supervisor_pid()
            .and_then(|p| fs::read_link(format!("/proc/{p}/exe")).ok())
    };
    let running = exe();
    // A candidate that never answers: refused at the deadline, and every other
    // client is served meanwhile.
    let sleeper = candidate(&keel, "sleeper", "sleep 1000");
    let asked = Instant::now();
    let mut reexec = Command::new(keel_tests::bin("initctl"))
        .env("KEEL_SOCKET", keel.socket())
        .args(["reexec", "--binary", &sleeper])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sleeping = || {
        descendants(keel.init_pid).iter().any(|&p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\x001000\x00"))
        })
    };
    wait_for("the candidate to run", 5 * SECOND, sleeping);
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    while reexec.try_wait().unwrap().is_none() {
        let t = Instant::now();
        // Bounded: a loop blocked by the check must fail the test, not hang it.
        let status = Command::new("timeout")
            .arg("2")
            .arg(keel_tests::bin("initctl"))
            .env("KEEL_SOCKET", keel.socket())
            .args(["status", "svc0"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&status.stdout).contains("start/running"),
            "{status:?} after {:?}",
            t.elapsed()
        );
        assert!(
            t.elapsed() < SECOND,
            "a status took {:?} during the check",
            t.elapsed()
        );
        slowest = slowest.max(t.elapsed());
        served += 1;
        assert!(asked.elapsed() < 20 * SECOND, "the check is not bounded");
    }
    assert!(served > 10, "only {served} status answers during the check");
    eprintln!("{served} status answers during the candidate's check, the slowest {slowest:?}");
    let out = reexec.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{sleeper} did not say its state format within 5 s"
        )),
        "{err}"
    );
    assert!(
        asked.elapsed() >= Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    // The candidate was killed, with what it started.
    wait_for("the candidate's end", 5 * SECOND, || !sleeping());

    // A wrong path, and a candidate that prints without end: refused at once.
    let yes = candidate(&keel, "yes", "exec yes");
    for (binary, why) in [
        (
            "/nonexistent/keel-supervisor",
            "cannot run /nonexistent/keel-supervisor: No such file or directory".to_string(),
        ),
        (
            yes.as_str(),
            format!("{yes} does not say which state format it reads"),
        ),
    ] {
        let t = Instant::now();
        let out = keel.ctl(&["reexec", "--binary", binary]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&why), "{err}");
        assert!(t.elapsed() < 2 * SECOND, "{binary}: {:?}", t.elapsed());
    }
    // Nothing re-exec'd, and a good candidate (this very binary, copied) is taken.
    assert_eq!(exe(), running);
    let copy = keel.path("keel-supervisor");
    fs::copy(keel_tests::bin("keel-supervisor"), &copy).unwrap();
    keel.ctl_ok(&["reexec", "--binary", copy.to_str().unwrap()]);
    wait_for("the copy to run", 10 * SECOND, || {
        exe().as_ref() == Some(&copy)
    });
    assert!(keel.ctl_ok(&["status", "svc0"]).contains("start/running"));
}

#[test]
fn a_client_connecting_while_no_supervisor_runs_is_served() {
    // A supervisor that cannot come back for a while: keel-init's back-off after
    // quick deaths holds it off, and the connection must wait in the backlog.
    let keel = start(&[("svc0".into(), service(0))]);
    keel.ctl_ok(&["start", "svc0"]);
    for _ in 0..3 {
        let old = keel.supervisor_pid();
        unsafe { libc::kill(old.unwrap(), libc::SIGKILL) };
        // Connect at once, before any new supervisor exists.
        let status = keel.ctl(&["status", "svc0"]);
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        assert!(String::from_utf8_lossy(&status.stdout).contains("start/running"));
    }
}

#[test]
fn a_supervisor_dying_on_its_saved_state_starts_over_and_adopts_the_running_jobs() {
    // Every supervisor that loads a saved state aborts: a poisoned state.
    let keel = Keel::start_with(keel_tests::Setup {
        jobs: &[("svc0", &service(0)), ("svc1", &service(1))],
        supervisor: None,
        env: &[("KEEL_TEST_FAULTS", "abort-on-resume")],
    });
    keel.ctl_ok(&["start", "svc0"]);
    let before = keel.ctl_ok(&["status", "svc0"]);
    let old = keel.supervisor_pid();
    unsafe { libc::kill(old.unwrap(), libc::SIGKILL) };
    // Bounded tries with back-off, then a fresh start that says so loudly…
    wait_for(
        "a supervisor that gave up the saved state",
        30 * SECOND,
        || {
            keel.console().contains("KEEPS DYING ON ITS SAVED STATE")
                && keel.ctl(&["version"]).status.success()
        },
    );
    let console = keel.console();
    let aborts = console.matches("was killed by signal 6").count();
    assert!(
        (5..=6).contains(&aborts),
        "bounded tries, then a fresh start: {aborts}\n{console}"
    );
    // …which adopted the running job instead of starting it twice.
    assert_eq!(keel.ctl_ok(&["status", "svc0"]), before);
    assert_eq!(mains(&keel, 0).len(), 1);
    assert_eq!(keel.ctl_ok(&["status", "svc1"]), "svc1 stop/waiting\n");
    // And it is really tracked: stop ends it, post-stop runs.
    keel.ctl_ok(&["stop", "svc0"]);
    wait_for("svc0's process to end", 10 * SECOND, || {
        mains(&keel, 0).is_empty()
    });
    assert_eq!(counts(&keel, "svc0").get("post-stop"), Some(&1));
}

/// A job writing 3000 numbered lines for about two seconds into its log (through
/// its pipe in the lifeboat), while `disturb` is done to the supervisor over and
/// over; every line must be in the log once, in order. Returns how often.
fn talker_through(disturb: impl Fn(&Keel)) -> usize {
    let keel = start(&[(
        "talker".into(),
        "start on startup\nconsole log\nscript\n  i=0\n  while [ $i -lt 3000 ]; do\n    i=$((i+1))\n    echo line $i\n    if [ $((i % 20)) = 0 ]; then sleep 0.01; fi\n  done\n  sleep 1000\nend script\n".into(),
    )]);
    let log = keel.path("log/talker.log");
    let lines = || keel_tests::log_text(&log).lines().count();
    let mut times = 0;
    let deadline = Instant::now() + 30 * SECOND;
    while lines() < 3000 {
        assert!(Instant::now() < deadline, "the job's output stalled");
        disturb(&keel);
        times += 1;
    }
    let text = keel_tests::log_text(&log);
    let expected: Vec<String> = (1..=3000).map(|i| format!("line {i}")).collect();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        expected,
        "each line once, in order"
    );
    times
}

#[test]
fn job_output_survives_supervisor_crashes_without_loss_or_repeat() {
    let kills = talker_through(|keel| {
        let old = keel.supervisor_pid();
        unsafe { libc::kill(old.unwrap(), libc::SIGKILL) };
        wait_answering(keel, old);
    });
    assert!(
        kills >= 10,
        "the supervisor died only {kills} times while the job wrote"
    );
}

#[test]
fn job_output_survives_re_execs_without_loss_or_repeat() {
    let execs = talker_through(|keel| {
        keel.ctl_ok(&["reexec"]);
        wait_answering(keel, None);
    });
    assert!(
        execs >= 10,
        "the supervisor re-executed only {execs} times while the job wrote"
    );
}

#[test]
fn a_supervisor_killed_between_batches_of_spawns_starts_every_job_once() {
    // More jobs start on startup than one batch of spawns holds: the first
    // supervisor saves the first batch and aborts before releasing it or spawning
    // the rest. Its successor releases that batch and spawns the others.
    const JOBS: usize = 150;
    let texts: Vec<(String, String)> = (0..JOBS)
        .map(|i| {
            (
                format!("b{i:03}"),
                format!(
                    "start on startup\nconsole none\nexec sleep {}\n",
                    30_000 + i
                ),
            )
        })
        .collect();
    let jobs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let marks = keel_tests::Scratch::new("mark");
    let mark = marks.0.join("fault-acted");
    let keel = Keel::start_with_fault(&jobs, "abort-between-batches", &mark);
    let sleeps = |i: usize| running(&keel, &format!("/sleep\0{}\0", 30_000 + i));
    wait_for("every job to run", 20 * SECOND, || {
        keel.ctl_ok(&["list"]).matches("start/running").count() == JOBS
    });
    assert!(mark.exists(), "the fault acted");
    let console = keel.console();
    assert!(console.contains("was killed by signal 6"), "{console}");
    // A round's first batch is one spawn (the first job execs as soon as the
    // state recording it is saved): that one the successor released.
    assert!(
        console.contains("releasing 1 processes the previous supervisor had saved"),
        "{console}"
    );
    let list = keel.ctl_ok(&["list"]);
    for i in 0..JOBS {
        let running = sleeps(i);
        assert_eq!(running.len(), 1, "b{i:03} runs {} times", running.len());
        let line = list
            .lines()
            .find(|l| l.starts_with(&format!("b{i:03} ")))
            .unwrap();
        assert_eq!(
            keel_tests::status_pid(line),
            ns_pid(running[0]),
            "keel tracks b{i:03}'s process: {line}"
        );
    }
}

/// The host pids of the namespace's live processes whose command line ends
/// with `argv`.
fn running(keel: &Keel, argv: &str) -> Vec<i32> {
    descendants(keel.init_pid)
        .into_iter()
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.ends_with(argv.as_bytes()))
        })
        .filter(|&p| keel_tests::state(p) != Some('Z'))
        .collect()
}

#[test]
fn a_supervisor_killed_mid_append_leaves_the_previous_rounds_state() {
    // The supervisor appends a start's round to the state's log and is killed
    // with half of it written, or all but the end of its commit. Its successor
    // reads the round before: the job never started (the round's child was
    // never released), and a new start runs it once.
    for fault in ["abort-mid-append", "abort-before-commit"] {
        let marks = keel_tests::Scratch::new("mark");
        // The fault acts once its mark can be made: once this directory exists.
        let armed = marks.0.join("armed");
        let mark = armed.join("fault-acted");
        let keel =
            Keel::start_with_fault(&[("svc", "console none\nexec sleep 40404\n")], fault, &mark);
        wait_answering(&keel, None);
        let first = keel.supervisor_pid();
        fs::create_dir(&armed).unwrap();
        let _ = keel.ctl(&["start", "svc"]);
        wait_answering(&keel, first);
        assert!(mark.exists(), "{fault} acted");
        let console = keel.console();
        assert!(console.contains("was killed by signal 6"), "{console}");
        let status = keel.ctl_ok(&["status", "svc"]);
        assert!(status.contains("stop/waiting"), "{fault}: {status}");
        assert!(running(&keel, "/sleep\x0040404\0").is_empty(), "{fault}");
        // Appending goes on where the last whole round ended.
        keel.ctl_ok(&["start", "svc"]);
        let pids = running(&keel, "/sleep\x0040404\0");
        assert_eq!(pids.len(), 1, "{fault}: svc runs {} times", pids.len());
        keel.ctl_ok(&["reexec"]);
        wait_for("the re-executed supervisor to answer", 10 * SECOND, || {
            keel.ctl(&["status", "svc"]).status.success()
        });
        let status = keel.ctl_ok(&["status", "svc"]);
        assert_eq!(
            keel_tests::status_pid(&status),
            ns_pid(pids[0]),
            "{fault}: the log read back after a re-exec tracks svc: {status}"
        );
    }
}

#[test]
fn a_supervisor_killed_between_a_new_base_and_its_log_loses_nothing() {
    // The first save of a boot writes a base, then its log; killed in between,
    // the successor reads the new base alone and releases the round it saved.
    let marks = keel_tests::Scratch::new("mark");
    let mark = marks.0.join("fault-acted");
    let keel = Keel::start_with_fault(
        &[("svc", "start on startup\nconsole none\nexec sleep 40405\n")],
        "abort-mid-compaction",
        &mark,
    );
    wait_for("svc to run", 10 * SECOND, || {
        keel.ctl(&["status", "svc"])
            .stdout
            .windows(11)
            .any(|w| w == b"start/runni")
    });
    assert!(mark.exists(), "the fault acted");
    let console = keel.console();
    assert!(console.contains("was killed by signal 6"), "{console}");
    let pids = running(&keel, "/sleep\x0040405\0");
    assert_eq!(pids.len(), 1, "svc runs {} times", pids.len());
    let status = keel.ctl_ok(&["status", "svc"]);
    assert_eq!(keel_tests::status_pid(&status), ns_pid(pids[0]), "{status}");
}
