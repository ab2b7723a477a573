//! Job logs (`console log`): stdout and stderr captured in order through the
//! instance's pipe, the instance name in the file name, nothing with
//! `console none`, a capped log that rotates at line boundaries and stays under its cap, and the
//! early log kept while LOGDIR cannot be written and written out once it can —
//! also when the supervisor dies in the middle of writing it out. Output across
//! kill -9 and re-exec of the supervisor is in `crash.rs`.

use keel_tests::{Keel, Setup, bin, wait_for};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

fn read(keel: &Keel, rel: &str) -> String {
    keel_tests::log_text(&keel.path(rel))
}

fn wait_text(keel: &Keel, rel: &str, want: &str) {
    wait_for(&format!("{rel} to read {want:?}"), 5 * SECOND, || {
        read(keel, rel) == want
    });
}

#[test]
fn stdout_and_stderr_are_captured_in_order_with_safe_permissions() {
    let keel = Keel::start(&[(
        "talk",
        "script\n  echo one\n  echo two >&2\n  echo three\n  exec sleep 1000\nend script\n",
    )]);
    keel.ctl_ok(&["start", "talk"]);
    wait_text(&keel, "log/talk.log", "one\ntwo\nthree\n");
    let mode = |rel: &str| fs::metadata(keel.path(rel)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("log/talk.log"), 0o640);
    assert_eq!(mode("log"), 0o755);
}

#[test]
fn every_process_of_the_instance_writes_to_its_log_named_after_it() {
    let keel = Keel::start(&[(
        "net/web",
        "instance $PORT\npre-start exec echo pre-start $PORT\nexec echo main $PORT\npost-stop exec echo post-stop $PORT\n",
    )]);
    keel.ctl_ok(&["start", "net/web", "PORT=80"]);
    wait_text(
        &keel,
        "log/net_web-80.log",
        "pre-start 80\nmain 80\npost-stop 80\n",
    );
}

#[test]
fn console_none_writes_nothing() {
    let keel = Keel::start(&[
        ("quiet", "console none\nexec echo not logged\n"),
        ("loud", "exec echo logged\n"),
    ]);
    keel.ctl_ok(&["start", "quiet"]);
    keel.ctl_ok(&["start", "loud"]);
    wait_text(&keel, "log/loud.log", "logged\n");
    assert!(!keel.path("log/quiet.log").exists());
}

#[test]
fn a_capped_log_rotates_and_every_file_stays_under_the_cap() {
    let keel = Keel::start_with(Setup {
        jobs: &[(
            "chatty",
            "script\n  i=0\n  while [ $i -lt 500 ]; do i=$((i+1)); echo line $i; done\n  exec sleep 1000\nend script\n",
        )],
        supervisor: None,
        env: &[("KEEL_LOG_SIZE", "1000"), ("KEEL_LOG_KEEP", "2")],
    });
    keel.ctl_ok(&["start", "chatty"]);
    let all: String = (1..=500).map(|i| format!("line {i}\n")).collect();
    let kept = || {
        ["log/chatty.log.2", "log/chatty.log.1", "log/chatty.log"]
            .iter()
            .map(|f| read(&keel, f))
            .collect::<String>()
    };
    wait_for("the last line in the log", 5 * SECOND, || {
        read(&keel, "log/chatty.log").ends_with("line 500\n")
    });
    for f in ["log/chatty.log", "log/chatty.log.1", "log/chatty.log.2"] {
        let len = fs::metadata(keel.path(f)).unwrap().len();
        assert!(len <= 1000, "{f} is {len} bytes");
        // Rotated at a line boundary: whole lines only.
        let text = read(&keel, f);
        assert!(
            text.starts_with("line ") && text.ends_with('\n'),
            "{f} cuts a line: {text:?}"
        );
    }
    assert!(
        !keel.path("log/chatty.log.3").exists(),
        "two rotated files kept"
    );
    // What is kept is the newest output, whole and in order.
    // (Each 9-byte line takes 34 with its time: two full files hold 58.)
    let kept = kept();
    assert!(kept.len() > 2 * 29 * 9, "{}", kept.len());
    assert!(
        all.ends_with(&kept),
        "the kept files are the tail of the output"
    );
}

/// A job that writes two lines at once, a third once `$DIR/go` exists.
const EARLY: &str = "script
  echo early-1
  echo early-2
  while [ ! -e $DIR/go ]; do sleep 0.02; done
  echo later
  exec sleep 1000
end script
";

#[test]
fn output_is_kept_while_logdir_cannot_be_written_and_written_out_when_it_can() {
    let keel = Keel::start(&[("boot", EARLY)]);
    // LOGDIR cannot be made: a file is in its place (as a read-only or unmounted
    // /var/log would refuse it).
    fs::write(keel.path("log"), b"").unwrap();
    keel.ctl_ok(&["start", "boot"]);
    wait_for(
        "the supervisor to keep the output early",
        5 * SECOND,
        || keel.console().contains("keeping its output until"),
    );
    fs::remove_file(keel.path("log")).unwrap();
    keel.ctl_ok(&["notify-disk-writeable"]);
    wait_text(&keel, "log/boot.log", "early-1\nearly-2\n");
    keel.touch("go");
    wait_text(&keel, "log/boot.log", "early-1\nearly-2\nlater\n");
}

#[test]
fn writing_out_the_early_log_is_retried_when_output_arrives() {
    let keel = Keel::start(&[(
        "ticker",
        "script\n  i=0\n  while :; do i=$((i+1)); echo tick $i; sleep 0.2; done\nend script\n",
    )]);
    fs::write(keel.path("log"), b"").unwrap();
    keel.ctl_ok(&["start", "ticker"]);
    wait_for("the output to be kept early", 5 * SECOND, || {
        keel.console().contains("keeping its output until")
    });
    fs::remove_file(keel.path("log")).unwrap();
    // No notify-disk-writeable: the next output after a second tries again.
    wait_for("the early ticks written out", 5 * SECOND, || {
        read(&keel, "log/ticker.log").starts_with("tick 1\ntick 2\n")
    });
    let text = read(&keel, "log/ticker.log");
    let ticks: Vec<&str> = text.lines().collect();
    for (i, t) in ticks.iter().enumerate() {
        assert_eq!(*t, format!("tick {}", i + 1), "{text}");
    }
}

#[test]
fn a_supervisor_dying_mid_flush_leaves_the_early_log_written_once() {
    let marks = keel_tests::Scratch::new("mark");
    let mark = marks.0.join("fault-acted");
    let keel = Keel::start_with_fault(&[("boot", EARLY)], "abort-mid-flush", &mark);
    fs::write(keel.path("log"), b"").unwrap();
    keel.ctl_ok(&["start", "boot"]);
    wait_for("the output to be kept early", 5 * SECOND, || {
        keel.console().contains("keeping its output until")
    });
    fs::remove_file(keel.path("log")).unwrap();
    // The supervisor aborts after writing the early log out, before saving that it
    // did; its successor cuts the file back and writes it out again.
    let _ = keel.ctl(&["notify-disk-writeable"]);
    wait_for(
        "the fault to act and a new supervisor to answer",
        10 * SECOND,
        || {
            mark.exists()
                && keel.console().contains("undoing an unfinished flush")
                && keel.ctl(&["version"]).status.success()
        },
    );
    keel.touch("go");
    wait_text(&keel, "log/boot.log", "early-1\nearly-2\nlater\n");
}

/// Reads `child`'s stdout line by line on a thread of its own.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// A line's text after its time, asserting it has one.
fn after_time(line: &str) -> &str {
    let (time, text) = line.split_once(' ').expect("a time, then the text");
    assert!(time.len() == 24 && time.ends_with('Z'), "{line}");
    text
}

#[test]
fn initctl_log_follows_a_running_job() {
    let keel = Keel::start(&[(
        "talker",
        "script\n  echo first\n  echo second\n  while [ ! -e $DIR/go ]; do sleep 0.05; done\n  echo third\n  exec sleep 1000\nend script\n",
    )]);
    keel.ctl_ok(&["start", "talker"]);
    wait_text(&keel, "log/talker.log", "first\nsecond\n");
    let last = keel.ctl_ok(&["log", "-n", "1", "talker"]);
    assert_eq!(after_time(last.trim_end()), "second");
    let json = keel.ctl_ok(&["--json", "log", "talker"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["text"], "first");

    let mut follow = std::process::Command::new(bin("initctl"))
        .env("KEEL_SOCKET", keel.socket())
        .args(["log", "-f", "-n", "1", "talker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("initctl log -f");
    let lines = lines_of(&mut follow);
    let next = || lines.recv_timeout(5 * SECOND);
    let seen = next();
    // The last line, then what the job writes from now on.
    fs::write(keel.path("go"), "").unwrap();
    let then = next();
    follow.kill().expect("end initctl log -f (by its pid)");
    follow.wait().expect("reap initctl log -f");
    assert_eq!(after_time(&seen.expect("the last line")), "second");
    assert_eq!(after_time(&then.expect("a line written later")), "third");
}

#[test]
fn a_failed_job_shows_its_last_lines_in_status_and_is_marked_in_list() {
    let keel = Keel::start(&[
        (
            "broken",
            "script\n  for i in 1 2 3 4 5 6; do echo step $i; done\n  echo 'cannot open /etc/broken.conf' >&2\n  exit 2\nend script\n",
        ),
        ("fine", "exec sleep 1000\n"),
    ]);
    keel.ctl_ok(&["start", "fine"]);
    let _ = keel.ctl(&["start", "broken"]);
    wait_for("broken to fail", 5 * SECOND, || {
        keel.ctl_ok(&["status", "broken"]).contains("failed:")
    });
    let status = keel.ctl_ok(&["status", "broken"]);
    let tail: Vec<&str> = status
        .lines()
        .filter_map(|l| l.strip_prefix("\tlog: "))
        .map(after_time)
        .collect();
    assert_eq!(
        tail,
        [
            "step 3",
            "step 4",
            "step 5",
            "step 6",
            "cannot open /etc/broken.conf"
        ],
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&keel.ctl_ok(&["--json", "status", "broken"])).unwrap();
    assert_eq!(json[0]["log"].as_array().map(Vec::len), Some(5), "{json}");
    assert!(json[0]["failure"].is_string());

    let list = keel.ctl_ok(&["list"]);
    assert!(list.contains("broken stop/waiting, failed\n"), "{list}");
    assert!(list.contains("fine start/running, process "), "{list}");
    let fine = list.lines().find(|l| l.starts_with("fine ")).unwrap();
    assert!(!fine.ends_with(", failed"), "{list}");
    // A job that runs fine shows no log in status.
    assert!(!keel.ctl_ok(&["status", "fine"]).contains("\tlog: "));
}
