//! The runtime: the supervisor's one event loop, the thin shell around the pure
//! lifecycle core. It owns every fd (init channel, control socket, signalfd, job
//! log pipes, spawned children's error pipes, the readiness fds) and is the only
//! place that turns the core's effects into processes, signals and replies — and
//! into the instances' cgroups (`cgroup`) and logs (`joblog`). Events are the
//! core's: the runtime only hands it those from outside (`startup`, relayed
//! signals, `initctl emit`, `telinit`) and makes the power action once the core
//! says it is due.
//!
//! One round of the loop:
//! 1. write out early job logs that can be written now (this point is as saved);
//! 2. wait (epoll) for a message from keel-init, a client, a signal, job output,
//!    a child's error report, or a deadline;
//! 3. feed what happened to the core;
//! 4. kill what is left of instances whose main ended, spawn the processes the
//!    core asked for (they wait for "go", see `spawn`), remove the cgroups of
//!    instances that stopped;
//! 5. persist the state (the journal in the lifeboat) if it changed;
//! 6. only then act on the world: release the new processes, send signals, answer
//!    clients, acknowledge the exits applied to keel-init.
//!
//! So nothing visible happens before the state that explains it is saved: a
//! supervisor killed at any instant is replaced by one that carries on from a state
//! consistent with every process alive (DESIGN.md, invariants 2 and 3).
//!
//! Spawns are released in batches: once a batch is full, the state is saved and
//! those children are released (steps 5 and 6 for them alone), and the round goes
//! on with a new go pipe. The state saved then records the spawns still to come as
//! decided (pid 0); a supervisor killed before making them leaves them to its
//! successor (`Jobs::resume`). A round's first batch is one spawn, and each next
//! one twice the last, up to [`SPAWN_BATCH`] — or a sixteenth of the jobs, when
//! that is more: a save writes the whole state, so with batches of a fixed size a
//! round of n spawns would cost n²; this way about 16 + log2(n) saves. The first
//! of a thousand jobs execs as soon as the state recording it is saved — the same
//! rule as for every other child, so nothing is given up for it.
//!
//! What each part owns (the Runtime holds their state; a piece of state that
//! belongs to one part is a type of that part's own):
//! - this module: the Runtime, the loop (`run`), the round's settling and release;
//! - `startup`: a new supervisor's steps from the handover to its first round;
//! - `confdir`: the job directory's watch and the definitions read from it;
//! - `persist`: the state saved in the lifeboat, and restored from it;
//! - `spawning`: process plans, spawns, go rounds, children's error pipes;
//! - `processes`: exits, pidfds, signals, adoption, the instances' cgroups;
//! - `requests`: the control requests, one function per kind;
//! - `power`: runlevels, power actions and the live re-exec;
//! - `sources`: keel-init's channel, signals, sockets, file conditions, job logs;
//! - `bridges`: device events (the uevent socket) and mountall's filesystem
//!   events (the mount table against fstab).

use crate::answer::{self, instances, refused};
use crate::control::{ConnId, Control};
use crate::initlink::InitLink;
use crate::job::JobDef;
use crate::journal::Snapshot;
use crate::lifecycle::{Effect, Event};
use crate::pidguard::PidGuard;
use crate::ready::watch::Watcher;
use crate::refusal::Refusal;
use crate::{cgroup, joblog, setup, spawn};
use keel_proto::ctl::Response;
use rustix::event::epoll;
use rustix::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Instant;

/// What the supervisor was told on its command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub confdir: PathBuf,
    pub socket: PathBuf,
    /// `NOTIFY_SOCKET` of `expect notify` jobs: a path or `@NAME` (abstract).
    pub notify_socket: String,
    pub logdir: PathBuf,
    /// `--log-size`: the cap of one job log file in bytes (0: none).
    pub log_size: u64,
    /// `--log-keep`: rotated job log files kept.
    pub log_keep: u32,
    /// `--cgroup-root`: keel's cgroup2 subtree (`none`: no cgroups).
    pub cgroup_root: Option<PathBuf>,
    /// The supervisor's own arguments, for a re-exec.
    pub args: Vec<std::ffi::OsString>,
    /// `--fstab`: the fstab whose mounts give mountall's events (`None`: none).
    pub fstab: Option<PathBuf>,
}

const TOKEN_INIT: u64 = 0;
const TOKEN_LISTENER: u64 = 1;
const TOKEN_SIGNALS: u64 = 2;
const TOKEN_CONFDIR: u64 = 3;
/// The output of a re-exec candidate being checked.
const TOKEN_REEXEC_CHECK: u64 = 4;
/// The inotify instance of the jobs' `file` conditions.
const TOKEN_FILES: u64 = 5;
/// The netlink socket of device events.
const TOKEN_DEVICES: u64 = 6;
/// The mount table (`POLLPRI` at each change).
const TOKEN_MOUNTS: u64 = 7;
/// Connection tokens are their ids offset past the fixed ones.
const TOKEN_CONN_BASE: u64 = 16;
/// Job log pipes: this bit and the pipe's id.
const TOKEN_LOG: u64 = 1 << 48;
/// A spawned child's error pipe: this bit and its pid.
const TOKEN_SETUP: u64 = 1 << 49;
/// The most spawns released together (see the module docs) with up to 1,024
/// jobs: each batch costs one save of the state; a round's batches grow from 1.
pub const SPAWN_BATCH: u32 = 64;

/// The signals the supervisor takes itself, as events of its loop, so that none
/// of them ends it (and throws its state away): SIGHUP re-reads the job files, as
/// it did Upstart's; the rest are logged and change nothing under keel-init —
/// keel-init relays what PID 1 receives, and a signal sent to the supervisor's own
/// pid is no order to die. Its own crashes still end it: `abort()` unblocks
/// SIGABRT first, and faults are not maskable.
const OWN_SIGNALS: [nix::sys::signal::Signal; 8] = {
    use nix::sys::signal::Signal::*;
    [
        SIGHUP, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGALRM, SIGQUIT, SIGABRT,
    ]
};

/// The supervisor's state and every fd it owns: the core's saved state (`snap`),
/// and each part's own (see the module docs).
pub struct Runtime {
    config: Config,
    snap: Snapshot,
    link: Option<InitLink>,
    /// The signals sent to the supervisor itself (see [`OWN_SIGNALS`]); without
    /// keel-init also SIGCHLD and those keel-init would relay.
    signals: Option<nix::sys::signalfd::SignalFd>,
    epoll: OwnedFd,
    control: Control,
    /// This round's spawns and the children that have not exec'd yet.
    spawns: spawning::Spawns,
    /// The definitions saved in the lifeboat.
    persistence: persist::Persistence,
    /// The highest exit seq applied but not yet acknowledged to keel-init.
    unacked: Option<u64>,
    dirty: bool,
    /// A live upgrade under way.
    reexec: power::Reexec,
    /// The confdir's watch, overrides and files that did not load.
    confdir: confdir::ConfdirWatch,
    /// The listening sockets of socket-activated jobs (kept in the lifeboat).
    sockets: crate::sockets::Sockets,
    /// The jobs' `file FILE=…` conditions and their inotify watch (in the lifeboat).
    files: crate::filewatch::FileWatch,
    /// The device events jobs wait for and their netlink socket (in the lifeboat).
    devices: crate::uevents::Uevents,
    /// fstab against the mount table, for mountall's events.
    mounts: crate::mountwatch::MountWatch,
    /// Answers decided this round, sent after the state is saved.
    answers: Vec<(ConnId, Response)>,
    /// Readiness: the notify socket, the bus, `expect fd` sockets, `/proc` polls.
    ready: Watcher,
    /// How job processes are signalled, never a recycled pid (DESIGN.md,
    /// invariant 2): through keel-init, or pidfds where that does not hold.
    pids: PidGuard,
    /// keel's cgroup subtree, if there is one.
    cgroups: Option<cgroup::Tree>,
    /// When stopped instances' cgroups that were still busy are tried again.
    cgroup_retry: Option<Instant>,
    /// What the next sweep of the cgroups looks at.
    sweep: processes::Sweep,
    /// Job log pipes, files and early buffers.
    logs: joblog::Logs,
    apparmor: setup::AppArmorHost,
    /// Whether this supervisor runs as the first userspace of a machine.
    machine: bool,
    /// keel-init has lost exits (its log was full): any tracked pid may have been
    /// reaped unseen (see `open_pidfds`).
    exits_lost: bool,
    /// keel-init's count of supervisors started before this one: names this
    /// process (with its pid) in a re-exec's handover.
    generation: u32,
    /// Each instance's first start (`initctl timeline`).
    timeline: crate::timeline::Timeline,
}

mod bridges;
mod confdir;
mod persist;
mod power;
mod processes;
mod requests;
mod sources;
mod spawning;
mod startup;

/// Monotonic milliseconds, the core's clock (shared by every supervisor of a boot).
fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

impl Runtime {
    /// Runs until the power action (never returns under keel-init).
    pub fn run(&mut self) -> Result<(), Error> {
        let mut events = Vec::with_capacity(64);
        // The saved state is loaded, carried out and saved again (`new`): it is no
        // poison, whatever ends this supervisor.
        if let Some(link) = &self.link {
            persist::mark_loaded(link);
        }
        loop {
            if let Some(action) = self.snap.jobs.power_due() {
                return self.finish_power(action);
            }
            // Here the state is as saved (the last round settled).
            self.flush_early_logs();
            let timeout = self.timeout_ms();
            events.clear();
            match epoll::wait(&self.epoll, spare(&mut events), timeout.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::Wait(e)),
            }
            for ev in events.iter() {
                self.dispatch(ev.data.u64(), ev.flags)?;
            }
            self.control.expire(Instant::now());
            self.read_reexec_check();
            let now = now_ms();
            self.snap.jobs.tick(now);
            if self.ready.poll(&mut self.snap.jobs, &self.epoll, now) | self.confirm_execs() {
                self.dirty = true;
            }
            if self.cgroup_retry.is_some_and(|t| t <= Instant::now()) {
                self.cgroup_retry = None;
                self.sweep.all = true;
                self.dirty = true;
            }
            self.settle();
            // Not while the core has effects to carry out (a spawn's exec read
            // after the round's effects, whose reply is in no saved state): they
            // come first, next round.
            if !self.snap.jobs.effects_pending()
                && let Some(binary) = self.reexec.take_due()
            {
                self.exec_new_image(&binary);
            }
        }
    }

    /// Hands what epoll reported on `token` to the part that owns its source.
    fn dispatch(&mut self, token: u64, flags: epoll::EventFlags) -> Result<(), Error> {
        match token {
            TOKEN_INIT => self.read_init_channel()?,
            TOKEN_LISTENER => {
                for id in self.control.accept() {
                    self.watch_conn(id);
                }
            }
            TOKEN_SIGNALS => self.local_signals(),
            t if t & crate::sockets::TOKEN_SOCKET != 0 => self.socket_ready(t),
            TOKEN_CONFDIR => self.confdir_changed(),
            TOKEN_REEXEC_CHECK => self.read_reexec_check(),
            TOKEN_FILES => self.file_events(),
            TOKEN_DEVICES => self.device_events(),
            TOKEN_MOUNTS => self.mounts_changed(),
            t if t & TOKEN_SETUP != 0 => self.read_setup_pipe((t & !TOKEN_SETUP) as i32),
            t if t & TOKEN_LOG != 0 => self.log_ready(t & !TOKEN_LOG),
            t if Watcher::owns(t) => {
                if self.ready.on_event(t, &mut self.snap.jobs, now_ms()) {
                    // MAINPID= may have named a new main process.
                    self.open_pidfds();
                    self.dirty = true;
                }
            }
            t => {
                let id = t - TOKEN_CONN_BASE;
                if flags.contains(epoll::EventFlags::OUT) {
                    self.control.flush(id);
                }
                self.serve(id);
            }
        }
        Ok(())
    }

    /// How long the loop may wait: until the next deadline of the core, readiness,
    /// a client, a cgroup retry or a re-exec check (none: no wait at all).
    fn timeout_ms(&self) -> Option<rustix::time::Timespec> {
        // Work this round left: events beyond this round's share (see
        // `lifecycle::EVENTS_PER_ROUND`), or a client's next request read while its
        // previous answer went out. Look at the other fds without waiting, then do it.
        if self.snap.jobs.events_pending()
            || self.snap.jobs.effects_pending()
            || self.dirty
            || !self.answers.is_empty()
        {
            return Some(rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            });
        }
        let now = now_ms();
        // A main process whose exec only /proc can tell is looked at again soon.
        let unreported = !self.unreported_execs().is_empty();
        let mut ms: Option<u64> = [
            self.snap.jobs.next_deadline(),
            self.ready.next_wakeup(&self.snap.jobs, now),
            unreported.then_some(now + crate::ready::watch::POLL_MS),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.saturating_sub(now));
        let check = self.reexec.deadline();
        for d in [self.control.next_deadline(), self.cgroup_retry, check]
            .into_iter()
            .flatten()
        {
            let c = d.saturating_duration_since(Instant::now()).as_millis() as u64;
            ms = Some(ms.map_or(c, |m| m.min(c)));
        }
        ms.map(|ms| rustix::time::Timespec {
            tv_sec: (ms / 1000) as i64,
            tv_nsec: ((ms % 1000) * 1_000_000 + 999_999).min(999_999_999) as i64,
        })
    }

    /// An event keel itself emits (`startup`, a relayed signal, `runlevel`).
    fn emit(&mut self, event: Event) {
        if let Err(e) = self.snap.jobs.emit(event, None, now_ms()) {
            tracing::warn!("cannot emit an event: {e}");
        }
        self.dirty = true;
    }

    /// A job's start, stop or failure, in keel's log (see `logging::job_change`).
    fn log_job_change(&self, event: &Event) {
        match crate::logging::job_change(event, &self.snap.jobs) {
            Some((tracing::Level::WARN, line)) => tracing::warn!("{line}"),
            Some((_, line)) => tracing::info!("{line}"),
            None => {}
        }
    }

    /// Carries out the core's effects in the order the module docs give.
    fn settle(&mut self) {
        let changed = self.dirty;
        let (later, effects) = self.carry_out_effects();
        // Only a change can stop an instance; a round that changed nothing (a
        // query) skips the walk of every cgroup. Skipping only ever delays a removal.
        if changed || effects {
            self.sweep_cgroups();
        }
        if self.spawns.go.is_some() {
            self.release_round();
            self.dirty = false;
        } else if self.dirty {
            self.persist();
            self.dirty = false;
        }
        // What said "ready" is consumed only now that the state recording it is saved.
        self.ready
            .after_persist(&self.snap.jobs, &self.epoll, self.link.as_ref());
        for effect in later {
            self.act_on_world(effect);
        }
        for (conn, answer) in std::mem::take(&mut self.answers) {
            let answer = self.as_now(answer);
            self.control.reply(conn, &answer);
            // A client may have sent its next request already.
            self.serve(conn);
        }
        if let (Some(seq), Some(link)) = (self.unacked.take(), &self.link)
            && let Err(e) = link.ack(seq)
        {
            tracing::error!("cannot acknowledge exits to keel-init: {e}");
        }
    }

    /// Carries out the core's effects that come before the state is saved (spawns
    /// held by their go pipe, cgroup remnants killed, logging), until the core has
    /// no more; returns those that wait until it is saved, and whether there
    /// were any effects.
    fn carry_out_effects(&mut self) -> (Vec<Effect>, bool) {
        let mut later = Vec::new();
        let mut any = false;
        self.spawns.batch = 1;
        loop {
            let effects = self.snap.jobs.take_effects();
            if effects.is_empty() {
                return (later, any);
            }
            any = true;
            self.timeline.observe(&effects, &self.snap.jobs, now_ms());
            // The core changed since the last save. A batch of spawns released
            // on the way saves the whole state, these effects' changes with it,
            // so the effects after it do not ask for another save (a respawn
            // costs one save, not two); what they change themselves (a spawn, a
            // failed spawn) marks the state again.
            self.dirty = true;
            for effect in effects {
                match effect {
                    Effect::Spawn {
                        job,
                        instance,
                        kind,
                    } => self.spawn_process(&job, &instance, kind),
                    Effect::KillRemnants { job, instance } => self.kill_remnants(&job, &instance),
                    Effect::Emit(event) => {
                        tracing::debug!("event {} {:?}", event.name, event.env);
                        self.log_job_change(&event);
                    }
                    Effect::Warn(message) => tracing::warn!("{message}"),
                    Effect::Info(message) => tracing::info!("{message}"),
                    other => later.push(other),
                }
            }
        }
    }

    /// An effect that acts on the world once the state is saved: a signal, or an
    /// answer to a waiting client.
    fn act_on_world(&mut self, effect: Effect) {
        match effect {
            Effect::Kill { pid, signal } => self.signal(pid, signal),
            Effect::Reply {
                waiter,
                job,
                instance,
                error,
            } => {
                let answer = match error {
                    Some(e) => refused(e),
                    None => instances(
                        self.snap
                            .jobs
                            .status_of(&job, &instance)
                            .into_iter()
                            .collect(),
                    ),
                };
                self.answers.push((waiter, answer));
            }
            Effect::EventFinished { waiter, failed } => {
                let answer = if failed {
                    refused(Refusal::EventFailed)
                } else {
                    Response::Ok
                };
                self.answers.push((waiter, answer));
            }
            Effect::Spawn { .. }
            | Effect::Emit(_)
            | Effect::Warn(_)
            | Effect::Info(_)
            | Effect::KillRemnants { .. } => {}
        }
    }

    /// Ends the current round of spawns: the state recording its children (and
    /// that the round is to be released) is saved, then they are released. The
    /// next spawn begins a new round.
    fn release_round(&mut self) {
        let Some((round, go)) = self.spawns.go.take() else {
            return;
        };
        self.snap.pending_go = Some((round, go.waiting));
        self.persist();
        self.dirty = false;
        if test_fault_once("abort-between-batches") {
            std::process::abort();
        }
        // The children of earlier batches have exec'd by now, most of them: their
        // launches (stacks, plans, error pipes) go before a whole round of them
        // piles up.
        let earlier: Vec<i32> = self.spawns.launches.keys().copied().collect();
        for pid in earlier {
            self.read_setup_pipe(pid);
        }
        spawn::release(&go.write, go.waiting);
    }

    /// An answer naming instances, brought up to date: decided when the request
    /// came, it is sent after this round's spawns (a `start --no-wait` then shows
    /// the pre-start's pid, as Upstart's does).
    fn as_now(&self, answer: Response) -> Response {
        match answer {
            Response::Instances(list) => Response::Instances(
                list.into_iter()
                    .map(|s| {
                        let now = self.snap.jobs.status_of(&s.job, &s.instance);
                        now.map(answer::wire_status).unwrap_or(s)
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// The definitions of every job that is not deleted.
    fn definitions(&self) -> impl Iterator<Item = &JobDef> + Clone {
        self.snap.jobs.definitions()
    }
}

/// Fault injection for tests: `KEEL_TEST_FAULTS` lists faults to act out (comma
/// separated). `abort-on-resume` aborts right after a saved state was loaded, the
/// way a supervisor choking on a poisoned state would; `abort-mid-flush` (once,
/// see `test_fault_once`) aborts after an early job log was written out, before
/// the state says so; `abort-between-batches` (once) aborts after a batch of
/// spawns was saved, before it is released and before the rest are spawned;
/// `abort-mid-reload` (once) aborts after changes to the job files were read from
/// the confdir's watch, before they are loaded.
fn test_fault(name: &str) -> bool {
    std::env::var("KEEL_TEST_FAULTS").is_ok_and(|f| f.split(',').any(|x| x == name))
}

/// `test_fault`, acted out once: `KEEL_TEST_FAULT_MARK` names a file made the
/// first time, so the supervisor that replaces the faulty one carries on.
fn test_fault_once(name: &str) -> bool {
    test_fault(name)
        && std::env::var_os("KEEL_TEST_FAULT_MARK").is_some_and(|mark| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(mark)
                .is_ok()
        })
}

/// Why the supervisor cannot start, or cannot go on: the binary logs it and exits
/// (keel-init then starts another).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot block the supervisor's own signals: {0}")]
    BlockSignals(nix::Error),
    #[error("handover from keel-init failed: {0}")]
    Handover(std::io::Error),
    #[error("cannot listen on {}: {source}", path.display())]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot deposit the control socket: {0}")]
    DepositControl(std::io::Error),
    #[error("cannot set up the control socket: {0}")]
    Control(std::io::Error),
    #[error("cannot open a signalfd: {0}")]
    Signalfd(nix::Error),
    #[error("cannot set up epoll: {0}")]
    Epoll(rustix::io::Errno),
    #[error("epoll_wait: {0}")]
    Wait(rustix::io::Errno),
    /// keel-init never closes the channel while the supervisor lives: it is gone
    /// (a test's namespace ending).
    #[error("init channel: {0}")]
    InitChannel(std::io::Error),
    #[error("cannot ask keel-init for the power action: {0}")]
    Power(std::io::Error),
}

/// `v`'s spare capacity, for epoll to fill.
fn spare(v: &mut Vec<epoll::Event>) -> rustix::buffer::SpareCapacity<'_, epoll::Event> {
    rustix::buffer::spare_capacity(v)
}
