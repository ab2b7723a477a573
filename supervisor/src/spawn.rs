//! Starting job processes: the single spawn path.
//!
//! Every job process is created with `clone3(CLONE_PARENT)` when the supervisor
//! runs under keel-init (with `CLONE_PIDFD` only where `pidguard` needs a pidfd),
//! so it is keel-init's child from birth: keel-init reaps it and relays its exit
//! through the exit log, whether or not a supervisor is alive at that moment (DESIGN.md, invariant 2: one path for every exit). Without
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
//! raw syscalls on that data, then execs or exits — it never allocates.
//!
//! The child shares the supervisor's memory (`CLONE_VM`) until its exec, on a stack
//! of its own: nothing of the supervisor is copied for a spawn, no page of it is
//! write-protected (to be copied again at the supervisor's next write), and the
//! exec has no copy to tear down — with a thousand jobs, copying the supervisor
//! was most of what a spawn cost. In return the child may touch nothing the
//! supervisor changes: it reads only its [`Launch`], which the supervisor keeps
//! (with the stack) until the child's error pipe reports EOF — the kernel closes
//! the child's end at exec after it has left this memory, or at its exit — and it
//! makes raw system calls (`sys`), never libc's wrappers, which would write
//! `errno` in the supervisor's thread. It has its own fd table and signal
//! handlers (`CLONE_CLEAR_SIGHAND`), as a forked child would. That needs a
//! trampoline in assembly per architecture (`sys::clone3`, x86_64 so far);
//! elsewhere, or with `KEEL_SPAWN=fork`, the child is made by clone3 without
//! `CLONE_VM` instead and works on a copy ([`Method`]).
//!
//! The child sets itself up in this order, each step where the next ones need it:
//! 1. signals back to their defaults, a new session and process group (`setsid`);
//! 2. fds: the error pipe at [`ERR_FD`], stdio per `console`, the script at
//!    [`SCRIPT_FD`], the go pipe at `GO_FD`; every other fd closed;
//! 3. `/proc/self/oom_score_adj` and the AppArmor exec label — files under /proc,
//!    so before `chroot` (which may leave /proc behind) and while still root
//!    (AppArmor may refuse a confined or unprivileged writer);
//! 4. rlimits and `nice`, while the capabilities to raise them are still there;
//! 5. the job's own mount namespace (`sandbox`), then `umask`, `chroot`, `chdir`
//!    (the `chdir` is inside the new root);
//! 6. the capability bounding set (needs `CAP_SETPCAP`, so before the uid change);
//! 7. `PR_SET_KEEPCAPS` (only when capabilities must survive), `setgroups`,
//!    `setgid`, `setuid` — groups first, since they need root;
//! 8. `capset` to the job's set, and for a `setuid` job the same set raised as
//!    ambient capabilities, so that they survive the exec of an ordinary binary;
//! 9. `PR_SET_NO_NEW_PRIVS`, last: nothing above needs privileges it would deny;
//! 10. wait for "go"; the system-call filter (`syscalls deny`, with
//!     no_new_privs), last, so that it governs nothing but the exec; exec.
//!
//! A step that fails writes a fixed 12-byte record (step, argument, errno) to the
//! error pipe and exits with [`SETUP_FAILED`]; an exec that fails does the same
//! (status 127 or 126, as a shell would). The write end is close-on-exec: a
//! successful exec closes it, so the supervisor reads EOF (and drops its read end)
//! or a record, which becomes the process's failure reason (`Failure::describe`).

use crate::errno::strerror;
use crate::job::{CAPABILITIES, Console, Resource};
use crate::sandbox::{ChildMount, MountOp};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ffi::CString;
use std::io;

mod sys;

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
    /// Return a pidfd of the child (`CLONE_PIDFD`; `pidguard` says when one is
    /// needed: not for keel-init's children, which keel-init signals).
    pub pidfd: bool,
    /// The instance's cgroup directory, to be born in.
    pub cgroup: Option<OwnedFd>,
    /// `expect fd N`: the job's end of its readiness socket, and N.
    pub ready_fd: Option<(OwnedFd, i32)>,
    /// Socket activation: the listening socket, at [`LISTEN_FD`] in the child,
    /// which also gets `LISTEN_PID=` its own pid (the rest of the environment,
    /// `LISTEN_FDS=1` and `UPSTART_FDS=3`, is in `env`).
    pub listen_fd: Option<OwnedFd>,
    pub setup: Setup,
}

/// Where a socket-activated job finds its listening socket (systemd's
/// `SD_LISTEN_FDS_START`; Upstart's `UPSTART_FDS` names it).
pub const LISTEN_FD: i32 = 3;

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
    /// The mount namespace's steps (`sandbox::resolve`); none: the supervisor's.
    pub mounts: Vec<ChildMount>,
    /// The system-call stanzas, compiled once per sandbox
    /// (`sandbox::cached_syscall_filters`); installed last, just before exec,
    /// with no_new_privs.
    pub syscall_filters: crate::sandbox::SyscallFilters,
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
    /// Its pidfd, if the plan asked for one.
    pub pidfd: Option<OwnedFd>,
    /// What it needs until it execs, and its error pipe.
    pub launch: Launch,
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

/// Duplicates `fd` to a number above every fixed target of the child (stdio,
/// [`LISTEN_FD`], [`SCRIPT_FD`], `GO_FD`, [`ERR_FD`], [`READY_FD`]), so the child
/// can move it to its low target without clobbering another source. The lowest
/// such number, not a round one: `F_DUPFD` fails with EINVAL at or above the fd
/// limit, and with `ulimit -n 64` a bound of 64 made every spawn fail.
fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, READY_FD + 1)?)
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
    MountNamespace,
    /// `arg`: the index of the failed step in `Setup::mounts`.
    Mount,
    SyscallFilter,
}

impl Step {
    const ALL: [Step; 19] = [
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
        Step::MountNamespace,
        Step::Mount,
        Step::SyscallFilter,
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
            Step::MountNamespace => "a mount namespace of its own".to_string(),
            Step::Mount => format!("sandbox mount step {}", self.arg),
            Step::SyscallFilter => "installing the system-call filter".to_string(),
        };
        format!("{what}: {}", strerror(self.errno))
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

/// Signals whose disposition the supervisor itself ignores (Rust ignores
/// SIGPIPE): `CLONE_CLEAR_SIGHAND` resets handled signals in a child, not ignored
/// ones, so the child resets these itself. Bit `n - 1` for signal `n`.
fn ignored_signals() -> u64 {
    static IGNORED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *IGNORED.get_or_init(|| {
        let ignore = rustix::runtime::kernel_sig_ign().map(|f| f as usize);
        let mut mask = 0;
        for sig in 1..=64i32 {
            // SAFETY: rt_sigaction(2) with no new action only reads the
            // disposition (raw: libc hides its own signals 32 and 33, and a
            // number it does not know is refused, not acted on).
            let old = unsafe {
                rustix::runtime::kernel_sigaction(
                    rustix::process::Signal::from_raw_unchecked(sig),
                    None,
                )
            };
            if old.is_ok_and(|old| old.sa_handler_kernel.map(|f| f as usize) == ignore) {
                mask |= 1 << (sig - 1);
            }
        }
        mask
    })
}

/// How a child is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `clone3(CLONE_VM)`: the child shares the supervisor's memory until it
    /// execs, on a stack of its own, started by a per-architecture trampoline
    /// (`sys::clone3`). The default where there is one (x86_64).
    SharedMemory,
    /// `clone3` without `CLONE_VM`: the child gets a copy of the supervisor's
    /// memory, as from fork(2), and carries on from the call on its copy of the
    /// stack. Needs no assembly, so it works on every architecture; it costs the
    /// copy. Chosen with `KEEL_SPAWN=fork` in the supervisor's environment (so
    /// that the tests can run through it on x86_64 too).
    Fork,
}

impl Method {
    /// This supervisor's method: [`Method::Fork`] where there is no trampoline
    /// or `KEEL_SPAWN=fork` asks for it, else [`Method::SharedMemory`].
    pub fn chosen() -> Method {
        static CHOSEN: std::sync::OnceLock<Method> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let fork = std::env::var_os("KEEL_SPAWN").is_some_and(|v| v == "fork");
            if fork || !sys::HAS_TRAMPOLINE {
                tracing::info!("children are spawned as by fork (clone3 without CLONE_VM)");
                Method::Fork
            } else {
                Method::SharedMemory
            }
        })
    }
}

/// Starts the process `plan` describes, waiting on `go` (see the module docs),
/// by this supervisor's [`Method`].
pub fn spawn(plan: Plan, go: &mut GoPipe) -> io::Result<Spawned> {
    spawn_by(Method::chosen(), plan, go)
}

/// Starts the process `plan` describes by `method`.
///
/// With [`Method::SharedMemory`] the child shares the supervisor's memory
/// (`CLONE_VM`) until it execs, on a stack of its own, so the supervisor's pages
/// are neither copied for it nor write-protected under it, and its exec has
/// nothing to tear down. In return the child reads only its [`Launch`] (which the
/// supervisor keeps until the child has exec'd or ended), writes only to its
/// stack, and makes raw system calls only (`sys`). With [`Method::Fork`] the
/// child works on a copy, and does the same.
pub fn spawn_by(method: Method, mut plan: Plan, go: &mut GoPipe) -> io::Result<Spawned> {
    let script = match plan.script.take() {
        Some(text) => Some(high(script_memfd(&text)?)?),
        None => None,
    };
    let (err_read, err_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let err_write = high(err_write)?;
    rustix::io::ioctl_fionbio(&err_read, true)?;
    let log = plan.log.take().map(high).transpose()?;
    let ready = match plan.ready_fd.take() {
        Some((fd, n)) => Some((high(fd)?, n)),
        None => None,
    };
    let listen = match plan.listen_fd.take() {
        Some(fd) => Some(high(fd)?),
        None => None,
    };
    // `LISTEN_PID=` and room for any pid: the child writes its own in.
    let listen_pid = listen.as_ref().map(|_| {
        let mut text = [0u8; LISTEN_PID_TEXT];
        text[..LISTEN_PID_VAR.len()].copy_from_slice(LISTEN_PID_VAR);
        Box::new(std::cell::UnsafeCell::new(text))
    });
    let cgroup_dir = plan.cgroup.take();
    let stack = match method {
        Method::SharedMemory => Some(Stack::take()?),
        Method::Fork => None,
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
        .chain(listen_pid.as_ref().map(|t| t.get() as *const libc::c_char))
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let fds = ChildFds {
        script: script.as_ref().map(|f| f.as_raw_fd()),
        go: go.read.as_raw_fd(),
        errors: err_write.as_raw_fd(),
        log: log.as_ref().map(|f| f.as_raw_fd()),
        ready: ready.as_ref().map(|(f, n)| (f.as_raw_fd(), *n)),
        listen: listen.as_ref().map(|f| f.as_raw_fd()),
    };
    let limits = plan
        .setup
        .limits
        .iter()
        .map(|&(number, soft, hard)| {
            let resource = rustix_resource(number).ok_or(io::ErrorKind::InvalidInput)?;
            let limit = |n: u64| (n != libc::RLIM_INFINITY).then_some(n);
            let limit = rustix::process::Rlimit {
                current: limit(soft),
                maximum: limit(hard),
            };
            Ok((number, resource, limit))
        })
        .collect::<io::Result<_>>()?;
    let groups = plan.setup.ids.as_ref().map_or_else(Vec::new, |ids| {
        ids.groups
            .iter()
            .map(|&g| rustix::process::Gid::from_raw(g))
            .collect()
    });
    // Boxed, so that it stays where the child finds it while the Launch moves.
    let ctx = Box::new(Ctx {
        argv,
        envp,
        listen_pid,
        fds,
        ignored: ignored_signals(),
        limits,
        groups,
        plan,
    });

    let mut pidfd: libc::c_int = -1;
    let pidfd_flag = if ctx.plan.pidfd {
        libc::CLONE_PIDFD as u64
    } else {
        0
    };
    let (parent_flag, exit_signal) = if ctx.plan.init_child {
        // With CLONE_PARENT the kernel requires exit_signal 0: the child inherits the
        // supervisor's own exit signal (SIGCHLD, as keel-init forked it), sent to keel-init.
        (libc::CLONE_PARENT as u64, 0)
    } else {
        (0, libc::SIGCHLD as u64)
    };
    let (cgroup_flag, cgroup) = match &cgroup_dir {
        Some(fd) => (CLONE_INTO_CGROUP, fd.as_raw_fd() as u64),
        None => (0, 0),
    };
    let mut args = sys::CloneArgs {
        flags: pidfd_flag | CLONE_CLEAR_SIGHAND | parent_flag | cgroup_flag,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal,
        cgroup,
        ..sys::CloneArgs::default()
    };
    let ret = match &stack {
        Some(stack) => {
            args.flags |= libc::CLONE_VM as u64;
            args.stack = stack.base as u64;
            args.stack_size = STACK_SIZE as u64;
            // SAFETY: the stack is mapped for as long as the Launch lives, which the
            // supervisor keeps until the child has exec'd or ended (EOF on its error
            // pipe: its copy closes at exec, after the kernel has left this memory,
            // or at exit); its top is page aligned. `child_entry` never returns,
            // reads only `ctx` (boxed, not changed while the Launch lives), writes
            // only to its own stack and makes raw system calls only. The fds it
            // names stay open in the parent until clone3 has returned (the child
            // has its own table).
            unsafe { sys::clone3(&mut args, child_entry, &*ctx as *const Ctx as *const u8) }
        }
        None => {
            // SAFETY: clone3 without CLONE_VM or a stack of its own: as fork(2),
            // the child carries on from here with a copy of this memory, in which
            // `child` reads `ctx` and never returns.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &mut args as *mut sys::CloneArgs,
                    std::mem::size_of::<sys::CloneArgs>(),
                )
            };
            if ret == 0 {
                // SAFETY: in the child, with its copy of `ctx`.
                unsafe { child(&ctx) }
            }
            if ret < 0 {
                -(io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINVAL) as isize)
            } else {
                ret as isize
            }
        }
    };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    go.waiting += 1;
    drop((script, err_write, log, ready, cgroup_dir));
    // SAFETY: CLONE_PIDFD (asked for by `plan.pidfd`) stored a new pidfd that
    // nothing else owns.
    let pidfd = ctx
        .plan
        .pidfd
        .then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok(Spawned {
        pid: ret as i32,
        pidfd,
        launch: Launch {
            errors: err_read,
            _ctx: ctx,
            stack,
        },
    })
}

/// `CLONE_CLEAR_SIGHAND` (linux/sched.h, Linux 5.5): handled signals start at
/// their defaults in the child.
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// What a child needs until it execs, and keeps it alive: the supervisor holds a
/// Launch until [`Launch::report`] says [`Report::Done`] (the child exec'd or
/// ended), since the child reads it and runs on its stack until then.
pub struct Launch {
    /// The read end of the child's error pipe (non-blocking): EOF once it exec'd
    /// or ended, a [`SetupError`] record if its setup or exec failed.
    errors: OwnedFd,
    _ctx: Box<Ctx>,
    stack: Option<Stack>,
}

impl Drop for Launch {
    /// The child no longer runs on its stack: another child may.
    fn drop(&mut self) {
        if let Some(stack) = self.stack.take() {
            stack.give_back();
        }
    }
}

impl Launch {
    pub fn errors(&self) -> BorrowedFd<'_> {
        self.errors.as_fd()
    }

    /// What the child's error pipe says, read without blocking.
    pub fn report(&self) -> Report {
        read_report(&self.errors)
    }

    /// `failure` in words, naming the path of a failed sandbox mount
    /// (`read-only /srv: Permission denied`).
    pub fn describe(&self, failure: &SetupError) -> String {
        let mounts = &self._ctx.plan.setup.mounts;
        match mounts.get(failure.arg as usize) {
            Some(m) if failure.step == Step::Mount => format!(
                "{} {}: {}",
                m.stanza,
                m.path.to_string_lossy(),
                strerror(failure.errno)
            ),
            _ => failure.describe(),
        }
    }
}

/// Everything the child reads: its plan, argv and envp as the kernel takes them
/// (pointers into the plan's strings), where its fds are.
struct Ctx {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` text (NUL-padded) that `envp` points at; the child writes
    /// its pid into it, the supervisor never touches it while the child runs.
    listen_pid: Option<Box<std::cell::UnsafeCell<[u8; LISTEN_PID_TEXT]>>>,
    fds: ChildFds,
    /// [`ignored_signals`].
    ignored: u64,
    /// The plan's `limit`s as rustix takes them, with their numbers.
    limits: Vec<(u32, rustix::process::Resource, rustix::process::Rlimit)>,
    /// The plan's supplementary groups as rustix takes them.
    groups: Vec<rustix::process::Gid>,
    plan: Plan,
}

/// The stack a child runs on until it execs: [`STACK_SIZE`] bytes above a guard
/// page that is never mapped, so an overflow faults in the child instead of
/// writing over the supervisor's memory.
struct Stack {
    /// The lowest usable byte (just above the guard page).
    base: *mut u8,
}

const STACK_SIZE: usize = 32 * 1024;
const GUARD: usize = 4096;
/// Stacks kept for the next children (a batch's worth): making and removing a
/// mapping of the memory a thousand children share costs more than the spawn.
const POOLED_STACKS: usize = 64;

thread_local! {
    static STACKS: std::cell::RefCell<Vec<Stack>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Stack {
    /// A stack from the pool, or a new one.
    fn take() -> io::Result<Stack> {
        match STACKS.with(|s| s.borrow_mut().pop()) {
            Some(stack) => Ok(stack),
            None => Stack::new(),
        }
    }

    /// Back to the pool (or unmapped, if it is full).
    fn give_back(self) {
        STACKS.with(|s| {
            let mut pool = s.borrow_mut();
            if pool.len() < POOLED_STACKS {
                pool.push(self);
            }
        });
    }

    fn new() -> io::Result<Stack> {
        use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
        // SAFETY: a fresh anonymous mapping, owned by the Stack (unmapped on drop).
        let map = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                GUARD + STACK_SIZE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::STACK,
            )?
        };
        // SAFETY: the first page of the mapping just made.
        if let Err(e) = unsafe { rustix::mm::mprotect(map, GUARD, MprotectFlags::empty()) } {
            // SAFETY: the mapping just made, not used by anyone.
            let _ = unsafe { rustix::mm::munmap(map, GUARD + STACK_SIZE) };
            return Err(e.into());
        }
        Ok(Stack {
            base: (map as *mut u8).wrapping_add(GUARD),
        })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made; no child runs on it any more (see Launch).
        let _ = unsafe {
            rustix::mm::munmap(
                self.base.wrapping_sub(GUARD) as *mut std::ffi::c_void,
                GUARD + STACK_SIZE,
            )
        };
    }
}

/// The child's source fds (all ≥ 64, so moving them to their targets clobbers none).
struct ChildFds {
    script: Option<i32>,
    go: i32,
    errors: i32,
    log: Option<i32>,
    /// `expect fd N`: (source, N).
    ready: Option<(i32, i32)>,
    /// Socket activation's listening socket, moved to [`LISTEN_FD`].
    listen: Option<i32>,
}

/// The child's calls. Every one goes through rustix's linux_raw backend: straight
/// to the kernel, no libc, nothing written to `errno` (which, with `CLONE_VM`,
/// would be the supervisor's), nothing allocated. `close_range` alone is missing
/// from rustix 1.0: [`close_from`]. Nothing here may panic — with `CLONE_VM` a
/// panic would unwind through the supervisor's memory — so an fd that may be
/// closed already is closed by `close_from` (rustix's `close` asserts success in
/// debug builds), and no `OwnedFd` is dropped (that is libc's close).
mod calls {
    use rustix::fd::{BorrowedFd, FromRawFd, OwnedFd};
    pub use rustix::io::{Errno, Result};
    use std::mem::ManuallyDrop;

    /// The child's fd `n`, which it owns until exec and closes by number.
    ///
    /// # Safety
    /// `n` must be open in the child while the result is used.
    pub unsafe fn fd(n: i32) -> BorrowedFd<'static> {
        // SAFETY: as the caller's.
        unsafe { BorrowedFd::borrow_raw(n) }
    }

    /// `dup3(from, to)` (`dup2` without `cloexec`) on the child's fd numbers.
    ///
    /// # Safety
    /// `from` must be open in the child; `to` is replaced.
    pub unsafe fn dup_to(from: i32, to: i32, cloexec: bool) -> Result<()> {
        // SAFETY: `to` is only named here, never closed by the wrapper (the
        // kernel replaces it in place); `from` is open (the caller's promise).
        let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(to) });
        let source = unsafe { fd(from) };
        if cloexec {
            rustix::io::dup3(source, &mut target, rustix::io::DupFlags::CLOEXEC)
        } else {
            rustix::io::dup2(source, &mut target)
        }
    }

    /// Closes the child's fd `n`.
    ///
    /// # Safety
    /// Nothing may use `n` afterwards.
    pub unsafe fn close(n: i32) {
        // SAFETY: as the caller's.
        unsafe { rustix::io::close(n) }
    }

    /// `close_range(first, last)`, which rustix 1.0 lacks: keel's own raw call
    /// where it has one (x86_64, shared memory), else libc's (only the forked
    /// child runs there: its `errno` is its own copy).
    ///
    /// # Safety
    /// Nothing may use the closed fds afterwards.
    pub unsafe fn close_from(first: u32, last: u32) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: close_range takes no pointer.
        unsafe {
            super::sys::syscall(libc::SYS_close_range, first as usize, last as usize, 0);
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: close_range takes no pointer.
        unsafe {
            libc::syscall(libc::SYS_close_range, first, last, 0);
        }
    }
}

const LISTEN_PID_VAR: &[u8] = b"LISTEN_PID=";
/// The variable, up to 20 digits, and its NUL.
const LISTEN_PID_TEXT: usize = 32;

/// Writes `LISTEN_PID=PID` (NUL-terminated) into `text`, which holds the
/// variable's name already; no allocation (the child may not allocate).
fn write_pid(text: &mut [u8; LISTEN_PID_TEXT], pid: isize) {
    let mut digits = [0u8; 20];
    let mut n = pid.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 || len == digits.len() {
            break;
        }
    }
    let start = LISTEN_PID_VAR.len();
    for i in 0..len {
        text[start + i] = digits[len - 1 - i];
    }
    text[start + len] = 0;
}

/// The sandbox's two system calls that rustix 1.0 does not make (`mount_setattr`,
/// `seccomp`): keel's own raw calls on x86_64; elsewhere libc's, which only the
/// forked child reaches (its `errno` is its own copy). Each returns 0 or `-errno`.
/// Every other call of the child goes through rustix (linux_raw: no `errno`).
mod raw {
    #[cfg(target_arch = "x86_64")]
    pub use super::sys::{syscall, syscall6};
    pub use libc::{SYS_mount_setattr, SYS_seccomp};

    /// # Safety
    /// As the system call's.
    #[cfg(not(target_arch = "x86_64"))]
    pub unsafe fn syscall6(
        nr: libc::c_long,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        e: usize,
        f: usize,
    ) -> isize {
        // SAFETY: as the caller's.
        let r = unsafe { libc::syscall(nr, a, b, c, d, e, f) };
        if r == -1 {
            -(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO) as isize)
        } else {
            r as isize
        }
    }

    /// # Safety
    /// As the system call's.
    #[cfg(not(target_arch = "x86_64"))]
    pub unsafe fn syscall(nr: libc::c_long, a: usize, b: usize, c: usize) -> isize {
        // SAFETY: as the caller's.
        unsafe { syscall6(nr, a, b, c, 0, 0, 0) }
    }
}

/// Ends the child with `code`.
fn exit(code: i32) -> ! {
    rustix::runtime::exit_group(code)
}

/// Reports `step` (the failed call's `errno`) on the error pipe and ends the
/// child.
///
/// # Safety
/// Only in the child, after the error pipe is at [`ERR_FD`].
unsafe fn fail_raw(step: Step, arg: u32, result: isize, code: i32) -> ! {
    // SAFETY: as the caller's.
    unsafe {
        fail(
            step,
            arg,
            calls::Errno::from_raw_os_error(-result as i32),
            code,
        )
    }
}

/// Reports `step` (the failed call's `errno`) on the error pipe and ends the
/// child.
///
/// # Safety
/// Only in the child, after the error pipe is at [`ERR_FD`].
unsafe fn fail(step: Step, arg: u32, errno: calls::Errno, code: i32) -> ! {
    let record = SetupError {
        step,
        arg,
        errno: errno.raw_os_error(),
    }
    .encode();
    // SAFETY: the error pipe is at ERR_FD (the caller's promise).
    let _ = rustix::io::write(unsafe { calls::fd(ERR_FD) }, &record);
    exit(code)
}

/// The result of a setup step, or the child ends reporting it as `step`.
///
/// # Safety
/// Only in the child, after the error pipe is at [`ERR_FD`].
unsafe fn check<T>(result: calls::Result<T>, step: Step, arg: u32) -> T {
    match result {
        Ok(value) => value,
        // SAFETY: as the caller's.
        Err(e) => unsafe { fail(step, arg, e, SETUP_FAILED) },
    }
}

/// Where the child starts (see `sys::clone3`).
///
/// # Safety
/// Only as the entry of a child spawned by [`spawn`], with its [`Ctx`].
unsafe extern "C" fn child_entry(ctx: *const u8) -> ! {
    // SAFETY: `spawn` passes its boxed Ctx, alive until the child execs or ends.
    unsafe { child(&*(ctx as *const Ctx)) }
}

/// The child's side: set up, wait for go, exec. Never returns. The order of the
/// steps, and why, is in the module docs.
///
/// # Safety
/// Must only be called in a child of [`spawn`]; touches only `c` and its stack.
unsafe fn child(c: &Ctx) -> ! {
    use calls::{close, close_from, dup_to, fd};
    let (plan, fds) = (&c.plan, &c.fds);
    // SAFETY (the whole function): system calls on the Ctx's data, on locals of
    // this stack and on the child's own fd numbers, in the child only.
    unsafe {
        // Not the supervisor any more: say so to `ps` (and to anyone looking for the
        // supervisor by name) until exec gives the job its own name.
        let _ = rustix::thread::set_name(c"keel-spawn");
        // Signals: the supervisor blocks some and ignores SIGPIPE; a job starts with
        // defaults (CLONE_CLEAR_SIGHAND reset the handled ones) and nothing blocked.
        let none = rustix::runtime::KernelSigSet::empty();
        let _ = rustix::runtime::kernel_sigprocmask(rustix::runtime::How::SETMASK, Some(&none));
        for sig in 1..=64i32 {
            if c.ignored & (1 << (sig - 1)) != 0 {
                let default = rustix::runtime::KernelSigaction::default();
                let signal = rustix::process::Signal::from_raw_unchecked(sig);
                let _ = rustix::runtime::kernel_sigaction(signal, Some(default));
            }
        }
        // Its own session and process group, so signals reach every process of the job.
        let _ = rustix::process::setsid();

        // The error pipe first, so every later failure can be reported.
        if dup_to(fds.errors, ERR_FD, true).is_err() {
            exit(SETUP_FAILED);
        }
        stdio(plan, fds);
        if let Some(script) = fds.script {
            let _ = dup_to(script, SCRIPT_FD, false);
        }
        let _ = dup_to(fds.go, GO_FD, false);
        // The listening socket at 3, kept across the exec (dup2 clears CLOEXEC).
        let first_free = match fds.listen {
            Some(source) => {
                let _ = dup_to(source, LISTEN_FD, false);
                LISTEN_FD + 1
            }
            None => LISTEN_FD,
        };
        let last = match fds.ready {
            Some((source, _)) => {
                let _ = dup_to(source, READY_FD, false);
                READY_FD
            }
            None => ERR_FD,
        };
        // Every other fd closed: nothing of the supervisor leaks into a job.
        close_from(first_free as u32, SCRIPT_FD as u32 - 1);
        if fds.script.is_none() {
            // By number: it may not be open (and rustix's close asserts it was).
            close_from(SCRIPT_FD as u32, SCRIPT_FD as u32);
        }
        close_from(last as u32 + 1, u32::MAX);

        let s = &plan.setup;
        if let Some(value) = &s.oom_score_adj {
            write_file(c"/proc/self/oom_score_adj", value, Step::OomScoreAdj);
        }
        if let Some((attr, label)) = &s.apparmor {
            write_file(attr, label, Step::AppArmor);
        }
        for &(number, resource, limit) in &c.limits {
            check(
                rustix::process::setrlimit(resource, limit),
                Step::Setrlimit,
                number,
            );
        }
        if let Some(nice) = s.nice {
            check(
                rustix::process::setpriority_process(None, nice),
                Step::Nice,
                0,
            );
        }

        if !s.mounts.is_empty() {
            mount_namespace(&s.mounts);
        }
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(plan.umask as _));
        if let Some(root) = &s.chroot {
            check(rustix::process::chroot(root.as_c_str()), Step::Chroot, 0);
        }
        check(
            rustix::process::chdir(plan.chdir.as_c_str()),
            Step::Chdir,
            0,
        );

        if let Some(keep) = s.capabilities {
            for cap in 0..=s.last_cap {
                if keep & (1 << cap) == 0 {
                    let dropped = capability(cap)
                        .ok_or(calls::Errno::INVAL)
                        .and_then(rustix::thread::remove_capability_from_bounding_set);
                    check(dropped, Step::BoundingSet, cap);
                }
            }
        }
        let ambient = s
            .capabilities
            .filter(|&c| c != 0 && s.ids.as_ref().is_some_and(|i| i.uid.is_some()));
        if let Some(ids) = &s.ids {
            if ambient.is_some() {
                check(
                    rustix::thread::set_keep_capabilities(true),
                    Step::KeepCaps,
                    0,
                );
            }
            // The thread's own calls are the process's: the child is one thread.
            check(
                rustix::thread::set_thread_groups(&c.groups),
                Step::Setgroups,
                0,
            );
            let gid = rustix::process::Gid::from_raw(ids.gid);
            check(rustix::thread::set_thread_gid(gid), Step::Setgid, 0);
            if let Some(uid) = ids.uid {
                let uid = rustix::process::Uid::from_raw(uid);
                check(rustix::thread::set_thread_uid(uid), Step::Setuid, 0);
            }
        }
        if let Some(keep) = s.capabilities {
            let set = rustix::thread::CapabilityFlags::from_bits_retain(keep);
            let sets = rustix::thread::CapabilitySets {
                effective: set,
                permitted: set,
                inheritable: set,
            };
            check(
                rustix::thread::set_capabilities(None, sets),
                Step::Capset,
                0,
            );
        }
        if let Some(keep) = ambient {
            for cap in 0..=s.last_cap {
                if keep & (1 << cap) != 0 {
                    let raised = capability(cap)
                        .ok_or(calls::Errno::INVAL)
                        .and_then(|c| rustix::thread::configure_capability_in_ambient_set(c, true));
                    check(raised, Step::Ambient, cap);
                }
            }
        }
        if s.no_new_privs {
            check(rustix::thread::set_no_new_privs(true), Step::NoNewPrivs, 0);
        }

        // Wait until the supervisor has saved this pid (see the module docs).
        let mut byte = [0u8];
        loop {
            match rustix::io::read(fd(GO_FD), &mut byte) {
                Ok(1) => break,
                Err(calls::Errno::INTR) => continue,
                _ => exit(NOT_RELEASED),
            }
        }
        close(GO_FD);
        // `expect fd N`: the readiness socket at N (`reserved_fd` keeps N clear of
        // what is still needed), open across the exec.
        if let Some((_, n)) = fds.ready
            && n != READY_FD
        {
            let _ = dup_to(READY_FD, n, false);
            close(READY_FD);
        }
        if let Some(text) = &c.listen_pid {
            // SAFETY (of the enclosing block's deref): the text is this child's
            // alone (see `Ctx::listen_pid`), and nothing else refers into it.
            write_pid(
                &mut *text.get(),
                rustix::process::getpid().as_raw_nonzero().get() as isize,
            );
        }

        // The system-call filter last: nothing but the exec follows it.
        if !s.syscall_filters.is_empty()
            && let Err(e) = rustix::thread::set_no_new_privs(true)
        {
            fail(Step::NoNewPrivs, 0, e, SETUP_FAILED);
        }
        for filter in s.syscall_filters.iter() {
            let program = SockFprog {
                len: filter.len() as u16,
                filter: filter.as_ptr(),
            };
            let r = raw::syscall(
                raw::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as usize,
                0,
                &program as *const SockFprog as usize,
            );
            if r != 0 {
                fail_raw(Step::SyscallFilter, 0, r, SETUP_FAILED);
            }
        }
        let program = c.plan.argv[0].as_c_str();
        let e = rustix::runtime::execve(
            program,
            c.argv.as_ptr() as *const *const u8,
            c.envp.as_ptr() as *const *const u8,
        );
        let code = if e == calls::Errno::NOENT { 127 } else { 126 };
        fail(Step::Exec, 0, e, code)
    }
}

/// The kernel's `struct mount_attr` (linux/mount.h) for `mount_setattr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The kernel's `struct sock_fprog` (linux/filter.h) for `seccomp`.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const seccompiler::sock_filter,
}

/// `MOUNT_ATTR_RDONLY` (linux/mount.h).
const MOUNT_ATTR_RDONLY: u64 = 1;

/// The pseudo-devices of `private devices`: name, major, minor.
const PSEUDO_DEVICES: [(&std::ffi::CStr, u32, u32); 6] = [
    (c"/dev/null", 1, 3),
    (c"/dev/zero", 1, 5),
    (c"/dev/full", 1, 7),
    (c"/dev/random", 1, 8),
    (c"/dev/urandom", 1, 9),
    (c"/dev/tty", 5, 0),
];

/// The links of `private devices`: link, target.
const DEVICE_LINKS: [(&std::ffi::CStr, &std::ffi::CStr); 4] = [
    (c"/dev/fd", c"/proc/self/fd"),
    (c"/dev/stdin", c"/proc/self/fd/0"),
    (c"/dev/stdout", c"/proc/self/fd/1"),
    (c"/dev/stderr", c"/proc/self/fd/2"),
];

/// A mount namespace of the child's own, with its mounts made private first so
/// that nothing done here reaches the supervisor's namespace, then `mounts` in
/// order. Read-only and writable are per-mount attributes (`mount_setattr`),
/// never a remount of a filesystem, which would change it for the host too.
///
/// # Safety
/// Only in the child, after the error pipe is at [`ERR_FD`].
unsafe fn mount_namespace(mounts: &[ChildMount]) {
    use rustix::mount::{MountFlags, MountPropagationFlags, mount_bind, mount_change};
    // SAFETY (the whole function): only in the child, after the error pipe is at
    // ERR_FD (`fail` reports there and exits); the child has its own file table
    // (CLONE_FILES is never set), so unsharing its mount namespace touches no other
    // thread of the supervisor; every path is a C string of the Setup or a constant.
    unsafe {
        if let Err(e) = rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) {
            fail(Step::MountNamespace, 0, e, SETUP_FAILED);
        }
        if let Err(e) = mount_change(
            c"/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
        ) {
            fail(Step::MountNamespace, 0, e, SETUP_FAILED);
        }
        // Devices and directories made here get exactly the modes asked for.
        rustix::process::umask(rustix::fs::Mode::empty());
        for (index, step) in mounts.iter().enumerate() {
            let path = step.path.as_c_str();
            let done = match step.op {
                MountOp::ReadOnly => set_read_only(path, true),
                MountOp::Writable => set_read_only(path, false),
                MountOp::HideDirectory => rustix::mount::mount(
                    c"tmpfs",
                    path,
                    c"tmpfs",
                    MountFlags::RDONLY
                        | MountFlags::NOSUID
                        | MountFlags::NODEV
                        | MountFlags::NOEXEC,
                    c"mode=000",
                ),
                MountOp::HideFile => mount_bind(INACCESSIBLE, path)
                    .and_then(|()| set_attr(path, 0, MOUNT_ATTR_RDONLY, 0)),
                MountOp::Tmpfs => rustix::mount::mount(
                    c"tmpfs",
                    path,
                    c"tmpfs",
                    MountFlags::NOSUID | MountFlags::NODEV,
                    c"mode=1777",
                ),
                MountOp::Devices => private_devices(path),
            };
            if let Err(e) = done {
                fail(Step::Mount, index as u32, e, SETUP_FAILED);
            }
        }
    }
}

/// [`INACCESSIBLE_FILE`] as the child passes it (a test checks they agree).
const INACCESSIBLE: &std::ffi::CStr = c"/run/keel/inaccessible";

/// `mount_setattr(path, flags, {set, clear})`, which rustix 1.0 lacks: keel's
/// raw call (no `errno`, as the child may share the supervisor's memory).
fn set_attr(path: &std::ffi::CStr, flags: u32, set: u64, clear: u64) -> rustix::io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a NUL-terminated path and a mount_attr of the size passed, both
    // alive for the call.
    let r = unsafe {
        raw::syscall6(
            raw::SYS_mount_setattr,
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            flags as usize,
            &attr as *const MountAttr as usize,
            std::mem::size_of::<MountAttr>(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(rustix::io::Errno::from_raw_os_error(-r as i32))
    }
}

/// `path` and everything mounted below it read-only (or writable again). A
/// path that is no mount point of its own is first bound onto itself.
fn set_read_only(path: &std::ffi::CStr, read_only: bool) -> rustix::io::Result<()> {
    let (set, clear) = if read_only {
        (MOUNT_ATTR_RDONLY, 0)
    } else {
        (0, MOUNT_ATTR_RDONLY)
    };
    match set_attr(path, libc::AT_RECURSIVE as u32, set, clear) {
        Err(rustix::io::Errno::INVAL) => {
            rustix::mount::mount_bind_recursive(path, path)?;
            set_attr(path, libc::AT_RECURSIVE as u32, set, clear)
        }
        done => done,
    }
}

/// A tmpfs at `dev` (`/dev`) with only [`PSEUDO_DEVICES`] and [`DEVICE_LINKS`],
/// and an empty `shm` and `pts`. The child calls it with umask 0.
fn private_devices(dev: &std::ffi::CStr) -> rustix::io::Result<()> {
    use rustix::fs::{CWD, FileType, Mode, makedev, mkdirat, mknodat, symlinkat};
    rustix::mount::mount(
        c"tmpfs",
        dev,
        c"tmpfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NOEXEC,
        c"mode=755",
    )?;
    for (path, major, minor) in PSEUDO_DEVICES {
        let mode = Mode::from_raw_mode(0o666);
        mknodat(
            CWD,
            path,
            FileType::CharacterDevice,
            mode,
            makedev(major, minor),
        )?;
    }
    for (link, target) in DEVICE_LINKS {
        symlinkat(target, CWD, link)?;
    }
    for (dir, mode) in [(c"/dev/shm", 0o1777), (c"/dev/pts", 0o755)] {
        mkdirat(CWD, dir, Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

/// fds 0–2 per `console`.
///
/// # Safety
/// Only in the child, after the error pipe is at [`ERR_FD`].
unsafe fn stdio(plan: &Plan, fds: &ChildFds) {
    use rustix::fd::IntoRawFd;
    use rustix::fs::{CWD, Mode, OFlags};
    // Opened without close-on-exec, moved to 0–2 below (the originals are closed
    // with every other fd).
    let open = |path: &std::ffi::CStr, flags: OFlags| {
        rustix::fs::openat(CWD, path, flags, Mode::empty()).map(IntoRawFd::into_raw_fd)
    };
    // SAFETY (the whole function): system calls on locals and the child's own
    // fd numbers, in the child.
    unsafe {
        let null = check(open(c"/dev/null", OFlags::RDWR), Step::Stdio, 0);
        let (input, output) = match plan.console {
            Console::None => (null, null),
            // The console for output, never as controlling terminal.
            Console::Output => match open(c"/dev/console", OFlags::RDWR | OFlags::NOCTTY) {
                Ok(c) => (c, c),
                Err(_) => (null, null),
            },
            Console::Owner => {
                // The console as controlling terminal, this process group in its
                // foreground: ctrl-C on the console reaches the job.
                let c = check(open(c"/dev/console", OFlags::RDWR), Step::Stdio, 0);
                let console = calls::fd(c);
                check(rustix::process::ioctl_tiocsctty(console), Step::Stdio, 0);
                let _ = rustix::termios::tcsetpgrp(console, rustix::process::getpid());
                (c, c)
            }
            Console::Log => (null, fds.log.unwrap_or(null)),
        };
        for (from, to) in [(input, 0), (output, 1), (output, 2)] {
            check(calls::dup_to(from, to, false), Step::Stdio, 0);
        }
    }
}

/// Writes `value` to the file at `path` (a /proc attribute), or fails as `step`.
///
/// # Safety
/// Only in the child, after the error pipe is at [`ERR_FD`].
unsafe fn write_file(path: &std::ffi::CStr, value: &std::ffi::CStr, step: Step) {
    use rustix::fs::{CWD, Mode, OFlags};
    // SAFETY (the whole function): as the caller's.
    unsafe {
        let fd = check(
            rustix::fs::openat(CWD, path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()),
            step,
            0,
        );
        let bytes = value.to_bytes();
        match rustix::io::write(&fd, bytes) {
            Ok(n) if n == bytes.len() => {}
            Ok(_) => fail(step, 0, calls::Errno::IO, SETUP_FAILED),
            Err(e) => fail(step, 0, e, SETUP_FAILED),
        }
        // rustix's close, not the drop of an OwnedFd (libc's).
        calls::close(rustix::fd::IntoRawFd::into_raw_fd(fd));
    }
}

/// Capability `n` as rustix names it (0 ..= 40, what Linux 5.9 and later know).
/// A kernel that knows more than keel can name: the step fails (EINVAL) rather
/// than leave a capability the job was not given.
fn capability(n: u32) -> Option<rustix::thread::Capability> {
    use rustix::thread::Capability::*;
    const ALL: [rustix::thread::Capability; 41] = [
        ChangeOwnership,
        DACOverride,
        DACReadSearch,
        FileOwner,
        FileSetID,
        Kill,
        SetGroupID,
        SetUserID,
        SetPermittedCapabilities,
        LinuxImmutable,
        NetBindService,
        NetBroadcast,
        NetAdmin,
        NetRaw,
        IPCLock,
        IPCOwner,
        SystemModule,
        SystemRawIO,
        SystemChangeRoot,
        SystemProcessTrace,
        SystemProcessAccounting,
        SystemAdmin,
        SystemBoot,
        SystemNice,
        SystemResource,
        SystemTime,
        SystemTTYConfig,
        MakeNode,
        Lease,
        AuditWrite,
        AuditControl,
        SetFileCapabilities,
        MACOverride,
        MACAdmin,
        SystemLog,
        WakeAlarm,
        BlockSuspend,
        AuditRead,
        PerformanceMonitoring,
        BerkeleyPacketFilters,
        CheckpointRestore,
    ];
    ALL.get(n as usize).copied()
}

/// A `limit` stanza's resource (its `libc` number, as `Setup` keeps it) as rustix
/// names it.
fn rustix_resource(number: u32) -> Option<rustix::process::Resource> {
    use rustix::process::Resource as R;
    [
        R::As,
        R::Core,
        R::Cpu,
        R::Data,
        R::Fsize,
        R::Memlock,
        R::Msgqueue,
        R::Nice,
        R::Nofile,
        R::Nproc,
        R::Rss,
        R::Rtprio,
        R::Rttime,
        R::Sigpending,
        R::Stack,
    ]
    .into_iter()
    .find(|r| *r as u32 == number)
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
    #[test]
    fn the_child_writes_its_pid_after_listen_pid() {
        for (pid, text) in [
            (1, "LISTEN_PID=1"),
            (32768, "LISTEN_PID=32768"),
            (4194304, "LISTEN_PID=4194304"),
        ] {
            let mut buf = [0u8; super::LISTEN_PID_TEXT];
            buf[..super::LISTEN_PID_VAR.len()].copy_from_slice(super::LISTEN_PID_VAR);
            super::write_pid(&mut buf, pid);
            let end = buf.iter().position(|&b| b == 0).unwrap();
            assert_eq!(std::str::from_utf8(&buf[..end]).unwrap(), text);
        }
    }

    use super::*;

    #[test]
    fn the_child_hides_files_behind_the_file_the_supervisor_makes() {
        assert_eq!(INACCESSIBLE.to_str(), Ok(crate::sandbox::INACCESSIBLE_FILE));
    }

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

    fn plan(argv: &[&str]) -> Plan {
        Plan {
            argv: argv.iter().map(|a| CString::new(*a).unwrap()).collect(),
            env: vec![CString::new("PATH=/usr/bin:/bin").unwrap()],
            script: None,
            console: Console::None,
            log: None,
            chdir: CString::new("/").unwrap(),
            umask: 0o022,
            init_child: false,
            pidfd: true,
            cgroup: None,
            ready_fd: None,
            listen_fd: None,
            setup: Setup::default(),
        }
    }

    /// Releases `child` and waits until its error pipe has said all it will.
    fn run(child: &Spawned, go: &GoPipe) -> Option<SetupError> {
        release(&go.write, 1);
        let mut failure = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match child.launch.report() {
                Report::Failed(f) => failure = Some(f),
                Report::Done => return failure,
                Report::Pending => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no word from the child"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }

    fn wait(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid(2) of our own child, into a local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    /// Every way of spawning, each test run through each.
    const METHODS: [Method; 2] = [Method::SharedMemory, Method::Fork];

    #[test]
    fn a_child_starts_with_default_signals_and_reports_a_failed_exec() {
        for method in METHODS {
            a_child_starts_clean_by(method);
        }
    }

    fn a_child_starts_clean_by(method: Method) {
        // This test process ignores SIGPIPE (Rust does) and runs other threads: a
        // job gets neither that nor any blocked signal.
        let mut go = GoPipe::new().unwrap();
        let child = spawn_by(method, plan(&["/bin/sleep", "30"]), &mut go).unwrap();
        assert_eq!(run(&child, &go), None, "it exec'd");
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.pid)).unwrap();
        for field in ["SigIgn:", "SigBlk:"] {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            assert!(line.ends_with("0000000000000000"), "{line}");
        }
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.pid, libc::SIGKILL) };
        assert_eq!(wait(child.pid), libc::SIGKILL);

        let mut go = GoPipe::new().unwrap();
        let child = spawn_by(method, plan(&["/nonexistent/program"]), &mut go).unwrap();
        let failure = run(&child, &go).expect("a failure record");
        assert_eq!((failure.step, failure.errno), (Step::Exec, libc::ENOENT));
        let status = wait(child.pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 127);
    }

    #[test]
    fn a_child_never_released_ends_without_exec() {
        for method in METHODS {
            let mut go = GoPipe::new().unwrap();
            let child = spawn_by(method, plan(&["/bin/true"]), &mut go).unwrap();
            drop(go);
            let status = wait(child.pid);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == NOT_RELEASED);
            assert_eq!(child.launch.report(), Report::Done, "{method:?}");
        }
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
