//! Persistence: the state saved in keel-init's lifeboat and taken back from it.
//!
//! Owns the lifeboat's copy of the job definitions ([`Persistence`]), the save of
//! the state after every round (definitions first, see [`Runtime::persist`]), the
//! restore of a saved state by a new supervisor (with the poison check: a state
//! that [`POISON_DEATHS`] supervisors in a row died on is dropped), the "loaded"
//! mark that tells the next supervisor this one got through the state, and the
//! lifeboat names of the go pipes.

use super::{Runtime, test_fault};
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
/// names), and `next_def` when they were saved: definitions made since are saved
/// before the next state (see [`Runtime::persist`]).
pub(super) struct Persistence {
    defs_saved: journal::Definitions,
    defs_upto: lifecycle::DefId,
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
    /// nobody to survive).
    pub(super) fn persist(&mut self) {
        if let Some(link) = &self.link {
            self.persistence.save(link, &self.snap);
        }
    }
}

impl Persistence {
    /// Saves `snap`. Definitions made since the last save go first, with every one
    /// saved before (the state in the lifeboat may still name those); once the new
    /// state is saved, definitions it does not name are dropped.
    fn save(&mut self, link: &InitLink, snap: &Snapshot) {
        // Definitions the new state no longer names, dropped once it is saved.
        let mut unused = None;
        if snap.jobs.next_def() != self.defs_upto {
            let live = snap.jobs.live_definitions();
            let mut all = self.defs_saved.clone();
            all.extend(live.iter().map(|(id, d)| (*id, d.clone())));
            if all.len() > live.len() {
                unused = Some(live);
            }
            self.save_definitions(link, all);
            self.defs_upto = snap.jobs.next_def();
        }
        let bytes = journal::encode(snap);
        tracing::debug!(
            "saving state: last exit {}, round {}, pending {:?}",
            snap.last_exit_seq,
            snap.go_rounds,
            snap.pending_go
        );
        deposit(link, journal::LIFEBOAT_NAME, bytes, "the state");
        if let Some(live) = unused {
            self.save_definitions(link, live);
        }
    }

    /// Saves `defs` as the definitions in the lifeboat.
    fn save_definitions(&mut self, link: &InitLink, defs: journal::Definitions) {
        let bytes = journal::encode_definitions(&defs);
        deposit(
            link,
            journal::DEFS_LIFEBOAT_NAME,
            bytes,
            "the job definitions",
        );
        self.defs_saved = defs;
    }
}

/// `bytes` into a sealed memfd, deposited in the lifeboat as `name`.
fn deposit(link: &InitLink, name: &str, bytes: Result<Vec<u8>, journal::SaveError>, what: &str) {
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(e) => return tracing::error!("{e}"),
    };
    if let Err(e) = journal::to_memfd(&bytes).and_then(|fd| link.deposit(name, fd.as_fd())) {
        tracing::error!("cannot save {what}: {e}");
    }
}

/// The state a new supervisor starts from: the one saved in `saved` (naming
/// definitions saved in `saved_defs`) unless it does not load or is poisoned —
/// `quick_deaths` supervisors in a row died soon after their start and none got
/// through it (`loaded_before` false) — or a fresh one.
pub(super) fn restore(
    saved: Option<&OwnedFd>,
    saved_defs: Option<&OwnedFd>,
    loaded_before: bool,
    quick_deaths: u32,
) -> Restored {
    let fresh = |snap: Snapshot, adopt: bool| Restored {
        persistence: Persistence {
            defs_saved: journal::Definitions::new(),
            defs_upto: snap.jobs.next_def(),
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
    match load_saved(fd, saved_defs) {
        Ok((snap, defs_saved)) if !poisoned => {
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

/// The saved state in `state`, naming definitions saved in `defs`.
fn load_saved(
    state: &OwnedFd,
    defs: Option<&OwnedFd>,
) -> Result<(Snapshot, journal::Definitions), LoadError> {
    let defs = match defs {
        Some(fd) => {
            let bytes = journal::read_memfd(fd).map_err(LoadError::ReadDefinitions)?;
            journal::decode_definitions(&bytes)?
        }
        None => journal::Definitions::new(),
    };
    let bytes = journal::read_memfd(state).map_err(LoadError::Read)?;
    let snap = journal::decode(&bytes, &defs)?;
    Ok((snap, defs))
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
