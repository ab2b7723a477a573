//! Device events' runtime half: keel's own event source for the
//! `SUBSYSTEM-device-added|changed|removed` events jobs wait for (their names
//! are the core's, [`crate::job::device`]).
//!
//! Design: not a separate bridge process but one netlink socket
//! (`NETLINK_KOBJECT_UEVENT`) in the supervisor, kept in keel-init's lifeboat
//! like the inotify watch of file events: messages that arrive while no
//! supervisor runs wait in it and are read by the successor, and what one
//! supervisor read is gone from the socket, so none is read twice. It is opened
//! only once some job names a device event.
//!
//! Which messages: the socket joins both multicast groups. Group 2 is udev's
//! monitor: udevd re-broadcasts each kernel uevent once its rules have run, with
//! a "libudev" header and udev's properties (`ID_*`, `DEVNAME=/dev/…`,
//! `ID_NET_DRIVER`…), and `udevadm trigger` (coldplug) replays every device
//! there — these are what Upstart's bridge read, so they are preferred. Group 1
//! is the kernel's own uevents, used only while no udevd runs (this host, a
//! container, early boot): once udevd's control socket exists or one of its
//! messages has arrived, kernel messages are dropped, as udevd will send each
//! again with its properties. A device that appears before udevd starts can so
//! be announced twice, by the kernel and by coldplug, as under Upstart with
//! coldplug; starting a running job is no change.
//!
//! Only messages from the kernel (netlink port 0) or from root (udevd) count.
//! A malformed message is dropped and logged, once per kind of fault.
//! A uevent becomes Upstart's variables: `KERNEL`, `DEVPATH`, `DEVNAME` (the
//! device node's full path), `SUBSYSTEM`, `ACTION`, then every other property;
//! bytes neither printable nor blank are stripped from values, as Upstart did.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sockopt,
};

use crate::initlink::InitLink;
use crate::job::device;

/// The socket's lifeboat name.
pub const LIFEBOAT_NAME: &str = "uevents";
/// udevd's control socket: it exists while udevd runs.
pub const UDEV_CONTROL: &str = "/run/udev/control";
/// The multicast groups: the kernel's uevents and udev's monitor.
const GROUP_KERNEL: u32 = 1;
const GROUP_UDEV: u32 = 2;
/// The longest message read: udev's are at most 8 KiB, the kernel's 2 KiB.
const MAX_MESSAGE: usize = 16 * 1024;
/// The socket's receive buffer: a coldplug of a large machine at once.
const RECEIVE_BUFFER: usize = 16 * 1024 * 1024;
/// udev's header: "libudev\0", a magic number, then offsets (its
/// `struct monitor_netlink_header`).
const UDEV_PREFIX: &[u8] = b"libudev\0";
const UDEV_MAGIC: u32 = 0xfeed_cafe;
const UDEV_HEADER_MIN: usize = 24;

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Kernel,
    Udev,
}

/// Why a message was dropped; each kind is logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Malformed {
    /// Not `ACTION@DEVPATH` nor udev's header.
    NoHeader,
    /// udev's header with a wrong magic number or offsets outside the message.
    BadUdevHeader,
    /// A property with no `=` or an empty name.
    BadProperty,
    /// No `ACTION`, `DEVPATH` or `SUBSYSTEM`.
    Incomplete,
    /// An action the kernel does not send.
    UnknownAction,
    /// Longer than any uevent.
    TooLong,
    /// Neither from the kernel nor from root.
    Stranger,
}

impl Malformed {
    fn describe(self) -> &'static str {
        match self {
            Malformed::NoHeader => "neither a kernel uevent nor udev's header",
            Malformed::BadUdevHeader => "udev's header is broken",
            Malformed::BadProperty => "a property is not NAME=VALUE",
            Malformed::Incomplete => "ACTION, DEVPATH or SUBSYSTEM is missing",
            Malformed::UnknownAction => "the ACTION is none the kernel sends",
            Malformed::TooLong => "longer than any uevent",
            Malformed::Stranger => "sent by neither the kernel nor root",
        }
    }
}

/// One device event: its name and variables, in Upstart's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    pub name: String,
    pub env: Vec<(String, String)>,
}

/// A message's bytes as a device event.
pub fn parse(message: &[u8]) -> Result<(Origin, DeviceEvent), Malformed> {
    let (origin, block) = if let Some(rest) = message.strip_prefix(UDEV_PREFIX) {
        (Origin::Udev, udev_properties(message, rest)?)
    } else {
        let end = message
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(message.len());
        let header = &message[..end];
        if !header.contains(&b'@') || header.starts_with(b"@") {
            return Err(Malformed::NoHeader);
        }
        (Origin::Kernel, message.get(end + 1..).unwrap_or_default())
    };
    let mut properties = Vec::new();
    for field in block.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let at = field.iter().position(|b| *b == b'=');
        let Some(at) = at.filter(|at| *at > 0) else {
            return Err(Malformed::BadProperty);
        };
        properties.push((printable(&field[..at]), printable(&field[at + 1..])));
    }
    Ok((origin, device_event(properties)?))
}

/// The property block of a udev message (`rest` follows the prefix).
fn udev_properties<'a>(message: &'a [u8], rest: &[u8]) -> Result<&'a [u8], Malformed> {
    let word = |at: usize| -> Option<[u8; 4]> { rest.get(at..at + 4)?.try_into().ok() };
    let (Some(magic), Some(offset), Some(len)) = (word(0), word(8), word(12)) else {
        return Err(Malformed::BadUdevHeader);
    };
    let offset = u32::from_ne_bytes(offset) as usize;
    let len = u32::from_ne_bytes(len) as usize;
    if u32::from_be_bytes(magic) != UDEV_MAGIC || offset < UDEV_HEADER_MIN {
        return Err(Malformed::BadUdevHeader);
    }
    let end = offset.checked_add(len).ok_or(Malformed::BadUdevHeader)?;
    message.get(offset..end).ok_or(Malformed::BadUdevHeader)
}

/// Upstart's variables from a uevent's properties.
fn device_event(properties: Vec<(String, String)>) -> Result<DeviceEvent, Malformed> {
    let get = |name: &str| {
        properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(action), Some(devpath), Some(subsystem)) =
        (get("ACTION"), get("DEVPATH"), get("SUBSYSTEM"))
    else {
        return Err(Malformed::Incomplete);
    };
    let name = device::event_name(subsystem, action).ok_or(Malformed::UnknownAction)?;
    // udev's sysname: the last component, a '!' in it standing for '/'.
    let kernel = devpath
        .rsplit('/')
        .next()
        .unwrap_or(devpath)
        .replace('!', "/");
    let mut env = vec![
        ("KERNEL".to_string(), kernel),
        ("DEVPATH".to_string(), devpath.to_string()),
    ];
    if let Some(node) = get("DEVNAME") {
        let node = match node.starts_with('/') {
            true => node.to_string(),
            false => format!("/dev/{node}"),
        };
        env.push(("DEVNAME".to_string(), node));
    }
    env.push(("SUBSYSTEM".to_string(), subsystem.to_string()));
    env.push(("ACTION".to_string(), action.to_string()));
    let own = ["DEVPATH", "DEVNAME", "SUBSYSTEM", "ACTION"];
    let rest = properties
        .iter()
        .filter(|(k, _)| !own.contains(&k.as_str()));
    env.extend(rest.cloned());
    Ok(DeviceEvent { name, env })
}

/// The bytes that are printable or blank, as Upstart's bridge kept them.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ' || **b == b'\t')
        .map(|b| char::from(*b))
        .collect()
}

/// The netlink socket and the device events jobs wait for.
#[derive(Default)]
pub struct Uevents {
    socket: Option<OwnedFd>,
    /// The event names some job's `start on` or `stop on` names.
    wanted: BTreeSet<String>,
    /// A message from udevd has arrived: kernel messages are dropped.
    udev_seen: bool,
    /// The kinds of malformed message already logged.
    reported: BTreeSet<Malformed>,
}

impl Uevents {
    /// With the socket a previous supervisor left in the lifeboat, if any.
    pub fn recover(saved: Option<OwnedFd>) -> Uevents {
        Uevents {
            socket: saved,
            ..Uevents::default()
        }
    }

    /// The socket, to wait on (`None` until some job names a device event).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.socket.as_ref().map(|s| s.as_fd())
    }

    /// Emits exactly the device events in `wanted` from now on, opening the
    /// socket for the first. Returns whether the socket is new (to be waited
    /// on) and the problems met.
    pub fn sync(
        &mut self,
        wanted: BTreeSet<String>,
        link: Option<&InitLink>,
    ) -> (bool, Vec<String>) {
        self.wanted = wanted;
        if self.socket.is_some() || self.wanted.is_empty() {
            return (false, Vec::new());
        }
        let mut problems = Vec::new();
        match open() {
            Ok(fd) => {
                if let Some(link) = link
                    && let Err(e) = link.deposit(LIFEBOAT_NAME, fd.as_fd())
                {
                    problems.push(format!(
                        "device events: cannot keep the socket in the lifeboat: {e}"
                    ));
                }
                self.socket = Some(fd);
                (true, problems)
            }
            Err(e) => (false, vec![format!("device events: cannot listen: {e}")]),
        }
    }

    /// The device events that arrived since the last read and that some job
    /// waits for, in order.
    pub fn read(&mut self) -> Vec<DeviceEvent> {
        let mut out = Vec::new();
        let Some(socket) = self.socket.take() else {
            return out;
        };
        let fd = socket.as_fd();
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let received = receive(fd, &mut buf);
            let parsed = match received {
                Received::Nothing => break,
                Received::Overflow => {
                    tracing::error!(
                        "device events were lost: the socket's receive buffer overflowed"
                    );
                    continue;
                }
                Received::Interrupted => continue,
                Received::Message(len, from_kernel, root) => {
                    let parsed = parse(&buf[..len]);
                    match parsed {
                        Ok((Origin::Kernel, _)) if !from_kernel => Err(Malformed::Stranger),
                        Ok((Origin::Udev, _)) if !root => Err(Malformed::Stranger),
                        other => other,
                    }
                }
                Received::Truncated => Err(Malformed::TooLong),
            };
            match parsed {
                Err(kind) => self.report(kind),
                Ok((Origin::Udev, event)) => {
                    self.udev_seen = true;
                    self.keep(event, &mut out);
                }
                Ok((Origin::Kernel, event)) => {
                    if !self.udev_runs() {
                        self.keep(event, &mut out);
                    }
                }
            }
        }
        self.socket = Some(socket);
        out
    }

    fn keep(&self, event: DeviceEvent, out: &mut Vec<DeviceEvent>) {
        if self.wanted.contains(&event.name) {
            out.push(event);
        }
    }

    fn udev_runs(&self) -> bool {
        self.udev_seen || std::path::Path::new(UDEV_CONTROL).exists()
    }

    fn report(&mut self, kind: Malformed) {
        if self.reported.insert(kind) {
            tracing::warn!(
                "device events: a message was dropped: {} (further ones like it are dropped without a word)",
                kind.describe()
            );
        }
    }
}

/// A socket that receives both groups, with the senders' credentials.
fn open() -> nix::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    socket::setsockopt(&fd, sockopt::PassCred, &true)?;
    // Where the buffer cannot be forced (no CAP_NET_ADMIN) the default stays,
    // and an overflow is reported when it happens.
    if socket::setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
        let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER);
    }
    let groups = (1 << (GROUP_KERNEL - 1)) | (1 << (GROUP_UDEV - 1));
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &NetlinkAddr::new(0, groups),
    )?;
    Ok(fd)
}

enum Received {
    Nothing,
    /// Its length, whether the kernel sent it, whether root sent it.
    Message(usize, bool, bool),
    Truncated,
    /// The receive buffer overflowed (`ENOBUFS`): the kernel dropped messages.
    Overflow,
    Interrupted,
}

fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Received {
    use std::io::IoSliceMut;
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(socket::UnixCredentials);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    match socket::recvmsg::<NetlinkAddr>(raw, &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT) {
        Ok(msg) => {
            if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                return Received::Truncated;
            }
            let from_kernel = msg.address.is_some_and(|a| a.pid() == 0);
            let root = msg.cmsgs().ok().into_iter().flatten().any(|c| {
                matches!(c, socket::ControlMessageOwned::ScmCredentials(cred) if cred.uid() == 0)
            });
            Received::Message(msg.bytes, from_kernel, root)
        }
        Err(nix::Error::ENOBUFS) => Received::Overflow,
        Err(nix::Error::EINTR) => Received::Interrupted,
        Err(_) => Received::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(text: &str) -> Vec<u8> {
        text.replace(' ', "\0").into_bytes()
    }

    /// A udev message: the header as udevd writes it, then `properties`.
    pub fn udev(properties: &str) -> Vec<u8> {
        let block = properties.replace(' ', "\0");
        let mut m = UDEV_PREFIX.to_vec();
        m.extend(UDEV_MAGIC.to_be_bytes());
        m.extend(40u32.to_ne_bytes()); // header size
        m.extend(40u32.to_ne_bytes()); // properties' offset
        m.extend((block.len() as u32).to_ne_bytes());
        m.resize(40, 0); // the filter hashes
        m.extend(block.as_bytes());
        m
    }

    fn env(event: &DeviceEvent) -> String {
        let pairs: Vec<String> = event.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join(" ")
    }

    #[test]
    fn a_kernel_uevent_becomes_upstarts_event() {
        let message = kernel(
            "add@/devices/virtual/net/d0 ACTION=add DEVPATH=/devices/virtual/net/d0 \
             SUBSYSTEM=net INTERFACE=d0 IFINDEX=7 SEQNUM=4242 ",
        );
        let (origin, event) = parse(&message).unwrap();
        assert_eq!(origin, Origin::Kernel);
        assert_eq!(event.name, "net-device-added");
        assert_eq!(
            env(&event),
            "KERNEL=d0 DEVPATH=/devices/virtual/net/d0 SUBSYSTEM=net ACTION=add \
             INTERFACE=d0 IFINDEX=7 SEQNUM=4242"
        );
    }

    #[test]
    fn a_udev_message_carries_udevs_properties_and_the_device_node() {
        let message = udev(
            "ACTION=change DEVPATH=/devices/pci0/block/sda/sda1 SUBSYSTEM=block \
             DEVNAME=/dev/sda1 ID_FS_TYPE=ext4 ID_FS_LABEL=ro\x07ot ",
        );
        let (origin, event) = parse(&message).unwrap();
        assert_eq!(origin, Origin::Udev);
        assert_eq!(event.name, "block-device-changed");
        assert_eq!(
            env(&event),
            "KERNEL=sda1 DEVPATH=/devices/pci0/block/sda/sda1 DEVNAME=/dev/sda1 \
             SUBSYSTEM=block ACTION=change ID_FS_TYPE=ext4 ID_FS_LABEL=root"
        );
        // The kernel's DEVNAME is relative to /dev; a '!' in the name is a '/'.
        let (_, event) = parse(&kernel(
            "remove@/d/cciss!c0d0 ACTION=remove DEVPATH=/d/cciss!c0d0 SUBSYSTEM=block DEVNAME=cciss/c0d0",
        ))
        .unwrap();
        assert_eq!(
            env(&event),
            "KERNEL=cciss/c0d0 DEVPATH=/d/cciss!c0d0 DEVNAME=/dev/cciss/c0d0 SUBSYSTEM=block ACTION=remove"
        );
    }

    #[test]
    fn every_kind_of_malformed_message_is_refused_as_such() {
        let good_udev = udev("ACTION=add DEVPATH=/d SUBSYSTEM=net ");
        let mut bad_magic = good_udev.clone();
        bad_magic[8] ^= 0xff;
        let mut offset_outside = good_udev.clone();
        offset_outside[16..20].copy_from_slice(&4000u32.to_ne_bytes());
        let mut length_overflows = good_udev.clone();
        length_overflows[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        let cases: [(&[u8], Malformed); 10] = [
            (b"", Malformed::NoHeader),
            (b"hello world", Malformed::NoHeader),
            (b"@/devices/x\0ACTION=add", Malformed::NoHeader),
            (&good_udev[..20], Malformed::BadUdevHeader),
            (&bad_magic, Malformed::BadUdevHeader),
            (&offset_outside, Malformed::BadUdevHeader),
            (&length_overflows, Malformed::BadUdevHeader),
            (
                b"add@/d\0ACTION=add\0DEVPATH=/d\0=x\0SUBSYSTEM=net\0",
                Malformed::BadProperty,
            ),
            (b"add@/d\0ACTION=add\0DEVPATH=/d\0", Malformed::Incomplete),
            (
                b"boom@/d\0ACTION=boom\0DEVPATH=/d\0SUBSYSTEM=net\0",
                Malformed::UnknownAction,
            ),
        ];
        for (message, kind) in cases {
            assert_eq!(parse(message).map(|_| ()), Err(kind), "{message:?}");
        }
        assert!(parse(&good_udev).is_ok());
        assert!(parse(b"add@/d\0ACTION=add\0DEVPATH=/d\0SUBSYSTEM=net").is_ok());
    }
}
