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
/// sockets jobs hold. keel-init raises its fd limit to the hard limit at start.
pub const LIFEBOAT_SLOTS: usize = 4096;

/// Exits kept until the supervisor acknowledges them.
pub const EXIT_SLOTS: usize = 4096;

#[derive(Clone, Copy)]
struct Slot {
    /// `FdName::NONE` (invalid) marks a free slot.
    name: FdName,
    fd: i32,
}

pub struct Lifeboat {
    slots: [Slot; LIFEBOAT_SLOTS],
    /// Slots `..used` may be occupied; beyond is free.
    used: usize,
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
        used: 0,
    };

    /// Stores `fd` under `name` (valid), taking ownership.
    pub fn deposit(&mut self, name: FdName, fd: OwnedFd) -> Deposit {
        use rustix::fd::IntoRawFd;
        if let Some(slot) = self.slots[..self.used].iter_mut().find(|s| s.name == name) {
            close_raw(slot.fd);
            slot.fd = fd.into_raw_fd();
            return Deposit::Replaced;
        }
        let free = match self.slots[..self.used]
            .iter()
            .position(|s| !s.name.is_valid())
        {
            Some(i) => i,
            None if self.used < LIFEBOAT_SLOTS => {
                self.used += 1;
                self.used - 1
            }
            None => return Deposit::Full, // `fd` is dropped, so closed
        };
        self.slots[free] = Slot {
            name,
            fd: fd.into_raw_fd(),
        };
        Deposit::Stored
    }

    /// Closes and forgets `name`; false if there was no such entry.
    pub fn withdraw(&mut self, name: FdName) -> bool {
        match self.slots[..self.used].iter_mut().find(|s| s.name == name) {
            Some(slot) => {
                close_raw(slot.fd);
                slot.name = FdName::NONE;
                while self.used > 0 && !self.slots[self.used - 1].name.is_valid() {
                    self.used -= 1;
                }
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.slots[..self.used]
            .iter()
            .filter(|s| s.name.is_valid())
            .count()
    }

    /// The `index`-th occupied entry at or after slot `from`: (slot, name, fd).
    pub fn next_from(&self, from: usize) -> Option<(usize, FdName, BorrowedFd<'_>)> {
        let (i, s) = self.slots[..self.used]
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, s)| s.name.is_valid())?;
        // SAFETY: an occupied slot owns `fd` until withdraw/replace closes it; the
        // borrow cannot outlive `&self`, and the table is not changed meanwhile.
        Some((i, s.name, unsafe { BorrowedFd::borrow_raw(s.fd) }))
    }
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

    /// The oldest kept exit with a seq above `after`.
    pub fn next_after(&self, after: u64) -> Option<Exit> {
        let seq = after.max(self.acked) + 1;
        (seq <= self.pushed).then(|| self.ring[slot(seq)])
    }
}

fn slot(seq: u64) -> usize {
    ((seq - 1) % EXIT_SLOTS as u64) as usize
}
