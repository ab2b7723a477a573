//! keel's compatibility with sysvinit's tools, for Debian systems where
//! sysvinit-core still owns `shutdown`, `halt`, `poweroff`, `reboot`, `telinit`
//! and `runlevel` (or where keel-sysv replaces them):
//!
//! - [`initreq`]: the requests those tools write into `/run/initctl`, decoded.
//!   `keel-initctl-fifo` reads the FIFO and hands each request to keel through
//!   initctl; it owns nothing else.
//! - [`utmp`]: the boot, runlevel and shutdown records in utmp/wtmp that `who -b`,
//!   `runlevel`, `last reboot` and sysvinit's `halt` read. `keel-utmp` writes them;
//!   the job set runs it at boot, on every runlevel change and at shutdown.
//!
//! Neither is part of keel-init or the supervisor: both are ordinary jobs.

pub mod initreq;
pub mod utmp;
