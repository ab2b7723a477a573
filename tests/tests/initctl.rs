//! initctl's commands beyond start/stop/status, against a live supervisor.

use keel_tests::{Keel, bin, wait_for};
use std::process::Command;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn telinit_emits_runlevel_and_runlevel_reports_it() {
    let keel = Keel::start(&[
        (
            "multi",
            "start on runlevel [2345]\nstop on runlevel [!2345]\nexec sleep 1000\n",
        ),
        (
            "env-dump",
            "start on runlevel\ntask\nexec sh -c 'echo $RUNLEVEL $PREVLEVEL >> $DIR/levels'\n",
        ),
    ]);
    // No runlevel yet: Upstart's runlevel(8) says so and fails.
    let none = keel.ctl(&["runlevel"]);
    assert_eq!(String::from_utf8_lossy(&none.stdout), "unknown\n");
    assert_eq!(none.status.code(), Some(1));
    keel.ctl_ok(&["telinit", "2"]);
    assert_eq!(keel.ctl_ok(&["runlevel"]), "N 2\n");
    wait_for("multi to start on runlevel 2", 5 * SECOND, || {
        keel.ctl_ok(&["status", "multi"]).contains("start/running")
    });
    // The task must have run for runlevel 2 before runlevel 1 comes: an event
    // that finds it still running does not start it again (Upstart's rule).
    // PREVLEVEL is N before the first runlevel, as Upstart's telinit says it.
    wait_for("the runlevel 2 event to reach the job", 5 * SECOND, || {
        std::fs::read_to_string(keel.path("levels")).is_ok_and(|t| t == "2 N\n")
            && keel.ctl_ok(&["status", "env-dump"]) == "env-dump stop/waiting\n"
    });
    keel.ctl_ok(&["telinit", "1"]);
    assert_eq!(keel.ctl_ok(&["runlevel"]), "2 1\n");
    wait_for("multi to stop on runlevel 1", 5 * SECOND, || {
        keel.ctl_ok(&["status", "multi"]) == "multi stop/waiting\n"
    });
    wait_for("both runlevel events to reach the job", 5 * SECOND, || {
        std::fs::read_to_string(keel.path("levels")).is_ok_and(|t| t == "2 N\n1 2\n")
    });
    let bad = keel.ctl(&["telinit", "9"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "initctl: illegal runlevel: 9\nTry `initctl --help' for more information.\n"
    );
    // Through links named telinit and runlevel.
    assert!(keel.ctl_link("telinit", &["3"]).status.success());
    assert_eq!(
        String::from_utf8_lossy(&keel.ctl_link("runlevel", &[]).stdout),
        "1 3\n"
    );
}

#[test]
fn the_job_environment_table_reaches_jobs_started_afterwards() {
    let keel = Keel::start(&[(
        "show",
        "task\nenv FROM_TABLE\nexec sh -c 'echo \"$GREETING $FROM_TABLE $PATH\" > $DIR/env'\n",
    )]);
    assert!(keel.ctl_ok(&["list-env"]).contains("PATH=/usr/local/sbin:"));
    keel.ctl_ok(&["set-env", "GREETING=hello"]);
    keel.ctl_ok(&["set-env", "FROM_TABLE=table"]);
    assert_eq!(keel.ctl_ok(&["get-env", "GREETING"]), "hello\n");
    assert!(keel.ctl_ok(&["list-env"]).contains("GREETING=hello\n"));
    keel.ctl_ok(&["start", "show"]);
    let env = std::fs::read_to_string(keel.path("env")).unwrap();
    assert!(env.starts_with("hello table /usr/local/sbin:"), "{env}");
    keel.ctl_ok(&["unset-env", "GREETING"]);
    assert_eq!(keel.ctl(&["get-env", "GREETING"]).status.code(), Some(1));
    keel.ctl_ok(&["set-env", "PATH=/bin"]);
    keel.ctl_ok(&["reset-env"]);
    assert!(
        keel.ctl_ok(&["get-env", "PATH"])
            .starts_with("/usr/local/sbin:")
    );
    // Several at once, all or nothing.
    let bad = keel.ctl(&["set-env", "FIRST=1", "1BAD=x"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "initctl: Invalid variable name: 1BAD\n"
    );
    assert_eq!(keel.ctl(&["get-env", "FIRST"]).status.code(), Some(1));
    keel.ctl_ok(&["set-env", "A=1", "B=2"]);
    // --retain keeps what is set (the defaults too) and adds what is not.
    keel.ctl_ok(&["set-env", "--retain", "A=changed", "C=3", "PATH=/nope"]);
    assert_eq!(keel.ctl_ok(&["get-env", "A"]), "1\n");
    assert_eq!(keel.ctl_ok(&["get-env", "C"]), "3\n");
    assert!(
        keel.ctl_ok(&["get-env", "PATH"])
            .starts_with("/usr/local/sbin:")
    );
    let missing = keel.ctl(&["unset-env", "A", "NOPE"]);
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "initctl: No such variable: NOPE\n"
    );
    assert_eq!(keel.ctl_ok(&["get-env", "A"]), "1\n", "nothing was unset");
    // Sorted, as Upstart lists it.
    assert_eq!(
        keel.ctl_ok(&["list-env"])
            .lines()
            .map(|l| l.split('=').next().unwrap().to_string())
            .collect::<Vec<_>>(),
        ["A", "B", "C", "PATH", "TERM"]
    );
    keel.ctl_ok(&["unset-env", "A", "B", "C"]);
    assert_eq!(keel.ctl_ok(&["list-env"]).lines().count(), 2);
    // Upstart's usage errors.
    let none = keel.ctl(&["get-env"]);
    assert_eq!(
        String::from_utf8_lossy(&none.stderr),
        "initctl: missing variable name\nTry `initctl --help' for more information.\n"
    );
    assert_eq!(none.status.code(), Some(1));
}

#[test]
fn log_priority_usage_and_notify_disk_writeable() {
    let keel = Keel::start(&[("svc", "usage \"svc PORT=N\"\nexec sleep 1000\n")]);
    assert_eq!(keel.ctl_ok(&["log-priority"]), "info\n");
    keel.ctl_ok(&["log-priority", "debug"]);
    assert_eq!(keel.ctl_ok(&["log-priority"]), "debug\n");
    keel.ctl_ok(&["start", "svc"]);
    wait_for("debug lines on the console", 5 * SECOND, || {
        keel.console().contains("DEBUG")
    });
    assert_eq!(keel.ctl(&["log-priority", "loud"]).status.code(), Some(1));
    assert_eq!(keel.ctl_ok(&["usage", "svc"]), "Usage: svc PORT=N\n");
    assert_eq!(
        String::from_utf8_lossy(&keel.ctl(&["usage", "nope"]).stderr),
        "initctl: Unknown job: nope\n"
    );
    keel.ctl_ok(&["notify-disk-writeable"]);
    let json = keel.ctl_ok(&["--json", "status", "svc"]);
    assert!(
        json.starts_with("[{\"") && json.contains("\"state\":\"running\""),
        "{json}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin("initctl"))
            .args(["completions", shell])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && text.contains("initctl")
                && text.contains("reload-configuration"),
            "{shell}"
        );
    }
    let man = Command::new(bin("initctl")).arg("man").output().unwrap();
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(
        text.contains(".TH initctl") && text.contains("show\\-config"),
        "{text}"
    );
}
