//! keel-core: everything keel decides, with nothing that acts. No system call, no
//! clock, no I/O: the crate cannot reach one (`#![forbid(unsafe_code)]`, and no
//! rustix, nix or libc in its dependency tree — `tests/pure.rs` checks), so the
//! compiler keeps it pure, not discipline. The supervisor is its shell: it reads
//! files, spawns, signals and answers sockets, and feeds what happened back in.
//!
//! What each module owns:
//! - [`job`]: the job language — lexer, parser, the typed job definition, and the
//!   canonical text of a definition.
//! - [`events`]: events, `start on` / `stop on` progress and matching, `$VAR`
//!   expansion, the findings of check-config.
//! - [`lifecycle`]: the lifecycle core, `(state, input) -> (state, effects)`, with
//!   its event engine (the queue, what events start and stop, blocking).
//! - [`mounts`]: mountall's filesystem events — fstab, the mount table, which
//!   events are due.
//! - [`query`]: the answers to `show-config` and `check-config`.
//! - [`runlevel`]: runlevels, `telinit` and the `runlevel` event's variables.
//! - [`refusal`]: why a request is refused, in the words initctl prints.
//! - [`journal`]: the saved state — its serde shape, format version, encoding and
//!   decoding. Where the bytes are kept (memfds in keel-init's lifeboat) is the
//!   shell's business.

#![forbid(unsafe_code)]

pub mod events;
pub mod glob;
pub mod job;
pub mod journal;
pub mod lifecycle;
pub mod mounts;
pub mod query;
pub mod refusal;
pub mod runlevel;
