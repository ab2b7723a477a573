//! Socket activation's runtime half: the listening sockets of `start on socket …`
//! (which sockets those are is the core's, [`crate::job::socket`]).
//!
//! This module owns the sockets: it binds each one some job is started on, keeps
//! it in keel-init's lifeboat (so a supervisor that crashes or re-executes takes
//! the very same socket back, with the connections waiting in its backlog), closes
//! the ones no job names any more, and tells the runtime which socket an epoll
//! token is. A socket is watched edge-triggered, as Upstart's bridge did: one
//! `socket` event when connections arrive, none while they wait to be accepted.
//! The runtime emits the event and hands the socket to the job's processes (fd 3,
//! `LISTEN_FDS=1`, `UPSTART_FDS=3`).
//!
//! A successor recognises the sockets in the lifeboat by asking the kernel what
//! each is bound to (`getsockname`), not by their lifeboat names (which only need
//! to be distinct: `socket:N`).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileTypeExt;

use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketAddrAny, SocketFlags, SocketType};

use crate::initlink::InitLink;
use crate::job::socket::SocketSpec;

/// The lifeboat names of the sockets.
pub const LIFEBOAT_PREFIX: &str = "socket:";

/// The epoll tokens of the sockets: this bit, and the socket's number.
pub const TOKEN_SOCKET: u64 = 1 << 50;

/// One listening socket.
pub struct Held {
    pub fd: OwnedFd,
    /// Its number: its lifeboat name is `socket:N`, its epoll token
    /// `TOKEN_SOCKET | N`.
    number: u64,
}

/// Every listening socket, by what it is.
#[derive(Default)]
pub struct Sockets {
    held: BTreeMap<SocketSpec, Held>,
    next: u64,
}

impl Sockets {
    /// The sockets a previous supervisor left in the lifeboat (entries named
    /// [`LIFEBOAT_PREFIX`]…); one the kernel cannot name is dropped with a warning.
    pub fn recover(entries: Vec<(String, OwnedFd)>) -> Sockets {
        let mut sockets = Sockets::default();
        for (name, fd) in entries {
            let number = name
                .strip_prefix(LIFEBOAT_PREFIX)
                .and_then(|n| n.parse::<u64>().ok());
            match (number, spec_of(&fd)) {
                (Some(number), Some(spec)) => {
                    sockets.next = sockets.next.max(number + 1);
                    sockets.held.insert(spec, Held { fd, number });
                }
                _ => tracing::warn!("lifeboat entry {name} is no socket keel can name"),
            }
        }
        sockets
    }

    /// Watches every socket held (a successor's first step: its epoll is new).
    /// Edge-triggered: a socket with connections waiting is reported once now.
    pub fn watch_all(&self, epoll: &OwnedFd) {
        for held in self.held.values() {
            watch(epoll, held);
        }
    }

    /// The socket an epoll token names.
    pub fn by_token(&self, token: u64) -> Option<&SocketSpec> {
        let number = token & !TOKEN_SOCKET;
        self.held
            .iter()
            .find(|(_, h)| h.number == number)
            .map(|(s, _)| s)
    }

    /// The socket for `spec`, if held.
    pub fn get(&self, spec: &SocketSpec) -> Option<&OwnedFd> {
        self.held.get(spec).map(|h| &h.fd)
    }

    /// Every socket held, in a fixed order (its index is its epoll token's).
    pub fn iter(&self) -> impl Iterator<Item = (&SocketSpec, &OwnedFd)> {
        self.held.iter().map(|(s, h)| (s, &h.fd))
    }

    /// Holds exactly the sockets `wanted` names: binds (and deposits) the new ones,
    /// closes (and withdraws) the ones no longer named. Returns the problems met
    /// (a socket that cannot be bound is named with the reason; the others go on).
    pub fn sync(
        &mut self,
        wanted: &[SocketSpec],
        link: Option<&InitLink>,
        epoll: Option<&OwnedFd>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let gone: Vec<SocketSpec> = self
            .held
            .keys()
            .filter(|s| !wanted.contains(s))
            .cloned()
            .collect();
        for spec in gone {
            if let Some(held) = self.held.remove(&spec) {
                if let Some(epoll) = epoll {
                    let _ = rustix::event::epoll::delete(epoll, &held.fd);
                }
                if let Some(link) = link {
                    let _ = link.withdraw(&lifeboat_name(held.number));
                }
                if let SocketSpec::Unix { path } = &spec {
                    remove_socket_file(path);
                }
            }
        }
        for spec in wanted {
            if self.held.contains_key(spec) {
                continue;
            }
            match bind(spec) {
                Ok(fd) => {
                    let held = Held {
                        fd,
                        number: self.next,
                    };
                    self.next += 1;
                    if let Some(link) = link
                        && let Err(e) = link.deposit(&lifeboat_name(held.number), held.fd.as_fd())
                    {
                        problems.push(format!(
                            "socket {}: cannot keep it in the lifeboat: {e}",
                            describe(spec)
                        ));
                    }
                    if let Some(epoll) = epoll {
                        watch(epoll, &held);
                    }
                    self.held.insert(spec.clone(), held);
                }
                Err(e) => problems.push(format!("socket {}: cannot listen: {e}", describe(spec))),
            }
        }
        problems
    }
}

fn lifeboat_name(number: u64) -> String {
    format!("{LIFEBOAT_PREFIX}{number}")
}

fn watch(epoll: &OwnedFd, held: &Held) {
    use rustix::event::epoll;
    let added = epoll::add(
        epoll,
        &held.fd,
        epoll::EventData::new_u64(TOKEN_SOCKET | held.number),
        epoll::EventFlags::IN | epoll::EventFlags::ET,
    );
    if let Err(e) = added {
        tracing::error!("cannot watch a listening socket: {e}");
    }
}

/// `PROTO=inet PORT=80 ADDR=0.0.0.0`, for messages.
pub fn describe(spec: &SocketSpec) -> String {
    spec.event_env()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A stale socket file of a unix socket is removed (a previous boot's, or one
/// of ours no job names); any other file at the path is left alone (and the bind
/// then fails, saying so).
fn remove_socket_file(path: &str) {
    if path.starts_with('/')
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
    {
        let _ = std::fs::remove_file(path);
    }
}

/// A listening stream socket for `spec`: non-blocking, close-on-exec, with
/// `SO_REUSEADDR` (and `IPV6_V6ONLY` for inet6) as Upstart's bridge set them.
fn bind(spec: &SocketSpec) -> io::Result<OwnedFd> {
    let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
    let fd = match spec {
        SocketSpec::Inet { addr, port } => {
            let fd =
                rustix::net::socket_with(AddressFamily::INET, SocketType::STREAM, flags, None)?;
            rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
            rustix::net::bind(&fd, &std::net::SocketAddrV4::new(*addr, *port))?;
            fd
        }
        SocketSpec::Inet6 { addr, port } => {
            let fd =
                rustix::net::socket_with(AddressFamily::INET6, SocketType::STREAM, flags, None)?;
            rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
            rustix::net::sockopt::set_ipv6_v6only(&fd, true)?;
            rustix::net::bind(&fd, &std::net::SocketAddrV6::new(*addr, *port, 0, 0))?;
            fd
        }
        SocketSpec::Unix { path } => {
            let fd =
                rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)?;
            let addr = match path.strip_prefix('@') {
                Some(name) => rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes())?,
                None => {
                    remove_socket_file(path);
                    rustix::net::SocketAddrUnix::new(path.as_str())?
                }
            };
            rustix::net::bind(&fd, &addr)?;
            fd
        }
    };
    rustix::net::listen(&fd, libc::SOMAXCONN)?;
    Ok(fd)
}

/// What a listening socket is bound to, as a [`SocketSpec`].
fn spec_of(fd: &OwnedFd) -> Option<SocketSpec> {
    let addr = rustix::net::getsockname(fd).ok()?;
    match addr.address_family() {
        AddressFamily::INET | AddressFamily::INET6 => {
            match std::net::SocketAddr::try_from(addr).ok()? {
                std::net::SocketAddr::V4(a) => Some(SocketSpec::Inet {
                    addr: *a.ip(),
                    port: a.port(),
                }),
                std::net::SocketAddr::V6(a) => Some(SocketSpec::Inet6 {
                    addr: *a.ip(),
                    port: a.port(),
                }),
            }
        }
        AddressFamily::UNIX => unix_spec(addr),
        _ => None,
    }
}

fn unix_spec(addr: SocketAddrAny) -> Option<SocketSpec> {
    let unix = rustix::net::SocketAddrUnix::try_from(addr).ok()?;
    let path = match (unix.path(), unix.abstract_name()) {
        (Some(path), _) => path.to_str().ok()?.to_string(),
        (None, Some(name)) => format!("@{}", std::str::from_utf8(name).ok()?),
        (None, None) => return None,
    };
    Some(SocketSpec::Unix { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_socket_is_recognised_by_what_the_kernel_says_it_is() {
        let dir = std::env::temp_dir().join(format!("keel-sockets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock").display().to_string();
        let specs = [
            SocketSpec::Inet {
                addr: std::net::Ipv4Addr::LOCALHOST,
                port: 0,
            },
            SocketSpec::Unix { path: path.clone() },
            SocketSpec::Unix {
                path: format!("@keel-test-{}", std::process::id()),
            },
        ];
        for spec in &specs[1..] {
            let fd = bind(spec).unwrap();
            assert_eq!(spec_of(&fd).as_ref(), Some(spec));
        }
        // Port 0 is the kernel's choice: the socket then names its real port.
        let fd = bind(&specs[0]).unwrap();
        assert!(matches!(spec_of(&fd), Some(SocketSpec::Inet { port, .. }) if port > 0));

        // A stale socket file is replaced; a regular file is not.
        drop(bind(&specs[1]).unwrap());
        let again = bind(&specs[1]);
        assert!(again.is_ok(), "{again:?}");
        let plain = dir.join("plain").display().to_string();
        std::fs::write(&plain, "keep me").unwrap();
        let refused = bind(&SocketSpec::Unix {
            path: plain.clone(),
        });
        assert!(refused.is_err());
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sync_binds_what_is_named_and_closes_the_rest_and_recover_names_them_again() {
        let a = SocketSpec::Unix {
            path: format!("@keel-sync-a-{}", std::process::id()),
        };
        let b = SocketSpec::Unix {
            path: format!("@keel-sync-b-{}", std::process::id()),
        };
        let mut sockets = Sockets::default();
        assert!(sockets.sync(&[a.clone(), b.clone()], None, None).is_empty());
        assert_eq!(sockets.iter().count(), 2);
        assert_eq!(sockets.by_token(TOKEN_SOCKET | 1), Some(&b));
        assert!(
            sockets
                .sync(std::slice::from_ref(&b), None, None)
                .is_empty()
        );
        assert!(sockets.get(&a).is_none() && sockets.get(&b).is_some());
        // Binding the same address twice fails, and says which socket.
        let mut other = Sockets::default();
        let problems = other.sync(std::slice::from_ref(&b), None, None);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with(&format!(
                "socket PROTO=unix SOCKET_PATH={}: cannot listen:",
                match &b {
                    SocketSpec::Unix { path } => path,
                    _ => unreachable!(),
                }
            )),
            "{problems:?}"
        );
        // What a successor finds in the lifeboat.
        let fd = rustix::io::fcntl_dupfd_cloexec(sockets.get(&b).unwrap(), 0).unwrap();
        let recovered = Sockets::recover(vec![("socket:7".into(), fd)]);
        assert!(recovered.get(&b).is_some());
        assert_eq!(recovered.by_token(TOKEN_SOCKET | 7), Some(&b));
        assert_eq!(recovered.next, 8, "new names never repeat a kept one");
    }
}
