//! The filesystem part of the last phase, kept free of system calls so that it
//! can be tested without touching this machine's mounts: the mount table as
//! /proc/self/mountinfo lists it, which of its filesystems stay (the kernel's API
//! filesystems, nothing of them is on a disk), and the order of work — unmount
//! in reverse mount order, again while that makes progress; a mount still busy is
//! remounted read-only and detached, so that what it is mounted on can go next;
//! `/` is remounted read-only last. The system calls are behind [`Fs`].

use nix::errno::Errno;

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: String,
    pub fstype: String,
}

/// The mounts of a mountinfo text, in its (mount) order. Malformed lines are
/// skipped: the kernel writes this file, and a line it cannot be read from
/// cannot be acted on either.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let point = fields.nth(4)?;
            // Optional fields up to the separator, then the filesystem type.
            let fstype = fields.skip_while(|f| *f != "-").nth(1)?;
            Some(Mount {
                point: unescape(point),
                fstype: unescape(fstype),
            })
        })
        .collect()
}

/// The swap areas of a /proc/swaps text (after its header line).
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape)
        .collect()
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel's own filesystems: nothing on them reaches a disk, and the machine
/// needs them to the end (/proc for this very table, /dev for the console).
const API_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "configfs",
    "efivarfs",
    "mqueue",
    "hugetlbfs",
    "fusectl",
    "binfmt_misc",
    "rootfs",
];

/// Filesystems in memory only: nothing of them survives the power-off anyway.
const IN_MEMORY: &[&str] = &["rootfs", "ramfs", "tmpfs"];

/// Whether `m` stays mounted: an API filesystem, anything under /proc, /sys or
/// /dev, and /run (a tmpfs that holds nothing of a disk). `/` is remounted, not
/// unmounted.
pub fn stays(m: &Mount) -> bool {
    let under = |dir: &str| {
        m.point == dir
            || m.point
                .strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    API_TYPES.contains(&m.fstype.as_str())
        || m.point == "/"
        || m.point == "/run"
        || under("/proc")
        || under("/sys")
        || under("/dev")
}

/// The system calls of the filesystem phase.
pub trait Fs {
    fn unmount(&mut self, point: &str) -> Result<(), Errno>;
    fn remount_read_only(&mut self, point: &str) -> Result<(), Errno>;
    /// Detaches a busy mount from the tree (it ends once its last user does).
    fn detach(&mut self, point: &str) -> Result<(), Errno>;
}

/// What the phase has to say: failures on the console and in the kernel log,
/// the rest in the kernel log.
pub trait Say {
    fn info(&mut self, line: String);
    fn failure(&mut self, line: String);
}

/// Unmounts every mount of `table` that does not stay, in reverse mount order,
/// as long as that makes progress; then the deepest busy one is remounted
/// read-only and detached, and unmounting goes on (what it was mounted on may now
/// go). `/` is left to [`remount_root`].
pub fn unmount_all(table: &[Mount], fs: &mut impl Fs, say: &mut impl Say) {
    let mut left: Vec<&Mount> = table.iter().filter(|m| !stays(m)).rev().collect();
    loop {
        let mut busy: Vec<(&Mount, Errno)> = Vec::new();
        loop {
            busy.clear();
            let before = left.len();
            left.retain(|m| match fs.unmount(&m.point) {
                Ok(()) => {
                    say.info(format!("unmounted {}", m.point));
                    false
                }
                // No longer a mount point (it went with another).
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => false,
                Err(e) => {
                    busy.push((m, e));
                    true
                }
            });
            if left.len() == before || left.is_empty() {
                break;
            }
        }
        let Some(&(m, why)) = busy.first() else {
            break;
        };
        left.retain(|other| !std::ptr::eq(*other, m));
        say.failure(format!("cannot unmount {}: {}", m.point, why.desc()));
        match fs.remount_read_only(&m.point) {
            Ok(()) => say.info(format!("remounted {} read-only", m.point)),
            Err(e) => say.failure(format!(
                "cannot remount {} read-only: {}",
                m.point,
                e.desc()
            )),
        }
        if let Err(e) = fs.detach(&m.point) {
            say.failure(format!("cannot detach {}: {}", m.point, e.desc()));
        }
    }
}

/// `/` remounted read-only, the last step; a root in memory (an initramfs that
/// stayed the root) has nothing to keep and is left as it is.
pub fn remount_root(table: &[Mount], fs: &mut impl Fs, say: &mut impl Say) {
    let root = table.iter().rfind(|m| m.point == "/");
    if root.is_some_and(|m| !IN_MEMORY.contains(&m.fstype.as_str())) {
        match fs.remount_read_only("/") {
            Ok(()) => say.info("remounted / read-only".into()),
            Err(e) => say.failure(format!("cannot remount / read-only: {}", e.desc())),
        }
    }
}

/// What the phases said, in order, failures marked `FAIL` (for the tests).
#[cfg(test)]
#[derive(Default)]
pub struct Lines(pub Vec<String>);

#[cfg(test)]
impl Say for Lines {
    fn info(&mut self, line: String) {
        self.0.push(line);
    }
    fn failure(&mut self, line: String) {
        self.0.push(format!("FAIL {line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:22 / /sys rw - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
26 22 0:5 / /dev rw - devtmpfs udev rw
27 22 0:24 / /run rw - tmpfs tmpfs rw
28 22 8:2 / /var rw shared:7 master:3 - ext4 /dev/vdb rw
29 28 8:3 / /var/lib/my\\040data rw - ext4 /dev/vdc rw
30 27 0:25 / /run/lock rw - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo_gives_points_and_types_in_order_with_escapes_undone() {
        let table = parse_mountinfo(MOUNTINFO);
        let points: Vec<&str> = table.iter().map(|m| m.point.as_str()).collect();
        assert_eq!(
            points,
            [
                "/",
                "/proc",
                "/sys",
                "/sys/fs/cgroup",
                "/dev",
                "/run",
                "/var",
                "/var/lib/my data",
                "/run/lock"
            ]
        );
        assert_eq!(table[6].fstype, "ext4", "optional fields are skipped");
        assert!(parse_mountinfo("garbage\n1 2 3\n").is_empty());
    }

    #[test]
    fn swaps_name_each_area() {
        let text = "Filename\tType\tSize\tUsed\tPriority\n/dev/vdb2  partition\t1048572\t0\t-2\n/swap\\040file file 1024 0 -3\n";
        assert_eq!(parse_swaps(text), ["/dev/vdb2", "/swap file"]);
    }

    #[test]
    fn api_filesystems_and_root_stay() {
        let staying: Vec<String> = parse_mountinfo(MOUNTINFO)
            .into_iter()
            .filter(stays)
            .map(|m| m.point)
            .collect();
        assert_eq!(
            staying,
            ["/", "/proc", "/sys", "/sys/fs/cgroup", "/dev", "/run"]
        );
        let devices = Mount {
            point: "/devices".into(),
            fstype: "ext4".into(),
        };
        assert!(!stays(&devices), "/devices is not under /dev");
    }

    /// A mount table in memory: points listed in `busy` refuse to unmount; a
    /// mount with mounts below it refuses too (EBUSY), as the kernel does.
    #[derive(Default)]
    struct FakeFs {
        mounted: Vec<String>,
        busy: BTreeSet<String>,
        read_only: BTreeSet<String>,
        calls: Vec<String>,
    }

    impl Fs for FakeFs {
        fn unmount(&mut self, point: &str) -> Result<(), Errno> {
            self.calls.push(format!("umount {point}"));
            let Some(i) = self.mounted.iter().rposition(|p| p == point) else {
                return Err(Errno::EINVAL);
            };
            let has_children = self
                .mounted
                .iter()
                .any(|p| p.strip_prefix(point).is_some_and(|r| r.starts_with('/')));
            if self.busy.contains(point) || has_children {
                return Err(Errno::EBUSY);
            }
            self.mounted.remove(i);
            Ok(())
        }
        fn remount_read_only(&mut self, point: &str) -> Result<(), Errno> {
            self.calls.push(format!("ro {point}"));
            self.read_only.insert(point.to_string());
            Ok(())
        }
        fn detach(&mut self, point: &str) -> Result<(), Errno> {
            self.calls.push(format!("detach {point}"));
            self.mounted.retain(|p| p != point);
            Ok(())
        }
    }

    fn fake(table: &[Mount]) -> FakeFs {
        FakeFs {
            mounted: table.iter().map(|m| m.point.clone()).collect(),
            ..FakeFs::default()
        }
    }

    fn unmount_then_root(table: &[Mount], fs: &mut FakeFs, say: &mut Lines) {
        unmount_all(table, fs, say);
        remount_root(table, fs, say);
    }

    #[test]
    fn everything_unmounts_in_reverse_order_and_root_goes_read_only_last() {
        let table = parse_mountinfo(MOUNTINFO);
        let mut fs = fake(&table);
        let mut say = Lines::default();
        unmount_then_root(&table, &mut fs, &mut say);
        assert_eq!(
            fs.calls,
            [
                "umount /run/lock",
                "umount /var/lib/my data",
                "umount /var",
                "ro /"
            ]
        );
        assert_eq!(
            say.0,
            [
                "unmounted /run/lock",
                "unmounted /var/lib/my data",
                "unmounted /var",
                "remounted / read-only"
            ]
        );
    }

    #[test]
    fn a_busy_mount_is_remounted_read_only_and_detached_and_its_parent_then_goes() {
        let table = parse_mountinfo(MOUNTINFO);
        let mut fs = fake(&table);
        fs.busy.insert("/var/lib/my data".into());
        let mut say = Lines::default();
        unmount_then_root(&table, &mut fs, &mut say);
        assert_eq!(
            say.0,
            [
                "unmounted /run/lock",
                "FAIL cannot unmount /var/lib/my data: Device or resource busy",
                "remounted /var/lib/my data read-only",
                "unmounted /var",
                "remounted / read-only"
            ]
        );
        assert!(fs.read_only.contains("/var/lib/my data"));
        assert!(
            !fs.mounted.contains(&"/var".to_string()),
            "/var unmounted once its busy child was detached: {:?}",
            fs.calls
        );
        let var = fs.calls.iter().rposition(|c| c == "umount /var");
        let detach = fs.calls.iter().position(|c| c == "detach /var/lib/my data");
        assert!(detach < var, "{:?}", fs.calls);
    }

    #[test]
    fn a_root_in_memory_is_left_as_it_is() {
        let table = parse_mountinfo(
            "1 1 0:2 / / rw - rootfs rootfs rw\n2 1 0:3 / /proc rw - proc proc rw\n",
        );
        let mut fs = fake(&table);
        let mut say = Lines::default();
        unmount_then_root(&table, &mut fs, &mut say);
        assert!(fs.calls.is_empty(), "{:?}", fs.calls);
        assert!(say.0.is_empty());
    }

    #[test]
    fn a_mount_that_becomes_free_after_another_is_retried() {
        // /a/b is listed before /a (mounted later on a path below it, as an
        // overmount can leave it): the first pass frees /a/b, the second /a.
        let table = vec![
            Mount {
                point: "/".into(),
                fstype: "ext4".into(),
            },
            Mount {
                point: "/a/b".into(),
                fstype: "ext4".into(),
            },
            Mount {
                point: "/a".into(),
                fstype: "ext4".into(),
            },
        ];
        let mut fs = fake(&table);
        let mut say = Lines::default();
        unmount_then_root(&table, &mut fs, &mut say);
        assert_eq!(fs.mounted, ["/"]);
        assert_eq!(
            say.0,
            ["unmounted /a/b", "unmounted /a", "remounted / read-only"],
            "{:?}",
            fs.calls
        );
    }
}
