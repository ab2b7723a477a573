//! mountall's filesystem events, decided: which of `mounted MOUNTPOINT=… TYPE=…
//! DEVICE=… OPTIONS=…`, `virtual-filesystems`, `local-filesystems`,
//! `remote-filesystems` and `filesystem` are due, given fstab and the mount
//! table as they are, and what was emitted before ([`due`]).
//!
//! This module owns reading fstab's and /proc/self/mountinfo's text, the class
//! of each fstab entry, and the rule; watching the mount table and keeping what
//! was emitted is the supervisor's (`supervisor/src/mountwatch.rs`).
//!
//! The rule, as mountall(8) and its event pages give it: `mounted` once an
//! fstab entry's mount point is mounted (`/` only once its read-only flag is
//! what fstab says: read-write unless `ro`), with fstab's fields as variables;
//! `virtual-filesystems` once every virtual entry is (types without a device:
//! tmpfs, proc, …); `local-filesystems` and `remote-filesystems` once every
//! local entry (on a block device) or remote one (a network type or
//! `_netdev`) is, never before `virtual-filesystems`; `filesystem` once those
//! three were emitted. Each at most once per boot: `emitted` remembers them.
//! Swap, `noauto` and `none` mount points are not waited for; `nobootwait` and
//! `nofail` entries get their `mounted` but hold nothing up.

use std::collections::BTreeSet;

/// The events of this source, by name.
pub const MOUNTED: &str = "mounted";
pub const VIRTUAL: &str = "virtual-filesystems";
pub const LOCAL: &str = "local-filesystems";
pub const REMOTE: &str = "remote-filesystems";
pub const FILESYSTEM: &str = "filesystem";
pub const EVENTS: [&str; 5] = [MOUNTED, VIRTUAL, LOCAL, REMOTE, FILESYSTEM];

/// Filesystem types that are mounted over the network (mountall's list).
const NETWORK_TYPES: [&str; 14] = [
    "nfs",
    "nfs4",
    "smbfs",
    "cifs",
    "smb3",
    "coda",
    "ncp",
    "ncpfs",
    "ocfs2",
    "gfs",
    "gfs2",
    "ceph",
    "glusterfs",
    "fuse.sshfs",
];

/// Which event an entry holds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Virtual,
    Local,
    Remote,
}

impl Class {
    fn event(self) -> &'static str {
        match self {
            Class::Virtual => VIRTUAL,
            Class::Local => LOCAL,
            Class::Remote => REMOTE,
        }
    }
}

/// One fstab entry keel waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabEntry {
    pub device: String,
    /// Without a trailing `/` (except `/` itself).
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
    pub class: Class,
    /// `nobootwait` or `nofail`: its `mounted` holds nothing up.
    pub optional: bool,
}

impl FstabEntry {
    fn has_option(&self, name: &str) -> bool {
        self.options.split(',').any(|o| o == name)
    }

    fn key(&self) -> String {
        format!("{MOUNTED} {}", self.mountpoint)
    }
}

/// The entries of fstab's `text` that are waited for, and every line that is
/// not an entry as `LINE: message`. `nodev(type)`: the type needs no device
/// (the supervisor asks /proc/filesystems).
pub fn parse_fstab(text: &str, nodev: &dyn Fn(&str) -> bool) -> (Vec<FstabEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = line.split_whitespace().map(unescape).collect();
        let [device, mountpoint, fstype, rest @ ..] = fields.as_slice() else {
            problems.push(format!(
                "{}: an entry needs a device, a mount point and a type",
                n + 1
            ));
            continue;
        };
        let options = rest.first().map_or("defaults", |o| o.as_str());
        let skipped = matches!(fstype.as_str(), "swap" | "ignore")
            || matches!(mountpoint.as_str(), "none" | "swap")
            || options.split(',').any(|o| o == "noauto");
        if skipped {
            continue;
        }
        if !mountpoint.starts_with('/') {
            problems.push(format!(
                "{}: mount point {mountpoint} is not an absolute path",
                n + 1
            ));
            continue;
        }
        let mut entry = FstabEntry {
            device: device.clone(),
            mountpoint: normal(mountpoint),
            fstype: fstype.clone(),
            options: options.to_string(),
            class: Class::Local,
            optional: false,
        };
        entry.optional = entry.has_option("nobootwait") || entry.has_option("nofail");
        entry.class = if NETWORK_TYPES.contains(&fstype.as_str()) || entry.has_option("_netdev") {
            Class::Remote
        } else if nodev(fstype) {
            Class::Virtual
        } else {
            Class::Local
        };
        entries.push(entry);
    }
    (entries, problems)
}

/// One mount of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mountpoint: String,
    pub read_only: bool,
}

/// The mounts of /proc/self/mountinfo's `text` (lines it cannot read are
/// skipped: the kernel writes it).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ').skip(4);
            let mountpoint = fields.next()?;
            let options = fields.next()?;
            Some(Mount {
                mountpoint: unescape(mountpoint),
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// The events due now, in order, each added to `emitted` (what this boot has
/// emitted so far).
pub fn due(
    entries: &[FstabEntry],
    table: &[Mount],
    emitted: &mut BTreeSet<String>,
) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for entry in entries {
        // The last mount on a point is the one seen there.
        let mount = table
            .iter()
            .rev()
            .find(|m| m.mountpoint == entry.mountpoint);
        let as_fstab_says =
            mount.is_some_and(|m| entry.mountpoint != "/" || m.read_only == entry.has_option("ro"));
        if as_fstab_says && emitted.insert(entry.key()) {
            let env = [
                ("MOUNTPOINT", &entry.mountpoint),
                ("TYPE", &entry.fstype),
                ("DEVICE", &entry.device),
                ("OPTIONS", &entry.options),
            ];
            let env = env.map(|(k, v)| (k.to_string(), v.to_string())).to_vec();
            out.push((MOUNTED.to_string(), env));
        }
    }
    let class_done = |emitted: &BTreeSet<String>, class: Class| {
        entries
            .iter()
            .filter(|e| e.class == class && !e.optional)
            .all(|e| emitted.contains(&e.key()))
    };
    let mut announce = |emitted: &mut BTreeSet<String>, name: &str, ready: bool| {
        if ready && emitted.insert(name.to_string()) {
            out.push((name.to_string(), Vec::new()));
        }
    };
    announce(emitted, VIRTUAL, class_done(emitted, Class::Virtual));
    for class in [Class::Local, Class::Remote] {
        let ready = emitted.contains(VIRTUAL) && class_done(emitted, class);
        announce(emitted, class.event(), ready);
    }
    let all = [VIRTUAL, LOCAL, REMOTE]
        .iter()
        .all(|e| emitted.contains(*e));
    announce(emitted, FILESYSTEM, all);
    out
}

/// Whether a job's `start on` (unless `manual`) or `stop on` names one of
/// these events.
pub fn job_waits(def: &crate::job::JobDef) -> bool {
    let start_on = def.start_on.iter().filter(|_| !def.manual);
    start_on
        .chain(def.stop_on.iter())
        .flat_map(crate::job::EventExpr::leaves)
        .any(|e| EVENTS.contains(&e.name.as_str()))
}

/// A mount point without a trailing `/`.
fn normal(path: &str) -> String {
    match path.trim_end_matches('/') {
        "" => "/".to_string(),
        p => p.to_string(),
    }
}

/// fstab's and mountinfo's octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
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

#[cfg(test)]
mod tests {
    use super::*;

    const FSTAB: &str = "\
# a comment
/dev/vda1  /          ext4   errors=remount-ro 0 1
tmpfs      /run/a/    tmpfs  size=1m           0 0
proc       /proc      proc   defaults
srv:/x     /srv       nfs    ro                0 0
/dev/vdb1  /data\\040x ext4   nofail
/dev/vdc   none       swap   sw
/dev/vdd   /noauto    ext4   noauto
broken
";

    fn nodev(fstype: &str) -> bool {
        ["tmpfs", "proc", "nfs"].contains(&fstype)
    }

    fn mounts(list: &[(&str, bool)]) -> Vec<Mount> {
        list.iter()
            .map(|(m, ro)| Mount {
                mountpoint: m.to_string(),
                read_only: *ro,
            })
            .collect()
    }

    fn names(events: &[(String, Vec<(String, String)>)]) -> Vec<String> {
        events
            .iter()
            .map(|(name, env)| match env.first() {
                Some((_, point)) => format!("{name} {point}"),
                None => name.clone(),
            })
            .collect()
    }

    #[test]
    fn fstab_entries_their_classes_and_what_is_not_waited_for() {
        let (entries, problems) = parse_fstab(FSTAB, &nodev);
        assert_eq!(
            problems,
            ["9: an entry needs a device, a mount point and a type"]
        );
        let summary: Vec<(&str, Class, bool)> = entries
            .iter()
            .map(|e| (e.mountpoint.as_str(), e.class, e.optional))
            .collect();
        assert_eq!(
            summary,
            [
                ("/", Class::Local, false),
                ("/run/a", Class::Virtual, false),
                ("/proc", Class::Virtual, false),
                ("/srv", Class::Remote, false),
                ("/data x", Class::Local, true),
            ]
        );
        assert_eq!(entries[2].options, "defaults");
    }

    #[test]
    fn mountinfo_lines_give_the_mount_point_and_its_read_only_flag() {
        let text = "22 1 8:1 / / ro,relatime shared:1 - ext4 /dev/vda1 ro\n\
                    30 22 0:5 / /data\\040x rw,nosuid - ext4 /dev/vdb1 rw\nshort line\n";
        assert_eq!(
            parse_mountinfo(text),
            mounts(&[("/", true), ("/data x", false)])
        );
    }

    #[test]
    fn each_event_once_when_its_class_is_mounted_as_fstab_says() {
        let (entries, _) = parse_fstab(FSTAB, &nodev);
        let mut emitted = BTreeSet::new();
        // / read-only, as the kernel mounts it: not yet as fstab says.
        let events = due(
            &entries,
            &mounts(&[("/", true), ("/proc", false)]),
            &mut emitted,
        );
        assert_eq!(names(&events), ["mounted /proc"]);
        assert_eq!(
            events[0].1,
            [
                ("MOUNTPOINT".to_string(), "/proc".to_string()),
                ("TYPE".to_string(), "proc".to_string()),
                ("DEVICE".to_string(), "proc".to_string()),
                ("OPTIONS".to_string(), "defaults".to_string()),
            ]
        );
        let table = mounts(&[("/", true), ("/proc", false), ("/run/a", false)]);
        let events = due(&entries, &table, &mut emitted);
        assert_eq!(names(&events), ["mounted /run/a", "virtual-filesystems"]);
        // Remounted read-write: local-filesystems, though the optional /data is not there.
        let table = mounts(&[
            ("/", true),
            ("/proc", false),
            ("/run/a", false),
            ("/", false),
        ]);
        let events = due(&entries, &table, &mut emitted);
        assert_eq!(names(&events), ["mounted /", "local-filesystems"]);
        // Nothing twice, also once a mount is gone again.
        assert!(due(&entries, &table, &mut emitted).is_empty());
        assert!(due(&entries, &table[..1], &mut emitted).is_empty());
        let mut table = table;
        table.extend(mounts(&[("/srv", true), ("/data x", false)]));
        let events = due(&entries, &table, &mut emitted);
        assert_eq!(
            names(&events),
            [
                "mounted /srv",
                "mounted /data x",
                "remote-filesystems",
                "filesystem"
            ]
        );
    }

    #[test]
    fn an_empty_fstab_gives_the_four_events_at_once_in_order() {
        let mut emitted = BTreeSet::new();
        let events = due(&[], &[], &mut emitted);
        assert_eq!(names(&events), [VIRTUAL, LOCAL, REMOTE, FILESYSTEM]);
    }
}
