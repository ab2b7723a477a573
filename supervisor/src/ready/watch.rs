//! The runtime's side of readiness: the fds and the polls that tell when a main
//! process waiting in `spawned` is ready, fed to the pure core as
//! [`Jobs::ready`](crate::lifecycle::Jobs::ready) and friends.
//!
//! | `expect`      | how keel learns it                                              |
//! |---------------|-----------------------------------------------------------------|
//! | `stop`        | `/proc/PID/stat` says `T`, polled every [`POLL_MS`] while awaited: |
//! |               | only a parent can wait for a child's stop, and every job process |
//! |               | is keel-init's child (so that no exit is ever lost), not ours    |
//! | `fork/daemon` | the exits keel-init relays, and the job's cgroup (the runtime)   |
//! | `notify`      | the sd_notify socket ([`super::notify`]), kept in the lifeboat   |
//! | `fd N`        | a socketpair: the main process gets one end at fd N, keel keeps  |
//! |               | the other in the lifeboat and peeks for the newline              |
//! | `listen`      | `/proc/PID/fd` and `/proc/PID/net/*`, polled every [`POLL_MS`]   |
//! | `dbus NAME`   | a connection to the system bus ([`super::dbus`])                 |
//!
//! Exactly once across a crash: what says "ready" is never consumed before the state
//! recording it is saved. The notify datagram and the fd's newline are *peeked*,
//! applied, and consumed (or closed) only in [`Watcher::after_persist`]; a stopped
//! process is continued only by an effect of the core, which runs after the save;
//! the bus and `/proc` are asked again by a new supervisor. So a supervisor killed
//! at any instant is followed by one that sees the same readiness, once.

use super::dbus::{self, Bus, BusEvent};
use super::notify::{self, NotifyAddr, Update};
use super::procfs;
use crate::initlink::InitLink;
use crate::job::{Expect, ProcessKind};
use crate::lifecycle::Jobs;
use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use std::collections::BTreeMap;

/// How often `/proc` is asked while an `expect stop` or `expect listen` is awaited.
pub const POLL_MS: u64 = 10;
/// How long after a failed connection to the system bus keel tries again.
pub const BUS_RETRY_MS: u64 = 500;

/// Epoll tokens of the readiness fds (the runtime routes them here).
pub const TOKEN_NOTIFY: u64 = 8;
pub const TOKEN_BUS: u64 = 9;
/// `expect fd` sockets: this bit plus the main pid (the runtime's other bit
/// tokens are higher bits).
pub const TOKEN_FD_BASE: u64 = 1 << 47;

/// The lifeboat names of readiness fds.
pub const LIFEBOAT_NOTIFY: &str = "notify";
pub fn lifeboat_fd_name(pid: i32) -> String {
    format!("ready:{pid}")
}

pub struct Watcher {
    addr: NotifyAddr,
    notify: Option<OwnedFd>,
    /// A datagram was applied from a peek: consume it once the state is saved.
    notify_applied: bool,
    bus_addr: Option<dbus::Address>,
    bus: Option<Bus>,
    bus_retry_at: u64,
    /// `expect fd N`: keel's end of each waiting main process's socket, by main pid.
    fds: BTreeMap<i32, OwnedFd>,
    /// Sockets whose newline was applied: closed once the state is saved.
    fds_done: Vec<i32>,
}

impl Watcher {
    /// Takes back the readiness fds a previous supervisor left in the lifeboat
    /// (`taken` holds the lifeboat's entries; the ones used here are removed).
    pub fn new(addr: NotifyAddr, taken: &mut Vec<(String, OwnedFd)>) -> Watcher {
        let mut notify = None;
        let mut fds = BTreeMap::new();
        for (name, fd) in std::mem::take(taken) {
            if name == LIFEBOAT_NOTIFY {
                notify = Some(fd);
            } else if let Some(pid) = name.strip_prefix("ready:").and_then(|p| p.parse().ok()) {
                fds.insert(pid, fd);
            } else {
                taken.push((name, fd));
            }
        }
        let bus_addr = dbus::parse_address(
            &std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
                .unwrap_or_else(|_| dbus::DEFAULT_SYSTEM_BUS.to_string()),
        );
        Watcher {
            addr,
            notify,
            notify_applied: false,
            bus_addr,
            bus: None,
            bus_retry_at: 0,
            fds,
            fds_done: Vec::new(),
        }
    }

    /// Binds the notify socket if no lifeboat kept one, deposits it, and puts
    /// every readiness fd in the epoll set.
    pub fn start(&mut self, epoll: &OwnedFd, link: Option<&InitLink>) {
        if self.notify.is_none() {
            match notify::bind(&self.addr) {
                Ok(fd) => {
                    if let Some(link) = link
                        && let Err(e) = link.deposit(LIFEBOAT_NOTIFY, fd.as_fd())
                    {
                        tracing::error!("cannot deposit the notify socket: {e}");
                    }
                    self.notify = Some(fd);
                }
                Err(e) => tracing::warn!(
                    "cannot bind the notify socket {}: {e}; expect notify jobs will not become ready",
                    self.addr.env_value()
                ),
            }
        }
        if let Some(fd) = &self.notify {
            add(epoll, fd, TOKEN_NOTIFY);
        }
        for (pid, fd) in &self.fds {
            add(epoll, fd, TOKEN_FD_BASE + *pid as u64);
        }
    }

    /// `NOTIFY_SOCKET` for `expect notify` jobs.
    pub fn notify_socket(&self) -> String {
        self.addr.env_value()
    }

    /// A readiness socket for an `expect fd` main process about to be spawned:
    /// (the child's end, keel's end).
    pub fn fd_socket() -> std::io::Result<(OwnedFd, OwnedFd)> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
        let (child, ours) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::io::ioctl_fionbio(&ours, true)?;
        // The job only writes; keel only reads.
        let _ = rustix::net::shutdown(&child, rustix::net::Shutdown::Read);
        Ok((child, ours))
    }

    /// Keeps keel's end of main `pid`'s readiness socket: in the lifeboat (before
    /// the state naming `pid` is saved, so a successor finds it) and in epoll.
    pub fn keep_fd(&mut self, pid: i32, ours: OwnedFd, epoll: &OwnedFd, link: Option<&InitLink>) {
        if let Some(link) = link
            && let Err(e) = link.deposit(&lifeboat_fd_name(pid), ours.as_fd())
        {
            tracing::error!("cannot deposit the readiness socket of pid {pid}: {e}");
        }
        add(epoll, &ours, TOKEN_FD_BASE + pid as u64);
        self.fds.insert(pid, ours);
    }

    /// Handles a readiness fd's epoll event; true if the state changed.
    pub fn on_event(&mut self, token: u64, jobs: &mut Jobs, now: u64) -> bool {
        match token {
            TOKEN_NOTIFY => self.read_notify(jobs, now),
            TOKEN_BUS => self.read_bus(jobs, now),
            t if t >> 47 == 1 => self.read_fd((t - TOKEN_FD_BASE) as i32, jobs, now),
            _ => false,
        }
    }

    /// Whether `token` is one of ours.
    pub fn owns(token: u64) -> bool {
        token == TOKEN_NOTIFY || token == TOKEN_BUS || token >> 47 == 1
    }

    fn read_notify(&mut self, jobs: &mut Jobs, now: u64) -> bool {
        if self.notify_applied {
            // Waiting for the save before this one is consumed.
            return false;
        }
        let Some(fd) = &self.notify else { return false };
        let mut changed = false;
        loop {
            let datagram = match notify::peek(fd.as_fd()) {
                Ok(Some(d)) => d,
                Ok(None) => return changed,
                Err(e) => {
                    tracing::warn!("notify socket: {e}");
                    return changed;
                }
            };
            let Some((job, instance)) = notify_sender(jobs, datagram.pid) else {
                tracing::debug!(
                    "notification from pid {} ignored: not of an expect notify job",
                    datagram.pid
                );
                let _ = notify::discard(fd.as_fd());
                continue;
            };
            let mut decisive = false;
            for update in datagram.updates {
                match update {
                    Update::Ready => {
                        let awaited = jobs
                            .awaiting_readiness()
                            .iter()
                            .any(|(j, i, _, _)| *j == job && *i == instance);
                        if awaited {
                            jobs.ready(&job, &instance, None, now);
                            decisive = true;
                        } else {
                            // Done reloading (RELOADING=1 … READY=1).
                            jobs.set_status_text(&job, &instance, None);
                        }
                    }
                    Update::Status(text) => jobs.set_status_text(&job, &instance, Some(text)),
                    Update::Reloading => {
                        jobs.set_status_text(&job, &instance, Some("reloading".into()))
                    }
                    Update::Stopping => {
                        jobs.set_status_text(&job, &instance, Some("stopping".into()))
                    }
                    Update::MainPid(pid) => {
                        if belongs_to(jobs, pid, &job, &instance) {
                            jobs.set_main_pid(&job, &instance, pid);
                            decisive = true;
                        } else {
                            tracing::warn!(
                                "{job}: MAINPID={pid} is not a process of the job; ignored"
                            );
                        }
                    }
                }
            }
            changed = true;
            if decisive {
                // Consumed only once the state that applied it is saved.
                self.notify_applied = true;
                return true;
            }
            let _ = notify::discard(fd.as_fd());
        }
    }

    fn read_fd(&mut self, pid: i32, jobs: &mut Jobs, now: u64) -> bool {
        if self.fds_done.contains(&pid) {
            return false;
        }
        let Some(fd) = self.fds.get(&pid) else {
            return false;
        };
        let mut buf = [0u8; 512];
        let got = rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::PEEK);
        match got {
            Ok((0, _)) => {
                // The job closed its end without a newline: nothing more can come.
                self.fds_done.push(pid);
                false
            }
            Ok((n, _)) if buf[..n].contains(&b'\n') => {
                let owner = jobs.owner_of(pid).cloned();
                if let Some((job, instance, ProcessKind::Main)) = owner {
                    jobs.ready(&job, &instance, None, now);
                }
                self.fds_done.push(pid);
                true
            }
            Ok((n, _)) => {
                // Bytes before the newline say nothing: drop them, wait for more.
                let _ = rustix::net::recv(fd, &mut buf[..n], rustix::net::RecvFlags::empty());
                false
            }
            Err(Errno::AGAIN) | Err(Errno::INTR) => false,
            Err(_) => {
                self.fds_done.push(pid);
                false
            }
        }
    }

    fn read_bus(&mut self, jobs: &mut Jobs, now: u64) -> bool {
        let Some(bus) = self.bus.as_mut() else {
            return false;
        };
        let events = bus.flush().and_then(|()| bus.on_readable());
        match events {
            Ok(events) => {
                let mut changed = false;
                for BusEvent::Owned(name) in events {
                    for (job, instance, expect, _) in jobs.awaiting_readiness() {
                        if expect == Expect::Dbus(name.clone()) {
                            jobs.ready(&job, &instance, None, now);
                            changed = true;
                        }
                    }
                }
                changed
            }
            Err(e) => {
                tracing::info!("system bus connection ended: {e}");
                self.bus = None;
                self.bus_retry_at = now + BUS_RETRY_MS;
                false
            }
        }
    }

    /// What `/proc` and the bus say now about every instance awaiting readiness;
    /// true if the state changed. Called on every round of the event loop.
    pub fn poll(&mut self, jobs: &mut Jobs, epoll: &OwnedFd, now: u64) -> bool {
        let mut changed = false;
        let mut names = Vec::new();
        for (job, instance, expect, pid) in jobs.awaiting_readiness() {
            let ready = match &expect {
                Expect::Stop => procfs::is_stopped(pid),
                Expect::Listen => procfs::listens(pid),
                Expect::Dbus(name) => {
                    names.push(name.clone());
                    false
                }
                _ => false,
            };
            if ready {
                tracing::debug!("{job} ({instance}): main process {pid} is ready ({expect:?})");
                jobs.ready(&job, &instance, None, now);
                changed = true;
            }
        }
        self.keep_bus(&names, epoll, now);
        changed
    }

    /// Connected to the bus exactly while some job waits for a name on it.
    fn keep_bus(&mut self, names: &[String], epoll: &OwnedFd, now: u64) {
        if names.is_empty() {
            if let Some(bus) = self.bus.take() {
                let _ = epoll::delete(epoll, bus.fd());
            }
            return;
        }
        if self.bus.is_none() && now >= self.bus_retry_at {
            let uid = rustix::process::getuid().as_raw();
            match self.bus_addr.as_ref().map(|a| Bus::connect(a, uid)) {
                Some(Ok(bus)) => {
                    let _ = epoll::add(
                        epoll,
                        bus.fd(),
                        epoll::EventData::new_u64(TOKEN_BUS),
                        epoll::EventFlags::IN,
                    );
                    self.bus = Some(bus);
                }
                Some(Err(e)) => {
                    tracing::debug!("system bus not reachable yet: {e}");
                    self.bus_retry_at = now + BUS_RETRY_MS;
                }
                None => {
                    tracing::warn!("DBUS_SYSTEM_BUS_ADDRESS names no unix socket");
                    self.bus_retry_at = u64::MAX;
                }
            }
        }
        if let Some(bus) = self.bus.as_mut() {
            for name in names {
                bus.watch(name);
            }
            if bus.flush().is_err() {
                let _ = epoll::delete(epoll, bus.fd());
                self.bus = None;
                self.bus_retry_at = now + BUS_RETRY_MS;
            }
        }
    }

    /// When the runtime must wake to poll again (absolute monotonic ms).
    pub fn next_wakeup(&self, jobs: &Jobs, now: u64) -> Option<u64> {
        let awaiting = jobs.awaiting_readiness();
        let polls = awaiting
            .iter()
            .any(|(_, _, e, _)| matches!(e, Expect::Stop | Expect::Listen));
        let bus = self.bus.is_none()
            && awaiting
                .iter()
                .any(|(_, _, e, _)| matches!(e, Expect::Dbus(_)));
        let mut at = polls.then_some(now + POLL_MS);
        if bus {
            at = Some(at.map_or(self.bus_retry_at, |a| a.min(self.bus_retry_at.max(now))));
        }
        at
    }

    /// Once the state is saved: consumes what was applied from a peek, and closes
    /// the readiness sockets that are done (or whose process is gone).
    pub fn after_persist(&mut self, jobs: &Jobs, epoll: &OwnedFd, link: Option<&InitLink>) {
        if std::mem::take(&mut self.notify_applied)
            && let Some(fd) = &self.notify
        {
            let _ = notify::discard(fd.as_fd());
        }
        let gone: Vec<i32> = self
            .fds
            .keys()
            .filter(|pid| jobs.owner_of(**pid).is_none())
            .copied()
            .collect();
        for pid in std::mem::take(&mut self.fds_done).into_iter().chain(gone) {
            if let Some(fd) = self.fds.remove(&pid) {
                let _ = epoll::delete(epoll, &fd);
                if let Some(link) = link {
                    let _ = link.withdraw(&lifeboat_fd_name(pid));
                }
            }
        }
    }
}

fn add(epoll: &OwnedFd, fd: &OwnedFd, token: u64) {
    if let Err(e) = epoll::add(
        epoll,
        fd,
        epoll::EventData::new_u64(token),
        epoll::EventFlags::IN,
    ) {
        tracing::error!("cannot watch a readiness fd: {e}");
    }
}

/// The `expect notify` instance a notification from `pid` is about: `pid` is one of
/// its processes, or a descendant of its main process.
fn notify_sender(jobs: &Jobs, pid: i32) -> Option<(String, String)> {
    let mut p = pid;
    // A helper like `systemd-notify` is a child (or grandchild) of the daemon.
    for _ in 0..8 {
        if let Some((job, instance, _)) = jobs.owner_of(p) {
            let expects = jobs
                .instance(job, instance)
                .is_some_and(|i| i.def().expect == Expect::Notify);
            return expects.then(|| (job.clone(), instance.clone()));
        }
        p = procfs::stat(p)?.ppid;
        if p <= 1 {
            return None;
        }
    }
    None
}

/// Whether `pid` is a process of the instance (its main process or a descendant).
fn belongs_to(jobs: &Jobs, pid: i32, job: &str, instance: &str) -> bool {
    notify_sender(jobs, pid).is_some_and(|(j, i)| j == job && i == instance)
}
