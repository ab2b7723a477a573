//! The state journal: the supervisor's whole state as versioned bytes in a memfd
//! that lives in keel-init's lifeboat under the name [`LIFEBOAT_NAME`].
//!
//! Each save writes a complete snapshot into a fresh memfd and deposits it; keel-init
//! swaps the entry in one step and closes the old one. So the lifeboat always holds
//! one whole snapshot — a supervisor killed mid-save leaves the previous one — and
//! no torn write can ever be read back.
//!
//! The jobs' part ([`Jobs`]) holds the lifecycle core's whole state: every
//! instance, the event queue, what each `start on`/`stop on` has matched so far,
//! which events wait for which jobs, the job-environment table and a power action
//! under way.
//!
//! Format: the magic `KEELSTAT`, the format version (u32, little endian), then the
//! postcard encoding of [`Snapshot`]. A loader refuses a version newer than its own
//! with a clear error rather than guessing.

use crate::lifecycle::Jobs;
use rustix::fd::{AsFd, OwnedFd};
use serde::{Deserialize, Serialize};
use std::io;

pub const LIFEBOAT_NAME: &str = "state";
const MAGIC: &[u8; 8] = b"KEELSTAT";

/// The state format this binary writes. Every released version stays loadable:
/// golden files under `supervisor/tests/golden/` are loaded by the tests.
pub const FORMAT_VERSION: u32 = 1;

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

pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // Serialising plain data into a Vec cannot fail.
    postcard::to_io(snapshot, &mut out)
        .map(|_| ())
        .unwrap_or_default();
    out
}

pub fn decode(bytes: &[u8]) -> Result<Snapshot, LoadError> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(LoadError::BadMagic)?;
    let (version, body) = rest.split_at_checked(4).ok_or(LoadError::BadMagic)?;
    let version = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
    if version > FORMAT_VERSION {
        return Err(LoadError::TooNew {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    // Version 1 is the only format so far; older ones are converted here.
    postcard::from_bytes(body).map_err(|e| LoadError::Corrupt {
        version,
        reason: e.to_string(),
    })
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

    #[test]
    fn round_trip_through_a_memfd() {
        let snap = Snapshot {
            last_exit_seq: 42,
            booted: true,
            ..Snapshot::default()
        };
        let fd = to_memfd(&encode(&snap)).unwrap();
        assert_eq!(decode(&read_memfd(&fd).unwrap()).unwrap(), snap);
        // Sealed: the snapshot cannot be altered afterwards.
        assert!(rustix::io::write(&fd, b"x").is_err());
    }

    #[test]
    fn newer_and_broken_states_are_refused_clearly() {
        let mut bytes = encode(&Snapshot::default());
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, LoadError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer than this supervisor"));
        assert!(matches!(decode(b"garbage"), Err(LoadError::BadMagic)));
        let good = encode(&Snapshot::default());
        for cut in 12..good.len() {
            assert!(decode(&good[..cut]).is_err());
        }
    }
}
