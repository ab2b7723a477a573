//! initctl and the control socket against a live supervisor: every command's
//! output and exit code in Upstart's words, the names initctl answers to as a
//! link, the JSON answers, who may do what, and clients that misbehave.

use keel_proto::ctl::{ClientHello, ErrorKind, MAGIC, Request, Response, ServerHello, VERSION};
use keel_proto::frame;
use keel_supervisor::control::DEADLINE;
use keel_tests::{Keel, Setup, bin, initctl_as_nobody, rss_kib, status_pid, wait_for};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);
/// How long a normal client may take while others misbehave: far below the
/// deadline that ends a misbehaving client.
const PROMPT: Duration = Duration::from_secs(3);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts initctl failed with exit status 1 and exactly this on stderr.
fn fails(o: &Output, err: &str) {
    assert_eq!(stderr(o), err, "stdout: {}", stdout(o));
    assert_eq!(o.status.code(), Some(1), "{err}");
}

fn status_req(job: &str) -> Request {
    Request::Status {
        job: job.into(),
        instance: None,
        env: vec![],
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

// Every command's output and exit code.

#[test]
fn job_commands_answer_in_upstarts_words() {
    let keel = Keel::start(&[
        ("svc", "exec sleep 1000\n"),
        ("tty", "instance $TTY\nexec sleep 1000\n"),
        ("task", "task\nexec true\n"),
        ("fails", "task\nexec false\n"),
        (
            "slow",
            "pre-start script\n  while [ ! -e $DIR/go ]; do sleep 0.02; done\nend script\nexec sleep 1000\n",
        ),
    ]);
    // Every job, also one with an `instance` stanza and none running.
    assert_eq!(
        keel.ctl_ok(&["list"]),
        "fails stop/waiting\nslow stop/waiting\nsvc stop/waiting\ntask stop/waiting\ntty stop/waiting\n"
    );
    assert_eq!(keel.ctl_ok(&["status", "tty"]), "tty stop/waiting\n");

    let started = keel.ctl_ok(&["start", "svc"]);
    let pid = status_pid(&started).expect("a pid");
    assert_eq!(started, format!("svc start/running, process {pid}\n"));
    assert_eq!(keel.ctl_ok(&["status", "svc"]), started);

    let tty1 = keel.ctl_ok(&["start", "tty", "TTY=tty1"]);
    let tty1_pid = status_pid(&tty1).unwrap();
    assert_eq!(
        tty1,
        format!("tty (tty1) start/running, process {tty1_pid}\n")
    );
    let tty2 = keel.ctl_ok(&["start", "tty", "TTY=tty2"]);
    assert_eq!(keel.ctl_ok(&["status", "tty", "TTY=tty1"]), tty1);
    assert_eq!(
        keel.ctl_ok(&["status", "tty"]),
        format!("{tty1}{tty2}"),
        "every instance"
    );
    assert!(keel.ctl_ok(&["list"]).contains(&format!("{started}task")));

    fails(
        &keel.ctl(&["start", "nope"]),
        "initctl: Unknown job: nope\n",
    );
    fails(
        &keel.ctl(&["status", "nope"]),
        "initctl: Unknown job: nope\n",
    );
    fails(
        &keel.ctl(&["start", "svc"]),
        "initctl: Job is already running: svc\n",
    );
    fails(
        &keel.ctl(&["stop", "tty", "TTY=tty9"]),
        "initctl: Unknown instance: tty (tty9)\n",
    );
    fails(
        &keel.ctl(&["start", "svc", "NOT-A-PAIR"]),
        "initctl: Env must be KEY=VALUE pairs\n",
    );
    let failed = keel.ctl(&["start", "fails"]);
    assert_eq!(failed.status.code(), Some(1));
    let err = stderr(&failed);
    assert!(
        err.starts_with("initctl: Job failed to start: main process (")
            && err.ends_with(") terminated with status 1\n"),
        "{err:?}"
    );

    let restarted = keel.ctl_ok(&["restart", "svc"]);
    let new_pid = status_pid(&restarted).unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(restarted, format!("svc start/running, process {new_pid}\n"));
    assert_eq!(keel.ctl_ok(&["stop", "svc"]), "svc stop/waiting\n");
    fails(
        &keel.ctl(&["stop", "svc"]),
        "initctl: Job has already been stopped: svc\n",
    );
    fails(
        &keel.ctl(&["restart", "svc"]),
        "initctl: Job has already been stopped: svc\n",
    );
    assert_eq!(
        keel.ctl_ok(&["stop", "tty", "TTY=tty1"]),
        "tty (tty1) stop/waiting\n"
    );

    // A task's start returns once it has run.
    assert_eq!(keel.ctl_ok(&["start", "task"]), "task stop/waiting\n");

    // --no-wait answers at once; the first process is on the status line (here
    // the pre-start, as Upstart shows it).
    let early = keel.ctl_ok(&["start", "-n", "slow"]);
    let pre = status_pid(&early).unwrap_or_else(|| panic!("{early:?}"));
    assert_eq!(early, format!("slow start/pre-start, process {pre}\n"));
    assert_eq!(keel.ctl_ok(&["status", "slow"]), early);
    keel.touch("go");
    wait_for("slow to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "slow"])
            .starts_with("slow start/running, process ")
    });
    assert_eq!(
        keel.ctl_ok(&["stop", "--no-wait", "slow"])
            .lines()
            .next()
            .map(|l| l.starts_with("slow stop/")),
        Some(true)
    );
}

#[test]
fn reload_and_emit_print_nothing_and_say_what_went_wrong() {
    let keel = Keel::start(&[
        ("svc", "start on startup\nexec sleep 1000\n"),
        ("off", "exec sleep 1000\n"),
        ("poked", "start on poke\ntask\nexec touch $DIR/poked\n"),
    ]);
    wait_for("svc to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "svc"]).contains("start/running")
    });
    assert_eq!(keel.ctl_ok(&["reload", "svc"]), "");
    fails(
        &keel.ctl(&["reload", "off"]),
        "initctl: Job is not running: off\n",
    );
    fails(
        &keel.ctl(&["reload", "nope"]),
        "initctl: Unknown job: nope\n",
    );

    assert_eq!(keel.ctl_ok(&["emit", "--no-wait", "poke"]), "");
    wait_for("the job the event starts", 5 * SECOND, || {
        keel.path("poked").exists()
    });
    assert_eq!(keel.ctl_ok(&["emit", "-n", "unheard", "A=1"]), "");
    fails(
        &keel.ctl(&["emit", "poke", "BROKEN"]),
        "initctl: Env must be KEY=VALUE pairs\n",
    );
    fails(
        &keel.ctl(&["emit", ""]),
        "initctl: Name may not be empty string\n",
    );
    fails(
        &keel.ctl(&["emit"]),
        "initctl: missing event name\nTry `initctl --help' for more information.\n",
    );
}

#[test]
fn show_config_and_check_config_in_upstarts_words() {
    let keel = Keel::start(&[
        (
            "web",
            "emits web-up\nemits web-down\nstart on (started net and disks-ready) or runlevel [2345]\n\
             stop on runlevel [!2345]\nexec sleep 1000\n",
        ),
        (
            "net",
            "start on startup\nstop on stopping web RESULT=failed\nexec true\n",
        ),
        ("plain", "exec true\n"),
    ]);
    assert_eq!(
        keel.ctl_ok(&["show-config"]),
        "net\n  start on startup\n  stop on stopping web RESULT=failed\nplain\n\
         web\n  emits web-up\n  emits web-down\n  start on ((started net and disks-ready) or runlevel [2345])\n  \
         stop on runlevel [!2345]\n"
    );
    assert_eq!(
        keel.ctl_ok(&["show-config", "-e", "web"]),
        "web\n  emits web-up\n  emits web-down\n  start on started (job: net, env:)\n  \
         start on disks-ready (job:, env:)\n  start on runlevel (job:, env: [2345])\n  \
         stop on runlevel (job:, env: [!2345])\n"
    );
    assert_eq!(
        keel.ctl_ok(&["show-config", "--enumerate", "net"]),
        "net\n  start on startup (job:, env:)\n  stop on stopping (job: web, env: RESULT=failed)\n"
    );
    fails(
        &keel.ctl(&["show-config", "nope"]),
        "initctl: Unknown job: nope\n",
    );

    // `disks-ready` is emitted by nobody: reported, exit status 1.
    let check = keel.ctl(&["check-config"]);
    assert_eq!(
        stdout(&check),
        "web\n  start on: unknown event disks-ready\n"
    );
    assert_eq!(check.status.code(), Some(1));
    let only = keel.ctl(&["check-config", "net"]);
    assert_eq!(
        (stdout(&only), only.status.code()),
        (String::new(), Some(0))
    );
    let ignored = keel.ctl(&["check-config", "--ignore-events", "disks-ready,other", "-w"]);
    assert_eq!(
        (stdout(&ignored), ignored.status.code()),
        (String::new(), Some(0))
    );
    fails(
        &keel.ctl(&["check-config", "nope"]),
        "initctl: Invalid job class: nope\n",
    );
}

#[test]
fn version_runlevel_telinit_log_priority_usage_and_the_rest() {
    let keel = Keel::start(&[
        ("svc", "usage \"svc PORT=N\"\nexec sleep 1000\n"),
        (
            "levels",
            "start on runlevel\ntask\nexec sh -c 'echo $RUNLEVEL $PREVLEVEL $WHY >> $DIR/levels'\n",
        ),
    ]);
    assert_eq!(
        keel.ctl_ok(&["version"]),
        format!("keel {}\n", env!("CARGO_PKG_VERSION"))
    );
    fails(&keel.ctl(&["runlevel"]), "");
    assert_eq!(stdout(&keel.ctl(&["runlevel"])), "unknown\n");
    assert_eq!(keel.ctl_ok(&["telinit", "-e", "WHY=test", "2"]), "");
    assert_eq!(keel.ctl_ok(&["runlevel"]), "N 2\n");
    wait_for(
        "the runlevel event with the extra variable",
        5 * SECOND,
        || keel.lines("levels") == ["2 N test"],
    );
    keel.ctl_ok(&["telinit", "s"]);
    assert_eq!(keel.ctl_ok(&["runlevel"]), "2 S\n");
    fails(
        &keel.ctl(&["telinit", "7"]),
        "initctl: illegal runlevel: 7\nTry `initctl --help' for more information.\n",
    );
    fails(
        &keel.ctl(&["telinit"]),
        "initctl: missing runlevel\nTry `initctl --help' for more information.\n",
    );
    // telinit q re-reads the job files, as reload-configuration does.
    assert_eq!(keel.ctl_ok(&["telinit", "q"]), "");
    assert_eq!(keel.ctl_ok(&["reload-configuration"]), "");

    assert_eq!(keel.ctl_ok(&["log-priority"]), "info\n");
    assert_eq!(keel.ctl_ok(&["log-priority", "warn"]), "");
    assert_eq!(keel.ctl_ok(&["log-priority"]), "warn\n");
    fails(
        &keel.ctl(&["log-priority", "loud"]),
        "initctl: unknown priority: loud (debug, info, message, warn, error, fatal)\n",
    );
    assert_eq!(keel.ctl_ok(&["usage", "svc"]), "Usage: svc PORT=N\n");
    assert_eq!(keel.ctl_ok(&["usage", "levels"]), "Usage: \n");
    fails(
        &keel.ctl(&["usage", "nope"]),
        "initctl: Unknown job: nope\n",
    );
    assert_eq!(keel.ctl_ok(&["notify-disk-writeable"]), "");

    // telinit u re-executes the supervisor, as Upstart's does; jobs carry on.
    keel.ctl_ok(&["log-priority", "info"]);
    let running = keel.ctl_ok(&["start", "svc"]);
    assert_eq!(keel.ctl_ok(&["telinit", "u"]), "");
    wait_for("the re-exec", 10 * SECOND, || {
        keel.console().contains("re-executing")
    });
    wait_for("the re-executed supervisor to answer", 10 * SECOND, || {
        keel.ctl(&["status", "svc"]).status.success()
    });
    assert_eq!(keel.ctl_ok(&["status", "svc"]), running);
}

#[test]
fn initctl_and_a_supervisor_of_another_protocol_version_say_so() {
    // A stand-in server: answers the hello as a supervisor of `version` would
    // (or with `magic` other than keel's), then closes.
    let dir = keel_tests::Scratch::new("proto");
    let path = dir.0.join("control");
    let serve = |magic: [u8; 4], version: u32| {
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            next_frame(&mut s);
            let answer = ServerHello {
                magic,
                version,
                accepted: version == VERSION,
            };
            s.write_all(&frame::encode(&answer).unwrap()).unwrap();
        });
        let out = Command::new(bin("initctl"))
            .args(["--socket", path.to_str().unwrap(), "list"])
            .output()
            .unwrap();
        server.join().unwrap();
        out
    };
    fails(
        &serve(MAGIC, VERSION + 1),
        &format!(
            "initctl: protocol version mismatch: this initctl speaks control protocol {VERSION}, \
             the supervisor speaks {}; use the initctl that came with the running keel\n",
            VERSION + 1
        ),
    );
    fails(
        &serve(*b"nope", VERSION),
        &format!("initctl: {} is not a keel control socket\n", path.display()),
    );
}

#[test]
fn usage_errors_read_like_upstarts_and_exit_1() {
    let keel = Keel::start(&[]);
    let help = "Try `initctl --help' for more information.\n";
    fails(&keel.ctl(&[]), &format!("initctl: missing command\n{help}"));
    fails(
        &keel.ctl(&["frobnicate"]),
        &format!("initctl: invalid command: frobnicate\n{help}"),
    );
    fails(
        &keel.ctl(&["status", "--bogus", "svc"]),
        &format!("initctl: invalid option: --bogus\n{help}"),
    );
    for cmd in ["start", "stop", "restart", "reload", "status", "usage"] {
        fails(
            &keel.ctl(&[cmd]),
            &format!("initctl: missing job name\n{help}"),
        );
    }
    fails(
        &keel.ctl(&["set-env"]),
        &format!("initctl: missing variable value\n{help}"),
    );
    fails(
        &keel.ctl(&["unset-env"]),
        &format!("initctl: missing variable name\n{help}"),
    );
    let help_out = keel.ctl(&["--help"]);
    assert!(help_out.status.success() && stdout(&help_out).contains("show-config"));
    // No supervisor there: a clear message, exit status 1.
    let gone = Command::new(bin("initctl"))
        .args(["--socket", "/nonexistent/control", "list"])
        .output()
        .unwrap();
    fails(
        &gone,
        "initctl: Unable to connect to keel: /nonexistent/control: No such file or directory\n",
    );
}

#[test]
fn links_are_the_commands_they_are_named() {
    let mut keel = Keel::start(&[(
        "svc",
        "script\n  trap '' HUP\n  exec sleep 1000\nend script\npost-stop exec touch $DIR/post-stop\n",
    )]);
    let link = |name: &str, args: &[&str]| keel.ctl_link(name, args);
    let started = stdout(&link("start", &["svc"]));
    assert!(
        started.starts_with("svc start/running, process "),
        "{started}"
    );
    assert_eq!(stdout(&link("status", &["svc"])), started);
    fails(
        &link("start", &["svc"]),
        "start: Job is already running: svc\n",
    );
    fails(&link("status", &["nope"]), "status: Unknown job: nope\n");
    fails(
        &link("stop", &[]),
        "stop: missing job name\nTry `stop --help' for more information.\n",
    );
    let restarted = stdout(&link("restart", &["svc"]));
    assert!(restarted.starts_with("svc start/running, process "));
    assert_ne!(restarted, started);
    // Past `trap '' HUP` (the shell execs sleep after it): the reload must not kill it.
    let main = keel_tests::status_pid(&restarted).and_then(|p| keel.host_pid(p));
    wait_for("main to be sleep", 5 * SECOND, || {
        main.and_then(keel_tests::comm).as_deref() == Some("sleep")
    });
    let reloaded = link("reload", &["svc"]);
    assert!(reloaded.status.success() && reloaded.stdout.is_empty());
    assert_eq!(stdout(&link("stop", &["svc"])), "svc stop/waiting\n");
    assert_eq!(stdout(&link("runlevel", &[])), "unknown\n");
    assert!(link("telinit", &["3"]).status.success());
    assert_eq!(stdout(&link("runlevel", &[])), "N 3\n");
    keel.ctl_ok(&["start", "svc"]);
    assert!(link("halt", &[]).status.success());
    keel.wait_end(10 * SECOND);
    assert!(
        keel.path("post-stop").exists(),
        "halt stopped the job first"
    );
}

#[test]
fn poweroff_and_reboot_links_end_the_namespace_after_stopping_jobs() {
    for (name, marker) in [
        ("poweroff", "keel-init: power off"),
        ("reboot", "keel-init: reboot"),
    ] {
        let mut keel = Keel::start(&[(
            "svc",
            "start on startup\nexec sleep 1000\npost-stop exec touch $DIR/post-stop\n",
        )]);
        wait_for("svc to run", 5 * SECOND, || {
            keel.ctl_ok(&["status", "svc"]).contains("start/running")
        });
        let out = keel.ctl_link(name, &[]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        keel.wait_end(10 * SECOND);
        assert!(keel.path("post-stop").exists(), "{name}");
        assert!(keel.console().contains(marker), "{}", keel.console());
    }
}

#[test]
fn within_a_job_a_command_without_a_job_name_means_that_very_instance() {
    let initctl = bin("initctl").display().to_string();
    // Upstart's idiom: a pre-start that decides the job should not run (`stop;
    // exit 0`), here for instance 1 only.
    let selfstop = format!(
        "instance $N\nenv KEEL_SOCKET=$DIR/control\npre-start script\n  if [ \"$N\" = 1 ]; then {initctl} stop > $DIR/self-stop; exit 0; fi\nend script\n\
         script\n  echo main $N >> $DIR/trace\n  exec sleep 1000\nend script\n"
    );
    let whoami = format!(
        "instance $N\ntask\nenv KEEL_SOCKET=$DIR/control\nexec sh -c '{initctl} status > $DIR/whoami'\n"
    );
    let keel = Keel::start(&[("selfstop", &selfstop), ("whoami", &whoami)]);
    let two = keel.ctl_ok(&["start", "selfstop", "N=2"]);
    keel.ctl_ok(&["start", "--no-wait", "selfstop", "N=1"]);
    wait_for("instance 1 to have stopped itself", 5 * SECOND, || {
        keel.ctl_ok(&["status", "selfstop"]) == two
    });
    assert_eq!(
        keel.lines("trace"),
        ["main 2"],
        "instance 1's main never ran"
    );
    let said = std::fs::read_to_string(keel.path("self-stop")).unwrap();
    assert!(
        said.starts_with("selfstop (1) stop/pre-start, process "),
        "{said:?}"
    );
    keel.ctl_ok(&["start", "whoami", "N=7"]);
    let seen = std::fs::read_to_string(keel.path("whoami")).unwrap();
    assert!(
        seen.starts_with("whoami (7) start/running, process "),
        "{seen:?}"
    );
}

#[test]
fn json_answers_follow_the_documented_schema() {
    let keel = Keel::start(&[
        (
            "svc",
            "start on startup\nemits svc-up\nusage \"svc\"\nexec sleep 1000\n",
        ),
        ("t", "instance $N\nstart on stopped svc\nexec sleep 1000\n"),
    ]);
    wait_for("svc to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "svc"]).contains("start/running")
    });
    let status = json(&keel.ctl_ok(&["--json", "status", "svc"]));
    let one = &status[0];
    assert_eq!(
        keys(one),
        [
            "failure",
            "goal",
            "instance",
            "job",
            "log",
            "processes",
            "state",
            "status"
        ]
    );
    assert_eq!(
        one["log"],
        serde_json::json!([]),
        "no failure, no log lines"
    );
    assert_eq!(
        (
            one["job"].as_str(),
            one["instance"].as_str(),
            one["goal"].as_str(),
            one["state"].as_str()
        ),
        (Some("svc"), Some(""), Some("start"), Some("running"))
    );
    assert_eq!(keys(&one["processes"][0]), ["kind", "pid"]);
    assert_eq!(one["processes"][0]["kind"], "main");
    assert!(one["processes"][0]["pid"].as_i64().is_some());
    assert!(one["failure"].is_null() && one["status"].is_null());
    let list = json(&keel.ctl_ok(&["--json", "list"]));
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(list[1]["state"], "waiting");

    let config = json(&keel.ctl_ok(&["show-config", "--json"]));
    let svc = &config[0];
    assert_eq!(
        keys(svc),
        [
            "definition",
            "emits",
            "job",
            "override",
            "start_on",
            "start_on_events",
            "stop_on",
            "stop_on_events"
        ]
    );
    assert!(svc["override"].is_null());
    assert_eq!(svc["emits"], serde_json::json!(["svc-up"]));
    assert_eq!(svc["start_on"], "startup");
    assert!(svc["stop_on"].is_null());
    assert_eq!(
        svc["start_on_events"],
        serde_json::json!([{"event": "startup", "job": null, "env": []}])
    );
    assert_eq!(
        config[1]["start_on_events"],
        serde_json::json!([{"event": "stopped", "job": "svc", "env": []}])
    );
    assert!(
        svc["definition"]
            .as_str()
            .unwrap()
            .contains("exec sleep 1000\n")
    );

    let version = json(&keel.ctl_ok(&["--json", "version"]));
    assert_eq!(keys(&version), ["protocol", "version"]);
    assert_eq!(version["protocol"], VERSION);
    assert!(version["version"].as_str().unwrap().starts_with("keel "));

    let problems = json(&stdout(&keel.ctl(&["--json", "check-config"])));
    assert_eq!(problems, serde_json::json!([]));
    let runlevel = keel.ctl(&["--json", "runlevel"]);
    assert_eq!(
        json(&stdout(&runlevel)),
        serde_json::json!({"previous": "N", "current": "N"})
    );
    assert_eq!(
        runlevel.status.code(),
        Some(1),
        "no runlevel yet, as in text"
    );
    let env = json(&keel.ctl_ok(&["--json", "list-env"]));
    assert_eq!(keys(&env), ["PATH", "TERM"]);
    assert_eq!(
        json(&keel.ctl_ok(&["--json", "get-env", "TERM"])),
        serde_json::json!({"name": "TERM", "value": "linux"})
    );
    assert_eq!(
        json(&keel.ctl_ok(&["--json", "log-priority"])),
        serde_json::json!({"priority": "info"})
    );
    assert_eq!(
        json(&keel.ctl_ok(&["--json", "usage", "svc"])),
        serde_json::json!({"job": "svc", "usage": "svc"})
    );
    // Changes answer with the instances too.
    let started = json(&keel.ctl_ok(&["--json", "start", "t", "N=1"]));
    assert_eq!(started[0]["instance"], "1");
}

// Authorisation.

#[test]
fn anyone_may_query_but_only_root_may_change_anything() {
    let mut keel = Keel::start(&[
        ("svc", "start on startup\nusage \"svc\"\nexec sleep 1000\n"),
        ("other", "exec sleep 1000\n"),
        ("on-poke", "start on poke\ntask\nexec touch $DIR/poked\n"),
    ]);
    wait_for("svc to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "svc"]).contains("start/running")
    });
    let before = keel.ctl_ok(&["status", "svc"]);
    let supervisor = keel.supervisor_pid().unwrap();
    let queries: &[&[&str]] = &[
        &["status", "svc"],
        &["list"],
        &["version"],
        &["show-config"],
        &["show-config", "-e", "svc"],
        &["check-config"],
        &["runlevel"],
        &["log-priority"],
        &["usage", "svc"],
        &["list-env"],
        &["get-env", "PATH"],
        &["--json", "status", "svc"],
    ];
    for q in queries {
        let (root, nobody) = (keel.ctl(q), keel.ctl_as_nobody(q));
        assert_eq!(
            (stdout(&nobody), nobody.status.code()),
            (stdout(&root), root.status.code()),
            "{q:?}: {}",
            stderr(&nobody)
        );
    }
    let changes: &[&[&str]] = &[
        &["start", "other"],
        &["stop", "svc"],
        &["restart", "svc"],
        &["reload", "svc"],
        &["emit", "poke"],
        &["reload-configuration"],
        &["set-env", "INTRUDER=1"],
        &["unset-env", "PATH"],
        &["reset-env"],
        &["reexec"],
        &["telinit", "2"],
        &["telinit", "u"],
        &["telinit", "q"],
        &["log-priority", "debug"],
        &["notify-disk-writeable"],
        &["poweroff"],
        &["reboot"],
        &["halt"],
    ];
    for c in changes {
        fails(
            &keel.ctl_as_nobody(c),
            "initctl: Permission denied: only root may change anything\n",
        );
    }
    // Nothing changed.
    assert_eq!(keel.ctl_ok(&["status", "svc"]), before);
    assert_eq!(keel.ctl_ok(&["status", "other"]), "other stop/waiting\n");
    assert!(!keel.path("poked").exists());
    assert_eq!(stdout(&keel.ctl(&["runlevel"])), "unknown\n");
    assert_eq!(keel.ctl(&["get-env", "INTRUDER"]).status.code(), Some(1));
    assert_eq!(keel.ctl_ok(&["log-priority"]), "info\n");
    assert_eq!(keel.supervisor_pid(), Some(supervisor), "no re-exec");
    assert!(keel.alive(), "no power action");
    // Root may.
    assert!(keel.ctl_ok(&["start", "other"]).contains("start/running"));
}

#[test]
fn the_socket_and_its_directory_let_any_local_user_connect() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let keel = Keel::launch(Setup {
        jobs: &[("svc", "exec sleep 1000\n")],
        supervisor: Some((
            bin("keel-supervisor"),
            [
                "--confdir",
                "$DIR/conf",
                "--socket",
                "$DIR/run/keel/control",
                "--logdir",
                "$DIR/log",
            ]
            .map(String::from)
            .to_vec(),
        )),
        env: &[],
    });
    let socket = keel.path("run/keel/control");
    wait_for("the supervisor to listen", 10 * SECOND, || socket.exists());
    let dir = std::fs::metadata(keel.path("run/keel")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o7777, 0o755);
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    // So `nobody` gets through the directories to the socket, and may ask.
    std::fs::set_permissions(keel.path("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut asked = None;
    wait_for("an answer to nobody", 10 * SECOND, || {
        let o = initctl_as_nobody(&keel.dir.0, &socket, &["status", "svc"]);
        let ok = o.status.success();
        asked = Some(o);
        ok
    });
    assert_eq!(stdout(&asked.unwrap()), "svc stop/waiting\n");
}

// Misbehaving clients.

fn hello(version: u32) -> Vec<u8> {
    frame::encode(&ClientHello {
        magic: MAGIC,
        version,
    })
    .unwrap()
}

fn connect_raw(keel: &Keel) -> UnixStream {
    let s = UnixStream::connect(keel.socket()).expect("connect");
    s.set_read_timeout(Some(DEADLINE + 10 * SECOND)).unwrap();
    s
}

/// One frame body, or None at end of stream (or on a read error or timeout).
fn next_frame(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut header = [0u8; frame::HEADER];
    s.read_exact(&mut header).ok()?;
    let len = frame::body_len(header, frame::MAX_FRAME).ok()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn greeted(keel: &Keel) -> UnixStream {
    let mut s = connect_raw(keel);
    s.write_all(&hello(VERSION)).unwrap();
    let answer: ServerHello = frame::decode(&next_frame(&mut s).expect("a hello")).unwrap();
    assert!(answer.accepted);
    s
}

/// Asks `request` on a new connection; the answer must come within [`PROMPT`].
fn ask_promptly(keel: &Keel, request: &Request) -> Response {
    let t0 = Instant::now();
    let mut s = UnixStream::connect(keel.socket()).expect("connect");
    s.set_read_timeout(Some(PROMPT)).unwrap();
    s.set_write_timeout(Some(PROMPT)).unwrap();
    let mut bytes = hello(VERSION);
    bytes.extend(frame::encode(request).unwrap());
    s.write_all(&bytes).expect("send");
    let hello: ServerHello =
        frame::decode(&next_frame(&mut s).expect("the hello in time")).unwrap();
    assert!(hello.accepted);
    let answer = frame::decode(&next_frame(&mut s).expect("the answer in time")).unwrap();
    assert!(t0.elapsed() < PROMPT, "took {:?}", t0.elapsed());
    answer
}

fn assert_served(keel: &Keel) {
    match ask_promptly(keel, &status_req("svc")) {
        Response::Instances(list) => assert_eq!(list[0].job, "svc"),
        other => panic!("{other:?}"),
    }
}

/// Whether the supervisor has closed its end (without reading what it sent).
fn peer_closed(s: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; timeout 0.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// Reads what is left until the end of the stream; true if it ended (not a timeout).
fn ends(s: &mut UnixStream) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn supervisor_rss(keel: &Keel) -> u64 {
    keel.supervisor_pid()
        .and_then(rss_kib)
        .expect("the supervisor's VmRSS")
}

/// Memory a supervisor may grow by while clients misbehave: what bounded buffers
/// cost, with room to spare — an unbounded buffer would blow through it.
const RSS_BOUND_KIB: u64 = 48 * 1024;

#[test]
fn misbehaving_clients_never_delay_a_normal_client_or_a_job() {
    let keel = Keel::start(&[
        ("svc", "start on startup\nexec sleep 1000\n"),
        ("other", "exec sleep 1000\n"),
    ]);
    wait_for("svc to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "svc"]).contains("start/running")
    });
    let rss_before = supervisor_rss(&keel);
    let request = frame::encode(&status_req("svc")).unwrap();

    // Garbage before the handshake.
    let mut garbage = connect_raw(&keel);
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: keel\r\n\r\n")
        .unwrap();
    // A length prefix far beyond the limit, after the handshake.
    let mut oversized = greeted(&keel);
    oversized.write_all(&u32::MAX.to_le_bytes()).unwrap();
    // A hello of another protocol version.
    let mut wrong = connect_raw(&keel);
    wrong.write_all(&hello(VERSION + 1)).unwrap();
    // Half a frame, then the client closes its side.
    let mut cut = greeted(&keel);
    cut.write_all(&request[..request.len() / 2]).unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    // Half a frame, then nothing.
    let stalled = greeted(&keel);
    (&stalled).write_all(&request[..request.len() / 2]).unwrap();
    // 100 clients that connect and never speak.
    let idle: Vec<UnixStream> = (0..100).map(|_| connect_raw(&keel)).collect();
    // A client that sends requests and never reads an answer, until the
    // supervisor stops reading it and its own writes block.
    let deaf = greeted(&keel);
    deaf.set_nonblocking(true).unwrap();
    let list = frame::encode(&Request::ShowConfig { job: None }).unwrap();
    let mut sent = 0usize;
    wait_for(
        "the deaf client's writes to block",
        10 * SECOND,
        || match (&deaf).write(&list) {
            Ok(n) => {
                sent += n;
                false
            }
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        },
    );
    assert!(sent > 0);

    // Meanwhile a normal client is answered at once, again and again, and a job
    // starts and stops as ever.
    for _ in 0..5 {
        assert_served(&keel);
    }
    let start = Request::Start {
        job: "other".into(),
        instance: None,
        env: vec![],
        wait: true,
    };
    match ask_promptly(&keel, &start) {
        Response::Instances(list) => assert_eq!(list[0].state.name(), "running"),
        other => panic!("{other:?}"),
    }
    assert_eq!(keel.ctl_ok(&["stop", "other"]), "other stop/waiting\n");

    // Each got its answer, or its end.
    let refused: ServerHello = frame::decode(&next_frame(&mut garbage).unwrap()).unwrap();
    assert!(!refused.accepted);
    assert!(ends(&mut garbage));
    match frame::decode(&next_frame(&mut oversized).unwrap()).unwrap() {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::InvalidRequest),
        other => panic!("{other:?}"),
    }
    assert!(ends(&mut oversized));
    let refused: ServerHello = frame::decode(&next_frame(&mut wrong).unwrap()).unwrap();
    assert_eq!((refused.accepted, refused.version), (false, VERSION));
    assert!(ends(&mut wrong));
    assert!(ends(&mut cut), "closed once its client closed");

    let rss_during = supervisor_rss(&keel);
    assert!(
        rss_during < rss_before + RSS_BOUND_KIB,
        "VmRSS {rss_before} KiB → {rss_during} KiB"
    );

    // The silent, the stalled and the deaf are dropped at their deadline.
    wait_for(
        "the idle, stalled and deaf clients to be dropped",
        DEADLINE + 10 * SECOND,
        || peer_closed(&stalled) && peer_closed(&deaf) && idle.iter().all(peer_closed),
    );
    assert_served(&keel);
    let rss_after = supervisor_rss(&keel);
    assert!(
        rss_after < rss_before + RSS_BOUND_KIB,
        "VmRSS {rss_before} KiB → {rss_after} KiB"
    );
}

#[test]
fn idle_connections_filling_every_slot_lock_nobody_out() {
    // A supervisor with 128 file descriptors: it takes at most 64 connections
    // (half its fds, so spawning jobs never runs short).
    let keel = Keel::start_with(Setup {
        jobs: &[("svc", "exec sleep 1000\n")],
        supervisor: Some(keel_tests::supervisor_with_fd_limit(128, "$DIR/conf")),
        env: &[],
    });
    let rss_before = supervisor_rss(&keel);
    let idle: Vec<UnixStream> = (0..300).map(|_| connect_raw(&keel)).collect();
    for _ in 0..5 {
        assert_served(&keel);
    }
    // The job still gets its fds.
    let started = keel.ctl_ok(&["start", "svc"]);
    assert!(started.starts_with("svc start/running"), "{started}");
    // The oldest idle connections made room, the newest are still open.
    wait_for(
        "the oldest idle connections to be evicted",
        5 * SECOND,
        || idle[..100].iter().all(peer_closed),
    );
    assert!(!peer_closed(&idle[299]), "the newest idle connection stays");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", keel.supervisor_pid().unwrap()))
        .unwrap()
        .count();
    assert!(fds <= 128, "{fds} fds");
    assert!(supervisor_rss(&keel) < rss_before + RSS_BOUND_KIB);
}

#[test]
fn a_client_may_send_requests_faster_than_it_reads_the_answers() {
    let keel = Keel::start(&[("svc", "exec sleep 1000\n")]);
    let mut reader = greeted(&keel);
    reader.set_read_timeout(Some(10 * SECOND)).unwrap();
    let mut writer = reader.try_clone().unwrap();
    const N: usize = 10_000;
    let request = frame::encode(&status_req("svc")).unwrap();
    let sending = std::thread::spawn(move || {
        let all: Vec<u8> = request
            .iter()
            .copied()
            .cycle()
            .take(request.len() * N)
            .collect();
        writer.write_all(&all).expect("the supervisor reads on");
    });
    for i in 0..N {
        let body = next_frame(&mut reader).unwrap_or_else(|| panic!("answer {i} of {N}"));
        match frame::decode(&body).unwrap() {
            Response::Instances(list) => assert_eq!(list[0].job, "svc"),
            other => panic!("{other:?}"),
        }
    }
    sending.join().unwrap();
}
