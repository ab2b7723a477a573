//! keel-shutdown: the last phase of the machine, after the supervisor has stopped
//! every job. keel-init, having synced, execs it as PID 1 (`keel-shutdown
//! poweroff|reboot|halt`); it then
//!
//! 1. sends SIGTERM (and SIGCONT) to every remaining process, reaps while it
//!    waits for them to end, at most `KEEL_SHUTDOWN_TIMEOUT` seconds (kernel word
//!    `keel.shutdown-timeout=`, default 5), then SIGKILLs the rest;
//! 2. only as the machine's init (PID 1 of the initial PID namespace): turns every
//!    swap area off and unmounts every filesystem it can (see [`mounts`]),
//!    remounting the rest read-only, `/` last;
//! 3. syncs and makes the reboot(2) of the action.
//!
//! Inside a PID namespace it does steps 1 and 3 only — there reboot(2) ends the
//! namespace — and never unmounts or remounts anything: those mounts are the
//! host's (a read-only remount of `/` in a mount namespace still changes the
//! host's superblock). What fails is said on the console and, on a machine, in
//! the kernel log (/dev/kmsg); what goes well, in the kernel log only.
//!
//! Why a program of its own: this phase parses /proc/self/mountinfo and
//! /proc/swaps and formats messages, which keel-init (no heap, no parsing of
//! anything but its own fixed-size messages) must not do; and it must run when
//! the supervisor is gone or wedged, so it cannot be the supervisor's. It runs once
//! at the end, so it costs PID 1 nothing while the machine runs.
//!
//! Linked statically from glibc's libc.a (the build script initctl uses), not
//! no_std: it needs a heap and formatting, and std's are well-tried; static, so
//! that it depends on no shared library while filesystems are going away, and
//! maps only its own file. As PID 1 it must not exit: every path ends in
//! reboot(2), a panic too (its hook syncs and makes the action).

mod mounts;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// How long the processes left have to end after SIGTERM, by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SIGKILL may take (a process in uninterruptible sleep may never end).
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// The inode of the initial PID namespace (the kernel's PROC_PID_INIT_INO).
const INITIAL_PID_NS_INODE: u64 = 0xEFFF_FFFC;

#[derive(Clone, Copy)]
enum Action {
    PowerOff,
    Reboot,
    Halt,
}

impl Action {
    fn parse(word: &str) -> Option<Action> {
        match word {
            "poweroff" => Some(Action::PowerOff),
            "reboot" => Some(Action::Reboot),
            "halt" => Some(Action::Halt),
            _ => None,
        }
    }

    fn command(self) -> nix::sys::reboot::RebootMode {
        use nix::sys::reboot::RebootMode;
        match self {
            Action::PowerOff => RebootMode::RB_POWER_OFF,
            Action::Reboot => RebootMode::RB_AUTOBOOT,
            Action::Halt => RebootMode::RB_HALT_SYSTEM,
        }
    }
}

/// The console (fd 2) and, on a machine, /dev/kmsg.
struct Log {
    kmsg: Option<std::fs::File>,
}

impl Log {
    fn open(machine: bool) -> Log {
        let kmsg = machine
            .then(|| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/kmsg")
                    .ok()
            })
            .flatten();
        Log { kmsg }
    }

    /// What went as it should: the kernel log on a machine, else the console.
    fn info(&self, text: &str) {
        match &self.kmsg {
            Some(k) => write_line(k, "<6>", text),
            None => write_line(std::io::stderr(), "", text),
        }
    }

    /// What failed: the console and the kernel log.
    fn failure(&self, text: &str) {
        write_line(std::io::stderr(), "", text);
        if let Some(k) = &self.kmsg {
            write_line(k, "<3>", text);
        }
    }
}

/// One line in one write(2), so that lines from elsewhere never cut into it.
fn write_line(mut to: impl Write, priority: &str, text: &str) {
    let _ = to.write_all(format!("{priority}keel-shutdown: {text}\n").as_bytes());
}

impl mounts::Say for &Log {
    fn info(&mut self, line: String) {
        Log::info(self, &line);
    }
    fn failure(&mut self, line: String) {
        Log::failure(self, &line);
    }
}

fn main() {
    let word = std::env::args().nth(1).unwrap_or_default();
    if std::process::id() != 1 {
        // Run by hand, kill(-1) would end every process of the system.
        eprintln!("keel-shutdown: only keel-init runs this, as PID 1");
        std::process::exit(2);
    }
    let machine = is_machine_init();
    let log = Log::open(machine);
    let action = Action::parse(&word).unwrap_or_else(|| {
        log.failure(&format!("unknown action {word:?}; powering off"));
        Action::PowerOff
    });
    std::panic::set_hook(Box::new(move |info| {
        write_line(std::io::stderr(), "", &format!("internal error: {info}"));
        finish(action)
    }));
    log.info(&format!(
        "{} as the {}",
        match action {
            Action::PowerOff => "powering off",
            Action::Reboot => "rebooting",
            Action::Halt => "halting",
        },
        if machine {
            "machine's init"
        } else {
            "init of a PID namespace (no filesystem is touched)"
        }
    ));
    end_processes(&log, timeout(&log, machine));
    if machine {
        swap_off(&log);
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => {
                mounts::unmount_all(&mounts::parse_mountinfo(&text), &mut RealFs, &mut &log)
            }
            Err(e) => log.failure(&format!("cannot read /proc/self/mountinfo: {e}")),
        }
    }
    finish(action)
}

/// sync, then the action. PID 1 never returns: if reboot(2) fails, it waits.
fn finish(action: Action) -> ! {
    nix::unistd::sync();
    let err = match nix::sys::reboot::reboot(action.command()) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    write_line(
        std::io::stderr(),
        "",
        &format!("reboot(2) failed: {}; waiting", err.desc()),
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// PID 1 of the initial PID namespace: the machine's init, also after an
/// initramfs moved /proc into the new root. Unknowable without /proc: then no.
fn is_machine_init() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::process::id() == 1
        && std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() == INITIAL_PID_NS_INODE)
}

/// `KEEL_SHUTDOWN_TIMEOUT` (seconds), else on a machine `keel.shutdown-timeout=`
/// of the kernel command line, else the default.
fn timeout(log: &Log, machine: bool) -> Duration {
    let from_cmdline = || {
        let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("keel.shutdown-timeout="))
            .map(str::to_string)
    };
    let text = std::env::var("KEEL_SHUTDOWN_TIMEOUT")
        .ok()
        .or_else(|| machine.then(from_cmdline).flatten());
    let Some(text) = text else {
        return DEFAULT_TIMEOUT;
    };
    match text
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
    {
        Some(d) => d,
        None => {
            log.failure(&format!(
                "shutdown timeout {text:?} is not a number of seconds; waiting {}s",
                DEFAULT_TIMEOUT.as_secs()
            ));
            DEFAULT_TIMEOUT
        }
    }
}

/// SIGTERM to every process but this one, reaping until none is left or the
/// bound has passed; then SIGKILL to the rest.
fn end_processes(log: &Log, bound: Duration) {
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    // keel-init blocked every signal, and exec kept that: only SIGCHLD stays
    // blocked, for the signalfd. (PID 1 is immune to signals it does not handle.)
    let _ = chld.thread_set_mask();
    let wake = SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC);
    let wake = match wake {
        Ok(fd) => Some(fd),
        Err(e) => {
            log.failure(&format!(
                "cannot create a signalfd ({}): polling instead",
                e.desc()
            ));
            None
        }
    };
    let start = Instant::now();
    if !signal_all(log, Signal::SIGTERM) {
        return;
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGCONT);
    if wait_all_ended(wake.as_ref(), start + bound) {
        log.info(&format!(
            "every process ended after SIGTERM, in {:.3}s",
            start.elapsed().as_secs_f64()
        ));
        return;
    }
    log.failure(&format!(
        "still running {:.1}s after SIGTERM, sent SIGKILL: {}",
        bound.as_secs_f64(),
        describe(&remaining())
    ));
    if !signal_all(log, Signal::SIGKILL) {
        return;
    }
    if !wait_all_ended(wake.as_ref(), Instant::now() + KILL_TIMEOUT) {
        log.failure(&format!(
            "still running {}s after SIGKILL: {}",
            KILL_TIMEOUT.as_secs(),
            describe(&remaining())
        ));
    }
}

/// kill(-1, signal); false when there is nobody left to signal.
fn signal_all(log: &Log, signal: Signal) -> bool {
    match kill(Pid::from_raw(-1), signal) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => {
            log.failure(&format!("cannot send {signal}: {}", e.desc()));
            true
        }
    }
}

/// Reaps every child until there is none (true) or `deadline` passes (false).
/// Every process left is PID 1's child or a descendant of one, so no children
/// means no processes.
fn wait_all_ended(wake: Option<&SignalFd>, deadline: Instant) -> bool {
    loop {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return true, // ECHILD
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Woken by the next SIGCHLD, or at the latest every 100 ms (without a
        // signalfd, or should one be missed) to look again.
        let left = (deadline - now).min(Duration::from_millis(100));
        let ms = nix::poll::PollTimeout::try_from(left.as_millis() as u64 + 1)
            .unwrap_or(nix::poll::PollTimeout::MAX);
        match wake {
            Some(fd) => {
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, ms);
                while let Ok(Some(_)) = fd.read_signal() {}
            }
            None => std::thread::sleep(left),
        }
    }
}

/// The processes left (pid, name), from /proc; kernel threads are not counted.
fn remaining() -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut left: Vec<(i32, String)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != 1)
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let ppid: i32 = rest.split(' ').nth(1)?.parse().ok()?;
            // kthreadd (2) and its children are the kernel's.
            (pid != 2 && ppid != 2).then(|| (pid, name.to_string()))
        })
        .collect();
    left.sort();
    left
}

fn describe(left: &[(i32, String)]) -> String {
    const SHOWN: usize = 10;
    if left.is_empty() {
        return "none visible in /proc".into();
    }
    let mut text: Vec<String> = left
        .iter()
        .take(SHOWN)
        .map(|(pid, name)| format!("{pid} ({name})"))
        .collect();
    if left.len() > SHOWN {
        text.push(format!("and {} more", left.len() - SHOWN));
    }
    text.join(", ")
}

/// swapoff(2) of every area in /proc/swaps.
fn swap_off(log: &Log) {
    let Ok(text) = std::fs::read_to_string("/proc/swaps") else {
        return;
    };
    for area in mounts::parse_swaps(&text) {
        let Ok(path) = std::ffi::CString::new(area.as_str()) else {
            continue;
        };
        // SAFETY: swapoff(2) reads the NUL-terminated path, which lives across
        // the call; it touches no other memory of this process.
        let rc = unsafe { libc::swapoff(path.as_ptr()) };
        if rc == 0 {
            log.info(&format!("swap {area} off"));
        } else {
            log.failure(&format!(
                "cannot turn swap {area} off: {}",
                Errno::last().desc()
            ));
        }
    }
}

/// The filesystem phase's system calls.
struct RealFs;

impl mounts::Fs for RealFs {
    fn unmount(&mut self, point: &str) -> Result<(), Errno> {
        nix::mount::umount2(point, nix::mount::MntFlags::empty())
    }

    fn remount_read_only(&mut self, point: &str) -> Result<(), Errno> {
        use nix::mount::MsFlags;
        nix::mount::mount(
            None::<&str>,
            point,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
    }

    fn detach(&mut self, point: &str) -> Result<(), Errno> {
        nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH)
    }
}
