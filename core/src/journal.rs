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
//! of the shell's part, the same way. Version 3 is "base + log" (below): the base
//! is a version 2 state with its generation (u64) after the version; a version 2
//! state loads as a base without a log.
//!
//! # The incremental journal (issue 17): saves that cost what changed
//!
//! A round of the supervisor's loop that changed something must be saved before
//! its effects are released. With 10,000 jobs the whole state is 1.7 MB, and most
//! rounds change a handful of jobs, so a round appends only what it changed to a
//! log kept beside a whole snapshot (the base):
//!
//! - **Tables and head.** The parts of the state that grow with the number of
//!   jobs are [`Tracked`] maps: the core's jobs (by name), pids and event queue
//!   (by id, saved as the sequence it always was), and the shell's own
//!   ([`SavedShell::tables`]: its cgroups and log pipes). A `Tracked` notes every
//!   key handed out for a change (`lifecycle::table`). Everything else — the env
//!   table, the counters, the shell's small fields — is the head: the
//!   snapshot's encoding with every table empty.
//! - **Records.** A round ([`Writer::round`]) appends `Head(bytes)` if the head
//!   changed since it was last written, `Put(table, key, value)` or
//!   `Delete(table, key)` per key changed (`Clear(table)` then every entry for a
//!   table made anew), and `Commit(round)`. Nothing changed, nothing appended.
//! - **Framing.** Each record is `len: u32 | crc32: u32 | kind: u8 | body`, the
//!   checksum over kind and body. A reader ([`load`]) decodes the base, then
//!   applies the records of each round whose `Commit` it reaches; anything after
//!   the last whole commit (a supervisor killed mid-append: a short record, a bad
//!   checksum, records without their commit) is ignored. So a successor reads
//!   either the previous round's state or the new one, never a torn one.
//! - **Where.** The base is a sealed memfd in the lifeboat (`state`), as whole
//!   snapshots were; the log is a memfd without seals (`state-log`), written at
//!   explicit offsets by the supervisor: keel-init holds the same file, so what
//!   was written survives the writer. A successor truncates the log to its last
//!   whole commit and appends from there.
//! - **Compaction.** Once the log outgrows a quarter of its base (and 64 KiB),
//!   the next save writes a whole new base with the next generation
//!   ([`Writer::compact`]), deposits it (keel-init swaps it in one step), then
//!   deposits a new empty log whose header names that generation. Killed in
//!   between, the successor finds a log of the old generation beside the new
//!   base and ignores it (the base holds everything). So the bytes written per
//!   round are proportional to what changed, compaction's are at most four
//!   times the log's, and a successor decodes at most 1.25 times the state.
//! - **Versions.** The log's header has the format version of the release that
//!   wrote it; its record bodies are postcard encodings of the parts (an
//!   entry, the head), so a field a later release adds at the end of the
//!   shell's part (or of an entry) is read from an older log with its default
//!   appended, the way [`decode`] reads a base of version 1 or 2.
//! - **Definitions** are saved apart, as before; a base and its log may name
//!   definitions the current state no longer does, so unused ones are dropped
//!   only after a compaction (`supervisor::runtime::persist`).
//!
//! A re-exec and a crash recovery read the base and the log in full (they must
//! read every job): their cost is the decode of the state, proportional to the
//! number of jobs by nature.

mod log;

pub use crate::lifecycle::table::{Table, Tracked};
pub use log::{Loaded, Records, Writer, load, log_header};

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
pub const FORMAT_VERSION: u32 = 3;

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
    /// The shell's tables the journal saves entry by entry (see the module
    /// docs), always in the same order.
    fn tables(&mut self) -> Vec<&mut dyn Table> {
        Vec::new()
    }
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

/// The whole state as a base of generation 0, naming definitions by id (see
/// [`encode_definitions`]).
pub fn encode<Shell: Serialize>(snapshot: &Snapshot<Shell>) -> Result<Vec<u8>, SaveError> {
    encode_base(snapshot, 0)
}

/// The whole state as the base of generation `generation` (see the module docs).
fn encode_base<Shell: Serialize>(
    snapshot: &Snapshot<Shell>,
    generation: u64,
) -> Result<Vec<u8>, SaveError> {
    framed(MAGIC, Some(generation), snapshot, "the state")
}

impl<Shell: SavedShell> Snapshot<Shell> {
    /// The tables the journal saves entry by entry: the core's, then the shell's.
    fn tables(&mut self) -> Vec<&mut dyn Table> {
        let mut tables = self.jobs.tables();
        tables.extend(self.shell.tables());
        tables
    }
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
        .filter(|(_, d)| *d.sandbox != Sandbox::default())
        .map(|(id, d)| (*id, &*d.sandbox))
        .collect();
    let mut out = framed(DEFS_MAGIC, None, &list, "the job definitions")?;
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

/// `magic`, the format version, the generation (a base's), then `value`.
fn framed(
    magic: &[u8; 8],
    generation: Option<u64>,
    value: &impl Serialize,
    what: &'static str,
) -> Result<Vec<u8>, SaveError> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    if let Some(generation) = generation {
        out.extend_from_slice(&generation.to_le_bytes());
    }
    postcard::to_io(value, &mut out).map_err(|source| SaveError { what, source })?;
    Ok(out)
}

/// The whole state in `bytes` (a base without its log), its definitions taken
/// from `defs`. A state that names a definition `defs` lacks is corrupt.
pub fn decode<Shell: SavedShell>(
    bytes: &[u8],
    defs: &Definitions,
) -> Result<Snapshot<Shell>, LoadError> {
    load(bytes, None, defs).map(|l| l.snapshot)
}

/// The snapshot in `body`, a base's bytes after its header (with [`LOADING`] set).
fn decode_body<Shell: SavedShell>(version: u32, body: &[u8]) -> Result<Snapshot<Shell>, LoadError> {
    let later = Shell::ADDED_SINCE_2;
    let snapshot = match version {
        1 => postcard::from_bytes(&[body, Shell::ADDED_IN_2, later].concat()),
        // A version 2 state written before the last k fields were added: read
        // with their defaults where they would be.
        2 => (0..=later.len())
            .map(|k| postcard::from_bytes(&[body, &later[..k]].concat()))
            .find(Result::is_ok)
            .unwrap_or_else(|| postcard::from_bytes(body)),
        _ => postcard::from_bytes(body),
    };
    let missing = LOADING.with(|t| t.borrow_mut().as_mut().and_then(|l| l.missing.take()));
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
    let (version, _, body) = unframe(DEFS_MAGIC, bytes)?;
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
            def.sandbox = sandboxes.remove(&id).unwrap_or_default().into();
            (id, Def::new(id, def))
        })
        .collect())
}

/// The format version, the generation (a base or log of version 3 and later)
/// and the body after them.
fn unframe<'a>(
    magic: &[u8; 8],
    bytes: &'a [u8],
) -> Result<(u32, Option<u64>, &'a [u8]), LoadError> {
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
    if version < 3 || magic == DEFS_MAGIC {
        return Ok((version, None, body));
    }
    let (generation, body) = body.split_at_checked(8).ok_or(LoadError::Corrupt {
        version,
        reason: "it ends before its generation".into(),
    })?;
    let generation = u64::from_le_bytes(generation.try_into().unwrap_or_default());
    Ok((version, Some(generation), body))
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

    /// The state saved as `base` and `log`, read back with `snap`'s definitions.
    fn replayed(snap: &Snapshot, base: &[u8], log: &[u8]) -> Loaded<()> {
        load(base, Some(log), &snap.jobs.live_definitions()).unwrap()
    }

    /// Whether `a` and `b` are the same state (what is saved of it).
    fn same(a: &Snapshot, b: &Snapshot) -> bool {
        encode(a).unwrap() == encode(b).unwrap()
    }

    /// A base of `snap` and its empty log.
    fn compacted(snap: &mut Snapshot, generation: u64) -> (Writer, Vec<u8>, Vec<u8>) {
        Writer::compact(snap, generation).unwrap()
    }

    /// Job "a" started, its main process spawned as `pid`.
    fn start_a(snap: &mut Snapshot, pid: i32) {
        snap.jobs.start("a", Vec::new(), None, 5).unwrap();
        snap.jobs
            .spawned("a", "", crate::job::ProcessKind::Main, pid);
        drop(snap.jobs.take_effects());
    }

    #[test]
    fn a_round_appends_what_changed_and_the_replay_is_the_whole_state() {
        let mut snap = with_jobs();
        let (mut writer, base, mut log) = compacted(&mut snap, 1);
        assert_eq!(writer.round(&mut snap).unwrap(), b"", "nothing changed");
        start_a(&mut snap, 321);
        snap.last_exit_seq = 43;
        let round = writer.round(&mut snap).unwrap();
        writer.appended(round.len());
        log.extend_from_slice(&round);
        let loaded = replayed(&snap, &base, &log);
        assert!(same(&loaded.snapshot, &snap));
        assert_eq!(loaded.writer.as_ref().map(|w| w.log_len), Some(log.len()));
        // A new definition for "b", a new job, one gone, and a table made anew.
        snap.jobs.set_definitions(vec![
            crate::job::parse("a", "exec sleep 1\n").def.unwrap(),
            crate::job::parse("c", "exec sleep 2\n").def.unwrap(),
        ]);
        snap.jobs
            .exited(321, crate::lifecycle::WaitStatus::exited(0), 9);
        drop(snap.jobs.take_effects());
        let mut defs = snap.jobs.live_definitions();
        let round = writer.round(&mut snap).unwrap();
        log.extend_from_slice(&round);
        defs.extend(with_jobs().jobs.live_definitions());
        let loaded = load::<()>(&base, Some(&log), &defs).unwrap();
        assert!(same(&loaded.snapshot, &snap));
    }

    #[test]
    fn a_round_costs_what_it_changed_not_the_number_of_jobs() {
        let mut jobs = Jobs::default();
        jobs.set_definitions(
            (0..300)
                .map(|i| {
                    crate::job::parse(&format!("j{i}"), "exec sleep 1\n")
                        .def
                        .unwrap()
                })
                .chain([crate::job::parse("a", "exec sleep 1\n").def.unwrap()])
                .collect(),
        );
        let mut snap = Snapshot {
            jobs,
            ..Snapshot::default()
        };
        let (mut writer, base, _) = compacted(&mut snap, 1);
        start_a(&mut snap, 321);
        let round = writer.round(&mut snap).unwrap();
        assert!(
            round.len() * 10 < base.len(),
            "{} bytes for one job of 301 ({} bytes)",
            round.len(),
            base.len()
        );
    }

    #[test]
    fn a_state_loaded_by_a_successor_has_nothing_to_write_until_it_changes() {
        let mut snap = with_jobs();
        start_a(&mut snap, 321);
        let (_, base, log) = compacted(&mut snap, 1);
        let mut loaded = replayed(&snap, &base, &log);
        let writer = loaded.writer.as_mut().unwrap();
        // What a successor does first: its clients' waiters are gone.
        loaded.snapshot.jobs.forget_waiters();
        assert_eq!(writer.round(&mut loaded.snapshot).unwrap(), b"");
    }

    #[test]
    fn a_round_cut_anywhere_leaves_the_previous_rounds_state() {
        let mut snap = with_jobs();
        let (mut writer, base, mut log) = compacted(&mut snap, 7);
        start_a(&mut snap, 321);
        let first = writer.round(&mut snap).unwrap();
        log.extend_from_slice(&first);
        let before = snap.clone();
        snap.jobs
            .exited(321, crate::lifecycle::WaitStatus::exited(1), 9);
        drop(snap.jobs.take_effects());
        snap.booted = true;
        let second = writer.round(&mut snap).unwrap();
        let whole = [&log[..], &second].concat();
        assert!(same(&replayed(&snap, &base, &whole).snapshot, &snap));
        // Killed mid-append: every prefix of the second round, and the whole
        // round with any one byte wrong (a record without its commit, a bad
        // checksum), read as the first round's state.
        let cut = (log.len()..whole.len()).map(|n| whole[..n].to_vec());
        let flipped = (log.len()..whole.len()).map(|n| {
            let mut bytes = whole.clone();
            bytes[n] ^= 0x40;
            bytes
        });
        for bytes in cut.chain(flipped) {
            let loaded = replayed(&snap, &base, &bytes);
            assert!(same(&loaded.snapshot, &before), "{} bytes", bytes.len());
            assert_eq!(loaded.writer.map(|w| w.log_len), Some(log.len()));
        }
    }

    #[test]
    fn a_compaction_killed_at_each_step_leaves_a_whole_state() {
        let mut snap = with_jobs();
        let (mut writer, old_base, mut old_log) = compacted(&mut snap, 1);
        start_a(&mut snap, 321);
        old_log.extend_from_slice(&writer.round(&mut snap).unwrap());
        let (_, new_base, new_log) = compacted(&mut snap, 2);
        // Killed before the new base: the old base and log.
        assert!(same(&replayed(&snap, &old_base, &old_log).snapshot, &snap));
        // Killed between the base and the log: the old log is ignored.
        let loaded = replayed(&snap, &new_base, &old_log);
        assert!(same(&loaded.snapshot, &snap));
        assert!(loaded.writer.is_none(), "the next save starts a log anew");
        // Done.
        let loaded = replayed(&snap, &new_base, &new_log);
        assert!(same(&loaded.snapshot, &snap));
        assert_eq!(loaded.writer.map(|w| w.generation), Some(2));
    }

    proptest::proptest! {
        /// Whatever the bytes of a log (or of a base) are, a load answers Ok or a
        /// clear error: it never panics.
        #[test]
        fn any_bytes_load_or_are_refused(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            at in 0usize..2000,
        ) {
            let mut snap = with_jobs();
            let (mut writer, base, mut log) = compacted(&mut snap, 3);
            start_a(&mut snap, 321);
            log.extend(writer.round(&mut snap).unwrap());
            let defs = snap.jobs.live_definitions();
            // Noise after the log, inside it, and as the base itself.
            let mut appended = log.clone();
            appended.extend(&noise);
            let mut inside = log.clone();
            let at = at % inside.len();
            inside.splice(at..(at + noise.len()).min(inside.len()), noise.iter().copied());
            // After the last commit, noise is a round cut short: ignored.
            let loaded = load::<()>(&base, Some(&appended), &defs);
            proptest::prop_assert!(loaded.is_ok_and(|l| same(&l.snapshot, &snap)));
            for (base, log) in [(&base, &inside), (&noise, &log)] {
                let _ = load::<()>(base, Some(log), &defs);
            }
            // A committed record whose checksum holds but whose body is noise
            // (a put of job table entry): loaded if the noise happens to be an
            // entry, else refused.
            let mut forged = log.clone();
            for framed in [[2u8, 0].iter().chain(&noise).copied().collect(), vec![5u8, 9]] {
                forged.extend((framed.len() as u32).to_le_bytes());
                forged.extend(crc32fast::hash(&framed).to_le_bytes());
                forged.extend(&framed);
            }
            if let Err(e) = load::<()>(&base, Some(&forged), &defs) {
                proptest::prop_assert!(e.to_string().contains("its log"), "{}", e);
            }
        }
    }

    #[test]
    fn a_version_2_state_loads_as_a_base_without_a_log() {
        let snap = with_jobs();
        let v2 = [
            &MAGIC[..],
            &2u32.to_le_bytes(),
            &postcard::to_stdvec(&snap).unwrap(),
        ]
        .concat();
        let loaded = replayed(&snap, &v2, &log_header(0));
        assert!(same(&loaded.snapshot, &snap));
        assert!(loaded.writer.is_none());
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
                .map(|d| Sandbox::clone(&d.sandbox))
                .unwrap()
        };
        assert!(sandbox(&loaded, "boxed").private_tmp);
        assert_eq!(sandbox(&loaded, "boxed").read_only, ["/srv"]);
        assert!(sandbox(&loaded, "boxed").refuses_call("mount"));
        assert!(!sandbox(&loaded, "boxed").refuses_call("execve"));
        assert_eq!(sandbox(&loaded, "plain"), Sandbox::default());
        // Definitions saved before sandboxes existed end after the list.
        let list: Vec<(DefId, &JobDef)> = live.iter().map(|(id, d)| (*id, &**d)).collect();
        let old = framed(DEFS_MAGIC, None, &list, "old").unwrap();
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
