//! Upstart's lifecycle guarantees (DESIGN.md, invariant 4) end to end, with real
//! processes: keel-init as PID 1 of a PID namespace, the real supervisor, initctl.
//!
//! The jobs' processes append a line per event to `$DIR/trace`, so the tests see the
//! ORDER in which things ran. Processes that must stay put until the test says so
//! wait for a file (`$DIR/go`). Every wait is on a condition with a deadline.

use keel_tests::{Keel, gone, status_pid, wait_for};
use std::process::Output;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The trace as written so far.
fn trace(keel: &Keel) -> Vec<String> {
    keel.lines("trace")
}

/// Waits until the trace has `n` lines; returns it.
fn trace_len(keel: &Keel, n: usize) -> Vec<String> {
    wait_for(&format!("{n} lines in the trace"), 5 * SECOND, || {
        trace(keel).len() >= n
    });
    trace(keel)
}

fn status(keel: &Keel, job: &str) -> String {
    keel.ctl_ok(&["status", job])
}

/// Waits until `status JOB` starts with `prefix` (`"j stop/waiting"`).
fn wait_status(keel: &Keel, job: &str, prefix: &str) -> String {
    let mut last = String::new();
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        last = keel.ctl(&["status", job]).stdout_string_or(last);
        if last.starts_with(prefix) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for status {prefix:?}; last: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

trait StdoutString {
    fn stdout_string_or(self, old: String) -> String;
}

impl StdoutString for Output {
    fn stdout_string_or(self, old: String) -> String {
        if self.status.success() {
            stdout(&self)
        } else {
            old
        }
    }
}

/// The main process's host pid from a status line.
fn main_host_pid(keel: &Keel, status: &str) -> i32 {
    let ns = status_pid(status).unwrap_or_else(|| panic!("no main pid in {status:?}"));
    keel.host_pid(ns)
        .unwrap_or_else(|| panic!("main pid {ns} not in the namespace"))
}

/// A main process that logs `main`, then runs until TERM, which it logs as `main-term`.
const MAIN_LOGS_TERM: &str = "script
  trap 'echo main-term >> $DIR/trace; exit 0' TERM
  echo main >> $DIR/trace
  sleep 1000 &
  wait
end script
";

/// A pre-start that logs `pre-start`, and while `$DIR/block` exists waits for `$DIR/go`.
const PRE_START_MAY_BLOCK: &str = "pre-start script
  echo pre-start >> $DIR/trace
  if [ -e $DIR/block ]; then
    while [ ! -e $DIR/go ]; do sleep 0.02; done
  fi
end script
";

const POST_STOP_LOGS: &str = "post-stop exec sh -c 'echo post-stop >> $DIR/trace'\n";

// 1. For every start, post-stop runs.

#[test]
fn post_stop_runs_after_every_start() {
    let job = format!(
        "script\n  echo main >> $DIR/trace\n  [ -e $DIR/quick ] && exit 0\n  exec sleep 1000\nend script\n{POST_STOP_LOGS}"
    );
    let keel = Keel::start(&[("j", &job)]);
    // Stopped by request (once main has got as far as its trace line: a main
    // killed before it writes it is a race of the test, not of keel).
    keel.ctl_ok(&["start", "j"]);
    trace_len(&keel, 1);
    assert_eq!(keel.ctl_ok(&["stop", "j"]), "j stop/waiting\n");
    assert_eq!(trace(&keel), ["main", "post-stop"]);
    // Main ends by itself.
    keel.touch("quick");
    keel.ctl_ok(&["start", "j"]);
    wait_status(&keel, "j", "j stop/waiting");
    assert_eq!(
        trace_len(&keel, 4),
        ["main", "post-stop", "main", "post-stop"]
    );
}

#[test]
fn post_stop_runs_when_stopped_before_main_ever_ran() {
    let job = format!("{PRE_START_MAY_BLOCK}{MAIN_LOGS_TERM}{POST_STOP_LOGS}");
    let keel = Keel::start(&[("j", &job)]);
    keel.touch("block");
    keel.ctl_ok(&["start", "--no-wait", "j"]);
    trace_len(&keel, 1);
    // The stop comes while pre-start runs: pre-start is left to finish.
    keel.ctl_ok(&["stop", "--no-wait", "j"]);
    let s = status(&keel, "j");
    assert!(s.starts_with("j stop/pre-start"), "{s}");
    keel.touch("go");
    wait_status(&keel, "j", "j stop/waiting");
    // post-stop ran; main never did.
    assert_eq!(trace_len(&keel, 2), ["pre-start", "post-stop"]);
    wait_for("no job process left", 5 * SECOND, || {
        keel.processes()
            .iter()
            .all(|&p| keel_tests::comm(p).as_deref() == Some("keel-supervisor"))
    });
    assert_eq!(trace(&keel), ["pre-start", "post-stop"]);
}

#[test]
fn post_stop_runs_when_pre_start_could_not_even_run() {
    let job = format!("pre-start exec no-such-command-for-keel\n{MAIN_LOGS_TERM}{POST_STOP_LOGS}");
    let keel = Keel::start(&[("j", &job)]);
    let out = keel.ctl(&["start", "j"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no-such-command-for-keel"),
        "{}",
        stderr(&out)
    );
    // keel's own line under Upstart's: why the job stopped.
    let st = status(&keel, "j");
    assert!(
        st.starts_with("j stop/waiting\n\tfailed: pre-start process: "),
        "{st}"
    );
    assert_eq!(trace(&keel), ["post-stop"]);
}

// 2. Main runs only after pre-start completed successfully.

#[test]
fn main_runs_only_after_pre_start_completed() {
    let job = format!(
        "pre-start script\n  echo pre-start >> $DIR/trace\n  sleep 0.3\n  echo pre-start-done >> $DIR/trace\nend script\n{MAIN_LOGS_TERM}"
    );
    let keel = Keel::start(&[("j", &job)]);
    let s = keel.ctl_ok(&["start", "j"]);
    assert!(s.starts_with("j start/running, process "), "{s}");
    assert_eq!(trace_len(&keel, 3), ["pre-start", "pre-start-done", "main"]);
}

#[test]
fn a_failing_pre_start_means_no_main_but_post_stop() {
    let job = format!(
        "pre-start script\n  echo pre-start >> $DIR/trace\n  exit 1\nend script\n{MAIN_LOGS_TERM}{POST_STOP_LOGS}"
    );
    let keel = Keel::start(&[("j", &job)]);
    let out = keel.ctl(&["start", "j"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    let rest = err
        .strip_prefix("initctl: Job failed to start: pre-start process (")
        .unwrap_or_else(|| panic!("{err:?}"));
    let (pid, tail) = rest.split_once(')').unwrap();
    assert!(pid.parse::<i32>().is_ok(), "{err:?}");
    assert_eq!(tail, " terminated with status 1\n");
    assert_eq!(
        status(&keel, "j"),
        format!("j stop/waiting\n\tfailed: pre-start process ({pid}) terminated with status 1\n")
    );
    assert_eq!(trace(&keel), ["pre-start", "post-stop"]);
}

// 3. Restart: kill main → post-stop → pre-start → main, no pre-stop.

#[test]
fn restart_kills_main_then_post_stop_pre_start_main() {
    let job = format!(
        "{PRE_START_MAY_BLOCK}{MAIN_LOGS_TERM}pre-stop exec sh -c 'echo pre-stop >> $DIR/trace'\n{POST_STOP_LOGS}"
    );
    let keel = Keel::start(&[("j", &job)]);
    let before = keel.ctl_ok(&["start", "j"]);
    let old = status_pid(&before).unwrap();
    trace_len(&keel, 2);
    let after = keel.ctl_ok(&["restart", "j"]);
    assert!(after.starts_with("j start/running, process "), "{after}");
    assert_ne!(status_pid(&after).unwrap(), old, "a new main process");
    assert_eq!(
        trace_len(&keel, 6),
        [
            "pre-start",
            "main",
            "main-term",
            "post-stop",
            "pre-start",
            "main"
        ]
    );
}

#[test]
fn a_restart_cancelled_after_post_stop_runs_post_stop_again() {
    let job = format!("{PRE_START_MAY_BLOCK}{MAIN_LOGS_TERM}{POST_STOP_LOGS}");
    let keel = Keel::start(&[("j", &job)]);
    keel.ctl_ok(&["start", "j"]);
    trace_len(&keel, 2);
    keel.touch("block");
    keel.ctl_ok(&["restart", "--no-wait", "j"]);
    // Killed, post-stop ran, the new pre-start waits.
    trace_len(&keel, 5);
    keel.ctl_ok(&["stop", "--no-wait", "j"]);
    let s = status(&keel, "j");
    assert!(s.starts_with("j stop/pre-start"), "{s}");
    keel.touch("go");
    wait_status(&keel, "j", "j stop/waiting");
    assert_eq!(
        trace_len(&keel, 6),
        [
            "pre-start",
            "main",
            "main-term",
            "post-stop",
            "pre-start",
            "post-stop"
        ]
    );
}

// 4. Running only after post-start finished; a failing post-start stops the job.

#[test]
fn start_returns_only_after_post_start_finished() {
    let job = format!(
        "{MAIN_LOGS_TERM}post-start script\n  sleep 0.4\n  echo post-start >> $DIR/trace\nend script\n"
    );
    let keel = Keel::start(&[("j", &job)]);
    let s = keel.ctl_ok(&["start", "j"]);
    assert!(s.starts_with("j start/running, process "), "{s}");
    // Not waited for: post-start is done when start returns.
    assert_eq!(trace(&keel), ["main", "post-start"]);
    assert_eq!(status(&keel, "j"), s);
}

#[test]
fn a_failing_post_start_stops_the_job() {
    let job = format!(
        "{MAIN_LOGS_TERM}post-start script\n  while ! grep -q main $DIR/trace; do sleep 0.02; done\n  echo post-start >> $DIR/trace\n  exit 1\nend script\n{POST_STOP_LOGS}"
    );
    let keel = Keel::start(&[("j", &job)]);
    let out = keel.ctl(&["start", "j"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("initctl: Job failed to start: post-start process (")
            && err.ends_with(") terminated with status 1\n"),
        "{err:?}"
    );
    let st = status(&keel, "j");
    assert!(
        st.starts_with("j stop/waiting\n\tfailed: post-start process ("),
        "{st}"
    );
    // post-start waited for main to log, then failed: main was killed, post-stop ran.
    assert_eq!(
        trace(&keel),
        ["main", "post-start", "main-term", "post-stop"]
    );
}

// 5. Pre-stop: only on a stop request; main killed after it; a start cancels the stop.

#[test]
fn pre_stop_runs_only_on_a_stop_request() {
    let job = format!(
        "script\n  echo main >> $DIR/trace\n  if [ -e $DIR/quick ]; then sleep 0.2; exit 0; fi\n  exec sleep 1000\nend script\npre-stop exec sh -c 'echo pre-stop >> $DIR/trace'\n{POST_STOP_LOGS}"
    );
    let keel = Keel::start(&[("j", &job)]);
    // Main exits by itself: no pre-stop.
    keel.touch("quick");
    keel.ctl_ok(&["start", "j"]);
    wait_status(&keel, "j", "j stop/waiting");
    assert_eq!(trace_len(&keel, 2), ["main", "post-stop"]);
    // A stop request: pre-stop.
    std::fs::remove_file(keel.path("quick")).unwrap();
    keel.ctl_ok(&["start", "j"]);
    // Running means exec'd: the shell's own `echo main` may come later.
    trace_len(&keel, 3);
    assert_eq!(keel.ctl_ok(&["stop", "j"]), "j stop/waiting\n");
    assert_eq!(
        trace(&keel),
        ["main", "post-stop", "main", "pre-stop", "post-stop"]
    );
}

#[test]
fn main_is_not_killed_until_pre_stop_finished() {
    let job = format!(
        "{MAIN_LOGS_TERM}pre-stop script\n  echo pre-stop-1 >> $DIR/trace\n  sleep 0.3\n  echo pre-stop-2 >> $DIR/trace\nend script\n"
    );
    let keel = Keel::start(&[("j", &job)]);
    keel.ctl_ok(&["start", "j"]);
    trace_len(&keel, 1);
    assert_eq!(keel.ctl_ok(&["stop", "j"]), "j stop/waiting\n");
    assert_eq!(
        trace_len(&keel, 4),
        ["main", "pre-stop-1", "pre-stop-2", "main-term"]
    );
}

#[test]
fn a_start_during_pre_stop_cancels_the_stop() {
    let job = format!(
        "{MAIN_LOGS_TERM}pre-stop script\n  echo pre-stop >> $DIR/trace\n  while [ ! -e $DIR/go ]; do sleep 0.02; done\nend script\n{POST_STOP_LOGS}"
    );
    let keel = Keel::start(&[("j", &job)]);
    let started = keel.ctl_ok(&["start", "j"]);
    let pid = status_pid(&started).unwrap();
    let host = main_host_pid(&keel, &started);
    trace_len(&keel, 1);
    keel.ctl_ok(&["stop", "--no-wait", "j"]);
    trace_len(&keel, 2);
    let s = status(&keel, "j");
    let pre_stop = s
        .strip_prefix(&format!(
            "j stop/pre-stop, process {pid}\n\tpre-stop process "
        ))
        .unwrap_or_else(|| panic!("{s:?}"));
    assert!(pre_stop.trim_end().parse::<i32>().is_ok(), "{s:?}");
    std::thread::scope(|scope| {
        let start = scope.spawn(|| keel.ctl(&["start", "j"]));
        // The start is taken (goal start) but waits for pre-stop to finish.
        wait_status(&keel, "j", "j start/pre-stop");
        assert!(!start.is_finished(), "start returned during pre-stop");
        keel.touch("go");
        let out = start.join().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("j start/running, process {pid}\n"));
    });
    assert_eq!(status(&keel, "j"), started, "the same main process runs on");
    assert!(!gone(host));
    assert_eq!(trace(&keel), ["main", "pre-stop"], "main was never killed");
}

// 6. Killed lasts until the exit is seen; kill signal; the whole process group.

#[test]
fn killed_lasts_until_sigkill_after_kill_timeout() {
    let job = format!(
        "kill timeout 1\nscript\n  trap '' TERM\n  echo main >> $DIR/trace\n  while :; do sleep 0.05; done\nend script\n{POST_STOP_LOGS}"
    );
    let keel = Keel::start(&[("j", &job)]);
    let started = keel.ctl_ok(&["start", "j"]);
    let host = main_host_pid(&keel, &started);
    trace_len(&keel, 1);
    let t0 = Instant::now();
    keel.ctl_ok(&["stop", "--no-wait", "j"]);
    // The main process ignores TERM: the job stays killed, with its process.
    while t0.elapsed() < Duration::from_millis(700) {
        let s = status(&keel, "j");
        assert_eq!(
            s,
            format!("j stop/killed, process {}\n", status_pid(&started).unwrap()),
            "after {:?}",
            t0.elapsed()
        );
        assert!(!gone(host));
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_status(&keel, "j", "j stop/waiting");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < 3 * SECOND,
        "stopped after {took:?}, kill timeout 1"
    );
    assert!(gone(host));
    assert_eq!(trace_len(&keel, 2), ["main", "post-stop"]);
}

#[test]
fn kill_signal_is_the_signal_sent() {
    let job = "kill signal USR1
script
  trap 'echo usr1 >> $DIR/trace; exit 0' USR1
  trap 'echo term >> $DIR/trace; exit 0' TERM
  echo main >> $DIR/trace
  sleep 1000 &
  wait
end script
";
    let keel = Keel::start(&[("j", job)]);
    keel.ctl_ok(&["start", "j"]);
    trace_len(&keel, 1);
    assert_eq!(keel.ctl_ok(&["stop", "j"]), "j stop/waiting\n");
    assert_eq!(trace(&keel), ["main", "usr1"]);
}

#[test]
fn signals_reach_the_whole_process_group() {
    // Main waits for the child to have run its trap before it ends: at main's
    // end whatever is left of the job is killed (SIGKILL), trap or not.
    let job = "script
  trap 'wait; echo main-term >> $DIR/trace; exit 0' TERM
  sh -c 'trap \"echo child-term >> $DIR/trace; exit 0\" TERM; echo child >> $DIR/trace; sleep 1000 & wait' &
  echo main >> $DIR/trace
  wait
end script
";
    let keel = Keel::start(&[("j", job)]);
    keel.ctl_ok(&["start", "j"]);
    let mut t = trace_len(&keel, 2);
    t.sort();
    assert_eq!(t, ["child", "main"]);
    assert_eq!(keel.ctl_ok(&["stop", "j"]), "j stop/waiting\n");
    wait_for("the child's TERM trap", 5 * SECOND, || {
        trace(&keel).contains(&"child-term".to_string())
    });
    let mut t = trace_len(&keel, 4);
    t.sort();
    assert_eq!(t, ["child", "child-term", "main", "main-term"]);
    wait_for("every job process gone", 5 * SECOND, || {
        keel.processes()
            .iter()
            .all(|&p| keel_tests::comm(p).as_deref() == Some("keel-supervisor"))
    });
}

#[test]
fn reload_signals_the_main_process_with_its_reload_signal() {
    let job = "reload signal USR1
script
  trap 'echo usr1 >> $DIR/trace' USR1
  echo main >> $DIR/trace
  while :; do sleep 0.05; done
end script
";
    let keel = Keel::start(&[("j", job)]);
    keel.ctl_ok(&["start", "j"]);
    assert_eq!(trace_len(&keel, 1), ["main"]);
    assert_eq!(keel.ctl_ok(&["reload", "j"]), "");
    assert_eq!(trace_len(&keel, 2), ["main", "usr1"]);
    assert!(status(&keel, "j").starts_with("j start/running"));
}

// 7. Tasks.

#[test]
fn a_task_start_returns_after_the_task_finished() {
    let keel = Keel::start(&[(
        "t",
        "task\nscript\n  sleep 0.3\n  echo done >> $DIR/trace\nend script\n",
    )]);
    assert_eq!(keel.ctl_ok(&["start", "t"]), "t stop/waiting\n");
    assert_eq!(trace(&keel), ["done"]);
    assert_eq!(status(&keel, "t"), "t stop/waiting\n");
}

#[test]
fn a_failing_task_makes_start_fail() {
    let keel = Keel::start(&[("t", "task\nscript\n  exit 1\nend script\n")]);
    let out = keel.ctl(&["start", "t"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("initctl: Job failed to start: main process (")
            && err.ends_with(") terminated with status 1\n"),
        "{err:?}"
    );
    let st = status(&keel, "t");
    assert!(
        st.starts_with("t stop/waiting\n\tfailed: main process ("),
        "{st}"
    );
}

// 8. Respawn.

#[test]
fn respawn_replaces_a_killed_main() {
    let keel = Keel::start(&[("r", "respawn\nexec sleep 1000\n")]);
    let started = keel.ctl_ok(&["start", "r"]);
    let old = status_pid(&started).unwrap();
    let host = main_host_pid(&keel, &started);
    unsafe { libc::kill(host, libc::SIGKILL) };
    let mut now = String::new();
    wait_for("a new main process", 5 * SECOND, || {
        now = status(&keel, "r");
        now.starts_with("r start/running, process ") && status_pid(&now) != Some(old)
    });
    let new = main_host_pid(&keel, &now);
    wait_for("the new main to exec", 5 * SECOND, || {
        keel_tests::comm(new).as_deref() == Some("sleep")
    });
    assert!(gone(host));
}

#[test]
fn a_respawn_saves_the_state_once_before_it_starts() {
    // The round that applies the exit and spawns the new main saves the state
    // that records it, releases it, and saves nothing more until the new main
    // has exec'd (then "started" is saved). KEEL_DEBUG logs every save.
    let keel = Keel::start_with(keel_tests::Setup {
        jobs: &[("r", "respawn\nconsole none\nexec sleep 1000\n")],
        supervisor: None,
        env: &[("KEEL_DEBUG", "1")],
    });
    let started = keel.ctl_ok(&["start", "r"]);
    let old = status_pid(&started).unwrap();
    unsafe { libc::kill(main_host_pid(&keel, &started), libc::SIGKILL) };
    let mut now = String::new();
    wait_for("a new main process", 5 * SECOND, || {
        now = status(&keel, "r");
        now.starts_with("r start/running, process ") && status_pid(&now) != Some(old)
    });
    let new = status_pid(&now).unwrap();
    let spawned = format!("spawned r main pid {new} ");
    let running = format!("r started, process {new}");
    wait_for("the start in keel's log", 5 * SECOND, || {
        keel.console().contains(&running)
    });
    let console = keel.console();
    let from = console.find(&spawned).expect("the spawn is logged");
    let to = console.find(&running).expect("waited for");
    let saves = console[from..to].matches("saving state").count();
    assert_eq!(saves, 1, "{}", &console[from..to]);
}

#[test]
fn respawn_limit_stops_a_job_respawning_too_fast() {
    let keel = Keel::start(&[(
        "r",
        "respawn\nrespawn limit 2 10\nscript\n  echo run >> $DIR/trace\n  sleep 0.1\n  exit 1\nend script\n",
    )]);
    keel.ctl_ok(&["start", "r"]);
    wait_status(&keel, "r", "r stop/waiting");
    // Two respawns allowed, the third death stops it.
    assert_eq!(trace(&keel), ["run", "run", "run"]);
    // Why it stopped stays visible (README: `failure` in `--json status`).
    let json = keel.ctl_ok(&["--json", "status", "r"]);
    assert!(json.contains("respawning too fast"), "{json}");
    assert!(
        json.contains("main process (") && json.contains("terminated with status 1"),
        "{json}"
    );
    // And it stays stopped.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(trace(&keel).len(), 3);
}

#[test]
fn a_normal_exit_is_not_respawned() {
    let keel = Keel::start(&[(
        "r",
        "respawn\nnormal exit 3\nscript\n  echo run >> $DIR/trace\n  sleep 0.1\n  exit 3\nend script\n",
    )]);
    keel.ctl_ok(&["start", "r"]);
    wait_status(&keel, "r", "r stop/waiting");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(trace(&keel), ["run"]);
    let json = keel.ctl_ok(&["--json", "status", "r"]);
    assert!(json.contains("\"failure\":null"), "{json}");
}

// 9. Reload.

#[test]
fn reload_sends_the_reload_signal() {
    let main = |name: &str| {
        format!(
            "script
  trap 'echo {name}-HUP >> $DIR/trace' HUP
  trap 'echo {name}-USR2 >> $DIR/trace' USR2
  echo {name} >> $DIR/trace
  while :; do sleep 0.05; done
end script
"
        )
    };
    let plain = main("plain");
    let custom = format!("reload signal USR2\n{}", main("custom"));
    let keel = Keel::start(&[("plain", &plain), ("custom", &custom)]);
    let p = keel.ctl_ok(&["start", "plain"]);
    let c = keel.ctl_ok(&["start", "custom"]);
    trace_len(&keel, 2);
    // Upstart's reload prints nothing.
    assert_eq!(keel.ctl_ok(&["reload", "plain"]), "");
    wait_for("plain's HUP", 5 * SECOND, || {
        trace(&keel).contains(&"plain-HUP".to_string())
    });
    assert_eq!(keel.ctl_ok(&["reload", "custom"]), "");
    wait_for("custom's USR2", 5 * SECOND, || {
        trace(&keel).contains(&"custom-USR2".to_string())
    });
    let mut t = trace(&keel);
    t[..2].sort();
    assert_eq!(t, ["custom", "plain", "plain-HUP", "custom-USR2"]);
    assert_eq!(status(&keel, "plain"), p);
    assert_eq!(status(&keel, "custom"), c);
}

// 10. Instances.

#[test]
fn instances_have_their_own_lifecycles() {
    let keel = Keel::start(&[("j", "instance $N\nexec sleep 1000\n")]);
    let one = keel.ctl_ok(&["start", "j", "N=1"]);
    assert!(one.starts_with("j (1) start/running, process "), "{one}");
    let two = keel.ctl_ok(&["start", "j", "N=2"]);
    assert!(two.starts_with("j (2) start/running, process "), "{two}");
    assert_ne!(status_pid(&one), status_pid(&two));
    assert_eq!(status(&keel, "j"), format!("{one}{two}"));
    assert_eq!(keel.ctl_ok(&["status", "j", "N=2"]), two);
    let again = keel.ctl(&["start", "j", "N=1"]);
    assert_eq!(again.status.code(), Some(1));
    let host_one = main_host_pid(&keel, &one);
    let host_two = main_host_pid(&keel, &two);
    assert_eq!(keel.ctl_ok(&["stop", "j", "N=1"]), "j (1) stop/waiting\n");
    assert!(gone(host_one));
    assert!(!gone(host_two));
    assert_eq!(status(&keel, "j"), two);
    let out = keel.ctl(&["status", "j", "N=3"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "initctl: Unknown instance: j (3)\n");
}

// 11. The job's environment.

#[test]
fn the_job_environment_is_its_own() {
    let keel = Keel::start(&[(
        "e",
        "instance $N\nenv FOO=bar\nenv KEEP=kept\ntask\nscript\n  env > $DIR/env-$N\nend script\n",
    )]);
    keel.ctl_ok(&["start", "e", "N=a"]);
    keel.ctl_ok(&["start", "e", "N=b", "FOO=baz"]);
    let read = |n: &str| {
        let mut vars = keel.lines(&format!("env-{n}"));
        vars.sort();
        vars
    };
    for (n, foo) in [("a", "bar"), ("b", "baz")] {
        let vars = read(n);
        let has = |kv: &str| vars.iter().any(|v| v == kv);
        assert!(has(&format!("FOO={foo}")), "{vars:?}");
        assert!(has("KEEP=kept"), "{vars:?}");
        assert!(has("UPSTART_JOB=e"), "{vars:?}");
        assert!(has(&format!("UPSTART_INSTANCE={n}")), "{vars:?}");
        assert!(has(&format!("N={n}")), "{vars:?}");
        // Nothing of the supervisor's (or this test's) environment leaks in;
        // KEEL_SOCKET is keel's own gift: its socket is not the default.
        assert!(
            has(&format!("KEEL_SOCKET={}", keel.socket().display())),
            "{vars:?}"
        );
        let allowed = [
            "KEEL_SOCKET",
            "PATH",
            "TERM",
            "FOO",
            "KEEP",
            "N",
            "UPSTART_JOB",
            "UPSTART_INSTANCE",
            "PWD",
        ];
        for v in &vars {
            let key = v.split_once('=').map_or(v.as_str(), |(k, _)| k);
            assert!(
                allowed.contains(&key),
                "{key} leaked into the job: {vars:?}"
            );
        }
        assert!(!vars.iter().any(|v| v.starts_with("KEEL_INIT_FD=")));
        assert!(!vars.iter().any(|v| v.starts_with("HOME=")));
    }
}

// 12. --no-wait.

#[test]
fn no_wait_returns_at_once() {
    let job = format!("{PRE_START_MAY_BLOCK}exec sleep 1000\n");
    let keel = Keel::start(&[("j", &job)]);
    keel.touch("block");
    let t0 = Instant::now();
    let out = keel.ctl_ok(&["start", "--no-wait", "j"]);
    let took = t0.elapsed();
    assert!(took < 2 * SECOND, "start --no-wait took {took:?}");
    assert!(out.starts_with("j start/pre-start"), "{out}");
    // Still starting: pre-start waits.
    let s = status(&keel, "j");
    let pre = s
        .strip_prefix("j start/pre-start, process ")
        .unwrap_or_else(|| panic!("{s:?}"));
    assert!(pre.trim_end().parse::<i32>().is_ok(), "{s:?}");
    keel.touch("go");
    wait_status(&keel, "j", "j start/running, process ");
}

// 13. Status shows the other running processes.

#[test]
fn status_lists_other_processes_during_post_start() {
    let keel = Keel::start(&[(
        "j",
        "exec sleep 1000\npost-start script\n  while [ ! -e $DIR/go ]; do sleep 0.02; done\nend script\n",
    )]);
    keel.ctl_ok(&["start", "--no-wait", "j"]);
    let s = wait_status(&keel, "j", "j start/post-start, process ");
    let (first, second) = s.split_once('\n').unwrap();
    let main: i32 = first
        .strip_prefix("j start/post-start, process ")
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{s:?}"));
    let post: i32 = second
        .strip_prefix("\tpost-start process ")
        .and_then(|r| r.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{s:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{s:?}"));
    assert_ne!(main, post);
    let main_host = keel.host_pid(main).unwrap();
    assert!(keel.host_pid(post).is_some(), "post-start {post} runs");
    keel.touch("go");
    let running = wait_status(&keel, "j", "j start/running");
    assert_eq!(running, format!("j start/running, process {main}\n"));
    assert_eq!(keel_tests::comm(main_host).as_deref(), Some("sleep"));
}

// 7 (keel's own). The way down is bounded: a hook that never ends is killed
// after the kill timeout, the stop goes on and returns, the failure is recorded.

/// Starts `j` (whose `hook` sleeps forever, with `kill timeout 1`), waits until
/// that hook runs (`state` in the status), stops it and checks the stop returns
/// once the hook was killed, with the reason in `status`.
fn a_hook_that_never_ends_is_bounded(hook: &str, state: &str) {
    let job = format!("kill timeout 1\n{hook} exec sleep 1000\nexec sleep 1001\n");
    let keel = Keel::start(&[("j", &job)]);
    let during_start = matches!(hook, "pre-start" | "post-start");
    if during_start {
        keel.ctl_ok(&["start", "--no-wait", "j"]);
    } else {
        keel.ctl_ok(&["start", "j"]);
    }
    if hook != "post-stop" {
        wait_status(&keel, "j", &format!("j {}", state));
    }
    let t0 = Instant::now();
    let mut stop = std::process::Command::new(keel_tests::bin("initctl"))
        .env("KEEL_SOCKET", keel.socket())
        .args(["stop", "j"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ended = None;
    let wait = wait_for_stop(&mut stop, &mut ended);
    let took = t0.elapsed();
    assert!(wait, "{hook}: the stop has not returned after {took:?}");
    assert!(ended.is_some_and(|s| s.success()), "{hook}: {ended:?}");
    // Post-stop begins after main's end (TERM at once): it has its own second.
    assert!(
        took >= Duration::from_millis(950) && took < 8 * SECOND,
        "{hook}: the stop took {took:?}, kill timeout 1"
    );
    let json = keel.ctl_ok(&["--json", "status", "j"]);
    assert!(json.contains("\"state\":\"waiting\""), "{hook}: {json}");
    let want = format!("{hook} process (");
    assert!(
        json.contains(&want) && json.contains("did not end within the kill timeout (1 s): killed"),
        "{hook}: {json}"
    );
    // Nothing of the job is left.
    assert!(keel.processes().iter().all(|&p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .map_or(true, |c| !c.starts_with(b"sleep\x00100"))
    }));
}

/// Whether `stop` ended within 10 s (else it is killed); its status in `ended`.
fn wait_for_stop(
    stop: &mut std::process::Child,
    ended: &mut Option<std::process::ExitStatus>,
) -> bool {
    let deadline = Instant::now() + 10 * SECOND;
    while Instant::now() < deadline {
        *ended = stop.try_wait().unwrap();
        if ended.is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = stop.kill();
    let _ = stop.wait();
    false
}

#[test]
fn a_pre_start_that_never_ends_is_killed_after_the_kill_timeout_of_a_stop() {
    a_hook_that_never_ends_is_bounded("pre-start", "start/pre-start");
}

#[test]
fn a_post_start_that_never_ends_is_killed_after_the_kill_timeout_of_a_stop() {
    a_hook_that_never_ends_is_bounded("post-start", "start/post-start");
}

#[test]
fn a_pre_stop_that_never_ends_is_killed_after_the_kill_timeout() {
    a_hook_that_never_ends_is_bounded("pre-stop", "start/running");
}

#[test]
fn a_post_stop_that_never_ends_is_killed_after_the_kill_timeout() {
    a_hook_that_never_ends_is_bounded("post-stop", "start/running");
}
