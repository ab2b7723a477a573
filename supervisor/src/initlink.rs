//! The supervisor's end of the init channel (see `keel_proto::init`): the handover
//! at start, then exits, signals and lifeboat requests as the loop needs them.
//!
//! Sends are blocking: messages are tiny and keel-init drains its socket on every
//! wake-up, so a send never waits long. Receives are non-blocking (the loop polls).

use keel_proto::init::{
    self as wire, FdName, LifeboatError, MAX_MESSAGE, PowerAction, ToInit, ToSupervisor,
};
use rustix::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::io;
use std::time::{Duration, Instant};

/// The lifeboat's capacity when keel-init does not say (a release before
/// `ToSupervisor::Capacity`, whose table held this many).
const OLD_CAPACITY: usize = 4096;

/// Lifeboat entries a job's deposit may never take: kept for keel's own (the
/// journal's two, the control socket, the confdir watch, the go pipes of rounds).
pub const KEPT_FOR_KEEL: usize = 16;

pub struct InitLink {
    fd: OwnedFd,
    /// The names keel-init holds (as far as this supervisor has asked), so that a
    /// deposit is known to fit before it is sent.
    entries: RefCell<BTreeSet<String>>,
    capacity: Cell<usize>,
    /// The channel version keel-init spoke in its `Welcome`.
    version: Cell<u32>,
}

/// What keel-init handed over to this supervisor.
pub struct Handover {
    pub generation: u32,
    pub quick_deaths: u32,
    pub lost_exits: u64,
    pub fds: Vec<(String, OwnedFd)>,
    /// Exits not yet acknowledged: (seq, pid, raw wait status).
    pub exits: Vec<(u64, i32, i32)>,
}

/// One message from keel-init after the handover.
pub enum Incoming {
    Exit { seq: u64, pid: i32, status: i32 },
    Signal(i32),
    Refused(String),
}

impl InitLink {
    /// The channel keel-init left at `KEEL_INIT_FD`, if the supervisor runs under it.
    /// The variable is removed so that nothing the supervisor starts inherits it.
    pub fn from_env() -> Option<InitLink> {
        let raw: i32 = std::env::var(wire::SUPERVISOR_FD_ENV).ok()?.parse().ok()?;
        // SAFETY: removing an environment variable is unsound only with other
        // threads reading the environment; the supervisor has one thread.
        unsafe { std::env::remove_var(wire::SUPERVISOR_FD_ENV) };
        // SAFETY: keel-init opened this fd for us alone; we take ownership of it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        rustix::net::sockopt::socket_type(&fd).ok()?;
        // Jobs must never inherit it; re-exec clears this flag on purpose.
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).ok()?;
        Some(InitLink {
            fd,
            entries: RefCell::new(BTreeSet::new()),
            capacity: Cell::new(OLD_CAPACITY),
            version: Cell::new(1),
        })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Says hello and reads the whole handover (bounded by a deadline: keel-init
    /// answers at once unless it is gone).
    pub fn handover(&self) -> io::Result<Handover> {
        self.send(
            &ToInit::Hello {
                version: wire::VERSION,
            },
            None,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Handover {
            generation: 0,
            quick_deaths: 0,
            lost_exits: 0,
            fds: Vec::new(),
            exits: Vec::new(),
        };
        let mut welcomed = false;
        let mut capacity = OLD_CAPACITY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "keel-init did not hand over",
                ));
            }
            let mut pfd = [rustix::event::PollFd::new(
                &self.fd,
                rustix::event::PollFlags::IN,
            )];
            let ts = rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as i64,
            };
            match rustix::event::poll(&mut pfd, Some(&ts)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            let Some((msg, fd)) = self.recv_raw()? else {
                continue;
            };
            match msg {
                ToSupervisor::Welcome {
                    version,
                    generation,
                    quick_deaths,
                    lost_exits,
                    ..
                } => {
                    welcomed = true;
                    self.version.set(version);
                    out.generation = generation;
                    out.quick_deaths = quick_deaths;
                    out.lost_exits = lost_exits;
                }
                ToSupervisor::Lifeboat { name } if welcomed => {
                    if let (Some(name), Some(fd)) = (name.as_str(), fd) {
                        out.fds.push((name.to_string(), fd));
                    }
                }
                ToSupervisor::Exit { seq, pid, status } => out.exits.push((seq, pid, status)),
                ToSupervisor::Capacity { lifeboat } if welcomed => {
                    capacity = lifeboat as usize;
                }
                ToSupervisor::HandoverEnd if welcomed => {
                    self.capacity.set(capacity);
                    *self.entries.borrow_mut() =
                        out.fds.iter().map(|(name, _)| name.clone()).collect();
                    return Ok(out);
                }
                // Anything else before the end belongs to an earlier conversation.
                _ => {}
            }
        }
    }

    /// The next message, if one is waiting.
    pub fn recv(&self) -> io::Result<Option<Incoming>> {
        loop {
            let Some((msg, _fd)) = self.recv_raw()? else {
                return Ok(None);
            };
            return Ok(Some(match msg {
                ToSupervisor::Exit { seq, pid, status } => Incoming::Exit { seq, pid, status },
                ToSupervisor::Signal { signo } => Incoming::Signal(i32::from(signo)),
                ToSupervisor::LifeboatRefused { name, error } => {
                    if let (Some(name), LifeboatError::Full | LifeboatError::NoFd) =
                        (name.as_str(), error)
                    {
                        self.entries.borrow_mut().remove(name);
                    }
                    Incoming::Refused(format!("{name:?}: {error:?}"))
                }
                _ => continue,
            }));
        }
    }

    fn recv_raw(&self) -> io::Result<Option<(ToSupervisor, Option<OwnedFd>)>> {
        let mut buf = [0u8; MAX_MESSAGE];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let got = rustix::net::recvmsg(
            &self.fd,
            &mut iov,
            &mut control,
            RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
        );
        let msg = match got {
            Ok(m) => m,
            Err(Errno::AGAIN) | Err(Errno::INTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if msg.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "keel-init closed the channel",
            ));
        }
        let mut fd = None;
        for cmsg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = cmsg {
                fd = fd.or(fds.next());
            }
        }
        match wire::decode::<ToSupervisor>(&buf[..msg.bytes.min(MAX_MESSAGE)]) {
            Some(m) => Ok(Some((m, fd))),
            None => {
                tracing::warn!("dropped a malformed message from keel-init");
                Ok(None)
            }
        }
    }

    fn send(&self, msg: &ToInit, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut buf = [0u8; MAX_MESSAGE];
        let bytes =
            wire::encode(msg, &mut buf).ok_or_else(|| io::Error::other("message does not fit"))?;
        let iov = [io::IoSlice::new(bytes)];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds;
        if let Some(fd) = fd {
            fds = [fd];
            control.push(SendAncillaryMessage::ScmRights(&fds));
        }
        loop {
            match rustix::net::sendmsg(&self.fd, &iov, &mut control, SendFlags::NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Keeps `fd` in the lifeboat under `name` (replacing an entry of that name).
    pub fn deposit(&self, name: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        let wire_name = FdName::new(name).ok_or_else(|| io::Error::other("bad lifeboat name"))?;
        self.send(&ToInit::Deposit { name: wire_name }, Some(fd))?;
        self.entries.borrow_mut().insert(name.to_string());
        Ok(())
    }

    /// Like `deposit`, for an fd a job's start needs (its log pipe): refused here,
    /// before anything is sent, unless [`KEPT_FOR_KEEL`] entries stay free, so that
    /// the start fails with this error rather than keel-init refusing the fd after
    /// the job runs (and the job losing it with the next supervisor).
    pub fn deposit_for_job(&self, name: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        let held = self.entries.borrow().len();
        let capacity = self.capacity.get();
        if !self.entries.borrow().contains(name) && held + KEPT_FOR_KEEL >= capacity {
            return Err(io::Error::other(format!(
                "keel-init's lifeboat is full: it holds {held} of the {capacity} fds its fd \
                 limit allows ({KEPT_FOR_KEEL} kept for keel itself)"
            )));
        }
        self.deposit(name, fd)
    }

    pub fn withdraw(&self, name: &str) -> io::Result<()> {
        let wire_name = FdName::new(name).ok_or_else(|| io::Error::other("bad lifeboat name"))?;
        self.send(&ToInit::Withdraw { name: wire_name }, None)?;
        self.entries.borrow_mut().remove(name);
        Ok(())
    }

    pub fn ack(&self, seq: u64) -> io::Result<()> {
        self.send(&ToInit::Ack { seq }, None)
    }

    /// Whether keel-init signals job processes for this supervisor
    /// ([`InitLink::kill`]): since channel version 2.
    pub fn kills(&self) -> bool {
        self.version.get() >= 2
    }

    /// Has keel-init send `signo` to job process `pid` (its group if `group`, then
    /// SIGCONT if `cont`) unless it has reaped `pid` already (`ToInit::Kill`).
    pub fn kill(&self, pid: i32, signo: u8, group: bool, cont: bool) -> io::Result<()> {
        self.send(
            &ToInit::Kill {
                pid,
                signo,
                group,
                cont,
            },
            None,
        )
    }

    pub fn power(&self, action: PowerAction) -> io::Result<()> {
        self.send(&ToInit::Power { action }, None)
    }

    /// Lets the channel survive an execve of the supervisor (live upgrade).
    pub fn keep_across_exec(&self) -> io::Result<()> {
        rustix::io::fcntl_setfd(&self.fd, rustix::io::FdFlags::empty())?;
        Ok(())
    }
}
