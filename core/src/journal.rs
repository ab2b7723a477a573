//! The saved state: the supervisor's whole state as versioned bytes, the state
//! and the job definitions it names apart. Where the bytes are kept (sealed memfds
//! in keel-init's lifeboat) is the shell's business (`keel_supervisor::journal`).
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
//! Versions: 2 added fields at the end of the shell's part (the supervisor's log
//! priority, the control connections a planned re-exec hands over). A version 1
//! state is a version 2 state without them: [`decode`] appends their defaults
//! ([`SavedShell::ADDED_IN_2`]) and reads it as version 2. New fields go at the end
//! of the shell's part, the same way.
//!
//! # Saves cost what changed: each job's bytes kept (issue 17)
//!
//! Every round that changed something saves the whole state: with 10,000 jobs
//! that is 1.7 MB, and its encoding was what a profile of a 10,000-job bring-up
//! showed first. [`encode`] writes the same bytes as serde would, but the jobs'
//! map (most of them) is assembled from each job's entry as encoded at an
//! earlier save, kept until the job is next handed out for a change
//! (`lifecycle::table`): a save encodes the jobs changed since the last one and
//! the fields outside the jobs' map (the pid table, the event queue, the env
//! table, the shell's part), and copies the rest. Format, lifeboat and
//! crash-consistency stay as they were (a whole snapshot per save, swapped in one
//! step). `cargo run --release -p keel-core --example save_cost` prints the cost.
//!
//! # Not built yet: the incremental journal
//!
//! What is left of a save at 10,000 jobs is the copy of the whole state, the
//! encoding of the pid table, and the memfd it is written into (~1 ms). Should
//! that matter, the design meant to replace whole snapshots:
//!
//! - **Records.** The state is cut into keyed parts: one per instance
//!   `(job, instance)`, one per job's `start on` match state, the event queue,
//!   the pid table's entries (derivable from the instances, so not saved at all),
//!   the env table, and a "head" (`last_exit_seq`, `booted`, `go_rounds`,
//!   `pending_go`, runlevels, power, the shell's part). `Jobs` already marks the
//!   instances a round changed (`Unsettled::touched`, `instance_mut`); the same
//!   marks, kept until the save rather than until the next `tick`, name the
//!   records to write. A round appends `Put(key, bytes)` / `Delete(key)` records
//!   and one `Commit(round)` record.
//! - **Framing.** Each record is `len: u32 | crc32c: u32 | kind: u8 | body`, the
//!   checksum over kind and body. A reader replays the base snapshot, then records
//!   up to the last `Commit` whose every record checks; anything after it (a
//!   supervisor killed mid-append: a short record, a bad checksum, records
//!   without their `Commit`) is ignored. So a successor reads either the previous
//!   round's state or the new one, never a torn one: crash-consistent at every
//!   instant, as the whole-snapshot swap is today.
//! - **Where.** A memfd in the lifeboat (`journal-log`), opened without the
//!   write seals, appended with `write` (the supervisor's own fd; keel-init holds
//!   a copy, so nothing is lost when the supervisor dies between writes), beside
//!   the sealed base snapshot (`state`) whose format stays as it is. The log's
//!   header names the base's generation, so a log is never replayed over another
//!   base.
//! - **Compaction.** When the log outgrows the base (or a fixed bound), the
//!   supervisor writes a new whole snapshot (today's save) with a new generation
//!   into a fresh memfd, deposits it (keel-init swaps it in one step), then
//!   deposits an empty log naming that generation. Killed in between, the
//!   successor finds an old-generation log beside the new base and ignores it.
//! - **Versions.** `FORMAT_VERSION` 3 is "base + log"; a version 2 state (the
//!   golden files) loads as a base with no log, as it does now. The record bodies
//!   are postcard encodings of the parts, so a later field is added at a part's
//!   end the way `ADDED_IN_2` does for the shell.
//! - **Tests to write with it**: the `test_fault` hook in the middle of an append
//!   (half a record, a record without its `Commit`) → the successor's state is
//!   the previous round's; compaction under a kill at each step; the golden files
//!   still load; a proptest that any sequence of rounds replayed from base + log
//!   equals the whole snapshot of the same state.
//!
//! What stays whole even then: a re-exec and a crash recovery read the base and
//! the log in full (they must read every job), so their cost is the decode of the
//! state, proportional to the number of jobs by nature.

use crate::job::JobDef;
use crate::job::sandbox::Sandbox;
use crate::lifecycle::{Def, DefId, Jobs};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;

const MAGIC: &[u8; 8] = b"KEELSTAT";
const DEFS_MAGIC: &[u8; 8] = b"KEELDEFS";

/// Job definitions by id: what a saved state names.
pub type Definitions = BTreeMap<DefId, Def>;

/// The state format this binary writes. Every released version stays loadable:
/// golden files under `supervisor/tests/golden/` are loaded by the tests.
pub const FORMAT_VERSION: u32 = 2;

/// What the shell saves of its own, after the core's part.
pub trait SavedShell: Serialize + DeserializeOwned {
    /// The postcard encoding of the fields version 2 added at the end of the
    /// shell's part, at their defaults: a version 1 state is read as version 2 with
    /// these bytes appended.
    const ADDED_IN_2: &'static [u8] = &[];
    /// The same for fields added at the end since version 2 was released, one
    /// byte each (`None`, empty, `false`): a version 2 state may lack the last
    /// ones, which are then read at their defaults.
    const ADDED_SINCE_2: &'static [u8] = &[];
}

impl SavedShell for () {}

/// Everything a new supervisor needs to carry on; `Shell` is what the shell keeps
/// of its own (cgroups, log pipes, where the definitions come from), saved last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot<Shell = ()> {
    pub jobs: Jobs,
    /// The highest exit seq applied to `jobs`; exits at or below it are ignored.
    pub last_exit_seq: u64,
    /// Whether `startup` was emitted (so a restarted supervisor does not boot twice).
    pub booted: bool,
    /// Rounds of spawns so far: names each round's "go" pipe in the lifeboat.
    pub go_rounds: u64,
    /// A round saved but perhaps not yet released: (round, children waiting).
    pub pending_go: Option<(u64, u32)>,
    /// The current and previous runlevel (`telinit`).
    pub runlevel: crate::runlevel::Runlevels,
    /// The shell's own part. Postcard writes a nested struct as its fields in
    /// order, so this is byte for byte the format of the fields written here before.
    pub shell: Shell,
}

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

/// Why a state could not be written: serde refused a value (nothing written).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {what}: {source}")]
pub struct SaveError {
    what: &'static str,
    source: postcard::Error,
}

/// The state, naming definitions by id (see [`encode_definitions`]).
///
/// Byte for byte serde's encoding of `snapshot`, but the jobs' part is copied
/// from what was kept of the jobs unchanged since the last save (see
/// `lifecycle::table`): the cost is the encoding of what changed and a copy.
pub fn encode<Shell: Serialize>(snapshot: &Snapshot<Shell>) -> Result<Vec<u8>, SaveError> {
    // Each field named: a field added to `Snapshot` does not compile until it is here.
    let Snapshot {
        jobs,
        last_exit_seq,
        booted,
        go_rounds,
        pending_go,
        runlevel,
        shell,
    } = snapshot;
    let what = "the state";
    let error = |source| SaveError { what, source };
    // A struct's fields are written one after the other, as a tuple's are.
    let rest = (
        last_exit_seq,
        booted,
        go_rounds,
        pending_go,
        runlevel,
        shell,
    );
    let rest = postcard::to_stdvec(&rest).map_err(error)?;
    let mut out = framed(MAGIC, &(), what)?;
    jobs.encode_into(&mut out, rest.len()).map_err(error)?;
    out.extend_from_slice(&rest);
    Ok(out)
}

/// The definitions a state names (`Jobs::live_definitions`, or more).
///
/// The definitions' sandbox settings follow the list, as `(id, Sandbox)` pairs
/// for those that have any (nothing when none has): a trailing part, so that
/// definitions saved before it existed (which end after the list) still load,
/// without sandboxes. The allow lists (`syscalls allow`) follow as a third part,
/// `(id, calls)` pairs, for the same reason.
pub fn encode_definitions(defs: &Definitions) -> Result<Vec<u8>, SaveError> {
    let list: Vec<(DefId, &JobDef)> = defs.iter().map(|(id, d)| (*id, &**d)).collect();
    let sandboxes: Vec<(DefId, &Sandbox)> = defs
        .iter()
        .filter(|(_, d)| d.sandbox != Sandbox::default())
        .map(|(id, d)| (*id, &d.sandbox))
        .collect();
    let mut out = framed(DEFS_MAGIC, &list, "the job definitions")?;
    if sandboxes.is_empty() {
        return Ok(out);
    }
    postcard::to_io(&sandboxes, &mut out).map_err(|source| SaveError {
        what: "the job definitions' sandboxes",
        source,
    })?;
    let allowed: Vec<(DefId, &Vec<String>)> = sandboxes
        .iter()
        .filter(|(_, s)| !s.syscalls_allowed.is_empty())
        .map(|(id, s)| (*id, &s.syscalls_allowed))
        .collect();
    if !allowed.is_empty() {
        postcard::to_io(&allowed, &mut out).map_err(|source| SaveError {
            what: "the job definitions' system-call allow lists",
            source,
        })?;
    }
    Ok(out)
}

fn framed(
    magic: &[u8; 8],
    value: &impl Serialize,
    what: &'static str,
) -> Result<Vec<u8>, SaveError> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    postcard::to_io(value, &mut out).map_err(|source| SaveError { what, source })?;
    Ok(out)
}

/// The state in `bytes`, its definitions taken from `defs`. A state that names a
/// definition `defs` lacks is corrupt.
pub fn decode<Shell: SavedShell>(
    bytes: &[u8],
    defs: &Definitions,
) -> Result<Snapshot<Shell>, LoadError> {
    let (version, body) = unframe(MAGIC, bytes)?;
    LOADING.with(|t| {
        *t.borrow_mut() = Some(Loading {
            defs: defs.clone(),
            missing: None,
        })
    });
    let later = Shell::ADDED_SINCE_2;
    let snapshot = match version {
        1 => postcard::from_bytes(&[body, Shell::ADDED_IN_2, later].concat()),
        // A version 2 state written before the last k fields were added: read
        // with their defaults where they would be.
        _ => (0..=later.len())
            .map(|k| postcard::from_bytes(&[body, &later[..k]].concat()))
            .find(Result::is_ok)
            .unwrap_or_else(|| postcard::from_bytes(body)),
    };
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
    let corrupt = |e: postcard::Error| LoadError::Corrupt {
        version,
        reason: format!("definitions: {e}"),
    };
    let (list, rest): (Vec<(DefId, JobDef)>, &[u8]) =
        postcard::take_from_bytes(body).map_err(corrupt)?;
    let (sandboxes, rest): (Vec<(DefId, Sandbox)>, &[u8]) = match rest {
        [] => (Vec::new(), rest),
        rest => postcard::take_from_bytes(rest).map_err(corrupt)?,
    };
    let mut sandboxes: BTreeMap<DefId, Sandbox> = sandboxes.into_iter().collect();
    if !rest.is_empty() {
        for (id, calls) in
            postcard::from_bytes::<Vec<(DefId, Vec<String>)>>(rest).map_err(corrupt)?
        {
            if let Some(sandbox) = sandboxes.get_mut(&id) {
                sandbox.syscalls_allowed = calls;
            }
        }
    }
    Ok(list
        .into_iter()
        .map(|(id, mut def)| {
            def.sandbox = sandboxes.remove(&id).unwrap_or_default();
            (id, Def::new(id, def))
        })
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
    fn definitions_are_saved_apart_and_shared_once_loaded() {
        let snap = with_jobs();
        let state = encode(&snap).unwrap();
        let defs = decode_definitions(&encode_definitions(&snap.jobs.live_definitions()).unwrap())
            .unwrap();
        // The state names its definitions: it does not hold them.
        assert!(!state.windows(5).any(|w| w == b"sleep"));
        let loaded: Snapshot = decode(&state, &defs).unwrap();
        let main = |s: &Snapshot| s.jobs.job("a").map(|j| j.def().main.clone());
        assert_eq!(main(&loaded), main(&snap));
        // A state naming a definition the saved ones lack does not load.
        let partial: Definitions = defs.into_iter().take(1).collect();
        let err = decode::<()>(&state, &partial).unwrap_err().to_string();
        assert!(err.contains("saved definitions lack"), "{err}");
    }

    /// serde's whole encoding, framed: what [`encode`] must write.
    fn whole(snap: &Snapshot) -> Vec<u8> {
        framed(MAGIC, snap, "the state").unwrap()
    }

    #[test]
    fn a_save_after_changes_is_the_whole_encoding_of_the_changed_state() {
        let mut snap = with_jobs();
        assert_eq!(encode(&snap).unwrap(), whole(&snap));
        // A start changes job "a" only: "b" is copied from its kept bytes.
        snap.jobs.start("a", Vec::new(), None, 5).unwrap();
        snap.jobs
            .spawned("a", "", crate::job::ProcessKind::Main, 321);
        snap.last_exit_seq = 43;
        assert_eq!(encode(&snap).unwrap(), whole(&snap));
        // A new definition for "b", and a new job.
        snap.jobs.set_definitions(vec![
            crate::job::parse("a", "exec sleep 1\n").def.unwrap(),
            crate::job::parse("b", "task\nexec false\n").def.unwrap(),
            crate::job::parse("c", "exec sleep 2\n").def.unwrap(),
        ]);
        assert_eq!(encode(&snap).unwrap(), whole(&snap));
        // A job gone (stopped, so dropped at once).
        snap.jobs.set_definitions(vec![
            crate::job::parse("a", "exec sleep 1\n").def.unwrap(),
            crate::job::parse("b", "task\nexec false\n").def.unwrap(),
        ]);
        snap.jobs.forget_waiters();
        assert_eq!(encode(&snap).unwrap(), whole(&snap));
        // A copy saves the same bytes, and its changes are its own.
        let copy = snap.clone();
        snap.jobs
            .exited(321, crate::lifecycle::WaitStatus::exited(0), 9);
        assert_eq!(encode(&copy).unwrap(), whole(&copy));
        assert_eq!(encode(&snap).unwrap(), whole(&snap));
        assert_ne!(encode(&copy).unwrap(), encode(&snap).unwrap());
    }

    #[test]
    fn sandboxes_are_saved_after_the_definitions() {
        let mut jobs = Jobs::default();
        jobs.set_definitions(vec![
            crate::job::parse("plain", "exec true\n").def.unwrap(),
            crate::job::parse(
                "boxed",
                "private tmp\nread-only /srv\nsyscalls allow @default\nexec true\n",
            )
            .def
            .unwrap(),
        ]);
        let live = jobs.live_definitions();
        let bytes = encode_definitions(&live).unwrap();
        let loaded = decode_definitions(&bytes).unwrap();
        let sandbox = |defs: &Definitions, name: &str| {
            defs.values()
                .find(|d| d.name == name)
                .map(|d| d.sandbox.clone())
                .unwrap()
        };
        assert!(sandbox(&loaded, "boxed").private_tmp);
        assert_eq!(sandbox(&loaded, "boxed").read_only, ["/srv"]);
        assert!(sandbox(&loaded, "boxed").refuses_call("mount"));
        assert!(!sandbox(&loaded, "boxed").refuses_call("execve"));
        assert_eq!(sandbox(&loaded, "plain"), Sandbox::default());
        // Definitions saved before sandboxes existed end after the list.
        let list: Vec<(DefId, &JobDef)> = live.iter().map(|(id, d)| (*id, &**d)).collect();
        let old = framed(DEFS_MAGIC, &list, "old").unwrap();
        let loaded = decode_definitions(&old).unwrap();
        assert_eq!(sandbox(&loaded, "boxed"), Sandbox::default());
    }

    #[test]
    fn newer_and_broken_states_are_refused_clearly() {
        let none = Definitions::new();
        let mut bytes = encode(&Snapshot::<()>::default()).unwrap();
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let err = decode::<()>(&bytes, &none).unwrap_err();
        assert!(matches!(err, LoadError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer than this supervisor"));
        assert!(matches!(
            decode::<()>(b"garbage", &none),
            Err(LoadError::BadMagic)
        ));
        let good = encode(&Snapshot::<()>::default()).unwrap();
        for cut in 12..good.len() {
            assert!(decode::<()>(&good[..cut], &none).is_err());
        }
        let defs = encode_definitions(&with_jobs().jobs.live_definitions()).unwrap();
        assert!(matches!(
            decode_definitions(&good),
            Err(LoadError::BadMagic)
        ));
        for cut in 12..defs.len() {
            assert!(decode_definitions(&defs[..cut]).is_err());
        }
    }
}
