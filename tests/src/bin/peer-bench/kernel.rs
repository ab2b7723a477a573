//! What the benchmark reads from the kernel rather than from any manager: when
//! processes exec'd (the proc connector's timestamps), who they are (/proc), how
//! much memory they take (`smaps_rollup`).
//!
//! Exec times come from the kernel's proc connector (`NETLINK_CONNECTOR`,
//! `CN_IDX_PROC`): the kernel stamps every exec with `ktime_get_ns()` — the same
//! `CLOCK_MONOTONIC` as [`now_ns`] — as it happens, so neither a status tool nor
//! the benchmark's own polling skews the figure. (/proc's start time is the fork's,
//! in 10 ms clock ticks; keel forks a job before it lets it exec, so that would
//! flatter keel.)

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of the connector's timestamps.
pub fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid `t`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// An exec seen by the kernel: when (ns, `CLOCK_MONOTONIC`) and which process
/// (host tgid).
#[derive(Clone, Copy, Debug)]
pub struct Exec {
    pub ns: u64,
    pub pid: i32,
}

#[derive(Default)]
struct Log {
    execs: Vec<Exec>,
}

/// Every exec on the machine from the moment it starts, recorded by a thread that
/// does nothing but drain the connector socket.
pub struct ExecWatch {
    log: Arc<(Mutex<Log>, Condvar)>,
    lost: Arc<AtomicBool>,
}

// linux/connector.h, linux/cn_proc.h
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_EXEC: u32 = 2;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_HDRLEN: usize = 20;

impl ExecWatch {
    pub fn start() -> io::Result<ExecWatch> {
        // SAFETY: plain socket(2); the fd is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_CONNECTOR,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new socket nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // A burst of 2,000 execs must not overflow it (root may force the size).
        let size: libc::c_int = 64 << 20;
        // SAFETY: setsockopt reads one c_int from a valid pointer.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: bind reads a sockaddr_nl of the size given.
        let r = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // Listen, for exec events only (kernels since 6.6 filter on `event_type`;
        // older ones take the 4-byte form and send everything).
        let mut sent = false;
        for input in [
            &[PROC_CN_MCAST_LISTEN, PROC_EVENT_EXEC][..],
            &[PROC_CN_MCAST_LISTEN][..],
        ] {
            let payload: Vec<u8> = input.iter().flat_map(|w| w.to_ne_bytes()).collect();
            let total = NLMSG_HDRLEN + CN_MSG_HDRLEN + payload.len();
            let mut msg = Vec::with_capacity(total);
            msg.extend_from_slice(&(total as u32).to_ne_bytes()); // nlmsg_len
            msg.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes()); // nlmsg_type
            msg.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
            msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
            msg.extend_from_slice(&std::process::id().to_ne_bytes()); // nlmsg_pid
            msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // id.idx
            msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // id.val
            msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
            msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
            msg.extend_from_slice(&(payload.len() as u16).to_ne_bytes()); // len
            msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
            msg.extend_from_slice(&payload);
            // SAFETY: send reads `msg.len()` bytes from a valid buffer.
            let r = unsafe {
                libc::send(
                    sock.as_raw_fd(),
                    msg.as_ptr() as *const libc::c_void,
                    msg.len(),
                    0,
                )
            };
            if r == msg.len() as isize {
                sent = true;
                break;
            }
        }
        if !sent {
            return Err(io::Error::last_os_error());
        }
        let watch = ExecWatch {
            log: Arc::new((Mutex::new(Log::default()), Condvar::new())),
            lost: Arc::new(AtomicBool::new(false)),
        };
        let (log, lost) = (watch.log.clone(), watch.lost.clone());
        std::thread::Builder::new()
            .name("exec-watch".into())
            .spawn(move || drain(sock, &log, &lost))?;
        Ok(watch)
    }

    /// How many execs were recorded so far (a cursor for [`ExecWatch::since`]).
    pub fn mark(&self) -> usize {
        self.log.0.lock().expect("exec log").execs.len()
    }

    /// The execs recorded after cursor `from`.
    pub fn since(&self, from: usize) -> Vec<Exec> {
        let log = self.log.0.lock().expect("exec log");
        log.execs.get(from..).unwrap_or_default().to_vec()
    }

    /// Waits until more than `seen` execs are recorded, or `timeout` passes.
    pub fn wait_past(&self, seen: usize, timeout: Duration) {
        let (lock, cond) = &*self.log;
        let log = lock.lock().expect("exec log");
        let _ = cond
            .wait_timeout_while(log, timeout, |l| l.execs.len() <= seen)
            .expect("exec log");
    }

    /// Whether the kernel dropped events (the socket overflowed) at any point.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// The latest exec of `pid` at or after cursor `from`.
    pub fn last_exec_of(&self, pid: i32, from: usize) -> Option<u64> {
        let log = self.log.0.lock().expect("exec log");
        log.execs
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.pid == pid)
            .map(|e| e.ns)
            .max()
    }
}

fn drain(sock: OwnedFd, log: &(Mutex<Log>, Condvar), lost: &AtomicBool) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => {
                    lost.store(true, Ordering::Relaxed);
                    continue;
                }
                _ => return,
            }
        }
        let mut execs = Vec::new();
        let mut at = 0usize;
        let n = n as usize;
        while at + NLMSG_HDRLEN <= n {
            let word = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
            let len = word(at) as usize;
            if len < NLMSG_HDRLEN || at + len > n {
                break;
            }
            // struct proc_event: what, cpu, timestamp_ns (8-aligned), then the
            // exec data: process_pid, process_tgid.
            let ev = at + NLMSG_HDRLEN + CN_MSG_HDRLEN;
            if len >= NLMSG_HDRLEN + CN_MSG_HDRLEN + 24 && word(ev) == PROC_EVENT_EXEC {
                let ns = u64::from_ne_bytes(buf[ev + 8..ev + 16].try_into().unwrap());
                execs.push(Exec {
                    ns,
                    pid: word(ev + 20) as i32,
                });
            }
            at += (len + 3) & !3;
        }
        if !execs.is_empty() {
            let (lock, cond) = log;
            lock.lock().expect("exec log").execs.extend(execs);
            cond.notify_all();
        }
    }
}

/// argv of `pid` (empty if it is gone).
pub fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The PID namespace `pid` lives in (the inode `/proc/PID/ns/pid` names).
pub fn pid_namespace(pid: i32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|p| p.display().to_string())
}

/// The number a benchmark service's `sleep NUMBER` carries, if `pid` is one.
pub fn sleep_arg(pid: i32) -> Option<u32> {
    let argv = cmdline(pid);
    let prog = argv.first()?;
    if prog.rsplit('/').next() != Some("sleep") || argv.len() != 2 {
        return None;
    }
    argv[1].parse().ok()
}

/// A line `KEY: N kB` of a /proc file, in KiB.
fn kib_field(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Proportional set size of `pid` in KiB (`/proc/PID/smaps_rollup`): shared pages
/// are split between the processes that map them, so a sum over processes counts
/// a shared libc once, not once per process as RSS would.
pub fn pss_kib(pid: i32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss")
}

/// Resident set size of `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: i32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_exec_of_a_process_is_seen_with_the_kernels_timestamp() {
        let watch = ExecWatch::start().expect("proc connector (run as root)");
        let from = watch.mark();
        let before = now_ns();
        let child = Command::new("/bin/true").spawn().expect("/bin/true");
        let pid = child.id() as i32;
        let mut child = child;
        child.wait().expect("wait");
        let mut seen = None;
        keel_tests::wait_for("the exec event", Duration::from_secs(5), || {
            seen = watch.last_exec_of(pid, from);
            seen.is_some()
        });
        let t = seen.expect("waited for");
        assert!(
            before <= t && t <= now_ns(),
            "exec at {t} outside [{before}, now]"
        );
        assert!(!watch.lost());
    }

    #[test]
    fn a_benchmark_service_is_known_by_its_sleep_number() {
        let mut child = Command::new("sleep").arg("123456").spawn().expect("sleep");
        let pid = child.id() as i32;
        keel_tests::wait_for("sleep to exec", Duration::from_secs(5), || {
            sleep_arg(pid).is_some()
        });
        assert_eq!(sleep_arg(pid), Some(123456));
        assert!(pss_kib(pid).is_some_and(|k| k > 0));
        assert!(rss_kib(pid).is_some_and(|k| k > 0));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(sleep_arg(std::process::id() as i32), None);
    }
}
