//! mountall's filesystem events' runtime half: keel's own event source for
//! `mounted`, `virtual-filesystems`, `local-filesystems`, `remote-filesystems`
//! and `filesystem` (which are due is the core's, [`keel_core::mounts`]).
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
//! events, and fstab is read again at every reload of the job files.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use keel_core::mounts::{self, FstabEntry};

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
            Err(e) => {
                problems.push(format!(
                    "{}: {e}: no filesystem is waited for",
                    fstab.display()
                ));
                self.entries.clear();
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
