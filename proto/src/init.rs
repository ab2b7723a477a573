//! The init channel: keel-init ⇄ keel-supervisor.
//!
//! One `SOCK_SEQPACKET` socketpair made by keel-init; the supervisor's end is open at
//! fd [`SUPERVISOR_FD`] and named in the environment variable [`SUPERVISOR_FD_ENV`].
//! Every packet is one postcard-encoded message of at most [`MAX_MESSAGE`] bytes; a
//! packet may carry one file descriptor (`SCM_RIGHTS`) where the message says so.
//!
//! The conversation:
//! 1. The supervisor sends [`ToInit::Hello`] when it starts (and again after it
//!    re-executed itself).
//! 2. keel-init answers with the handover: [`ToSupervisor::Welcome`],
//!    [`ToSupervisor::Capacity`], one
//!    [`ToSupervisor::Lifeboat`] per stored fd (the fd attached), then every exit the
//!    supervisor has not acknowledged ([`ToSupervisor::Exit`]), then
//!    [`ToSupervisor::HandoverEnd`]. Relayed signals that arrived while no supervisor
//!    listened follow.
//! 3. From then on keel-init relays each reaped exit and each signal as it happens; the
//!    supervisor deposits or withdraws lifeboat fds, acknowledges exits once it has
//!    persisted their effect, and finally asks for the power action.
//!
//! Exits carry a sequence number that grows by one per reaped child for the life of
//! keel-init; [`ToInit::Ack`] acknowledges every exit up to and including its `seq`.
//! keel-init keeps a bounded log of unacknowledged exits and reaps a child only
//! while that log has room, so the supervisor's acks are what let it reap more: a
//! supervisor must acknowledge every exit it is sent (once applied and persisted),
//! including those of processes it does not know.

use serde::{Deserialize, Serialize};

/// The version of this channel. keel-init and the supervisor ship together, but a
/// live-upgraded supervisor may be newer than the running keel-init: it reads the
/// version in [`ToSupervisor::Welcome`] and sends only what that keel-init knows.
/// Version 2 added [`ToInit::Kill`].
pub const VERSION: u32 = 2;

/// The fd at which the supervisor finds its end of the init channel.
pub const SUPERVISOR_FD: i32 = 3;

/// Set to the fd number (as text) in the supervisor's environment by keel-init. Its
/// absence means the supervisor runs on its own, without keel-init.
pub const SUPERVISOR_FD_ENV: &str = "KEEL_INIT_FD";

/// The largest encoded message, in bytes (with room to spare).
pub const MAX_MESSAGE: usize = 128;

/// The longest lifeboat entry name, in bytes.
pub const NAME_MAX: usize = 31;

/// The name of a lifeboat entry: up to [`NAME_MAX`] bytes of printable ASCII without
/// spaces, such as `control`, `journal` or `log:net/apache`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdName {
    len: u8,
    bytes: [u8; NAME_MAX],
}

impl FdName {
    /// The placeholder of an unused slot in a fixed table: all zeros, never valid.
    pub const NONE: FdName = FdName {
        len: 0,
        bytes: [0; NAME_MAX],
    };

    /// `None` if `name` is empty, too long, or not printable ASCII without spaces.
    pub fn new(name: &str) -> Option<FdName> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() > NAME_MAX || !b.iter().all(|c| c.is_ascii_graphic()) {
            return None;
        }
        let mut bytes = [0u8; NAME_MAX];
        bytes[..b.len()].copy_from_slice(b);
        Some(FdName {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The name, or `None` for one that arrived malformed off the wire.
    pub fn as_str(&self) -> Option<&str> {
        let b = self.bytes.get(..usize::from(self.len))?;
        if b.is_empty() || !b.iter().all(|c| c.is_ascii_graphic()) {
            return None;
        }
        core::str::from_utf8(b).ok()
    }

    /// Whether this name's bytes are well formed (as [`FdName::new`] would make them).
    pub fn is_valid(&self) -> bool {
        self.as_str().is_some()
    }
}

impl core::fmt::Debug for FdName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.as_str() {
            Some(s) => write!(f, "{s:?}"),
            None => f.write_str("<malformed>"),
        }
    }
}

/// What the supervisor may ask keel-init to do to the machine at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerAction {
    PowerOff,
    Reboot,
    Halt,
}

/// Why keel-init refused a lifeboat request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifeboatError {
    /// The table is full; the fd was closed.
    Full,
    /// A deposit arrived without its fd.
    NoFd,
    /// A withdraw named an entry that does not exist.
    NotFound,
    /// The name is malformed.
    BadName,
}

/// keel-init → supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToSupervisor {
    /// The start of a handover, in answer to [`ToInit::Hello`].
    Welcome {
        version: u32,
        /// How many supervisors keel-init started before this one (0: the first).
        generation: u32,
        /// How many supervisors died in a row, each soon after it started. A new
        /// supervisor that sees a high count suspects its saved state (a poison state).
        quick_deaths: u32,
        /// Exits reaped and dropped because the exit log was full. Always 0 since
        /// keel-init reaps no faster than its log records (the kernel keeps the
        /// rest); kept so that either side may be the older release.
        lost_exits: u64,
        /// How many `Lifeboat` messages follow.
        lifeboat_entries: u32,
    },
    /// One lifeboat entry; the packet carries its fd.
    Lifeboat { name: FdName },
    /// The end of the handover.
    HandoverEnd,
    /// A child of keel-init ended. `status` is the raw wait status.
    Exit { seq: u64, pid: i32, status: i32 },
    /// A signal keel-init received that the supervisor acts on.
    Signal { signo: u8 },
    /// A deposit or withdraw failed.
    LifeboatRefused { name: FdName, error: LifeboatError },
    /// How many entries the lifeboat accepts in all (keel-init's fd limit allows
    /// no more), sent right after `Welcome`. A supervisor deposits a job's fd only
    /// while there is room, and fails that start otherwise, so keel-init never
    /// refuses a deposit a running job depends on. A keel-init older than this
    /// message held 4,096. Last of the variants, so older ones keep their numbers.
    Capacity { lifeboat: u32 },
}

/// supervisor → keel-init.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToInit {
    /// Start (or restart, after a re-exec) the conversation: keel-init answers with
    /// the whole handover.
    Hello { version: u32 },
    /// Keep the attached fd under `name`, replacing (and closing) any entry of that name.
    Deposit { name: FdName },
    /// Close and forget the entry `name`.
    Withdraw { name: FdName },
    /// Every exit up to and including `seq` has been persisted: forget them.
    Ack { seq: u64 },
    /// Sync, then power off, reboot or halt.
    Power { action: PowerAction },
    /// Send signal `signo` to job process `pid` — to the process group it leads if
    /// `group` (the process alone if it leads none), followed by SIGCONT if `cont` —
    /// unless keel-init has already reaped `pid` (its exit not yet acknowledged).
    /// keel-init is the one reaper of its children, so a pid it has not reaped
    /// still names the process the supervisor means, or its zombie: no job process
    /// needs a pidfd held for its whole life. Never pid 0, 1 or the supervisor.
    /// Since version 2; last of the variants, so older ones keep their numbers.
    Kill {
        pid: i32,
        signo: u8,
        group: bool,
        cont: bool,
    },
}

/// Encodes `msg` into `buf`, returning the used part.
pub fn encode<'a, T: Serialize>(msg: &T, buf: &'a mut [u8]) -> Option<&'a mut [u8]> {
    postcard::to_slice(msg, buf).ok()
}

/// Decodes one whole packet; trailing bytes make it malformed.
pub fn decode<'a, T: Deserialize<'a>>(packet: &'a [u8]) -> Option<T> {
    match postcard::take_from_bytes(packet) {
        Ok((msg, [])) => Some(msg),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(msg: T)
    where
        T: Serialize + for<'a> Deserialize<'a> + PartialEq + core::fmt::Debug,
    {
        let mut buf = [0u8; MAX_MESSAGE];
        let len = encode(&msg, &mut buf).expect("fits").len();
        assert_eq!(decode::<T>(&buf[..len]), Some(msg));
        for cut in 0..len {
            assert_eq!(decode::<T>(&buf[..cut]), None, "truncated at {cut}");
        }
        let mut longer = [0u8; MAX_MESSAGE + 1];
        longer[..len].copy_from_slice(&buf[..len]);
        assert_eq!(decode::<T>(&longer[..len + 1]), None, "trailing byte");
    }

    #[test]
    fn every_message_round_trips_and_fits() {
        let name = FdName::new("log:net/apache-instance-01").unwrap();
        round_trip(ToSupervisor::Welcome {
            version: VERSION,
            generation: u32::MAX,
            quick_deaths: 3,
            lost_exits: u64::MAX,
            lifeboat_entries: 4096,
        });
        round_trip(ToSupervisor::Lifeboat { name });
        round_trip(ToSupervisor::Capacity { lifeboat: u32::MAX });
        round_trip(ToSupervisor::HandoverEnd);
        round_trip(ToSupervisor::Exit {
            seq: u64::MAX,
            pid: i32::MAX,
            status: i32::MIN,
        });
        round_trip(ToSupervisor::Signal { signo: 30 });
        round_trip(ToSupervisor::LifeboatRefused {
            name,
            error: LifeboatError::Full,
        });
        round_trip(ToInit::Hello { version: VERSION });
        round_trip(ToInit::Deposit { name });
        round_trip(ToInit::Withdraw { name });
        round_trip(ToInit::Ack { seq: 1 << 40 });
        round_trip(ToInit::Power {
            action: PowerAction::Reboot,
        });
        round_trip(ToInit::Kill {
            pid: i32::MAX,
            signo: 64,
            group: true,
            cont: false,
        });
    }

    #[test]
    fn names_are_validated() {
        assert!(FdName::new("").is_none());
        assert!(FdName::new("has space").is_none());
        assert!(FdName::new(&"x".repeat(NAME_MAX + 1)).is_none());
        assert_eq!(FdName::new("journal").unwrap().as_str(), Some("journal"));
        // A name whose length byte lies is malformed, not a panic.
        let mut buf = [0u8; MAX_MESSAGE];
        let len = encode(
            &ToInit::Withdraw {
                name: FdName::new("a").unwrap(),
            },
            &mut buf,
        )
        .unwrap()
        .len();
        buf[1] = 200;
        if let Some(ToInit::Withdraw { name }) = decode::<ToInit>(&buf[..len]) {
            assert!(!name.is_valid());
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_u32;
        let mut buf = [0u8; 64];
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let len = (state % 64) as usize;
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *b = state as u8;
            }
            let _ = decode::<ToInit>(&buf[..len]);
            let _ = decode::<ToSupervisor>(&buf[..len]);
        }
    }
}
