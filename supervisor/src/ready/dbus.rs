//! `expect dbus NAME`: a minimal D-Bus client that tells when a bus name gets an
//! owner on the system bus.
//!
//! It speaks just enough of the protocol for that: SASL `EXTERNAL` authentication,
//! `Hello`, `AddMatch` for `NameOwnerChanged` of each watched name, and
//! `NameHasOwner` (the name may be owned already). The connection is non-blocking and
//! driven by the supervisor's epoll loop like any other fd: no thread, no executor, no
//! C library. (The D-Bus crates each bring one of those: zbus an async executor and
//! threads, dbus libdbus, rustbus connections that block with timeouts; four messages
//! do not justify any of them.)
//!
//! The codec ([`encode_call`], [`decode`]) is pure and bounded: a message over
//! [`MAX_MESSAGE`] bytes, or one that does not parse, ends the connection, which the
//! runtime then makes again later. Nothing the bus says can make it panic.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use std::collections::{BTreeMap, BTreeSet};
use std::io;

/// Where the system bus listens unless `DBUS_SYSTEM_BUS_ADDRESS` says otherwise.
pub const DEFAULT_SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";
/// The largest message read from the bus (the bus's own limit is far larger; the
/// replies and signals keel asks for are tiny).
pub const MAX_MESSAGE: usize = 64 * 1024;

const BUS_NAME: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";

/// A socket address of the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Path(String),
    Abstract(String),
}

/// The first `unix:` address of a D-Bus address list (`unix:path=/x;unix:abstract=y`),
/// with `%xx` escapes decoded.
pub fn parse_address(list: &str) -> Option<Address> {
    list.split(';').find_map(|addr| {
        let params = addr.strip_prefix("unix:")?;
        params.split(',').find_map(|kv| {
            let (key, value) = kv.split_once('=')?;
            let value = unescape(value)?;
            match key {
                "path" => Some(Address::Path(value)),
                "abstract" => Some(Address::Abstract(value)),
                _ => None,
            }
        })
    })
}

fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What the bus told us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// A watched name has an owner (now, or it had one already).
    Owned(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `AUTH EXTERNAL` sent; waiting for `OK`.
    Auth,
    /// Authenticated: binary messages both ways.
    Messages,
}

/// What a method call we sent was for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Hello,
    AddMatch,
    NameHasOwner(String),
}

/// One connection to the bus.
pub struct Bus {
    fd: OwnedFd,
    phase: Phase,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    serial: u32,
    pending: BTreeMap<u32, Call>,
    watched: BTreeSet<String>,
}

impl Bus {
    /// Connects (non-blocking) and starts authenticating as `uid`.
    pub fn connect(address: &Address, uid: u32) -> io::Result<Bus> {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        let addr = match address {
            Address::Path(p) => SocketAddrUnix::new(p.as_str())?,
            Address::Abstract(name) => SocketAddrUnix::new_abstract_name(name.as_bytes())?,
        };
        rustix::net::connect(&fd, &addr)?;
        let hex_uid: String = uid
            .to_string()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut bus = Bus {
            fd,
            phase: Phase::Auth,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            serial: 0,
            pending: BTreeMap::new(),
            watched: BTreeSet::new(),
        };
        // The NUL byte first (credentials passing), then the SASL exchange.
        bus.wbuf.push(0);
        bus.wbuf
            .extend_from_slice(format!("AUTH EXTERNAL {hex_uid}\r\n").as_bytes());
        bus.flush()?;
        Ok(bus)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether output is waiting for the socket to take it.
    pub fn wants_write(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Watches `name`: an [`BusEvent::Owned`] follows once it has an owner.
    pub fn watch(&mut self, name: &str) {
        if !self.watched.insert(name.to_string()) {
            return;
        }
        if self.phase == Phase::Messages {
            self.ask_about(name);
        }
    }

    /// Stops watching `name` (its job no longer waits for it).
    pub fn unwatch(&mut self, name: &str) {
        self.watched.remove(name);
    }

    fn ask_about(&mut self, name: &str) {
        let rule = format!(
            "type='signal',sender='{BUS_NAME}',interface='{BUS_NAME}',\
             member='NameOwnerChanged',arg0='{name}'"
        );
        self.call("AddMatch", &[&rule], Call::AddMatch);
        self.call(
            "NameHasOwner",
            &[name],
            Call::NameHasOwner(name.to_string()),
        );
    }

    fn call(&mut self, member: &str, args: &[&str], what: Call) {
        self.serial = self.serial.wrapping_add(1).max(1);
        let msg = encode_call(self.serial, BUS_NAME, BUS_PATH, BUS_NAME, member, args);
        self.wbuf.extend_from_slice(&msg);
        self.pending.insert(self.serial, what);
    }

    /// Writes what the socket takes now.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match rustix::io::write(&self.fd, &self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads what the bus sent and returns what it means. An error means the
    /// connection is over (closed, refused, or the bus spoke nonsense).
    pub fn on_readable(&mut self) -> io::Result<Vec<BusEvent>> {
        let mut events = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match rustix::io::read(&self.fd, &mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => break,
                Err(e) => return Err(e.into()),
            }
            // Taken apart as it arrives, so the buffer never holds more than one
            // message beyond what was already understood.
            self.take_input(&mut events)?;
        }
        self.flush()?;
        Ok(events)
    }

    fn take_input(&mut self, events: &mut Vec<BusEvent>) -> io::Result<()> {
        if self.phase == Phase::Auth {
            let Some(end) = self.rbuf.windows(2).position(|w| w == b"\r\n") else {
                return if self.rbuf.len() > 1024 {
                    Err(invalid("no answer to AUTH"))
                } else {
                    Ok(())
                };
            };
            let line: Vec<u8> = self.rbuf.drain(..end + 2).collect();
            if !line.starts_with(b"OK ") {
                return Err(invalid("the bus refused authentication"));
            }
            self.phase = Phase::Messages;
            self.wbuf.extend_from_slice(b"BEGIN\r\n");
            self.call("Hello", &[], Call::Hello);
            let names: Vec<String> = self.watched.iter().cloned().collect();
            for name in names {
                self.ask_about(&name);
            }
        }
        while let Some(len) = self.next_frame_len() {
            if len > MAX_MESSAGE {
                return Err(invalid("oversized message from the bus"));
            }
            if self.rbuf.len() < len {
                break;
            }
            let frame: Vec<u8> = self.rbuf.drain(..len).collect();
            let msg = decode(&frame).ok_or_else(|| invalid("malformed message from the bus"))?;
            if let Some(ev) = self.apply(msg)? {
                events.push(ev);
            }
        }
        Ok(())
    }

    fn next_frame_len(&self) -> Option<usize> {
        (self.phase == Phase::Messages)
            .then(|| frame_len(&self.rbuf))
            .flatten()
    }

    fn apply(&mut self, msg: Message) -> io::Result<Option<BusEvent>> {
        match msg.kind {
            MessageKind::Return | MessageKind::Error => {
                let Some(call) = msg.reply_serial.and_then(|s| self.pending.remove(&s)) else {
                    return Ok(None);
                };
                if msg.kind == MessageKind::Error {
                    // Hello or AddMatch refused: this connection is useless.
                    return match call {
                        Call::NameHasOwner(_) => Ok(None),
                        _ => Err(invalid("the bus refused a request")),
                    };
                }
                Ok(match (call, msg.body.as_slice()) {
                    (Call::NameHasOwner(name), [Value::Bool(true)])
                        if self.watched.contains(&name) =>
                    {
                        Some(BusEvent::Owned(name))
                    }
                    _ => None,
                })
            }
            MessageKind::Signal if msg.member.as_deref() == Some("NameOwnerChanged") => {
                Ok(match msg.body.as_slice() {
                    [Value::Str(name), Value::Str(_), Value::Str(new_owner)]
                        if !new_owner.is_empty() && self.watched.contains(name) =>
                    {
                        Some(BusEvent::Owned(name.clone()))
                    }
                    _ => None,
                })
            }
            _ => Ok(None),
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

// ---- the codec -------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Call,
    Return,
    Error,
    Signal,
}

/// A body value of the types keel reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Bool(bool),
    U32(u32),
}

/// A decoded message: the header fields keel uses and a body of basic values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub member: Option<String>,
    pub body: Vec<Value>,
}

fn pad(buf: &mut Vec<u8>, align: usize) {
    while !buf.len().is_multiple_of(align) {
        buf.push(0);
    }
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    pad(buf, 4);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_u32(buf, s.len() as u32);
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

fn put_sig(buf: &mut Vec<u8>, s: &str) {
    buf.push(s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

/// A method call (little endian) whose arguments are all strings.
pub fn encode_call(
    serial: u32,
    destination: &str,
    path: &str,
    interface: &str,
    member: &str,
    args: &[&str],
) -> Vec<u8> {
    let mut body = Vec::new();
    for a in args {
        put_str(&mut body, a);
    }
    let signature = "s".repeat(args.len());
    let mut msg = vec![b'l', 1, 0, 1];
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(&serial.to_le_bytes());
    let mut fields = Vec::new();
    // Field offsets are relative to the message start, which is 8-aligned; the
    // array's contents start at offset 16.
    let mut field = |code: u8, sig: &str, put: &dyn Fn(&mut Vec<u8>)| {
        pad(&mut fields, 8);
        fields.push(code);
        put_sig(&mut fields, sig);
        put(&mut fields);
    };
    field(1, "o", &|b| put_str(b, path));
    field(2, "s", &|b| put_str(b, interface));
    field(3, "s", &|b| put_str(b, member));
    field(6, "s", &|b| put_str(b, destination));
    if !signature.is_empty() {
        field(8, "g", &|b| put_sig(b, &signature));
    }
    msg.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    msg.extend_from_slice(&fields);
    pad(&mut msg, 8);
    msg.extend_from_slice(&body);
    msg
}

/// The whole length of the message starting `buf`, once its fixed header is there.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..16)?;
    let big = match head[0] {
        b'l' => false,
        b'B' => true,
        // Garbage: report an impossible length, so the caller drops the connection.
        _ => return Some(usize::MAX),
    };
    let u32_at = |i: usize| {
        let b = [head[i], head[i + 1], head[i + 2], head[i + 3]];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let body = u32_at(4) as usize;
    let fields = u32_at(12) as usize;
    let header = 16usize.checked_add(fields)?.checked_next_multiple_of(8)?;
    Some(header.saturating_add(body))
}

/// A reader over one message, aligned relative to the message start.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Reader<'a> {
    fn align(&mut self, n: usize) -> Option<()> {
        let to = self.pos.checked_next_multiple_of(n)?;
        if to > self.buf.len() {
            return None;
        }
        self.pos = to;
        Some(())
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.align(4)?;
        let b = self.bytes(4)?;
        let b = [b[0], b[1], b[2], b[3]];
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        let s = self.bytes(len)?;
        (self.u8()? == 0).then_some(())?;
        String::from_utf8(s.to_vec()).ok()
    }
    fn signature(&mut self) -> Option<String> {
        let len = self.u8()? as usize;
        let s = self.bytes(len)?;
        (self.u8()? == 0).then_some(())?;
        String::from_utf8(s.to_vec()).ok()
    }
    /// A value of a basic type; `None` for anything else (keel never asks for it).
    fn basic(&mut self, sig: u8) -> Option<Value> {
        Some(match sig {
            b's' | b'o' => Value::Str(self.string()?),
            b'g' => Value::Str(self.signature()?),
            b'b' => Value::Bool(match self.u32()? {
                0 => false,
                1 => true,
                _ => return None,
            }),
            b'u' | b'i' => Value::U32(self.u32()?),
            b'y' => Value::U32(u32::from(self.u8()?)),
            _ => return None,
        })
    }
}

/// Decodes one whole message (as [`frame_len`] delimits it). `None` if it is
/// malformed or carries a body of types keel does not read.
pub fn decode(frame: &[u8]) -> Option<Message> {
    let big = match frame.first()? {
        b'l' => false,
        b'B' => true,
        _ => return None,
    };
    let mut r = Reader {
        buf: frame,
        pos: 1,
        big,
    };
    let kind = match r.u8()? {
        1 => MessageKind::Call,
        2 => MessageKind::Return,
        3 => MessageKind::Error,
        4 => MessageKind::Signal,
        _ => return None,
    };
    let _flags = r.u8()?;
    if r.u8()? != 1 {
        return None;
    }
    let body_len = r.u32()? as usize;
    let serial = r.u32()?;
    let fields_len = r.u32()? as usize;
    let fields_end = r.pos.checked_add(fields_len)?;
    if fields_end > frame.len() {
        return None;
    }
    let mut msg = Message {
        kind,
        serial,
        reply_serial: None,
        member: None,
        body: Vec::new(),
    };
    let mut signature = String::new();
    while r.pos < fields_end {
        r.align(8)?;
        let code = r.u8()?;
        let sig = r.signature()?;
        let &[t] = sig.as_bytes() else {
            return None;
        };
        let value = r.basic(t)?;
        match (code, value) {
            (3, Value::Str(m)) => msg.member = Some(m),
            (5, Value::U32(s)) => msg.reply_serial = Some(s),
            (8, Value::Str(s)) => signature = s,
            _ => {}
        }
    }
    if r.pos != fields_end {
        return None;
    }
    r.align(8)?;
    let body_start = r.pos;
    if body_start.checked_add(body_len)? != frame.len() {
        return None;
    }
    // Body alignment is relative to the body start, which is 8-aligned: the same.
    for t in signature.bytes() {
        if !b"sogbuiy".contains(&t) {
            // A body keel never reads (containers: only in messages keel did not
            // ask for): keep the header, drop the body.
            msg.body.clear();
            break;
        }
        msg.body.push(r.basic(t)?);
    }
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as the bus would send it (little endian), built by hand.
    fn reply(kind: u8, reply_serial: u32, member: Option<&str>, sig: &str, body: &[u8]) -> Vec<u8> {
        let mut fields = Vec::new();
        let field = |fields: &mut Vec<u8>, code: u8, sig: &str, put: &dyn Fn(&mut Vec<u8>)| {
            pad(fields, 8);
            fields.push(code);
            put_sig(fields, sig);
            put(fields);
        };
        field(&mut fields, 5, "u", &|b| put_u32(b, reply_serial));
        if let Some(m) = member {
            field(&mut fields, 3, "s", &|b| put_str(b, m));
        }
        if !sig.is_empty() {
            field(&mut fields, 8, "g", &|b| put_sig(b, sig));
        }
        let mut msg = vec![b'l', kind, 0, 1];
        msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
        msg.extend_from_slice(&77u32.to_le_bytes());
        msg.extend_from_slice(&(fields.len() as u32).to_le_bytes());
        msg.extend_from_slice(&fields);
        pad(&mut msg, 8);
        msg.extend_from_slice(body);
        msg
    }

    #[test]
    fn a_call_decodes_to_what_was_encoded() {
        let call = encode_call(
            5,
            BUS_NAME,
            BUS_PATH,
            BUS_NAME,
            "NameHasOwner",
            &["org.x.Y"],
        );
        assert_eq!(frame_len(&call), Some(call.len()));
        let msg = decode(&call).unwrap();
        assert_eq!(msg.kind, MessageKind::Call);
        assert_eq!(msg.serial, 5);
        assert_eq!(msg.member.as_deref(), Some("NameHasOwner"));
        assert_eq!(msg.body, vec![Value::Str("org.x.Y".into())]);
        let hello = encode_call(1, BUS_NAME, BUS_PATH, BUS_NAME, "Hello", &[]);
        assert_eq!(decode(&hello).unwrap().body, vec![]);
    }

    #[test]
    fn replies_and_signals_decode() {
        let mut body = Vec::new();
        put_u32(&mut body, 1);
        let msg = decode(&reply(2, 9, None, "b", &body)).unwrap();
        assert_eq!(msg.kind, MessageKind::Return);
        assert_eq!(msg.reply_serial, Some(9));
        assert_eq!(msg.body, vec![Value::Bool(true)]);

        let mut body = Vec::new();
        for s in ["org.x.Y", "", ":1.4"] {
            put_str(&mut body, s);
        }
        let msg = decode(&reply(4, 0, Some("NameOwnerChanged"), "sss", &body)).unwrap();
        assert_eq!(msg.kind, MessageKind::Signal);
        assert_eq!(
            msg.body,
            vec![
                Value::Str("org.x.Y".into()),
                Value::Str("".into()),
                Value::Str(":1.4".into())
            ]
        );
    }

    #[test]
    fn truncated_and_garbage_messages_are_refused() {
        let call = encode_call(5, BUS_NAME, BUS_PATH, BUS_NAME, "NameHasOwner", &["a.b"]);
        for cut in 0..call.len() {
            assert!(decode(&call[..cut]).is_none(), "cut at {cut}");
        }
        assert_eq!(frame_len(b"GARBAGE GARBAGE!"), Some(usize::MAX));
        assert!(decode(b"GARBAGE GARBAGE!").is_none());
        let mut bad_bool = Vec::new();
        put_u32(&mut bad_bool, 7);
        assert!(decode(&reply(2, 1, None, "b", &bad_bool)).is_none());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..256))| {
            let _ = frame_len(&bytes);
            let _ = decode(&bytes);
            let mut framed = vec![b'l', 2, 0, 1];
            framed.extend_from_slice(&bytes);
            let _ = frame_len(&framed);
            let _ = decode(&framed);
        });
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_address(DEFAULT_SYSTEM_BUS),
            Some(Address::Path("/run/dbus/system_bus_socket".into()))
        );
        assert_eq!(
            parse_address("tcp:host=x;unix:abstract=keel%2dbus,guid=1"),
            Some(Address::Abstract("keel-bus".into()))
        );
        assert_eq!(parse_address("tcp:host=x"), None);
        assert_eq!(parse_address("unix:path=%zz"), None);
    }
}
