//! Job cgroups on this host's cgroup2 (`/sys/fs/cgroup/unified`, no memory, pids or
//! cpu controllers: limits are tested in the QEMU guest, `qemu/tests/hardening`).
//! Each instance is born in its own cgroup under the test's `--cgroup-root`; a
//! daemon that left its main process's group and session is killed once main has
//! ended (so nothing escapes a stop); the cgroup is removed after the stop; a
//! supervisor killed in between finds all of it again.

use keel_tests::{Keel, gone, proc_cgroup, wait_for};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// keel's cgroup subtree of this test, as a path relative to the cgroup2 root (as
/// /proc/PID/cgroup shows it).
fn relative(keel: &Keel, path: &Path) -> String {
    let root = keel
        .cgroup
        .as_ref()
        .expect("a cgroup2 hierarchy on this host");
    let mount = root
        .ancestors()
        .find(|a| a.parent().is_none_or(|p| !p.join("cgroup.procs").exists()))
        .unwrap();
    format!("/{}", path.strip_prefix(mount).unwrap().display())
}

/// The host pid of the daemon `sleep 2000` a job started.
fn daemon(keel: &Keel) -> Option<i32> {
    keel.processes().into_iter().find(|&p| {
        std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x002000\x00")
            && !gone(p)
    })
}

fn procs(path: &Path) -> Vec<i32> {
    keel_supervisor::cgroup::procs(path).unwrap_or_default()
}

fn root(keel: &Keel) -> PathBuf {
    keel.cgroup
        .clone()
        .expect("a cgroup2 hierarchy on this host")
}

#[test]
fn each_instance_is_born_in_its_own_cgroup() {
    let keel = Keel::start(&[
        ("plain", "exec sleep 1000\n"),
        ("net/web", "instance $PORT\nexec sleep 1000\n"),
    ]);
    let plain = keel.start_main(&["plain"]);
    let a = keel.start_main(&["net/web", "PORT=80"]);
    let b = keel.start_main(&["net/web", "PORT=8.8"]);
    let r = root(&keel);
    assert_eq!(proc_cgroup(plain), relative(&keel, &r.join("plain")));
    // `/` and `.` escaped: one directory per name, never a control file's name.
    assert_eq!(proc_cgroup(a), relative(&keel, &r.join("net%2Fweb/80")));
    assert_eq!(proc_cgroup(b), relative(&keel, &r.join("net%2Fweb/8%2E8")));
    assert_eq!(
        procs(&r.join("net%2Fweb/80")),
        [a],
        "cgroup.procs lists it alone"
    );
}

/// A main that starts a daemon in its own session (out of reach of the kill
/// signal to main's process group), then runs on.
const FORKS_A_DAEMON: &str = "script
  setsid sleep 2000 &
  exec sleep 1000
end script
";

/// Starts `job` (one of FORKS_A_DAEMON's kind) and waits until main and its
/// daemon are in the job's cgroup: (main, daemon, cgroup).
fn start_with_daemon(keel: &Keel, job: &str) -> (i32, i32, PathBuf) {
    let main = keel.start_main(&[job]);
    let cg = root(keel).join(job);
    wait_for("the daemon in the job's cgroup", 5 * SECOND, || {
        procs(&cg).len() == 2 && daemon(keel).is_some()
    });
    (main, daemon(keel).unwrap(), cg)
}

#[test]
fn stop_kills_what_left_the_main_process_and_removes_the_cgroup() {
    let keel = Keel::start(&[("d", FORKS_A_DAEMON)]);
    let (main, daemon, cg) = start_with_daemon(&keel, "d");
    assert_ne!(
        keel_tests::proc_stat(daemon)[3],
        main.to_string(),
        "its own session"
    );
    keel.ctl_ok(&["stop", "d"]);
    wait_for("the daemon to be killed", 5 * SECOND, || gone(daemon));
    assert!(gone(main));
    wait_for("the job's cgroup to be removed", 5 * SECOND, || {
        !cg.exists()
    });
    assert!(
        keel.console()
            .contains("d: killed 1 process(es) left in its cgroup"),
        "{}",
        keel.console()
    );
}

#[test]
fn post_stop_runs_in_the_cgroup_after_the_remnants_are_killed() {
    // Killing what main left must not kill post-stop, born in the same cgroup.
    let job = format!(
        "{FORKS_A_DAEMON}post-stop script\n  cat /proc/self/cgroup > $DIR/post-stop-cgroup\nend script\n"
    );
    let keel = Keel::start(&[("d", &job)]);
    let (_, _, cg) = start_with_daemon(&keel, "d");
    keel.ctl_ok(&["stop", "d"]);
    let seen = std::fs::read_to_string(keel.path("post-stop-cgroup")).unwrap();
    assert!(
        seen.contains(&format!("0::{}", relative(&keel, &cg))),
        "{seen}"
    );
    assert_eq!(keel.ctl_ok(&["status", "d"]), "d stop/waiting\n");
    let json = keel.ctl_ok(&["--json", "status", "d"]);
    assert!(json.contains("\"failure\":null"), "{json}");
}

#[test]
fn a_restarted_supervisor_keeps_the_cgroups_and_still_cleans_up() {
    let keel = Keel::start(&[("d", FORKS_A_DAEMON)]);
    let (main, _, cg) = start_with_daemon(&keel, "d");
    let before = procs(&cg);
    let old = keel.supervisor_pid().unwrap();
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("a new supervisor to answer", 10 * SECOND, || {
        keel.supervisor_pid().is_some_and(|p| p != old) && keel.ctl(&["version"]).status.success()
    });
    assert_eq!(procs(&cg), before, "the job runs on in its cgroup");
    // A new instance goes into the same subtree the first supervisor chose.
    keel.ctl_ok(&["stop", "d"]);
    wait_for("everything of the job to be gone", 5 * SECOND, || {
        gone(main) && !cg.exists()
    });
    let again = keel.start_main(&["d"]);
    assert_eq!(proc_cgroup(again), relative(&keel, &cg));
}

#[test]
fn a_respawned_main_is_born_in_the_same_cgroup_after_the_remnants_die() {
    let keel = Keel::start(&[(
        "r",
        "respawn\nscript\n  setsid sleep 2000 &\n  exec sleep 1000\nend script\n",
    )]);
    let (first, old_daemon, cg) = start_with_daemon(&keel, "r");
    unsafe { libc::kill(first, libc::SIGKILL) };
    wait_for("the old daemon to be killed", 5 * SECOND, || {
        gone(old_daemon)
    });
    let mut second = 0;
    wait_for(
        "a respawned main and its own daemon only",
        5 * SECOND,
        || {
            let status = keel.ctl_ok(&["status", "r"]);
            second = keel_tests::status_pid(&status)
                .and_then(|p| keel.host_pid(p))
                .unwrap_or(0);
            second != 0 && second != first && procs(&cg).len() == 2
        },
    );
    assert_eq!(proc_cgroup(second), relative(&keel, &cg));
}
