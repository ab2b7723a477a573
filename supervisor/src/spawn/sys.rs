//! What rustix cannot do for the spawn path, per architecture: `clone3` with a
//! child that starts on its own stack, in a function of ours (the trampoline of
//! `Method::SharedMemory`), and the raw `syscall` behind `close_range`, which
//! rustix 1.0 lacks. The child shares the supervisor's memory until it execs (see
//! `spawn`), so these go straight to the kernel and write nothing (no `errno`); a
//! result is `-errno` on failure. x86_64 only so far: elsewhere
//! [`HAS_TRAMPOLINE`] is false and every child is spawned by `Method::Fork`.

/// Whether this architecture has the [`clone3`] trampoline (else every child is
/// spawned by `Method::Fork`).
pub const HAS_TRAMPOLINE: bool = cfg!(target_arch = "x86_64");

#[cfg(target_arch = "x86_64")]
pub use x86_64::{clone3, syscall, syscall6};

/// Elsewhere nothing calls it: `Method::chosen` forks.
///
/// # Safety
/// None needed: it makes no call.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn clone3(
    _args: &mut CloneArgs,
    _entry: unsafe extern "C" fn(*const u8) -> !,
    _arg: *const u8,
) -> isize {
    -(libc::ENOSYS as isize)
}

/// The kernel's `struct clone_args` (linux/sched.h), version 2 layout (with
/// `cgroup`, Linux 5.7).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use super::CloneArgs;
    use std::arch::asm;

    /// A system call with up to six arguments: its result, or `-errno`.
    ///
    /// # Safety
    /// The arguments must be what system call `nr` expects (pointers valid for it).
    #[inline(always)]
    pub unsafe fn syscall6(
        nr: i64,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        e: usize,
        f: usize,
    ) -> isize {
        let ret: isize;
        // SAFETY: the caller passes what `nr` expects; `syscall` clobbers only rcx
        // and r11 (and rax, the result), declared here.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                in("r8") e,
                in("r9") f,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// [`syscall6`] with three arguments.
    ///
    /// # Safety
    /// As for [`syscall6`].
    #[inline(always)]
    pub unsafe fn syscall(nr: i64, a: usize, b: usize, c: usize) -> isize {
        // SAFETY: as the caller's.
        unsafe { syscall6(nr, a, b, c, 0, 0, 0) }
    }

    /// `clone3(args)`: in the child, `entry(arg)` runs on the stack `args` gives (the
    /// kernel starts the child with its stack pointer at `stack + stack_size`) and
    /// never returns; in the parent, the child's pid or `-errno`.
    ///
    /// # Safety
    /// `args.stack`/`args.stack_size` must name a writable region, 16-byte aligned at
    /// its top, that stays mapped as long as the child runs there; `entry` must never
    /// return and, with `CLONE_VM`, touch no memory the parent changes meanwhile.
    pub unsafe fn clone3(
        args: &mut CloneArgs,
        entry: unsafe extern "C" fn(*const u8) -> !,
        arg: *const u8,
    ) -> isize {
        let ret: isize;
        // SAFETY: the parent returns from `syscall` with rax = the pid or -errno and
        // every other register as before (but rcx, r11, declared). The child returns
        // with rax = 0 on its new stack: it clears the frame pointer (no frame of the
        // parent's is its own) and calls `entry(arg)` (r12, r13 survive the call),
        // which never returns; `ud2` would stop it if it did.
        unsafe {
            asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r12",
                "call r13",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 as isize => ret,
                in("rdi") args as *mut CloneArgs,
                in("rsi") std::mem::size_of::<CloneArgs>(),
                in("r12") arg,
                in("r13") entry,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }
}
