//! keel-supervisor: reads job files, runs every job's lifecycle, serves initctl.
//!
//! What each module owns:
//! - [`job`]: the job language and the typed job definition — pure, no syscalls.
//! - [`check`]: reading job files from disk (a confdir, `--check PATH…`).
//! - [`lifecycle`]: the pure lifecycle core, `(state, input) -> (state, effects)`,
//!   with its event engine (the queue, what events start and stop, blocking).
//! - [`events`]: events, `start on` / `stop on` progress and matching, `$VAR`
//!   expansion, check-config — pure.
//! - [`journal`]: the versioned state snapshot kept in keel-init's lifeboat.
//! - [`runtime`]: the one event loop that carries out the core's effects.
//! - [`spawn`]: the single path by which a job process is created.
//! - [`setup`]: a job process's identity, privileges and limits, resolved before
//!   the spawn.
//! - [`cgroup`]: keel's cgroup2 subtree, one cgroup per job instance.
//! - [`joblog`]: `console log` output, through pipes in the lifeboat into log files.
//! - [`control`]: the control socket (framing, handshake, authorisation, deadlines,
//!   limits).
//! - [`query`]: the answers to `show-config` and `check-config` — pure.
//! - [`initlink`]: the channel to keel-init.
//! - [`boot`]: kernel filesystems on a real boot.
//! - [`logging`]: the supervisor's own log and its run-time priority.
//! - [`ready`]: the readiness protocols' moving parts (sd_notify socket, D-Bus, /proc).
//! - [`reexec`]: the check of a re-exec candidate, a child read from the loop.

pub mod boot;
pub mod cgroup;
pub mod check;
pub mod control;
pub mod events;
pub mod initlink;
pub mod job;
pub mod joblog;
pub mod journal;
pub mod lifecycle;
pub mod logging;
pub mod query;
pub mod ready;
pub mod reexec;
pub mod runtime;
pub mod setup;
pub mod spawn;
