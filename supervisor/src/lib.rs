//! keel-supervisor: reads job files, runs every job's lifecycle, serves initctl.
//!
//! What each module owns:
//! - [`job`]: the job language and the typed job definition — pure, no syscalls.
//! - [`check`]: reading job files from disk (a confdir, `--check PATH…`).
//! - [`lifecycle`]: the pure lifecycle core, `(state, input) -> (state, effects)`.
//! - [`events`]: matching events against `start on` / `stop on` — pure.
//! - [`journal`]: the versioned state snapshot kept in keel-init's lifeboat.
//! - [`runtime`]: the one event loop that carries out the core's effects.
//! - [`spawn`]: the single path by which a job process is created.
//! - [`setup`]: a job process's identity, privileges and limits, resolved before
//!   the spawn.
//! - [`cgroup`]: keel's cgroup2 subtree, one cgroup per job instance.
//! - [`joblog`]: `console log` output, through pipes in the lifeboat into log files.
//! - [`control`]: the control socket (framing, handshake, authorisation, deadlines).
//! - [`initlink`]: the channel to keel-init.
//! - [`boot`]: kernel filesystems on a real boot.
//! - [`logging`]: the supervisor's own log and its run-time priority.

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
pub mod runtime;
pub mod setup;
pub mod spawn;
