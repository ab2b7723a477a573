//! Override files (init(5)): `NAME.override` beside `NAME.conf`, read over the job
//! file, under a running supervisor: at boot, added, changed and removed while keel
//! runs, with errors, and across a crash of the supervisor; show-config's
//! provenance in text and JSON.

use keel_tests::{Keel, wait_for};
use std::fs;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

fn json_config(keel: &Keel, job: &str) -> serde_json::Value {
    let text = keel.ctl_ok(&["--json", "show-config", job]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_manual_override_keeps_a_job_from_starting_while_initctl_start_still_works() {
    let keel = Keel::start(&[
        (
            "svc",
            "start on startup\nexec sh -c 'echo $FROM > $DIR/from; exec sleep 1000'\n",
        ),
        ("svc.override", "manual\nenv FROM=override\n"),
        // A witness that `startup` has been handled.
        (
            "witness",
            "start on startup\ntask\nexec touch $DIR/witness\n",
        ),
    ]);
    wait_for("startup to be handled", 5 * SECOND, || {
        keel.path("witness").exists()
    });
    assert_eq!(keel.ctl_ok(&["status", "svc"]), "svc stop/waiting\n");

    let dir = keel.path("conf");
    let file = dir.join("svc.override").display().to_string();
    assert_eq!(
        keel.ctl_ok(&["show-config", "svc"]),
        format!("svc\n  overridden by {file}: manual, env\n")
    );
    let shown = json_config(&keel, "svc");
    assert_eq!(shown[0]["start_on"], serde_json::Value::Null);
    assert_eq!(
        shown[0]["override"],
        serde_json::json!({"file": file, "stanzas": ["manual", "env"]})
    );
    assert_eq!(
        json_config(&keel, "witness")[0]["override"],
        serde_json::Value::Null
    );

    // initctl start still works, and the override's stanzas are the job's.
    assert!(keel.ctl_ok(&["start", "svc"]).contains("start/running"));
    wait_for("the job to write its variable", 5 * SECOND, || {
        fs::read_to_string(keel.path("from")).is_ok_and(|t| t == "override\n")
    });
}

#[test]
fn an_override_added_changed_and_removed_while_keel_runs_takes_effect_like_an_edit() {
    let keel = Keel::start(&[("svc", "start on go\nexec sleep 1000\n")]);
    let over = keel.path("conf/svc.override");
    let shows = |text: &str| keel.ctl_ok(&["show-config", "svc"]) == text;

    // Added: `manual` disables the automatic start.
    fs::write(&over, "manual\n").unwrap();
    let file = over.display().to_string();
    wait_for("the override to be read", 5 * SECOND, || {
        shows(&format!("svc\n  overridden by {file}: manual\n"))
    });
    keel.ctl_ok(&["emit", "go"]);
    assert_eq!(keel.ctl_ok(&["status", "svc"]), "svc stop/waiting\n");

    // Changed: another `start on` replaces the job file's.
    fs::write(&over, "start on other\n").unwrap();
    wait_for("the changed override to be read", 5 * SECOND, || {
        shows(&format!(
            "svc\n  start on other\n  overridden by {file}: start on\n"
        ))
    });
    keel.ctl_ok(&["emit", "go"]);
    assert_eq!(keel.ctl_ok(&["status", "svc"]), "svc stop/waiting\n");
    keel.ctl_ok(&["emit", "other"]);
    assert!(keel.ctl_ok(&["status", "svc"]).contains("start/running"));
    keel.ctl_ok(&["stop", "svc"]);

    // Removed: the job file alone again.
    fs::remove_file(&over).unwrap();
    wait_for("the override's removal to be read", 5 * SECOND, || {
        shows("svc\n  start on go\n")
    });
    keel.ctl_ok(&["emit", "go"]);
    assert!(keel.ctl_ok(&["status", "svc"]).contains("start/running"));
}

#[test]
fn errors_in_an_override_are_reported_at_file_line_and_column_and_unload_only_its_job() {
    let keel = Keel::start(&[("svc", "exec sleep 1000\n"), ("other", "exec sleep 1000\n")]);
    let over = keel.path("conf/svc.override");
    fs::write(&over, "manual\nrespawn limit x 5\n").unwrap();
    let expected = format!("{}:2:15: error: illegal respawn count: x", over.display());
    wait_for("the error to be reported", 5 * SECOND, || {
        keel.console().contains(&expected)
    });
    let gone = keel.ctl(&["status", "svc"]);
    // Unknown, and why: the override's error (issue 19's load errors).
    assert_eq!(
        String::from_utf8_lossy(&gone.stderr),
        format!("initctl: Unknown job: svc (its job file did not load: {expected})\n")
    );
    assert_eq!(keel.ctl_ok(&["status", "other"]), "other stop/waiting\n");

    // Mended: the job is back, with the override.
    fs::write(&over, "manual\nrespawn limit 5 10\n").unwrap();
    wait_for("the mended override to be read", 5 * SECOND, || {
        keel.ctl(&["status", "svc"]).status.success()
    });
    let shown = json_config(&keel, "svc");
    assert_eq!(
        shown[0]["override"]["stanzas"],
        serde_json::json!(["manual", "respawn limit"])
    );
}

#[test]
fn provenance_survives_a_supervisor_that_takes_the_saved_definitions() {
    let keel = Keel::start(&[
        ("svc", "start on startup\nexec sleep 1000\n"),
        ("svc.override", "manual\n"),
    ]);
    let before = keel.ctl_ok(&["show-config", "svc"]);
    assert!(before.contains("overridden by"), "{before}");
    let old = keel.supervisor_pid().unwrap();
    // SAFETY: kill(2) of the supervisor, by pid; no memory involved.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("a new supervisor to answer", 10 * SECOND, || {
        keel.supervisor_pid().is_some_and(|p| p != old) && keel.ctl(&["version"]).status.success()
    });
    assert!(
        keel.console()
            .contains("job definitions taken from the saved state"),
        "{}",
        keel.console()
    );
    assert_eq!(keel.ctl_ok(&["show-config", "svc"]), before);
    assert_eq!(keel.ctl_ok(&["status", "svc"]), "svc stop/waiting\n");
}
