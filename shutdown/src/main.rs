//! keel-shutdown: the last phase of the machine, after the supervisor has stopped
//! every job. keel-init, having synced, execs it as PID 1 (`keel-shutdown
//! poweroff|reboot|halt`); it then
//!
//! 1. sends SIGTERM (and SIGCONT) to every remaining process, reaps while it
//!    waits for them to end, at most `KEEL_SHUTDOWN_TIMEOUT` seconds (kernel word
//!    `keel.shutdown-timeout=`, default 5), then SIGKILLs the rest;
//! 2. only as the machine's init (PID 1 of the initial PID namespace): turns every
//!    swap area off and unmounts every filesystem it can (see [`mounts`]),
//!    remounting the rest read-only; detaches loop devices and removes
//!    device-mapper devices (see [`devices`]); remounts `/` read-only last;
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

mod devices;
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
    let word = std::env::args_os()
        .nth(1)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
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
                let table = mounts::parse_mountinfo(&text);
                mounts::unmount_all(&table, &mut RealFs, &mut &log);
                devices::release_all(&mut RealDevices, &mut &log);
                mounts::remount_root(&table, &mut RealFs, &mut &log);
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
    match parse_timeout(&text) {
        Some(d) => d,
        None => {
            log.failure(&format!(
                "shutdown timeout {text:?} is not a number of seconds up to a day; waiting {}s",
                DEFAULT_TIMEOUT.as_secs()
            ));
            DEFAULT_TIMEOUT
        }
    }
}

/// Seconds, as a decimal number, up to a day.
fn parse_timeout(text: &str) -> Option<Duration> {
    let seconds = text.trim().parse::<f64>().ok()?;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| *d <= Duration::from_secs(86_400))
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

/// The device phase's system calls: sysfs, and the ioctls of the loop and
/// device-mapper drivers.
struct RealDevices;

/// LOOP_CLR_FD, _IO(0x4C, 0x01) (linux/loop.h).
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
/// DM_DEV_REMOVE, _IOWR(0xfd, 4, struct dm_ioctl) (linux/dm-ioctl.h).
const DM_DEV_REMOVE: libc::c_ulong = 0xC138_FD04;

/// linux/dm-ioctl.h's `struct dm_ioctl`, 312 bytes: the header of every
/// device-mapper request. An empty name and uuid select the device by `dev`.
#[repr(C)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; 128],
    uuid: [u8; 129],
    data: [u8; 7],
}

impl RealDevices {
    fn read(path: &str) -> Option<String> {
        std::fs::read_to_string(path)
            .ok()
            .map(|t| t.trim_end().to_string())
    }

    /// ioctl(2) with a request that takes `arg` on an fd opened read-write.
    fn ioctl(path: &str, request: libc::c_ulong, arg: *mut libc::c_void) -> Result<(), Errno> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        // SAFETY: the fd is open for the whole call; `arg` is null or points to
        // a live value of the type `request` expects (see the callers).
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, arg) };
        if rc < 0 { Err(Errno::last()) } else { Ok(()) }
    }
}

impl devices::Devices for RealDevices {
    fn list(&mut self) -> Vec<devices::Device> {
        let Ok(dir) = std::fs::read_dir("/sys/block") else {
            return Vec::new();
        };
        let mut found: Vec<devices::Device> = dir
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_str()?.to_string();
                let base = format!("/sys/block/{name}");
                let kind = if name.starts_with("loop") {
                    // Only an attached loop device has a backing file.
                    devices::Kind::Loop {
                        backing: Self::read(&format!("{base}/loop/backing_file"))?,
                    }
                } else if name.starts_with("dm-") {
                    devices::Kind::Mapper {
                        name: Self::read(&format!("{base}/dm/name"))?,
                    }
                } else {
                    return None;
                };
                let dev = devices::parse_dev(&Self::read(&format!("{base}/dev"))?)?;
                let holders = std::fs::read_dir(format!("{base}/holders"))
                    .map(|d| {
                        d.filter_map(|h| h.ok()?.file_name().into_string().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                Some(devices::Device {
                    name,
                    dev,
                    kind,
                    holders,
                })
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }

    fn detach_loop(&mut self, device: &devices::Device) -> Result<(), Errno> {
        Self::ioctl(
            &format!("/dev/{}", device.name),
            LOOP_CLR_FD,
            std::ptr::null_mut(),
        )?;
        // Still open elsewhere (mounted), the kernel only marks it to detach
        // when its last user closes it: not released yet.
        if std::path::Path::new(&format!("/sys/block/{}/loop/backing_file", device.name)).exists() {
            return Err(Errno::EBUSY);
        }
        Ok(())
    }

    fn remove_mapper(&mut self, device: &devices::Device) -> Result<(), Errno> {
        let (major, minor) = (u64::from(device.dev.0), u64::from(device.dev.1));
        let mut request = DmIoctl {
            version: [4, 0, 0],
            data_size: std::mem::size_of::<DmIoctl>() as u32,
            data_start: std::mem::size_of::<DmIoctl>() as u32,
            target_count: 0,
            open_count: 0,
            flags: 0,
            event_nr: 0,
            padding: 0,
            // The kernel's huge_encode_dev.
            dev: (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12),
            name: [0; 128],
            uuid: [0; 129],
            data: [0; 7],
        };
        Self::ioctl(
            "/dev/mapper/control",
            DM_DEV_REMOVE,
            (&raw mut request).cast(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_mapper_request_header_has_the_kernels_size() {
        // _IOWR encodes the size: 312 in DM_DEV_REMOVE's bits 16-29.
        assert_eq!(std::mem::size_of::<DmIoctl>(), 312);
        assert_eq!((DM_DEV_REMOVE >> 16) & 0x3fff, 312);
    }

    #[test]
    fn a_timeout_is_seconds_up_to_a_day() {
        assert_eq!(parse_timeout("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("0"), Some(Duration::ZERO));
        for bad in ["", "-1", "x", "NaN", "inf", "1e300", "86401"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn what_is_left_is_named_up_to_ten() {
        assert_eq!(describe(&[]), "none visible in /proc");
        assert_eq!(
            describe(&[(7, "sleep".into()), (9, "sh".into())]),
            "7 (sleep), 9 (sh)"
        );
        let many: Vec<(i32, String)> = (1..=12).map(|p| (p, "x".into())).collect();
        assert!(describe(&many).ends_with("10 (x), and 2 more"));
    }
}
