//! Where the saved state is kept: sealed memfds in keel-init's lifeboat, the state
//! under [`LIFEBOAT_NAME`], the job definitions it names under
//! [`DEFS_LIFEBOAT_NAME`]. The format itself is the core's
//! ([`keel_core::journal`]); this module adds the shell's own part of it
//! ([`Shell`]) and the memfds.
//!
//! The base (a whole snapshot) is written into a fresh sealed memfd and deposited;
//! keel-init swaps the entry in one step and closes the old one. The log
//! ([`LOG_LIFEBOAT_NAME`]) is a memfd without seals that the supervisor appends
//! each round's records to at explicit offsets ([`write_at`]); keel-init holds
//! the same file, so what was written outlives the writer, and a round cut short
//! is never read back (see `keel_core::journal`).

pub use keel_core::journal::{
    Definitions, FORMAT_VERSION, LoadError, SaveError, Writer, decode_definitions, encode,
    encode_definitions,
};
use rustix::fd::{AsFd, OwnedFd};
use serde::{Deserialize, Serialize};
use std::io;

pub const LIFEBOAT_NAME: &str = "state";
/// The lifeboat name of the saved job definitions.
pub const DEFS_LIFEBOAT_NAME: &str = "defs";
/// The lifeboat name of the journal's log (the rounds since the base).
pub const LOG_LIFEBOAT_NAME: &str = "state-log";

/// The saved state read back, and where its log goes on.
pub type Loaded = keel_core::journal::Loaded<Shell>;

/// Everything a new supervisor needs to carry on.
pub type Snapshot = keel_core::journal::Snapshot<Shell>;

/// The shell's own part of the saved state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shell {
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
    /// (added in version 2's life: read as empty from a state without it) The
    /// filesystem events this boot has emitted (`mounted /run`,
    /// `local-filesystems`…), each at most once.
    pub mount_events: std::collections::BTreeSet<String>,
}

impl keel_core::journal::SavedShell for Shell {
    /// Two `None`s.
    const ADDED_IN_2: &'static [u8] = &[0, 0];
    /// `mount_events` empty.
    const ADDED_SINCE_2: &'static [u8] = &[0];

    fn tables(&mut self) -> Vec<&mut dyn keel_core::journal::Table> {
        vec![&mut self.cgroups.instances, &mut self.logs.pipes]
    }
}

/// The state in `bytes`, its definitions taken from `defs`.
pub fn decode(bytes: &[u8], defs: &Definitions) -> Result<Snapshot, LoadError> {
    keel_core::journal::decode(bytes, defs)
}

/// The state saved as `base` and `log`, its definitions taken from `defs`.
pub fn load(base: &[u8], log: Option<&[u8]>, defs: &Definitions) -> Result<Loaded, LoadError> {
    keel_core::journal::load(base, log, defs)
}

/// A memfd for the journal's log, holding `header`: not sealed, for appending.
pub fn log_memfd(header: &[u8]) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("keel-state-log", rustix::fs::MemfdFlags::CLOEXEC)?;
    write_at(&fd, header, 0)?;
    Ok(fd)
}

/// Writes all of `bytes` at `offset` of `fd`.
pub fn write_at(fd: impl AsFd, bytes: &[u8], offset: usize) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        done += rustix::io::pwrite(&fd, &bytes[done..], (offset + done) as u64)?;
    }
    Ok(())
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

    /// The jobs' state with one definition, `a`.
    fn one_job() -> keel_core::lifecycle::Jobs {
        let mut jobs = keel_core::lifecycle::Jobs::default();
        jobs.set_definitions(vec![
            keel_core::job::parse("a", "exec sleep 1\n").def.unwrap(),
        ]);
        jobs
    }

    /// `snap` as version 2 wrote it: no generation after the version.
    fn version_2(snap: &Snapshot) -> Vec<u8> {
        let mut bytes = encode(snap).unwrap();
        bytes.drain(12..20);
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        bytes
    }

    #[test]
    fn round_trip_through_a_memfd() {
        let jobs = one_job();
        let snap = Snapshot {
            jobs,
            last_exit_seq: 42,
            booted: true,
            ..Snapshot::default()
        };
        let defs = snap.jobs.live_definitions();
        let fd = to_memfd(&encode(&snap).unwrap()).unwrap();
        let defs_fd = to_memfd(&encode_definitions(&defs).unwrap()).unwrap();
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
    fn a_version_1_state_loads_with_the_defaults_of_later_fields() {
        let jobs = one_job();
        let snap = Snapshot {
            jobs,
            last_exit_seq: 42,
            ..Snapshot::default()
        };
        let defs = snap.jobs.live_definitions();
        let v2 = version_2(&snap);
        // Version 1 wrote exactly this without the tail version 2 added.
        use keel_core::journal::SavedShell;
        let added = Shell::ADDED_IN_2.len() + Shell::ADDED_SINCE_2.len();
        let mut v1 = v2[..v2.len() - added].to_vec();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(decode(&v1, &defs).unwrap(), snap);
        let mut with_priority = snap.clone();
        with_priority.shell.log_priority = Some("debug".into());
        let loaded = decode(&encode(&with_priority).unwrap(), &defs).unwrap();
        assert_eq!(loaded.shell.log_priority.as_deref(), Some("debug"));
    }

    #[test]
    fn the_filesystem_events_emitted_are_kept_and_an_older_state_has_none() {
        let mut snap = Snapshot::default();
        snap.shell.mount_events = ["mounted /run".to_string(), "filesystem".into()].into();
        let defs = snap.jobs.live_definitions();
        let loaded = decode(&encode(&snap).unwrap(), &defs).unwrap();
        assert_eq!(loaded, snap);
        // A version 2 state written before the field: its bytes without the last.
        snap.shell.mount_events.clear();
        let bytes = version_2(&snap);
        let before = &bytes[..bytes.len() - 1];
        assert_eq!(decode(before, &defs).unwrap(), snap);
    }
}
