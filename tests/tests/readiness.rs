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
    let text = json_status(keel, job)["status"]
        .as_str()
        .unwrap_or("")
        .to_string();
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
    let never = format!(
        "expect stop\nready timeout 1\nexec {} --never --trace $DIR/trace\npost-stop exec touch $DIR/post-stop\n",
        daemon()
    );
    let keel = Keel::start(&[("svc", &never)]);
    let out = keel.ctl(&["start", "svc"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not ready within 1 s (expect stop)"), "{err}");
    assert_eq!(state(&keel, "svc"), "stop/waiting");
    assert!(keel.path("post-stop").exists());
    let failure = json_status(&keel, "svc")["failure"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(failure.contains("never stopped itself"), "{failure}");
}

#[test]
fn a_stop_while_readiness_is_awaited_finishes_at_once() {
    let keel = Keel::start(&[("svc", &gated("expect notify", "--never"))]);
    keel.ctl_ok(&["start", "--no-wait", "svc"]);
    keel.touch("go");
    wait_for("the daemon to run", Duration::from_secs(10), || {
        keel.lines("trace").iter().any(|l| l.starts_with("running"))
    });
    assert_eq!(state(&keel, "svc"), "start/spawned");
    let out = keel.ctl_ok(&["stop", "svc"]);
    assert!(out.contains("stop/waiting"), "{out}");
}

#[test]
fn a_job_awaiting_readiness_when_the_supervisor_is_killed_becomes_ready_after() {
    for expect in ["expect notify", "expect stop", "expect listen"] {
        let args = match expect {
            "expect notify" => "--notify",
            "expect stop" => "--stop",
            _ => "--listen $DIR/svc.sock",
        };
        let keel = Keel::start(&[("svc", &gated(expect, args))]);
        keel.ctl_ok(&["start", "--no-wait", "svc"]);
        wait_for("the job to start", Duration::from_secs(10), || {
            !keel.lines("trace").is_empty()
        });
        let old = keel.supervisor_pid().expect("a supervisor");
        // SAFETY: signalling a pid we just read; the test owns the namespace.
        unsafe { libc::kill(old, libc::SIGKILL) };
        // Readiness comes while no supervisor (or a new one) runs.
        keel.touch("go");
        wait_for(
            &format!("{expect}: the job to run after the crash"),
            Duration::from_secs(15),
            || {
                keel.supervisor_pid().is_some_and(|p| p != old)
                    && keel.ctl(&["status", "svc"]).status.success()
                    && state(&keel, "svc") == "start/running"
            },
        );
        let ready = keel
            .lines("trace")
            .iter()
            .filter(|l| l.starts_with("ready"))
            .count();
        assert_eq!(
            ready,
            1,
            "{expect}: started once: {:?}",
            keel.lines("trace")
        );
        if expect == "expect stop" {
            wait_for(
                "the daemon to be continued",
                Duration::from_secs(10),
                || keel.lines("trace").iter().any(|l| l.starts_with("running")),
            );
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
    wait_for("the owner to run", Duration::from_secs(15), || {
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
    let text = json_status(&keel, "redis")["status"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(text.contains("Ready to accept connections"), "{text}");
    keel.ctl_ok(&["stop", "redis"]);
}
