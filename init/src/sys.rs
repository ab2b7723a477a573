//! The few system calls rustix does not wrap, and the fork/exec of the supervisor.

use core::ffi::CStr;
use rustix::fd::{AsRawFd, FromRawFd, OwnedFd};
use rustix::io::{self, Errno};
use rustix::runtime::KernelSigSet;

/// `signalfd4(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK)`: rustix has no signalfd.
pub fn signalfd(mask: &KernelSigSet) -> io::Result<OwnedFd> {
    const SFD_CLOEXEC: usize = 0o2000000;
    const SFD_NONBLOCK: usize = 0o4000;
    let ret: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: signalfd4 reads `size_of::<KernelSigSet>()` bytes from `mask`, which
    // is a valid, live KernelSigSet (the kernel's sigset_t); it touches no other memory.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") 289isize => ret, // __NR_signalfd4
            in("rdi") -1isize,
            in("rsi") mask as *const KernelSigSet,
            in("rdx") core::mem::size_of::<KernelSigSet>(),
            in("r10") SFD_CLOEXEC | SFD_NONBLOCK,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") 74usize, // __NR_signalfd4
            inlateout("x0") -1isize => ret,
            in("x1") mask as *const KernelSigSet,
            in("x2") core::mem::size_of::<KernelSigSet>(),
            in("x3") SFD_CLOEXEC | SFD_NONBLOCK,
            options(nostack)
        );
    }
    if (-4095..0).contains(&ret) {
        return Err(Errno::from_raw_os_error(-ret as i32));
    }
    // SAFETY: a non-negative return is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// The signal number and sender's pid (for SIGCHLD, the child's) of each
/// `signalfd_siginfo` record in `buf`.
pub fn signal_records(buf: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    // struct signalfd_siginfo is 128 bytes: ssi_signo is its first u32, then
    // ssi_errno and ssi_code, then ssi_pid at byte 12.
    let word = |rec: &[u8], at: usize| {
        u32::from_ne_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]])
    };
    buf.chunks_exact(128)
        .map(move |rec| (word(rec, 0), word(rec, 12)))
}

/// Milliseconds since boot (CLOCK_BOOTTIME, counting suspend).
pub fn uptime_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// Milliseconds on the monotonic clock, for back-off deadlines.
pub fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// The most arguments and environment entries passed on to the supervisor.
pub const MAX_ARGS: usize = 64;
pub const MAX_ENV: usize = 256;

/// A NULL-terminated array of C-string pointers, built without a heap.
pub struct CArray<const N: usize> {
    ptrs: [*const u8; N],
    len: usize,
}

impl<const N: usize> CArray<N> {
    pub const fn new() -> Self {
        CArray {
            ptrs: [core::ptr::null(); N],
            len: 0,
        }
    }

    /// Appends `s`; false when full (one slot stays for the terminating NULL).
    pub fn push(&mut self, s: &'static CStr) -> bool {
        self.push_raw(s.as_ptr().cast())
    }

    /// Appends a pointer to a NUL-terminated string that lives until exec.
    pub fn push_raw(&mut self, p: *const u8) -> bool {
        if self.len + 1 >= N {
            return false;
        }
        self.ptrs[self.len] = p;
        self.len += 1;
        true
    }

    /// Sets element 0 (argv[0]), which must have been reserved by a first push.
    pub fn set_first(&mut self, s: &'static CStr) {
        self.ptrs[0] = s.as_ptr().cast();
    }

    pub fn as_ptr(&self) -> *const *const u8 {
        self.ptrs.as_ptr()
    }
}

/// Forks and execs the supervisor with `channel` at fd `SUPERVISOR_FD`. Signals are
/// unblocked in the child, and its fd limit set back to `nofile` (the one keel-init
/// was given: the supervisor raises its own, and keeps this one for jobs). Returns
/// the child's pid.
pub fn spawn_supervisor(
    path: &CStr,
    argv: &CArray<MAX_ARGS>,
    envp: &CArray<MAX_ENV>,
    nofile: rustix::process::Rlimit,
    channel: OwnedFd,
) -> io::Result<rustix::process::Pid> {
    use keel_proto::init::SUPERVISOR_FD;
    // SAFETY: keel-init is single-threaded and has no libc whose locks or atfork
    // state could be inconsistent in the child; the child only makes raw syscalls
    // and then execs or exits.
    match unsafe { rustix::runtime::kernel_fork()? } {
        rustix::runtime::Fork::ParentOf(pid) => Ok(pid),
        rustix::runtime::Fork::Child(_) => {
            // SAFETY: restoring an empty mask in the child is always sound.
            let _ = unsafe {
                rustix::runtime::kernel_sigprocmask(
                    rustix::runtime::How::SETMASK,
                    Some(&KernelSigSet::empty()),
                )
            };
            let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, nofile);
            if channel.as_raw_fd() == SUPERVISOR_FD {
                let _ = rustix::io::fcntl_setfd(&channel, rustix::io::FdFlags::empty());
                core::mem::forget(channel);
            } else {
                // SAFETY: fd 3 is replaced by dup2 and handed to the exec'd image.
                let mut target = unsafe { OwnedFd::from_raw_fd(SUPERVISOR_FD) };
                let _ = rustix::io::dup2(&channel, &mut target);
                core::mem::forget(target);
            }
            // SAFETY: argv and envp are NULL-terminated arrays of pointers to
            // NUL-terminated strings that live in this (copied) address space.
            let err = unsafe { rustix::runtime::execve(path, argv.as_ptr(), envp.as_ptr()) };
            let msg = b"keel-init: cannot exec the supervisor\n";
            // SAFETY: fd 2 is borrowed for one write.
            let _ = rustix::io::write(unsafe { rustix::fd::BorrowedFd::borrow_raw(2) }, msg);
            rustix::runtime::exit_group(if err == Errno::NOENT { 127 } else { 126 })
        }
    }
}

/// The inode of the initial PID namespace (the kernel's PROC_PID_INIT_INO).
const INITIAL_PID_NS_INODE: u64 = 0xEFFF_FFFC;

/// Whether this is the machine's init: PID 1 of the initial PID namespace (not of
/// a PID namespace a test or a container made), however much an initramfs has
/// mounted before. Needs /proc; without it, no.
pub fn is_machine() -> bool {
    rustix::process::getpid().is_init()
        && rustix::fs::stat("/proc/self/ns/pid").is_ok_and(|s| s.st_ino == INITIAL_PID_NS_INODE)
}

/// Mounts devtmpfs on /dev if /dev/kmsg is not there (a bare initramfs), so that
/// keel-init's first lines reach the kernel log.
pub fn mount_dev_if_missing() {
    if rustix::fs::access("/dev/kmsg", rustix::fs::Access::EXISTS).is_err() {
        let _ = rustix::mount::mount(
            c"devtmpfs",
            c"/dev",
            c"devtmpfs",
            rustix::mount::MountFlags::NOSUID,
            c"mode=0755",
        );
    }
}
