//! keel's wire types: every message of both channels, and their framing.
//!
//! - [`init`]: keel-init ⇄ keel-supervisor over one `SOCK_SEQPACKET` socketpair (one
//!   message per packet, file descriptors as `SCM_RIGHTS`). Fixed-size, `Copy` types
//!   only, so PID 1 decodes them without a heap.
//! - [`ctl`] (feature `std`): initctl ⇄ keel-supervisor over a `SOCK_STREAM` unix
//!   socket, length-prefixed frames ([`frame`]), a version handshake first.
//!
//! Encoding is postcard everywhere. This crate owns no syscalls.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod ctl;
#[cfg(feature = "std")]
pub mod frame;
pub mod init;
