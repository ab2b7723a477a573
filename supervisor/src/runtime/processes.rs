//! Job processes once they run: their exits, pidfds, signals and cgroups.
//!
//! Owns the way from an exit (relayed by keel-init, or reaped here when the
//! supervisor runs standalone) to the core: a setup failure the child reported,
//! the fork of a daemon followed (`expect fork|daemon`), or the end itself. Every
//! signal to a job goes through `PidGuard` (keel-init, or a pidfd where needed),
//! so a recycled pid is never hit; a new supervisor opens the pidfds its saved
//! state needs, and adopts the survivors of a dropped state. Also the instances' cgroups once
//! processes end in them: remnants killed, stopped instances' cgroups removed.

use super::{Runtime, now_ms};
use crate::cgroup;
use crate::job::{self, ProcessKind};
use crate::lifecycle::{self, WaitStatus};
use keel_core::journal::Tracked;
use std::collections::BTreeSet;
use std::time::Instant;

/// How soon a cgroup still holding a dying process is tried again.
const CGROUP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl Runtime {
    /// Finds keel-init's children that are job processes (by the `UPSTART_JOB` and
    /// `UPSTART_INSTANCE` every job process starts with) and tracks each as its
    /// instance's running main, so that nothing runs twice after a dropped state.
    pub(super) fn adopt_survivors(&mut self) {
        let init = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get());
        let me = std::process::id() as i32;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut pids: Vec<i32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|&p| p != me)
            .collect();
        pids.sort_unstable();
        for pid in pids {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((comm, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            // Children not yet released (`keel-spawn`) end by themselves.
            if ppid != init || state == Some("Z") || comm.ends_with("(keel-spawn") {
                continue;
            }
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let var = |key: &str| {
                environ.split(|&b| b == 0).find_map(|kv| {
                    kv.strip_prefix(key.as_bytes())
                        .and_then(|v| v.strip_prefix(b"="))
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            let (Some(job), Some(instance)) = (var("UPSTART_JOB"), var("UPSTART_INSTANCE")) else {
                continue;
            };
            if self.snap.jobs.adopt(&job, &instance, pid) {
                tracing::warn!("adopted pid {pid} as the main process of {job} ({instance})");
            }
        }
        self.dirty = true;
    }

    /// Exit `seq` of keel-init's log: applied once (a restarted supervisor is handed
    /// again those it did not acknowledge), acknowledged after the round.
    pub(super) fn apply_exit(&mut self, seq: u64, pid: i32, status: i32) {
        if seq <= self.snap.last_exit_seq {
            // Applied before (handed over again after a restart): acknowledge only.
            self.unacked = Some(self.unacked.unwrap_or(0).max(seq));
            return;
        }
        self.snap.last_exit_seq = seq;
        self.unacked = Some(seq);
        self.process_exited(pid, status);
    }

    /// Applies the end of `pid`: a setup failure its error pipe reported, the fork
    /// of a daemon (`expect fork|daemon`), or its exit.
    fn process_exited(&mut self, pid: i32, status: i32) {
        self.pids.forget(pid);
        self.read_setup_pipe(pid);
        if !self.spawns.failures.contains_key(&pid)
            && WaitStatus(status).success()
            && self.snap.jobs.follows_forks(pid)
            && let Some((child, forks)) = self.forked_child(pid)
        {
            tracing::debug!("main process {pid} forked ({forks}) and exited; following {child}");
            self.pids.adopted(child, self.init_pid());
            self.snap.jobs.main_forked(pid, child, forks, now_ms());
            self.dirty = true;
            return;
        }
        match self.spawns.failures.remove(&pid) {
            Some(what) => {
                if let Some((job, _, kind)) = self.snap.jobs.owner_of(pid) {
                    tracing::warn!("{job}: {} process: {what}", kind.name());
                }
                self.snap.jobs.setup_failed(pid, &what, now_ms());
            }
            None => self.snap.jobs.exited(pid, WaitStatus(status), now_ms()),
        }
        self.dirty = true;
    }

    /// The process a forking main `pid` left behind, now that it has exited: the
    /// one process of the instance's cgroup that is no tracked job process and was
    /// handed to keel-init (its parent died) — the kernel re-parents orphans before
    /// their parent's exit can be reaped, so it is there by now. Without cgroups:
    /// such a process still in main's session or process group (a daemon that has
    /// already called setsid then escapes; cgroups are the exact way). With it, how
    /// many forks away it is: 2 if it is no session leader and not in `pid`'s
    /// session — an intermediate that called setsid has come and gone (a daemon's
    /// double fork, done before keel looked).
    fn forked_child(&self, pid: i32) -> Option<(i32, u8)> {
        use crate::ready::procfs;
        let (job, instance, _) = self.snap.jobs.owner_of(pid)?;
        let adopter = match &self.link {
            Some(_) => rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get()),
            None => std::process::id() as i32,
        };
        let in_cgroup = self
            .cgroups
            .as_ref()
            .filter(|_| {
                self.snap
                    .shell
                    .cgroups
                    .instances
                    .contains_key(&(job.clone(), instance.clone()))
            })
            .map(|tree| tree.instance_path(job, instance));
        let candidates: Vec<i32> = match &in_cgroup {
            Some(path) => cgroup::procs(path).unwrap_or_default(),
            None => std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect(),
        };
        let mut found: Vec<(i32, procfs::Stat)> = candidates
            .into_iter()
            .filter(|p| self.snap.jobs.owner_of(*p).is_none())
            .filter_map(|p| Some((p, procfs::stat(p)?)))
            .filter(|(_, st)| st.ppid == adopter && st.state != 'Z')
            .filter(|(_, st)| in_cgroup.is_some() || st.session == pid || st.pgrp == pid)
            .collect();
        // Normally exactly one; a daemon's own session leader is the better guess.
        found.sort_by_key(|(p, st)| (st.session != *p, *p));
        found.first().map(|(p, st)| {
            (
                *p,
                if st.session == *p || st.session == pid {
                    1
                } else {
                    2
                },
            )
        })
    }

    /// Pidfds of the processes a saved state tracks where they need one
    /// (`PidGuard`; a new supervisor's first act, once the exits keel-init kept
    /// are applied, so every pid left names a process that has not been reaped).
    /// A process outside its instance's cgroup is not the one the state means
    /// (its pid was recycled): no pidfd for it.
    ///
    /// Only a process keel-init might have reaped unseen can have a recycled pid:
    /// a main process that `expect fork|daemon|notify` may have moved to a process
    /// that is not keel-init's child, or any, once keel-init has lost exits. Every
    /// other one was spawned as keel-init's child, and its exit would be among
    /// those applied: it is checked only then, so a new supervisor does not read
    /// a thousand /proc files on its way up.
    pub(super) fn open_pidfds(&mut self) {
        let moved = |job: &str, instance: &str, kind: ProcessKind| {
            kind == ProcessKind::Main
                && self.snap.jobs.instance(job, instance).is_some_and(|i| {
                    matches!(
                        i.def().expect,
                        job::Expect::Fork | job::Expect::Daemon | job::Expect::Notify
                    )
                })
        };
        let tracked: Vec<(i32, String, String, bool)> = self
            .snap
            .jobs
            .tracked()
            .filter(|(pid, _)| *pid > 0)
            .filter_map(|(pid, (j, i, kind))| {
                let check = self.exits_lost || moved(j, i, *kind);
                // Unchecked, it was spawned as keel-init's child.
                let spawned_by_init = !check && self.link.is_some();
                self.pids
                    .needs_adoption(pid, spawned_by_init)
                    .then(|| (pid, j.clone(), i.clone(), check))
            })
            .collect();
        let init = self.init_pid();
        for (pid, job, instance, check) in tracked {
            let expected = self
                .cgroups
                .as_ref()
                .filter(|_| {
                    check
                        && self
                            .snap
                            .shell
                            .cgroups
                            .instances
                            .contains_key(&(job.clone(), instance.clone()))
                })
                .map(|tree| tree.instance_path(&job, &instance));
            let actual = expected
                .as_ref()
                .and_then(|_| crate::ready::procfs::cgroup_of(pid));
            let belongs = match (&expected, &actual) {
                (Some(dir), Some(rel)) => dir.ends_with(rel.trim_start_matches('/')),
                _ => true,
            };
            if belongs {
                self.pids.adopted(pid, init);
            } else {
                tracing::warn!("pid {pid} of {job} is not in its cgroup: not signalled by number");
            }
        }
    }

    /// keel-init's pid (the supervisor's parent), when it runs under keel-init.
    fn init_pid(&self) -> Option<i32> {
        self.link.as_ref()?;
        rustix::process::getppid().map(|p| p.as_raw_nonzero().get())
    }

    /// Signals job process `pid` and the process group it leads (every job process
    /// leads its own; a daemon found through its forks may lead none: then the
    /// process itself), never a recycled pid (`PidGuard`). Any signal but SIGKILL
    /// is followed by SIGCONT, so that a stopped job can act on it.
    pub(super) fn signal(&self, pid: i32, signal: job::Signal) {
        let sig = rustix::process::Signal::from_named_raw(signal.0)
            .unwrap_or(rustix::process::Signal::KILL);
        self.pids.signal(self.link.as_ref(), pid, sig, true);
    }

    /// Standalone: reaps the supervisor's own children (no keel-init does it).
    pub(super) fn reap_own(&mut self) {
        loop {
            // `wait`: rustix's `waitpid(None)` means our own process group only.
            match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    self.process_exited(pid.as_raw_nonzero().get(), status.as_raw())
                }
                _ => return,
            }
        }
    }

    /// Kills whatever is left in the instance's cgroup (main has ended on the way
    /// to post-stop).
    pub(super) fn kill_remnants(&mut self, job: &str, instance: &str) {
        let Some(tree) = &self.cgroups else { return };
        if !self
            .snap
            .shell
            .cgroups
            .instances
            .contains_key(&(job.to_string(), instance.to_string()))
        {
            return;
        }
        let path = tree.instance_path(job, instance);
        let killed = cgroup::kill_each(&path);
        if killed > 0 {
            tracing::info!("{job}: killed {killed} process(es) left in its cgroup");
        }
    }

    /// Removes the cgroups of instances that have stopped (killing anything left);
    /// one still holding a dying process is tried again shortly. Only the
    /// cgroups of jobs changed since the last sweep are looked at (a round costs
    /// what it changed), every one after a start or a retry.
    pub(super) fn sweep_cgroups(&mut self) {
        let unswept = std::mem::take(&mut self.sweep.unswept);
        let Some(tree) = &self.cgroups else { return };
        let cgroups = &self.snap.shell.cgroups.instances;
        let done = if std::mem::take(&mut self.sweep.all) {
            stopped(&self.snap.jobs, cgroups)
        } else {
            let changed: BTreeSet<&String> = unswept
                .iter()
                .chain(self.snap.jobs.changed_jobs())
                .collect();
            stopped_of(&self.snap.jobs, cgroups, changed)
        };
        let mut busy = false;
        for key in done {
            let path = tree.instance_path(&key.0, &key.1);
            cgroup::kill_each(&path);
            match cgroup::remove(&path) {
                Ok(false) => {
                    busy = true;
                    continue;
                }
                Ok(true) => {}
                Err(e) => tracing::warn!("cannot remove cgroup {}: {e}", path.display()),
            }
            if !key.1.is_empty() {
                // The job's directory goes with its last instance.
                let _ = std::fs::remove_dir(tree.instance_path(&key.0, ""));
            }
            self.snap.shell.cgroups.instances.remove(&key);
            self.dirty = true;
        }
        if busy && self.cgroup_retry.is_none() {
            self.cgroup_retry = Some(Instant::now() + CGROUP_RETRY);
        }
    }
}

/// What the next sweep of the cgroups looks at.
#[derive(Debug)]
pub(super) struct Sweep {
    /// Every cgroup (a state just loaded; a busy cgroup to try again).
    pub all: bool,
    /// Jobs changed before a save, since the last sweep: a save forgets which
    /// jobs changed (see `Runtime::persist`).
    pub unswept: BTreeSet<String>,
}

impl Default for Sweep {
    fn default() -> Sweep {
        Sweep {
            all: true,
            unswept: BTreeSet::new(),
        }
    }
}

/// The cgroups of the jobs `names` whose instance is gone or stopped: the
/// lookups of what changed, not a walk of every cgroup.
fn stopped_of<'a>(
    jobs: &lifecycle::Jobs,
    cgroups: &Tracked<(String, String), ()>,
    names: impl IntoIterator<Item = &'a String>,
) -> Vec<(String, String)> {
    names
        .into_iter()
        .flat_map(|job| {
            cgroups
                .range((job.clone(), String::new())..)
                .map(|(key, _)| key)
                .take_while(move |(j, _)| j == job)
        })
        .filter(|(job, instance)| {
            jobs.instance(job, instance)
                .is_none_or(|inst| inst.state() == lifecycle::State::Waiting)
        })
        .cloned()
        .collect()
}

/// The instance cgroups in `cgroups` whose instance is gone or stopped. Both are
/// in (job, instance) order: one walk beside the other, no lookup per entry
/// (with 10,000 jobs, lookups made this most of a round's cost).
fn stopped(
    jobs: &lifecycle::Jobs,
    cgroups: &Tracked<(String, String), ()>,
) -> Vec<(String, String)> {
    let mut live = jobs.instances().peekable();
    cgroups
        .keys()
        .filter(|(job, instance)| {
            let key = (job.as_str(), instance.as_str());
            while live.next_if(|(j, i, _)| (*j, *i) < key).is_some() {}
            live.peek()
                .filter(|(j, i, _)| (*j, *i) == key)
                .is_none_or(|(_, _, inst)| inst.state() == lifecycle::State::Waiting)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroups_to_remove_are_those_of_instances_gone_or_stopped() {
        let mut jobs = lifecycle::Jobs::default();
        let def = |name: &str, text: &str| crate::job::parse(name, text).def.unwrap();
        jobs.set_definitions(vec![
            def("a", "exec sleep 1\n"),
            def("b", "instance $N\nexec sleep 1\n"),
            def("c", "exec sleep 1\n"),
        ]);
        let n = |v: &str| vec![("N".to_string(), v.to_string())];
        jobs.start("a", Vec::new(), None, 0).unwrap();
        jobs.start("b", n("1"), None, 0).unwrap();
        jobs.start("b", n("3"), None, 0).unwrap();
        let key = |j: &str, i: &str| (j.to_string(), i.to_string());
        let cgroups: Tracked<(String, String), ()> = [
            key("a", ""),
            key("b", "1"),
            key("b", "2"),
            key("b", "3"),
            key("c", ""),
            key("gone", ""),
        ]
        .into_iter()
        .map(|k| (k, ()))
        .collect();
        // The lookup of each one, as it was done before the walk.
        let looked_up: Vec<(String, String)> = cgroups
            .keys()
            .filter(|(j, i)| {
                jobs.instance(j, i)
                    .is_none_or(|inst| inst.state() == lifecycle::State::Waiting)
            })
            .cloned()
            .collect();
        assert_eq!(
            stopped(&jobs, &cgroups),
            [key("b", "2"), key("c", ""), key("gone", "")]
        );
        assert_eq!(stopped(&jobs, &cgroups), looked_up);
        // Those of the jobs named only.
        let names = ["b".to_string(), "gone".to_string(), "none".to_string()];
        assert_eq!(
            stopped_of(&jobs, &cgroups, &names),
            [key("b", "2"), key("gone", "")]
        );
    }
}
