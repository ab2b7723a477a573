//! mountall's filesystem events' runtime half: keel's own event source for
//! `mounted`, `virtual-filesystems`, `local-filesystems`, `remote-filesystems`
//! and `filesystem` (which are due is the core's, [`crate::mounts`]).
//!
//! Design: the supervisor waits on /proc/self/mountinfo, which the kernel marks
//! (`POLLPRI`) at every change of this mount namespace's table, and compares
//! the table with fstab (`--fstab`, on a machine boot /etc/fstab): whoever
//! mounts — a job running `mount -a`, an administrator — the events follow the
//! mounts. What was emitted is in the saved state (`Shell::mount_events`), saved
//! in the same round as the events it queued, so a crashed or re-executed
//! supervisor emits each at most once per boot, and a successor compares the
//! table as it finds it: nothing mounted meanwhile is missed. No fd needs the
//! lifeboat. The source is opened only once some job waits for one of these
//! events and fstab exists (without one — a container, an initramfs system —
//! its jobs may emit these events themselves), and fstab is read again at every
//! reload of the job files.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use crate::mounts::{self, FstabEntry};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// fstab's entries and the mount table being watched.
pub struct MountWatch {
    /// `None`: no fstab to follow (not a machine boot, or `--fstab none`).
    fstab: Option<PathBuf>,
    entries: Vec<FstabEntry>,
    table: Option<std::fs::File>,
}

impl MountWatch {
    pub fn new(fstab: Option<PathBuf>) -> MountWatch {
        MountWatch {
            fstab,
            entries: Vec::new(),
            table: None,
        }
    }

    /// The mount table, to wait on for `POLLPRI` (`None` while not watched).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.table.as_ref().map(|t| t.as_fd())
    }

    /// Reads fstab and watches the table if `wanted` (some job waits for one of
    /// the events). Returns whether the table is newly watched, and the problems
    /// met.
    pub fn sync(&mut self, wanted: bool) -> (bool, Vec<String>) {
        let Some(fstab) = self.fstab.as_ref().filter(|_| wanted) else {
            return (false, Vec::new());
        };
        let mut problems = Vec::new();
        let nodev = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        let nodev = |fstype: &str| {
            nodev
                .lines()
                .any(|l| l.strip_prefix("nodev\t") == Some(fstype))
        };
        match std::fs::read_to_string(fstab) {
            Ok(text) => {
                let (entries, found) = mounts::parse_fstab(&text, &nodev);
                let at = |p: String| format!("{}:{p} (ignored)", fstab.display());
                problems.extend(found.into_iter().map(at));
                self.entries = entries;
            }
            // No fstab (a container, an initramfs system): nothing to follow,
            // and its jobs may emit these events themselves.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!("{}: none: keel emits no filesystem events", fstab.display());
                self.table = None;
                return (false, problems);
            }
            Err(e) => {
                problems.push(format!(
                    "{}: {e}: keel emits no filesystem events",
                    fstab.display()
                ));
                self.table = None;
                return (false, problems);
            }
        }
        if self.table.is_some() {
            return (false, problems);
        }
        match std::fs::File::open(MOUNTINFO) {
            Ok(file) => {
                self.table = Some(file);
                (true, problems)
            }
            Err(e) => {
                problems.push(format!("filesystem events: cannot watch {MOUNTINFO}: {e}"));
                (false, problems)
            }
        }
    }

    /// The events due with the table as it is now, each added to `emitted`.
    pub fn due(&self, emitted: &mut BTreeSet<String>) -> Vec<(String, Vec<(String, String)>)> {
        if self.table.is_none() {
            return Vec::new();
        }
        match std::fs::read_to_string(MOUNTINFO) {
            Ok(text) => mounts::due(&self.entries, &mounts::parse_mountinfo(&text), emitted),
            Err(e) => {
                tracing::error!("filesystem events: cannot read {MOUNTINFO}: {e}");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_watched_only_when_wanted_and_fstab_exists() {
        let dir = std::env::temp_dir().join(format!("keel-mountwatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fstab = dir.join("fstab");
        let mut missing = MountWatch::new(Some(fstab.clone()));
        assert_eq!(missing.sync(true), (false, Vec::new()));
        assert!(missing.fd().is_none());
        assert!(missing.due(&mut BTreeSet::new()).is_empty());

        let point = dir.join("not-mounted").display().to_string();
        std::fs::write(&fstab, format!("tmpfs {point} tmpfs defaults\nbroken\n")).unwrap();
        let mut watch = MountWatch::new(Some(fstab.clone()));
        assert_eq!(watch.sync(false), (false, Vec::new()), "no job waits");
        assert!(watch.fd().is_none());
        let (new, problems) = watch.sync(true);
        assert!(new && watch.fd().is_some());
        assert_eq!(
            problems,
            [format!(
                "{}:2: an entry needs a device, a mount point and a type (ignored)",
                fstab.display()
            )]
        );
        // Its one virtual entry is not mounted: nothing is due, not even the
        // classes without entries, which wait for virtual-filesystems.
        let mut emitted = BTreeSet::new();
        assert!(watch.due(&mut emitted).is_empty() && emitted.is_empty());
        assert!(!watch.sync(true).0, "watched already");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
