//! Signals sent to the supervisor's own pid (an administrator's `kill`, a signal
//! storm): none of them may throw its state away. SIGHUP re-reads the job files,
//! as Upstart's did; the others are logged and change nothing. And supervisors
//! killed from outside (SIGKILL) soon after their start, however often, never
//! make keel drop a state that loads; the log priority survives them.

use keel_tests::{Keel, wait_for};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

const JOBS: &[(&str, &str)] = &[
    ("both", "start on (ea and eb)\nexec sleep 1000\n"),
    ("broken", "exec sh -c 'exit 3'\n"),
    ("svc", "exec sleep 1001\n"),
];

/// Sets up what must survive: a set-env value, the runlevel, a failure reason,
/// a half-matched `start on (ea and eb)`, the log priority, a running job.
fn prepare(keel: &Keel) -> String {
    keel.ctl_ok(&["set-env", "KEPT=yes"]);
    keel.ctl_ok(&["telinit", "2"]);
    keel.ctl_ok(&["emit", "--no-wait", "ea"]);
    let _ = keel.ctl(&["start", "broken"]);
    keel.ctl_ok(&["log-priority", "debug"]);
    keel.ctl_ok(&["start", "svc"])
}

/// Checks that all of `prepare`'s state is still there.
fn check_kept(keel: &Keel, svc: &str, after: &str) {
    assert_eq!(keel.ctl_ok(&["get-env", "KEPT"]), "yes\n", "after {after}");
    assert_eq!(keel.ctl_ok(&["runlevel"]), "N 2\n", "after {after}");
    assert_eq!(keel.ctl_ok(&["log-priority"]), "debug\n", "after {after}");
    assert_eq!(keel.ctl_ok(&["status", "svc"]), svc, "after {after}");
    let broken = keel.ctl_ok(&["status", "broken"]);
    assert!(
        broken.contains("failed: main process") && broken.contains("terminated with status 3"),
        "after {after}: {broken}"
    );
    assert_eq!(
        keel.ctl_ok(&["status", "both"]),
        "both stop/waiting\n",
        "after {after}: not started by half its condition"
    );
}

/// The half-matched `and` was kept: `eb` alone completes it.
fn check_half_match(keel: &Keel) {
    keel.ctl_ok(&["emit", "eb"]);
    wait_for("both to start on eb", 5 * SECOND, || {
        keel.ctl_ok(&["status", "both"])
            .starts_with("both start/running")
    });
}

#[test]
fn signals_to_the_supervisor_keep_its_state_and_its_process() {
    let keel = Keel::start(JOBS);
    let svc = prepare(&keel);
    let supervisor = keel.supervisor_pid().unwrap();
    let signals = [
        ("HUP", libc::SIGHUP),
        ("TERM", libc::SIGTERM),
        ("INT", libc::SIGINT),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("ALRM", libc::SIGALRM),
        ("QUIT", libc::SIGQUIT),
        ("ABRT", libc::SIGABRT),
    ];
    for (name, signo) in signals {
        // Several at once: more than the five quick deaths that dropped the state.
        for _ in 0..6 {
            assert_eq!(unsafe { libc::kill(supervisor, signo) }, 0);
        }
        // Taken in order with requests: once it has answered after a logged
        // signal, the signal was handled.
        let logged = if name == "HUP" {
            "reloading the configuration".to_string()
        } else {
            format!("signal {name} from pid 0 ignored")
        };
        wait_for(&format!("SIG{name} to be handled"), 5 * SECOND, || {
            keel.console().contains(&logged)
        });
        assert_eq!(
            keel.supervisor_pid(),
            Some(supervisor),
            "SIG{name} ended it"
        );
        check_kept(&keel, &svc, &format!("SIG{name}"));
    }
    assert!(
        !keel.console().contains("KEEPS DYING"),
        "{}",
        keel.console()
    );
    check_half_match(&keel);
}

#[test]
fn supervisors_killed_from_outside_never_drop_a_state_that_loads() {
    let keel = Keel::start(JOBS);
    let svc = prepare(&keel);
    // Each new supervisor killed as soon as it answers: quick deaths, one after
    // another, all by an outside signal.
    for round in 0..7 {
        let old = keel.supervisor_pid().unwrap();
        assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
        wait_for("a new supervisor to answer", 10 * SECOND, || {
            keel.supervisor_pid().is_some_and(|p| p != old)
                && keel.ctl(&["version"]).status.success()
        });
        check_kept(&keel, &svc, &format!("kill -9 number {}", round + 1));
    }
    assert!(
        !keel.console().contains("KEEPS DYING"),
        "{}",
        keel.console()
    );
    check_half_match(&keel);
}
