//! The last phase in a PID namespace: keel-init execs keel-shutdown for the power
//! action, which ends every process left (SIGTERM, a bounded wait, SIGKILL) and
//! ends the namespace with the action — touching no filesystem, since the mounts
//! are this host's. Also: the fallback when keel-shutdown cannot be exec'd, the
//! supervisor's job log files closed before the exec, and PID 1 of a namespace
//! never taken for the machine's init.

use keel_tests::{
    Keel, Scratch, Setup, bin, children, ns_pid, proc_environ, supervisor_args, wait_for,
};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// keel with keel-shutdown at `shutdown`, once initctl answers.
fn start(jobs: &[(&str, &str)], shutdown: &str, env: &[(&str, &str)]) -> Keel {
    let keel = Keel::launch_init(
        Setup {
            jobs,
            supervisor: None,
            env,
        },
        &["--shutdown", shutdown],
    );
    wait_for("the supervisor to answer", 10 * SECOND, || {
        keel.ctl(&["version"]).status.success()
    });
    keel
}

fn keel_shutdown() -> String {
    bin("keel-shutdown").display().to_string()
}

/// Starts `script` (sh) in keel's namespace outside any job, as keel-init's child
/// (its parent exits at once); its pid in the namespace.
fn stray(keel: &Keel, script: &str) -> i32 {
    let out = Command::new("nsenter")
        .args(["-t", &keel.init_pid.to_string(), "-p", "--", "sh", "-c"])
        .arg(r#"sh -c "$1" </dev/null >/dev/null 2>&1 & echo $!"#)
        .args(["sh", script])
        .output()
        .expect("nsenter");
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid from nsenter: {out:?}"));
    wait_for("the stray process to be keel-init's", 5 * SECOND, || {
        children(keel.init_pid)
            .into_iter()
            .any(|p| ns_pid(p) == Some(pid))
    });
    pid
}

fn ended_by(status: ExitStatus, signal: i32) -> bool {
    status.signal() == Some(signal) || status.code() == Some(128 + signal)
}

#[test]
fn processes_left_get_sigterm_and_those_that_ignore_it_sigkill_after_the_bound() {
    let mut keel = start(
        &[("web", "start on startup\nexec sleep 1000\n")],
        &keel_shutdown(),
        &[("KEEL_SHUTDOWN_TIMEOUT", "1")],
    );
    let polite = stray(
        &keel,
        &format!(
            "trap 'echo ended > {}; exit 0' TERM; while :; do sleep 1; done",
            keel.path("polite").display()
        ),
    );
    let stubborn = stray(&keel, "trap '' TERM; exec sleep 1000");
    let t0 = Instant::now();
    keel.ctl_ok(&["poweroff"]);
    let status = keel.wait_end(30 * SECOND);
    let took = t0.elapsed();
    let console = keel.console();
    assert!(ended_by(status, libc::SIGINT), "{status:?}\n{console}");
    assert!(
        console.contains("keel-shutdown: powering off as the init of a PID namespace"),
        "{console}"
    );
    assert_eq!(
        fs::read_to_string(keel.path("polite")).ok().as_deref(),
        Some("ended\n"),
        "the process that handles SIGTERM got it:\n{console}"
    );
    let killed = format!(
        "keel-shutdown: still running 1.0s after SIGTERM, sent SIGKILL: {stubborn} (sleep)\n"
    );
    assert!(console.contains(&killed), "{killed}\n{console}");
    assert!(!console.contains(&format!("{polite} (sh)")), "{console}");
    assert!(took >= SECOND, "SIGKILL only after the bound: {took:?}");
    // The mounts of a PID namespace are the host's: never touched.
    assert!(
        !console
            .lines()
            .any(|l| l.starts_with("keel-shutdown:") && l.contains("mount")),
        "{console}"
    );
}

#[test]
fn a_daemon_that_escaped_its_job_and_ignores_sigterm_is_sigkilled_after_the_bound() {
    // Without job cgroups nothing of the job is left to kill once its main
    // process is stopped: the daemon (its own session) outlives the job.
    let job = "start on startup\nscript\n  setsid sh -c 'trap \"\" TERM; echo $$ > $DIR/daemon.pid; exec sleep 1000' </dev/null >/dev/null 2>&1 &\n  exec sleep 1000\nend script\n";
    let mut keel = Keel::launch_init(
        Setup {
            jobs: &[("web", job)],
            supervisor: Some((bin("keel-supervisor"), supervisor_args("$DIR/conf"))),
            env: &[("KEEL_SHUTDOWN_TIMEOUT", "0.5")],
        },
        &["--shutdown", &keel_shutdown()],
    );
    let mut daemon = 0;
    wait_for("the daemon to run", 10 * SECOND, || {
        daemon = fs::read_to_string(keel.path("daemon.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        daemon != 0
    });
    keel.ctl_ok(&["poweroff"]);
    let status = keel.wait_end(30 * SECOND);
    let console = keel.console();
    assert!(ended_by(status, libc::SIGINT), "{status:?}\n{console}");
    let killed = format!(
        "keel-shutdown: still running 0.5s after SIGTERM, sent SIGKILL: {daemon} (sleep)\n"
    );
    assert!(console.contains(&killed), "{killed}\n{console}");
}

#[test]
fn the_wait_ends_as_soon_as_every_process_has_ended_and_reboot_ends_the_namespace_so() {
    let mut keel = start(
        &[("web", "start on startup\nexec sleep 1000\n")],
        &keel_shutdown(),
        &[("KEEL_SHUTDOWN_TIMEOUT", "60")],
    );
    stray(&keel, "while :; do sleep 1; done");
    keel.ctl_ok(&["reboot"]);
    // Well within the 60 s bound: the wait is for the processes, not the bound.
    let status = keel.wait_end(30 * SECOND);
    let console = keel.console();
    assert!(ended_by(status, libc::SIGHUP), "{status:?}\n{console}");
    assert!(console.contains("keel-shutdown: rebooting as the init of a PID namespace"));
    assert!(
        console.contains("keel-shutdown: every process ended after SIGTERM, in "),
        "{console}"
    );
    assert!(!console.contains("SIGKILL"), "{console}");
}

#[test]
fn without_keel_shutdown_keel_init_makes_the_power_action_itself_and_says_so() {
    let missing = Scratch::new("no-shutdown");
    let path = missing.0.join("keel-shutdown");
    let mut keel = start(&[], &path.display().to_string(), &[]);
    keel.ctl_ok(&["poweroff"]);
    let status = keel.wait_end(15 * SECOND);
    let console = keel.console();
    assert!(ended_by(status, libc::SIGINT), "{status:?}\n{console}");
    let said = format!(
        "keel-init: cannot exec {}: errno 2; no process is ended and nothing unmounted, only synced before the power off\n",
        path.display()
    );
    assert!(console.contains(&said), "{said}\n{console}");
}

#[test]
fn the_shutdown_program_replaces_pid_1_with_the_action_once_job_logs_are_closed() {
    // A stand-in for keel-shutdown: it records how it was run and which files
    // of the log directory any process of the namespace still holds open.
    let scratch = Scratch::new("shutdown-standin");
    let standin = scratch.0.join("standin");
    let report = scratch.0.join("report");
    fs::write(
        &standin,
        format!(
            "#!/bin/sh\necho \"pid $$ action $1\" > {r}\nls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -c 'talker[.]log' >> {r}\n",
            r = report.display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &standin,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let job =
        "start on startup\nconsole log\nscript\n  echo hello\n  exec sleep 1000\nend script\n";
    let mut keel = Keel::launch_init(
        Setup {
            jobs: &[("talker", job)],
            supervisor: None,
            env: &[],
        },
        &["--shutdown", &standin.display().to_string()],
    );
    let logdir = keel.path("log");
    wait_for("the job's log", 10 * SECOND, || {
        keel_tests::log_text(&logdir.join("talker.log")) == "hello\n"
    });
    // The supervisor holds the log file open while the job runs...
    let supervisor = keel.supervisor_pid().expect("supervisor");
    let holds_log = || {
        fs::read_dir(format!("/proc/{supervisor}/fd"))
            .into_iter()
            .flatten()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .any(|target| target.starts_with(&logdir))
    };
    assert!(holds_log(), "the supervisor keeps talker.log open");
    // ...and none once the power action is made (the stand-in reads /proc then).
    keel.ctl_ok(&["poweroff"]);
    keel.wait_end(15 * SECOND);
    let report = fs::read_to_string(&report).unwrap_or_default();
    assert_eq!(report, "pid 1 action poweroff\n0\n", "{}", keel.console());
}

#[test]
fn pid_1_of_a_namespace_is_not_the_machine_s_init_whatever_its_environment_says() {
    let keel = start(&[], &keel_shutdown(), &[("KEEL_MACHINE", "1")]);
    let console = keel.console();
    assert!(console.contains("keel-init: started at "), "{console}");
    assert!(!console.contains("the machine's init"), "{console}");
    let supervisor = keel.supervisor_pid().expect("supervisor");
    let env = proc_environ(supervisor);
    assert!(env.iter().any(|e| e == "KEEL_INIT_FD=3"), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("KEEL_MACHINE=")),
        "{env:?}"
    );
}
