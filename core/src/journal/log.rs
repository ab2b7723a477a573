//! The journal's log: the records of each round's changes, appended after a base
//! snapshot, and their replay (see the parent module's docs for the design).
//!
//! Owns the framing (`len | crc32 | kind | body`), the record kinds, the writer's
//! position ([`Writer`]: generation, lengths, the last head written) and the
//! replay of a base and its log ([`load`]).

use super::{
    FORMAT_VERSION, LOADING, LoadError, Loading, SaveError, SavedShell, Snapshot, decode_body,
    unframe,
};
use crate::lifecycle::table::head_only;
use serde::Serialize;

pub(super) const LOG_MAGIC: &[u8; 8] = b"KEELJLOG";
/// Magic, version, generation.
const LOG_HEADER_LEN: usize = 8 + 4 + 8;
/// `len: u32 | crc32: u32` before each record's kind and body.
const FRAME: usize = 8;

/// Everything but the tables (the snapshot with every table empty).
const HEAD: u8 = 1;
/// `table: u8`, then the entry `(key, value)`.
const PUT: u8 = 2;
/// `table: u8`, then the key.
const DELETE: u8 = 3;
/// `table: u8`: the table made anew (its entries follow as `PUT`s).
const CLEAR: u8 = 4;
/// The round's number: the records since the last commit are one change.
const COMMIT: u8 = 5;

/// A log grows to at least this before it is compacted into a new base.
const MIN_COMPACT: usize = 64 * 1024;

/// Records being framed, for one round.
#[derive(Default)]
pub struct Records {
    buf: Vec<u8>,
}

impl Records {
    fn record(
        &mut self,
        kind: u8,
        body: impl FnOnce(&mut Vec<u8>) -> postcard::Result<()>,
    ) -> postcard::Result<()> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; FRAME]);
        self.buf.push(kind);
        body(&mut self.buf)?;
        let framed = &self.buf[start + FRAME..];
        let len = u32::try_from(framed.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
        let crc = crc32fast::hash(framed);
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + FRAME].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    pub(crate) fn put(&mut self, table: u8, entry: &impl Serialize) -> postcard::Result<()> {
        self.record(PUT, |b| {
            b.push(table);
            postcard::to_io(entry, b).map(drop)
        })
    }

    pub(crate) fn delete(&mut self, table: u8, key: &impl Serialize) -> postcard::Result<()> {
        self.record(DELETE, |b| {
            b.push(table);
            postcard::to_io(key, b).map(drop)
        })
    }

    pub(crate) fn clear(&mut self, table: u8) {
        // Pushing one byte cannot fail.
        let _ = self.record(CLEAR, |b| {
            b.push(table);
            Ok(())
        });
    }
}

/// Where the log stands: what the supervisor needs to append the next round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    /// The base's generation, which the log's header names.
    pub generation: u64,
    /// The base's length: the log is compacted once it outgrows it.
    pub base_len: usize,
    /// The log's length so far: the next round goes at this offset.
    pub log_len: usize,
    /// The last round committed.
    pub round: u64,
    /// The head as last written (a round writes it only when it changed).
    last_head: Option<Vec<u8>>,
}

impl Writer {
    /// The bytes of a new base of generation `generation` (the whole state) and
    /// the header of its empty log, and the writer that goes on from them. Every
    /// table is clean afterwards.
    pub fn compact<Shell: SavedShell>(
        snapshot: &mut Snapshot<Shell>,
        generation: u64,
    ) -> Result<(Writer, Vec<u8>, Vec<u8>), SaveError> {
        let base = super::encode_base(snapshot, generation)?;
        for table in snapshot.tables() {
            table.saved();
        }
        let head = head_only(|| postcard::to_stdvec(snapshot)).map_err(|source| SaveError {
            what: "the state's head",
            source,
        })?;
        let header = log_header(generation);
        let writer = Writer {
            generation,
            base_len: base.len(),
            log_len: header.len(),
            round: 0,
            last_head: Some(head),
        };
        Ok((writer, base, header))
    }

    /// Whether the log has grown past a quarter of its base: the next save is a
    /// compaction. So a successor decodes at most 1.25 times the state (a
    /// recovery's cost), and the bytes compactions write stay within four
    /// times those of the rounds.
    pub fn wants_compaction(&self) -> bool {
        self.log_len > (self.base_len / 4).max(MIN_COMPACT)
    }

    /// The records of what changed since the last round and a commit, to append
    /// at `log_len`; empty when nothing changed. The tables are clean
    /// afterwards: call [`Writer::appended`] once the bytes are written.
    pub fn round<Shell: SavedShell>(
        &mut self,
        snapshot: &mut Snapshot<Shell>,
    ) -> Result<Vec<u8>, SaveError> {
        let error = |source| SaveError {
            what: "the state's changes",
            source,
        };
        let mut out = Records::default();
        let head = head_only(|| postcard::to_stdvec(snapshot)).map_err(error)?;
        if self.last_head.as_ref() != Some(&head) {
            out.record(HEAD, |b| {
                b.extend_from_slice(&head);
                Ok(())
            })
            .map_err(error)?;
            self.last_head = Some(head);
        }
        for (id, table) in (0u8..).zip(snapshot.tables()) {
            table.write_changes(id, &mut out).map_err(error)?;
        }
        if out.buf.is_empty() {
            return Ok(Vec::new());
        }
        let round = self.round + 1;
        out.record(COMMIT, |b| postcard::to_io(&round, b).map(drop))
            .map_err(error)?;
        self.round = round;
        Ok(out.buf)
    }

    /// `n` bytes of a round were appended to the log.
    pub fn appended(&mut self, n: usize) {
        self.log_len += n;
    }
}

/// An empty log naming the base of generation `generation`.
pub fn log_header(generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(LOG_HEADER_LEN);
    out.extend_from_slice(LOG_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out
}

/// A saved state read back: the snapshot, and where its log goes on (`None`:
/// there is no log to go on with — a version 2 state, or a log of another
/// generation — so the next save is a compaction).
pub struct Loaded<Shell> {
    pub snapshot: Snapshot<Shell>,
    pub writer: Option<Writer>,
}

/// The state saved as `base` and `log`: the base, then every round of the log
/// up to the last whole commit. What follows it (a round cut short: a short
/// record, a bad checksum, records without their commit) is ignored, and so is
/// a log naming another generation than the base's.
pub fn load<Shell: SavedShell>(
    base: &[u8],
    log: Option<&[u8]>,
    defs: &super::Definitions,
) -> Result<Loaded<Shell>, LoadError> {
    let (version, generation, body) = unframe(super::MAGIC, base)?;
    LOADING.with(|t| {
        *t.borrow_mut() = Some(Loading {
            defs: defs.clone(),
            missing: None,
        })
    });
    let loaded = replay(version, generation, body, base.len(), log);
    LOADING.with(|t| t.borrow_mut().take());
    loaded
}

fn replay<Shell: SavedShell>(
    version: u32,
    generation: Option<u64>,
    body: &[u8],
    base_len: usize,
    log: Option<&[u8]>,
) -> Result<Loaded<Shell>, LoadError> {
    let mut snapshot = decode_body(version, body)?;
    let (Some(generation), Some(log)) = (generation, log) else {
        return Ok(Loaded {
            snapshot,
            writer: None,
        });
    };
    let corrupt = |reason: String| LoadError::Corrupt { version, reason };
    let (log_version, log_generation, mut rest) = unframe(LOG_MAGIC, log)
        .map_err(|e| corrupt(format!("its log: {e}")))
        .and_then(|(v, g, rest)| {
            Ok((
                v,
                g.ok_or_else(|| corrupt("a log without a generation".into()))?,
                rest,
            ))
        })?;
    if log_generation != generation || log_version < 3 {
        // A compaction killed before its new log: this log belongs to the old base.
        return Ok(Loaded {
            snapshot,
            writer: None,
        });
    }
    let mut round: Vec<(u8, &[u8])> = Vec::new();
    let mut valid = log.len() - rest.len();
    let mut last_round = 0;
    while let Some((kind, body, after)) = next_record(rest) {
        rest = after;
        if kind != COMMIT {
            round.push((kind, body));
            continue;
        }
        for (kind, body) in round.drain(..) {
            apply(&mut snapshot, kind, body).map_err(|e| corrupt(format!("its log: {e}")))?;
        }
        last_round = postcard::from_bytes(body).map_err(|e| corrupt(format!("its log: {e}")))?;
        valid = log.len() - rest.len();
    }
    // As the log has it: the next round writes the head only if it changes.
    let head = head_only(|| postcard::to_stdvec(&snapshot)).ok();
    Ok(Loaded {
        snapshot,
        writer: Some(Writer {
            generation,
            base_len,
            log_len: valid,
            round: last_round,
            last_head: head,
        }),
    })
}

/// The next whole record of `log` whose checksum holds: its kind, its body and
/// what follows it.
fn next_record(log: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (frame, rest) = log.split_at_checked(FRAME)?;
    let len = u32::from_le_bytes(frame[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(frame[4..].try_into().ok()?);
    let (framed, rest) = rest.split_at_checked(len)?;
    if len == 0 || crc32fast::hash(framed) != crc {
        return None;
    }
    Some((framed[0], &framed[1..], rest))
}

/// Applies one record of a committed round to `snapshot`.
fn apply<Shell: SavedShell>(
    snapshot: &mut Snapshot<Shell>,
    kind: u8,
    body: &[u8],
) -> Result<(), String> {
    if kind == HEAD {
        let mut head: Snapshot<Shell> = postcard::from_bytes(body).map_err(|e| e.to_string())?;
        for (theirs, ours) in head.tables().into_iter().zip(snapshot.tables()) {
            theirs.swap(ours);
        }
        *snapshot = head;
        return Ok(());
    }
    let (&table, entry) = body.split_first().ok_or("an empty record")?;
    let mut tables = snapshot.tables();
    let table = tables
        .get_mut(usize::from(table))
        .ok_or_else(|| format!("a record of table {table}, which this state has not"))?;
    match kind {
        PUT => table.put(entry),
        DELETE => table.delete(entry),
        CLEAR => {
            table.clear();
            Ok(())
        }
        other => return Err(format!("a record of unknown kind {other}")),
    }
    .map_err(|e| e.to_string())
}
