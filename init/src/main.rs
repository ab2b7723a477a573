//! keel-init: PID 1. It reaps every zombie, relays signals and exits to the
//! supervisor, keeps the lifeboat of fds the supervisor must not lose, restarts the
//! supervisor when it dies, and makes the final reboot(2). It knows nothing of jobs.
//!
//! It must never exit, panic or block on the supervisor, so it parses nothing but
//! fixed-size messages from its own socketpair (see `keel_proto::init`), owns no heap
//! and no libc, and runs one loop: `poll` on a signalfd and the supervisor channel,
//! then dispatch. Everything it stores lives in fixed tables (`tables`), each with a
//! defined answer when full.
//!
//! Usage: `keel-init [--supervisor PATH] [--shutdown PATH] [--lifeboat-max N]
//! [-- SUPERVISOR_ARGS...]`; `--lifeboat-max` caps the lifeboat below what keel-init's
//! fd limit allows (for tests of a full lifeboat, and small machines).
//! Without `--supervisor`, `keel.supervisor=PATH` on the kernel command line (read
//! from /proc/cmdline, since the kernel passes dotted parameters to no one), else
//! `/sbin/keel-supervisor`; the same for `--shutdown`, `keel.shutdown=PATH` and
//! `/sbin/keel-shutdown`. The supervisor finds its end of the channel at fd 3,
//! named by `KEEL_INIT_FD=3` in its environment, and `KEEL_MACHINE=1` there when
//! keel-init is the machine's init (PID 1 of the initial PID namespace — also
//! after an initramfs has handed over — rather than of a PID namespace).
//!
//! The end: when the supervisor asks for the power action (every job stopped),
//! keel-init syncs and, as PID 1, execs keel-shutdown (`keel-shutdown poweroff`)
//! in its own place: that program ends the remaining processes, unmounts and
//! makes the reboot(2), work that parses /proc files and so does not belong in
//! PID 1. If the exec fails, keel-init makes the reboot(2) itself, and says so.
#![no_std]
#![no_main]

extern crate origin;

mod log;
mod sys;
mod tables;

use core::ffi::CStr;
use keel_proto::init::{
    self as wire, FdName, LifeboatError, MAX_MESSAGE, PowerAction, ToInit, ToSupervisor,
};
use log::{Log, Piece};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::process::{Pid, WaitOptions};
use sys::{CArray, MAX_ARGS, MAX_ENV};
use tables::{Deposit, ExitLog, Lifeboat};

const DEFAULT_SUPERVISOR: &CStr = c"/sbin/keel-supervisor";
const DEFAULT_SHUTDOWN: &CStr = c"/sbin/keel-shutdown";

/// Signals relayed to the supervisor: ctrl-alt-del, power failure, keyboard request,
/// and the conventional control signals.
const RELAYED: [u32; 7] = [2, 30, 28, 15, 1, 10, 12]; // INT PWR WINCH TERM HUP USR1 USR2
const SIGCHLD: u32 = 17;

/// The signals a process's own crash ends it with: ILL, TRAP, ABRT, BUS, FPE,
/// SEGV, SYS. The supervisor takes the signals others may send it as events
/// (ABRT too: `abort()` unblocks it first), so an ABRT death is its own.
const CRASH_SIGNALS: [i32; 7] = [4, 5, 6, 7, 8, 11, 31];
/// When the sweep for exits whose SIGCHLD coalesced with another's comes
/// ([`Init::reap`]): once keel-init has had nothing to do for
/// `SWEEP_QUIET_MS`, and at the latest `SWEEP_LATEST_MS` after the SIGCHLD. A
/// sweep walks every child in the kernel, holding the lock that `clone` and
/// `exit` take to change the process tree: with 10,000 jobs that is
/// milliseconds, which a restart or respawn under way would wait for. The
/// child a SIGCHLD names is reaped at once; only the exits whose SIGCHLD
/// coalesced with it (two children ending at the same instant) wait, and a
/// burst of exits costs one sweep.
const SWEEP_QUIET_MS: u64 = 20;
const SWEEP_LATEST_MS: u64 = 1000;
/// A supervisor that dies sooner than this after its start counts as a quick death.
const QUICK_DEATH_MS: u64 = 1000;
/// Back-off after the second quick death in a row, doubling up to the cap.
const BACKOFF_FIRST_MS: u64 = 100;
const BACKOFF_CAP_MS: u64 = 5000;

static mut LIFEBOAT: Lifeboat = Lifeboat::EMPTY;
static mut EXITS: ExitLog = ExitLog::EMPTY;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Unreachable by design (no indexing or arithmetic on input can panic), but if
    // it ever happens PID 1 must not exit: keep reaping so the machine stays sane.
    Log::new(false).error(&[Piece::Str("internal error; reaping only from now on")]);
    loop {
        if let Err(Errno::CHILD) = rustix::process::wait(WaitOptions::empty()) {
            let _ = rustix::thread::nanosleep(&rustix::time::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
        }
    }
}

/// The precompiled `core` references an unwinding personality routine even though
/// keel-init aborts on panic and never unwinds; this symbol satisfies the linker and
/// is never called.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// Where the handover to the current supervisor stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the supervisor's `Hello`.
    Silent,
    Welcome,
    /// Sending the lifeboat's capacity.
    Capacity,
    /// Sending lifeboat entries from this slot on.
    Lifeboat(usize),
    /// Sending the exits the supervisor has not acknowledged.
    Exits,
    /// Handover done: relaying as things happen.
    Live,
}

struct Supervisor {
    pid: Pid,
    started_ms: u64,
    channel: Option<OwnedFd>,
    phase: Phase,
    /// The highest exit seq sent to this supervisor.
    exit_sent: u64,
    /// A send failed: the supervisor is going away. Nothing more is sent, but what
    /// it sent before dying is still read (and its channel kept until it is reaped).
    deaf: bool,
}

struct Init {
    log: Log,
    lifeboat: &'static mut Lifeboat,
    exits: &'static mut ExitLog,
    signals: OwnedFd,
    supervisor: Option<Supervisor>,
    /// Relayed signals not yet sent, as a bit per signal number.
    pending_signals: u64,
    /// A walk of every child for ended ones ([`Init::reap`]) is owed since
    /// this SIGCHLD (monotonic ms), or at once.
    sweep_since: Option<u64>,
    sweep_now: bool,
    /// The last wake-up that had something to do (monotonic ms).
    busy_at: u64,
    /// A child may have ended while the exit log was full and not been reaped.
    held_back: bool,
    refusals: [Option<(FdName, LifeboatError)>; 8],
    /// Supervisors started so far.
    generation: u32,
    quick_deaths: u32,
    /// When to start the next supervisor (monotonic ms), while none runs.
    restart_at: u64,
    path: &'static CStr,
    /// keel-shutdown, exec'd for the power action.
    shutdown: &'static CStr,
    argv: CArray<MAX_ARGS>,
    envp: CArray<MAX_ENV>,
    /// The fd limit keel-init was started with, which each supervisor gets.
    nofile_given: rustix::process::Rlimit,
}

const USAGE: &str = "\
Usage: keel-init [--supervisor PATH] [--shutdown PATH] [-- SUPERVISOR_ARGS...]

keel's PID 1: reaps every process, relays signals to keel-supervisor, keeps its
lifeboat of fds, restarts it when it dies, and at the end execs keel-shutdown.
It runs only as PID 1: of the machine (the kernel's init=), or of a PID
namespace (unshare --pid --fork --mount-proc keel-init ...).

  --supervisor PATH  the supervisor (keel.supervisor= on the kernel command
                     line; default /sbin/keel-supervisor)
  --shutdown PATH    the program exec'd for the power action (keel.shutdown=;
                     default /sbin/keel-shutdown)
  --help, --version  print this or the version and exit (not as PID 1)

See keel-init(8).
";
const VERSION: &str = concat!("keel-init ", env!("CARGO_PKG_VERSION"), "\n");

/// Outside PID 1 keel-init only answers `--help` and `--version`: acting as an
/// init there (ignoring SIGTERM, adopting nothing) would only confuse. As PID 1
/// it never exits (the kernel would panic): there these words are ignored.
/// The exit status if it is to exit, `None` to go on as init.
fn ordinary_process(args: &[*const u8]) -> Option<i32> {
    if rustix::process::getpid().is_init() {
        return None;
    }
    let asked = |word: &[u8]| {
        args.iter().skip(1).any(|&a| {
            // SAFETY: origin passes the kernel's argv: valid NUL-terminated strings.
            let arg = unsafe { CStr::from_ptr(a.cast()) }.to_bytes();
            arg == word
        })
    };
    let (text, fd, status) = if asked(b"--help") || asked(b"-h") {
        (USAGE, 1, 0)
    } else if asked(b"--version") {
        (VERSION, 1, 0)
    } else {
        (
            "keel-init: not PID 1: keel-init runs only as the machine's init or as PID 1 \
             of a PID namespace (unshare --pid --fork --mount-proc keel-init ...); \
             see keel-init --help\n",
            2,
            2,
        )
    };
    // SAFETY: fds 1 and 2 are only borrowed for this write.
    let out = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    let _ = rustix::io::write(out, text.as_bytes());
    Some(status)
}

#[unsafe(no_mangle)]
unsafe fn origin_main(argc: usize, argv: *mut *mut u8, envp: *mut *mut u8) -> i32 {
    // SAFETY: origin passes the kernel's argv/envp: `argc` valid pointers to
    // NUL-terminated strings, then NULL, which live as long as the process.
    let args = unsafe { core::slice::from_raw_parts(argv as *const *const u8, argc) };
    if let Some(status) = ordinary_process(args) {
        return status;
    }
    let mut cmdline = [0u8; 4096];
    let cmdline_len = read_cmdline(&mut cmdline);
    let cmdline = &cmdline[..cmdline_len];
    let machine = sys::is_machine();
    if machine {
        sys::mount_dev_if_missing();
    }
    let log = Log::new(machine);
    log.announce(&[
        Piece::Str("started at "),
        Piece::Millis(sys::uptime_ms()),
        Piece::Str(" after boot, pid "),
        Piece::Int(rustix::process::getpid().as_raw_nonzero().get() as i64),
        Piece::Str(if machine { ", the machine's init" } else { "" }),
    ]);

    // SAFETY: as for argv above.
    let mut env_ptrs = envp as *const *const u8;
    let mut envs = CArray::<MAX_ENV>::new();
    envs.push(c"KEEL_INIT_FD=3");
    if machine {
        envs.push(c"KEEL_MACHINE=1");
    }
    // SAFETY: as above; the loop stops at the terminating NULL.
    unsafe {
        while !env_ptrs.is_null() && !(*env_ptrs).is_null() {
            let entry = CStr::from_ptr((*env_ptrs).cast());
            let ours = [b"KEEL_INIT_FD=".as_slice(), b"KEEL_MACHINE="]
                .iter()
                .any(|name| entry.to_bytes().starts_with(name));
            if !ours && !envs.push_raw(*env_ptrs) {
                log.line(&[Piece::Str(
                    "too many environment variables; the rest are dropped",
                )]);
                break;
            }
            env_ptrs = env_ptrs.add(1);
        }
    }

    let mut path: Option<&'static CStr> = None;
    let mut shutdown: Option<&'static CStr> = None;
    let mut lifeboat_max: Option<u64> = None;
    let mut sup_args = CArray::<MAX_ARGS>::new();
    sup_args.push_raw(core::ptr::null()); // argv[0], filled in below
    let mut i = 1;
    while i < args.len() {
        // SAFETY: see above.
        let arg: &'static CStr = unsafe { CStr::from_ptr(args[i].cast()) };
        match arg.to_bytes() {
            b"--supervisor" if i + 1 < args.len() => {
                // SAFETY: see above.
                path = Some(unsafe { CStr::from_ptr(args[i + 1].cast()) });
                i += 1;
            }
            b"--shutdown" if i + 1 < args.len() => {
                // SAFETY: see above.
                shutdown = Some(unsafe { CStr::from_ptr(args[i + 1].cast()) });
                i += 1;
            }
            b"--lifeboat-max" if i + 1 < args.len() => {
                // SAFETY: see above.
                let value = unsafe { CStr::from_ptr(args[i + 1].cast()) }.to_bytes();
                lifeboat_max = parse_u64(value);
                if lifeboat_max.is_none() {
                    log.error(&[
                        Piece::Str("ignoring --lifeboat-max "),
                        Piece::Bytes(value),
                        Piece::Str(": not a number"),
                    ]);
                }
                i += 1;
            }
            b"--" => {
                for &a in &args[i + 1..] {
                    if !sup_args.push_raw(a) {
                        log.line(&[Piece::Str(
                            "too many supervisor arguments; the rest are dropped",
                        )]);
                        break;
                    }
                }
                break;
            }
            // The kernel hands init the command-line words it does not know.
            other => log.line(&[Piece::Str("ignoring argument "), Piece::Bytes(other)]),
        }
        i += 1;
    }
    let mut supervisor_buf = [0u8; 256];
    let mut shutdown_buf = [0u8; 256];
    let supervisor_word = cmdline_path(&log, cmdline, b"keel.supervisor=", &mut supervisor_buf);
    let shutdown_word = cmdline_path(&log, cmdline, b"keel.shutdown=", &mut shutdown_buf);
    // SAFETY: origin_main never returns (the loop below is endless), so this stack
    // frame, and the buffers in it, outlive every use of these references.
    let (supervisor_word, shutdown_word): (Option<&'static CStr>, Option<&'static CStr>) = unsafe {
        (
            supervisor_word.map(|c| CStr::from_ptr(c.as_ptr())),
            shutdown_word.map(|c| CStr::from_ptr(c.as_ptr())),
        )
    };
    let path = path.or(supervisor_word).unwrap_or(DEFAULT_SUPERVISOR);
    let shutdown = shutdown.or(shutdown_word).unwrap_or(DEFAULT_SHUTDOWN);
    sup_args.set_first(path);

    let mut all = rustix::runtime::KernelSigSet::all();
    all.remove(rustix::runtime::Signal::KILL);
    all.remove(rustix::runtime::Signal::STOP);
    // SAFETY: blocking signals in a single-threaded process without a libc is sound;
    // they are then read synchronously from the signalfd.
    if let Err(e) =
        unsafe { rustix::runtime::kernel_sigprocmask(rustix::runtime::How::SETMASK, Some(&all)) }
    {
        log.error(&[
            Piece::Str("cannot block signals: errno "),
            Piece::Int(e.raw_os_error() as i64),
        ]);
    }
    let signals = loop {
        match sys::signalfd(&all) {
            Ok(fd) => break fd,
            Err(e) => {
                // Without it keel-init could not reap; nothing else makes sense.
                log.error(&[
                    Piece::Str("cannot create a signalfd: errno "),
                    Piece::Int(e.raw_os_error() as i64),
                ]);
                let _ = rustix::thread::nanosleep(&rustix::time::Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
            }
        }
    };
    let (nofile_given, nofile) = setup_process(&log);

    // SAFETY: the only references to these statics are taken here, once, in a
    // single-threaded program, and live in `Init` for the rest of the process.
    let (lifeboat, exits) = (&raw mut LIFEBOAT, &raw mut EXITS);
    let (lifeboat, exits) = unsafe { (&mut *lifeboat, &mut *exits) };
    lifeboat.set_capacity(nofile, lifeboat_max);
    let mut init = Init {
        log,
        lifeboat,
        exits,
        signals,
        supervisor: None,
        pending_signals: 0,
        sweep_since: None,
        // Children that ended before the signalfd existed sent no SIGCHLD to it.
        sweep_now: true,
        busy_at: 0,
        held_back: false,
        refusals: [None; 8],
        generation: 0,
        quick_deaths: 0,
        restart_at: 0,
        path,
        shutdown,
        argv: sup_args,
        envp: envs,
        nofile_given,
    };
    init.run()
}

/// Reads /proc/cmdline into `buf` (mounting /proc first if this is a real boot
/// and it is not there yet); the length read, 0 if none.
fn read_cmdline(buf: &mut [u8; 4096]) -> usize {
    use rustix::fs::{Mode, OFlags};
    let open = || {
        rustix::fs::open(
            "/proc/cmdline",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(_) => {
            let _ = rustix::mount::mount(
                c"proc",
                c"/proc",
                c"proc",
                rustix::mount::MountFlags::NOSUID
                    | rustix::mount::MountFlags::NODEV
                    | rustix::mount::MountFlags::NOEXEC,
                None,
            );
            match open() {
                Ok(fd) => fd,
                Err(_) => return 0,
            }
        }
    };
    rustix::io::read(&fd, &mut buf[..]).unwrap_or(0)
}

/// The value of the kernel command-line word `KEY=PATH`, NUL-terminated in `out`.
fn cmdline_path<'a>(
    log: &Log,
    cmdline: &[u8],
    key: &[u8],
    out: &'a mut [u8; 256],
) -> Option<&'a CStr> {
    let value = cmdline
        .split(|&b| b == b' ' || b == b'\n' || b == 0)
        .find_map(|word| word.strip_prefix(key))?;
    if value.is_empty() || value.len() >= out.len() {
        log.error(&[
            Piece::Str("ignoring "),
            Piece::Bytes(key),
            Piece::Str(" (empty or too long)"),
        ]);
        return None;
    }
    out[..value.len()].copy_from_slice(value);
    out[value.len()] = 0;
    CStr::from_bytes_until_nul(&out[..]).ok()
}

/// The decimal number `text`, if it is one.
fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(c - b'0')))
            .flatten()
    })
}

/// `fs.nr_open`, the most fds a process may be allowed, if /proc says.
fn nr_open() -> Option<u64> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        "/proc/sys/fs/nr_open",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buf = [0u8; 24];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    parse_u64(buf.get(..n)?.trim_ascii())
}

/// Process-wide settings: fd limit, orphan reaping, ctrl-alt-del as a signal.
/// Returns the fd limit keel-init was given (for the supervisor, which raises its
/// own and gives this one to jobs) and the one it now runs with.
fn setup_process(log: &Log) -> (rustix::process::Rlimit, u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // Every lifeboat fd is open in keel-init: take as many as it may, the hard
    // limit raised to fs.nr_open where allowed (the machine's init, with
    // CAP_SYS_RESOURCE), else the hard limit as it is.
    let given = getrlimit(Resource::Nofile);
    if let Some(top) = nr_open().filter(|&n| given.maximum.is_some_and(|h| n > h)) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(top),
                maximum: Some(top),
            },
        );
    }
    let mut nofile = getrlimit(Resource::Nofile);
    nofile.current = nofile.maximum;
    let _ = setrlimit(Resource::Nofile, nofile);
    let nofile = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // As PID 1 this is implied; as a plain process (tests) orphans still come here.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // ctrl-alt-del sends SIGINT instead of rebooting. Inside a PID namespace the
    // kernel refuses with EINVAL: expected, and harmless there.
    match rustix::system::reboot(rustix::system::RebootCommand::CadOff) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::PERM) => {}
        Err(e) => log.error(&[
            Piece::Str("cannot disable ctrl-alt-del: errno "),
            Piece::Int(e.raw_os_error() as i64),
        ]),
    }
    (given, nofile)
}

impl Init {
    fn run(&mut self) -> ! {
        loop {
            if self.supervisor.is_none() && sys::monotonic_ms() >= self.restart_at {
                self.start_supervisor();
            }
            self.pump();
            if self.sweep_due().is_some_and(|at| sys::monotonic_ms() >= at) {
                self.sweep_since = None;
                self.sweep_now = false;
                self.reap();
                self.pump();
            }
            self.wait();
        }
    }

    /// When the owed sweep is due (monotonic ms), if one is owed.
    fn sweep_due(&self) -> Option<u64> {
        if self.sweep_now {
            return Some(0);
        }
        let since = self.sweep_since?;
        Some((self.busy_at + SWEEP_QUIET_MS).min(since + SWEEP_LATEST_MS))
    }

    /// Blocks until a signal, a message, room to send, the restart deadline or
    /// the sweep's.
    fn wait(&mut self) {
        let restart_at = self.supervisor.is_none().then_some(self.restart_at);
        let timeout = match (restart_at, self.sweep_due()) {
            (None, None) => None,
            (a, b) => {
                let at = a.unwrap_or(u64::MAX).min(b.unwrap_or(u64::MAX));
                let ms = at.saturating_sub(sys::monotonic_ms());
                Some(rustix::time::Timespec {
                    tv_sec: (ms / 1000) as i64,
                    tv_nsec: ((ms % 1000) * 1_000_000) as i64,
                })
            }
        };
        let want_out = self.has_output();
        let mut fds = [
            PollFd::new(&self.signals, PollFlags::IN),
            PollFd::from_borrowed_fd(self.signals.as_fd(), PollFlags::empty()),
        ];
        let mut n = 1;
        if let Some(ch) = self.supervisor.as_ref().and_then(|s| s.channel.as_ref()) {
            let mut flags = PollFlags::IN;
            if want_out {
                flags |= PollFlags::OUT;
            }
            fds[1] = PollFd::new(ch, flags);
            n = 2;
        }
        if rustix::event::poll(&mut fds[..n], timeout.as_ref()).is_ok_and(|ready| ready > 0) {
            self.busy_at = sys::monotonic_ms();
        }
        let channel_events = if n == 2 {
            fds[1].revents()
        } else {
            PollFlags::empty()
        };
        self.read_signals();
        if channel_events.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            self.receive();
            // Acknowledgements may have made room in the exit log: reap what
            // waited for it.
            if self.held_back && !self.exits.is_full() {
                self.held_back = false;
                self.sweep_now = true;
            }
        }
    }

    fn read_signals(&mut self) {
        let mut buf = [0u8; 128 * 16];
        loop {
            let n = match rustix::io::read(&self.signals, &mut buf) {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            for (signo, pid) in sys::signal_records(&buf[..n]) {
                if signo == SIGCHLD {
                    self.reap_one(pid);
                    // SIGCHLDs coalesce: others may have ended while this one was
                    // pending. It was taken off the queue before the sweep, so a
                    // child that ends after the sweep's look raises a new one.
                    self.sweep_since.get_or_insert_with(sys::monotonic_ms);
                } else if RELAYED.contains(&signo) {
                    // A bit per signal: a storm coalesces, never grows a queue.
                    self.pending_signals |= 1 << signo;
                }
            }
        }
    }

    /// Reaps child `pid` if it has ended and the exit log has room (the
    /// supervisor whatever the room). A wait for one pid costs the kernel the
    /// same with ten thousand children as with one; a wait for any child
    /// ([`Init::reap`]) walks them all.
    fn reap_one(&mut self, pid: u32) {
        let Some(pid) = Pid::from_raw(pid as i32) else {
            return;
        };
        let is_supervisor = self.supervisor.as_ref().is_some_and(|s| s.pid == pid);
        if self.exits.is_full() && !is_supervisor {
            self.held_back = true;
            return;
        }
        loop {
            match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => return self.reaped(pid, status.as_raw()),
                Err(Errno::INTR) => continue,
                // Still running, stopped, already reaped by a sweep, or not ours.
                _ => return,
            }
        }
    }

    fn reaped(&mut self, pid: Pid, raw: i32) {
        if self.supervisor.as_ref().is_some_and(|s| s.pid == pid) {
            // What it sent just before dying (its last saved state, acks) is
            // still queued in the socket: take it first.
            self.receive();
            self.supervisor_died(raw);
        } else if !self.exits.push(pid.as_raw_nonzero().get(), raw) {
            // Unreachable: the log had room when this child was reaped.
            self.log.error(&[
                Piece::Str("internal error: the exit of pid "),
                Piece::Int(pid.as_raw_nonzero().get() as i64),
                Piece::Str(" was reaped into a full exit log"),
            ]);
        }
    }

    /// Reaps every child that has ended, as long as the exit log has room: a
    /// sweep, after a SIGCHLD (whose own pid was reaped at once,
    /// [`Init::reap_one`]) once keel-init is quiet ([`SWEEP_QUIET_MS`]), and
    /// at once when an `Ack` makes room in a log that was full.
    ///
    /// No exit is ever lost, because keel-init reaps no faster than it can record:
    /// while the log is full (the supervisor is stopped, busy or dead and has not
    /// acknowledged [`tables::EXIT_SLOTS`] exits), every other child that ends stays
    /// a zombie, and the kernel keeps its pid and wait status for us — orphans
    /// re-parented to keel-init included, since they become its children too. An
    /// `Ack` makes room and `wait` calls this again; a SIGCHLD read meanwhile is not
    /// needed then, as this asks the kernel, not the signals, what has ended. The
    /// supervisor's own death is never held back: it is waited for by its pid, so a
    /// dead supervisor is replaced (and gets the handover) even with the log full.
    /// The cost of a long stall is the kernel's (a zombie per unrecorded exit, and
    /// its pid not reused meanwhile), bounded by pid_max, never a table of ours.
    fn reap(&mut self) {
        loop {
            let got = if self.exits.is_full() {
                self.held_back = true;
                let Some(pid) = self.supervisor.as_ref().map(|s| s.pid) else {
                    return;
                };
                rustix::process::waitpid(Some(pid), WaitOptions::NOHANG)
            } else {
                // `wait`, not `waitpid(None)`: rustix maps the latter to pid 0, our
                // own process group only, and job processes lead groups of their own.
                rustix::process::wait(WaitOptions::NOHANG)
            };
            match got {
                Ok(Some((pid, status))) => self.reaped(pid, status.as_raw()),
                Ok(None) | Err(Errno::CHILD) => return,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    self.log.line(&[
                        Piece::Str("waitpid failed: errno "),
                        Piece::Int(e.raw_os_error() as i64),
                    ]);
                    return;
                }
            }
        }
    }

    fn supervisor_died(&mut self, status: i32) {
        let Some(sup) = self.supervisor.take() else {
            return;
        };
        let now = sys::monotonic_ms();
        let lived = now.saturating_sub(sup.started_ms);
        let pid = Piece::Int(sup.pid.as_raw_nonzero().get() as i64);
        let (how, n) = if status & 0x7f == 0 {
            ("exited with status ", (status >> 8) & 0xff)
        } else {
            ("was killed by signal ", status & 0x7f)
        };
        self.log.line(&[
            Piece::Str("supervisor (pid "),
            pid,
            Piece::Str(") "),
            Piece::Str(how),
            Piece::Int(n as i64),
            Piece::Str(" after "),
            Piece::Millis(lived),
        ]);
        // A supervisor that crashes soon after its start may be choking on its saved
        // state: a fault, an abort, a panic or an error exit. One killed by another
        // signal (an administrator, a test, the OOM killer's SIGKILL, a signal that
        // came before it took its signals) is not suspect, and is replaced at once
        // however often it happens.
        let crashed = match status & 0x7f {
            0 => (status >> 8) & 0xff != 0,
            sig => CRASH_SIGNALS.contains(&sig),
        };
        if lived < QUICK_DEATH_MS && crashed {
            self.quick_deaths = self.quick_deaths.saturating_add(1);
        } else {
            self.quick_deaths = 0;
        }
        // The first death is answered at once; only a supervisor that keeps dying
        // soon after its start is held back, doubling up to the cap.
        let delay = match self.quick_deaths {
            0 | 1 => 0,
            n => (BACKOFF_FIRST_MS << (n - 2).min(16)).min(BACKOFF_CAP_MS),
        };
        if delay > 0 {
            self.log.line(&[
                Piece::Str("supervisor died "),
                Piece::Int(self.quick_deaths as i64),
                Piece::Str(" times in a row; next start in "),
                Piece::Millis(delay),
            ]);
        }
        self.restart_at = now + delay;
        // Dropping `sup` closes our end of the old channel; what it held unread is
        // still in the exit log, the lifeboat and `pending_signals`.
    }

    fn start_supervisor(&mut self) {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let pair = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        );
        let (ours, theirs) = match pair {
            Ok(p) => p,
            Err(e) => return self.start_failed("socketpair", e),
        };
        match sys::spawn_supervisor(self.path, &self.argv, &self.envp, self.nofile_given, theirs) {
            Ok(pid) => {
                self.log.line(&[
                    Piece::Str("started supervisor "),
                    Piece::Bytes(self.path.to_bytes()),
                    Piece::Str(" (pid "),
                    Piece::Int(pid.as_raw_nonzero().get() as i64),
                    Piece::Str(")"),
                ]);
                self.supervisor = Some(Supervisor {
                    pid,
                    started_ms: sys::monotonic_ms(),
                    channel: Some(ours),
                    phase: Phase::Silent,
                    exit_sent: 0,
                    deaf: false,
                });
                self.generation = self.generation.saturating_add(1);
            }
            Err(e) => self.start_failed("fork", e),
        }
    }

    fn start_failed(&mut self, what: &str, e: Errno) {
        self.log.error(&[
            Piece::Str("cannot start the supervisor: "),
            Piece::Str(what),
            Piece::Str(" failed, errno "),
            Piece::Int(e.raw_os_error() as i64),
        ]);
        self.quick_deaths = self.quick_deaths.saturating_add(1);
        self.restart_at =
            sys::monotonic_ms() + BACKOFF_CAP_MS.min(BACKOFF_FIRST_MS << self.quick_deaths.min(6));
    }

    fn has_output(&self) -> bool {
        let Some(sup) = self.supervisor.as_ref().filter(|s| !s.deaf) else {
            return false;
        };
        match sup.phase {
            Phase::Silent => false,
            Phase::Welcome | Phase::Capacity | Phase::Lifeboat(_) | Phase::Exits => true,
            Phase::Live => {
                self.pending_signals != 0
                    || self.refusals.iter().any(Option::is_some)
                    || self.exits.next_after(sup.exit_sent).is_some()
            }
        }
    }

    /// Sends whatever is due, until done or the socket is full.
    fn pump(&mut self) {
        loop {
            let Some(sup) = self.supervisor.as_mut().filter(|s| !s.deaf) else {
                return;
            };
            let (msg, fd, next_phase, sent_seq) = match sup.phase {
                Phase::Silent => return,
                Phase::Welcome => (
                    ToSupervisor::Welcome {
                        version: wire::VERSION,
                        generation: self.generation.saturating_sub(1),
                        quick_deaths: self.quick_deaths,
                        lost_exits: 0,
                        lifeboat_entries: self.lifeboat.len() as u32,
                    },
                    None,
                    Phase::Capacity,
                    None,
                ),
                Phase::Capacity => (
                    ToSupervisor::Capacity {
                        lifeboat: self.lifeboat.capacity() as u32,
                    },
                    None,
                    Phase::Lifeboat(0),
                    None,
                ),
                Phase::Lifeboat(from) => match self.lifeboat.next_from(from) {
                    Some((slot, name, fd)) => (
                        ToSupervisor::Lifeboat { name },
                        Some(fd),
                        Phase::Lifeboat(slot + 1),
                        None,
                    ),
                    None => {
                        sup.phase = Phase::Exits;
                        continue;
                    }
                },
                Phase::Exits => match self.exits.next_after(sup.exit_sent) {
                    Some(e) => (
                        ToSupervisor::Exit {
                            seq: e.seq,
                            pid: e.pid,
                            status: e.status,
                        },
                        None,
                        Phase::Exits,
                        Some(e.seq),
                    ),
                    None => (ToSupervisor::HandoverEnd, None, Phase::Live, None),
                },
                Phase::Live => {
                    if let Some(slot) = self.refusals.iter_mut().find(|r| r.is_some()) {
                        let (name, error) = slot
                            .take()
                            .unwrap_or((FdName::NONE, LifeboatError::BadName));
                        (
                            ToSupervisor::LifeboatRefused { name, error },
                            None,
                            Phase::Live,
                            None,
                        )
                    } else if let Some(e) = self.exits.next_after(sup.exit_sent) {
                        (
                            ToSupervisor::Exit {
                                seq: e.seq,
                                pid: e.pid,
                                status: e.status,
                            },
                            None,
                            Phase::Live,
                            Some(e.seq),
                        )
                    } else if self.pending_signals != 0 {
                        let signo = self.pending_signals.trailing_zeros();
                        self.pending_signals &= !(1 << signo);
                        (
                            ToSupervisor::Signal { signo: signo as u8 },
                            None,
                            Phase::Live,
                            None,
                        )
                    } else {
                        return;
                    }
                }
            };
            let Some(channel) = sup.channel.as_ref() else {
                return;
            };
            match send(channel, &msg, fd) {
                Ok(()) => {
                    sup.phase = next_phase;
                    if let Some(seq) = sent_seq {
                        sup.exit_sent = seq;
                    }
                }
                Err(Errno::AGAIN) => {
                    // Undo a signal taken off the pending set; it goes out next time.
                    if let ToSupervisor::Signal { signo } = msg {
                        self.pending_signals |= 1 << signo;
                    }
                    return;
                }
                Err(_) => {
                    // The supervisor is going away; its death is handled when reaped,
                    // after its last messages are read.
                    sup.deaf = true;
                    return;
                }
            }
        }
    }

    /// Reads and handles every message waiting on the channel.
    fn receive(&mut self) {
        loop {
            let Some(channel) = self.supervisor.as_ref().and_then(|s| s.channel.as_ref()) else {
                return;
            };
            let mut buf = [0u8; MAX_MESSAGE];
            let mut space = [core::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [rustix::io::IoSliceMut::new(&mut buf)];
            let got = rustix::net::recvmsg(
                channel,
                &mut iov,
                &mut control,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            );
            let msg = match got {
                Ok(m) => m,
                Err(Errno::AGAIN) | Err(Errno::INTR) => return,
                // A supervisor that died with messages unread reports ECONNRESET
                // once, ahead of what it had sent: read on, its last state is there.
                Err(Errno::CONNRESET) => continue,
                Err(_) => {
                    if let Some(sup) = self.supervisor.as_mut() {
                        sup.channel = None;
                    }
                    return;
                }
            };
            let mut fd: Option<OwnedFd> = None;
            let mut extra_fds = false;
            for cmsg in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = cmsg {
                    for f in fds {
                        if fd.is_none() {
                            fd = Some(f);
                        } else {
                            extra_fds = true; // dropped, so closed
                        }
                    }
                }
            }
            if msg.bytes == 0 && !msg.flags.contains(rustix::net::ReturnFlags::TRUNC) {
                // Orderly shutdown of the peer: stop listening until it is reaped.
                if let Some(sup) = self.supervisor.as_mut() {
                    sup.channel = None;
                }
                return;
            }
            let truncated = msg
                .flags
                .intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC);
            let decoded = if truncated || extra_fds {
                None
            } else {
                wire::decode::<ToInit>(&buf[..msg.bytes.min(MAX_MESSAGE)])
            };
            match decoded {
                Some(m) => self.handle(m, fd),
                None => self.log.error(&[
                    Piece::Str("dropped a malformed message from the supervisor ("),
                    Piece::Int(msg.bytes as i64),
                    Piece::Str(" bytes)"),
                ]),
            }
        }
    }

    fn handle(&mut self, msg: ToInit, fd: Option<OwnedFd>) {
        match msg {
            ToInit::Hello { .. } => {
                if let Some(sup) = self.supervisor.as_mut() {
                    // A re-executed supervisor says hello again: hand everything
                    // over once more; it ignores exits it has already applied.
                    sup.phase = Phase::Welcome;
                    sup.exit_sent = 0;
                }
            }
            ToInit::Deposit { name } => {
                let Some(fd) = fd else {
                    return self.refuse(name, LifeboatError::NoFd);
                };
                if !name.is_valid() {
                    return self.refuse(name, LifeboatError::BadName);
                }
                if let Deposit::Full = self.lifeboat.deposit(name, fd) {
                    self.refuse(name, LifeboatError::Full);
                }
            }
            ToInit::Withdraw { name } => {
                if !self.lifeboat.withdraw(name) {
                    self.refuse(name, LifeboatError::NotFound);
                }
            }
            ToInit::Ack { seq } => {
                // Never forget an exit the supervisor has not even been sent.
                let sent = self.supervisor.as_ref().map_or(0, |s| s.exit_sent);
                self.exits.ack(seq.min(sent));
            }
            ToInit::Power { action } => self.power(action),
            ToInit::Kill {
                pid,
                signo,
                group,
                cont,
            } => self.kill(pid, signo, group, cont),
        }
    }

    /// Signals job process `pid` for the supervisor (see `ToInit::Kill`). Safe from
    /// recycled pids because keel-init is the one reaper of its children and does
    /// nothing else meanwhile: a pid it has not reaped names the same process (or
    /// its zombie) and, as that process leads its group, the same group; a reaped
    /// one stays in the exit log until the supervisor has applied that exit, and is
    /// not signalled. A pid reaped and acknowledged the supervisor no longer tracks.
    fn kill(&mut self, pid: i32, signo: u8, group: bool, cont: bool) {
        use rustix::process::{Signal, kill_process, kill_process_group};
        let supervisor = self.supervisor.as_ref().map(|s| s.pid);
        let Some(target) = Pid::from_raw(pid).filter(|p| !p.is_init() && Some(*p) != supervisor)
        else {
            return;
        };
        let Some(sig) = Signal::from_named_raw(i32::from(signo)) else {
            return;
        };
        if self.exits.holds(pid) {
            return;
        }
        let sent = |sig| {
            (group && kill_process_group(target, sig).is_ok()) || kill_process(target, sig).is_ok()
        };
        if sent(sig) && cont {
            let _ = sent(Signal::CONT);
        }
    }

    fn refuse(&mut self, name: FdName, error: LifeboatError) {
        self.log.error(&[Piece::Str("refused a lifeboat request")]);
        if let Some(slot) = self.refusals.iter_mut().find(|r| r.is_none()) {
            *slot = Some((name, error));
        }
    }

    fn power(&mut self, action: PowerAction) {
        use rustix::system::RebootCommand;
        let (word, arg, cmd) = match action {
            PowerAction::PowerOff => ("power off", c"poweroff", RebootCommand::PowerOff),
            PowerAction::Reboot => ("reboot", c"reboot", RebootCommand::Restart),
            PowerAction::Halt => ("halt", c"halt", RebootCommand::Halt),
        };
        self.log.line(&[
            Piece::Str(word),
            Piece::Str(" at "),
            Piece::Millis(sys::uptime_ms()),
            Piece::Str(" after boot"),
        ]);
        // The supervisor's work is done once it asks for the power action (every
        // job stopped, its files closed). It ignores SIGTERM by design, so
        // keel-shutdown's kill phase would wait out its whole bound for it: end it
        // here, with the one signal it cannot ignore.
        if let Some(supervisor) = &self.supervisor {
            let _ = rustix::process::kill_process(supervisor.pid, rustix::process::Signal::KILL);
        }
        rustix::fs::sync();
        let mut argv = CArray::<3>::new();
        argv.push(self.shutdown);
        argv.push(arg);
        // SAFETY: argv and envp are NULL-terminated arrays of pointers to
        // NUL-terminated strings that live as long as this process. On success
        // this image is gone; every fd but the console is close-on-exec.
        let err =
            unsafe { rustix::runtime::execve(self.shutdown, argv.as_ptr(), self.envp.as_ptr()) };
        self.log.error(&[
            Piece::Str("cannot exec "),
            Piece::Bytes(self.shutdown.to_bytes()),
            Piece::Str(": errno "),
            Piece::Int(err.raw_os_error() as i64),
            Piece::Str("; no process is ended and nothing unmounted, only synced before the "),
            Piece::Str(word),
        ]);
        // In a PID namespace the kernel ends the namespace instead: this call
        // does not return there.
        if let Err(e) = rustix::system::reboot(cmd) {
            self.log.error(&[
                Piece::Str("reboot(2) failed: errno "),
                Piece::Int(e.raw_os_error() as i64),
            ]);
        }
    }
}

/// Sends one message, with `fd` attached if given.
fn send(
    channel: &OwnedFd,
    msg: &ToSupervisor,
    fd: Option<rustix::fd::BorrowedFd<'_>>,
) -> Result<(), Errno> {
    let mut buf = [0u8; MAX_MESSAGE];
    let Some(bytes) = wire::encode(msg, &mut buf) else {
        return Ok(()); // cannot happen: every message fits; skip rather than stall
    };
    let iov = [rustix::io::IoSlice::new(bytes)];
    let mut space = [core::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    rustix::net::sendmsg(
        channel,
        &iov,
        &mut control,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )
    .map(|_| ())
}
