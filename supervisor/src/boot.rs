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

/// Whether this looks like the first userspace of a machine rather than a PID
/// namespace on a running one: there, /sys is always mounted already.
pub fn is_machine_boot() -> bool {
    !is_mounted("/sys")
}

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
