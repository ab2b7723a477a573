//! The control socket: accepting initctl connections, framing, the handshake,
//! authorisation, deadlines, and the limits that keep any client from costing more
//! than its share. It decodes requests and queues answers; what a request means is
//! the runtime's business.
//!
//! Two layers:
//! - [`Session`]: one client's protocol without its socket — bytes in, requests and
//!   answer bytes out. Pure (it is told the time), so it is tested and fuzzed
//!   without sockets.
//! - [`Control`]: the listening socket and every connection's fd, non-blocking,
//!   served from the supervisor's one event loop.
//!
//! What a client can and cannot do to the others:
//! - A connection reads one request at a time: while its request is carried out,
//!   or while an answer is still unsent, nothing more is read from it (its bytes
//!   wait in the kernel, and a client that keeps writing blocks in its own write).
//! - Every buffer is bounded: a request frame by [`MAX_REQUEST`], the hello by 64
//!   bytes, the unsent answers of all connections together by [`MAX_QUEUED`].
//! - Deadlines ([`DEADLINE`]): the hello, and every frame once begun, must arrive
//!   whole in time; an answer must be read in time. A late client is dropped. A
//!   request being carried out (a `start` waiting for its job) has no deadline.
//! - At most [`MAX_CONNECTIONS`]; when they are all taken, or the supervisor is out
//!   of file descriptors, a newcomer evicts the connection idle the longest —
//!   first those that never sent a byte — so idle connections never lock anyone
//!   out. A connection with a request in flight or an answer unsent is not
//!   evicted by an unprivileged newcomer.
//! - Fairness between users ([`admission`]): root and the supervisor's own uid
//!   always get through. An eighth of the slots ([`RESERVED_SHARE`]) is theirs
//!   alone; when every slot is taken, a privileged newcomer evicts an idle
//!   connection, else the heaviest connection of the unprivileged uid holding the
//!   most — whatever it has unsent. One unprivileged uid holds at most
//!   1/[`UID_SHARE`] of the other slots and of [`MAX_QUEUED`]; an unprivileged
//!   newcomer only ever displaces an idle connection of an unprivileged uid.
//!
//! A planned re-exec hands every connection to the new image ([`Control::hand_over`],
//! [`Control::take_over`]): its fd stays open across the exec (the only fds
//! without close-on-exec then), and what the session had read and not yet taken,
//! or queued and not yet sent, goes with it in the saved state. A request in
//! flight stays in flight: the core keeps its waiter, and the new image answers
//! it under the same connection id.
//!
//! Authorisation comes from `SO_PEERCRED` at accept, never from what a client
//! sends: root or the supervisor's own uid may change things, anyone may query
//! ([`Request::is_query`]); any other request is answered "Permission denied" and
//! changes nothing (it never reaches the runtime).

use crate::answer::{self, Failure};
use keel_proto::ctl::{self, ClientHello, Request, Response, ServerHello};
use keel_proto::frame;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest request frame accepted (answers may be larger).
pub const MAX_REQUEST: usize = 64 * 1024;
/// The largest hello accepted: the hello's shape is frozen and tiny.
const MAX_HELLO: usize = 64;
/// Connections open at once, at most — and never more than half the supervisor's
/// file descriptor limit, so that clients cannot take the fds jobs are spawned with.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send a whole frame (its hello: from connecting),
/// or to read an answer.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Unsent answer bytes of all connections together, at most: an answer that
/// would go beyond is replaced by a short error.
pub const MAX_QUEUED: usize = 32 << 20;
/// 1/RESERVED_SHARE of the connections are for root and the supervisor's own uid
/// alone.
pub const RESERVED_SHARE: usize = 8;
/// One unprivileged uid holds at most 1/UID_SHARE of the connections open to
/// unprivileged users, and of [`MAX_QUEUED`].
pub const UID_SHARE: usize = 8;
/// An answer this short is always queued (errors, the status of a job).
const SMALL_ANSWER: usize = 4096;
/// Bytes read from a socket at once.
const CHUNK: usize = 4096;
/// A buffer that grew beyond this is released once empty.
const KEEP_CAPACITY: usize = 8192;

pub type ConnId = u64;

/// The connections a planned re-exec hands to the new image. Only that image
/// takes them: the same process (`pid`) of the same keel-init generation — any
/// other supervisor (one keel-init started after a crash) finds other fds, or
/// none, at those numbers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Handover {
    pub pid: u32,
    pub generation: u32,
    pub next_id: ConnId,
    pub conns: Vec<SavedConn>,
}

/// One connection across an exec: its fd number and its session's buffers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedConn {
    pub id: ConnId,
    pub fd: i32,
    pub greeted: bool,
    pub busy: bool,
    pub closing: bool,
    /// Bytes read and not yet taken (the start of the next request).
    pub unread: Vec<u8>,
    /// Answer bytes not yet sent.
    pub unsent: Vec<u8>,
}

/// One client's side of the protocol, without its socket.
pub struct Session {
    /// The peer's uid (`SO_PEERCRED`).
    uid: u32,
    /// Root or the supervisor's own uid: may change things.
    privileged: bool,
    own_uid: u32,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    greeted: bool,
    /// A request is being carried out; no other is read meanwhile.
    busy: bool,
    /// No more requests: close once the answer in flight is sent.
    closing: bool,
    /// Since when the client owes us bytes: from connecting (the hello), or from
    /// the first byte of an unfinished frame.
    read_since: Instant,
    /// Since when the oldest unsent answer byte waits.
    write_since: Instant,
    /// Whether the client ever sent a byte.
    spoke: bool,
    last_active: Instant,
}

impl Session {
    pub fn new(uid: u32, own_uid: u32, now: Instant) -> Session {
        Session {
            uid,
            privileged: uid == 0 || uid == own_uid,
            own_uid,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            greeted: false,
            busy: false,
            closing: false,
            read_since: now,
            write_since: now,
            spoke: false,
            last_active: now,
        }
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Root or the supervisor's own uid.
    pub fn privileged(&self) -> bool {
        self.privileged
    }

    /// Bytes the client sent.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) {
        if bytes.is_empty() {
            return;
        }
        if self.rbuf.is_empty() && self.greeted && !self.busy {
            self.read_since = now;
        }
        self.rbuf.extend_from_slice(bytes);
        self.spoke = true;
        self.last_active = now;
    }

    /// The client closed its side: it sends nothing more.
    pub fn end_of_input(&mut self) {
        self.closing = true;
        self.rbuf.clear();
    }

    /// Whether more bytes should be read from the client now: not while a request
    /// is carried out or an answer is unsent (so a client is read no faster than
    /// it reads), nor once it is closing.
    pub fn wants_input(&self) -> bool {
        !self.busy && !self.closing && self.wbuf.is_empty()
    }

    /// The next request, if a whole one is buffered and may be taken now. The
    /// hello, protocol errors and refusals are answered here (queued as output)
    /// and never reach the caller. Takes nothing while output is unsent.
    pub fn take_request(&mut self, now: Instant) -> Option<Request> {
        while self.wants_input() {
            let limit = if self.greeted { MAX_REQUEST } else { MAX_HELLO };
            let (range, used) = match frame::split(&self.rbuf, limit) {
                Ok(Some(found)) => found,
                Ok(None) => return None,
                Err(e) => {
                    self.fail(e.into(), now);
                    return None;
                }
            };
            let body = &self.rbuf[range];
            if !self.greeted {
                let hello: Result<ClientHello, _> = frame::decode(body);
                self.consume(used, now);
                self.greet(hello.ok(), now);
                continue;
            }
            let request: Result<Request, _> = frame::decode(body);
            self.consume(used, now);
            let request = match request {
                Ok(r) => r,
                Err(e) => {
                    self.fail(e.into(), now);
                    return None;
                }
            };
            if !request.is_query() && !self.privileged {
                let denied = Failure::Denied {
                    own_uid: self.own_uid,
                };
                self.queue(&answer::failed(denied), now);
                continue;
            }
            self.busy = true;
            return Some(request);
        }
        None
    }

    /// Queues the answer to the request being carried out; `room` is how many
    /// answer bytes may still be queued (see [`MAX_QUEUED`]).
    pub fn answer(&mut self, response: &Response, room: usize, now: Instant) {
        let bytes = match frame::encode(response) {
            Ok(b) if b.len() <= SMALL_ANSWER || b.len() <= room => b,
            Ok(_) => error_frame(Failure::Congested),
            Err(_) => error_frame(Failure::TooLarge),
        };
        self.push_output(&bytes, now);
        self.busy = false;
        if !self.rbuf.is_empty() {
            self.read_since = now;
        }
        self.last_active = now;
    }

    /// The bytes waiting to be sent.
    pub fn output(&self) -> &[u8] {
        &self.wbuf
    }

    /// `n` bytes of the output were sent.
    pub fn sent(&mut self, n: usize, now: Instant) {
        self.wbuf.drain(..n.min(self.wbuf.len()));
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_CAPACITY {
            self.wbuf = Vec::new();
        }
        if n > 0 {
            self.last_active = now;
        }
    }

    /// Whether the connection has nothing left to do and may be closed.
    pub fn finished(&self) -> bool {
        self.closing && !self.busy && self.wbuf.is_empty()
    }

    /// When the client must have sent or read what it owes, if it owes anything.
    pub fn deadline(&self) -> Option<Instant> {
        let reading = !self.busy && !self.closing && (!self.greeted || !self.rbuf.is_empty());
        let read = reading.then_some(self.read_since + DEADLINE);
        let write = (!self.wbuf.is_empty()).then_some(self.write_since + DEADLINE);
        match (read, write) {
            (Some(r), Some(w)) => Some(r.min(w)),
            (r, w) => r.or(w),
        }
    }

    /// Whether closing this connection loses nothing: no request in flight, no
    /// answer unsent.
    pub fn evictable(&self) -> bool {
        !self.busy && self.wbuf.is_empty()
    }

    /// Which idle connection goes first: those that never spoke, then the one idle
    /// the longest.
    fn eviction_rank(&self) -> (bool, Instant) {
        (self.spoke, self.last_active)
    }

    fn consume(&mut self, used: usize, now: Instant) {
        self.rbuf.drain(..used);
        if self.rbuf.is_empty() {
            if self.rbuf.capacity() > KEEP_CAPACITY {
                self.rbuf = Vec::new();
            }
        } else {
            // What follows is the start of the next frame.
            self.read_since = now;
        }
    }

    fn greet(&mut self, hello: Option<ClientHello>, now: Instant) {
        let accepted = hello.is_some_and(|h| h.magic == ctl::MAGIC && h.version == ctl::VERSION);
        self.queue(
            &ServerHello {
                magic: ctl::MAGIC,
                version: ctl::VERSION,
                accepted,
            },
            now,
        );
        if accepted {
            self.greeted = true;
        } else {
            self.closing = true;
            self.rbuf.clear();
        }
    }

    /// A protocol error: answered (a refused hello before the handshake, so that a
    /// client of any version can read it), then the connection closes.
    fn fail(&mut self, what: Failure, now: Instant) {
        tracing::debug!("control client: {what}");
        if self.greeted {
            self.push_output(&error_frame(what), now);
            self.closing = true;
            self.rbuf.clear();
        } else {
            self.greet(None, now);
        }
    }

    fn queue<T: serde::Serialize>(&mut self, msg: &T, now: Instant) {
        // Hellos and errors are a few dozen bytes: encoding cannot fail.
        if let Ok(bytes) = frame::encode(msg) {
            self.push_output(&bytes, now);
        }
    }

    fn push_output(&mut self, bytes: &[u8], now: Instant) {
        if self.wbuf.is_empty() {
            self.write_since = now;
        }
        self.wbuf.extend_from_slice(bytes);
    }
}

fn error_frame(failure: Failure) -> Vec<u8> {
    frame::encode(&answer::failed(failure)).unwrap_or_default()
}

struct Conn {
    fd: OwnedFd,
    session: Session,
}

/// What to do with a newcomer of `uid` (privileged or not) given the open
/// connections, at most `max_conns` of them (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Close this connection first, then ask again.
    Evict(ConnId),
    Refuse,
}

/// The connections unprivileged users may hold together, and one such uid alone.
pub fn unprivileged_slots(max_conns: usize) -> (usize, usize) {
    let all = max_conns - max_conns / RESERVED_SHARE;
    (all.max(1), (all / UID_SHARE).max(1))
}

/// The fairness rule of the module docs, as a pure function of the open
/// connections.
pub fn admission<'a>(
    conns: impl Iterator<Item = (ConnId, &'a Session)> + Clone,
    uid: u32,
    privileged: bool,
    max_conns: usize,
) -> Admission {
    let total = conns.clone().count();
    // The idle connection to evict first among those `which` accepts.
    let idle = |which: &dyn Fn(&Session) -> bool| {
        conns
            .clone()
            .filter(|(_, s)| s.evictable() && which(s))
            .min_by_key(|(_, s)| s.eviction_rank())
            .map_or(Admission::Refuse, |(id, _)| Admission::Evict(id))
    };
    if privileged {
        if total < max_conns {
            return Admission::Admit;
        }
        let unprivileged_idle = idle(&|s| !s.privileged);
        if unprivileged_idle != Admission::Refuse {
            return unprivileged_idle;
        }
        let any_idle = idle(&|_| true);
        if any_idle != Admission::Refuse {
            return any_idle;
        }
        // Every slot busy: the unprivileged uid holding the most gives way, with
        // its connection holding the most unsent bytes.
        let held = |uid: u32| conns.clone().filter(|(_, s)| s.uid == uid).count();
        return conns
            .clone()
            .filter(|(_, s)| !s.privileged)
            .max_by_key(|(_, s)| (held(s.uid), s.output().len()))
            .map_or(Admission::Refuse, |(id, _)| Admission::Evict(id));
    }
    let (all, per_uid) = unprivileged_slots(max_conns);
    let mine = conns.clone().filter(|(_, s)| s.uid == uid).count();
    if mine >= per_uid {
        return idle(&|s| s.uid == uid);
    }
    let unprivileged = conns.clone().filter(|(_, s)| !s.privileged).count();
    if unprivileged >= all || total >= max_conns {
        return idle(&|s| !s.privileged);
    }
    Admission::Admit
}

pub struct Control {
    listener: OwnedFd,
    conns: BTreeMap<ConnId, Conn>,
    next_id: ConnId,
    own_uid: u32,
    /// [`MAX_CONNECTIONS`], or half the fd limit if that is lower.
    max_conns: usize,
    /// An fd held in reserve: when the supervisor is out of fds and no connection
    /// can be evicted, it is closed to accept one waiting client and close it at
    /// once, so the listener does not stay readable (a busy loop) until fds free up.
    spare: Option<OwnedFd>,
}

/// What a connection asked.
pub struct Incoming {
    pub conn: ConnId,
    pub request: Request,
}

/// Creates the listening socket at `path`. The socket is mode 0666 and a
/// directory created for it 0755 (whatever the umask): any local user may
/// connect, and the peer's credentials decide what it may do.
pub fn bind(path: &Path) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o666))?;
    rustix::net::listen(&fd, 128)?;
    Ok(fd)
}

fn max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let half = limit.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
    MAX_CONNECTIONS.min(half).max(1)
}

fn open_spare() -> Option<OwnedFd> {
    rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()
}

impl Control {
    pub fn new(listener: OwnedFd) -> io::Result<Control> {
        // A listener inherited through the lifeboat keeps its flags, but make sure.
        rustix::io::ioctl_fionbio(&listener, true)?;
        Ok(Control {
            listener,
            conns: BTreeMap::new(),
            next_id: 1,
            own_uid: rustix::process::getuid().as_raw(),
            max_conns: max_connections(),
            spare: open_spare(),
        })
    }

    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    pub fn conn_fd(&self, id: ConnId) -> Option<BorrowedFd<'_>> {
        self.conns.get(&id).map(|c| c.fd.as_fd())
    }

    /// Accepts every waiting connection; returns the new ids.
    pub fn accept(&mut self) -> Vec<ConnId> {
        use rustix::net::SocketFlags;
        let mut new = Vec::new();
        loop {
            let fd = match rustix::net::accept_with(
                &self.listener,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            ) {
                Ok(fd) => fd,
                Err(Errno::INTR | Errno::CONNABORTED) => continue,
                Err(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    // The one waiting may be root: make room as for root.
                    if let Admission::Evict(id) =
                        admission(self.sessions(), 0, true, self.conns.len())
                    {
                        tracing::debug!("out of fds; evicting control connection {id}");
                        self.conns.remove(&id);
                        continue;
                    }
                    // Nothing to evict: turn one waiting client away.
                    tracing::warn!("out of file descriptors; refusing a control connection");
                    self.spare = None;
                    let refused =
                        rustix::net::accept_with(&self.listener, SocketFlags::CLOEXEC).is_ok();
                    self.spare = open_spare();
                    if refused && self.spare.is_some() {
                        continue;
                    }
                    return new;
                }
                Err(_) => return new, // EAGAIN: nobody waits any more
            };
            // nix, not rustix: a peer outside our PID namespace has pid 0, which
            // rustix's `UCred` cannot represent.
            let Ok(cred) =
                nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)
            else {
                continue;
            };
            if !self.admit(cred.uid()) {
                tracing::debug!("control connection of uid {} refused", cred.uid());
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let session = Session::new(cred.uid(), self.own_uid, Instant::now());
            self.conns.insert(id, Conn { fd, session });
            new.push(id);
        }
    }

    fn sessions(&self) -> impl Iterator<Item = (ConnId, &Session)> + Clone {
        self.conns.iter().map(|(id, c)| (*id, &c.session))
    }

    /// Makes room for a newcomer of `uid` by [`admission`]'s rule; false if it
    /// is refused.
    fn admit(&mut self, uid: u32) -> bool {
        let privileged = uid == 0 || uid == self.own_uid;
        loop {
            match admission(self.sessions(), uid, privileged, self.max_conns) {
                Admission::Admit => return true,
                Admission::Refuse => return false,
                Admission::Evict(id) => {
                    tracing::debug!("evicting control connection {id} for uid {uid}");
                    self.conns.remove(&id);
                }
            }
        }
    }

    /// Reads what `id` sent; returns its next request, if a whole one is there.
    /// Protocol errors are answered and the connection closed here.
    pub fn read(&mut self, id: ConnId) -> Option<Incoming> {
        let conn = self.conns.get_mut(&id)?;
        let mut chunk = [0u8; CHUNK];
        let mut broken = false;
        let request = loop {
            let now = Instant::now();
            if let Some(request) = conn.session.take_request(now) {
                break Some(request);
            }
            if !conn.session.output().is_empty() {
                // Answers first: a client is read no faster than it reads.
                match send_output(conn) {
                    Ok(()) if conn.session.output().is_empty() => continue,
                    Ok(()) => break None,
                    Err(()) => {
                        broken = true;
                        break None;
                    }
                }
            }
            if !conn.session.wants_input() {
                break None;
            }
            match rustix::io::read(&conn.fd, &mut chunk) {
                Ok(0) => conn.session.end_of_input(),
                Ok(n) => conn.session.feed(&chunk[..n], now),
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => break None,
                Err(_) => {
                    broken = true;
                    break None;
                }
            }
        };
        if broken || conn.session.finished() {
            self.conns.remove(&id);
        }
        request.map(|request| Incoming { conn: id, request })
    }

    /// Queues the answer to `id`'s current request and sends what it can; the
    /// connection may then take its next request.
    pub fn reply(&mut self, id: ConnId, response: &Response) {
        let Some(conn) = self.conns.get(&id) else {
            tracing::debug!("control connection {id} closed before its answer");
            return;
        };
        let room = queue_room(self.sessions(), &conn.session);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.session.answer(response, room, Instant::now());
        }
        self.flush(id);
    }

    /// Sends what is queued for `id`; true if something is still pending.
    pub fn flush(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        if send_output(conn).is_err() || conn.session.finished() {
            self.conns.remove(&id);
            return false;
        }
        !conn.session.output().is_empty()
    }

    pub fn is_open(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    /// Every connection, with its fd made to survive an exec; until the exec,
    /// nothing else may happen to them (`take_back` undoes this if it fails).
    pub fn hand_over(&mut self, pid: u32, generation: u32) -> Handover {
        let mut conns = Vec::new();
        for (&id, c) in &self.conns {
            if rustix::io::fcntl_setfd(&c.fd, rustix::io::FdFlags::empty()).is_err() {
                continue;
            }
            let s = &c.session;
            conns.push(SavedConn {
                id,
                fd: rustix::fd::AsRawFd::as_raw_fd(&c.fd),
                greeted: s.greeted,
                busy: s.busy,
                closing: s.closing,
                unread: s.rbuf.clone(),
                unsent: s.wbuf.clone(),
            });
        }
        Handover {
            pid,
            generation,
            next_id: self.next_id,
            conns,
        }
    }

    /// The exec failed: the connections are this process's again, close-on-exec.
    pub fn take_back(&mut self) {
        for c in self.conns.values() {
            let _ = rustix::io::fcntl_setfd(&c.fd, rustix::io::FdFlags::CLOEXEC);
        }
    }

    /// Takes the connections a previous image of this process handed over (see
    /// [`Handover`]); returns their ids. An fd that is no unix stream socket is
    /// not taken (nor closed: it is not ours).
    pub fn take_over(&mut self, handover: Handover) -> Vec<ConnId> {
        use rustix::fd::FromRawFd;
        let now = Instant::now();
        self.next_id = self.next_id.max(handover.next_id);
        let mut taken = Vec::new();
        for saved in handover.conns {
            // SAFETY: F_GETFD only asks whether the number is an open fd.
            if unsafe { libc::fcntl(saved.fd, libc::F_GETFD) } < 0 {
                tracing::warn!(
                    "control connection {} not handed over: fd {} is closed",
                    saved.id,
                    saved.fd
                );
                continue;
            }
            // SAFETY: open (above), and borrowed only to look at it; owned below
            // only if it is the connected socket the previous image left there.
            let fd = unsafe { BorrowedFd::borrow_raw(saved.fd) };
            let is_socket = rustix::fs::fstat(fd).is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket
            });
            let Some(cred) = is_socket
                .then(|| {
                    nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)
                        .ok()
                })
                .flatten()
            else {
                tracing::warn!(
                    "control connection {} not handed over: fd {} is not its socket",
                    saved.id,
                    saved.fd
                );
                continue;
            };
            // SAFETY: the previous image of this process left this socket open at
            // this number for us (checked above), and nothing else here owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(saved.fd) };
            let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
            let mut session = Session::new(cred.uid(), self.own_uid, now);
            session.greeted = saved.greeted;
            session.busy = saved.busy;
            session.closing = saved.closing;
            session.spoke = true;
            session.rbuf = saved.unread;
            session.wbuf = saved.unsent;
            tracing::debug!(
                "control connection {} taken over (busy {}, {} bytes unread, {} unsent)",
                saved.id,
                saved.busy,
                session.rbuf.len(),
                session.wbuf.len()
            );
            self.conns.insert(saved.id, Conn { fd, session });
            taken.push(saved.id);
        }
        taken
    }

    /// Drops every connection past its deadline; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.conns.len();
        self.conns
            .retain(|_, c| c.session.deadline().is_none_or(|d| d > now));
        before - self.conns.len()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| c.session.deadline())
            .min()
    }
}

/// How many answer bytes `session` may still queue: what is left of
/// [`MAX_QUEUED`], and for an unprivileged uid of its share of it.
pub fn queue_room<'a>(
    conns: impl Iterator<Item = (ConnId, &'a Session)> + Clone,
    session: &Session,
) -> usize {
    let queued: usize = conns.clone().map(|(_, s)| s.output().len()).sum();
    let room = MAX_QUEUED.saturating_sub(queued);
    if session.privileged {
        return room;
    }
    let uid_queued: usize = conns
        .filter(|(_, s)| s.uid == session.uid)
        .map(|(_, s)| s.output().len())
        .sum();
    room.min((MAX_QUEUED / UID_SHARE).saturating_sub(uid_queued))
}

/// Sends as much of the connection's output as the socket takes; `Err` if the
/// connection is broken.
fn send_output(conn: &mut Conn) -> Result<(), ()> {
    while !conn.session.output().is_empty() {
        // NOSIGNAL: a peer gone away is an error here, never a SIGPIPE.
        match rustix::net::send(
            &conn.fd,
            conn.session.output(),
            rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT,
        ) {
            Ok(n) => conn.session.sent(n, Instant::now()),
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => return Ok(()),
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
