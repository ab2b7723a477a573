//! File events' runtime half: keel's own event source for `file FILE=…`
//! conditions (which files those are is the core's, [`crate::job::file`]).
//!
//! Design: not a separate bridge process but one inotify instance in the
//! supervisor, kept in keel-init's lifeboat like the confdir's watch, so that a
//! change made while no supervisor runs waits in it and is read by the successor
//! (no event lost). The successor adds the same watches to the same instance, and
//! the kernel gives back the same watch descriptors, so the queued events still
//! name their directories. Each condition's directory is watched (inotify is per
//! directory); a directory that cannot be watched (missing, not a directory,
//! denied) is reported with the condition and the reason, and the rest go on.
//!
//! inotify → change: `IN_CREATE`/`IN_MOVED_TO` is `create`, `IN_CLOSE_WRITE` is
//! `modify` (once per write session: Upstart's bridge also took every `IN_MODIFY`,
//! one event per write(2)), `IN_DELETE`/`IN_MOVED_FROM` is `delete`.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::initlink::InitLink;
use crate::job::file::{Change, FileSpec};

/// The instance's lifeboat name.
pub const LIFEBOAT_NAME: &str = "file-watch";

/// The file conditions of every job and the inotify instance that watches them.
#[derive(Default)]
pub struct FileWatch {
    inotify: Option<Inotify>,
    /// The conditions, by the directory's watch descriptor.
    watched: BTreeMap<WatchDescriptor, (String, Vec<FileSpec>)>,
}

impl FileWatch {
    /// With the instance a previous supervisor left in the lifeboat, if any.
    pub fn recover(saved: Option<OwnedFd>) -> FileWatch {
        FileWatch {
            // SAFETY: the lifeboat's entry is an inotify instance (deposited as
            // one by `sync`) that nothing else here owns.
            inotify: saved.map(|fd| unsafe {
                use std::os::fd::{FromRawFd, IntoRawFd};
                Inotify::from_raw_fd(fd.into_raw_fd())
            }),
            watched: BTreeMap::new(),
        }
    }

    /// The instance, to wait on (`None` until some job has a file condition).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inotify.as_ref().map(|i| i.as_fd())
    }

    /// Watches exactly the directories of `specs`. Returns whether the instance
    /// is new (to be waited on) and the problems met.
    pub fn sync(&mut self, specs: &[FileSpec], link: Option<&InitLink>) -> (bool, Vec<String>) {
        let mut problems = Vec::new();
        let mut new = false;
        if self.inotify.is_none() && !specs.is_empty() {
            match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
                Ok(i) => {
                    if let Some(link) = link
                        && let Err(e) = link.deposit(LIFEBOAT_NAME, i.as_fd())
                    {
                        problems.push(format!(
                            "file events: cannot keep the watch in the lifeboat: {e}"
                        ));
                    }
                    self.inotify = Some(i);
                    new = true;
                }
                Err(e) => return (false, vec![format!("file events: cannot watch: {e}")]),
            }
        }
        let Some(inotify) = &self.inotify else {
            return (false, problems);
        };
        let mut by_dir: BTreeMap<&str, Vec<FileSpec>> = BTreeMap::new();
        for spec in specs {
            by_dir.entry(&spec.dir).or_default().push(spec.clone());
        }
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ONLYDIR;
        let mut watched = BTreeMap::new();
        for (dir, specs) in by_dir {
            match inotify.add_watch(dir, flags) {
                Ok(wd) => {
                    watched.insert(wd, (dir.to_string(), specs));
                }
                Err(e) => {
                    for spec in specs {
                        problems.push(format!("file FILE={}: cannot watch {dir}: {e}", spec.file));
                    }
                }
            }
        }
        for wd in self.watched.keys() {
            if !watched.contains_key(wd) {
                let _ = inotify.rm_watch(*wd);
            }
        }
        self.watched = watched;
        (new, problems)
    }

    /// The `file` events for what changed since the last read, each once, in order.
    pub fn read(&self) -> Vec<Vec<(String, String)>> {
        let mut out: Vec<Vec<(String, String)>> = Vec::new();
        let Some(inotify) = &self.inotify else {
            return out;
        };
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                let Some((_, specs)) = self.watched.get(&ev.wd) else {
                    continue;
                };
                let Some(name) = ev.name.as_ref().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(change) = change_of(ev.mask) else {
                    continue;
                };
                for spec in specs.iter().filter(|s| s.matches(name, change)) {
                    let env = spec.event_env(name, change);
                    if !out.contains(&env) {
                        out.push(env);
                    }
                }
            }
        }
        out
    }
}

fn change_of(mask: AddWatchFlags) -> Option<Change> {
    if mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
        Some(Change::Create)
    } else if mask.contains(AddWatchFlags::IN_CLOSE_WRITE) {
        Some(Change::Modify)
    } else if mask.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM) {
        Some(Change::Delete)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(file: &str) -> FileSpec {
        let def = crate::job::parse("j", &format!("start on file FILE={file}\nexec d\n"))
            .def
            .unwrap();
        crate::job::file::job_files(&def).remove(0)
    }

    #[test]
    fn create_modify_delete_and_a_directory_that_cannot_be_watched() {
        let dir = std::env::temp_dir().join(format!("keel-filewatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.display().to_string();
        let mut watch = FileWatch::default();
        let specs = [
            spec(&format!("{root}/flag")),
            spec(&format!("{root}/missing/x")),
        ];
        let (new, problems) = watch.sync(&specs, None);
        assert!(new);
        assert_eq!(
            problems,
            [format!(
                "file FILE={root}/missing/x: cannot watch {root}/missing: ENOENT: No such file or directory"
            )]
        );
        std::fs::write(dir.join("flag"), "1").unwrap();
        std::fs::write(dir.join("other"), "1").unwrap();
        std::fs::remove_file(dir.join("flag")).unwrap();
        let events: Vec<String> = watch
            .read()
            .iter()
            .map(|env| {
                env.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let file = format!("FILE={root}/flag");
        assert_eq!(
            events,
            [
                format!("{file} EVENT=create"),
                format!("{file} EVENT=modify"),
                format!("{file} EVENT=delete"),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
