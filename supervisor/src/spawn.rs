//! Starting job processes: the single spawn path.
//!
//! Every job process is created with `clone3(CLONE_PARENT | CLONE_PIDFD)` when the
//! supervisor runs under keel-init, so it is keel-init's child from birth: keel-init
//! reaps it and relays its exit through the exit log, whether or not a supervisor is
//! alive at that moment (DESIGN.md, invariant 2: one path for every exit). Without
//! keel-init the supervisor is the parent (and a subreaper) and reaps itself.
//!
//! Exactly-once spawning across a crash: the child sets itself up, then blocks on a
//! "go" pipe before exec. All children spawned in one round of the event loop share
//! one [`GoPipe`], whose write end is also deposited in keel-init's lifeboat. The
//! supervisor saves the state recording the children's pids (and that this round is
//! to be released), then writes one byte per child. A supervisor killed before the
//! save leaves a state without those pids: its successor withdraws the pipe from the
//! lifeboat, the children read EOF and exit without ever exec'ing, and the
//! successor starts them anew. Killed after the save, its successor finds the round
//! marked for release and releases it from the lifeboat's copy. So a process either
//! runs and is in the saved state, or never ran.
//!
//! Everything the child needs (paths, argv, envp) is prepared in the parent; the child
//! runs only raw syscalls, then execs or `_exit`s. The supervisor is single-threaded,
//! so the child of a clone without `CLONE_VM` is an ordinary copy with no lock held.

use crate::job::Console;
use rustix::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ffi::CString;
use std::io;

/// The fd at which a script's text is readable in the child (`/proc/self/fd/9`).
pub const SCRIPT_FD: i32 = 9;
/// The fd the child waits on for "go".
const GO_FD: i32 = 10;
/// The exit status of a child that was never released (its supervisor died first).
pub const NOT_RELEASED: i32 = 125;

/// Everything needed to start one process.
pub struct Plan {
    /// argv[0] is the program as found on PATH (an absolute path).
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// A script's text, fed to the interpreter as `/proc/self/fd/9`.
    pub script: Option<Vec<u8>>,
    pub console: Console,
    /// For `console log`: the file stdout and stderr append to.
    pub log_path: Option<CString>,
    pub chdir: CString,
    pub umask: u32,
    /// Spawn as keel-init's child (`CLONE_PARENT`).
    pub init_child: bool,
}

/// A started child, not yet released.
pub struct Spawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
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

pub fn spawn(plan: &Plan, go: &mut GoPipe) -> io::Result<Spawned> {
    let script = match &plan.script {
        Some(text) => Some(high(script_memfd(text)?)?),
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
    let console = c"/dev/console";
    let devnull = c"/dev/null";

    let mut pidfd: libc::c_int = -1;
    let (parent_flag, exit_signal) = if plan.init_child {
        // With CLONE_PARENT the kernel requires exit_signal 0: the child inherits the
        // supervisor's own exit signal (SIGCHLD, as keel-init forked it), sent to keel-init.
        (libc::CLONE_PARENT as u64, 0)
    } else {
        (0, libc::SIGCHLD as u64)
    };
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64 | parent_flag,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal,
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
        unsafe {
            child(
                plan,
                &argv,
                &envp,
                script.as_ref().map(|f| f.as_raw_fd()),
                go.read.as_raw_fd(),
                console,
                devnull,
            )
        }
    }
    go.waiting += 1;
    drop(script);
    // SAFETY: CLONE_PIDFD stored a new pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned {
        pid: ret as i32,
        pidfd,
    })
}

/// The child's side: set up, wait for go, exec. Never returns.
///
/// # Safety
/// Must only be called in the child of `clone3` in `spawn`, with pointers valid there.
unsafe fn child(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    script: Option<i32>,
    go: i32,
    console: &std::ffi::CStr,
    devnull: &std::ffi::CStr,
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

        // stdio per `console`.
        let null = libc::open(devnull.as_ptr(), libc::O_RDWR);
        let (input, output) = match plan.console {
            Console::None => (null, null),
            Console::Output | Console::Owner => {
                let flags = if plan.console == Console::Owner {
                    libc::O_RDWR
                } else {
                    libc::O_RDWR | libc::O_NOCTTY
                };
                let c = libc::open(console.as_ptr(), flags);
                if c >= 0 && plan.console == Console::Owner {
                    libc::ioctl(c, libc::TIOCSCTTY, 1);
                }
                if c >= 0 { (c, c) } else { (null, null) }
            }
            Console::Log => {
                let out = match &plan.log_path {
                    Some(p) => libc::open(
                        p.as_ptr(),
                        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOCTTY,
                        0o640,
                    ),
                    None => -1,
                };
                (null, if out >= 0 { out } else { null })
            }
        };
        libc::dup2(input, 0);
        libc::dup2(output, 1);
        libc::dup2(output, 2);
        if let Some(fd) = script {
            libc::dup2(fd, SCRIPT_FD);
        }
        libc::dup2(go, GO_FD);
        // Every other fd closed: nothing of the supervisor leaks into a job.
        libc::close_range(3, SCRIPT_FD as u32 - 1, 0);
        if script.is_none() {
            libc::close(SCRIPT_FD);
        }
        libc::close_range(GO_FD as u32 + 1, u32::MAX, 0);

        libc::umask(plan.umask as libc::mode_t);
        if libc::chdir(plan.chdir.as_ptr()) != 0 {
            libc::_exit(126);
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

        libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
        let code = if *libc::__errno_location() == libc::ENOENT {
            127
        } else {
            126
        };
        libc::_exit(code)
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

/// The kernel's `struct clone_args` (linux/sched.h), version 0 layout.
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
}

/// Finds `program` on `path` (as execvp would), in the parent, so the child needs
/// no search. Names with a `/` are taken as they are.
pub fn resolve(program: &str, path: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(program.to_string());
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let candidate = format!("{dir}/{program}");
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}
