//! keel-supervisor: reads job files, runs every job's lifecycle, serves initctl.
//!
//! The pure part — the job language, events, the lifecycle core and its engine,
//! queries, the saved state's format — is the `keel-core` crate, re-exported here
//! under its own module names ([`job`], [`events`], [`lifecycle`], [`query`]).
//! This crate is the shell that carries out what the core decides.
//!
//! What each module owns:
//! - [`answer`]: the core's refusals and the shell's own failures ([`answer::Failure`])
//!   as the wire's errors (the one place that builds them).
//! - [`check`]: reading job files from disk (a confdir, `--check PATH…`).
//! - [`journal`]: the saved state kept in keel-init's lifeboat (memfds), with the
//!   shell's own part of it.
//! - [`runtime`]: the one event loop that carries out the core's effects.
//! - [`spawn`]: the single path by which a job process is created.
//! - [`setup`]: a job process's identity, privileges and limits, resolved before
//!   the spawn.
//! - [`cgroup`]: keel's cgroup2 subtree, one cgroup per job instance.
//! - [`joblog`]: `console log` output, through pipes in the lifeboat into log files.
//! - [`control`]: the control socket (framing, handshake, authorisation, deadlines,
//!   limits).
//! - [`initlink`]: the channel to keel-init.
//! - [`pidguard`]: signalling job processes, never a recycled pid, without an fd
//!   per process.
//! - [`boot`]: kernel filesystems on a real boot.
//! - [`errno`]: an OS error's message in people's words.
//! - [`heap`]: glibc's allocator set to give freed memory back.
//! - [`logging`]: the supervisor's own log and its run-time priority.
//! - [`ready`]: the readiness protocols' moving parts (sd_notify socket, D-Bus, /proc).
//! - [`reexec`]: the check of a re-exec candidate, a child read from the loop.
//! - [`sockets`]: socket activation's listening sockets (bound, in the lifeboat,
//!   watched).
//! - [`filewatch`]: the inotify watch of the jobs' `file FILE=…` conditions.
//! - [`mountwatch`]: the mount table against fstab, for mountall's filesystem events.
//! - [`uevents`]: the netlink socket of device events (the kernel's and udev's).

pub mod answer;
pub mod boot;
pub mod cgroup;
pub mod check;
pub mod control;
pub mod errno;
pub mod fdlimit;
pub mod filewatch;
pub mod heap;
pub mod initlink;
pub mod joblog;
pub mod journal;
pub mod logging;
pub mod mountwatch;
pub mod options;
pub mod pidguard;
pub mod ready;
pub mod reexec;
pub mod runtime;
pub mod sandbox;
pub mod setup;
pub mod sockets;
pub mod spawn;
pub mod timeline;
pub mod uevents;

pub use keel_core::{events, glob, job, lifecycle, mounts, query, refusal, runlevel};
