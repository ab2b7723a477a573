//! Persistence: the state saved in keel-init's lifeboat and taken back from it.
//!
//! Owns the lifeboat's copy of the job definitions ([`Persistence`]), the save of
//! the state after every round (definitions first, then a round appended to the
//! journal's log or, once the log has outgrown a quarter of its base, a
//! compaction: see [`Runtime::persist`] and `keel_core::journal`), the
//! restore of a saved state by a new supervisor (with the poison check: a state
//! that [`POISON_DEATHS`] supervisors in a row died on is dropped), the "loaded"
//! mark that tells the next supervisor this one got through the state, and the
//! lifeboat names of the go pipes.

use super::{Runtime, test_fault, test_fault_once};
use crate::initlink::InitLink;
use crate::journal::{self, Snapshot};
use crate::lifecycle;
use rustix::fd::{AsFd, OwnedFd};

/// Deposited once a supervisor has loaded the saved state and carried out its
/// first round on it; withdrawn by the next one as it starts. Its presence says
/// the last supervisor died of something else than that state (see [`restore`]).
pub(super) const LIFEBOAT_LOADED: &str = "loaded";
/// Supervisors that died in a row soon after their start, none of them having
/// got through the saved state, after which that state is dropped.
const POISON_DEATHS: u32 = 5;

/// The definitions saved in the lifeboat (a superset of those the saved state
/// names), `next_def` when they were saved (definitions made since are saved
/// before the next state, see [`Runtime::persist`]), and the journal's log.
pub(super) struct Persistence {
    defs_saved: journal::Definitions,
    defs_upto: lifecycle::DefId,
    /// The log in the lifeboat and where it stands; `None`: the next save is a
    /// compaction (a whole base and a new log).
    log: Option<Log>,
    /// The generation of the last base this supervisor wrote or read.
    generation: u64,
}

/// The journal's log: the memfd (keel-init holds the same file) and its writer.
struct Log {
    fd: OwnedFd,
    writer: journal::Writer,
}

/// What a new supervisor starts from: the saved state, or a fresh one.
pub(super) struct Restored {
    pub snap: Snapshot,
    pub persistence: Persistence,
    /// The saved state was dropped: live job processes are to be adopted.
    pub adopt: bool,
}

impl Runtime {
    /// Saves the state into the lifeboat (under keel-init; standalone there is
    /// nobody to survive). The jobs changed since the last save are noted for
    /// the next sweep of the cgroups first: a save forgets them.
    pub(super) fn persist(&mut self) {
        if let Some(link) = &self.link {
            self.sweep
                .unswept
                .extend(self.snap.jobs.changed_jobs().cloned());
            self.persistence.save(link, &mut self.snap);
        }
    }
}

impl Persistence {
    /// Saves `snap`. Definitions made since the last save go first, with every one
    /// saved before (the base and log in the lifeboat may still name those); then
    /// the round's changes are appended to the log, or the state is compacted.
    fn save(&mut self, link: &InitLink, snap: &mut Snapshot) {
        if snap.jobs.next_def() != self.defs_upto {
            let mut all = self.defs_saved.clone();
            all.extend(snap.jobs.live_definitions());
            self.save_definitions(link, all);
            self.defs_upto = snap.jobs.next_def();
        }
        tracing::debug!(
            "saving state: last exit {}, round {}, pending {:?}",
            snap.last_exit_seq,
            snap.go_rounds,
            snap.pending_go
        );
        match self.log.as_mut() {
            Some(log) if !log.writer.wants_compaction() => {
                if let Err(e) = append(log, snap) {
                    tracing::error!("cannot append to the state's log ({e}): saving it whole");
                    self.compact(link, snap);
                }
            }
            _ => self.compact(link, snap),
        }
    }

    /// Writes the whole state as a new base, then a new empty log naming it;
    /// then drops the definitions the state no longer names.
    fn compact(&mut self, link: &InitLink, snap: &mut Snapshot) {
        if let Some(log) = self.log.take() {
            tracing::debug!(
                "compacting the state: its log has {} bytes beside a base of {}",
                log.writer.log_len,
                log.writer.base_len
            );
        }
        let generation = boot_nanos().max(self.generation + 1);
        let (writer, base, header) = match journal::Writer::compact(snap, generation) {
            Ok(compacted) => compacted,
            Err(e) => return tracing::error!("{e}"),
        };
        if !deposit(link, journal::LIFEBOAT_NAME, &base, "the state") {
            return;
        }
        self.generation = generation;
        if test_fault_once("abort-mid-compaction") {
            std::process::abort();
        }
        let fd = match journal::log_memfd(&header) {
            Ok(fd) => fd,
            Err(e) => return tracing::error!("cannot make the state's log: {e}"),
        };
        if let Err(e) = link.deposit(journal::LOG_LIFEBOAT_NAME, fd.as_fd()) {
            return tracing::error!("cannot save the state's log: {e}");
        }
        self.log = Some(Log { fd, writer });
        // Counted first: making the definitions is a map of every one.
        if self.defs_saved.len() > snap.jobs.live_definition_count() {
            self.save_definitions(link, snap.jobs.live_definitions());
        }
    }

    /// Saves `defs` as the definitions in the lifeboat.
    fn save_definitions(&mut self, link: &InitLink, defs: journal::Definitions) {
        match journal::encode_definitions(&defs) {
            Ok(bytes) => {
                deposit(
                    link,
                    journal::DEFS_LIFEBOAT_NAME,
                    &bytes,
                    "the job definitions",
                );
            }
            Err(e) => tracing::error!("{e}"),
        }
        self.defs_saved = defs;
    }
}

/// Appends the round's changes to the log (nothing if nothing changed).
fn append(log: &mut Log, snap: &mut Snapshot) -> Result<(), AppendError> {
    let bytes = log.writer.round(snap)?;
    if bytes.is_empty() {
        return Ok(());
    }
    let mut end = bytes.len();
    // Killed mid-append (tests): half the round, or all of it but its last byte.
    if test_fault_once("abort-mid-append") {
        end /= 2;
    } else if test_fault_once("abort-before-commit") {
        end = end.saturating_sub(1);
    }
    journal::write_at(&log.fd, &bytes[..end], log.writer.log_len)?;
    if end < bytes.len() {
        std::process::abort();
    }
    log.writer.appended(bytes.len());
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum AppendError {
    #[error(transparent)]
    Encode(#[from] journal::SaveError),
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// Nanoseconds since boot: a new base's generation, never one before it in
/// this boot (the lifeboat lives no longer), whichever supervisor wrote it.
fn boot_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// `bytes` into a sealed memfd, deposited in the lifeboat as `name`: whether it was.
fn deposit(link: &InitLink, name: &str, bytes: &[u8], what: &str) -> bool {
    match journal::to_memfd(bytes).and_then(|fd| link.deposit(name, fd.as_fd())) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!("cannot save {what}: {e}");
            false
        }
    }
}

/// The state a new supervisor starts from: the one saved in `saved` and its
/// log `saved_log` (naming definitions saved in `saved_defs`) unless it does
/// not load or is poisoned —
/// `quick_deaths` supervisors in a row died soon after their start and none got
/// through it (`loaded_before` false) — or a fresh one.
pub(super) fn restore(
    saved: Option<&OwnedFd>,
    saved_log: Option<OwnedFd>,
    saved_defs: Option<&OwnedFd>,
    loaded_before: bool,
    quick_deaths: u32,
) -> Restored {
    let fresh = |snap: Snapshot, adopt: bool| Restored {
        persistence: Persistence {
            defs_saved: journal::Definitions::new(),
            defs_upto: snap.jobs.next_def(),
            log: None,
            generation: 0,
        },
        snap,
        adopt,
    };
    let Some(fd) = saved else {
        return fresh(Snapshot::default(), false);
    };
    // Only a state no supervisor got through is suspect: supervisors killed from
    // outside, however often, never drop one that loads.
    let poisoned = !loaded_before && quick_deaths >= POISON_DEATHS;
    let dropped = Snapshot {
        booted: true,
        ..Snapshot::default()
    };
    match load_saved(fd, saved_log.as_ref(), saved_defs) {
        Ok((
            journal::Loaded {
                snapshot: snap,
                writer,
            },
            defs_saved,
        )) if !poisoned => {
            tracing::debug!(
                "loaded state: last exit {}, round {}, pending {:?}",
                snap.last_exit_seq,
                snap.go_rounds,
                snap.pending_go
            );
            tracing::info!(
                "resumed from the saved state ({} jobs)",
                snap.jobs.job_count()
            );
            if test_fault("abort-on-resume") {
                std::process::abort();
            }
            Restored {
                persistence: Persistence {
                    defs_saved,
                    defs_upto: snap.jobs.next_def(),
                    generation: writer.as_ref().map_or(0, |w| w.generation),
                    log: go_on_with(saved_log, writer),
                },
                snap,
                adopt: false,
            }
        }
        Ok(_) => {
            tracing::error!(
                "THE SUPERVISOR KEEPS DYING ON ITS SAVED STATE: dropping it, starting over \
                 from the job files and adopting the job processes still running"
            );
            fresh(dropped, true)
        }
        Err(e) => {
            tracing::error!("cannot load the saved state ({e}); starting over from the job files");
            fresh(dropped, true)
        }
    }
}

/// Marks the saved state as loaded (see [`LIFEBOAT_LOADED`]): this supervisor has
/// carried it out and saved it again, so it is no poison, whatever ends it.
pub(super) fn mark_loaded(link: &InitLink) {
    if let Ok(mark) = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
        && let Err(e) = link.deposit(LIFEBOAT_LOADED, mark.as_fd())
    {
        tracing::warn!("cannot mark the saved state as loaded: {e}");
    }
}

/// Why the saved state does not load.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("job definitions: {0}")]
    ReadDefinitions(std::io::Error),
    #[error(transparent)]
    Read(std::io::Error),
    #[error(transparent)]
    Decode(#[from] journal::LoadError),
}

/// The log as it was read, to append to: what follows its last whole commit
/// (a round cut short) is cut off first, so that it can never be read as part
/// of a later round.
fn go_on_with(fd: Option<OwnedFd>, writer: Option<journal::Writer>) -> Option<Log> {
    let (fd, writer) = (fd?, writer?);
    match rustix::fs::ftruncate(&fd, writer.log_len as u64) {
        Ok(()) => Some(Log { fd, writer }),
        Err(e) => {
            tracing::warn!("cannot cut the state's log to its last round ({e}): saving it whole");
            None
        }
    }
}

/// The saved state in `state` and its log `log`, naming definitions saved in
/// `defs`.
fn load_saved(
    state: &OwnedFd,
    log: Option<&OwnedFd>,
    defs: Option<&OwnedFd>,
) -> Result<(journal::Loaded, journal::Definitions), LoadError> {
    let began = std::time::Instant::now();
    let defs = match defs {
        Some(fd) => {
            let bytes = journal::read_memfd(fd).map_err(LoadError::ReadDefinitions)?;
            journal::decode_definitions(&bytes)?
        }
        None => journal::Definitions::new(),
    };
    let defs_took = began.elapsed();
    let bytes = journal::read_memfd(state).map_err(LoadError::Read)?;
    let log = log
        .map(journal::read_memfd)
        .transpose()
        .map_err(LoadError::Read)?;
    let loaded = journal::load(&bytes, log.as_deref(), &defs)?;
    tracing::debug!(
        "read the saved state in {:?}: the definitions {defs_took:?}, the base ({} bytes) and log ({} bytes) {:?}",
        began.elapsed(),
        bytes.len(),
        log.as_ref().map_or(0, Vec::len),
        began.elapsed() - defs_took
    );
    Ok((loaded, defs))
}

/// The lifeboat name of round `round`'s go pipe: `go:0` or `go:1` by the round's
/// parity. A round's deposit replaces the pipe of the round before the last,
/// which was saved (and released) before the last round began, so an entry is
/// never withdrawn after its release: whatever the saved state's round is, its
/// pipe is still in the lifeboat under this name — and releasing a round twice
/// is harmless, each child reading one byte.
pub(super) fn go_name(round: u64) -> String {
    format!("go:{}", round % 2)
}
