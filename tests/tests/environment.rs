//! Each process-setup stanza, read back from the running job's /proc entries:
//! umask, nice, oom score, every `limit` resource, chroot, chdir, setuid/setgid
//! with supplementary groups and login variables, capabilities (with and without
//! setuid), no new privileges, the session and process group, fds 0–2 and no
//! other, a clean environment. Then a failing setup of every kind: the start fails
//! with the reason in `initctl start`, `status --json` and the log, and another job
//! runs on untouched.
//!
//! This host lacks CAP_SYS_RESOURCE: limits are only lowered and oom scores only
//! raised here; the QEMU scenario `qemu/tests/hardening` does the rest.

use keel_tests::{Keel, proc_environ, proc_stat, proc_status, wait_for};
use std::fs;
use std::process::Command;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// Whether /proc/PID/WHAT (`root`, `cwd`) is the directory at `dir`: compared by
/// device and inode, since the job runs in the test namespace's mount namespace.
fn same_dir(pid: i32, what: &str, dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Ok(b)) = (
        fs::metadata(format!("/proc/{pid}/{what}")),
        fs::metadata(dir),
    ) else {
        return false;
    };
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

fn link(pid: i32, what: &str) -> String {
    fs::read_link(format!("/proc/{pid}/{what}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The open fds of a process and what each points to.
fn fds(pid: i32) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .map(|fd: i32| (fd, link(pid, &format!("fd/{fd}"))))
        .collect();
    out.sort();
    out
}

#[test]
fn umask_nice_and_oom_score_are_applied() {
    let keel = Keel::start(&[
        (
            "tuned",
            "umask 027\nnice 7\noom score 300\nexec sleep 1000\n",
        ),
        ("plain", "exec sleep 1000\n"),
    ]);
    let pid = keel.start_main(&["tuned"]);
    assert_eq!(proc_status(pid, "Umask"), "0027");
    assert_eq!(proc_stat(pid)[16], "7", "nice is field 19 of stat");
    let adj = fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(adj.trim(), "300");
    // Upstart's defaults otherwise: umask 022, the supervisor's nice and score.
    let plain = keel.start_main(&["plain"]);
    assert_eq!(proc_status(plain, "Umask"), "0022");
    assert_eq!(proc_stat(plain)[16], "0");
}

/// (stanza resource, /proc/PID/limits row, soft, hard): every resource Upstart's
/// `limit` knows, each lowered below this host's hard limits.
const LIMITS: &[(&str, &str, &str, &str)] = &[
    ("as", "Max address space", "3000000000", "4000000000"),
    ("core", "Max core file size", "0", "1024"),
    ("cpu", "Max cpu time", "1000", "2000"),
    ("data", "Max data size", "3000000000", "4000000000"),
    ("fsize", "Max file size", "100000000", "200000000"),
    ("memlock", "Max locked memory", "65536", "131072"),
    ("msgqueue", "Max msgqueue size", "8192", "16384"),
    ("nice", "Max nice priority", "0", "0"),
    ("nofile", "Max open files", "64", "128"),
    ("nproc", "Max processes", "1000", "2000"),
    ("rss", "Max resident set", "100000000", "200000000"),
    ("rtprio", "Max realtime priority", "0", "0"),
    ("rttime", "Max realtime timeout", "100000", "200000"),
    ("sigpending", "Max pending signals", "100", "200"),
    ("stack", "Max stack size", "4000000", "8000000"),
];

#[test]
fn every_limit_resource_is_set() {
    let mut job = String::new();
    for (name, _, soft, hard) in LIMITS {
        job.push_str(&format!("limit {name} {soft} {hard}\n"));
    }
    job.push_str("exec sleep 1000\n");
    let keel = Keel::start(&[("limited", &job)]);
    let pid = keel.start_main(&["limited"]);
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    for (name, row, soft, hard) in LIMITS {
        let line = limits
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row} in\n{limits}"));
        let values: Vec<&str> = line[row.len()..].split_whitespace().collect();
        assert_eq!(
            (values[0], values[1]),
            (*soft, *hard),
            "limit {name}: {line}"
        );
    }
}

#[test]
fn chroot_and_chdir_are_applied() {
    let keel = Keel::start(&[
        (
            "jailed",
            "chroot $DIR/root\nchdir /work\nexec /busybox sleep 1000\n",
        ),
        ("moved", "chdir /tmp\nexec sleep 1000\n"),
    ]);
    let root = keel.path("root");
    fs::create_dir_all(root.join("work")).unwrap();
    fs::copy("/bin/busybox", root.join("busybox")).expect("busybox-static at /bin/busybox");
    let pid = keel.start_main(&["jailed"]);
    assert!(same_dir(pid, "root", &root), "root of {pid}");
    assert!(same_dir(pid, "cwd", &root.join("work")), "cwd of {pid}");
    let moved = keel.start_main(&["moved"]);
    assert!(same_dir(moved, "cwd", std::path::Path::new("/tmp")));
    assert!(same_dir(moved, "root", std::path::Path::new("/")));
}

/// A user and a group made for one test (so that the user has a supplementary
/// group to be seen), removed again on drop.
struct TestUser {
    name: String,
    group: String,
}

impl TestUser {
    fn new() -> TestUser {
        let id = std::process::id();
        let (name, group) = (format!("keelu{id}"), format!("keelg{id}"));
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("user tools");
            assert!(out.status.success(), "{cmd:?}: {out:?}");
        };
        run(Command::new("groupadd").arg(&group));
        let user = TestUser { name, group };
        run(Command::new("useradd").args([
            "-M",
            "-N",
            "-g",
            "nogroup",
            "-G",
            &user.group,
            "-d",
            "/nonexistent-keel",
            "-s",
            "/bin/false",
            &user.name,
        ]));
        user
    }

    fn id(&self, flag: &str) -> String {
        let out = Command::new("id")
            .args([flag, &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

#[test]
fn setuid_and_setgid_set_ids_groups_and_login_variables() {
    let user = TestUser::new();
    let keel = Keel::start(&[
        (
            "asuser",
            &format!("setuid {}\nexec sleep 1000\n", user.name),
        ),
        (
            "asgroup",
            &format!("setuid {}\nsetgid daemon\nexec sleep 1000\n", user.name),
        ),
        ("grouponly", "setgid daemon\nexec sleep 1000\n"),
        ("root", "exec sleep 1000\n"),
    ]);
    let (uid, gid) = (user.id("-u"), user.id("-g"));
    let extra = fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user.group).then(|| f[2].to_string())
        })
        .unwrap();

    let pid = keel.start_main(&["asuser"]);
    assert_eq!(
        proc_status(pid, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        proc_status(pid, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    let mut groups: Vec<String> = proc_status(pid, "Groups")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    groups.sort();
    let mut want = vec![gid.clone(), extra.clone()];
    want.sort();
    assert_eq!(groups, want, "the user's supplementary groups");
    let env = proc_environ(pid);
    for var in [
        "HOME=/nonexistent-keel".to_string(),
        format!("USER={}", user.name),
        format!("LOGNAME={}", user.name),
        "SHELL=/bin/false".to_string(),
    ] {
        assert!(env.contains(&var), "{var} in {env:?}");
    }

    // setgid picks the primary group; the user's groups stay.
    let pid = keel.start_main(&["asgroup"]);
    assert_eq!(proc_status(pid, "Gid"), "1\t1\t1\t1");
    let groups = proc_status(pid, "Groups");
    assert!(groups.split_whitespace().any(|g| g == extra), "{groups}");

    // setgid alone: the group changes, the uid does not, no login variables.
    let pid = keel.start_main(&["grouponly"]);
    assert_eq!(proc_status(pid, "Uid"), "0\t0\t0\t0");
    assert_eq!(proc_status(pid, "Gid"), "1\t1\t1\t1");
    assert!(!proc_environ(pid).iter().any(|v| v.starts_with("HOME=")));
    let root = keel.start_main(&["root"]);
    assert!(!proc_environ(root).iter().any(|v| v.starts_with("USER=")));
}

#[test]
fn scripts_run_as_the_setuid_user_too() {
    // The script reaches its interpreter as /proc/self/fd/9 (a memfd the
    // supervisor made as root): readable after the uid change. Python as
    // /usr/bin/python3: the python3 on PATH here is a shim in root's home.
    let keel = Keel::start(&[
        (
            "shell",
            "setuid nobody\nscript\n  id -u\n  exec sleep 1000\nend script\n",
        ),
        (
            "python",
            "setuid nobody\nscript /usr/bin/python3\nimport os, time\nprint(os.getuid(), flush=True)\ntime.sleep(1000)\nend script\n",
        ),
    ]);
    let pid = keel.start_main(&["shell"]);
    assert_eq!(proc_status(pid, "Uid"), "65534\t65534\t65534\t65534");
    wait_for("the script's output in its log", 5 * SECOND, || {
        keel_tests::comm(pid).as_deref() == Some("sleep")
            && keel_tests::log_text(&keel.path("log/shell.log")) == "65534\n"
    });
    let pid = keel.start_main(&["python"]);
    assert_eq!(proc_status(pid, "Uid"), "65534\t65534\t65534\t65534");
    wait_for("python's output in its log", 5 * SECOND, || {
        keel_tests::log_text(&keel.path("log/python.log")) == "65534\n"
    });
}

/// A capability set as /proc/PID/status prints it.
fn caps(bits: &[u32]) -> String {
    format!("{:016x}", bits.iter().fold(0u64, |m, b| m | 1 << b))
}

#[test]
fn capabilities_reduce_the_bounding_set_and_survive_setuid_as_ambient() {
    let keel = Keel::start(&[
        (
            "rootcaps",
            "capabilities net_bind_service CAP_KILL\nexec sleep 1000\n",
        ),
        (
            "usercaps",
            "setuid nobody\ncapabilities net_bind_service\nexec sleep 1000\n",
        ),
        ("nocaps", "capabilities none\nexec sleep 1000\n"),
        ("user", "setuid nobody\nexec sleep 1000\n"),
    ]);
    let (net_bind_service, kill) = (10, 5);

    let pid = keel.start_main(&["rootcaps"]);
    let both = caps(&[net_bind_service, kill]);
    assert_eq!(proc_status(pid, "CapBnd"), both);
    assert_eq!(proc_status(pid, "CapEff"), both);
    assert_eq!(proc_status(pid, "CapPrm"), both);
    assert_eq!(proc_status(pid, "CapAmb"), caps(&[]));

    let pid = keel.start_main(&["usercaps"]);
    assert_eq!(proc_status(pid, "Uid"), "65534\t65534\t65534\t65534");
    let one = caps(&[net_bind_service]);
    for set in ["CapBnd", "CapAmb", "CapEff", "CapPrm"] {
        assert_eq!(proc_status(pid, set), one, "{set}");
    }

    let pid = keel.start_main(&["nocaps"]);
    assert_eq!(proc_status(pid, "CapBnd"), caps(&[]));
    assert_eq!(proc_status(pid, "CapEff"), caps(&[]));

    // Without the stanza a setuid job holds nothing, its bounding set untouched.
    let pid = keel.start_main(&["user"]);
    assert_eq!(proc_status(pid, "CapEff"), caps(&[]));
    assert_ne!(proc_status(pid, "CapBnd"), caps(&[]));
}

#[test]
fn no_new_privileges_is_set() {
    let keel = Keel::start(&[
        ("nnp", "no new privileges\nexec sleep 1000\n"),
        ("plain", "exec sleep 1000\n"),
    ]);
    let pid = keel.start_main(&["nnp"]);
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    let plain = keel.start_main(&["plain"]);
    assert_eq!(proc_status(plain, "NoNewPrivs"), "0");
}

#[test]
fn a_job_has_its_own_session_only_stdio_and_a_clean_environment() {
    let keel = Keel::start_with(keel_tests::Setup {
        jobs: &[
            ("logged", "env MINE=1\nexec sleep 1000\n"),
            ("quiet", "console none\nexec sleep 1000\n"),
        ],
        supervisor: None,
        env: &[("KEEL_TEST_SUPERVISOR_ONLY", "1")],
    });
    let pid = keel.start_main(&["logged"]);
    // Its own process group and session (stat shows them as this namespace's pids).
    let stat = proc_stat(pid);
    let own = pid.to_string();
    assert_eq!(
        (stat[2].as_str(), stat[3].as_str()),
        (own.as_str(), own.as_str())
    );
    // `sleep` may still be starting: the dynamic loader opens each library it maps
    // (fd 3) and closes it again. Wait for that, not for a fixed time.
    wait_for(
        "the dynamic loader to close the libraries",
        5 * SECOND,
        || fds(pid).iter().all(|(_, target)| !target.contains(".so")),
    );
    let open = fds(pid);
    assert_eq!(
        open.iter().map(|(fd, _)| *fd).collect::<Vec<_>>(),
        [0, 1, 2],
        "{open:?}"
    );
    assert_eq!(open[0].1, "/dev/null");
    // `console log`: stdout and stderr are the instance's log pipe.
    assert!(open[1].1.starts_with("pipe:"), "{open:?}");
    assert_eq!(open[1].1, open[2].1);
    let mut env = proc_environ(pid);
    env.sort();
    // KEEL_SOCKET: the test's supervisor listens on a socket of its own.
    let socket = format!("KEEL_SOCKET={}", keel.socket().display());
    assert_eq!(
        env,
        [
            &socket,
            "MINE=1",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM=linux",
            "UPSTART_INSTANCE=",
            "UPSTART_JOB=logged",
        ]
    );

    let pid = keel.start_main(&["quiet"]);
    let open = fds(pid);
    assert_eq!(open.len(), 3, "{open:?}");
    assert!(open.iter().all(|(_, to)| to == "/dev/null"), "{open:?}");
}

/// Starts `job`, which must fail as Upstart's does: `initctl start` exits 1 with
/// `Job failed to start` and the reason, whether the supervisor finds it before
/// the clone or the child reports its failed step (its error pipe's record, then
/// EOF, must never read as an exec). The failure reason `status --json` gives.
fn failed_start(keel: &Keel, job: &str, reason: &str) -> String {
    let out = keel.ctl(&["start", job]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{job}: {out:?}");
    assert!(err.contains("Job failed to start"), "{job}: {err:?}");
    assert!(err.contains(reason), "{job}: {err:?}");
    let mut json = String::new();
    wait_for(&format!("{job} to stop, failed"), 5 * SECOND, || {
        json = keel.ctl_ok(&["--json", "status", job]);
        json.contains("\"state\":\"waiting\"") && json.contains("\"failure\":\"")
    });
    json
}

#[test]
fn a_failing_setup_fails_that_start_with_its_reason_and_nothing_else() {
    let jobs: &[(&str, &str, &str)] = &[
        (
            "nouser",
            "setuid no-such-user-keel\nexec sleep 1000\n",
            "main process: setuid no-such-user-keel: no such user",
        ),
        (
            "nogroup",
            "setgid no-such-group-keel\nexec sleep 1000\n",
            "main process: setgid no-such-group-keel: no such group",
        ),
        (
            "nochroot",
            "chroot /no/such/root\nexec sleep 1000\n",
            "main process: chroot /no/such/root: No such file or directory",
        ),
        (
            "nochdir",
            "chdir /no/such/dir\nexec sleep 1000\n",
            "main process: chdir: No such file or directory",
        ),
        (
            "hardlimit",
            "limit nice 0 40\nexec sleep 1000\n",
            "main process: setrlimit nice: Operation not permitted",
        ),
        (
            "negativeoom",
            "oom score -500\nexec sleep 1000\n",
            "main process: oom_score_adj: Permission denied",
        ),
        (
            "badcgroup",
            "cgroup memory memory.bogus 1\nexec sleep 1000\n",
            "main process: cgroup memory.bogus: unknown or without a cgroup v2 equivalent",
        ),
        (
            "nocontroller",
            "cgroup pids pids.max 10\nexec sleep 1000\n",
            "main process: cgroup pids.max: the pids controller is not available",
        ),
        (
            "noexec",
            "exec /no/such/program\n",
            "main process: exec: No such file or directory",
        ),
        (
            "prestart",
            "setuid no-such-user-keel\npre-start exec true\nexec sleep 1000\n",
            "pre-start process: setuid no-such-user-keel: no such user",
        ),
    ];
    let mut all: Vec<(&str, &str)> = jobs.iter().map(|(n, t, _)| (*n, *t)).collect();
    all.push(("bystander", "exec sleep 1000\n"));
    let keel = Keel::start(&all);
    let bystander = keel.ctl_ok(&["start", "bystander"]);
    // Where the pids controller is delegated (not on this host, but in the VM),
    // that job starts.
    let pids = keel.cgroup.as_ref().is_some_and(|c| {
        keel_supervisor::cgroup::controllers(c)
            .iter()
            .any(|c| c == "pids")
    });
    for (job, _, reason) in jobs
        .iter()
        .filter(|(j, _, _)| !(pids && *j == "nocontroller"))
    {
        let json = failed_start(&keel, job, reason);
        assert!(json.contains(reason), "{job}: {json}");
        assert!(json.contains("\"goal\":\"stop\""), "{job}: {json}");
        wait_for(&format!("{job}'s reason in the log"), 5 * SECOND, || {
            keel.console().contains(reason)
        });
    }
    assert_eq!(keel.ctl_ok(&["status", "bystander"]), bystander);
}

#[test]
fn a_start_that_cannot_exec_fails_every_time() {
    let keel = Keel::start(&[("ghost", "exec /nonexistent/bin/ghostd\n")]);
    for _ in 0..5 {
        failed_start(
            &keel,
            "ghost",
            "main process: exec: No such file or directory",
        );
    }
}
