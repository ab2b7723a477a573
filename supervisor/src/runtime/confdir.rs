//! The job directory: its inotify watch, and the job definitions read from it.
//!
//! Owns [`ConfdirWatch`]: the watch of the confdir and every directory below it
//! (kept in the lifeboat, so that it goes on seeing changes while no supervisor
//! runs), the override files read (show-config's provenance), and the files
//! that did not load. A change seen re-reads the whole confdir; so do SIGHUP and
//! `reload-configuration`. A new supervisor takes the saved definitions instead
//! when the lifeboat's watch vouches that nothing changed
//! ([`Runtime::take_definitions`]).

use super::{Runtime, TOKEN_CONFDIR, test_fault_once};
use crate::initlink::InitLink;
use crate::query;
use keel_proto::ctl::LoadFailure;
use nix::sys::inotify::Inotify;
use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::Path;

/// The confdir's inotify watch: kept in the lifeboat, it goes on seeing changes
/// while no supervisor runs (see [`Runtime::take_definitions`]).
pub(super) const LIFEBOAT_CONFDIR_WATCH: &str = "confdir-watch";

/// The confdir's watch and what the last read of it found besides the jobs.
#[derive(Default)]
pub(super) struct ConfdirWatch {
    /// Watches the confdir: a changed job file is re-read at once.
    watch: Option<Inotify>,
    /// The jobs an override file was read over (show-config's provenance). Not
    /// saved: when the saved definitions are taken, read from the override files
    /// at the first ask (the watch vouches that the files are as they were), not
    /// by every successor (a walk of the whole confdir).
    overrides: OnceCell<BTreeMap<String, query::Override>>,
    /// The job files that did not load when the confdir was last read; `None`
    /// when the definitions came from the saved state (read again when asked).
    load_failures: Option<Vec<LoadFailure>>,
}

impl ConfdirWatch {
    /// The override file `job` (of `confdir`) was read over, if any.
    pub(super) fn override_of(&self, job: &str, confdir: &Path) -> Option<&query::Override> {
        self.overrides
            .get_or_init(|| crate::check::confdir_overrides(confdir))
            .get(job)
    }

    /// Watches `dir` through `watch` (a new one, or the one from the lifeboat
    /// with its watches).
    fn keep(&mut self, watch: Inotify, epoll: &OwnedFd, dir: &Path) {
        let added = epoll::add(
            epoll,
            watch.as_fd(),
            epoll::EventData::new_u64(TOKEN_CONFDIR),
            epoll::EventFlags::IN,
        );
        match added {
            Ok(()) => self.watch = Some(watch),
            Err(e) => tracing::warn!("cannot watch {}: {e}", dir.display()),
        }
    }

    /// Watches `dir` and every directory below it (inotify is not recursive).
    /// The watch goes into the lifeboat too, so that it sees what changes while no
    /// supervisor runs.
    fn watch_tree(&mut self, epoll: &OwnedFd, link: Option<&InitLink>, dir: &Path) {
        use nix::sys::inotify::{AddWatchFlags, InitFlags};
        if self.watch.is_none() {
            match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
                Ok(w) => {
                    if let Some(link) = link
                        && let Err(e) = link.deposit(LIFEBOAT_CONFDIR_WATCH, w.as_fd())
                    {
                        tracing::warn!("cannot keep the confdir's watch in the lifeboat: {e}");
                    }
                    self.keep(w, epoll, dir);
                }
                Err(e) => tracing::warn!("cannot watch {}: {e}", dir.display()),
            }
        }
        let Some(watch) = &self.watch else { return };
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE_SELF;
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            // Adding a watch twice returns the same descriptor: harmless.
            let _ = watch.add_watch(&dir, flags);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                // The type comes with the entry: no stat of every job file, only
                // of a symlink (followed, as the confdir's reader does).
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| match e.file_type() {
                            Ok(t) if t.is_symlink() => e.path().is_dir(),
                            Ok(t) => t.is_dir(),
                            Err(_) => false,
                        })
                        .map(|e| e.path()),
                );
            }
        }
    }

    /// Reads every event the watch holds: true if there was any.
    fn drain(&self) -> bool {
        let mut any = false;
        if let Some(watch) = &self.watch {
            while let Ok(events) = watch.read_events() {
                if events.is_empty() {
                    break;
                }
                any = true;
            }
        }
        any
    }
}

impl Runtime {
    /// The job definitions of a new supervisor. The saved definitions are the job
    /// files as they are if this binary made them from this confdir and the watch
    /// `saved_watch` that has seen every change since holds none (changes it holds
    /// are read in the first round). Else, or on a fresh start, every file is read.
    pub(super) fn take_definitions(&mut self, saved_watch: Option<OwnedFd>) {
        let seen = crate::check::Loaded::now(&self.config.confdir);
        match saved_watch.filter(|_| seen.is_some() && self.snap.shell.confdir == seen) {
            Some(fd) => {
                use rustix::fd::{FromRawFd, IntoRawFd};
                tracing::info!(
                    "job definitions taken from the saved state (its watch saw no change)"
                );
                // SAFETY: the lifeboat's entry is an inotify instance (deposited as
                // one by `watch_tree`) that nothing else here owns.
                let watch = unsafe { Inotify::from_raw_fd(fd.into_raw_fd()) };
                self.confdir.keep(watch, &self.epoll, &self.config.confdir);
                self.confdir.overrides = OnceCell::new();
                self.sockets.watch_all(&self.epoll);
                self.sync_sockets();
                self.watch_files();
                self.sync_files();
                self.watch_devices();
                self.sync_sources();
            }
            None => {
                self.sockets.watch_all(&self.epoll);
                self.watch_files();
                self.watch_devices();
                self.watch_confdir();
                self.load_confdir();
            }
        }
    }

    /// Watches the confdir and every directory below it.
    fn watch_confdir(&mut self) {
        self.confdir
            .watch_tree(&self.epoll, self.link.as_ref(), &self.config.confdir);
    }

    /// The watch saw changes: every job file is read again.
    pub(super) fn confdir_changed(&mut self) {
        // Saved first: a supervisor killed after the changes are read below and
        // before the definitions made from them are saved must not take the
        // saved ones for current.
        if self.snap.shell.confdir.take().is_some() {
            self.persist();
        }
        let any = self.confdir.drain();
        if any && test_fault_once("abort-mid-reload") {
            std::process::abort();
        }
        if any {
            tracing::info!("job files changed; reloading");
            self.reload_configuration();
        }
    }

    /// Reads every job file of the confdir: the definitions, the sockets and file
    /// conditions they name, and what the confdir looked like when read.
    fn load_confdir(&mut self) {
        let conf = crate::check::load_confdir(&self.config.confdir);
        for p in &conf.problems {
            tracing::warn!("{p}");
        }
        self.confdir.load_failures = Some(conf.failed);
        self.snap.jobs.set_definitions(conf.jobs);
        self.confdir.overrides = OnceCell::from(conf.overrides);
        self.sync_sockets();
        self.sync_files();
        self.sync_sources();
        // With a watch to see what changes from now on.
        self.snap.shell.confdir = self
            .confdir
            .watch
            .as_ref()
            .and_then(|_| crate::check::Loaded::now(&self.config.confdir));
        self.dirty = true;
    }

    /// `reload-configuration`, SIGHUP: every job file read again. New
    /// directories are watched before the reading, so that a file created in
    /// one just after it (`mkdir net && echo … > net/web.conf`) is either read
    /// now or seen by the watch, never missed.
    pub(super) fn reload_configuration(&mut self) {
        self.watch_confdir();
        self.load_confdir();
    }

    /// The job files that did not load (read now if the definitions came from
    /// the saved state).
    pub(super) fn load_failures(&mut self) -> &[LoadFailure] {
        self.confdir
            .load_failures
            .get_or_insert_with(|| crate::check::load_confdir(&self.config.confdir).failed)
    }

    /// `Unknown job: JOB` of a job whose file did not load says why.
    pub(super) fn explain_unknown(&mut self, job: &str, message: &mut String) {
        if let Some(failed) = self.load_failures().iter().find(|f| f.job == job) {
            message.push_str(&format!(
                " (its job file did not load: {})",
                failed.errors.join("; ")
            ));
        }
    }
}
