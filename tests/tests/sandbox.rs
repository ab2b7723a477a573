//! The sandboxing stanzas, from real processes: each job probes its own view
//! (writes refused or allowed, hidden paths empty, its /dev and /tmp) and prints
//! what it found to its log; the test also reads its mounts back from
//! /proc/PID/mountinfo and checks that nothing of it reached the host. Then bad
//! settings fail the start with their reason, and another job runs on.

use keel_tests::{Keel, wait_for};
use std::fs;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// The job's log once it holds `done`.
fn probed(keel: &Keel, job: &str) -> String {
    let path = keel.path(&format!("log/{job}.log"));
    let mut text = String::new();
    wait_for(&format!("{job} to probe"), 10 * SECOND, || {
        text = keel_tests::log_text(&path);
        text.contains("done")
    });
    text
}

/// (mount point, mount options) of each line of /proc/PID/mountinfo.
fn mounts(pid: &str) -> Vec<(String, String)> {
    fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f.get(4)?.to_string(), f.get(5)?.to_string()))
        })
        .collect()
}

/// The options of the last (topmost) mount at `point`.
fn options(mounts: &[(String, String)], point: &str) -> Option<String> {
    mounts
        .iter()
        .rev()
        .find(|(p, _)| p == point)
        .map(|(_, o)| o.clone())
}

fn read_only(opts: &Option<String>) -> bool {
    opts.as_deref()
        .is_some_and(|o| o.split(',').any(|w| w == "ro"))
}

/// The job's main pid, from `initctl status` (the job prints it too).
fn pid_line(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("pid "))
        .expect("the job prints its pid")
        .to_string()
}

const PROBE: &str =
    "try() { if sh -c \"$2\" 2>/dev/null; then echo \"$1 yes\"; else echo \"$1 no\"; fi; }\n";

/// Each start fails, its error holding the reason.
fn refused_starts(keel: &Keel, cases: &[(&str, &str)]) {
    for (job, reason) in cases {
        let out = keel.ctl(&["start", job]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(reason),
            "{job}: {err}"
        );
    }
}

/// The host pid of a probe (its log `text`), once it has exec'd `sleep`.
fn slept(keel: &Keel, text: &str) -> i32 {
    let pid = keel
        .host_pid(pid_line(text).parse().unwrap())
        .expect("the job's host pid");
    wait_for("the probe to exec sleep", 5 * SECOND, || {
        keel_tests::comm(pid).as_deref() == Some("sleep")
    });
    pid
}

#[test]
fn paths_are_read_only_writable_and_hidden_as_asked() {
    let job = format!(
        "protect system strict\nwritable $DIR/rw\ninaccessible $DIR/hidden $DIR/secret.txt\n\
         script\n{PROBE}\
         echo pid $$\n\
         try outside 'touch $DIR/outside'\n\
         try rw 'touch $DIR/rw/file'\n\
         try etc 'touch /etc/keel-probe'\n\
         try hidden-empty '[ -z \"$(ls -A $DIR/hidden)\" ]'\n\
         try secret-empty '[ -z \"$(cat $DIR/secret.txt)\" ]'\n\
         echo done\n\
         exec sleep 1000\n\
         end script\n"
    );
    let keel = Keel::start(&[("paths", &job)]);
    fs::create_dir_all(keel.path("rw")).unwrap();
    fs::create_dir_all(keel.path("hidden")).unwrap();
    fs::write(keel.path("hidden/inner"), "inner").unwrap();
    fs::write(keel.path("secret.txt"), "secret").unwrap();
    keel.ctl_ok(&["start", "paths"]);
    let text = probed(&keel, "paths");
    for expected in [
        "outside no",
        "rw yes",
        "etc no",
        "hidden-empty yes",
        "secret-empty yes",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
    // Read back from the kernel: / read-only, the writable path not.
    let host_pid = keel
        .host_pid(pid_line(&text).parse().unwrap())
        .expect("the job's host pid");
    let m = mounts(&host_pid.to_string());
    assert!(read_only(&options(&m, "/")), "{m:?}");
    let rw = keel.path("rw").display().to_string();
    assert!(!read_only(&options(&m, &rw)), "{m:?}");
    let hidden = keel.path("hidden").display().to_string();
    assert!(read_only(&options(&m, &hidden)), "{m:?}");
    // Nothing of it outside the job: the host's files are there, its / writable.
    assert!(keel.path("rw/file").exists());
    assert!(!keel.path("outside").exists());
    assert_eq!(
        fs::read_to_string(keel.path("hidden/inner")).unwrap(),
        "inner"
    );
    assert_eq!(
        fs::read_to_string(keel.path("secret.txt")).unwrap(),
        "secret"
    );
    assert!(!std::path::Path::new("/etc/keel-probe").exists());
    assert!(!read_only(&options(&mounts("self"), "/")));
    assert!(!mounts("self").iter().any(|(p, _)| *p == hidden));
}

#[test]
fn private_tmp_devices_and_kernel_protection() {
    let job = format!(
        "private tmp\nprivate devices\nprotect kernel tunables\nprotect kernel logs\n\
         protect control groups\nprotect home\n\
         script\n{PROBE}\
         echo pid $$\n\
         try tmp-empty '[ -z \"$(ls -A /tmp)\" ]'\n\
         try tmp-writable 'echo x > /tmp/own'\n\
         echo dev $(ls /dev)\n\
         try null 'echo x > /dev/null'\n\
         try tunable 'cat /proc/sys/kernel/printk_ratelimit > /proc/sys/kernel/printk_ratelimit'\n\
         try kmsg-empty '[ -z \"$(dd if=/proc/kmsg bs=1 count=1 iflag=nonblock 2>/dev/null)\" ]'\n\
         echo done\n\
         exec sleep 1000\n\
         end script\n"
    );
    let keel = Keel::start(&[("private", &job)]);
    keel.ctl_ok(&["start", "private"]);
    let text = probed(&keel, "private");
    for expected in [
        "tmp-empty yes",
        "tmp-writable yes",
        "dev fd full null pts random shm stderr stdin stdout tty urandom zero\n",
        "null yes",
        "tunable no",
        "kmsg-empty yes",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
    let host_pid = keel
        .host_pid(pid_line(&text).parse().unwrap())
        .expect("the job's host pid");
    let m = mounts(&host_pid.to_string());
    for ro in ["/proc/sys", "/sys", "/proc/kmsg"] {
        assert!(read_only(&options(&m, ro)), "{ro} in {m:?}");
    }
    assert!(
        options(&m, "/tmp").is_some_and(|o| o.contains("rw")),
        "{m:?}"
    );
    // The job's /tmp was its own: the host's /tmp has no `own`, and still
    // holds the test's directory.
    assert!(!std::path::Path::new("/tmp/own").exists());
    assert!(keel.path("log").exists());
}

#[test]
fn bad_settings_fail_the_start_with_their_reason_and_nothing_else() {
    let keel = Keel::start(&[
        ("missing", "read-only /no/such/path\nexec sleep 1000\n"),
        ("bystander", "protect system\nexec sleep 1000\n"),
    ]);
    let out = keel.ctl(&["start", "missing"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("main process: read-only /no/such/path: No such file or directory"),
        "{err}"
    );
    let status = keel.ctl_ok(&["status", "bystander"]);
    assert!(status.contains("stop/waiting"), "{status}");
    let started = keel.ctl_ok(&["start", "bystander"]);
    assert!(started.contains("start/running"), "{started}");
}

#[test]
fn denied_system_calls_fail_with_eperm_or_kill() {
    let keel = Keel::start(&[
        (
            "filtered",
            "syscalls deny uname @mount\nscript\n\
             echo pid $$\n\
             if uname 2>/dev/null; then echo uname allowed; else echo uname refused; fi\n\
             echo done\n\
             exec sleep 1000\n\
             end script\n",
        ),
        (
            "killed",
            "syscalls deny uname\nsyscall action kill\nexec uname\n",
        ),
        ("noexec", "syscalls deny execve\nexec sleep 1000\n"),
        ("unknown", "syscalls deny no_such_call\nexec sleep 1000\n"),
    ]);
    keel.ctl_ok(&["start", "filtered"]);
    let text = probed(&keel, "filtered");
    assert!(text.contains("uname refused"), "{text}");
    let host_pid = keel
        .host_pid(pid_line(&text).parse().unwrap())
        .expect("the job's host pid");
    assert_eq!(keel_tests::proc_status(host_pid, "Seccomp"), "2");
    assert_eq!(keel_tests::proc_status(host_pid, "NoNewPrivs"), "1");
    // The supervisor itself is not filtered.
    let sup = keel.supervisor_pid().expect("supervisor");
    assert_eq!(keel_tests::proc_status(sup, "Seccomp"), "0");

    // `syscall action kill`: the main process dies of SIGSYS.
    let out = keel.ctl(&["start", "killed"]);
    assert!(out.status.success(), "{out:?}");
    let mut json = String::new();
    wait_for("killed to end", 5 * SECOND, || {
        json = keel.ctl_ok(&["--json", "status", "killed"]);
        json.contains("\"state\":\"waiting\"")
    });
    assert!(json.contains("terminated with signal SYS"), "{json}");

    refused_starts(
        &keel,
        &[
            (
                "noexec",
                "syscalls deny: execve denied: the filter is installed before the job's exec, which it would refuse",
            ),
            ("unknown", "syscalls deny: unknown system call no_such_call"),
        ],
    );
}

/// Runs ordinary programs, then tries `mount`, which `@system-service` leaves
/// out, on a path that does not exist: `ENOENT` unfiltered, `EPERM` filtered.
const ALLOW_LIST_PROBE: &str = r#"script /usr/bin/python3
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
print("pid", os.getpid(), flush=True)
out = subprocess.run(["/bin/sh", "-c", "ls / >/dev/null && date +%s && echo ran"], capture_output=True, text=True)
print("programs", out.stdout.split()[-1:], flush=True)
r = libc.mount(b"none", b"/no/such/keel/path", b"tmpfs", 0, None)
print("mount", "ok" if r == 0 else "refused %d" % ctypes.get_errno(), flush=True)
print("done", flush=True)
os.execv("/bin/sleep", ["sleep", "1000"])
end script
"#;

#[test]
fn an_allow_list_runs_ordinary_programs_and_refuses_the_rest() {
    let allowed = format!("syscalls allow @system-service\n{ALLOW_LIST_PROBE}");
    let keel = Keel::start(&[
        ("allowed", &allowed),
        ("free", ALLOW_LIST_PROBE),
        ("noexit", "syscalls allow execve write\nexec sleep 1000\n"),
        (
            "unknown",
            "syscalls allow @system-service frobnicate\nexec sleep 1000\n",
        ),
    ]);
    keel.ctl_ok(&["start", "allowed"]);
    keel.ctl_ok(&["start", "free"]);
    let text = probed(&keel, "allowed");
    assert!(text.contains("programs ['ran']"), "{text}");
    assert!(
        text.contains(&format!("mount refused {}", libc::EPERM)),
        "{text}"
    );
    let pid = slept(&keel, &text);
    assert_eq!(keel_tests::proc_status(pid, "Seccomp"), "2");
    assert_eq!(keel_tests::proc_status(pid, "Seccomp_filters"), "1");
    let free = probed(&keel, "free");
    assert!(free.contains("programs ['ran']"), "{free}");
    assert!(
        free.contains(&format!("mount refused {}", libc::ENOENT)),
        "{free}"
    );
    refused_starts(
        &keel,
        &[
            (
                "noexit",
                "syscalls allow: exit_group not allowed: no process could end (nor report a failed exec)",
            ),
            ("unknown", "syscalls allow: unknown system call frobnicate"),
        ],
    );
    let scores = keel.ctl_ok(&["security"]);
    // Hand-computed (core/src/job/exposure.rs): an allow list: no new
    // privileges and the list (−10), 62 of 72.
    assert!(scores.contains("allowed 8.6 unsafe\n"), "{scores}");
}

/// Tries each restricted action and prints `NAME ok` or `NAME refused ERRNO`.
const RESTRICTION_PROBE: &str = r#"script /usr/bin/python3
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
def report(name, ret):
    print(name, "ok" if ret == 0 else "refused %d" % ctypes.get_errno(), flush=True)
def try_socket(family):
    try:
        socket.socket(family).close()
        print("socket", family.name, "ok", flush=True)
    except OSError as e:
        print("socket", family.name, "refused", e.errno, flush=True)
print("pid", os.getpid(), flush=True)
try_socket(socket.AF_UNIX)
try_socket(socket.AF_INET)
page = libc.mmap(None, 4096, 3, 0x22, -1, 0)
report("mprotect-wx", libc.mprotect(ctypes.c_void_p(page), 4096, 7))
wx = libc.mmap(None, 4096, 7, 0x22, -1, 0)
print("mmap-wx", "refused" if wx in (None, 2**64 - 1) else "ok", flush=True)
report("personality", 0 if libc.personality(8) != -1 else -1)
report("unshare", libc.unshare(0x10000000))
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    print("realtime ok", flush=True)
except OSError as e:
    print("realtime refused", e.errno, flush=True)
print("done", flush=True)
os.execv("/bin/sleep", ["sleep", "1000"])
end script
"#;

#[test]
fn restrictions_refuse_families_wx_memory_personality_namespaces_and_realtime() {
    let restricted = format!(
        "address families unix\nmemory deny write execute\nlock personality\n\
         restrict namespaces\nrestrict realtime\n{RESTRICTION_PROBE}"
    );
    let keel = Keel::start(&[("restricted", &restricted), ("free", RESTRICTION_PROBE)]);
    keel.ctl_ok(&["start", "restricted"]);
    keel.ctl_ok(&["start", "free"]);
    let text = probed(&keel, "restricted");
    let eperm = libc::EPERM;
    for expected in [
        "socket AF_UNIX ok".to_string(),
        format!("socket AF_INET refused {}", libc::EAFNOSUPPORT),
        format!("mprotect-wx refused {eperm}"),
        "mmap-wx refused".into(),
        format!("personality refused {eperm}"),
        format!("unshare refused {eperm}"),
        format!("realtime refused {eperm}"),
    ] {
        assert!(text.contains(&expected), "{expected:?} in {text}");
    }
    let pid = slept(&keel, &text);
    assert_eq!(keel_tests::proc_status(pid, "Seccomp"), "2");
    assert_eq!(keel_tests::proc_status(pid, "Seccomp_filters"), "6");
    // The same probe without the stanzas: each action works.
    let free = probed(&keel, "free");
    for expected in [
        "socket AF_INET ok",
        "mprotect-wx ok",
        "mmap-wx ok",
        "personality ok",
        "unshare ok",
    ] {
        assert!(free.contains(expected), "{expected:?} in {free}");
    }
}

#[test]
fn initctl_security_scores_each_job_with_its_reasons() {
    let keel = Keel::start(&[
        ("bare", "exec sleep 1000\n"),
        (
            "hardened",
            "setuid nobody\nno new privileges\nprivate tmp\nexec sleep 1000\n",
        ),
    ]);
    // Hand-computed (core/src/job/exposure.rs): 72 of 72 points, and 54 of 72.
    assert_eq!(
        keel.ctl_ok(&["security"]),
        "bare 10.0 unsafe\nhardened 7.5 exposed\n"
    );
    let detail = keel.ctl_ok(&["security", "hardened"]);
    for line in [
        "+ setuid\n",
        "+ no new privileges\n",
        "+ private tmp\n",
        "- capabilities: keeps every capability (10 of 10)\n",
        "- protect system: may write to /usr, /boot and /etc (5 of 5)\n",
        "hardened 7.5 exposed\n",
    ] {
        assert!(detail.contains(line), "{line:?} in {detail}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&keel.ctl_ok(&["--json", "security", "hardened"])).unwrap();
    assert_eq!(json[0]["job"], "hardened");
    assert_eq!(json[0]["score"], 7.5);
    assert_eq!(json[0]["rating"], "exposed");
    assert_eq!(json[0]["findings"][0]["setting"], "setuid");
    assert_eq!(json[0]["findings"][0]["points"], 0);
    let out = keel.ctl(&["security", "nosuchjob"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unknown job: nosuchjob"));
}
