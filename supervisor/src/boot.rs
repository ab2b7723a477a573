//! What the first supervisor of a real boot sets up before any job: the kernel
//! filesystems that are not mounted yet (cgroup2 at /sys/fs/cgroup among them, for
//! the job cgroups, `cgroup`). Each is mounted only if missing, so the
//! same code is harmless in a PID namespace (where they all exist already).

use nix::mount::{MsFlags, mount};

/// (source, target, type, flags, data)
const MOUNTS: &[(&str, &str, &str, MsFlags, &str)] = &[
    (
        "proc",
        "/proc",
        "proc",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "nsdelegate",
    ),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        "mode=0755",
    ),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        "gid=5,mode=0620,ptmxmode=0666",
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=0755",
    ),
];

/// Whether this supervisor serves the machine's init: keel-init says so with
/// `KEEL_MACHINE=1` when it is PID 1 of the initial PID namespace (it drops the
/// variable from what it inherits, so nothing else can set it). Whatever an
/// initramfs has mounted already does not matter.
pub fn is_machine_boot() -> bool {
    std::env::var_os("KEEL_MACHINE").is_some_and(|v| v == "1")
}

/// Mounts what is missing, and lets the kernel log take every line keel writes
/// (by default /dev/kmsg drops a writer's lines beyond a burst of 10 in 5 s).
pub fn mount_missing() {
    for &(source, target, fstype, flags, data) in MOUNTS {
        if is_mounted(target) {
            continue;
        }
        let _ = std::fs::create_dir_all(target);
        match mount(Some(source), target, Some(fstype), flags, Some(data)) {
            Ok(()) => tracing::info!("mounted {fstype} on {target}"),
            Err(e) => tracing::warn!("cannot mount {fstype} on {target}: {e}"),
        }
    }
    // Absent, or locked by printk.devkmsg= on the kernel command line: as it is.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
}

/// Whether `target` is a mount point, from /proc/self/mountinfo (field 5).
fn is_mounted(target: &str) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        // No /proc yet: nothing can be known to be mounted.
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == target)
}
