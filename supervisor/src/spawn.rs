//! Starting job processes: the single spawn path.
//!
//! Every job process is created with `clone3(CLONE_PARENT | CLONE_PIDFD)` when the
//! supervisor runs under keel-init, so it is keel-init's child from birth: keel-init
//! reaps it and relays its exit through the exit log, whether or not a supervisor is
//! alive at that moment (DESIGN.md, invariant 2: one path for every exit). Without
//! keel-init the supervisor is the parent (and a subreaper) and reaps itself. With a
//! cgroup prepared for the instance the child is born in it (`CLONE_INTO_CGROUP`), so
//! not even its first instruction runs outside.
//!
//! Exactly-once spawning across a crash: the child sets itself up, then blocks on a
//! "go" pipe before exec. All children spawned in one round of the event loop (a
//! batch of at most `runtime::SPAWN_BATCH` of them) share one [`GoPipe`], whose
//! write end is also deposited in keel-init's lifeboat. The supervisor saves the
//! state recording the children's pids (and that this round is to be released),
//! then writes one byte per child. A supervisor killed before the save leaves a
//! state without those pids (the spawns decided, pid 0, or not even that): its
//! successor withdraws the pipe from the lifeboat, the children read EOF and exit
//! without ever exec'ing, and the successor starts them anew. Killed after the
//! save, its successor finds the round marked for release and releases it from the
//! lifeboat's copy. So a process either runs and is in the saved state, or never
//! ran.
//!
//! Everything the child needs (paths, argv, envp, ids, groups, the capability mask,
//! limits) is resolved in the parent (`setup`, `Runtime::plan`); the child runs only
//! raw syscalls on that data, then execs or `_exit`s — it never allocates. The
//! supervisor is single-threaded, so the child of a clone without `CLONE_VM` is an
//! ordinary copy with no lock held.
//!
//! The child sets itself up in this order, each step where the next ones need it:
//! 1. signals back to their defaults, a new session and process group (`setsid`);
//! 2. fds: the error pipe at [`ERR_FD`], stdio per `console`, the script at
//!    [`SCRIPT_FD`], the go pipe at `GO_FD`; every other fd closed;
//! 3. `/proc/self/oom_score_adj` and the AppArmor exec label — files under /proc,
//!    so before `chroot` (which may leave /proc behind) and while still root
//!    (AppArmor may refuse a confined or unprivileged writer);
//! 4. rlimits and `nice`, while the capabilities to raise them are still there;
//! 5. `umask`, `chroot`, `chdir` (the `chdir` is inside the new root);
//! 6. the capability bounding set (needs `CAP_SETPCAP`, so before the uid change);
//! 7. `PR_SET_KEEPCAPS` (only when capabilities must survive), `setgroups`,
//!    `setgid`, `setuid` — groups first, since they need root;
//! 8. `capset` to the job's set, and for a `setuid` job the same set raised as
//!    ambient capabilities, so that they survive the exec of an ordinary binary;
//! 9. `PR_SET_NO_NEW_PRIVS`, last: nothing above needs privileges it would deny;
//! 10. wait for "go", exec.
//!
//! A step that fails writes a fixed 12-byte record (step, argument, errno) to the
//! error pipe and `_exit`s with [`SETUP_FAILED`]; an exec that fails does the same
//! (status 127 or 126, as a shell would). The write end is close-on-exec: a
//! successful exec closes it, so the supervisor reads EOF (and drops its read end)
//! or a record, which becomes the process's failure reason (`Failure::describe`).

use crate::job::{CAPABILITIES, Console, Resource};
use rustix::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ffi::CString;
use std::io;

/// The fd at which a script's text is readable in the child (`/proc/self/fd/9`).
pub const SCRIPT_FD: i32 = 9;
/// The fd the child waits on for "go".
const GO_FD: i32 = 10;
/// The fd of the error pipe's write end in the child (close-on-exec).
const ERR_FD: i32 = 11;
/// Where the `expect fd` socket waits in the child until it moves to its number,
/// just before exec.
const READY_FD: i32 = 12;

/// Whether `expect fd N` would take an fd the child needs up to its exec: the
/// script (9, for a script), the error pipe (11) or the readiness socket's own
/// parking place (12). (The go pipe, 10, is closed before N is filled.)
pub fn reserved_fd(n: i32, script: bool) -> bool {
    (n == SCRIPT_FD && script) || n == ERR_FD || n == READY_FD
}
/// The exit status of a child that was never released (its supervisor died first).
pub const NOT_RELEASED: i32 = 125;
/// The exit status of a child whose setup failed before exec.
pub const SETUP_FAILED: i32 = 126;
/// `CLONE_INTO_CGROUP` (linux/sched.h, Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Everything needed to start one process.
pub struct Plan {
    /// argv[0] is the program as found on PATH (an absolute path).
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// A script's text, fed to the interpreter as `/proc/self/fd/9`.
    pub script: Option<Vec<u8>>,
    pub console: Console,
    /// For `console log`: the write end of the instance's log pipe.
    pub log: Option<OwnedFd>,
    pub chdir: CString,
    pub umask: u32,
    /// Spawn as keel-init's child (`CLONE_PARENT`).
    pub init_child: bool,
    /// The instance's cgroup directory, to be born in.
    pub cgroup: Option<OwnedFd>,
    /// `expect fd N`: the job's end of its readiness socket, and N.
    pub ready_fd: Option<(OwnedFd, i32)>,
    pub setup: Setup,
}

/// What the child sets before exec beyond its stdio: limits, identity, privileges.
/// Resolved in the parent (`setup::prepare`); the child only makes syscalls with it.
#[derive(Debug, Default)]
pub struct Setup {
    /// (libc resource, soft, hard), in the job file's order.
    pub limits: Vec<(u32, u64, u64)>,
    pub nice: Option<i32>,
    /// The decimal text written to `/proc/self/oom_score_adj`.
    pub oom_score_adj: Option<CString>,
    /// The AppArmor attribute file and `exec PROFILE` for it.
    pub apparmor: Option<(CString, CString)>,
    pub chroot: Option<CString>,
    pub ids: Option<Ids>,
    /// The capability set the job keeps (bounding set, and what it holds).
    pub capabilities: Option<u64>,
    /// The highest capability number this kernel knows.
    pub last_cap: u32,
    pub no_new_privs: bool,
}

/// The identity a `setuid`/`setgid` job runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// `None`: only `setgid` was given, the uid stays.
    pub uid: Option<u32>,
    pub gid: u32,
    /// Supplementary groups (the user's, from the group database).
    pub groups: Vec<u32>,
}

/// A started child, not yet released.
pub struct Spawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// The read end of the child's error pipe (non-blocking): EOF once it exec'd,
    /// a [`SetupError`] record if its setup or exec failed.
    pub errors: OwnedFd,
}

/// The "go" pipe of one round of spawns (see the module docs).
pub struct GoPipe {
    read: OwnedFd,
    pub write: OwnedFd,
    /// Children waiting on it.
    pub waiting: u32,
}

impl GoPipe {
    pub fn new() -> io::Result<GoPipe> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(GoPipe {
            read: high(read)?,
            write,
            waiting: 0,
        })
    }
}

/// Lets `count` children waiting on `write` go on to exec: one byte each.
pub fn release(write: &OwnedFd, count: u32) {
    let bytes = vec![b'g'; count as usize];
    let mut done = 0;
    while done < bytes.len() {
        match rustix::io::write(write, &bytes[done..]) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            // Nobody reads any more: released once already, and all have gone on.
            Err(rustix::io::Errno::PIPE) => return,
            Err(e) => {
                tracing::error!("cannot release spawned processes: {e}");
                return;
            }
        }
    }
}

/// Duplicates `fd` to a number ≥ 64, so the child can move it to its low target
/// without clobbering another source.
fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 64)?)
}

/// The steps of the child's setup, as its error record names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Stdio = 1,
    OomScoreAdj,
    AppArmor,
    Setrlimit,
    Nice,
    Chroot,
    Chdir,
    BoundingSet,
    KeepCaps,
    Setgroups,
    Setgid,
    Setuid,
    Capset,
    Ambient,
    NoNewPrivs,
    Exec,
}

impl Step {
    const ALL: [Step; 16] = [
        Step::Stdio,
        Step::OomScoreAdj,
        Step::AppArmor,
        Step::Setrlimit,
        Step::Nice,
        Step::Chroot,
        Step::Chdir,
        Step::BoundingSet,
        Step::KeepCaps,
        Step::Setgroups,
        Step::Setgid,
        Step::Setuid,
        Step::Capset,
        Step::Ambient,
        Step::NoNewPrivs,
        Step::Exec,
    ];
}

/// A child's report of the step that failed (the record on its error pipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupError {
    pub step: Step,
    /// The resource of a `setrlimit`, the capability of a bounding-set or ambient step.
    pub arg: u32,
    pub errno: i32,
}

const RECORD: usize = 12;

impl SetupError {
    fn encode(self) -> [u8; RECORD] {
        let mut out = [0u8; RECORD];
        out[..4].copy_from_slice(&(self.step as u32).to_ne_bytes());
        out[4..8].copy_from_slice(&self.arg.to_ne_bytes());
        out[8..].copy_from_slice(&self.errno.to_ne_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<SetupError> {
        let word = |i: usize| -> Option<[u8; 4]> { bytes.get(i..i + 4)?.try_into().ok() };
        if bytes.len() != RECORD {
            return None;
        }
        let step = u32::from_ne_bytes(word(0)?);
        Some(SetupError {
            step: Step::ALL.into_iter().find(|s| *s as u32 == step)?,
            arg: u32::from_ne_bytes(word(4)?),
            errno: i32::from_ne_bytes(word(8)?),
        })
    }

    /// `setrlimit nofile: Operation not permitted`.
    pub fn describe(&self) -> String {
        let cap = || {
            CAPABILITIES.get(self.arg as usize).map_or_else(
                || format!("capability {}", self.arg),
                |c| format!("cap_{c}"),
            )
        };
        let what = match self.step {
            Step::Stdio => "console setup".to_string(),
            Step::OomScoreAdj => "oom_score_adj".to_string(),
            Step::AppArmor => "apparmor switch".to_string(),
            Step::Setrlimit => format!(
                "setrlimit {}",
                Resource::ALL
                    .into_iter()
                    .find(|r| rlimit_resource(*r) == self.arg)
                    .map_or("?", Resource::name)
            ),
            Step::Nice => "setpriority (nice)".to_string(),
            Step::Chroot => "chroot".to_string(),
            Step::Chdir => "chdir".to_string(),
            Step::BoundingSet => format!("dropping {} from the bounding set", cap()),
            Step::KeepCaps => "keeping capabilities across setuid".to_string(),
            Step::Setgroups => "setgroups".to_string(),
            Step::Setgid => "setgid".to_string(),
            Step::Setuid => "setuid".to_string(),
            Step::Capset => "capset".to_string(),
            Step::Ambient => format!("raising {} as ambient", cap()),
            Step::NoNewPrivs => "no_new_privs".to_string(),
            Step::Exec => "exec".to_string(),
        };
        format!("{what}: {}", strerror(self.errno))
    }
}

/// The message of an errno, without std's "(os error N)".
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// libc's number for a `limit` resource.
pub fn rlimit_resource(r: Resource) -> u32 {
    let n = match r {
        Resource::As => libc::RLIMIT_AS,
        Resource::Core => libc::RLIMIT_CORE,
        Resource::Cpu => libc::RLIMIT_CPU,
        Resource::Data => libc::RLIMIT_DATA,
        Resource::Fsize => libc::RLIMIT_FSIZE,
        Resource::Memlock => libc::RLIMIT_MEMLOCK,
        Resource::Msgqueue => libc::RLIMIT_MSGQUEUE,
        Resource::Nice => libc::RLIMIT_NICE,
        Resource::Nofile => libc::RLIMIT_NOFILE,
        Resource::Nproc => libc::RLIMIT_NPROC,
        Resource::Rss => libc::RLIMIT_RSS,
        Resource::Rtprio => libc::RLIMIT_RTPRIO,
        Resource::Rttime => libc::RLIMIT_RTTIME,
        Resource::Sigpending => libc::RLIMIT_SIGPENDING,
        Resource::Stack => libc::RLIMIT_STACK,
    };
    #[allow(clippy::unnecessary_cast)] // c_int on some libcs
    let n = n as u32;
    n
}

/// What a child's error pipe says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// Its setup or exec failed.
    Failed(SetupError),
    /// EOF: it exec'd (or ended without a word, or the pipe broke).
    Done,
    /// Nothing yet: still setting up, or waiting for go.
    Pending,
}

/// Reads a child's error pipe without blocking.
pub fn read_report(errors: &OwnedFd) -> Report {
    let mut buf = [0u8; RECORD];
    match rustix::io::read(errors, &mut buf) {
        Ok(n) => SetupError::decode(&buf[..n]).map_or(Report::Done, Report::Failed),
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Report::Pending,
        Err(_) => Report::Done,
    }
}

pub fn spawn(plan: &Plan, go: &mut GoPipe) -> io::Result<Spawned> {
    let script = match &plan.script {
        Some(text) => Some(high(script_memfd(text)?)?),
        None => None,
    };
    let (err_read, err_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let err_write = high(err_write)?;
    rustix::io::ioctl_fionbio(&err_read, true)?;
    let log = match &plan.log {
        Some(fd) => Some(rustix::io::fcntl_dupfd_cloexec(fd, 64)?),
        None => None,
    };
    let ready = match &plan.ready_fd {
        Some((fd, n)) => Some((rustix::io::fcntl_dupfd_cloexec(fd, 64)?, *n)),
        None => None,
    };

    let argv: Vec<*const libc::c_char> = plan
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = plan
        .env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let fds = ChildFds {
        script: script.as_ref().map(|f| f.as_raw_fd()),
        go: go.read.as_raw_fd(),
        errors: err_write.as_raw_fd(),
        log: log.as_ref().map(|f| f.as_raw_fd()),
        ready: ready.as_ref().map(|(f, n)| (f.as_raw_fd(), *n)),
    };

    let mut pidfd: libc::c_int = -1;
    let (parent_flag, exit_signal) = if plan.init_child {
        // With CLONE_PARENT the kernel requires exit_signal 0: the child inherits the
        // supervisor's own exit signal (SIGCHLD, as keel-init forked it), sent to keel-init.
        (libc::CLONE_PARENT as u64, 0)
    } else {
        (0, libc::SIGCHLD as u64)
    };
    let (cgroup_flag, cgroup) = match &plan.cgroup {
        Some(fd) => (CLONE_INTO_CGROUP, fd.as_raw_fd() as u64),
        None => (0, 0),
    };
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64 | parent_flag | cgroup_flag,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal,
        cgroup,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM gives the child its own copy of this address
    // space; `args` and `pidfd` are valid for the call. The child below only makes
    // raw syscalls on data prepared above, then execs or exits: it never returns
    // into Rust code that could unwind, allocate under a held lock, or run drops.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        // SAFETY: see above; `child` never returns.
        unsafe { child(plan, &argv, &envp, &fds) }
    }
    go.waiting += 1;
    drop((script, err_write, log, ready));
    // SAFETY: CLONE_PIDFD stored a new pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid: ret as i32,
        pidfd,
        errors: err_read,
    })
}

/// The child's source fds (all ≥ 64, so moving them to their targets clobbers none).
struct ChildFds {
    script: Option<i32>,
    go: i32,
    errors: i32,
    log: Option<i32>,
    /// `expect fd N`: (source, N).
    ready: Option<(i32, i32)>,
}

/// Reports `step` on the error pipe and ends the child.
///
/// # Safety
/// Only in the child, after the error pipe is at [`ERR_FD`].
unsafe fn fail(step: Step, arg: u32, code: i32) -> ! {
    unsafe {
        let errno = *libc::__errno_location();
        let record = SetupError { step, arg, errno }.encode();
        libc::write(ERR_FD, record.as_ptr() as *const libc::c_void, RECORD);
        libc::_exit(code)
    }
}

/// The child's side: set up, wait for go, exec. Never returns. The order of the
/// steps, and why, is in the module docs.
///
/// # Safety
/// Must only be called in the child of `clone3` in `spawn`, with pointers valid there.
unsafe fn child(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: &ChildFds,
) -> ! {
    unsafe {
        // Not the supervisor any more: say so to `ps` (and to anyone looking for the
        // supervisor by name) until exec gives the job its own name.
        libc::prctl(libc::PR_SET_NAME, c"keel-spawn".as_ptr());
        // Signals: the supervisor blocks some and Rust ignores SIGPIPE; a job starts
        // with defaults and nothing blocked.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // Its own session and process group, so signals reach every process of the job.
        libc::setsid();

        // The error pipe first, so every later failure can be reported.
        if libc::dup3(fds.errors, ERR_FD, libc::O_CLOEXEC) < 0 {
            libc::_exit(SETUP_FAILED);
        }
        stdio(plan, fds);
        if let Some(fd) = fds.script {
            libc::dup2(fd, SCRIPT_FD);
        }
        libc::dup2(fds.go, GO_FD);
        let last = match fds.ready {
            Some((source, _)) => {
                libc::dup2(source, READY_FD);
                READY_FD
            }
            None => ERR_FD,
        };
        // Every other fd closed: nothing of the supervisor leaks into a job.
        libc::close_range(3, SCRIPT_FD as u32 - 1, 0);
        if fds.script.is_none() {
            libc::close(SCRIPT_FD);
        }
        libc::close_range(last as u32 + 1, u32::MAX, 0);

        let s = &plan.setup;
        if let Some(value) = &s.oom_score_adj {
            write_file(c"/proc/self/oom_score_adj", value, Step::OomScoreAdj);
        }
        if let Some((attr, label)) = &s.apparmor {
            write_file(attr, label, Step::AppArmor);
        }
        for &(resource, soft, hard) in &s.limits {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(resource as _, &limit) != 0 {
                fail(Step::Setrlimit, resource, SETUP_FAILED);
            }
        }
        if let Some(nice) = s.nice
            && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0
        {
            fail(Step::Nice, 0, SETUP_FAILED);
        }

        libc::umask(plan.umask as libc::mode_t);
        if let Some(root) = &s.chroot
            && libc::chroot(root.as_ptr()) != 0
        {
            fail(Step::Chroot, 0, SETUP_FAILED);
        }
        if libc::chdir(plan.chdir.as_ptr()) != 0 {
            fail(Step::Chdir, 0, SETUP_FAILED);
        }

        if let Some(keep) = s.capabilities {
            for cap in 0..=s.last_cap {
                if keep & (1 << cap) == 0 && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    fail(Step::BoundingSet, cap, SETUP_FAILED);
                }
            }
        }
        let ambient = s
            .capabilities
            .filter(|&c| c != 0 && s.ids.as_ref().is_some_and(|i| i.uid.is_some()));
        if let Some(ids) = &s.ids {
            if ambient.is_some() && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                fail(Step::KeepCaps, 0, SETUP_FAILED);
            }
            if libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) != 0 {
                fail(Step::Setgroups, 0, SETUP_FAILED);
            }
            if libc::setgid(ids.gid) != 0 {
                fail(Step::Setgid, 0, SETUP_FAILED);
            }
            if let Some(uid) = ids.uid
                && libc::setuid(uid) != 0
            {
                fail(Step::Setuid, 0, SETUP_FAILED);
            }
        }
        if let Some(keep) = s.capabilities {
            let word = |i: u32| (keep >> (32 * i)) as u32;
            let data = [0, 1].map(|i| CapData {
                effective: word(i),
                permitted: word(i),
                inheritable: word(i),
            });
            let mut header = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
                fail(Step::Capset, 0, SETUP_FAILED);
            }
        }
        if let Some(keep) = ambient {
            for cap in 0..=s.last_cap {
                if keep & (1 << cap) != 0
                    && libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0
                {
                    fail(Step::Ambient, cap, SETUP_FAILED);
                }
            }
        }
        if s.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(Step::NoNewPrivs, 0, SETUP_FAILED);
        }

        // Wait until the supervisor has saved this pid (see the module docs).
        let mut byte = 0u8;
        loop {
            let n = libc::read(GO_FD, &mut byte as *mut u8 as *mut libc::c_void, 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(NOT_RELEASED);
        }
        libc::close(GO_FD);
        // `expect fd N`: the readiness socket at N (`reserved_fd` keeps N clear of
        // what is still needed), open across the exec.
        if let Some((_, n)) = fds.ready
            && n != READY_FD
        {
            libc::dup2(READY_FD, n);
            libc::close(READY_FD);
        }

        libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
        let code = if *libc::__errno_location() == libc::ENOENT {
            127
        } else {
            126
        };
        fail(Step::Exec, 0, code)
    }
}

/// fds 0–2 per `console`.
///
/// # Safety
/// Only in the child, after the error pipe is at [`ERR_FD`].
unsafe fn stdio(plan: &Plan, fds: &ChildFds) {
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            fail(Step::Stdio, 0, SETUP_FAILED);
        }
        let (input, output) = match plan.console {
            Console::None => (null, null),
            Console::Output => {
                // The console for output, never as controlling terminal.
                let c = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
                if c >= 0 { (c, c) } else { (null, null) }
            }
            Console::Owner => {
                // The console as controlling terminal, this process group in its
                // foreground: ctrl-C on the console reaches the job.
                let c = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR);
                if c < 0 || libc::ioctl(c, libc::TIOCSCTTY, 1) != 0 {
                    fail(Step::Stdio, 0, SETUP_FAILED);
                }
                libc::tcsetpgrp(c, libc::getpid());
                (c, c)
            }
            Console::Log => (null, fds.log.unwrap_or(null)),
        };
        if libc::dup2(input, 0) < 0 || libc::dup2(output, 1) < 0 || libc::dup2(output, 2) < 0 {
            fail(Step::Stdio, 0, SETUP_FAILED);
        }
    }
}

/// Writes `value` to the file at `path` (a /proc attribute), or fails as `step`.
///
/// # Safety
/// Only in the child, after the error pipe is at [`ERR_FD`].
unsafe fn write_file(path: &std::ffi::CStr, value: &std::ffi::CStr, step: Step) {
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        let bytes = value.to_bytes();
        if fd < 0
            || libc::write(fd, bytes.as_ptr() as *const libc::c_void, bytes.len())
                != bytes.len() as isize
        {
            fail(step, 0, SETUP_FAILED);
        }
        libc::close(fd);
    }
}

/// A memfd holding a script's text, positioned at its start.
fn script_memfd(text: &[u8]) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("keel-script", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut done = 0;
    while done < text.len() {
        done += rustix::io::write(&fd, &text[done..])?;
    }
    rustix::fs::seek(&fd, rustix::fs::SeekFrom::Start(0))?;
    Ok(fd)
}

/// The kernel's `struct clone_args` (linux/sched.h), version 2 layout (with
/// `cgroup`, Linux 5.7); an older kernel takes it as long as the fields it does
/// not know are zero.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Finds `program` on `path` (as execvp would), in the parent, so the child needs
/// no search. Names with a `/` are taken as they are. With `root` (a `chroot`
/// job), the search is inside that directory and the path found is relative to it.
pub fn resolve(program: &str, path: &str, root: Option<&str>) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(program.to_string());
    }
    let root = root.unwrap_or("").trim_end_matches('/');
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let candidate = format!("{dir}/{program}");
        let meta = std::fs::metadata(format!("{root}{candidate}")).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_records_round_trip_and_describe_themselves() {
        let e = SetupError {
            step: Step::Setrlimit,
            arg: rlimit_resource(Resource::Nofile),
            errno: libc::EPERM,
        };
        assert_eq!(SetupError::decode(&e.encode()), Some(e));
        assert_eq!(e.describe(), "setrlimit nofile: Operation not permitted");
        let amb = SetupError {
            step: Step::Ambient,
            arg: 10,
            errno: libc::EPERM,
        };
        assert_eq!(
            amb.describe(),
            "raising cap_net_bind_service as ambient: Operation not permitted"
        );
        for step in Step::ALL {
            let e = SetupError {
                step,
                arg: 0,
                errno: libc::ENOENT,
            };
            assert_eq!(SetupError::decode(&e.encode()), Some(e));
            assert!(e.describe().ends_with(": No such file or directory"));
        }
        // A short or unknown record is no record.
        assert_eq!(SetupError::decode(&e.encode()[..8]), None);
        assert_eq!(SetupError::decode(&[0xff; RECORD]), None);
    }

    #[test]
    fn every_limit_resource_has_its_own_number() {
        let mut numbers: Vec<u32> = Resource::ALL.into_iter().map(rlimit_resource).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), Resource::ALL.len());
    }

    #[test]
    fn resolve_searches_inside_a_chroot() {
        let sh = resolve("sh", "/nonexistent:/bin", None).expect("sh on /bin");
        assert_eq!(sh, "/bin/sh");
        assert_eq!(resolve("sh", "/bin", Some("/nonexistent-root")), None);
        assert_eq!(resolve("sh", "/bin", Some("/")).as_deref(), Some("/bin/sh"));
        assert_eq!(resolve("/x/y", "/bin", Some("/r")).as_deref(), Some("/x/y"));
    }
}
