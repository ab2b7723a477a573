//! The event engine end to end (keel issue 6): `start on` / `stop on` with `and`,
//! `or` and values, the job events and how `starting` / `stopping` hold a job
//! until what they caused is done, failures in the stop events, the environment
//! events give a job, `initctl emit` waiting (or not), runlevels and power
//! actions through them, relayed signals as events, and event progress across a
//! kill -9 of the supervisor.
//!
//! Jobs append lines to `$DIR/trace`, so the tests read the ORDER in which things
//! ran; a job that must stay put until the test says so waits for a file. Every
//! wait is on a condition with a deadline.

use keel_tests::{Keel, wait_for};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

fn trace(keel: &Keel) -> Vec<String> {
    keel.lines("trace")
}

/// Waits for `line` in the trace.
fn wait_line(keel: &Keel, line: &str) {
    wait_for(&format!("{line:?} in the trace"), 5 * SECOND, || {
        trace(keel).iter().any(|l| l == line)
    });
}

/// Where `line` is in the trace.
fn at(keel: &Keel, line: &str) -> usize {
    let t = trace(keel);
    t.iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("{line:?} not in the trace: {t:#?}"))
}

fn wait_status(keel: &Keel, job: &str, want: &str) {
    wait_for(&format!("status {job} to say {want}"), 5 * SECOND, || {
        keel.ctl(&["status", job]).stdout == want.as_bytes()
    });
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// initctl in the background (a request that is to wait).
fn spawn_ctl(keel: &Keel, args: &[&str]) -> Child {
    Command::new(keel_tests::bin("initctl"))
        .env("KEEL_SOCKET", keel.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("initctl")
}

fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    wait_for("initctl to finish", 5 * SECOND, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// A job script line that appends to the trace.
fn log(line: &str) -> String {
    format!("echo \"{line}\" >> $DIR/trace")
}

/// A script line that waits until the test creates `$DIR/FILE`.
fn wait_file(file: &str) -> String {
    format!("while [ ! -e $DIR/{file} ]; do sleep 0.02; done")
}

/// A task started on `start_on` whose script is `lines`.
fn task(start_on: &str, lines: &[String]) -> String {
    let mut job = format!("start on {start_on}\ntask\nscript\n");
    for l in lines {
        job.push_str(&format!("  {l}\n"));
    }
    job + "end script\n"
}

#[test]
fn and_waits_for_both_events_and_or_for_either() {
    let both = task("alpha and beta", &[log("both A=$A B=$B $UPSTART_EVENTS")]);
    let either = task(
        "alpha or (gamma and delta)",
        &[log("either $UPSTART_EVENTS")],
    );
    let keel = Keel::start(&[("both", &both), ("either", &either)]);
    // `alpha` is half of `both`: a waiting emit of it would wait for `beta`.
    let mut half = spawn_ctl(&keel, &["emit", "alpha", "A=1"]);
    wait_line(&keel, "either alpha");
    wait_status(&keel, "either", "either stop/waiting\n");
    assert!(!trace(&keel).iter().any(|l| l.starts_with("both")));
    // Nothing but `both`'s half-matched `and` holds `alpha` now.
    assert!(
        half.try_wait().unwrap().is_none(),
        "the emit of alpha waits for the job it half started"
    );
    // Other events in between change nothing (`gamma` is half of `either`'s
    // `and`, so it too is emitted without waiting).
    keel.ctl_ok(&["emit", "--no-wait", "gamma"]);
    keel.ctl_ok(&["emit", "unrelated"]);
    // A waiting emit returns once what it started has run.
    keel.ctl_ok(&["emit", "beta", "B=2"]);
    assert_eq!(
        trace(&keel).last().map(String::as_str),
        Some("both A=1 B=2 alpha beta")
    );
    assert!(wait_child(&mut half).success());
    // Both halves were used up: `beta` alone starts nothing now. `gamma` was
    // remembered by `either`, and `delta` completes it.
    keel.ctl_ok(&["emit", "--no-wait", "beta"]);
    keel.ctl_ok(&["emit", "delta"]);
    assert_eq!(
        trace(&keel),
        [
            "either alpha",
            "both A=1 B=2 alpha beta",
            "either gamma delta"
        ]
    );
}

#[test]
fn starting_and_stopping_hold_the_job_until_what_they_started_is_done() {
    let x = format!(
        "pre-start script\n  {}\nend script\n\
         script\n  trap '{}; exit 0' TERM\n  sleep 1000 &\n  wait\nend script\n\
         post-stop script\n  {}\nend script\n",
        log("x pre-start"),
        log("x main got TERM"),
        log("x post-stop")
    );
    let on_starting = task(
        "starting x",
        &[
            log("on-starting begin"),
            wait_file("go-start"),
            log("on-starting end"),
        ],
    );
    let on_stopping = task(
        "stopping x",
        &[
            log("on-stopping begin"),
            wait_file("go-stop"),
            log("on-stopping end"),
        ],
    );
    let on_started = task("started x", &[log("on-started")]);
    let on_stopped = task("stopped x", &[log("on-stopped RESULT=$RESULT")]);
    let keel = Keel::start(&[
        ("x", &x),
        ("on-starting", &on_starting),
        ("on-stopping", &on_stopping),
        ("on-started", &on_started),
        ("on-stopped", &on_stopped),
    ]);
    keel.ctl_ok(&["start", "--no-wait", "x"]);
    wait_line(&keel, "on-starting begin");
    // x waits in `starting` while the task its starting event started runs.
    assert_eq!(keel.ctl_ok(&["status", "x"]), "x start/starting\n");
    assert!(!trace(&keel).contains(&"x pre-start".to_string()));
    keel.touch("go-start");
    wait_line(&keel, "on-started");
    assert!(at(&keel, "on-starting end") < at(&keel, "x pre-start"));
    assert!(at(&keel, "x pre-start") < at(&keel, "on-started"));
    assert!(
        keel.ctl_ok(&["status", "x"])
            .starts_with("x start/running, process ")
    );

    keel.ctl_ok(&["stop", "--no-wait", "x"]);
    wait_line(&keel, "on-stopping begin");
    // x waits in `stopping`: its main is not signalled yet.
    assert!(
        keel.ctl_ok(&["status", "x"])
            .starts_with("x stop/stopping, process ")
    );
    assert!(!trace(&keel).contains(&"x main got TERM".to_string()));
    keel.touch("go-stop");
    wait_line(&keel, "on-stopped RESULT=ok");
    assert!(at(&keel, "on-stopping end") < at(&keel, "x main got TERM"));
    assert!(at(&keel, "x main got TERM") < at(&keel, "x post-stop"));
    assert!(at(&keel, "x post-stop") < at(&keel, "on-stopped RESULT=ok"));
    wait_status(&keel, "x", "x stop/waiting\n");
}

#[test]
fn stop_events_say_result_process_and_exit_status_of_a_failure() {
    let watch = format!(
        "start on stopped RESULT=failed\ninstance $JOB\ntask\nscript\n  {}\nend script\n",
        log(
            "$JOB RESULT=$RESULT PROCESS=$PROCESS EXIT_STATUS=${EXIT_STATUS-} EXIT_SIGNAL=${EXIT_SIGNAL-}"
        )
    );
    let keel = Keel::start(&[
        ("watch", &watch),
        ("main-fails", "exec sh -c 'exit 3'\n"),
        (
            "pre-start-fails",
            "pre-start exec sh -c 'exit 7'\nexec sleep 1000\n",
        ),
        ("killed", "exec sleep 1000\n"),
        ("fine", "task\nexec true\n"),
    ]);
    keel.ctl_ok(&["start", "main-fails"]);
    wait_line(
        &keel,
        "main-fails RESULT=failed PROCESS=main EXIT_STATUS=3 EXIT_SIGNAL=",
    );
    let out = keel.ctl(&["start", "pre-start-fails"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    wait_line(
        &keel,
        "pre-start-fails RESULT=failed PROCESS=pre-start EXIT_STATUS=7 EXIT_SIGNAL=",
    );
    let status = keel.ctl_ok(&["start", "killed"]);
    let pid = keel_tests::status_pid(&status).unwrap();
    let host = keel.host_pid(pid).unwrap();
    // Once it is `sleep`: the spawned child before its exec would not die of it.
    wait_for("main to be sleep", 5 * SECOND, || {
        keel_tests::comm(host).as_deref() == Some("sleep")
    });
    unsafe { libc::kill(host, libc::SIGSEGV) };
    wait_line(
        &keel,
        "killed RESULT=failed PROCESS=main EXIT_STATUS= EXIT_SIGNAL=SEGV",
    );
    // A job that ends well is no failure.
    keel.ctl_ok(&["start", "fine"]);
    // Every watch instance has run and gone: the instanced job is just stop/waiting.
    wait_status(&keel, "watch", "watch stop/waiting\n");
    assert_eq!(trace(&keel).len(), 3, "{:?}", trace(&keel));
}

#[test]
fn emit_fails_when_a_job_it_started_fails_and_e_failed_follows() {
    let keel = Keel::start(&[
        ("boom", "start on boom\ntask\nexec sh -c 'exit 1'\n"),
        (
            "cleanup",
            &task("boom/failed", &[log("cleanup after $WHAT")]),
        ),
    ]);
    let out = keel.ctl(&["emit", "boom", "WHAT=it"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "initctl: Event failed\n");
    wait_line(&keel, "cleanup after it");
    // --no-wait does not wait to learn.
    keel.ctl_ok(&["emit", "--no-wait", "boom", "WHAT=again"]);
    wait_line(&keel, "cleanup after again");
}

#[test]
fn the_events_variables_reach_the_job_and_its_stop() {
    let deploy = "start on deploy VERSION=2.* TARGET!=test\nenv TARGET=none\nenv KEEP=kept\n\
                  task\nscript\n  env > $DIR/env\nend script\n";
    let site = format!(
        "start on site-up\nstop on site-down SITE=$SITE\ninstance $SITE\nexec sleep 1000\n\
         post-stop script\n  {}\nend script\n",
        log("$SITE stopped by $UPSTART_STOP_EVENTS REASON=$REASON")
    );
    let keel = Keel::start(&[("deploy", deploy), ("site", &site)]);
    keel.ctl_ok(&["emit", "deploy", "VERSION=1.9", "TARGET=prod"]);
    keel.ctl_ok(&["emit", "deploy", "VERSION=2.1", "TARGET=test"]);
    assert!(!keel.path("env").exists(), "neither matches");
    keel.ctl_ok(&["emit", "deploy", "VERSION=2.5", "TARGET=prod"]);
    let env = keel.lines("env");
    for var in [
        "VERSION=2.5",
        "TARGET=prod",
        "KEEP=kept",
        "UPSTART_EVENTS=deploy",
        "UPSTART_JOB=deploy",
    ] {
        assert!(env.iter().any(|v| v == var), "{var} in {env:?}");
    }
    // One instance per site, each stopped by its own `site-down` only.
    keel.ctl_ok(&["emit", "site-up", "SITE=a"]);
    keel.ctl_ok(&["emit", "site-up", "SITE=b"]);
    let list = keel.ctl_ok(&["status", "site"]);
    assert_eq!(list.matches("start/running").count(), 2, "{list}");
    keel.ctl_ok(&["emit", "site-down", "SITE=a", "REASON=maintenance"]);
    assert_eq!(trace(&keel), ["a stopped by site-down REASON=maintenance"]);
    let list = keel.ctl_ok(&["status", "site"]);
    assert!(list.starts_with("site (b) start/running"), "{list}");
}

#[test]
fn an_event_nothing_waits_for_is_done_at_once_and_no_wait_never_waits() {
    let slow = task("slow", &[log("slow began"), wait_file("go")]);
    let keel = Keel::start(&[("slow", &slow)]);
    for _ in 0..20 {
        keel.ctl_ok(&["emit", "nobody-listens", "K=V"]);
    }
    // --no-wait answers while the task it started still runs.
    keel.ctl_ok(&["emit", "--no-wait", "slow"]);
    wait_line(&keel, "slow began");
    assert!(
        keel.ctl_ok(&["status", "slow"])
            .starts_with("slow start/running")
    );
    // A waiting emit of an event whose task runs already is done at once too:
    // nothing new was started by it.
    keel.ctl_ok(&["emit", "slow"]);
    keel.touch("go");
    wait_status(&keel, "slow", "slow stop/waiting\n");
    // Now a waiting one waits for the run it starts.
    std::fs::remove_file(keel.path("go")).unwrap();
    let mut waiting = spawn_ctl(&keel, &["emit", "slow"]);
    wait_for("the second run", 5 * SECOND, || trace(&keel).len() == 2);
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "it waits for the task"
    );
    keel.touch("go");
    assert!(wait_child(&mut waiting).success());
    // Bad requests are refused with Upstart's words.
    let out = keel.ctl(&["emit", "e", "NOEQUALS"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "initctl: Env must be KEY=VALUE pairs\n");
    let out = keel.ctl(&["emit", ""]);
    assert_eq!(stderr(&out), "initctl: Name may not be empty string\n");
}

#[test]
fn power_off_and_reboot_go_through_the_runlevel_event() {
    use std::os::unix::process::ExitStatusExt;
    for (command, level, signal) in [
        ("poweroff", "0", libc::SIGINT),
        ("reboot", "6", libc::SIGHUP),
    ] {
        let web = format!(
            "start on runlevel [2345]\nstop on runlevel [016]\nexec sleep 1000\n\
             post-stop script\n  {}\nend script\n",
            log("web post-stop RUNLEVEL=$RUNLEVEL")
        );
        let last = task(
            "runlevel [06]",
            &[log("last words PREVLEVEL=$PREVLEVEL RUNLEVEL=$RUNLEVEL")],
        );
        let other = format!(
            "start on runlevel [2345]\nexec sleep 1000\npost-stop script\n  {}\nend script\n",
            log("other post-stop")
        );
        let mut keel = Keel::start(&[("web", &web), ("last", &last), ("other", &other)]);
        keel.ctl_ok(&["telinit", "2"]);
        wait_for("web and other to run", 5 * SECOND, || {
            keel.ctl_ok(&["list"]).matches("start/running").count() == 2
        });
        assert_eq!(keel.ctl_ok(&["runlevel"]), "N 2\n");
        keel.ctl_ok(&[command]);
        let status = keel.wait_end(15 * SECOND);
        assert!(
            status.signal() == Some(signal) || status.code() == Some(128 + signal),
            "{command}: {status:?}"
        );
        // The runlevel event first — what stops on it stops, what starts on it
        // runs — then everything else.
        let other = at(&keel, "other post-stop");
        assert!(at(&keel, &format!("web post-stop RUNLEVEL={level}")) < other);
        assert!(at(&keel, &format!("last words PREVLEVEL=2 RUNLEVEL={level}")) < other);
    }
}

#[test]
fn telinit_0_powers_off_as_poweroff_does() {
    let mut keel = Keel::start(&[(
        "web",
        &format!(
            "start on startup\nstop on runlevel [016]\nexec sleep 1000\npost-stop script\n  {}\nend script\n",
            log("web stopped on runlevel $RUNLEVEL")
        ),
    )]);
    wait_for("web to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "web"])
            .starts_with("web start/running")
    });
    keel.ctl_ok(&["telinit", "0"]);
    keel.wait_end(15 * SECOND);
    assert_eq!(trace(&keel), ["web stopped on runlevel 0"]);
    assert!(
        keel.console().contains("keel-init: power off"),
        "{}",
        keel.console()
    );
}

#[test]
fn relayed_signals_become_events() {
    let job = |event: &str| task(event, &[log(event)]);
    let keel = Keel::start(&[
        ("cad", &job("control-alt-delete")),
        ("pwr", &job("power-status-changed")),
        ("kbd", &job("keyboard-request")),
    ]);
    for (signal, event) in [
        (libc::SIGINT, "control-alt-delete"),
        (libc::SIGPWR, "power-status-changed"),
        (libc::SIGWINCH, "keyboard-request"),
    ] {
        // To keel-init, PID 1, which relays them.
        unsafe { libc::kill(keel.init_pid, signal) };
        wait_line(&keel, event);
    }
}

#[test]
fn event_progress_survives_a_kill_9_of_the_supervisor() {
    let both = task("alpha and beta", &[log("both ran")]);
    let x = format!(
        "pre-start script\n  {}\nend script\nexec sleep 1000\n",
        log("x pre-start")
    );
    let hook = task("starting x", &[log("hook began"), wait_file("go")]);
    let keel = Keel::start(&[("both", &both), ("x", &x), ("hook", &hook)]);
    keel.ctl_ok(&["emit", "--no-wait", "alpha"]);
    keel.ctl_ok(&["start", "--no-wait", "x"]);
    wait_line(&keel, "hook began");
    let kill = |keel: &Keel| {
        let old = keel.supervisor_pid().unwrap();
        unsafe { libc::kill(old, libc::SIGKILL) };
        wait_for("a new supervisor", 5 * SECOND, || {
            keel.supervisor_pid().is_some_and(|p| p != old)
                && keel.ctl(&["version"]).status.success()
        });
    };
    kill(&keel);
    // The half-matched `and` is remembered, x still waits for its starting event.
    assert_eq!(keel.ctl_ok(&["status", "x"]), "x start/starting\n");
    keel.ctl_ok(&["emit", "beta"]);
    assert_eq!(trace(&keel).last().map(String::as_str), Some("both ran"));
    kill(&keel);
    keel.touch("go");
    wait_for("x to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "x"]).starts_with("x start/running")
    });
    // Each exactly once.
    let t = trace(&keel);
    for line in ["both ran", "hook began", "x pre-start"] {
        assert_eq!(t.iter().filter(|l| *l == line).count(), 1, "{line}: {t:?}");
    }
}
