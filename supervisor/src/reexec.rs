//! The check of a re-exec candidate (`initctl reexec --binary X`, `telinit u`):
//! before the running supervisor gives its place to `X`, `X --state-format` must
//! say it reads this state's format — a failed load after the exec would lose the
//! state. The candidate is any file a user named: it may not exist, sleep, or
//! print without end. So it runs as a child whose output the event loop reads as
//! it comes ([`Check::read`]), bounded by [`DEADLINE`] and [`MAX_OUTPUT`]; the
//! loop serves every other client meanwhile, and the request is answered when the
//! candidate has said all it will, or when time is up (it is then killed with its
//! process group).
//!
//! This module owns the candidate process and the verdict ([`verdict`], pure); the
//! runtime owns the request, the epoll registration and the exec itself.

use rustix::fd::{AsFd, BorrowedFd};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a candidate may take to say its state format.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// The most of a candidate's output read: a format is a few digits.
pub const MAX_OUTPUT: usize = 256;

/// Why a re-exec is refused: the request itself, or the candidate's answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("re-exec needs keel-init to keep the state across it")]
    NoInit,
    #[error("another re-exec is under way")]
    UnderWay,
    #[error("cannot find my own binary: {0}")]
    OwnBinary(io::Error),
    #[error("cannot run {}: {source}", path.display())]
    Run { path: PathBuf, source: io::Error },
    #[error("cannot read from {}", path.display())]
    NoOutput { path: PathBuf },
    #[error("cannot read from {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot watch {}: {source}", path.display())]
    Watch { path: PathBuf, source: io::Error },
    #[error("{} does not say which state format it reads", path.display())]
    NoFormat { path: PathBuf },
    #[error(
        "{} reads state format {supported}, older than this state's {ours}; refusing to re-exec",
        path.display()
    )]
    OlderFormat {
        path: PathBuf,
        supported: u32,
        ours: u32,
    },
    #[error(
        "{} did not say its state format within {} s; refusing to re-exec",
        path.display(),
        DEADLINE.as_secs()
    )]
    Silent { path: PathBuf },
}

/// A candidate being asked its state format.
pub struct Check {
    path: PathBuf,
    child: Child,
    stdout: ChildStdout,
    output: Vec<u8>,
    deadline: Instant,
}

impl Check {
    /// Runs `path --state-format` (empty environment, stdin and stderr on
    /// /dev/null, in a process group of its own), its stdout non-blocking.
    pub fn start(path: &Path, now: Instant) -> Result<Check, Error> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(path)
            .arg("--state-format")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Run {
                path: path.to_path_buf(),
                source,
            })?;
        let Some(stdout) = child.stdout.take() else {
            // `Stdio::piped` always gives one.
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::NoOutput {
                path: path.to_path_buf(),
            });
        };
        let check = Check {
            path: path.to_path_buf(),
            child,
            stdout,
            output: Vec::with_capacity(MAX_OUTPUT),
            deadline: now + DEADLINE,
        };
        rustix::fs::fcntl_setfl(&check.stdout, rustix::fs::OFlags::NONBLOCK).map_err(|e| {
            Error::Read {
                path: path.to_path_buf(),
                source: e.into(),
            }
        })?;
        Ok(check)
    }

    /// The candidate's stdout, for epoll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stdout.as_fd()
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Reads what the candidate wrote, without blocking. The verdict once it is
    /// known: at the end of its output, beyond [`MAX_OUTPUT`], or at the deadline.
    pub fn read(&mut self, now: Instant) -> Option<Result<PathBuf, Error>> {
        let mut buf = [0u8; MAX_OUTPUT];
        loop {
            match self.stdout.read(&mut buf) {
                Ok(0) => return Some(self.verdict()),
                Ok(n) => {
                    self.output.extend_from_slice(&buf[..n]);
                    if self.output.len() > MAX_OUTPUT {
                        return Some(self.verdict());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    return Some(Err(Error::Read {
                        path: self.path.clone(),
                        source: e,
                    }));
                }
            }
        }
        (now >= self.deadline).then(|| {
            Err(Error::Silent {
                path: self.path.clone(),
            })
        })
    }

    fn verdict(&self) -> Result<PathBuf, Error> {
        verdict(&self.path, &self.output, keel_core::journal::FORMAT_VERSION)
            .map(|()| self.path.clone())
    }
}

impl Drop for Check {
    /// The candidate and whatever it started go, and its exit is collected: a
    /// verdict is never waited on past the deadline.
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// Whether a candidate that printed `output` to `--state-format` can load a
/// state of format `ours`.
pub fn verdict(path: &Path, output: &[u8], ours: u32) -> Result<(), Error> {
    let supported: u32 = std::str::from_utf8(output)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::NoFormat {
            path: path.to_path_buf(),
        })?;
    if supported < ours {
        return Err(Error::OlderFormat {
            path: path.to_path_buf(),
            supported,
            ours,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_must_read_at_least_our_format() {
        let p = Path::new("/x");
        verdict(p, b"3\n", 3).unwrap();
        verdict(p, b" 4 ", 3).unwrap();
        let old = verdict(p, b"2\n", 3).unwrap_err().to_string();
        assert!(
            old.contains("reads state format 2, older than this state's 3"),
            "{old}"
        );
        for bad in [&b""[..], b"y\ny\ny\n", b"\xff", b"-1"] {
            let e = verdict(p, bad, 3).unwrap_err().to_string();
            assert!(e.contains("does not say which state format"), "{e}");
        }
    }

    fn script(text: &str) -> tempfile_like::Script {
        tempfile_like::Script::new(text)
    }

    /// Waits for `check`'s verdict as the loop would: reading when it polls.
    fn outcome(check: &mut Check) -> Result<PathBuf, String> {
        loop {
            let mut poll = [rustix::event::PollFd::new(
                &check.stdout,
                rustix::event::PollFlags::IN,
            )];
            let _ = rustix::event::poll(
                &mut poll,
                Some(&rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 50_000_000,
                }),
            );
            if let Some(v) = check.read(Instant::now()) {
                return v.map_err(|e| e.to_string());
            }
        }
    }

    #[test]
    fn a_candidate_that_says_its_format_is_taken() {
        let s = script(&format!("echo {}", crate::journal::FORMAT_VERSION));
        let mut check = Check::start(&s.path, Instant::now()).unwrap();
        assert_eq!(outcome(&mut check), Ok(s.path.clone()));
    }

    #[test]
    fn a_candidate_that_prints_without_end_is_refused_at_once() {
        let s = script("exec yes");
        let start = Instant::now();
        let mut check = Check::start(&s.path, start).unwrap();
        let e = outcome(&mut check).unwrap_err();
        assert!(e.contains("does not say which state format"), "{e}");
        assert!(start.elapsed() < DEADLINE, "{:?}", start.elapsed());
    }

    #[test]
    fn a_missing_candidate_is_refused() {
        let e = Check::start(Path::new("/nonexistent/keel-supervisor"), Instant::now())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("cannot run /nonexistent/keel-supervisor: No such file"),
            "{e}"
        );
    }

    #[test]
    fn a_silent_candidate_is_refused_at_the_deadline_and_killed() {
        let s = script("sleep 1000");
        let start = Instant::now();
        let mut check = Check::start(&s.path, start).unwrap();
        let pid = check.child.id() as i32;
        // Not before the deadline; at it, told to the loop and killed.
        assert!(
            check
                .read(start + DEADLINE - Duration::from_millis(1))
                .is_none()
        );
        let e = check
            .read(start + DEADLINE)
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not say its state format within 5 s"), "{e}");
        drop(check);
        // Reaped, with its sleep: neither pid is there any more as our child.
        assert!(
            rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).unwrap())
                .is_err()
        );
    }

    /// A shell script in a fresh directory, removed with it.
    mod tempfile_like {
        use std::path::PathBuf;
        pub struct Script {
            pub path: PathBuf,
        }
        impl Script {
            pub fn new(text: &str) -> Script {
                use std::os::unix::fs::PermissionsExt;
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir =
                    std::env::temp_dir().join(format!("keel-reexec-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("candidate");
                std::fs::write(&path, format!("#!/bin/sh\n{text}\n")).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
                Script { path }
            }
        }
        impl Drop for Script {
            fn drop(&mut self) {
                if let Some(dir) = self.path.parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }
}
