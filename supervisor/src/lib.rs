//! keel-supervisor: reads job files, runs every job's lifecycle, serves initctl.
//!
//! Layout (what each module owns):
//! - [`job`]: the job language and the typed job definition — pure, no syscalls.
//! - [`check`]: reading job files from disk (a confdir, `--check PATH…`).

pub mod check;
pub mod job;
