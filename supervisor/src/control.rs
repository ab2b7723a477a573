//! The control socket: accepting initctl connections, framing, the handshake,
//! authorisation, deadlines. It decodes requests and queues answers; what a request
//! means is the runtime's business.
//!
//! Every connection is non-blocking and served from the supervisor's one event
//! loop: a client that sends half a frame or stops reading only ever costs its own
//! bounded buffers and is dropped at its deadline; it never delays anyone else.
//!
//! Authorisation comes from `SO_PEERCRED` at accept: root or the supervisor's own
//! uid may change things, anyone may query.

use keel_proto::ctl::{self, ClientHello, Error, ErrorKind, Request, Response, ServerHello};
use keel_proto::frame;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest request frame accepted (answers may be larger).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Connections beyond this are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to send a whole frame, or to read its answer.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub type ConnId = u64;

struct Conn {
    fd: OwnedFd,
    uid: u32,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    greeted: bool,
    /// A request is being carried out; no other is read meanwhile.
    busy: bool,
    /// Close once `wbuf` is flushed.
    closing: bool,
    deadline: Option<Instant>,
}

pub struct Control {
    listener: OwnedFd,
    conns: BTreeMap<ConnId, Conn>,
    next_id: ConnId,
    own_uid: u32,
}

/// What a connection asked.
pub struct Incoming {
    pub conn: ConnId,
    pub request: Request,
}

/// Creates the listening socket at `path` (mode 0666: anyone may connect, the
/// peer's credentials decide what it may do).
pub fn bind(path: &Path) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
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

impl Control {
    pub fn new(listener: OwnedFd) -> io::Result<Control> {
        // A listener inherited through the lifeboat keeps its flags, but make sure.
        rustix::io::ioctl_fionbio(&listener, true)?;
        Ok(Control {
            listener,
            conns: BTreeMap::new(),
            next_id: 1,
            own_uid: rustix::process::getuid().as_raw(),
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
        let mut new = Vec::new();
        loop {
            let fd = match rustix::net::accept_with(
                &self.listener,
                rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            ) {
                Ok(fd) => fd,
                Err(Errno::INTR) => continue,
                Err(_) => return new, // EAGAIN, or out of fds: try again on the next wake-up
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                tracing::warn!("too many control connections; refusing one");
                continue;
            }
            // nix, not rustix: a peer outside our PID namespace has pid 0, which
            // rustix's `UCred` cannot represent.
            let Ok(cred) =
                nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)
            else {
                continue;
            };
            let id = self.next_id;
            self.next_id += 1;
            self.conns.insert(
                id,
                Conn {
                    fd,
                    uid: cred.uid(),
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    greeted: false,
                    busy: false,
                    closing: false,
                    deadline: Some(Instant::now() + DEADLINE),
                },
            );
            new.push(id);
        }
    }

    /// Reads what `id` sent; returns a complete request, if any. Protocol errors
    /// are answered and the connection closed here.
    pub fn read(&mut self, id: ConnId) -> Option<Incoming> {
        let request = self.read_frames(id);
        // Whatever was queued (the handshake, an error) goes out now: with
        // edge-triggered polling nobody would otherwise ask for it.
        self.flush(id);
        request.map(|request| Incoming { conn: id, request })
    }

    fn read_frames(&mut self, id: ConnId) -> Option<Request> {
        let own_uid = self.own_uid;
        let mut chunk = [0u8; 4096];
        loop {
            let conn = self.conns.get_mut(&id)?;
            if conn.busy || conn.closing {
                return None;
            }
            match Self::take_frame(conn, own_uid) {
                Some(Some(request)) => return Some(request),
                Some(None) => continue,
                None => {}
            }
            match rustix::io::read(&conn.fd, &mut chunk) {
                Ok(0) => {
                    self.drop_conn(id);
                    return None;
                }
                Ok(n) => conn.rbuf.extend_from_slice(&chunk[..n]),
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return None,
                Err(_) => {
                    self.drop_conn(id);
                    return None;
                }
            }
        }
    }

    /// Takes one frame from the read buffer: `None` if incomplete, `Some(None)` if
    /// it was consumed without yielding a request.
    fn take_frame(conn: &mut Conn, own_uid: u32) -> Option<Option<Request>> {
        let limit = if conn.greeted { MAX_REQUEST } else { 64 };
        let (range, used) = match frame::split(&conn.rbuf, limit) {
            Ok(Some(x)) => x,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!("control client: {e}");
                Self::fail(conn, ErrorKind::InvalidRequest, format!("{e}"));
                return Some(None);
            }
        };
        let body: Vec<u8> = conn.rbuf[range].to_vec();
        conn.rbuf.drain(..used);
        if !conn.greeted {
            let hello: Result<ClientHello, _> = frame::decode(&body);
            let accepted =
                matches!(&hello, Ok(h) if h.magic == ctl::MAGIC && h.version == ctl::VERSION);
            let answer = ServerHello {
                magic: ctl::MAGIC,
                version: ctl::VERSION,
                accepted,
            };
            Self::queue(conn, &answer);
            if accepted {
                conn.greeted = true;
                conn.deadline = None;
            } else {
                conn.closing = true;
            }
            return Some(None);
        }
        let request: Request = match frame::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                Self::fail(conn, ErrorKind::InvalidRequest, format!("{e}"));
                return Some(None);
            }
        };
        if !request.is_query() && conn.uid != 0 && conn.uid != own_uid {
            Self::queue(
                conn,
                &Response::Error(Error {
                    kind: ErrorKind::PermissionDenied,
                    message: "Permission denied".into(),
                }),
            );
            return Some(None);
        }
        conn.busy = true;
        conn.deadline = None;
        Some(Some(request))
    }

    fn fail(conn: &mut Conn, kind: ErrorKind, message: String) {
        Self::queue(conn, &Response::Error(Error { kind, message }));
        conn.closing = true;
        conn.rbuf.clear();
    }

    fn queue<T: serde::Serialize>(conn: &mut Conn, msg: &T) {
        match frame::encode(msg) {
            Ok(bytes) => conn.wbuf.extend_from_slice(&bytes),
            Err(_) => {
                let err = Response::Error(Error {
                    kind: ErrorKind::Internal,
                    message: "answer too large".into(),
                });
                if let Ok(bytes) = frame::encode(&err) {
                    conn.wbuf.extend_from_slice(&bytes);
                }
            }
        }
        if conn.deadline.is_none() {
            conn.deadline = Some(Instant::now() + DEADLINE);
        }
    }

    /// Queues the answer to `id`'s current request and makes it ready for another.
    pub fn reply(&mut self, id: ConnId, response: &Response) {
        if let Some(conn) = self.conns.get_mut(&id) {
            Self::queue(conn, response);
            conn.busy = false;
        }
        self.flush(id);
    }

    /// Writes what is queued for `id`; true if something is still pending.
    pub fn flush(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        while !conn.wbuf.is_empty() {
            match rustix::io::write(&conn.fd, &conn.wbuf) {
                Ok(n) => {
                    conn.wbuf.drain(..n);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return true,
                Err(_) => {
                    self.drop_conn(id);
                    return false;
                }
            }
        }
        conn.deadline = None;
        if conn.closing {
            self.drop_conn(id);
        }
        false
    }

    pub fn wants_write(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| !c.wbuf.is_empty())
    }

    pub fn is_open(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    pub fn drop_conn(&mut self, id: ConnId) {
        self.conns.remove(&id);
    }

    /// Drops every connection past its deadline; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in &late {
            self.drop_conn(*id);
        }
        late.len()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }
}
