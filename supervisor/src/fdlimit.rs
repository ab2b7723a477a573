//! The supervisor's fd limit: it holds a log pipe per running `console log` job, so it
//! raises RLIMIT_NOFILE as far as it may — the hard limit up to `fs.nr_open` where
//! it is allowed to (root with CAP_SYS_RESOURCE: a real machine), the soft limit to
//! the hard one — while every job starts with the limit the supervisor was given
//! (unless its `limit nofile` says otherwise): a program that loops over every
//! possible fd, or uses select(2), is not handed a million.
//!
//! That limit survives a re-exec in the supervisor's own environment
//! ([`JOBS_ENV`], which jobs never see: their environment is built, not inherited);
//! a supervisor started afresh by keel-init gets keel-init's original limit again.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::sync::OnceLock;

/// `SOFT:HARD`, the limit jobs get, kept across a re-exec.
pub const JOBS_ENV: &str = "KEEL_JOB_NOFILE";

static JOBS: OnceLock<(u64, u64)> = OnceLock::new();

/// Raises this process's limit; returns it (soft, hard). Once, at start.
pub fn raise() -> (u64, u64) {
    let given = getrlimit(Resource::Nofile);
    let jobs = std::env::var(JOBS_ENV)
        .ok()
        .and_then(|v| {
            let (s, h) = v.split_once(':')?;
            Some((s.parse().ok()?, h.parse().ok()?))
        })
        .unwrap_or((
            given.current.unwrap_or(u64::MAX),
            given.maximum.unwrap_or(u64::MAX),
        ));
    let _ = JOBS.set(jobs);
    // SAFETY: setting an environment variable is unsound only with other threads
    // reading the environment; the supervisor has one thread, and this is its start.
    unsafe { std::env::set_var(JOBS_ENV, format!("{}:{}", jobs.0, jobs.1)) };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let hard = given.maximum.unwrap_or(u64::MAX);
    if let Some(top) = nr_open.filter(|&n| n > hard) {
        // Refused without CAP_SYS_RESOURCE: the hard limit stays as it is.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(top),
                maximum: Some(top),
            },
        );
    }
    let now = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        },
    );
    let now = getrlimit(Resource::Nofile);
    (
        now.current.unwrap_or(u64::MAX),
        now.maximum.unwrap_or(u64::MAX),
    )
}

/// The limit a job starts with, if [`raise`] ran; `None` in the tests of other modules.
pub fn for_jobs() -> Option<(u64, u64)> {
    JOBS.get().copied()
}
