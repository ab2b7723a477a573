//! Readiness: when a job's main process counts as started (see the README's
//! "Readiness" section for each protocol). This module holds the mechanisms that talk
//! to the world — the `sd_notify` socket ([`notify`]), the system bus ([`dbus`]),
//! `/proc` ([`procfs`]); what readiness means for a job's lifecycle is decided in the
//! pure core (`lifecycle`), and the runtime connects the two.

pub mod dbus;
pub mod notify;
pub mod procfs;
pub mod watch;
