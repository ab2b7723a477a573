//! `expect notify`: the `sd_notify` protocol that most modern daemons speak.
//!
//! One datagram socket per supervisor, named in every `expect notify` job's
//! environment as `NOTIFY_SOCKET` — a path (`/run/keel/notify`), or an abstract name
//! (`@keel-notify`) when the supervisor is told so. The socket is created once per
//! boot and kept in keel-init's lifeboat, so a daemon that says `READY=1` while no
//! supervisor runs is heard by the next one: the datagram waits in the socket.
//!
//! The sender is who the kernel says (`SO_PASSCRED`: every datagram carries the
//! sender's pid), never what the message claims; the runtime accepts a message only
//! from a process of the job it concerns (its main process, or any process in the
//! job's cgroup). A datagram is one message of newline-separated `KEY=VALUE`
//! assignments; keel reads `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=…`,
//! `MAINPID=…` and ignores the rest, as systemd does with what it does not know.

use rustix::fd::{BorrowedFd, OwnedFd};
use std::io;

/// The longest datagram read; longer ones are cut (systemd reads at most this much
/// of a notification too).
pub const MAX_DATAGRAM: usize = 4096;
/// The longest `STATUS=` text kept.
pub const MAX_STATUS: usize = 256;

/// Where the socket lives: a file system path or an abstract name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyAddr {
    Path(String),
    Abstract(String),
}

impl NotifyAddr {
    /// `@name` is abstract, anything else a path.
    pub fn parse(s: &str) -> NotifyAddr {
        match s.strip_prefix('@') {
            Some(name) => NotifyAddr::Abstract(name.to_string()),
            None => NotifyAddr::Path(s.to_string()),
        }
    }

    /// The value of `NOTIFY_SOCKET` for jobs.
    pub fn env_value(&self) -> String {
        match self {
            NotifyAddr::Path(p) => p.clone(),
            NotifyAddr::Abstract(n) => format!("@{n}"),
        }
    }
}

/// Creates the notification socket (non-blocking, close-on-exec, credentials on).
/// A path socket is mode 0666: jobs run as any user, and what a sender may say is
/// decided by its pid.
pub fn bind(addr: &NotifyAddr) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::sockopt::set_socket_passcred(&fd, true)?;
    match addr {
        NotifyAddr::Path(p) => {
            let path = std::path::Path::new(p);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
            rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o666))?;
        }
        NotifyAddr::Abstract(name) => {
            rustix::net::bind(&fd, &SocketAddrUnix::new_abstract_name(name.as_bytes())?)?;
        }
    }
    Ok(fd)
}

/// One datagram: who sent it and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The sender's pid as the kernel saw it (0 if it is outside our PID namespace).
    pub pid: i32,
    pub updates: Vec<Update>,
}

/// What a notification says, in the order it says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    Ready,
    Reloading,
    Stopping,
    Status(String),
    MainPid(i32),
}

/// The most fds one datagram can carry (the kernel's `SCM_MAX_FD`): the control
/// buffer holds them all, so none is cut off in practice.
const MAX_FDS: usize = 253;

/// Reads the next datagram without consuming it (`Ok(None)`: nothing waiting);
/// [`discard`] consumes it once what it said is saved. A datagram without
/// credentials (impossible with `SO_PASSCRED` on) is consumed and skipped.
///
/// Any fds sent along are closed before this returns: keel implements no
/// protocol that takes fds (`FDSTORE=1`), and any local user may send some. A
/// peek installs copies of them (close-on-exec), and every one the kernel wrote
/// into the control buffer is closed — also when it was truncated
/// (`MSG_CTRUNC`): the kernel then installs only the fds that fit and closes the
/// rest itself. (nix's iterator refuses a truncated buffer, which left those
/// installed: one leak per datagram.) The control data is walked with
/// `CMSG_FIRSTHDR`/`CMSG_NXTHDR` here because rustix's parser reads the pid into
/// a non-zero type, and a sender outside keel's PID namespace has pid 0.
pub fn peek(fd: BorrowedFd<'_>) -> io::Result<Option<Datagram>> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; MAX_DATAGRAM];
    // u64s: aligned for `cmsghdr`.
    let mut control = [0u64; control_words()];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid (no name, no iov, no control).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | libc::MSG_PEEK;
        // SAFETY: msg points at `iov` and `control`, both alive and as long as
        // said; the kernel writes within them.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
        if n < 0 {
            match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                e if e.kind() == io::ErrorKind::Interrupted => continue,
                e => return Err(e),
            }
        }
        let pid = close_fds_and_find_pid(&msg);
        let Some(pid) = pid else {
            discard(fd)?;
            continue;
        };
        return Ok(Some(Datagram {
            pid,
            updates: parse(&buf[..(n as usize).min(MAX_DATAGRAM)]),
        }));
    }
}

/// The control buffer's size in u64s: credentials and `MAX_FDS` fds.
const fn control_words() -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let bytes = unsafe {
        libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32)
            + libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<i32>()) as u32)
    } as usize;
    bytes.div_ceil(8)
}

/// Walks the control messages `recvmsg` wrote: closes every fd of every
/// `SCM_RIGHTS`, returns the sender's pid from `SCM_CREDENTIALS`.
fn close_fds_and_find_pid(msg: &libc::msghdr) -> Option<i32> {
    let mut pid = None;
    // SAFETY: `msg` was filled by recvmsg: CMSG_FIRSTHDR/NXTHDR stay within
    // `msg_controllen` (what the kernel wrote), each header's data lies within
    // its `cmsg_len`, and the data is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            let len = (header.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            match (header.cmsg_level, header.cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    for i in 0..len / std::mem::size_of::<i32>() {
                        let raw = data.cast::<i32>().add(i).read_unaligned();
                        // The kernel installed this fd for us alone; closing it
                        // is all we do with it.
                        libc::close(raw);
                    }
                }
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                    if len >= std::mem::size_of::<libc::ucred>() =>
                {
                    pid = Some(data.cast::<libc::ucred>().read_unaligned().pid);
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    pid
}

/// Consumes the next datagram (the one [`peek`] returned).
pub fn discard(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut buf = [0u8; 1];
    loop {
        match rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The assignments keel understands, in order; malformed lines are skipped.
pub fn parse(datagram: &[u8]) -> Vec<Update> {
    let text = String::from_utf8_lossy(datagram);
    text.split('\n')
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            Some(match key {
                "READY" if value == "1" => Update::Ready,
                "RELOADING" if value == "1" => Update::Reloading,
                "STOPPING" if value == "1" => Update::Stopping,
                "STATUS" => Update::Status(value.chars().take(MAX_STATUS).collect()),
                "MAINPID" => Update::MainPid(value.parse().ok().filter(|&p: &i32| p > 1)?),
                _ => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn assignments_parse_in_order_and_unknown_ones_are_ignored() {
        assert_eq!(
            parse(b"STATUS=warming up\nREADY=1\nWATCHDOG=1\nMAINPID=77\nbogus\n"),
            vec![
                Update::Status("warming up".into()),
                Update::Ready,
                Update::MainPid(77)
            ]
        );
        assert_eq!(
            parse(b"READY=0\nMAINPID=1\nMAINPID=x\nRELOADING=1\nSTOPPING=1"),
            vec![Update::Reloading, Update::Stopping]
        );
        let long = format!("STATUS={}", "x".repeat(1000));
        assert_eq!(
            parse(long.as_bytes()),
            vec![Update::Status("x".repeat(MAX_STATUS))]
        );
        assert_eq!(parse(&[0xff, 0xfe, b'\n']), vec![]);
    }

    /// The write end of a pipe sent many times over: once every copy is closed
    /// the read end sees end-of-file. Any copy kept would leave it open.
    #[test]
    fn fds_sent_along_are_all_closed_by_a_peek() {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        use std::os::fd::AsRawFd;
        let name = format!("keel-notify-fds-{}", std::process::id());
        let fd = bind(&NotifyAddr::Abstract(name.clone())).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).unwrap();
        let target = nix::sys::socket::UnixAddr::new_abstract(name.as_bytes()).unwrap();
        for count in [1, 8, 9, 100, MAX_FDS] {
            let fds = vec![write.as_raw_fd(); count];
            let iov = [io::IoSlice::new(b"STATUS=fds")];
            sendmsg(
                client.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                Some(&target),
            )
            .unwrap();
        }
        drop(write);
        for _ in 0..5 {
            let got = peek(fd.as_fd()).unwrap().unwrap();
            assert_eq!(got.updates, vec![Update::Status("fds".into())]);
            // Peeked twice: two sets of copies, both closed.
            assert_eq!(peek(fd.as_fd()).unwrap().unwrap(), got);
            discard(fd.as_fd()).unwrap();
        }
        assert_eq!(peek(fd.as_fd()).unwrap(), None);
        let mut byte = [0u8; 1];
        assert_eq!(
            rustix::io::read(&read, &mut byte),
            Ok(0),
            "a copy of the pipe's write end is still open"
        );
    }

    #[test]
    fn a_datagram_arrives_with_its_senders_pid() {
        let dir = std::env::temp_dir().join(format!("keel-notify-{}", std::process::id()));
        let path = dir.join("notify");
        let addr = NotifyAddr::Path(path.display().to_string());
        let fd = bind(&addr).unwrap();
        assert_eq!(peek(fd.as_fd()).unwrap(), None);
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        client.send_to(b"STATUS=second", &path).unwrap();
        let got = peek(fd.as_fd()).unwrap().unwrap();
        assert_eq!(got.pid, std::process::id() as i32);
        assert_eq!(
            got.updates,
            vec![Update::Ready, Update::Status("up".into())]
        );
        // A peek consumes nothing; a discard consumes one datagram.
        assert_eq!(peek(fd.as_fd()).unwrap().unwrap(), got);
        discard(fd.as_fd()).unwrap();
        let second = peek(fd.as_fd()).unwrap().unwrap();
        assert_eq!(second.updates, vec![Update::Status("second".into())]);
        let _ = std::fs::remove_dir_all(&dir);

        let name = format!("keel-notify-test-{}", std::process::id());
        let addr = NotifyAddr::parse(&format!("@{name}"));
        assert_eq!(addr, NotifyAddr::Abstract(name.clone()));
        let fd = bind(&addr).unwrap();
        use std::os::linux::net::SocketAddrExt;
        let target = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        client.send_to_addr(b"READY=1", &target).unwrap();
        assert_eq!(
            peek(fd.as_fd()).unwrap().unwrap().updates,
            vec![Update::Ready]
        );
    }
}
