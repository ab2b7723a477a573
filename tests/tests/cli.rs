//! The commands as an operator meets them: keel-init's own command line, and
//! initctl run inside a job of a supervisor on a socket of its own.

use keel_tests::{Keel, bin, wait_for};
use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// keel-init as an ordinary process, ended (by pid) if it has not exited within
/// five seconds, which fails the test.
fn keel_init(args: &[&str]) -> Output {
    let mut child = Command::new(bin("keel-init"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keel-init");
    let mut ended = false;
    let deadline = std::time::Instant::now() + 5 * SECOND;
    while std::time::Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("keel-init's output");
    assert!(ended, "keel-init {args:?} went on as an init: {out:?}");
    out
}

#[test]
fn keel_init_answers_help_and_version() {
    let help = keel_init(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.starts_with("Usage: keel-init [--supervisor PATH]"),
        "{text}"
    );
    assert!(text.contains("--shutdown PATH"), "{text}");
    let version = keel_init(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("keel-init {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn keel_init_as_an_ordinary_process_says_so_and_exits() {
    for args in [&[][..], &["--supervisor", "/bin/true"][..]] {
        let out = keel_init(args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.starts_with("keel-init: not PID 1:"), "{said}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn initctl_inside_a_job_finds_a_supervisor_on_another_socket() {
    let initctl = bin("initctl").display().to_string();
    let asker = format!("task\nscript\n  {initctl} status svc > $DIR/seen 2>&1\nend script\n");
    let own = "env KEEL_SOCKET=/nowhere/control\ntask\nscript\n  echo $KEEL_SOCKET > $DIR/kept\nend script\n";
    let keel = Keel::start(&[
        ("svc", "exec sleep 1000\n"),
        ("asker", asker.as_str()),
        ("own", own),
    ]);
    keel.ctl_ok(&["start", "svc"]);
    keel.ctl_ok(&["start", "asker"]);
    wait_for("the job's initctl to answer", 5 * SECOND, || {
        keel.path("seen").exists()
    });
    let seen = fs::read_to_string(keel.path("seen")).unwrap();
    assert!(seen.starts_with("svc start/running, process "), "{seen}");
    // A job that names its own socket keeps it.
    keel.ctl_ok(&["start", "own"]);
    assert_eq!(
        fs::read_to_string(keel.path("kept")).unwrap(),
        "/nowhere/control\n"
    );
}

/// The console line (the supervisor's log, outside a machine) that contains `text`.
fn log_line(keel: &Keel, text: &str) -> Option<String> {
    keel.console()
        .lines()
        .find(|l| l.contains(text))
        .map(str::to_string)
}

#[test]
fn keels_log_says_when_jobs_start_fail_and_respawn_each_line_with_its_time() {
    let keel = Keel::start(&[
        ("good", "exec sleep 1000\n"),
        (
            "ready",
            "expect stop\nexec sh -c 'kill -STOP $$; exec sleep 1000'\n",
        ),
        ("bad", "exec sh -c 'exit 3'\n"),
        (
            "flappy",
            "respawn\nrespawn limit 2 60\nexec sh -c 'exit 1'\n",
        ),
    ]);
    let good = keel.ctl_ok(&["start", "good"]);
    let pid = keel_tests::status_pid(&good).unwrap();
    keel.ctl_ok(&["start", "ready"]);
    // Both start (exec succeeds); their main processes end at once.
    keel.ctl_ok(&["start", "bad"]);
    let _ = keel.ctl(&["start", "flappy"]);
    wait_for("bad and flappy to fail", 10 * SECOND, || {
        log_line(&keel, "flappy failed").is_some() && log_line(&keel, "bad failed").is_some()
    });
    keel.ctl_ok(&["stop", "good"]);
    wait_for("good's stop in the log", 5 * SECOND, || {
        log_line(&keel, "good stopped").is_some()
    });

    let started = log_line(&keel, "good started").unwrap();
    assert!(
        started.ends_with(&format!(" INFO good started, process {pid}")),
        "{started}"
    );
    // Its time first: 2026-12-07T04:40:01.123456Z.
    let time = started.split_whitespace().next().unwrap();
    assert!(
        time.len() > 20 && time.as_bytes()[4] == b'-' && time.contains('T') && time.ends_with('Z'),
        "{started}"
    );
    assert!(log_line(&keel, "ready started (ready), process ").is_some());
    let bad = log_line(&keel, "bad failed").unwrap();
    assert!(bad.contains(" WARN bad failed: main process ("), "{bad}");
    assert!(bad.ends_with(") terminated with status 3"), "{bad}");
    let respawning = keel
        .console()
        .lines()
        .filter(|l| l.contains(" INFO flappy: main process (") && l.ends_with("; respawning"))
        .count();
    assert_eq!(respawning, 2, "{}", keel.console());
    let gave_up = log_line(&keel, "flappy failed").unwrap();
    assert!(
        gave_up.ends_with("respawning too fast, stopped"),
        "{gave_up}"
    );
}

#[test]
fn the_timeline_lists_starts_in_order_the_slowest_and_the_chain_of_the_last() {
    let keel = Keel::start(&[
        ("a", "start on startup\nexec sleep 1000\n"),
        (
            "b",
            "start on started a\npre-start exec sleep 0.3\nexec sleep 1000\n",
        ),
        ("c", "start on started b\nexec sleep 1000\n"),
        ("manual", "exec sleep 1000\n"),
    ]);
    wait_for("c to run", 5 * SECOND, || {
        keel.ctl_ok(&["status", "c"]).contains("start/running")
    });
    keel.ctl_ok(&["start", "manual"]);
    let text = keel.ctl_ok(&["timeline"]);
    let rows: Vec<&str> = text.lines().skip(1).take(4).collect();
    let jobs: Vec<&str> = rows
        .iter()
        .map(|r| r.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(jobs, ["a", "b", "c", "manual"], "{text}");
    assert!(rows[0].ends_with("a (startup)"), "{text}");
    assert!(rows[1].ends_with("b (started a)"), "{text}");
    assert!(rows[3].ends_with("manual (request)"), "{text}");
    // b waited for its pre-start: the slowest.
    assert!(text.contains("\nslowest: b 0.3"), "{text}");
    assert!(text.contains("\nlast to run: manual (request)\n"), "{text}");
    // The JSON has every time; c's chain goes back through b to a.
    let json: serde_json::Value =
        serde_json::from_str(&keel.ctl_ok(&["--json", "timeline"])).unwrap();
    let c = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["job"] == "c")
        .unwrap();
    assert_eq!(c["events"], serde_json::json!(["started"]));
    assert_eq!(c["cause_job"], "b");
    let ms = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k}: {json}"));
    assert!(ms("requested_ms") <= ms("spawned_ms") && ms("spawned_ms") <= ms("running_ms"));
    // --svg writes the picture: well-formed XML, a row naming each job, in order.
    let picture = keel.path("boot.svg");
    keel.ctl_ok(&["timeline", "--svg", picture.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&picture).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .filter_map(|t| t.split_whitespace().next())
        .filter(|w| ["a", "b", "c", "manual"].contains(w))
        .collect();
    assert_eq!(labels, ["a", "b", "c", "manual"], "{svg}");
}

/// PATH with initctl's directory and `links` (links to it) first, as a shell
/// that completes initctl has it.
fn path_with(links: &std::path::Path) -> String {
    format!(
        "{}:{}:{}",
        bin("initctl").parent().unwrap().display(),
        links.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// What initctl's bash completion offers for `line` (the last word is the one
/// being completed), driven through a real bash with initctl and a `stop` link
/// to it first on PATH, against the supervisor on `socket`.
fn bash_completes(keel: &Keel, socket: &std::path::Path, line: &[&str]) -> (Vec<String>, String) {
    let links = keel.path("completion-links");
    if !links.exists() {
        fs::create_dir_all(&links).expect("links dir");
        std::os::unix::fs::symlink(bin("initctl"), links.join("stop")).expect("stop link");
    }
    let words = line
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let script = format!(
        "source <(initctl completions bash) || exit 3\n\
         COMP_WORDS=({words}); COMP_CWORD={}\n\
         _initctl_jobs {} '{}' {}\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        line.len() - 1,
        line[0],
        line[line.len() - 1],
        line.get(line.len().wrapping_sub(2)).unwrap_or(&""),
    );
    let path = path_with(&links);
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .env("KEEL_SOCKET", socket)
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    assert!(out.status.success(), "{script}\n{out:?}");
    let mut offered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    offered.sort();
    (offered, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bash_completes_job_names_from_the_running_supervisor() {
    let keel = Keel::start(&[
        ("alpha", "exec sleep 1000\n"),
        ("alpine", "exec sleep 1000\n"),
        ("beta", "exec sleep 1000\n"),
    ]);
    let socket = keel.socket();
    let all = ["alpha", "alpine", "beta"].map(String::from).to_vec();
    let (offered, _) = bash_completes(&keel, &socket, &["initctl", "start", "al"]);
    assert_eq!(offered, ["alpha", "alpine"]);
    let (offered, _) = bash_completes(&keel, &socket, &["initctl", "--json", "status", ""]);
    assert_eq!(offered, all);
    let (offered, _) = bash_completes(&keel, &socket, &["initctl", "log", "-f", "b"]);
    assert_eq!(offered, ["beta"]);
    // Through a link, the link's own name is the command.
    let (offered, _) = bash_completes(&keel, &socket, &["stop", "b"]);
    assert_eq!(offered, ["beta"]);
    // Commands are still clap's to complete; a job's second word is no job.
    let (offered, _) = bash_completes(&keel, &socket, &["initctl", "res"]);
    assert!(offered.contains(&"restart".to_string()), "{offered:?}");
    let (offered, _) = bash_completes(&keel, &socket, &["initctl", "start", "alpha", "al"]);
    assert!(!offered.contains(&"alpine".to_string()), "{offered:?}");
    // No supervisor: no names, and nothing printed into the command line.
    let gone = keel.path("no-such-socket");
    let (offered, errors) = bash_completes(&keel, &gone, &["initctl", "start", ""]);
    assert_eq!(offered, Vec::<String>::new());
    assert_eq!(errors, "");
}

#[test]
fn every_man_page_renders_without_a_warning() {
    for page in ["initctl", "keel-init", "keel-supervisor", "keel-job"] {
        let roff = Command::new(bin("initctl"))
            .args(["man", page])
            .output()
            .expect("initctl man");
        assert!(roff.status.success(), "initctl man {page}: {roff:?}");
        let file = std::env::temp_dir().join(format!("keel-man-{}-{page}", std::process::id()));
        fs::write(&file, &roff.stdout).expect("write page");
        let shown = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&file)
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .stdin(Stdio::null())
            .output()
            .expect("man (man-db)");
        let _ = fs::remove_file(&file);
        let warnings = String::from_utf8_lossy(&shown.stderr);
        assert!(shown.status.success(), "man {page}: {warnings}");
        assert_eq!(warnings, "", "man {page} warns");
        let text = String::from_utf8_lossy(&shown.stdout);
        for section in ["ENVIRONMENT", "FILES", "EXIT STATUS", "SEE ALSO"] {
            assert!(text.contains(section), "{page} lacks {section}:\n{text}");
        }
    }
}

#[test]
fn fish_completes_job_names_from_the_running_supervisor() {
    let keel = Keel::start(&[
        ("alpha", "exec sleep 1000\n"),
        ("beta", "exec sleep 1000\n"),
    ]);
    let links = keel.path("fish-links");
    fs::create_dir_all(&links).expect("links dir");
    std::os::unix::fs::symlink(bin("initctl"), links.join("status")).expect("status link");
    let path = path_with(&links);
    for (line, want) in [("initctl start al", "alpha"), ("status b", "beta")] {
        let out = Command::new("fish")
            .args(["--no-config", "-c"])
            .arg(format!(
                "initctl completions fish | source; complete -C '{line}'"
            ))
            .env("PATH", &path)
            .env("KEEL_SOCKET", keel.socket())
            .stdin(Stdio::null())
            .output()
            .expect("fish");
        let offered = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{line}: {out:?}");
        assert_eq!(offered.trim(), want, "{line}");
    }
}
