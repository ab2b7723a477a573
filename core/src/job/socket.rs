//! Socket activation's half in the job language: `start on socket PROTO=inet
//! PORT=80 [ADDR=127.0.0.1]`, `PROTO=inet6 PORT=80 [ADDR=::1]`, `PROTO=unix
//! PATH=/run/x.sock` (or `PATH=@name`, an abstract socket), as Upstart's
//! upstart-socket-bridge reads them.
//!
//! Upstart's bridge emitted a unix socket's path as `SOCKET_PATH` (a `PATH`
//! would have replaced the job's own `PATH`), so its `start on socket PROTO=unix
//! PATH=…` could never match its own event. keel reads `PATH=` there as
//! `SOCKET_PATH=` ([`normalize`]), so both spellings match the event, and the
//! job's `PATH` stays its own.
//!
//! This module owns what such an event must say ([`SocketSpec::from_event`]) and
//! the variables of the `socket` event for one ([`SocketSpec::event_env`]); it
//! binds nothing. Where Upstart's bridge warned and ignored the job, keel refuses
//! the job file with an error at the argument (a port that is no port, an address
//! or path that is none, a variable the bridge does not know, a pattern where a
//! socket needs a literal value), so a typo never leaves a service unreachable
//! without a word.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ArgMatch, EventMatch, JobDef};

/// The event's name.
pub const EVENT: &str = "socket";

/// The longest unix socket path (`sun_path` holds 108 bytes with its NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// A listening socket a job is started on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketSpec {
    /// `PROTO=inet`: `ADDR` defaults to 0.0.0.0, as in Upstart.
    Inet { addr: Ipv4Addr, port: u16 },
    /// `PROTO=inet6` (`IPV6_V6ONLY`): `ADDR` defaults to `::`.
    Inet6 { addr: Ipv6Addr, port: u16 },
    /// `PROTO=unix`: a path (absolute), or `@name` for an abstract socket.
    Unix { path: String },
}

/// A problem with a `socket` event: the index of the argument at fault (`None`:
/// the event as a whole) and the message.
pub type SpecError = (Option<usize>, String);

impl SocketSpec {
    /// The socket a `start on` event `socket …` describes.
    pub fn from_event(event: &EventMatch) -> Result<SocketSpec, SpecError> {
        let mut proto = None;
        let mut port = None;
        let mut addr = None;
        let mut path = None;
        for (i, arg) in event.args.iter().enumerate() {
            let fail = |message: String| Err((Some(i), message));
            let key = key_of(EVENT, i, arg)?;
            if arg.value.contains(['*', '?', '[', '$']) {
                return fail(format!(
                    "socket {key}: a socket needs a literal value, found '{}'",
                    arg.value
                ));
            }
            let slot = match key {
                "PROTO" => &mut proto,
                "PORT" => &mut port,
                "ADDR" => &mut addr,
                "PATH" | "SOCKET_PATH" => &mut path,
                other => {
                    return fail(format!(
                        "socket: unknown variable {other} (known: PROTO, PORT, ADDR, PATH)"
                    ));
                }
            };
            if slot.is_some() {
                return fail(format!("socket: {key} given twice"));
            }
            *slot = Some((i, arg.value.as_str()));
        }
        let Some((proto_at, proto)) = proto else {
            return Err((None, "socket: PROTO=inet, inet6 or unix is missing".into()));
        };
        let not_for = |at: Option<(usize, &str)>, key: &str| match at {
            Some((i, _)) => Err((Some(i), format!("socket: {key} is not for PROTO={proto}"))),
            None => Ok(()),
        };
        match proto {
            "inet" | "inet6" => {
                not_for(path, "PATH")?;
                let Some((port_at, port)) = port else {
                    return Err((None, format!("socket: PORT is missing for PROTO={proto}")));
                };
                // Written as the event will carry it, or `PORT=080` would never
                // match the event `PORT=80` it names.
                let port = match port.parse::<u16>() {
                    Ok(n) if n > 0 && n.to_string() == port => n,
                    _ => {
                        return Err((
                            Some(port_at),
                            format!("socket: PORT={port} is not a port (1-65535)"),
                        ));
                    }
                };
                let spec = if proto == "inet" {
                    let parsed = addr.map(|(_, text)| text.parse::<Ipv4Addr>());
                    match parsed {
                        None => Ok(SocketSpec::Inet {
                            addr: Ipv4Addr::UNSPECIFIED,
                            port,
                        }),
                        Some(Ok(addr)) => Ok(SocketSpec::Inet { addr, port }),
                        Some(Err(_)) => Err(()),
                    }
                } else {
                    let parsed = addr.map(|(_, text)| text.parse::<Ipv6Addr>());
                    match parsed {
                        None => Ok(SocketSpec::Inet6 {
                            addr: Ipv6Addr::UNSPECIFIED,
                            port,
                        }),
                        Some(Ok(addr)) => Ok(SocketSpec::Inet6 { addr, port }),
                        Some(Err(_)) => Err(()),
                    }
                };
                let (at, text) = addr.unwrap_or((0, ""));
                match spec {
                    Err(()) => Err((
                        Some(at),
                        format!("socket: ADDR={text} is not an {proto} address"),
                    )),
                    // Written as the event will carry it (see PORT).
                    Ok(spec) if addr.is_some() && spec.address() != text => Err((
                        Some(at),
                        format!("socket: write ADDR={text} as ADDR={}", spec.address()),
                    )),
                    Ok(spec) => Ok(spec),
                }
            }
            "unix" => {
                not_for(port, "PORT")?;
                not_for(addr, "ADDR")?;
                let Some((path_at, path)) = path else {
                    return Err((None, "socket: PATH is missing for PROTO=unix".into()));
                };
                let named = path.starts_with('/') || (path.starts_with('@') && path.len() > 1);
                if !named {
                    return Err((
                        Some(path_at),
                        format!("socket: PATH={path} is neither absolute nor @abstract"),
                    ));
                }
                if path.len() > MAX_UNIX_PATH {
                    return Err((
                        Some(path_at),
                        format!("socket: PATH is longer than {MAX_UNIX_PATH} bytes"),
                    ));
                }
                Ok(SocketSpec::Unix { path: path.into() })
            }
            other => Err((
                Some(proto_at),
                format!("socket: unknown PROTO={other} (inet, inet6 or unix)"),
            )),
        }
    }

    /// The address as the event's `ADDR` carries it (`127.0.0.1`, `::1`); the
    /// path for a unix socket.
    pub fn address(&self) -> String {
        match self {
            SocketSpec::Inet { addr, .. } => addr.to_string(),
            SocketSpec::Inet6 { addr, .. } => addr.to_string(),
            SocketSpec::Unix { path } => path.clone(),
        }
    }

    /// The variables of the `socket` event for this socket, as Upstart's bridge
    /// set them: `PROTO`, `PORT`, `ADDR`; for unix `SOCKET_PATH`.
    pub fn event_env(&self) -> Vec<(String, String)> {
        let pair = |k: &str, v: String| (k.to_string(), v);
        match self {
            SocketSpec::Inet { port, .. } => vec![
                pair("PROTO", "inet".into()),
                pair("PORT", port.to_string()),
                pair("ADDR", self.address()),
            ],
            SocketSpec::Inet6 { port, .. } => vec![
                pair("PROTO", "inet6".into()),
                pair("PORT", port.to_string()),
                pair("ADDR", self.address()),
            ],
            SocketSpec::Unix { path } => vec![
                pair("PROTO", "unix".into()),
                pair("SOCKET_PATH", path.clone()),
            ],
        }
    }
}

/// A `socket` event of `start on` as keel keeps it: `PATH=` read as
/// `SOCKET_PATH=`, the variable the event carries (see the module docs).
pub fn normalize(event: &mut EventMatch) {
    for arg in &mut event.args {
        if arg.key.as_deref() == Some("PATH") {
            arg.key = Some("SOCKET_PATH".into());
        }
    }
}

/// The key of argument `i` of a condition an event source serves (`socket`,
/// `file`): it takes `KEY=VALUE` arguments only.
pub(super) fn key_of<'a>(event: &str, i: usize, arg: &'a ArgMatch) -> Result<&'a str, SpecError> {
    match arg {
        ArgMatch { key: None, .. } => Err((
            Some(i),
            format!("{event} takes KEY=VALUE arguments, found '{}'", arg.value),
        )),
        ArgMatch { negated: true, .. } => Err((
            Some(i),
            format!("{event} takes KEY=VALUE arguments, not KEY!=VALUE"),
        )),
        ArgMatch { key: Some(key), .. } => Ok(key),
    }
}

/// The sockets a job is started on: each `socket` event its `start on` names
/// (none for a `manual` job), each once.
pub fn job_sockets(def: &JobDef) -> Vec<SocketSpec> {
    def.condition_specs(EVENT, false, SocketSpec::from_event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse;

    fn sockets(text: &str) -> Vec<SocketSpec> {
        let parsed = parse("j", text);
        let def = parsed
            .def
            .unwrap_or_else(|| panic!("{text:?}: {:?}", parsed.diagnostics));
        job_sockets(&def)
    }

    fn error(text: &str) -> String {
        let parsed = parse("j", text);
        assert_eq!(parsed.def, None, "{text:?} must be refused");
        parsed.diagnostics[0].render("j.conf")
    }

    #[test]
    fn every_form_upstart_reads_is_a_socket() {
        assert_eq!(
            sockets("start on socket PROTO=inet PORT=80 ADDR=127.0.0.1\nexec d\n"),
            [SocketSpec::Inet {
                addr: Ipv4Addr::LOCALHOST,
                port: 80
            }]
        );
        assert_eq!(
            sockets(
                "start on socket PROTO=inet PORT=8080 or socket PROTO=inet6 PORT=8080 ADDR=::1\nexec d\n"
            ),
            [
                SocketSpec::Inet {
                    addr: Ipv4Addr::UNSPECIFIED,
                    port: 8080
                },
                SocketSpec::Inet6 {
                    addr: Ipv6Addr::LOCALHOST,
                    port: 8080
                },
            ]
        );
        assert_eq!(
            sockets(
                "start on (socket PROTO=unix PATH=/run/a.sock or socket PROTO=unix PATH=@b)\nexec d\n"
            ),
            [
                SocketSpec::Unix {
                    path: "/run/a.sock".into()
                },
                SocketSpec::Unix { path: "@b".into() },
            ]
        );
        assert!(sockets("manual\nstart on socket PROTO=inet PORT=1\nmanual\nexec d\n").is_empty());
        // `stop on socket` is an ordinary event: nothing to bind, nothing checked.
        assert!(sockets("stop on socket PORT=x\nexec d\n").is_empty());
    }

    #[test]
    fn a_socket_keel_cannot_bind_is_an_error_at_its_argument() {
        // (arguments, the word the error points at, message)
        let cases = [
            (
                "PROTO=inet PORT=99999",
                "PORT",
                "PORT=99999 is not a port (1-65535)",
            ),
            (
                "PROTO=inet PORT=0",
                "PORT",
                "PORT=0 is not a port (1-65535)",
            ),
            (
                "PROTO=inet PORT=http",
                "PORT",
                "PORT=http is not a port (1-65535)",
            ),
            (
                "PROTO=inet PORT=080",
                "PORT",
                "PORT=080 is not a port (1-65535)",
            ),
            (
                "PROTO=inet6 PORT=80 ADDR=0:0:0:0:0:0:0:1",
                "ADDR",
                "write ADDR=0:0:0:0:0:0:0:1 as ADDR=::1",
            ),
            ("PROTO=inet", "socket", "PORT is missing for PROTO=inet"),
            ("PORT=80", "socket", "PROTO=inet, inet6 or unix is missing"),
            (
                "PROTO=tcp PORT=80",
                "PROTO",
                "unknown PROTO=tcp (inet, inet6 or unix)",
            ),
            (
                "PROTO=inet PORT=80 ADDR=1.2.3",
                "ADDR",
                "ADDR=1.2.3 is not an inet address",
            ),
            (
                "PROTO=inet6 PORT=80 ADDR=127.0.0.1",
                "ADDR",
                "ADDR=127.0.0.1 is not an inet6 address",
            ),
            (
                "PROTO=inet PORT=80 PATH=/x",
                "PATH",
                "PATH is not for PROTO=inet",
            ),
            (
                "PROTO=unix PATH=run/x",
                "PATH",
                "PATH=run/x is neither absolute nor @abstract",
            ),
            (
                "PROTO=unix PATH=@",
                "PATH",
                "PATH=@ is neither absolute nor @abstract",
            ),
            ("PROTO=unix", "socket", "PATH is missing for PROTO=unix"),
            (
                "PROTO=unix PATH=/x PORT=1",
                "PORT",
                "PORT is not for PROTO=unix",
            ),
            (
                "PROTO=unix PATHS=/x",
                "PATHS",
                "unknown variable PATHS (known: PROTO, PORT, ADDR, PATH)",
            ),
            (
                "PROTO=unix PATH=/x SOCKET_PATH=/y",
                "SOCKET_PATH",
                "SOCKET_PATH given twice",
            ),
            ("PROTO=inet PORT=80 PORT=81", "PORT=81", "PORT given twice"),
        ];
        for (args, word, message) in cases {
            let text = format!("start on socket {args}\nexec d\n");
            let col = text.find(word).unwrap() + 1;
            assert_eq!(
                error(&text),
                format!("j.conf:1:{col}: error: socket: {message}"),
                "{text:?}"
            );
        }
        let not_literal = [
            (
                "PROTO=inet PORT=8*",
                "PORT",
                "socket PORT: a socket needs a literal value, found '8*'",
            ),
            (
                "PROTO=unix PATH=$P",
                "PATH",
                "socket PATH: a socket needs a literal value, found '$P'",
            ),
            (
                "PROTO=inet PORT!=80",
                "PORT",
                "socket takes KEY=VALUE arguments, not KEY!=VALUE",
            ),
            (
                "inet PORT=80",
                "inet",
                "socket takes KEY=VALUE arguments, found 'inet'",
            ),
        ];
        for (args, word, message) in not_literal {
            let text = format!("start on socket {args}\nexec d\n");
            let col = text.find(word).unwrap() + 1;
            assert_eq!(error(&text), format!("j.conf:1:{col}: error: {message}"));
        }
        let long = format!(
            "start on socket PROTO=unix PATH=/{}\nexec d\n",
            "x".repeat(107)
        );
        assert_eq!(
            error(&long),
            "j.conf:1:28: error: socket: PATH is longer than 107 bytes",
            "PATH starts at column 28"
        );
    }

    #[test]
    fn the_event_carries_upstarts_variables_and_matches_its_own_start_on() {
        let cases = [
            (
                "socket PROTO=inet PORT=80 ADDR=127.0.0.1",
                "PROTO=inet PORT=80 ADDR=127.0.0.1",
            ),
            ("socket PROTO=inet6 PORT=80", "PROTO=inet6 PORT=80 ADDR=::"),
            (
                "socket PROTO=unix PATH=/run/a",
                "PROTO=unix SOCKET_PATH=/run/a",
            ),
            (
                "socket PROTO=unix SOCKET_PATH=@b",
                "PROTO=unix SOCKET_PATH=@b",
            ),
        ];
        for (condition, env) in cases {
            let def = parse("j", &format!("start on {condition}\nexec d\n"))
                .def
                .unwrap();
            let spec = job_sockets(&def).remove(0);
            let words: Vec<String> = spec
                .event_env()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            assert_eq!(words.join(" "), env);
            let event = crate::events::Event {
                name: EVENT.into(),
                env: spec.event_env(),
            };
            let leaf = def.start_on.as_ref().unwrap().leaves()[0];
            assert!(crate::events::matches(leaf, &event, &[]), "{condition}");
        }
    }
}
