//! Readiness under keel-init in a PID namespace: a job is running (and `start`
//! returns) only once its main process is ready by the protocol its `expect`
//! names; readiness that never comes ends in an explained, stopped state; a
//! supervisor killed while a job waits goes on waiting and sees it become ready.
//!
//! The daemons are `keel-test-daemon` (tests/src/bin), which writes what it did to a
//! trace file, and real ones from Debian where the machine has them.

use keel_tests::{Keel, Setup, bin, bus_config, wait_for};
use std::process::Command;
use std::time::Duration;

fn daemon() -> String {
    bin("keel-test-daemon").display().to_string()
}

/// The instance's JSON status (`initctl --json status JOB`).
fn json_status(keel: &Keel, job: &str) -> serde_json::Value {
    let out = keel.ctl_ok(&["--json", "status", job]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    v[0].clone()
}

/// A text field of the instance's JSON status (`failure`, `status`), or "".
fn field(keel: &Keel, job: &str, name: &str) -> String {
    json_status(keel, job)[name]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The main pid status shows (in the namespace).
fn shown_pid(keel: &Keel, job: &str) -> i32 {
    json_status(keel, job)["processes"][0]["pid"]
        .as_i64()
        .expect("a main pid") as i32
}

/// Waits until the test daemon has written `what` to its trace.
fn wait_trace(keel: &Keel, what: &str) {
    wait_for(
        &format!("the daemon's trace to say {what}"),
        Duration::from_secs(10),
        || keel.lines("trace").iter().any(|l| l.starts_with(what)),
    );
}

/// Starts a job whose readiness never comes (`ready timeout 1`); its failure.
fn never_ready(job: &str) -> (Keel, String) {
    let keel = Keel::start(&[("svc", job)]);
    let out = keel.ctl(&["start", "svc"]);
    assert!(!out.status.success());
    assert_eq!(state(&keel, "svc"), "stop/waiting");
    let failure = field(&keel, "svc", "failure");
    (keel, failure)
}

fn state(keel: &Keel, job: &str) -> String {
    let s = json_status(keel, job);
    format!(
        "{}/{}",
        s["goal"].as_str().unwrap_or(""),
        s["state"].as_str().unwrap_or("")
    )
}

/// Starts `job` without waiting; checks it waits in spawned, saying why; then
/// lets it (the test's `go` file) become ready, and checks it runs only then.
fn waits_then_runs(keel: &Keel, job: &str) {
    keel.ctl_ok(&["start", "--no-wait", job]);
    wait_for("the daemon to start", Duration::from_secs(10), || {
        !keel.lines("trace").is_empty()
    });
    assert_eq!(state(keel, job), "start/spawned");
    let text = field(keel, job, "status");
    assert!(text.contains("waiting until ready (expect"), "{text}");
    assert!(!keel.lines("trace").iter().any(|l| l.starts_with("ready")));
    keel.touch("go");
    wait_for("the job to run", Duration::from_secs(10), || {
        state(keel, job) == "start/running"
    });
    assert!(
        keel.lines("trace").iter().any(|l| l.starts_with("ready")),
        "running before the daemon said it was ready: {:?}",
        keel.lines("trace")
    );
}

/// A job file: `keel-test-daemon ARGS` started once `$DIR/go` exists.
fn gated(expect: &str, args: &str) -> String {
    format!(
        "{expect}\nscript\n  echo started >> $DIR/trace\n  while [ ! -e $DIR/go ]; do sleep 0.02; done\n  exec {} {args} --trace $DIR/trace\nend script\n",
        daemon()
    )
}

#[test]
fn expect_stop_waits_for_sigstop_then_continues_the_daemon() {
    let keel = Keel::start(&[("svc", &gated("expect stop", "--stop"))]);
    waits_then_runs(&keel, "svc");
    // SIGCONT came after readiness: the daemon went on.
    wait_for(
        "the daemon to be continued",
        Duration::from_secs(10),
        || keel.lines("trace").iter().any(|l| l.starts_with("running")),
    );
}

#[test]
fn expect_notify_waits_for_ready_1_and_shows_the_status_text() {
    let keel = Keel::start(&[(
        "svc",
        &gated("expect notify", "--notify-status 'serving requests'"),
    )]);
    waits_then_runs(&keel, "svc");
    assert_eq!(
        json_status(&keel, "svc")["status"].as_str(),
        Some("serving requests")
    );
    // Plain `status` says it too, on a line of keel's own.
    let plain = keel.ctl_ok(&["status", "svc"]);
    assert!(plain.ends_with("\n\tstatus: serving requests\n"), "{plain}");
    // NOTIFY_SOCKET is the socket beside the control socket.
    assert!(keel.path("notify").exists());
}

#[test]
fn expect_notify_works_on_an_abstract_socket() {
    let name = format!("@keel-test-notify-{}", std::process::id());
    let keel = Keel::start_with(Setup {
        jobs: &[("svc", &gated("expect notify", "--notify"))],
        supervisor: None,
        env: &[("KEEL_NOTIFY_SOCKET", &name)],
    });
    waits_then_runs(&keel, "svc");
    assert!(!keel.path("notify").exists());
}

#[test]
fn notifications_from_other_processes_are_ignored() {
    // A job that is not `expect notify` cannot make another job ready, and
    // neither can a process outside every job.
    let liar = format!(
        "script\n  NOTIFY_SOCKET={} exec {} --notify --trace $DIR/liar\nend script\n",
        "$DIR/notify",
        daemon()
    );
    let keel = Keel::start(&[
        ("svc", &gated("expect notify", "--notify")),
        ("liar", &liar),
    ]);
    keel.ctl_ok(&["start", "--no-wait", "svc"]);
    keel.ctl_ok(&["start", "liar"]);
    wait_for("the liar to notify", Duration::from_secs(10), || {
        keel.lines("liar").iter().any(|l| l.starts_with("running"))
    });
    let outsider = Command::new(bin("keel-test-daemon"))
        .args(["--notify", "--trace"])
        .arg(keel.path("outsider"))
        .env("NOTIFY_SOCKET", keel.path("notify"))
        .spawn()
        .unwrap();
    let mut outsider = Guard(outsider);
    wait_for("the outsider to notify", Duration::from_secs(10), || {
        keel.lines("outsider")
            .iter()
            .any(|l| l.starts_with("running"))
    });
    // Both notifications were read (the supervisor has answered since).
    keel.ctl_ok(&["status", "svc"]);
    assert_eq!(state(&keel, "svc"), "start/spawned");
    let _ = outsider.0.kill();
    keel.touch("go");
    wait_for("svc to run", Duration::from_secs(10), || {
        state(&keel, "svc") == "start/running"
    });
}

/// A process of the test's own, killed when the test ends.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn expect_listen_waits_for_a_listening_socket() {
    let keel = Keel::start(&[("svc", &gated("expect listen", "--listen $DIR/svc.sock"))]);
    waits_then_runs(&keel, "svc");
}

#[test]
fn readiness_that_never_comes_fails_the_start_with_a_reason() {
    let (keel, failure) = never_ready(&format!(
        "expect stop\nready timeout 1\nexec {} --never --trace $DIR/trace\n\
         post-stop exec touch $DIR/post-stop\n",
        daemon()
    ));
    assert!(
        failure.contains("not ready within 1 s (expect stop)"),
        "{failure}"
    );
    assert!(failure.contains("never stopped itself"), "{failure}");
    assert!(keel.path("post-stop").exists());
}

#[test]
fn a_stop_while_readiness_is_awaited_finishes_at_once() {
    let keel = Keel::start(&[("svc", &gated("expect notify", "--never"))]);
    keel.ctl_ok(&["start", "--no-wait", "svc"]);
    keel.touch("go");
    wait_trace(&keel, "running");
    assert_eq!(state(&keel, "svc"), "start/spawned");
    let out = keel.ctl_ok(&["stop", "svc"]);
    assert!(out.contains("stop/waiting"), "{out}");
}

#[test]
fn a_job_awaiting_readiness_when_the_supervisor_is_killed_or_re_executed_becomes_ready_after() {
    let modes = [
        ("expect notify", "--notify"),
        ("expect stop", "--stop"),
        ("expect listen", "--listen $DIR/svc.sock"),
        ("expect daemon", "--fork 2"),
        ("expect fd 5", "--fd 5"),
    ];
    for (round, (expect, args)) in modes.iter().enumerate() {
        // Every mode across a kill -9, and across a live re-exec.
        for reexec in [false, true] {
            let keel = Keel::start(&[("svc", &gated(expect, args))]);
            keel.ctl_ok(&["start", "--no-wait", "svc"]);
            wait_for("the job to start", Duration::from_secs(10), || {
                !keel.lines("trace").is_empty()
            });
            let old = keel.supervisor_pid().expect("a supervisor");
            if reexec {
                keel.ctl_ok(&["reexec"]);
            } else {
                // SAFETY: signalling a pid we just read; the test owns the namespace.
                unsafe { libc::kill(old, libc::SIGKILL) };
            }
            // Readiness comes (the daemon forks, its parents exit) while no
            // supervisor (or a new one, or the new image) runs.
            keel.touch("go");
            wait_for(
                &format!("{expect} (round {round}, re-exec {reexec}): the job to run after"),
                Duration::from_secs(30),
                || {
                    (reexec || keel.supervisor_pid().is_some_and(|p| p != old))
                        && keel.ctl(&["status", "svc"]).status.success()
                        && state(&keel, "svc") == "start/running"
                },
            );
            if reexec {
                assert_eq!(keel.supervisor_pid(), Some(old), "re-exec keeps the pid");
            }
            // The daemon goes on (continued after its stop, or just running).
            wait_trace(&keel, "running");
            let ready = traced(&keel, "ready");
            assert_eq!(
                ready.len(),
                1,
                "{expect}: started once: {:?}",
                keel.lines("trace")
            );
            // The process tracked is the one that is ready (for `expect daemon`:
            // the last fork, found through the exits keel-init kept meanwhile).
            assert_eq!(shown_pid(&keel, "svc"), ready[0], "{expect}");
        }
    }
}

#[test]
fn expect_dbus_waits_until_the_name_is_owned_on_a_real_bus() {
    // The bus is a keel job itself, started after the job waiting for a name on
    // it: keel connects once the bus is up.
    // The address must be known before keel starts: the bus lives in a directory
    // of its own.
    let scratch = keel_tests::Scratch::new("dbus");
    let address = format!("unix:path={}/bus", scratch.0.display());
    let bus_job = format!(
        "exec dbus-daemon --config-file={} --nofork --nopidfile --nosyslog\n",
        bus_config(&scratch.0).display()
    );
    let owner = format!(
        "expect dbus org.keel.Test\nenv DBUS_SYSTEM_BUS_ADDRESS={address}\nscript\n  \
         while [ ! -e $DIR/go ]; do sleep 0.02; done\n  echo ready >> $DIR/trace\n  \
         exec dbus-test-tool black-hole --system --name=org.keel.Test\nend script\n"
    );
    let keel = Keel::start_with(Setup {
        jobs: &[("bus", &bus_job), ("owner", &owner)],
        supervisor: None,
        env: &[("DBUS_SYSTEM_BUS_ADDRESS", &address)],
    });
    keel.ctl_ok(&["start", "--no-wait", "owner"]);
    keel.ctl_ok(&["start", "bus"]);
    wait_for("the bus to listen", Duration::from_secs(10), || {
        scratch.0.join("bus").exists()
    });
    assert_eq!(state(&keel, "owner"), "start/spawned");
    keel.touch("go");
    wait_for("the owner to run", Duration::from_secs(30), || {
        state(&keel, "owner") == "start/running"
    });
    assert!(keel.lines("trace").contains(&"ready".to_string()));
}

#[test]
fn a_real_sd_notify_daemon_runs_only_once_it_says_so() {
    // Debian's redis-server speaks sd_notify with `--supervised systemd`: it says
    // READY=1 once it accepts connections.
    let job = "expect notify\nconsole log\n\
               exec redis-server --port 0 --unixsocket $DIR/redis.sock --supervised systemd \
               --daemonize no --save '' --appendonly no --dir $DIR\n";
    let keel = Keel::start(&[("redis", job)]);
    let out = keel.ctl_ok(&["start", "redis"]);
    assert!(out.starts_with("redis start/running, process"), "{out}");
    // Ready means ready: it answers at once.
    let ping = Command::new("redis-cli")
        .arg("-s")
        .arg(keel.path("redis.sock"))
        .arg("ping")
        .output()
        .expect("redis-cli (Debian package redis-tools)");
    assert_eq!(String::from_utf8_lossy(&ping.stdout).trim(), "PONG");
    let text = field(&keel, "redis", "status");
    assert!(text.contains("Ready to accept connections"), "{text}");
    keel.ctl_ok(&["stop", "redis"]);
}

/// The pids the test daemon's trace says it ran as, in order (`forked PID`,
/// `ready PID`, …).
fn traced(keel: &Keel, what: &str) -> Vec<i32> {
    keel.lines("trace")
        .iter()
        .filter_map(|l| l.strip_prefix(what)?.trim().parse().ok())
        .collect()
}

/// The main pid `initctl status` shows, as a host pid.
fn main_host_pid(keel: &Keel, job: &str) -> Option<i32> {
    let pid = json_status(keel, job)["processes"][0]["pid"].as_i64()? as i32;
    keel.host_pid(pid)
}

#[test]
fn expect_fork_and_daemon_track_the_daemon_that_is_left() {
    for (expect, forks) in [("expect fork", 1), ("expect daemon", 2)] {
        let job = gated(expect, &format!("--fork {forks}"));
        let keel = Keel::start(&[("svc", &job)]);
        keel.ctl_ok(&["start", "--no-wait", "svc"]);
        wait_for("the job to start", Duration::from_secs(10), || {
            !keel.lines("trace").is_empty()
        });
        assert_eq!(state(&keel, "svc"), "start/spawned", "{expect}");
        keel.touch("go");
        wait_for("the job to run", Duration::from_secs(10), || {
            state(&keel, "svc") == "start/running"
        });
        // keel may know the daemon before the daemon has written who it is.
        wait_trace(&keel, "running");
        let forked = traced(&keel, "forked");
        assert_eq!(forked.len(), forks, "{expect}: {:?}", keel.lines("trace"));
        // The daemon (the last fork) is main: status names it, by its pid in the
        // namespace; the trace has it as the daemon saw itself (namespace pid too).
        let daemon = *forked.last().unwrap();
        let shown = shown_pid(&keel, "svc");
        assert_eq!(shown, daemon, "{expect}");
        assert_eq!(json_status(&keel, "svc")["status"], serde_json::Value::Null);
        // Stop kills it and finishes.
        let host = main_host_pid(&keel, "svc").unwrap();
        assert_eq!(keel.ctl_ok(&["stop", "svc"]), "svc stop/waiting\n");
        assert!(
            keel_tests::gone(host),
            "{expect}: the daemon was not killed"
        );
    }
}

#[test]
fn a_respawned_forking_daemon_is_tracked_again() {
    let job = format!(
        "expect fork\nrespawn\nexec {} --fork 1 --trace $DIR/trace\n",
        daemon()
    );
    let keel = Keel::start(&[("svc", &job)]);
    keel.ctl_ok(&["start", "svc"]);
    let first = main_host_pid(&keel, "svc").unwrap();
    // Killed once it has said who it is (keel may know it before it writes).
    wait_trace(&keel, "running");
    // SAFETY: kill(2) of a pid the test just read.
    unsafe { libc::kill(first, libc::SIGKILL) };
    wait_for(
        "the daemon to be respawned and tracked",
        Duration::from_secs(10),
        || {
            traced(&keel, "forked").len() == 2
                && state(&keel, "svc") == "start/running"
                && main_host_pid(&keel, "svc").is_some_and(|p| p != first)
        },
    );
    let second = *traced(&keel, "forked").last().unwrap();
    let shown = shown_pid(&keel, "svc");
    assert_eq!(shown, second);
}

#[test]
fn a_lying_expect_fork_on_a_foreground_process_ends_explained_and_stops() {
    // It never forks: keel does not hang in `killed` on a pid that is gone, nor
    // claim it runs; the readiness timeout says what is wrong.
    let (keel, failure) = never_ready(&format!(
        "expect fork\nready timeout 1\nexec {} --never --trace $DIR/trace\n",
        daemon()
    ));
    assert!(
        failure.contains("not ready within 1 s (expect fork)")
            && failure.contains("does it fork as many times as it says?"),
        "{failure}"
    );
    assert!(
        keel.processes()
            .iter()
            .all(|&p| keel_tests::comm(p).as_deref() != Some("keel-test-daem"))
    );
}

#[test]
fn a_daemon_forking_more_or_less_than_expected_is_still_tracked_and_reported() {
    // expect fork on a double-forking daemon: the second fork is followed too.
    let job = format!(
        "expect fork\nexec {} --fork 2 --trace $DIR/trace\n",
        daemon()
    );
    let keel = Keel::start(&[("svc", &job)]);
    keel.ctl_ok(&["start", "svc"]);
    wait_for(
        "the second fork to be followed",
        Duration::from_secs(10),
        || {
            traced(&keel, "forked").len() == 2
                && json_status(&keel, "svc")["processes"][0]["pid"].as_i64()
                    == traced(&keel, "forked").last().map(|&p| i64::from(p))
        },
    );
    let text = field(&keel, "svc", "status");
    assert!(text.contains("expect daemon would match"), "{text}");
    let host = main_host_pid(&keel, "svc").unwrap();
    assert_eq!(keel.ctl_ok(&["stop", "svc"]), "svc stop/waiting\n");
    assert!(keel_tests::gone(host));
    drop(keel);

    // expect daemon on a single-forking daemon: taken as it is after a grace, said so.
    let job = format!(
        "expect daemon\nexec {} --fork 1 --trace $DIR/trace\n",
        daemon()
    );
    let keel = Keel::start(&[("svc", &job)]);
    let out = keel.ctl_ok(&["start", "svc"]);
    assert!(out.starts_with("svc start/running"), "{out}");
    let text = field(&keel, "svc", "status");
    assert!(text.contains("forked only once"), "{text}");
    let shown = shown_pid(&keel, "svc");
    assert_eq!(Some(&shown), traced(&keel, "forked").last());
}

#[test]
fn expect_fd_waits_for_the_newline_on_that_fd() {
    let keel = Keel::start(&[("svc", &gated("expect fd 5", "--fd 5"))]);
    waits_then_runs(&keel, "svc");
    let refused = Keel::start(&[("svc", &gated("expect fd 11", "--fd 11"))]);
    let out = refused.ctl(&["start", "svc"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fd 11 is keel's own"), "{err}");
}

#[test]
fn a_real_forking_daemon_is_tracked_through_its_fork() {
    // busybox syslogd without -n forks once and the parent exits.
    let keel = Keel::start(&[(
        "syslogd",
        "expect fork\nexec busybox syslogd -O $DIR/messages\n",
    )]);
    keel.ctl_ok(&["start", "syslogd"]);
    let host = main_host_pid(&keel, "syslogd").unwrap();
    // The daemon, not the process keel started (which exited after its fork).
    let cmdline = std::fs::read(format!("/proc/{host}/cmdline")).unwrap_or_default();
    assert!(String::from_utf8_lossy(&cmdline).contains("syslogd"));
    let ppid = std::fs::read_to_string(format!("/proc/{host}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse::<i32>()
                .ok()
        });
    assert_eq!(ppid, Some(keel.init_pid), "the daemon is keel-init's child");
    assert_eq!(keel.ctl_ok(&["stop", "syslogd"]), "syslogd stop/waiting\n");
    assert!(keel_tests::gone(host));
}

#[test]
fn mainpid_hands_the_job_to_another_process_of_it() {
    let job = format!(
        "expect notify\nexec {} --notify-mainpid --trace $DIR/trace\n",
        daemon()
    );
    let keel = Keel::start(&[("svc", &job)]);
    keel.ctl_ok(&["start", "svc"]);
    wait_trace(&keel, "running");
    let child = traced(&keel, "forked")[0];
    assert_eq!(shown_pid(&keel, "svc"), child);
    // The process that said it exits; the job runs on with its child.
    let parent = traced(&keel, "ready")[0];
    wait_for(
        "the notifying parent to exit",
        Duration::from_secs(10),
        || {
            keel.processes()
                .iter()
                .all(|&p| keel_tests::ns_pid(p) != Some(parent))
        },
    );
    assert_eq!(state(&keel, "svc"), "start/running");
    let host = main_host_pid(&keel, "svc").unwrap();
    assert_eq!(keel.ctl_ok(&["stop", "svc"]), "svc stop/waiting\n");
    assert!(keel_tests::gone(host));
}

#[test]
fn a_respawning_service_that_ends_before_it_is_ready_is_respawned_up_to_its_limit() {
    // sshd set to listen on an address the machine does not have yet exits
    // before READY=1: each end respawns it, and the limit stops it.
    let keel = Keel::start(&[(
        "svc",
        "expect notify\nrespawn\nrespawn limit 3 60\nexec sh -c 'echo run >>$DIR/runs; exit 255'\n",
    )]);
    keel.ctl(&["start", "--no-wait", "svc"]);
    wait_for(
        "the respawn limit to stop it",
        Duration::from_secs(20),
        || state(&keel, "svc") == "stop/waiting",
    );
    assert_eq!(keel.lines("runs").len(), 4, "the first run and 3 respawns");
    let failure = field(&keel, "svc", "failure");
    assert!(failure.contains("respawning too fast"), "{failure}");
}
