//! Job files under a running supervisor: inotify and reload-configuration,
//! show-config, check-config, and the offline `--check`.

use keel_tests::{Keel, bin, status_pid, wait_for};
use std::fs;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn added_changed_and_deleted_files_take_effect_without_disturbing_running_jobs() {
    let keel = Keel::start(&[("svc", "exec sleep 1000\n")]);
    let conf = keel.path("conf");
    let running = keel.ctl_ok(&["start", "svc"]);
    let pid = status_pid(&running).unwrap();

    // Added: appears without any request (inotify).
    fs::write(conf.join("new.conf"), "task\nexec true\n").unwrap();
    wait_for("the new job to appear", 5 * SECOND, || {
        keel.ctl(&["status", "new"]).status.success()
    });
    // In a subdirectory: the name is the relative path.
    fs::create_dir_all(conf.join("net")).unwrap();
    fs::write(conf.join("net/web.conf"), "exec sleep 1000\n").unwrap();
    wait_for("net/web to appear", 5 * SECOND, || {
        keel.ctl(&["status", "net/web"]).status.success()
    });

    // Changed: the running instance keeps its definition and its process; the
    // next start takes the new one.
    fs::write(
        conf.join("svc.conf"),
        format!(
            "script\n  echo changed > {}\n  exec sleep 1000\nend script\n",
            keel.path("changed").display()
        ),
    )
    .unwrap();
    keel.ctl_ok(&["reload-configuration"]);
    assert_eq!(status_pid(&keel.ctl_ok(&["status", "svc"])), Some(pid));
    assert!(!keel.path("changed").exists());
    keel.ctl_ok(&["stop", "svc"]);
    keel.ctl_ok(&["start", "svc"]);
    wait_for("the new definition to run", 5 * SECOND, || {
        keel.path("changed").exists()
    });

    // Deleted while running: the job stays until stopped, then goes.
    fs::remove_file(conf.join("svc.conf")).unwrap();
    keel.ctl_ok(&["reload-configuration"]);
    assert!(keel.ctl_ok(&["status", "svc"]).contains("start/running"));
    keel.ctl_ok(&["stop", "svc"]);
    let gone = keel.ctl(&["status", "svc"]);
    assert_eq!(
        String::from_utf8_lossy(&gone.stderr),
        "initctl: Unknown job: svc\n"
    );

    // A broken file is reported and never affects the other jobs.
    fs::write(conf.join("broken.conf"), "exec\nbogus stanza\n").unwrap();
    assert_eq!(keel.ctl(&["reload-configuration"]).status.code(), Some(1));
    assert!(!keel.ctl(&["status", "broken"]).status.success());
    assert!(keel.ctl(&["status", "new"]).status.success());
    let console = keel.console();
    assert!(
        console.contains("broken.conf:2:1: error: unknown stanza"),
        "{console}"
    );
}

#[test]
fn show_config_parses_back_to_the_same_definition() {
    let text = "description \"a web server\"\nstart on (started net and filesystem) or runlevel [2345]\n\
                stop on runlevel [!2345]\nemits web-up\nrespawn\nrespawn limit 3 10\nenv PORT=8080\n\
                kill timeout 2\nnormal exit 0 TERM\npre-start script\n  echo \"starting\"\n  test -d /tmp\nend script\n\
                exec sleep 1000\n";
    let keel = Keel::start(&[("web", text), ("net", "emits net-up\nexec true\n")]);
    // Upstart's words as text; the whole definition in the JSON answer.
    assert_eq!(
        keel.ctl_ok(&["show-config", "web"]),
        "web\n  emits web-up\n  start on ((started net and filesystem) or runlevel [2345])\n  \
         stop on runlevel [!2345]\n"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&keel.ctl_ok(&["--json", "show-config", "web"])).unwrap();
    let body = shown[0]["definition"].as_str().unwrap();
    let reparsed = keel_supervisor::job::parse("web", body);
    let original = keel_supervisor::job::parse("web", text);
    assert!(reparsed.def.is_some(), "{:?}", reparsed.diagnostics);
    assert_eq!(reparsed.def, original.def);
    // Every job when none is named.
    let all = keel.ctl_ok(&["show-config"]);
    assert!(all.starts_with("net\n") && all.contains("\nweb\n"), "{all}");
}

#[test]
fn check_config_names_events_nothing_emits() {
    let keel = Keel::start(&[
        ("a", "start on startup or never-emitted\nexec true\n"),
        (
            "b",
            "start on started a or web-up\nstop on stopped ghost\nexec true\n",
        ),
        ("c", "emits web-up\nexec true\n"),
    ]);
    let out = keel.ctl(&["check-config"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a\n  start on: unknown event never-emitted\nb\n  stop on: unknown job ghost\n"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "findings make check-config fail"
    );
}

#[test]
fn a_job_file_that_did_not_load_is_reported_by_initctl_at_its_line() {
    let keel = Keel::start(&[
        ("good", "exec sleep 1000\n"),
        ("typo", "start on startup\nrespwan\nexec sleep 1000\n"),
    ]);
    let typo = keel.path("conf/typo.conf").display().to_string();
    let error = format!("{typo}:2:1: error: unknown stanza: respwan");
    let stdout = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let check = keel.ctl(&["check-config"]);
    assert_eq!(stdout(&check), format!("{error}\n"));
    assert_eq!(
        check.status.code(),
        Some(1),
        "a file that did not load fails"
    );
    let only = keel.ctl(&["check-config", "typo"]);
    assert_eq!(
        (stdout(&only), only.status.code()),
        (format!("{error}\n"), Some(1))
    );
    assert!(keel.ctl(&["check-config", "good"]).status.success());
    let json = stdout(&keel.ctl(&["--json", "check-config"]));
    let findings: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        findings,
        serde_json::json!([{"job": "typo", "condition": "job file", "message": error}])
    );

    // The job does not exist, and initctl says why.
    for command in ["status", "start"] {
        let out = keel.ctl(&[command, "typo"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            format!("initctl: Unknown job: typo (its job file did not load: {error})\n")
        );
    }
    let reload = keel.ctl(&["reload-configuration"]);
    assert_eq!(reload.status.code(), Some(1));
    assert!(
        stderr(&reload).contains(&format!("\n{error}\n")),
        "{}",
        stderr(&reload)
    );
    assert!(keel.ctl_ok(&["start", "good"]).contains("start/running"));

    // Mended: every command is content again.
    fs::write(keel.path("conf/typo.conf"), "respawn\nexec sleep 1000\n").unwrap();
    keel.ctl_ok(&["reload-configuration"]);
    assert!(keel.ctl(&["check-config"]).status.success());
    assert!(keel.ctl_ok(&["status", "typo"]).contains("stop/waiting"));
}

#[test]
fn a_successor_that_took_the_saved_definitions_still_knows_what_did_not_load() {
    let keel = Keel::start(&[("typo", "respwan\nexec true\n")]);
    let old = keel.supervisor_pid().unwrap();
    // SAFETY: kill(2) of the supervisor, by pid; no memory involved.
    unsafe { libc::kill(old, libc::SIGKILL) };
    successor(&keel, old);
    assert_eq!(keel.console().matches(TAKEN).count(), 1);
    let check = keel.ctl(&["check-config"]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("typo.conf:1:1: error: unknown stanza"),
        "{check:?}"
    );
    assert_eq!(check.status.code(), Some(1));
}

#[test]
fn check_reports_every_problem_with_file_line_and_column() {
    let dir = keel_tests::Scratch::new("check");
    fs::write(dir.0.join("good.conf"), "exec true\n").unwrap();
    fs::write(
        dir.0.join("bad.conf"),
        "exec true\nexpect WHAT\nlimit nofile 10\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("keel-supervisor"))
        .arg("--check")
        .arg(&dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let bad = dir.0.join("bad.conf").display().to_string();
    assert!(text.contains(&format!("{bad}:2:8: error:")), "{text}");
    assert!(text.contains(&format!("{bad}:3:")), "{text}");
    assert!(!text.contains("good.conf"), "{text}");
    let ok = std::process::Command::new(bin("keel-supervisor"))
        .arg("--check")
        .arg(dir.0.join("good.conf"))
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
}

/// Waits for a supervisor other than `old` to answer.
fn successor(keel: &Keel, old: i32) {
    wait_for("a new supervisor to answer", 10 * SECOND, || {
        keel.supervisor_pid().is_some_and(|p| p != old) && keel.ctl(&["version"]).status.success()
    });
}

const TAKEN: &str = "job definitions taken from the saved state";

#[test]
fn a_new_supervisor_takes_the_saved_definitions_while_the_watch_in_the_lifeboat_saw_no_change() {
    let keel = Keel::start(&[("svc", "exec sleep 1000\n"), ("other", "exec sleep 1001\n")]);
    keel.ctl_ok(&["start", "svc"]);
    // Nothing changed: the successor does not read the job files again.
    let old = keel.supervisor_pid().unwrap();
    // SAFETY: kill(2) of the supervisor, by pid; no memory involved.
    unsafe { libc::kill(old, libc::SIGKILL) };
    successor(&keel, old);
    assert_eq!(
        keel.console().matches(TAKEN).count(),
        1,
        "{}",
        keel.console()
    );
    assert!(keel.ctl_ok(&["status", "svc"]).contains("start/running"));
    // A file changes while no supervisor reads the watch (this one is stopped,
    // then killed): the change waits in the watch, and the successor reads it.
    let stopped = keel.supervisor_pid().unwrap();
    // SAFETY: kill(2) of the supervisor, by pid (twice); no memory involved.
    unsafe { libc::kill(stopped, libc::SIGSTOP) };
    fs::write(
        keel.path("conf/other.conf"),
        "emits changed-meanwhile\nexec sleep 1001\n",
    )
    .unwrap();
    unsafe { libc::kill(stopped, libc::SIGKILL) };
    successor(&keel, stopped);
    wait_for("the change to be read", 5 * SECOND, || {
        keel.ctl_ok(&["show-config", "other"])
            .contains("emits changed-meanwhile")
    });
    assert_eq!(keel.console().matches(TAKEN).count(), 2);
}

#[test]
fn a_supervisor_killed_while_it_reads_a_change_leaves_its_successor_to_read_every_file() {
    let marks = keel_tests::Scratch::new("mark");
    let mark = marks.0.join("fault-acted");
    let keel = Keel::start_with_fault(&[("svc", "exec sleep 1000\n")], "abort-mid-reload", &mark);
    // The supervisor reads the change from its watch and aborts before loading
    // it: the change is gone from the watch, so its successor must read the files.
    fs::write(
        keel.path("conf/svc.conf"),
        "emits seen-after-all\nexec sleep 1000\n",
    )
    .unwrap();
    wait_for(
        "the fault to act and a new supervisor to answer",
        10 * SECOND,
        || mark.exists() && keel.ctl(&["version"]).status.success(),
    );
    assert!(
        keel.ctl_ok(&["show-config", "svc"])
            .contains("emits seen-after-all")
    );
    assert_eq!(
        keel.console().matches(TAKEN).count(),
        0,
        "{}",
        keel.console()
    );
}
