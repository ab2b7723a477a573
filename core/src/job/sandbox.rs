//! keel's sandboxing stanzas: what a job may see of the filesystem.
//!
//! This module owns the [`Sandbox`] part of a job definition, the stanzas that
//! set it and the mount plan it implies ([`Sandbox::mounts`]): a list of plain
//! steps in the order the child carries them out. It decides nothing about the
//! host — whether a path exists, whether it is a directory — which the supervisor
//! resolves before the spawn (`keel_supervisor::sandbox`).
//!
//! The stanzas (each may be given once; the path lists add up):
//! - `private tmp`: a fresh, empty `/tmp` and `/var/tmp` (tmpfs) for the job.
//! - `private devices`: a `/dev` holding only the pseudo-devices (`null`, `zero`,
//!   `full`, `random`, `urandom`, `tty`) and the `fd`, `stdin`, `stdout`,
//!   `stderr` links.
//! - `protect system`: `/usr`, `/boot` and `/etc` read-only;
//!   `protect system strict`: the whole tree read-only but `/dev`, `/proc`, `/sys`
//!   and the `writable` paths.
//! - `protect home`: `/home`, `/root` and `/run/user` inaccessible;
//!   `protect home read-only`: the same read-only.
//! - `protect kernel tunables`: `/proc/sys`, `/sys` and the other writable kernel
//!   knobs under /proc read-only.
//! - `protect kernel logs`: `/proc/kmsg` and `/dev/kmsg` inaccessible.
//! - `protect kernel modules`: `/lib/modules` and `/usr/lib/modules` inaccessible.
//! - `protect control groups`: `/sys/fs/cgroup` read-only.
//! - `read-only PATH…`, `writable PATH…`, `inaccessible PATH…`: absolute paths.
//!
//! - `syscalls allow NAME|@GROUP…` (only these; everything else gets the
//!   action), `syscalls deny NAME|@GROUP…` (these refused; with an allow list,
//!   taken out of it) (groups: [`SYSCALL_GROUPS`]), `syscall action
//!   eperm|kill`; `address families NAME…|none`; `memory deny write execute`;
//!   `lock personality`; `restrict namespaces`; `restrict realtime`: system-call
//!   filters, compiled by the supervisor (`keel_supervisor::sandbox`).
//!
//! The mounts happen in a mount namespace of the job's own, so nothing of them
//! is seen outside the job.

use serde::{Deserialize, Serialize};

use super::lexer::{Problem, Token};
use super::parse::{Form, Parser, form};

/// What a job may see of the filesystem (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Sandbox {
    pub private_tmp: bool,
    pub private_devices: bool,
    pub protect_system: ProtectSystem,
    pub protect_home: ProtectHome,
    pub protect_kernel_tunables: bool,
    pub protect_kernel_logs: bool,
    pub protect_kernel_modules: bool,
    pub protect_control_groups: bool,
    pub read_only: Vec<String>,
    pub writable: Vec<String>,
    pub inaccessible: Vec<String>,
    /// `syscalls deny NAME|@GROUP…`: system calls refused, groups expanded.
    pub syscalls_denied: Vec<String>,
    /// `syscalls allow NAME|@GROUP…`: the only system calls allowed, groups
    /// expanded; empty: no allow list. Saved apart (`journal::encode_definitions`)
    /// so that sandboxes saved before it existed still load.
    #[serde(skip)]
    pub syscalls_allowed: Vec<String>,
    /// `syscall action eperm|kill`: what a denied call gets.
    pub syscall_action: SyscallAction,
    /// `address families NAME…|none`: the only socket families the job may
    /// open (names of [`ADDRESS_FAMILIES`]); `None`: any.
    pub address_families: Option<Vec<String>>,
    /// `memory deny write execute`: no memory both writable and executable,
    /// nor made executable later.
    pub memory_deny_write_execute: bool,
    /// `lock personality`: the execution domain stays Linux's.
    pub lock_personality: bool,
    /// `restrict namespaces`: no new namespaces, none joined.
    pub restrict_namespaces: bool,
    /// `restrict realtime`: no realtime scheduling.
    pub restrict_realtime: bool,
}

/// A definition's [`Sandbox`], held only when it differs from the default: most
/// jobs have none, and its 160 bytes in every definition were 1.5 MiB of a
/// 10,000-job supervisor (issue 17). Reads see the settings (the default when
/// none are held); the first write makes room for them. Equal when the
/// settings are, however held.
#[derive(Clone, Default)]
pub struct SandboxSlot(Option<Box<Sandbox>>);

impl SandboxSlot {
    /// The default sandbox, for reads of an empty slot.
    fn none() -> &'static Sandbox {
        static NONE: std::sync::LazyLock<Sandbox> = std::sync::LazyLock::new(Sandbox::default);
        &NONE
    }
}

impl std::ops::Deref for SandboxSlot {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        match &self.0 {
            Some(sandbox) => sandbox,
            None => SandboxSlot::none(),
        }
    }
}

impl std::ops::DerefMut for SandboxSlot {
    fn deref_mut(&mut self) -> &mut Sandbox {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<Sandbox> for SandboxSlot {
    fn from(sandbox: Sandbox) -> Self {
        SandboxSlot((sandbox != Sandbox::default()).then(|| Box::new(sandbox)))
    }
}

impl PartialEq for SandboxSlot {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SandboxSlot {}

impl std::fmt::Debug for SandboxSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// The socket address families `address families` names, with their Linux
/// numbers (linux/socket.h, part of the kernel's ABI).
pub const ADDRESS_FAMILIES: &[(&str, u32)] = &[
    ("unix", 1),
    ("inet", 2),
    ("ax25", 3),
    ("ipx", 4),
    ("appletalk", 5),
    ("x25", 9),
    ("inet6", 10),
    ("key", 15),
    ("netlink", 16),
    ("packet", 17),
    ("rds", 21),
    ("llc", 26),
    ("ib", 27),
    ("mpls", 28),
    ("can", 29),
    ("tipc", 30),
    ("bluetooth", 31),
    ("alg", 38),
    ("nfc", 39),
    ("vsock", 40),
    ("kcm", 41),
    ("qipcrtr", 42),
    ("smc", 43),
    ("xdp", 44),
    ("mctp", 45),
];

/// What a denied system call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SyscallAction {
    /// It fails with `EPERM`.
    #[default]
    Eperm,
    /// The process is killed (`SIGSYS`).
    Kill,
}

/// The named groups of system calls `syscalls allow` and `syscalls deny` take,
/// after systemd's (systemd.exec(5), "SystemCallFilter="), with the calls x86_64
/// has: the group's name and its members, separated by spaces; a member may be
/// another group (`@system-service`). [`group_calls`] expands them.
pub const SYSCALL_GROUPS: &[(&str, &str)] = &[
    // Asynchronous I/O.
    (
        "@aio",
        "io_cancel io_destroy io_getevents io_pgetevents io_setup io_submit \
         io_uring_enter io_uring_register io_uring_setup",
    ),
    // Reading, writing, closing: what almost every program needs.
    (
        "@basic-io",
        "close close_range dup dup2 dup3 lseek pread64 preadv preadv2 pwrite64 \
         pwritev pwritev2 read readv write writev",
    ),
    ("@chown", "chown fchown fchownat lchown"),
    (
        "@clock",
        "adjtimex clock_adjtime clock_settime settimeofday",
    ),
    ("@cpu-emulation", "modify_ldt"),
    // Reading the process's own ids and capabilities.
    (
        "@credentials",
        "capget getegid geteuid getgid getgroups getresgid getresuid getuid",
    ),
    (
        "@debug",
        "lookup_dcookie perf_event_open pidfd_getfd process_vm_readv \
         process_vm_writev ptrace",
    ),
    // What any program needs to start (the dynamic loader's calls among them)
    // and to end: the exec and the exit.
    (
        "@default",
        "arch_prctl brk clock_getres clock_gettime clock_nanosleep execve exit \
         exit_group futex futex_waitv get_robust_list get_thread_area getegid geteuid \
         getgid getgroups getpgid getpgrp getpid getppid getrandom getresgid \
         getresuid getrlimit getsid gettid gettimeofday getuid membarrier mmap \
         mprotect munmap nanosleep pause prlimit64 restart_syscall rseq rt_sigreturn \
         sched_getaffinity sched_yield set_robust_list set_thread_area \
         set_tid_address time",
    ),
    // Files, directories and their attributes.
    (
        "@file-system",
        "access chdir chmod close creat faccessat faccessat2 fallocate fchdir fchmod \
         fchmodat fchmodat2 fcntl fgetxattr flistxattr fremovexattr fsetxattr fstat \
         fstatfs ftruncate futimesat getcwd getdents getdents64 getxattr \
         inotify_add_watch inotify_init inotify_init1 inotify_rm_watch lgetxattr link \
         linkat listxattr llistxattr lremovexattr lsetxattr lstat mkdir mkdirat mknod \
         mknodat mmap munmap newfstatat open openat openat2 readlink readlinkat \
         removexattr rename renameat renameat2 rmdir setxattr stat statfs statx \
         symlink symlinkat truncate unlink unlinkat utime utimensat utimes",
    ),
    // Waiting on file descriptors.
    (
        "@io-event",
        "epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 \
         epoll_wait epoll_wait_old eventfd eventfd2 poll ppoll pselect6 select",
    ),
    // Pipes, SysV and POSIX message queues, semaphores and shared memory.
    (
        "@ipc",
        "memfd_create mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend \
         mq_unlink msgctl msgget msgrcv msgsnd pipe pipe2 process_madvise \
         process_vm_readv process_vm_writev semctl semget semop semtimedop shmat \
         shmctl shmdt shmget",
    ),
    ("@keyring", "add_key keyctl request_key"),
    // Locking memory.
    ("@memlock", "mlock mlock2 mlockall munlock munlockall"),
    ("@module", "delete_module finit_module init_module"),
    (
        "@mount",
        "chroot fsconfig fsmount fsopen fspick mount mount_setattr move_mount \
         open_tree pivot_root umount2",
    ),
    // Sockets.
    (
        "@network-io",
        "accept accept4 bind connect getpeername getsockname getsockopt listen \
         recvfrom recvmmsg recvmsg sendmmsg sendmsg sendto setsockopt shutdown socket \
         socketpair",
    ),
    // What needs the superuser: @chown, @clock, @module, @raw-io, @reboot,
    // @swap, and more.
    (
        "@privileged",
        "@chown @clock @module @raw-io @reboot @swap acct bpf capset chroot \
         fanotify_init fanotify_mark open_by_handle_at pivot_root quotactl \
         quotactl_fd setdomainname setfsuid setgroups sethostname setresuid setreuid \
         setuid vhangup",
    ),
    // Processes and threads: making, signalling, waiting for them.
    (
        "@process",
        "arch_prctl capget clone clone3 execveat fork getrusage kill pidfd_open \
         pidfd_send_signal prctl rt_sigqueueinfo rt_tgsigqueueinfo setns tgkill times \
         tkill unshare vfork wait4 waitid",
    ),
    ("@raw-io", "ioperm iopl"),
    ("@reboot", "kexec_file_load kexec_load reboot"),
    // Scheduling, priorities, memory policy, resource limits.
    (
        "@resources",
        "ioprio_set mbind migrate_pages move_pages sched_setaffinity sched_setattr \
         sched_setparam sched_setscheduler set_mempolicy setpriority setrlimit",
    ),
    // Changing user and group ids.
    (
        "@setuid",
        "setgid setgroups setregid setresgid setresuid setreuid setuid",
    ),
    // Signal handlers and masks.
    (
        "@signal",
        "rt_sigaction rt_sigpending rt_sigprocmask rt_sigsuspend rt_sigtimedwait \
         sigaltstack signalfd signalfd4",
    ),
    ("@swap", "swapoff swapon"),
    // Flushing files to storage.
    ("@sync", "fdatasync fsync msync sync sync_file_range syncfs"),
    // Timers and alarms.
    (
        "@timer",
        "alarm getitimer setitimer timer_create timer_delete timer_getoverrun \
         timer_gettime timer_settime timerfd_create timerfd_gettime timerfd_settime \
         times",
    ),
    // What an ordinary system service needs (systemd's list).
    (
        "@system-service",
        "@aio @basic-io @chown @default @file-system @io-event @ipc @keyring @memlock \
         @network-io @process @resources @setuid @signal @sync @timer brk capget \
         capset copy_file_range fadvise64 flock get_mempolicy getcpu getpriority \
         getrandom ioctl ioprio_get kcmp madvise mprotect mremap name_to_handle_at \
         personality readahead remap_file_pages sched_get_priority_max \
         sched_get_priority_min sched_getaffinity sched_getattr sched_getparam \
         sched_getscheduler sched_rr_get_interval sched_yield sendfile setfsgid \
         setfsuid setpgid setsid splice sysinfo tee umask uname userfaultfd vmsplice",
    ),
];

/// The calls of `group` (`@name`), member groups expanded, each once; `None`
/// when there is no such group.
pub fn group_calls(group: &str) -> Option<Vec<&'static str>> {
    let (_, members) = SYSCALL_GROUPS.iter().find(|(g, _)| *g == group)?;
    let mut out: Vec<&'static str> = Vec::new();
    for member in members.split_whitespace() {
        let calls = match member.starts_with('@') {
            true => group_calls(member)?,
            false => vec![member],
        };
        for call in calls {
            if !out.contains(&call) {
                out.push(call);
            }
        }
    }
    Some(out)
}

impl Sandbox {
    /// Whether the job's filter refuses system call `name`.
    pub fn refuses_call(&self, name: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|n| n == name);
        listed(&self.syscalls_denied)
            || (!self.syscalls_allowed.is_empty() && !listed(&self.syscalls_allowed))
    }

    /// Whether any system-call filter applies (which implies no new privileges).
    pub fn filters_calls(&self) -> bool {
        !self.syscalls_denied.is_empty()
            || !self.syscalls_allowed.is_empty()
            || self.address_families.is_some()
            || self.memory_deny_write_execute
            || self.lock_personality
            || self.restrict_namespaces
            || self.restrict_realtime
    }
}

/// `protect system [strict]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ProtectSystem {
    #[default]
    Off,
    /// `/usr`, `/boot`, `/etc` read-only.
    System,
    /// Everything read-only but the API filesystems and the `writable` paths.
    Strict,
}

/// `protect home [read-only]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ProtectHome {
    #[default]
    Off,
    ReadOnly,
    Inaccessible,
}

/// One step of a job's mount setup, in the order [`Sandbox::mounts`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub path: String,
    pub kind: MountKind,
    /// Named in the job file: a missing path fails the start. The paths a
    /// `protect …` stanza implies are skipped where the system lacks them.
    pub required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// Read-only, with everything mounted below it.
    ReadOnly,
    /// Writable again (inside a read-only tree), with everything below it.
    Writable,
    /// Hidden behind an empty, read-only directory or file.
    Inaccessible,
    /// A fresh, empty tmpfs (sticky, world-writable, as `/tmp` is).
    PrivateTmp,
    /// A tmpfs with only the pseudo-devices.
    PrivateDevices,
}

impl MountKind {
    /// How the stanzas and messages name it.
    pub fn name(self) -> &'static str {
        match self {
            MountKind::ReadOnly => "read-only",
            MountKind::Writable => "writable",
            MountKind::Inaccessible => "inaccessible",
            MountKind::PrivateTmp => "private tmp",
            MountKind::PrivateDevices => "private devices",
        }
    }
}

/// The kernel's writable knobs besides `/proc/sys` and `/sys` (as systemd's list).
const KERNEL_TUNABLES: &[&str] = &[
    "/proc/sys",
    "/sys",
    "/proc/sysrq-trigger",
    "/proc/latency_stats",
    "/proc/acpi",
    "/proc/timer_stats",
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
];

impl Sandbox {
    /// Whether the job needs a mount namespace of its own.
    pub fn isolates_filesystem(&self) -> bool {
        !self.mounts().is_empty()
    }

    /// The mount steps, in order: the broad read-only ones, then what is made
    /// writable again inside them, then what is hidden, then the fresh tmpfs
    /// mounts (which the read-only steps must not reach).
    pub fn mounts(&self) -> Vec<Mount> {
        let mut out = Vec::new();
        let implied = |out: &mut Vec<Mount>, paths: &[&str], kind| {
            out.extend(paths.iter().map(|p| Mount {
                path: p.to_string(),
                kind,
                required: false,
            }))
        };
        match self.protect_system {
            ProtectSystem::Off => {}
            ProtectSystem::System => {
                implied(&mut out, &["/usr", "/boot", "/etc"], MountKind::ReadOnly)
            }
            ProtectSystem::Strict => {
                implied(&mut out, &["/"], MountKind::ReadOnly);
                implied(&mut out, &["/dev", "/proc", "/sys"], MountKind::Writable);
            }
        }
        let home = ["/home", "/root", "/run/user"];
        match self.protect_home {
            ProtectHome::Off => {}
            ProtectHome::ReadOnly => implied(&mut out, &home, MountKind::ReadOnly),
            ProtectHome::Inaccessible => implied(&mut out, &home, MountKind::Inaccessible),
        }
        if self.protect_kernel_tunables {
            implied(&mut out, KERNEL_TUNABLES, MountKind::ReadOnly);
        }
        if self.protect_control_groups {
            implied(&mut out, &["/sys/fs/cgroup"], MountKind::ReadOnly);
        }
        let named = |out: &mut Vec<Mount>, paths: &[String], kind| {
            out.extend(paths.iter().map(|p| Mount {
                path: p.clone(),
                kind,
                required: true,
            }))
        };
        named(&mut out, &self.read_only, MountKind::ReadOnly);
        named(&mut out, &self.writable, MountKind::Writable);
        if self.protect_kernel_logs {
            implied(
                &mut out,
                &["/proc/kmsg", "/dev/kmsg"],
                MountKind::Inaccessible,
            );
        }
        if self.protect_kernel_modules {
            implied(
                &mut out,
                &["/lib/modules", "/usr/lib/modules"],
                MountKind::Inaccessible,
            );
        }
        named(&mut out, &self.inaccessible, MountKind::Inaccessible);
        if self.private_tmp {
            implied(&mut out, &["/tmp", "/var/tmp"], MountKind::PrivateTmp);
        }
        if self.private_devices {
            out.push(Mount {
                path: "/dev".into(),
                kind: MountKind::PrivateDevices,
                required: true,
            });
        }
        out
    }

    /// The stanzas, one a line, in a fixed order (`render`).
    pub fn lines(&self, quote_all: impl Fn(&[String]) -> String) -> Vec<String> {
        let mut out = Vec::new();
        let flags = [
            (self.private_tmp, "private tmp"),
            (self.private_devices, "private devices"),
            (
                self.protect_system == ProtectSystem::System,
                "protect system",
            ),
            (
                self.protect_system == ProtectSystem::Strict,
                "protect system strict",
            ),
            (
                self.protect_home == ProtectHome::Inaccessible,
                "protect home",
            ),
            (
                self.protect_home == ProtectHome::ReadOnly,
                "protect home read-only",
            ),
            (self.protect_kernel_tunables, "protect kernel tunables"),
            (self.protect_kernel_logs, "protect kernel logs"),
            (self.protect_kernel_modules, "protect kernel modules"),
            (self.protect_control_groups, "protect control groups"),
        ];
        out.extend(flags.into_iter().filter(|f| f.0).map(|f| f.1.to_string()));
        if !self.syscalls_allowed.is_empty() {
            out.push(format!(
                "syscalls allow {}",
                self.syscalls_allowed.join(" ")
            ));
        }
        if !self.syscalls_denied.is_empty() {
            out.push(format!("syscalls deny {}", self.syscalls_denied.join(" ")));
        }
        if self.syscall_action == SyscallAction::Kill {
            out.push("syscall action kill".into());
        }
        match &self.address_families {
            None => {}
            Some(names) if names.is_empty() => out.push("address families none".into()),
            Some(names) => out.push(format!("address families {}", names.join(" "))),
        }
        let flags = [
            (self.memory_deny_write_execute, "memory deny write execute"),
            (self.lock_personality, "lock personality"),
            (self.restrict_namespaces, "restrict namespaces"),
            (self.restrict_realtime, "restrict realtime"),
        ];
        out.extend(flags.into_iter().filter(|f| f.0).map(|f| f.1.to_string()));
        for (stanza, paths) in [
            ("read-only", &self.read_only),
            ("writable", &self.writable),
            ("inaccessible", &self.inaccessible),
        ] {
            if !paths.is_empty() {
                out.push(format!("{stanza} {}", quote_all(paths)));
            }
        }
        out
    }
}

impl Parser<'_> {
    /// `private tmp`, `private devices`.
    pub(super) fn private(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let what = self.word("'tmp' or 'devices' after private")?;
        let sandbox = &mut self.def.sandbox;
        let stanza = match what.text.as_str() {
            "tmp" => {
                sandbox.private_tmp = true;
                "private tmp"
            }
            "devices" => {
                sandbox.private_devices = true;
                "private devices"
            }
            other => {
                return Err(Problem::new(
                    what.start,
                    format!(
                        "unknown stanza: private {other} (expected private tmp or private devices)"
                    ),
                ));
            }
        };
        self.end(stanza)?;
        Ok(form(stanza))
    }

    /// `protect system [strict]`, `protect home [read-only]`,
    /// `protect kernel tunables|logs|modules`, `protect control groups`.
    pub(super) fn protect(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let what = self.word("what to protect after protect")?;
        let stanza = match what.text.as_str() {
            "system" => {
                let strict = self.optional_word("protect system", &["strict"])?;
                self.def.sandbox.protect_system = if strict.is_some() {
                    ProtectSystem::Strict
                } else {
                    ProtectSystem::System
                };
                "protect system"
            }
            "home" => {
                let read_only = self.optional_word("protect home", &["read-only"])?;
                self.def.sandbox.protect_home = if read_only.is_some() {
                    ProtectHome::ReadOnly
                } else {
                    ProtectHome::Inaccessible
                };
                "protect home"
            }
            "kernel" => {
                let part = self.word("tunables, logs or modules after protect kernel")?;
                let sandbox = &mut self.def.sandbox;
                match part.text.as_str() {
                    "tunables" => sandbox.protect_kernel_tunables = true,
                    "logs" => sandbox.protect_kernel_logs = true,
                    "modules" => sandbox.protect_kernel_modules = true,
                    other => {
                        return Err(Problem::new(
                            part.start,
                            format!(
                                "unknown stanza: protect kernel {other} (expected tunables, logs or modules)"
                            ),
                        ));
                    }
                }
                "protect kernel"
            }
            "control" => {
                let groups = self.word("'groups' after protect control")?;
                if groups.text != "groups" {
                    return Err(Problem::new(
                        groups.start,
                        format!(
                            "unknown stanza: protect control {} (expected protect control groups)",
                            groups.text
                        ),
                    ));
                }
                self.def.sandbox.protect_control_groups = true;
                "protect control groups"
            }
            other => {
                return Err(Problem::new(
                    what.start,
                    format!(
                        "unknown stanza: protect {other} (expected system, home, kernel or control groups)"
                    ),
                ));
            }
        };
        self.end(stanza)?;
        Ok(form(stanza))
    }

    /// `read-only PATH…`
    pub(super) fn read_only(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let paths = self.paths("read-only")?;
        self.def.sandbox.read_only.extend(paths);
        Ok(form("read-only"))
    }

    /// `writable PATH…`
    pub(super) fn writable(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let paths = self.paths("writable")?;
        self.def.sandbox.writable.extend(paths);
        Ok(form("writable"))
    }

    /// `inaccessible PATH…`
    pub(super) fn inaccessible(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let paths = self.paths("inaccessible")?;
        self.def.sandbox.inaccessible.extend(paths);
        Ok(form("inaccessible"))
    }

    /// `syscalls allow|deny NAME|@GROUP…` (names are checked against the
    /// kernel's table by the supervisor; groups here).
    pub(super) fn syscalls(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let which = self.word("'allow' or 'deny' after syscalls")?;
        let stanza = match which.text.as_str() {
            "allow" => "syscalls allow",
            "deny" => "syscalls deny",
            other => {
                return Err(Problem::new(
                    which.start,
                    format!(
                        "unknown stanza: syscalls {other} (expected syscalls allow or syscalls deny)"
                    ),
                ));
            }
        };
        let mut names = Vec::new();
        for token in self.some_args(stanza, "system calls or @groups")? {
            if token.text.starts_with('@') {
                let calls = group_calls(&token.text).ok_or_else(|| {
                    Problem::new(
                        token.start,
                        format!("{stanza}: unknown group {}", token.text),
                    )
                })?;
                names.extend(calls.into_iter().map(str::to_string));
            } else {
                names.push(token.text);
            }
        }
        self.end(stanza)?;
        let list = match which.text.as_str() {
            "allow" => &mut self.def.sandbox.syscalls_allowed,
            _ => &mut self.def.sandbox.syscalls_denied,
        };
        for name in names {
            if !list.contains(&name) {
                list.push(name);
            }
        }
        Ok(form(stanza))
    }

    /// `syscall action eperm|kill`.
    pub(super) fn syscall(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let action = self.word("'action' after syscall")?;
        if action.text != "action" {
            return Err(Problem::new(
                action.start,
                format!(
                    "unknown stanza: syscall {} (expected syscall action)",
                    action.text
                ),
            ));
        }
        let what = self.word("eperm or kill after syscall action")?;
        self.def.sandbox.syscall_action = match what.text.as_str() {
            "eperm" => SyscallAction::Eperm,
            "kill" => SyscallAction::Kill,
            other => {
                return Err(Problem::new(
                    what.start,
                    format!("syscall action: expected eperm or kill, not {other}"),
                ));
            }
        };
        self.end("syscall action")?;
        Ok(form("syscall action"))
    }

    /// `address families NAME…|none` (`AF_INET`, `af_inet` and `inet` are the same).
    pub(super) fn address(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.words_after("address", &["families"])?;
        let tokens = self.some_args("address families", "address families or 'none'")?;
        let mut names = Vec::new();
        for token in &tokens {
            if token.text == "none" && tokens.len() == 1 {
                break;
            }
            let lower = token.text.to_ascii_lowercase();
            let name = lower.strip_prefix("af_").unwrap_or(&lower);
            if !ADDRESS_FAMILIES.iter().any(|(n, _)| *n == name) {
                return Err(Problem::new(
                    token.start,
                    format!("address families: unknown family {}", token.text),
                ));
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        self.end("address families")?;
        self.def.sandbox.address_families = Some(names);
        Ok(form("address families"))
    }

    /// `memory deny write execute`.
    pub(super) fn memory(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.words_after("memory", &["deny", "write", "execute"])?;
        self.end("memory deny write execute")?;
        self.def.sandbox.memory_deny_write_execute = true;
        Ok(form("memory deny write execute"))
    }

    /// `lock personality`.
    pub(super) fn lock(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.words_after("lock", &["personality"])?;
        self.end("lock personality")?;
        self.def.sandbox.lock_personality = true;
        Ok(form("lock personality"))
    }

    /// `restrict namespaces`, `restrict realtime`.
    pub(super) fn restrict(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let what = self.word("namespaces or realtime after restrict")?;
        let sandbox = &mut self.def.sandbox;
        let stanza = match what.text.as_str() {
            "namespaces" => {
                sandbox.restrict_namespaces = true;
                "restrict namespaces"
            }
            "realtime" => {
                sandbox.restrict_realtime = true;
                "restrict realtime"
            }
            other => {
                return Err(Problem::new(
                    what.start,
                    format!(
                        "unknown stanza: restrict {other} (expected restrict namespaces or restrict realtime)"
                    ),
                ));
            }
        };
        self.end(stanza)?;
        Ok(form(stanza))
    }

    /// The fixed words of a stanza after its keyword.
    fn words_after(&mut self, keyword: &str, words: &[&str]) -> Result<(), Problem> {
        let whole = format!("{keyword} {}", words.join(" "));
        for expected in words {
            let word = self.word(&format!("'{whole}'"))?;
            if word.text != *expected {
                return Err(Problem::new(
                    word.start,
                    format!(
                        "unknown stanza: {keyword} … {} (expected '{whole}')",
                        word.text
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Absolute paths up to the end of the line.
    fn paths(&mut self, stanza: &str) -> Result<Vec<String>, Problem> {
        let tokens = self.some_args(stanza, "absolute paths")?;
        let mut out = Vec::new();
        for token in tokens {
            if !token.text.starts_with('/') {
                return Err(Problem::new(
                    token.start,
                    format!("{stanza}: not an absolute path: {}", token.text),
                ));
            }
            out.push(token.text);
        }
        self.end(stanza)?;
        Ok(out)
    }

    /// One of `words` if the line goes on, `None` at its end.
    fn optional_word(&mut self, stanza: &str, words: &[&str]) -> Result<Option<String>, Problem> {
        if !self.has_more() {
            return Ok(None);
        }
        let word = self.word(stanza)?;
        if words.contains(&word.text.as_str()) {
            Ok(Some(word.text))
        } else {
            Err(Problem::new(
                word.start,
                format!(
                    "unexpected argument to {stanza}: {} (expected {})",
                    word.text,
                    words.join(" or ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{parse, render};

    fn sandbox(text: &str) -> Sandbox {
        let parsed = parse("j", text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        Sandbox::clone(&parsed.def.expect("parses").sandbox)
    }

    #[test]
    fn a_slot_holds_settings_only_when_they_differ_from_the_default() {
        assert_eq!(
            std::mem::size_of::<SandboxSlot>(),
            8,
            "a pointer, not 160 bytes"
        );
        let mut slot = SandboxSlot::default();
        assert!(slot.0.is_none());
        assert!(!slot.private_tmp, "reads see the default");
        assert_eq!(slot, SandboxSlot::from(Sandbox::default()));
        assert!(SandboxSlot::from(Sandbox::default()).0.is_none());
        slot.private_tmp = true;
        assert!(slot.0.is_some() && slot.private_tmp);
        assert_ne!(slot, SandboxSlot::default());
        slot.private_tmp = false;
        // Held but default: equal to an empty slot all the same.
        assert_eq!(slot, SandboxSlot::default());
        assert!(parse("j", "exec true\n").def.unwrap().sandbox.0.is_none());
        assert!(
            parse("j", "private tmp\nexec true\n")
                .def
                .unwrap()
                .sandbox
                .0
                .is_some()
        );
    }

    fn error(text: &str) -> String {
        let parsed = parse("j", text);
        assert!(parsed.def.is_none(), "{text:?} should not parse");
        parsed.diagnostics[0].render("j")
    }

    #[test]
    fn every_stanza_parses_and_renders_back() {
        let text = "private tmp\nprivate devices\nprotect system strict\nprotect home read-only\n\
                    protect kernel tunables\nprotect kernel logs\nprotect kernel modules\n\
                    protect control groups\nread-only /srv /opt\nwritable /var/lib/x\n\
                    inaccessible /secret\nread-only \"/with space\"\n";
        let s = sandbox(text);
        assert!(s.private_tmp && s.private_devices);
        assert_eq!(s.protect_system, ProtectSystem::Strict);
        assert_eq!(s.protect_home, ProtectHome::ReadOnly);
        assert!(s.protect_kernel_tunables && s.protect_kernel_logs);
        assert!(s.protect_kernel_modules && s.protect_control_groups);
        assert_eq!(s.read_only, ["/srv", "/opt", "/with space"]);
        assert_eq!(s.writable, ["/var/lib/x"]);
        assert_eq!(s.inaccessible, ["/secret"]);
        let def = parse("j", text).def.unwrap();
        assert_eq!(*parse("j", &render(&def)).def.unwrap().sandbox, s);
        assert_eq!(
            sandbox("protect system\n").protect_system,
            ProtectSystem::System
        );
        assert_eq!(
            sandbox("protect home\n").protect_home,
            ProtectHome::Inaccessible
        );
    }

    #[test]
    fn bad_stanzas_are_refused_where_they_go_wrong() {
        assert_eq!(
            error("read-only srv\n"),
            "j:1:11: error: read-only: not an absolute path: srv"
        );
        assert_eq!(
            error("writable\n"),
            "j:1:9: error: expected absolute paths after writable"
        );
        assert_eq!(
            error("protect system lax\n"),
            "j:1:16: error: unexpected argument to protect system: lax (expected strict)"
        );
        assert_eq!(
            error("protect kernel clock\n"),
            "j:1:16: error: unknown stanza: protect kernel clock (expected tunables, logs or modules)"
        );
        assert_eq!(
            error("private net\n"),
            "j:1:9: error: unknown stanza: private net (expected private tmp or private devices)"
        );
        assert_eq!(
            error("protect control\n"),
            "j:1:16: error: expected 'groups' after protect control"
        );
        assert_eq!(
            error("private tmp now\n"),
            "j:1:13: error: unexpected argument to private tmp: now"
        );
    }

    #[test]
    fn system_call_denials_expand_groups_and_render_back() {
        let text = "syscalls deny uname @swap\nsyscalls deny swapon\nsyscall action kill\n";
        let s = sandbox(text);
        assert_eq!(s.syscalls_denied, ["uname", "swapoff", "swapon"]);
        assert_eq!(s.syscall_action, SyscallAction::Kill);
        let def = parse("j", text).def.unwrap();
        assert_eq!(*parse("j", &render(&def)).def.unwrap().sandbox, s);
        assert_eq!(
            error("syscalls deny @nonsense\n"),
            "j:1:15: error: syscalls deny: unknown group @nonsense"
        );
        assert_eq!(
            error("syscall action log\n"),
            "j:1:16: error: syscall action: expected eperm or kill, not log"
        );
        assert!(!s.isolates_filesystem());
        assert_eq!(
            error("syscalls permit uname\n"),
            "j:1:10: error: unknown stanza: syscalls permit (expected syscalls allow or syscalls deny)"
        );
    }

    #[test]
    fn the_readme_lists_every_group_with_its_members() {
        let readme = include_str!("../../../README.md");
        for (group, members) in SYSCALL_GROUPS {
            let row = format!(
                "| `{group}` | {} |",
                members.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            assert!(readme.contains(&row), "README.md lacks {row}");
        }
    }

    #[test]
    fn allow_lists_expand_nested_groups_and_render_back() {
        let text =
            "syscalls allow @basic-io uname\nsyscalls allow read getpid\nsyscalls deny uname\n";
        let s = sandbox(text);
        assert_eq!(&s.syscalls_allowed[..3], ["close", "close_range", "dup"]);
        assert_eq!(
            s.syscalls_allowed.iter().filter(|n| *n == "read").count(),
            1
        );
        assert_eq!(
            s.syscalls_allowed.last().map(String::as_str),
            Some("getpid")
        );
        // Denied wins over allowed; a call outside the list is refused.
        assert!(s.refuses_call("uname") && s.refuses_call("mount"));
        assert!(!s.refuses_call("read") && s.filters_calls());
        let def = parse("j", text).def.unwrap();
        assert_eq!(*parse("j", &render(&def)).def.unwrap().sandbox, s);
        // @system-service holds its member groups' calls, each once.
        let service = group_calls("@system-service").unwrap();
        for member in [
            "@default",
            "@basic-io",
            "@file-system",
            "@network-io",
            "@process",
        ] {
            for call in group_calls(member).unwrap() {
                assert!(service.contains(&call), "{member}: {call}");
            }
        }
        let mut unique = service.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), service.len());
        assert!(!service.contains(&"mount") && !service.contains(&"reboot"));
        assert_eq!(
            error("syscalls allow read @nope\n"),
            "j:1:21: error: syscalls allow: unknown group @nope"
        );
        assert_eq!(
            error("syscalls allow\n"),
            "j:1:15: error: expected system calls or @groups after syscalls allow"
        );
    }

    #[test]
    fn restrictions_parse_and_render_back() {
        let text = "address families AF_UNIX inet inet6\nmemory deny write execute\n\
                    lock personality\nrestrict namespaces\nrestrict realtime\n";
        let s = sandbox(text);
        assert_eq!(
            s.address_families.as_deref(),
            Some(&["unix".to_string(), "inet".into(), "inet6".into()][..])
        );
        assert!(s.memory_deny_write_execute && s.lock_personality);
        assert!(s.restrict_namespaces && s.restrict_realtime);
        let def = parse("j", text).def.unwrap();
        assert_eq!(*parse("j", &render(&def)).def.unwrap().sandbox, s);
        let none = sandbox("address families none\n");
        assert_eq!(none.address_families, Some(vec![]));
        assert_eq!(
            *parse("j", "address families none\n").def.unwrap().sandbox,
            none
        );
        assert_eq!(
            error("address families inet ipv9\n"),
            "j:1:23: error: address families: unknown family ipv9"
        );
        assert_eq!(
            error("memory deny write\n"),
            "j:1:18: error: expected 'memory deny write execute'"
        );
        assert_eq!(
            error("restrict users\n"),
            "j:1:10: error: unknown stanza: restrict users (expected restrict namespaces or restrict realtime)"
        );
    }

    #[test]
    fn the_mount_plan_goes_from_broad_to_narrow() {
        let s = sandbox(
            "private tmp\nprotect system strict\nwritable /var/lib/x\ninaccessible /secret\n\
             protect home\n",
        );
        let plan: Vec<(String, MountKind, bool)> = s
            .mounts()
            .into_iter()
            .map(|m| (m.path, m.kind, m.required))
            .collect();
        let step = |p: &str, k, r| (p.to_string(), k, r);
        use MountKind::*;
        assert_eq!(
            plan,
            [
                step("/", ReadOnly, false),
                step("/dev", Writable, false),
                step("/proc", Writable, false),
                step("/sys", Writable, false),
                step("/home", Inaccessible, false),
                step("/root", Inaccessible, false),
                step("/run/user", Inaccessible, false),
                step("/var/lib/x", Writable, true),
                step("/secret", Inaccessible, true),
                step("/tmp", PrivateTmp, false),
                step("/var/tmp", PrivateTmp, false),
            ]
        );
        assert!(!Sandbox::default().isolates_filesystem());
        assert!(s.isolates_filesystem());
    }
}
