//! The integration-test harness: keel-init as PID 1 of a fresh PID namespace
//! (`unshare --pid --fork --mount-proc --kill-child`), the real supervisor, real
//! jobs, driven by the real initctl.
//!
//! Every test gets its own directory (confdir, socket, logdir, marker files) and its
//! own cgroup2 subtree for the jobs' cgroups (`--cgroup-root`, under the test
//! process's own cgroup2 cgroup: on this host `/sys/fs/cgroup/unified/…`;
//! `KEEL_TEST_CGROUPS=none` gives `--cgroup-root none` instead, for benchmarks). The
//! namespace is torn down on drop by SIGKILL to its keel-init (by pid, never by
//! name), which takes every process in it along; then whatever is left in the
//! cgroup subtree is killed and the subtree removed. Waits are on conditions with
//! deadlines, never bare sleeps.
//!
//! The binaries come from the target directory these tests were built into, so
//! build them first: `cargo build && cargo build -p keel-init`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding keel-init, keel-supervisor and initctl.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEEL_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for bin in ["keel-init", "keel-supervisor", "initctl"] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: build first (cargo build && cargo build -p keel-init)",
            dir.join(bin).display()
        );
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Polls `cond` until it holds or `timeout` passes; panics with `what` then.
/// A job log's text without the time keel puts at the start of each line
/// (`2026-12-07T04:40:01.123Z `).
pub fn untimed(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.as_bytes() {
            [_, _, _, _, b'-', ..] if line.len() >= 25 && &line[23..25] == "Z " => &line[25..],
            _ => line,
        })
        .collect()
}

/// A job log file's text without its times; empty if it is not there.
pub fn log_text(path: &Path) -> String {
    fs::read_to_string(path).map_or(String::new(), |t| untimed(&t))
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "keel-test-{tag}-{}-{}",
            std::process::id(),
            rand_u64()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u64::from_ne_bytes(b)
}

/// A program running as PID 1 of a fresh PID namespace (`unshare --pid --fork
/// --mount-proc --kill-child`). Dropping it SIGKILLs that PID 1 (by pid), which ends
/// every process of the namespace.
pub struct Namespace {
    unshare: Child,
    /// The namespace's PID 1 as seen from the host.
    pub init_pid: i32,
}

impl Namespace {
    /// Starts `program` with `args` (and `env` added) as PID 1 of a new namespace,
    /// its stdin /dev/null and its stdout and stderr appended to `console`; returns
    /// once that PID 1 exists.
    pub fn launch(
        program: &Path,
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
        console: &Path,
    ) -> Namespace {
        Namespace::launch_with(program, args, env, console, &[])
    }

    /// Like `launch`, with more of unshare's namespace options (`--net`).
    pub fn launch_with(
        program: &Path,
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
        console: &Path,
        namespaces: &[&str],
    ) -> Namespace {
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(console)
            .expect("console file");
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .args(namespaces)
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console file"))
            .stderr(console)
            .spawn()
            .expect("unshare");
        let unshare_pid = unshare.id() as i32;
        let mut init_pid = 0;
        wait_for(
            "the namespace's PID 1 to start",
            Duration::from_secs(5),
            || {
                init_pid = children(unshare_pid).first().copied().unwrap_or(0);
                init_pid != 0
            },
        );
        Namespace { unshare, init_pid }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.unshare.try_wait(), Ok(None))
    }

    /// Waits for the namespace to end by itself; its exit status.
    pub fn wait_end(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut status = None;
        wait_for("the namespace to end", timeout, || {
            status = self.unshare.try_wait().ok().flatten();
            status.is_some()
        });
        status.unwrap()
    }

    /// Ends the namespace now (SIGKILL to its PID 1 ends every process in it) and
    /// reaps it.
    pub fn end(&mut self) {
        if self.alive() {
            // SAFETY: kill(2) of the pid this namespace's PID 1 has; no memory involved.
            unsafe { libc::kill(self.init_pid, libc::SIGKILL) };
        }
        let _ = self.unshare.wait();
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.end();
    }
}

/// A keel-init running as PID 1 of its own namespace.
pub struct Keel {
    pub dir: Scratch,
    ns: Namespace,
    /// keel-init's pid as seen from the host.
    pub init_pid: i32,
    /// The supervisor's `--cgroup-root`, removed on drop.
    pub cgroup: Option<PathBuf>,
}

pub struct Setup<'a> {
    /// Job files (`name` → text; a name ending in `.override` is an override file).
    pub jobs: &'a [(&'a str, &'a str)],
    /// Replace the supervisor (for init tests), or run it through a wrapper; `$DIR`
    /// in the arguments is the test's directory.
    pub supervisor: Option<(PathBuf, Vec<String>)>,
    /// Extra environment for keel-init (and so the supervisor).
    pub env: &'a [(&'a str, &'a str)],
}

impl Keel {
    /// Starts keel with these job files (`name` → text) and waits until initctl answers.
    pub fn start(jobs: &[(&str, &str)]) -> Keel {
        Keel::start_with(Setup {
            jobs,
            supervisor: None,
            env: &[],
        })
    }

    /// Like `start`, with the whole setup given.
    pub fn start_with(setup: Setup<'_>) -> Keel {
        Keel::start_in(setup, &[])
    }

    /// Like `start`, with the supervisor's test fault `fault` armed
    /// (`KEEL_TEST_FAULTS`): it acts once, when it can make file `mark`
    /// (`KEEL_TEST_FAULT_MARK`), which then says it did.
    pub fn start_with_fault(jobs: &[(&str, &str)], fault: &str, mark: &Path) -> Keel {
        let mark = mark.to_str().expect("a UTF-8 mark path");
        Keel::start_with(Setup {
            jobs,
            supervisor: None,
            env: &[("KEEL_TEST_FAULTS", fault), ("KEEL_TEST_FAULT_MARK", mark)],
        })
    }

    pub fn launch(setup: Setup<'_>) -> Keel {
        Keel::launch_init(setup, &[])
    }

    /// Like `launch`, with options for keel-init itself (`--shutdown PATH`).
    pub fn launch_init(setup: Setup<'_>, init_args: &[&str]) -> Keel {
        Keel::launch_in(setup, init_args, &[])
    }

    /// Like `start_with`, in more new namespaces (unshare's `--net`…) than
    /// the PID and mount namespaces every test keel has.
    pub fn start_in(setup: Setup<'_>, namespaces: &[&str]) -> Keel {
        let keel = Keel::launch_in(setup, &[], namespaces);
        wait_for("the supervisor to answer", Duration::from_secs(10), || {
            keel.ctl(&["version"]).status.success()
        });
        keel
    }

    fn launch_in(setup: Setup<'_>, init_args: &[&str], namespaces: &[&str]) -> Keel {
        let dir = Scratch::new("ns");
        // KEEL_TEST_CGROUPS=none runs the supervisor without cgroups (to compare).
        let cgroups = std::env::var("KEEL_TEST_CGROUPS").map_or(true, |v| v != "none");
        let cgroup = keel_supervisor::cgroup::own_cgroup2()
            .filter(|_| cgroups)
            .map(|own| {
                own.join(format!(
                    "keel-test-{}",
                    dir.0.file_name().and_then(|n| n.to_str()).unwrap_or("x")
                ))
            });
        let conf = dir.0.join("conf");
        fs::create_dir_all(&conf).unwrap();
        for (name, text) in setup.jobs {
            // `NAME.override` is written as that override file, not a job file.
            let path = match name.ends_with(".override") {
                true => conf.join(name),
                false => conf.join(format!("{name}.conf")),
            };
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text.replace("$DIR", &dir.0.display().to_string())).unwrap();
        }
        let (sup, sup_args) = setup.supervisor.unwrap_or_else(|| {
            (
                bin("keel-supervisor"),
                vec![
                    "--confdir".into(),
                    conf.display().to_string(),
                    "--socket".into(),
                    dir.0.join("control").display().to_string(),
                    "--logdir".into(),
                    dir.0.join("log").display().to_string(),
                    "--cgroup-root".into(),
                    cgroup
                        .as_ref()
                        .map_or("none".to_string(), |c| c.display().to_string()),
                ],
            )
        });
        let mut args: Vec<std::ffi::OsString> = vec!["--supervisor".into(), sup.into()];
        args.extend(init_args.iter().map(|a| a.into()));
        args.push("--".into());
        args.extend(
            sup_args
                .iter()
                .map(|a| a.replace("$DIR", &dir.0.display().to_string()).into()),
        );
        let console = dir.0.join("console");
        let ns = Namespace::launch_with(&bin("keel-init"), &args, setup.env, &console, namespaces);
        Keel {
            init_pid: ns.init_pid,
            dir,
            ns,
            cgroup,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.0.join(rel)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("control")
    }

    /// Runs initctl against this keel.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("initctl"))
            .env("KEEL_SOCKET", self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("initctl")
    }

    /// initctl's stdout, asserting success.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "initctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs initctl through a link named `name` (`start`, `status`, …), which makes
    /// it that command.
    pub fn ctl_link(&self, name: &str, args: &[&str]) -> Output {
        let link = self.path(&format!("links/{name}"));
        if !link.exists() {
            fs::create_dir_all(self.path("links")).expect("links dir");
            std::os::unix::fs::symlink(bin("initctl"), &link).expect("link to initctl");
        }
        Command::new(&link)
            .env("KEEL_SOCKET", self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("initctl link")
    }

    /// Runs initctl as the unprivileged user `nobody` against this keel.
    pub fn ctl_as_nobody(&self, args: &[&str]) -> Output {
        initctl_as_nobody(&self.dir.0, &self.socket(), args)
    }

    /// What keel-init and the supervisor wrote to their console.
    pub fn console(&self) -> String {
        fs::read_to_string(self.path("console")).unwrap_or_default()
    }

    /// The host pid of the current supervisor (keel-init's child running it).
    /// A child the supervisor has just cloned carries its name for an instant
    /// (until it renames itself `keel-spawn`); the supervisor is the oldest.
    pub fn supervisor_pid(&self) -> Option<i32> {
        children(self.init_pid)
            .into_iter()
            .filter(|&p| comm(p).as_deref() == Some("keel-supervisor") && state(p) != Some('Z'))
            .min_by_key(|&p| start_time(p).unwrap_or(u64::MAX))
    }

    /// Makes `change` while no supervisor runs: the supervisor is stopped,
    /// `change` made, the supervisor killed (-9); returns once its successor runs.
    pub fn outage(&self, change: impl FnOnce()) {
        let old = self.supervisor_pid().expect("a supervisor");
        // SAFETY: kill(2) of the supervisor, by pid; no memory involved.
        unsafe { libc::kill(old, libc::SIGSTOP) };
        change();
        // SAFETY: as above.
        unsafe { libc::kill(old, libc::SIGKILL) };
        wait_for("a new supervisor", Duration::from_secs(10), || {
            self.supervisor_pid().is_some_and(|p| p != old)
        });
    }

    /// Every process in the namespace but keel-init, as host pids.
    pub fn processes(&self) -> Vec<i32> {
        descendants(self.init_pid)
    }

    /// Zombies among keel-init's children.
    pub fn zombies(&self) -> Vec<i32> {
        children(self.init_pid)
            .into_iter()
            .filter(|&p| state(p) == Some('Z'))
            .collect()
    }

    pub fn alive(&mut self) -> bool {
        self.ns.alive()
    }

    /// Waits for the namespace to end by itself; its exit status.
    pub fn wait_end(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.ns.wait_end(timeout)
    }
}

impl Drop for Keel {
    fn drop(&mut self) {
        // The namespace first, then the cgroups its jobs ran in.
        self.ns.end();
        if let Some(root) = self.cgroup.as_ref().filter(|r| r.exists()) {
            use keel_supervisor::cgroup;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let _ = cgroup::kill(root);
                if cgroup::remove(root).unwrap_or(true) || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(t.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        out.push(p);
        todo.extend(children(p));
    }
    out
}

pub fn comm(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The start time (clock ticks after boot) from /proc/PID/stat.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command: state is field 3, starttime field 22.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The one-letter state from /proc/PID/stat.
pub fn state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// The pid inside its namespace (last NSpid field) of host pid `pid`.
pub fn ns_pid(pid: i32) -> Option<i32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The main pid `initctl status` reports: `…, process N`.
pub fn status_pid(status: &str) -> Option<i32> {
    status
        .split(", process ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Keel {
    /// The lines of a file in the test's directory (a trace the jobs append to);
    /// empty if it does not exist yet.
    pub fn lines(&self, rel: &str) -> Vec<String> {
        fs::read_to_string(self.path(rel))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Creates an empty file in the test's directory (a "go" signal for a job).
    pub fn touch(&self, rel: &str) {
        fs::write(self.path(rel), b"").expect("touch");
    }

    /// The host pid of the namespace's process `ns` (as `initctl status` reports it).
    pub fn host_pid(&self, ns: i32) -> Option<i32> {
        self.processes()
            .into_iter()
            .find(|&p| ns_pid(p) == Some(ns))
    }
}

/// Runs initctl as `nobody` against `socket` (see [`as_nobody`]).
pub fn initctl_as_nobody(dir: &Path, socket: &Path, args: &[&str]) -> Output {
    as_nobody(dir, &bin("initctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runuser")
}

/// A command running `program` as the unprivileged user `nobody` (through
/// `runuser`), from a copy in `dir` that anyone may execute: the build's own may
/// live where `nobody` cannot reach. `dir` (which holds the socket in tests) is
/// opened to everyone.
pub fn as_nobody(dir: &Path, program: &Path) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let everyone = |p: &Path| fs::set_permissions(p, fs::Permissions::from_mode(0o755));
    everyone(dir).expect("open the test directory");
    let name = program.file_name().expect("a program file name");
    let copy = dir.join(format!("nobody-{}", name.to_string_lossy()));
    if !copy.exists() {
        let partial = dir.join(format!("nobody-{}.partial", name.to_string_lossy()));
        fs::copy(program, &partial).expect("copy the program");
        everyone(&partial).expect("chmod the program");
        fs::rename(&partial, &copy).expect("install the program");
    }
    let mut command = Command::new("runuser");
    command.args(["-u", "nobody", "--"]).arg(&copy);
    command
}

/// The supervisor's arguments for `Setup::supervisor` with confdir `conf`
/// (`$DIR` is the test's directory), the socket and logs in the test's
/// directory, no cgroups.
pub fn supervisor_args(conf: &str) -> Vec<String> {
    [
        "--confdir",
        conf,
        "--socket",
        "$DIR/control",
        "--logdir",
        "$DIR/log",
        "--cgroup-root",
        "none",
    ]
    .map(String::from)
    .to_vec()
}

/// A `Setup::supervisor` running the supervisor with [`supervisor_args`] and
/// at most `nofile` file descriptors (it then takes at most `nofile / 2`
/// control connections).
pub fn supervisor_with_fd_limit(nofile: u32, conf: &str) -> (PathBuf, Vec<String>) {
    let mut args = vec![
        "-c".to_string(),
        format!("ulimit -n {nofile} && exec \"$0\" \"$@\""),
        bin("keel-supervisor").display().to_string(),
    ];
    args.extend(supervisor_args(conf));
    ("/bin/sh".into(), args)
}

/// Open fds of host pid `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Resident memory of host pid `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: i32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Keel {
    /// Starts `job` (initctl start, which answers once it runs) and returns its
    /// main process's host pid once that has exec'd (no longer the supervisor's
    /// clone, first named `keel-supervisor`, then `keel-spawn`).
    pub fn start_main(&self, job: &[&str]) -> i32 {
        let mut args = vec!["start"];
        args.extend_from_slice(job);
        let out = self.ctl_ok(&args);
        let ns = status_pid(&out).unwrap_or_else(|| panic!("no main pid in {out:?}"));
        let mut host = None;
        wait_for(
            &format!("main {ns} to exec"),
            Duration::from_secs(5),
            || {
                host = self.host_pid(ns);
                host.is_some_and(|h| {
                    comm(h).is_some_and(|c| c != "keel-spawn" && c != "keel-supervisor")
                })
            },
        );
        host.unwrap()
    }
}

/// A field of /proc/PID/status (`CapBnd`, `Uid`), trimmed.
pub fn proc_status(pid: i32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The fields of /proc/PID/stat after the command (field 3 `state` is index 0).
pub fn proc_stat(pid: i32) -> Vec<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The environment of a process, `KEY=VALUE` each.
pub fn proc_environ(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

/// The cgroup2 path of a process (the `0::` line of /proc/PID/cgroup).
pub fn proc_cgroup(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string()
}

/// Whether host pid `pid` has ended (gone, or a zombie not reaped yet).
pub fn gone(pid: i32) -> bool {
    state(pid).is_none_or(|s| s == 'Z')
}

/// A control connection with the handshake done (for benchmarks that time one
/// request, not initctl's process start).
pub fn connect(socket: &Path) -> std::os::unix::net::UnixStream {
    use keel_proto::ctl::{ClientHello, MAGIC, ServerHello, VERSION};
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.write_all(
        &keel_proto::frame::encode(&ClientHello {
            magic: MAGIC,
            version: VERSION,
        })
        .unwrap(),
    )
    .unwrap();
    let body = read_frame(&mut s);
    let hello: ServerHello = keel_proto::frame::decode(&body).expect("server hello");
    assert!(hello.accepted, "protocol version refused");
    s
}

/// One whole frame body, blocking.
pub fn read_frame(s: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    use std::io::Read;
    let mut header = [0u8; keel_proto::frame::HEADER];
    s.read_exact(&mut header).expect("frame header");
    let len =
        keel_proto::frame::body_len(header, keel_proto::frame::MAX_FRAME).expect("frame length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("frame body");
    body
}

/// Sends `request` on a connection and reads its answer.
pub fn ask(
    s: &mut std::os::unix::net::UnixStream,
    request: &keel_proto::ctl::Request,
) -> keel_proto::ctl::Response {
    use std::io::Write;
    s.write_all(&keel_proto::frame::encode(request).unwrap())
        .unwrap();
    keel_proto::frame::decode(&read_frame(s)).expect("answer")
}

/// For a benchmark binary: take keel's binaries from the directory it lives in
/// (target/<profile>, next to keel-init), unless `KEEL_BIN_DIR` says otherwise.
/// Call first thing in `main`, before any thread exists.
pub fn use_own_binaries() {
    if std::env::var_os("KEEL_BIN_DIR").is_none() {
        let exe = std::env::current_exe().expect("own path");
        let dir = exe.parent().expect("own directory").to_path_buf();
        // SAFETY: called before any thread is started (the contract above), so
        // nothing reads the environment meanwhile.
        unsafe { std::env::set_var("KEEL_BIN_DIR", &dir) };
    }
}

/// Median, p90, p99, min and max of samples.
pub struct Stats {
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        Stats {
            median: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            min: s[0],
            max: s[s.len() - 1],
        }
    }
}

/// Writes the configuration of a system bus of a test's own (Debian's
/// `dbus-daemon --config-file`), listening at `DIR/bus` and letting anyone own
/// any name; returns its path.
pub fn bus_config(dir: &Path) -> PathBuf {
    let config = dir.join("bus.conf");
    fs::write(
        &config,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            dir.display()
        ),
    )
    .expect("bus config");
    config
}

/// A tiny deterministic generator (xorshift), so a failing randomised test can be
/// replayed by its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
