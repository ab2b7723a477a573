//! The state journal: the supervisor's whole state as versioned bytes in memfds
//! that live in keel-init's lifeboat: the state under [`LIFEBOAT_NAME`], the job
//! definitions it names under [`DEFS_LIFEBOAT_NAME`].
//!
//! Each save writes a complete snapshot into a fresh memfd and deposits it; keel-init
//! swaps the entry in one step and closes the old one. So the lifeboat always holds
//! one whole snapshot — a supervisor killed mid-save leaves the previous one — and
//! no torn write can ever be read back.
//!
//! The jobs' part ([`Jobs`]) holds the lifecycle core's whole state: every
//! instance, the event queue, what each `start on`/`stop on` has matched so far,
//! which events wait for which jobs, the job-environment table and a power action
//! under way. It names job definitions by id ([`Def`]); the definitions are saved
//! apart, in their own memfd, only when new ones appear — the state is saved every
//! round that changes something, the definitions (most of the bytes) rarely. The
//! saved definitions always include every one the saved state names: new ones are
//! saved before the state that names them, and those no longer named are dropped
//! only once a state that does not name them is saved (`Runtime::persist`).
//!
//! Format: the magic `KEELSTAT` (`KEELDEFS` for the definitions), the format
//! version (u32, little endian), then the postcard encoding of [`Snapshot`] (a
//! sequence of `(id, JobDef)`). A loader refuses a version newer than its own with
//! a clear error rather than guessing.
//!
//! Versions: 2 added the fields after `confdir` (the log priority, the control
//! connections a planned re-exec hands over). A version 1 state is a version 2
//! state without them: [`decode`] appends their defaults ([`V1_TAIL`]) and reads
//! it as version 2. New fields go at the end of [`Snapshot`], the same way.

use crate::job::JobDef;
use crate::lifecycle::{Def, DefId, Jobs};
use rustix::fd::{AsFd, OwnedFd};
use serde::{Deserialize, Deserializer, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;

pub const LIFEBOAT_NAME: &str = "state";
/// The lifeboat name of the saved job definitions.
pub const DEFS_LIFEBOAT_NAME: &str = "defs";
const MAGIC: &[u8; 8] = b"KEELSTAT";
const DEFS_MAGIC: &[u8; 8] = b"KEELDEFS";

/// Job definitions by id: what a saved state names.
pub type Definitions = BTreeMap<DefId, Def>;

/// The state format this binary writes. Every released version stays loadable:
/// golden files under `supervisor/tests/golden/` are loaded by the tests.
pub const FORMAT_VERSION: u32 = 2;

/// Everything a new supervisor needs to carry on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub jobs: Jobs,
    /// The highest exit seq applied to `jobs`; exits at or below it are ignored.
    pub last_exit_seq: u64,
    /// Whether `startup` was emitted (so a restarted supervisor does not boot twice).
    pub booted: bool,
    /// Rounds of spawns so far: names each round's "go" pipe in the lifeboat.
    pub go_rounds: u64,
    /// A round saved but perhaps not yet released: (round, children waiting).
    pub pending_go: Option<(u64, u32)>,
    /// The current and previous runlevel (`telinit`), as characters; 0 if none yet.
    pub runlevel: (u8, u8),
    /// keel's cgroup subtree and the instance cgroups in it.
    pub cgroups: crate::cgroup::Saved,
    /// The job log pipes (their read ends are in the lifeboat).
    pub logs: crate::joblog::Saved,
    /// Where the definitions come from, while the confdir's watch in the lifeboat
    /// has seen every change since (`None` while a change is being read).
    pub confdir: Option<crate::check::Loaded>,
    /// (version 2) `initctl log-priority`, once set: every supervisor of the boot
    /// logs at it.
    pub log_priority: Option<String>,
    /// (version 2) Control connections kept open across a planned re-exec, for
    /// the image it starts.
    pub handover: Option<crate::control::Handover>,
}

/// The postcard encoding of the fields version 2 added, at their defaults (two
/// `None`s).
const V1_TAIL: [u8; 2] = [0, 0];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a keel state journal")]
    BadMagic,
    #[error(
        "the saved state has format version {found}, newer than this supervisor's {supported}; \
         refusing to guess at it"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("the saved state (format version {version}) is corrupt: {reason}")]
    Corrupt { version: u32, reason: String },
}

/// The state, naming definitions by id (see [`encode_definitions`]).
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    framed(MAGIC, snapshot)
}

/// The definitions a state names (`Jobs::live_definitions`, or more).
pub fn encode_definitions(defs: &Definitions) -> Vec<u8> {
    let list: Vec<(DefId, &JobDef)> = defs.iter().map(|(id, d)| (*id, &**d)).collect();
    framed(DEFS_MAGIC, &list)
}

fn framed(magic: &[u8; 8], value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // Serialising plain data into a Vec cannot fail.
    postcard::to_io(value, &mut out)
        .map(|_| ())
        .unwrap_or_default();
    out
}

/// The state in `bytes`, its definitions taken from `defs`. A state that names a
/// definition `defs` lacks is corrupt.
pub fn decode(bytes: &[u8], defs: &Definitions) -> Result<Snapshot, LoadError> {
    let (version, body) = unframe(MAGIC, bytes)?;
    LOADING.with(|t| {
        *t.borrow_mut() = Some(Loading {
            defs: defs.clone(),
            missing: None,
        })
    });
    let v2;
    let body = match version {
        1 => {
            v2 = [body, &V1_TAIL[..]].concat();
            &v2[..]
        }
        _ => body,
    };
    let snapshot = postcard::from_bytes(body);
    let missing = LOADING.with(|t| t.borrow_mut().take().and_then(|l| l.missing));
    snapshot.map_err(|e| LoadError::Corrupt {
        version,
        reason: match missing {
            Some(id) => {
                format!("it names job definition {id}, which the saved definitions lack")
            }
            None => e.to_string(),
        },
    })
}

/// The definitions saved by [`encode_definitions`].
pub fn decode_definitions(bytes: &[u8]) -> Result<Definitions, LoadError> {
    let (version, body) = unframe(DEFS_MAGIC, bytes)?;
    let list: Vec<(DefId, JobDef)> =
        postcard::from_bytes(body).map_err(|e| LoadError::Corrupt {
            version,
            reason: format!("definitions: {e}"),
        })?;
    Ok(list
        .into_iter()
        .map(|(id, def)| (id, Def::new(id, def)))
        .collect())
}

/// The format version and the body after it.
fn unframe<'a>(magic: &[u8; 8], bytes: &'a [u8]) -> Result<(u32, &'a [u8]), LoadError> {
    let rest = bytes
        .strip_prefix(magic.as_slice())
        .ok_or(LoadError::BadMagic)?;
    let (version, body) = rest.split_at_checked(4).ok_or(LoadError::BadMagic)?;
    let version = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
    if version > FORMAT_VERSION {
        return Err(LoadError::TooNew {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok((version, body))
}

/// What [`decode`] resolves definition ids with.
struct Loading {
    defs: Definitions,
    /// The first id it did not find.
    missing: Option<DefId>,
}

thread_local! {
    /// The definitions of the state being decoded (only during [`decode`]).
    static LOADING: RefCell<Option<Loading>> = const { RefCell::new(None) };
}

/// A saved [`Def`] is its id, looked up in the definitions [`decode`] was given.
impl<'de> Deserialize<'de> for Def {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Def, D::Error> {
        use serde::de::Error;
        let id = DefId::deserialize(d)?;
        LOADING
            .with(|t| {
                let mut loading = t.borrow_mut();
                let loading = loading.as_mut()?;
                let found = loading.defs.get(&id).cloned();
                if found.is_none() {
                    loading.missing.get_or_insert(id);
                }
                found
            })
            .ok_or_else(|| D::Error::custom("a job definition the saved ones lack"))
    }
}

/// A sealed memfd holding `bytes`, ready to deposit.
pub fn to_memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "keel-state",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut done = 0;
    while done < bytes.len() {
        done += rustix::io::write(&fd, &bytes[done..])?;
    }
    // Nobody may change a snapshot once written.
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(fd)
}

/// Reads a whole memfd back.
pub fn read_memfd(fd: impl AsFd) -> io::Result<Vec<u8>> {
    let len = rustix::fs::fstat(&fd)?.st_size as usize;
    let mut out = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = rustix::io::pread(&fd, &mut out[done..], done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    out.truncate(done);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_jobs() -> Snapshot {
        let mut jobs = Jobs::default();
        jobs.set_definitions(vec![
            crate::job::parse("a", "exec sleep 1\n").def.unwrap(),
            crate::job::parse("b", "task\nexec true\n").def.unwrap(),
        ]);
        Snapshot {
            jobs,
            last_exit_seq: 42,
            booted: true,
            ..Snapshot::default()
        }
    }

    #[test]
    fn round_trip_through_a_memfd() {
        let snap = with_jobs();
        let defs = snap.jobs.live_definitions();
        let fd = to_memfd(&encode(&snap)).unwrap();
        let defs_fd = to_memfd(&encode_definitions(&defs)).unwrap();
        let loaded_defs = decode_definitions(&read_memfd(&defs_fd).unwrap()).unwrap();
        assert_eq!(loaded_defs, defs);
        assert_eq!(
            decode(&read_memfd(&fd).unwrap(), &loaded_defs).unwrap(),
            snap
        );
        // Sealed: the snapshot cannot be altered afterwards.
        assert!(rustix::io::write(&fd, b"x").is_err());
    }

    #[test]
    fn definitions_are_saved_apart_and_shared_once_loaded() {
        let snap = with_jobs();
        let state = encode(&snap);
        let defs = decode_definitions(&encode_definitions(&snap.jobs.live_definitions())).unwrap();
        // The state names its definitions: it does not hold them.
        assert!(!state.windows(5).any(|w| w == b"sleep"));
        let loaded = decode(&state, &defs).unwrap();
        assert_eq!(loaded.jobs.jobs["a"].def.main, snap.jobs.jobs["a"].def.main);
        // A state naming a definition the saved ones lack does not load.
        let partial: Definitions = defs.into_iter().take(1).collect();
        let err = decode(&state, &partial).unwrap_err().to_string();
        assert!(err.contains("saved definitions lack"), "{err}");
    }

    #[test]
    fn a_version_1_state_loads_with_the_defaults_of_later_fields() {
        let snap = with_jobs();
        let defs = snap.jobs.live_definitions();
        let v2 = encode(&snap);
        // Version 1 wrote exactly this without the tail version 2 added.
        let mut v1 = v2[..v2.len() - V1_TAIL.len()].to_vec();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(decode(&v1, &defs).unwrap(), snap);
        let with_priority = Snapshot {
            log_priority: Some("debug".into()),
            ..with_jobs()
        };
        let loaded = decode(&encode(&with_priority), &defs).unwrap();
        assert_eq!(loaded.log_priority.as_deref(), Some("debug"));
    }

    #[test]
    fn newer_and_broken_states_are_refused_clearly() {
        let none = Definitions::new();
        let mut bytes = encode(&Snapshot::default());
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let err = decode(&bytes, &none).unwrap_err();
        assert!(matches!(err, LoadError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer than this supervisor"));
        assert!(matches!(
            decode(b"garbage", &none),
            Err(LoadError::BadMagic)
        ));
        let good = encode(&Snapshot::default());
        for cut in 12..good.len() {
            assert!(decode(&good[..cut], &none).is_err());
        }
        let defs = encode_definitions(&with_jobs().jobs.live_definitions());
        assert!(matches!(
            decode_definitions(&good),
            Err(LoadError::BadMagic)
        ));
        for cut in 12..defs.len() {
            assert!(decode_definitions(&defs[..cut]).is_err());
        }
    }
}
