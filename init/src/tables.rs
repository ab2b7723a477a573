//! keel-init's two fixed-size tables: the lifeboat (named fds) and the exit log.
//!
//! Both live in `.bss`: all-zero is their empty state, so the kernel maps them lazily
//! and an unused slot costs no resident memory. Their answers when full are defined:
//! a deposit into a full lifeboat is refused (the fd is closed, the supervisor told);
//! the exit log is never pushed into when full, because keel-init reaps no faster than
//! it can record (see `Init::reap`): an exit not yet in the log is still the kernel's,
//! kept with its zombie until the supervisor's acknowledgements make room.

use keel_proto::init::FdName;
use rustix::fd::{BorrowedFd, FromRawFd, OwnedFd};

/// Lifeboat slots: the control socket, the journal, one log pipe per job and the
/// sockets jobs hold. A power of two (the table is hashed). So many that keel-init's
/// fd limit, not the table, is what bounds the lifeboat: see [`Lifeboat::capacity`].
pub const LIFEBOAT_SLOTS: usize = 1 << 16;

/// Exits kept until the supervisor acknowledges them.
pub const EXIT_SLOTS: usize = 4096;

/// fds keel-init keeps for itself beyond the lifeboat's: the console, the signalfd,
/// the supervisor channels (old and new across a restart) and the one fd a message
/// in flight may carry.
pub const OWN_FDS: u64 = 16;

#[derive(Clone, Copy)]
struct Slot {
    /// `FdName::NONE` (invalid) marks a free slot.
    name: FdName,
    fd: i32,
}

/// An open-addressing hash table (linear probing, deletion by backward shift, so no
/// tombstones), so a deposit or withdraw costs the same with 10 entries or 10,000.
pub struct Lifeboat {
    slots: [Slot; LIFEBOAT_SLOTS],
    len: usize,
    /// The most entries accepted: see [`Lifeboat::capacity`]. Zero (nothing
    /// accepted) until keel-init sets it from its fd limit, first thing at start:
    /// [`Lifeboat::EMPTY`] must be all zeros, so that the table (65,536 slots) is
    /// in .bss, not 2.3 MB of the binary's .data.
    capacity: usize,
}

pub enum Deposit {
    Stored,
    /// The previous fd of that name was replaced (and closed).
    Replaced,
    Full,
}

impl Lifeboat {
    pub const EMPTY: Lifeboat = Lifeboat {
        slots: [Slot {
            name: FdName::NONE,
            fd: 0,
        }; LIFEBOAT_SLOTS],
        len: 0,
        capacity: 0,
    };

    /// Sets how many entries the lifeboat accepts: every fd keel-init may hold
    /// (`nofile`, its RLIMIT_NOFILE) but [`OWN_FDS`], at most `max` (a smaller
    /// figure asked for on the command line), and at most half the table (so a
    /// probe stays short). The supervisor is told this figure in the handover and
    /// refuses a start whose deposit would not fit, before the start, rather than
    /// have keel-init refuse it after the fact.
    pub fn set_capacity(&mut self, nofile: u64, max: Option<u64>) {
        let by_fds = nofile.saturating_sub(OWN_FDS);
        let cap = by_fds
            .min(max.unwrap_or(u64::MAX))
            .min((LIFEBOAT_SLOTS / 2) as u64);
        self.capacity = cap as usize;
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The slot holding `name`, or the free slot where it would go.
    fn find(&self, name: &FdName) -> usize {
        let mut i = hash(name) & (LIFEBOAT_SLOTS - 1);
        // Terminates: at most half the slots are ever occupied.
        while self.slots[i].name.is_valid() && self.slots[i].name != *name {
            i = (i + 1) & (LIFEBOAT_SLOTS - 1);
        }
        i
    }

    /// Stores `fd` under `name` (valid), taking ownership.
    pub fn deposit(&mut self, name: FdName, fd: OwnedFd) -> Deposit {
        use rustix::fd::IntoRawFd;
        let i = self.find(&name);
        let slot = &mut self.slots[i];
        if slot.name.is_valid() {
            close_raw(slot.fd);
            slot.fd = fd.into_raw_fd();
            return Deposit::Replaced;
        }
        if self.len >= self.capacity {
            return Deposit::Full; // `fd` is dropped, so closed
        }
        *slot = Slot {
            name,
            fd: fd.into_raw_fd(),
        };
        self.len += 1;
        Deposit::Stored
    }

    /// Closes and forgets `name`; false if there was no such entry.
    pub fn withdraw(&mut self, name: FdName) -> bool {
        let mut hole = self.find(&name);
        if !self.slots[hole].name.is_valid() {
            return false;
        }
        close_raw(self.slots[hole].fd);
        self.slots[hole].name = FdName::NONE;
        self.len -= 1;
        // Backward shift: move up every later entry of the run whose home slot
        // does not lie (cyclically) after the hole, so lookups need no tombstones.
        let mask = LIFEBOAT_SLOTS - 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            if !self.slots[j].name.is_valid() {
                return true;
            }
            let home = hash(&self.slots[j].name) & mask;
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j];
                self.slots[j].name = FdName::NONE;
                hole = j;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The first occupied entry at or after slot `from`: (slot, name, fd).
    pub fn next_from(&self, from: usize) -> Option<(usize, FdName, BorrowedFd<'_>)> {
        let (i, s) = self
            .slots
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, s)| s.name.is_valid())?;
        // SAFETY: an occupied slot owns `fd` until withdraw/replace closes it; the
        // borrow cannot outlive `&self`, and the table is not changed meanwhile.
        Some((i, s.name, unsafe { BorrowedFd::borrow_raw(s.fd) }))
    }
}

/// FNV-1a over the name's bytes.
fn hash(name: &FdName) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_str().unwrap_or("").as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h as usize
}

fn close_raw(fd: i32) {
    // SAFETY: only called on an fd this table owns, which is forgotten right after.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

#[derive(Clone, Copy)]
pub struct Exit {
    pub seq: u64,
    pub pid: i32,
    pub status: i32,
}

/// A ring of exits not yet acknowledged, oldest first. Sequence numbers start at 1
/// and are consecutive, so the ring needs no search: exit `seq` sits at slot
/// `(seq - 1) % EXIT_SLOTS`.
pub struct ExitLog {
    ring: [Exit; EXIT_SLOTS],
    /// The highest seq forgotten (acknowledged); the log holds `acked + 1 ..= pushed`.
    acked: u64,
    /// The highest seq given out.
    pushed: u64,
}

impl ExitLog {
    pub const EMPTY: ExitLog = ExitLog {
        ring: [Exit {
            seq: 0,
            pid: 0,
            status: 0,
        }; EXIT_SLOTS],
        acked: 0,
        pushed: 0,
    };

    /// Whether every slot holds an exit not yet acknowledged.
    pub fn is_full(&self) -> bool {
        self.pushed - self.acked >= EXIT_SLOTS as u64
    }

    /// Appends an exit. The caller checks `is_full` before it reaps, so a full log
    /// refuses (false) only what it was never meant to be given; nothing is counted
    /// or dropped here.
    pub fn push(&mut self, pid: i32, status: i32) -> bool {
        if self.is_full() {
            return false;
        }
        self.pushed += 1;
        let seq = self.pushed;
        self.ring[slot(seq)] = Exit { seq, pid, status };
        true
    }

    /// Forgets every exit up to and including `seq`.
    pub fn ack(&mut self, seq: u64) {
        self.acked = self.acked.max(seq.min(self.pushed));
    }

    /// Whether `pid`'s exit is in the log: reaped, and not yet acknowledged.
    pub fn holds(&self, pid: i32) -> bool {
        (self.acked + 1..=self.pushed).any(|seq| self.ring[slot(seq)].pid == pid)
    }

    /// The oldest kept exit with a seq above `after`.
    pub fn next_after(&self, after: u64) -> Option<Exit> {
        let seq = after.max(self.acked) + 1;
        (seq <= self.pushed).then(|| self.ring[slot(seq)])
    }
}

fn slot(seq: u64) -> usize {
    ((seq - 1) % EXIT_SLOTS as u64) as usize
}
