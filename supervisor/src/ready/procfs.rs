//! What readiness needs to know about a process, read from `/proc`: its state
//! (stopped?), its parent, its cgroup, whether it listens on a socket.
//!
//! Each function reads a few small files and returns `None`/`false` when the process
//! is gone or the file does not parse: a process can end at any moment, and what it
//! left behind is never trusted to be well-formed.

use std::path::{Path, PathBuf};

/// The fields of `/proc/PID/stat` readiness uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `T` (stopped), `t` (traced), `Z` (zombie), …
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
}

/// Parses the text of `/proc/PID/stat`. The command name is in parentheses and may
/// itself hold spaces and parentheses, so the fields start after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        pgrp,
        session,
    })
}

fn proc_dir(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(proc_dir(pid).join("stat")).ok()?)
}

/// The process's command name (`/proc/PID/comm`).
pub fn comm(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(proc_dir(pid).join("comm")).ok()?;
    Some(text.trim_end_matches('\n').to_string())
}

/// Whether a process the supervisor cloned has exec'd its program: until then it
/// is a copy of the supervisor (named `keel-spawn` once it renames itself) and holds
/// copies of the supervisor's fds, the listening control socket among them.
pub fn has_execd(pid: i32) -> bool {
    let own = comm(std::process::id() as i32);
    comm(pid).is_some_and(|c| c != "keel-spawn" && Some(&c) != own.as_ref())
}

/// Whether the process is stopped by a signal (`expect stop`).
pub fn is_stopped(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state == 'T')
}

/// The cgroup v2 path of the process (`0::/PATH` in `/proc/PID/cgroup`).
pub fn cgroup_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(proc_dir(pid).join("cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Whether `pid` holds a listening socket (`expect listen`): one of its fds is a
/// socket whose inode is in the LISTEN state in its network namespace's tables.
pub fn listens(pid: i32) -> bool {
    let dir = proc_dir(pid);
    let inodes = socket_inodes(&dir);
    if inodes.is_empty() {
        return false;
    }
    let net = dir.join("net");
    ["tcp", "tcp6"]
        .iter()
        .any(|t| table_has(&net.join(t), &inodes, inet_listening))
        || table_has(&net.join("unix"), &inodes, unix_listening)
}

fn socket_inodes(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir.join("fd")) else {
        return Vec::new();
    };
    let mut inodes: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let s = target.to_str()?;
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    inodes.sort_unstable();
    inodes
}

fn table_has(path: &Path, inodes: &[u64], listening: fn(&str) -> Option<u64>) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.lines()
            .skip(1)
            .filter_map(listening)
            .any(|inode| inodes.binary_search(&inode).is_ok())
    })
}

/// The inode of a `/proc/net/tcp{,6}` line in state LISTEN (`0A`).
pub fn inet_listening(line: &str) -> Option<u64> {
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    let f: Vec<&str> = line.split_whitespace().collect();
    (f.get(3)? == &"0A").then_some(())?;
    f.get(9)?.parse().ok()
}

/// The inode of a `/proc/net/unix` line of a listening socket (`__SO_ACCEPTCON`
/// in its flags).
pub fn unix_listening(line: &str) -> Option<u64> {
    // Num RefCount Protocol Flags Type St Inode [Path]
    let f: Vec<&str> = line.split_whitespace().collect();
    let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
    (flags & 0x0001_0000 != 0).then_some(())?;
    f.get(6)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_any_command_name() {
        let s = parse_stat("42 (my (odd) name) T 1 42 42 34816 42 4194560 ...").unwrap();
        assert_eq!(
            s,
            Stat {
                state: 'T',
                ppid: 1,
                pgrp: 42,
                session: 42
            }
        );
        assert_eq!(parse_stat("42 (x"), None);
        assert_eq!(parse_stat("42 (x) S notanumber"), None);
    }

    #[test]
    fn listening_lines_are_recognised() {
        let tcp = "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0";
        assert_eq!(inet_listening(tcp), Some(123456));
        let established = tcp.replacen(" 0A ", " 01 ", 1);
        assert_eq!(inet_listening(&established), None);
        let unix = "0000000000000000: 00000002 00000000 00010000 0001 01 98765 /run/x.sock";
        assert_eq!(unix_listening(unix), Some(98765));
        let unix_conn = "0000000000000000: 00000002 00000000 00000000 0001 03 98766";
        assert_eq!(unix_listening(unix_conn), None);
        assert_eq!(unix_listening("garbage"), None);
    }

    #[test]
    fn this_process_is_seen_listening_once_it_listens() {
        let me = std::process::id() as i32;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(listens(me));
        drop(listener);
        assert!(stat(me).is_some_and(|s| s.state != 'T'));
        assert!(!is_stopped(me));
    }
}
