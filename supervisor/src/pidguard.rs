//! Signalling job processes without ever hitting a recycled pid, and without an
//! fd per process (DESIGN.md, invariant 2 and "fd limits").
//!
//! Under keel-init (channel version 2 or later) the supervisor holds no pidfd for
//! a job process that is keel-init's child — every process it spawns
//! (`CLONE_PARENT`), and a daemon's forked process once re-parented to keel-init:
//! it asks keel-init to send the signal (`ToInit::Kill`). keel-init is the one
//! reaper of its children and single-threaded, so at the moment it signals, a pid
//! it has not reaped still names that process (or its zombie) and the group it
//! leads; a pid it has reaped stays in its exit log until the supervisor has
//! applied that exit, and keel-init does not signal it; a pid reaped and
//! acknowledged is no longer tracked here. So 10,000 `console log` jobs cost the
//! supervisor one fd each (the log pipe), not two.
//!
//! A pidfd is still held where that argument does not hold: a tracked process
//! that is not keel-init's child (a `MAINPID=` that names someone else's), every
//! process under a keel-init older than version 2, and every process of a
//! supervisor running without keel-init (it reaps its own children then; a pidfd
//! keeps that path the same as before). Those are few, or small setups.

use crate::initlink::InitLink;
use rustix::fd::OwnedFd;
use rustix::process::{Pid, PidfdFlags, Signal, kill_process_group, pidfd_send_signal};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub struct PidGuard {
    /// The pidfds held (see the module docs for which processes have one).
    pidfds: BTreeMap<i32, OwnedFd>,
    /// Processes [`PidGuard::adopted`] found to be keel-init's children (no pidfd),
    /// so that they are not looked up again.
    init_children: BTreeSet<i32>,
    /// keel-init signals its children for us.
    by_init: bool,
}

impl PidGuard {
    pub fn new(link: Option<&InitLink>) -> PidGuard {
        PidGuard {
            pidfds: BTreeMap::new(),
            init_children: BTreeSet::new(),
            by_init: link.is_some_and(InitLink::kills),
        }
    }

    /// Whether a spawn should ask for a pidfd (`CLONE_PIDFD`) for [`PidGuard::spawned`].
    pub fn wants_pidfd(&self) -> bool {
        !self.by_init
    }

    /// A child just spawned, with the pidfd its spawn made if [`PidGuard::wants_pidfd`].
    pub fn spawned(&mut self, pid: i32, pidfd: Option<OwnedFd>) {
        if let Some(fd) = pidfd {
            self.pidfds.insert(pid, fd);
        }
    }

    /// Whether `pid` needs [`PidGuard::adopted`] when it becomes tracked
    /// otherwise than by a spawn: always, but for a spawned child of keel-init
    /// (`spawned_by_init`) when keel-init signals for us.
    pub fn needs_adoption(&self, pid: i32, spawned_by_init: bool) -> bool {
        !(self.pidfds.contains_key(&pid)
            || self.init_children.contains(&pid)
            || (self.by_init && spawned_by_init))
    }

    /// `pid` has become a tracked process otherwise than by a spawn (a daemon's
    /// fork, a `MAINPID=`, a state a new supervisor loaded): a pidfd, unless it is
    /// keel-init's child (its parent is `init`, the supervisor's own parent) and
    /// keel-init signals for us. (Once keel-init's child, always: only keel-init
    /// may reap it.)
    pub fn adopted(&mut self, pid: i32, init: Option<i32>) {
        if !self.needs_adoption(pid, false) {
            return;
        }
        if self.by_init
            && init
                .is_some_and(|init| crate::ready::procfs::stat(pid).is_some_and(|s| s.ppid == init))
        {
            self.init_children.insert(pid);
            return;
        }
        if let Some(fd) = Pid::from_raw(pid)
            .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).ok())
        {
            self.pidfds.insert(pid, fd);
        }
    }

    /// `pid` is not tracked any more (its exit is applied).
    pub fn forget(&mut self, pid: i32) {
        self.pidfds.remove(&pid);
        self.init_children.remove(&pid);
    }

    /// How many pidfds are held.
    pub fn held(&self) -> usize {
        self.pidfds.len()
    }

    /// Signals `pid`, or with `group` the process group it leads (the process
    /// alone if it leads none) followed by SIGCONT (unless `sig` is SIGKILL or
    /// SIGCONT), so that a stopped job can act on it. A process that is gone (its
    /// exit on its way) is not signalled. False if it was not sent.
    pub fn signal(&self, link: Option<&InitLink>, pid: i32, sig: Signal, group: bool) -> bool {
        // Never pid 0 or 1: a group kill of those would be kill(-1).
        let Some(target) = Pid::from_raw(pid).filter(|p| !p.is_init()) else {
            return false;
        };
        let cont = group && sig != Signal::KILL && sig != Signal::CONT;
        match (self.pidfds.get(&pid), link) {
            (Some(fd), _) => {
                if !alive(fd) {
                    return false;
                }
                // The group by number right after the pidfd said its leader
                // lives: only a group whose every member died and whose number a
                // new leader took within those microseconds could be hit.
                let sent = |sig| {
                    (group && kill_process_group(target, sig).is_ok())
                        || pidfd_send_signal(fd, sig).is_ok()
                };
                let ok = sent(sig);
                if ok && cont {
                    sent(Signal::CONT);
                }
                ok
            }
            (None, Some(link)) if self.by_init => {
                // Signal numbers are below 65; the cast cannot truncate.
                let signo = sig.as_raw() as u8;
                match link.kill(pid, signo, group, cont) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!("cannot ask keel-init to signal pid {pid}: {e}");
                        false
                    }
                }
            }
            // Every tracked process has a way: without one, it has ended (or its
            // pid names another process).
            _ => {
                tracing::debug!("signal {} to pid {pid} not sent: untracked", sig.as_raw());
                false
            }
        }
    }
}

/// Whether the process of `pidfd` is still alive (a pidfd polls readable once its
/// process has exited).
fn alive(pidfd: &OwnedFd) -> bool {
    let mut poll = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut poll, Some(&zero)) == Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_keel_init_every_process_has_a_pidfd_and_is_signalled_through_it() {
        let mut guard = PidGuard::new(None);
        assert!(guard.wants_pidfd());
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        guard.adopted(pid, None);
        assert_eq!(guard.held(), 1);
        assert!(guard.signal(None, pid, Signal::TERM, false));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Exited (and reaped here): its pidfd says so, nothing is sent.
        assert!(!guard.signal(None, pid, Signal::TERM, false));
        guard.forget(pid);
        assert_eq!(guard.held(), 0);
        assert!(!guard.signal(None, pid, Signal::TERM, false), "untracked");
        assert!(!guard.signal(None, 1, Signal::TERM, true), "never pid 1");
    }
}
