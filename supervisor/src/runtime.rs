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

use crate::answer::{self, failed, instances, refused};
use crate::control::{self, ConnId, Control};
use crate::initlink::{Incoming, InitLink};
use crate::job::{self, Console, JobDef, ProcessKind};
use crate::journal::{self, Snapshot};
use crate::lifecycle::{self, DEFAULT_PATH, Effect, Event, PowerAction, WaitStatus, parse_env};
use crate::pidguard::PidGuard;
use crate::ready::notify::NotifyAddr;
use crate::ready::watch::Watcher;
use crate::refusal::Refusal;
use crate::runlevel::Telinit;
use crate::{boot, cgroup, joblog, query, setup, spawn};
use keel_proto::ctl::{ErrorKind, LoadFailure, Request, Response};
use rustix::event::epoll;
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use std::collections::BTreeMap;
use std::ffi::CString;
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
}

const TOKEN_INIT: u64 = 0;
const TOKEN_LISTENER: u64 = 1;
const TOKEN_SIGNALS: u64 = 2;
const TOKEN_CONFDIR: u64 = 3;
/// The output of a re-exec candidate being checked.
const TOKEN_REEXEC_CHECK: u64 = 4;
/// The inotify instance of the jobs' `file` conditions.
const TOKEN_FILES: u64 = 5;
/// Connection tokens are their ids offset past the fixed ones.
const TOKEN_CONN_BASE: u64 = 16;
/// Job log pipes: this bit and the pipe's id.
const TOKEN_LOG: u64 = 1 << 48;
/// A spawned child's error pipe: this bit and its pid.
const TOKEN_SETUP: u64 = 1 << 49;
/// The most spawns released together (see the module docs): each batch costs one
/// save of the state; a round's batches grow from 1 to this.
pub const SPAWN_BATCH: u32 = 64;
/// How soon a cgroup still holding a dying process is tried again.
const CGROUP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

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

const LIFEBOAT_CONTROL: &str = "control";
/// Deposited once a supervisor has loaded the saved state and carried out its
/// first round on it; withdrawn by the next one as it starts. Its presence says
/// the last supervisor died of something else than that state (see `Runtime::new`).
const LIFEBOAT_LOADED: &str = "loaded";
/// Supervisors that died in a row soon after their start, none of them having
/// got through the saved state, after which that state is dropped.
const POISON_DEATHS: u32 = 5;
/// The confdir's inotify watch: kept in the lifeboat, it goes on seeing changes
/// while no supervisor runs (see `Runtime::new`).
const LIFEBOAT_CONFDIR_WATCH: &str = "confdir-watch";

pub struct Runtime {
    config: Config,
    snap: Snapshot,
    link: Option<InitLink>,
    /// The signals sent to the supervisor itself (see [`OWN_SIGNALS`]); without
    /// keel-init also SIGCHLD and those keel-init would relay.
    signals: Option<nix::sys::signalfd::SignalFd>,
    epoll: OwnedFd,
    control: Control,
    /// Children spawned this round, released after the state is saved.
    /// This round's "go" pipe, once something was spawned in it.
    go: Option<(u64, spawn::GoPipe)>,
    /// The definitions saved in the lifeboat (a superset of those the saved
    /// state names), and `next_def` when they were saved: definitions made since
    /// are saved before the next state (see `persist`).
    defs_saved: journal::Definitions,
    defs_upto: lifecycle::DefId,
    /// The highest exit seq applied but not yet acknowledged to keel-init.
    unacked: Option<u64>,
    dirty: bool,
    /// A live upgrade requested: the binary to exec once this round is done.
    reexec: Option<PathBuf>,
    /// A re-exec candidate being asked its state format, and who asked.
    reexec_check: Option<(ConnId, crate::reexec::Check)>,
    /// Watches the confdir: a changed job file is re-read at once.
    watch: Option<nix::sys::inotify::Inotify>,
    /// The jobs an override file was read over (show-config's provenance). Not
    /// saved: re-read from the override files when the saved definitions are
    /// taken (the watch vouches that the files are as they were).
    overrides: BTreeMap<String, query::Override>,
    /// The listening sockets of socket-activated jobs (kept in the lifeboat).
    sockets: crate::sockets::Sockets,
    /// The jobs' `file FILE=…` conditions and their inotify watch (in the lifeboat).
    files: crate::filewatch::FileWatch,
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
    /// Job log pipes, files and early buffers.
    logs: joblog::Logs,
    /// Spawned children that have not exec'd yet, by pid: their error pipes,
    /// and what they read and run on until they exec (`spawn::Launch`).
    setup_pipes: BTreeMap<i32, spawn::Launch>,
    /// Setup failures children reported, until their exits are applied.
    setup_failures: BTreeMap<i32, String>,
    apparmor: setup::AppArmorHost,
    /// Whether this supervisor runs as the first userspace of a machine.
    machine: bool,
    /// How many spawns the current batch of this round takes before it is saved
    /// and released: 1 for a round's first, then doubling (see the module docs).
    batch: u32,
    /// keel-init has lost exits (its log was full): any tracked pid may have been
    /// reaped unseen (see `open_pidfds`).
    exits_lost: bool,
    /// keel-init's count of supervisors started before this one: names this
    /// process (with its pid) in a re-exec's handover.
    generation: u32,
    /// The job files that did not load when the confdir was last read; `None`
    /// when the definitions came from the saved state (read again when asked).
    load_failures: Option<Vec<LoadFailure>>,
    /// Each instance's first start (`initctl timeline`).
    timeline: crate::timeline::Timeline,
}

/// Monotonic milliseconds, the core's clock (shared by every supervisor of a boot).
fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

impl Runtime {
    /// Sets everything up: the handover from keel-init (or a standalone start), the
    /// saved state or a fresh one from the confdir, the control socket.
    pub fn new(config: Config) -> anyhow_like::Result<Runtime> {
        let link = InitLink::from_env();
        // Blocked first thing: from now on they wait for the loop, however long
        // the handover takes.
        let signal_set = {
            use nix::sys::signal::{SigSet, Signal};
            let mut set = SigSet::empty();
            for s in OWN_SIGNALS {
                set.add(s);
            }
            if link.is_none() {
                for s in [Signal::SIGCHLD, Signal::SIGPWR, Signal::SIGWINCH] {
                    set.add(s);
                }
            }
            set.thread_block().map_err(|e| e.to_string())?;
            set
        };
        let mut handover = match &link {
            Some(l) => Some(
                l.handover()
                    .map_err(|e| format!("handover from keel-init failed: {e}"))?,
            ),
            None => None,
        };
        let mut lifeboat: Vec<(String, OwnedFd)> = handover
            .as_mut()
            .map(|h| std::mem::take(&mut h.fds))
            .unwrap_or_default();
        let mut take = |name: &str| {
            lifeboat
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| lifeboat.swap_remove(i).1)
        };

        let saved = take(journal::LIFEBOAT_NAME);
        let saved_defs = take(journal::DEFS_LIFEBOAT_NAME);
        let saved_watch = take(LIFEBOAT_CONFDIR_WATCH);
        let listener = take(LIFEBOAT_CONTROL);
        let loaded_before = take(LIFEBOAT_LOADED).is_some();
        if loaded_before && let Some(link) = &link {
            let _ = link.withdraw(LIFEBOAT_LOADED);
        }
        let saved_files = take(crate::filewatch::LIFEBOAT_NAME);
        let (saved_sockets, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut lifeboat)
            .into_iter()
            .partition(|(n, _)| n.starts_with(crate::sockets::LIFEBOAT_PREFIX));
        lifeboat = rest;
        let ready = Watcher::new(NotifyAddr::parse(&config.notify_socket), &mut lifeboat);
        // What is left are "go" pipes of rounds a previous supervisor did not finish,
        // and job log pipes.
        type Entries = Vec<(String, OwnedFd)>;
        let (unfinished_rounds, log_entries): (Entries, Entries) = std::mem::take(&mut lifeboat)
            .into_iter()
            .partition(|(n, _)| n.starts_with("go:"));
        let fresh_boot = saved.is_none();
        let machine = link.is_some() && boot::is_machine_boot();
        if fresh_boot && machine {
            boot::mount_missing();
        }

        // Set when the saved state is dropped: live job processes are then adopted.
        let mut adopt = false;
        // The definitions in the lifeboat (those the saved state names).
        let mut defs_saved = journal::Definitions::new();
        let mut snap = match &saved {
            Some(fd) => {
                // Only a state no supervisor got through is suspect: supervisors
                // killed from outside, however often, never drop one that loads.
                let poisoned = !loaded_before
                    && handover
                        .as_ref()
                        .is_some_and(|h| h.quick_deaths >= POISON_DEATHS);
                match load_saved(fd, saved_defs.as_ref()) {
                    Ok((s, defs)) if !poisoned => {
                        defs_saved = defs;
                        tracing::debug!(
                            "loaded state: last exit {}, round {}, pending {:?}",
                            s.last_exit_seq,
                            s.go_rounds,
                            s.pending_go
                        );
                        tracing::info!(
                            "resumed from the saved state ({} jobs)",
                            s.jobs.job_count()
                        );
                        if test_fault("abort-on-resume") {
                            std::process::abort();
                        }
                        s
                    }
                    Ok(_) => {
                        adopt = true;
                        defs_saved.clear();
                        tracing::error!(
                            "THE SUPERVISOR KEEPS DYING ON ITS SAVED STATE: dropping it, starting over \
                             from the job files and adopting the job processes still running"
                        );
                        Snapshot {
                            booted: true,
                            ..Snapshot::default()
                        }
                    }
                    Err(e) => {
                        adopt = true;
                        tracing::error!(
                            "cannot load the saved state ({e}); starting over from the job files"
                        );
                        Snapshot {
                            booted: true,
                            ..Snapshot::default()
                        }
                    }
                }
            }
            None => Snapshot::default(),
        };
        // The connections a planned re-exec of this very process handed over, with
        // the requests they wait on; any other start answers no one it finds.
        let generation = handover.as_ref().map_or(0, |h| h.generation);
        let conns = snap
            .shell
            .handover
            .take()
            .filter(|h| h.pid == std::process::id() && h.generation == generation);
        if conns.is_none() {
            snap.jobs.forget_waiters();
        }
        if let Some(level) = &snap.shell.log_priority
            && let Err(e) = crate::logging::set_priority(level)
        {
            tracing::warn!("saved log priority: {e}");
        }
        // Spawns the saved state decided and the previous supervisor did not make.
        snap.jobs.resume();
        // A round whose pids were saved is released; any other never was, and its
        // children end unexec'd once the lifeboat's copy of the pipe is closed.
        for (name, fd) in unfinished_rounds {
            if let Some((round, waiting)) = snap.pending_go
                && name == go_name(round)
            {
                tracing::info!("releasing {waiting} processes the previous supervisor had saved");
                spawn::release(&fd, waiting);
            }
            if let Some(link) = &link {
                let _ = link.withdraw(&name);
            }
        }
        snap.pending_go = None;

        let listener = match listener {
            Some(l) => l,
            None => {
                let l = control::bind(&config.socket)
                    .map_err(|e| format!("cannot listen on {}: {e}", config.socket.display()))?;
                if let Some(link) = &link {
                    link.deposit(LIFEBOAT_CONTROL, l.as_fd())
                        .map_err(|e| format!("cannot deposit the control socket: {e}"))?;
                }
                l
            }
        };
        let mut control = Control::new(listener).map_err(|e| e.to_string())?;
        let handed_over = conns.map(|h| control.take_over(h)).unwrap_or_default();

        if link.is_none() {
            // Orphans of jobs come to us when no keel-init is there to take them.
            let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
        }
        let signals = Some(
            nix::sys::signalfd::SignalFd::with_flags(
                &signal_set,
                nix::sys::signalfd::SfdFlags::SFD_NONBLOCK
                    | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
            )
            .map_err(|e| e.to_string())?,
        );

        let cgroups = match cgroup::Tree::open(
            &mut snap.shell.cgroups,
            &cgroup::RootChoice::parse(config.cgroup_root.as_deref()),
            machine,
        ) {
            Ok(tree) => {
                tracing::info!("job cgroups under {}", tree.root().display());
                Some(tree)
            }
            Err(why) => {
                tracing::warn!("no job cgroups: {why}");
                None
            }
        };
        let mut logs = joblog::Logs::new(joblog::Config {
            dir: config.logdir.clone(),
            size: config.log_size,
            keep: config.log_keep,
        });
        let watch_logs = logs.recover(&mut snap.shell.logs, log_entries, link.as_ref());

        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| e.to_string())?;
        if let Some(l) = &link {
            epoll::add(
                &epoll,
                l.as_fd(),
                epoll::EventData::new_u64(TOKEN_INIT),
                epoll::EventFlags::IN,
            )
            .map_err(|e| e.to_string())?;
        }
        epoll::add(
            &epoll,
            control.listener(),
            epoll::EventData::new_u64(TOKEN_LISTENER),
            epoll::EventFlags::IN,
        )
        .map_err(|e| e.to_string())?;
        if let Some(s) = &signals {
            epoll::add(
                &epoll,
                s.as_fd(),
                epoll::EventData::new_u64(TOKEN_SIGNALS),
                epoll::EventFlags::IN,
            )
            .map_err(|e| e.to_string())?;
        }

        let pids = PidGuard::new(link.as_ref());
        let mut rt = Runtime {
            config,
            link,
            signals,
            epoll,
            control,
            go: None,
            defs_upto: snap.jobs.next_def(),
            defs_saved,
            unacked: None,
            dirty: true,
            answers: Vec::new(),
            watch: None,
            reexec: None,
            reexec_check: None,
            ready,
            pids,
            batch: 1,
            cgroups,
            cgroup_retry: None,
            logs,
            setup_pipes: BTreeMap::new(),
            setup_failures: BTreeMap::new(),
            apparmor: setup::AppArmorHost::probe(),
            machine,
            exits_lost: false,
            generation,
            overrides: BTreeMap::new(),
            sockets: crate::sockets::Sockets::recover(saved_sockets),
            files: crate::filewatch::FileWatch::recover(saved_files),
            load_failures: None,
            timeline: Default::default(),
            snap,
        };
        rt.ready.start(&rt.epoll, rt.link.as_ref());
        if !handed_over.is_empty() {
            tracing::info!("{} control connections handed over", handed_over.len());
        }
        for id in handed_over {
            rt.watch_conn(id);
        }
        for id in watch_logs {
            rt.watch_log(id);
        }
        // The saved definitions are the job files as they are if this binary made
        // them from this confdir and the watch that has seen every change since
        // holds none (changes it holds are read in the first round). Else, or on
        // a fresh start, every file is read.
        let seen = crate::check::Loaded::now(&rt.config.confdir);
        match saved_watch.filter(|_| seen.is_some() && rt.snap.shell.confdir == seen) {
            Some(fd) => {
                use rustix::fd::{FromRawFd, IntoRawFd};
                tracing::info!(
                    "job definitions taken from the saved state (its watch saw no change)"
                );
                // SAFETY: the lifeboat's entry is an inotify instance (deposited as
                // one by `watch_confdir`) that nothing else here owns.
                rt.keep_watch(unsafe { nix::sys::inotify::Inotify::from_raw_fd(fd.into_raw_fd()) });
                rt.overrides = crate::check::confdir_overrides(&rt.config.confdir);
                rt.sockets.watch_all(&rt.epoll);
                rt.sync_sockets();
                rt.watch_files();
                rt.sync_files();
            }
            None => {
                rt.sockets.watch_all(&rt.epoll);
                rt.watch_files();
                rt.watch_confdir();
                rt.load_confdir();
            }
        }
        if adopt {
            rt.adopt_survivors();
        }
        if let Some(h) = handover {
            if h.lost_exits > 0 {
                rt.exits_lost = true;
                tracing::warn!(
                    "keel-init lost {} exits while its log was full",
                    h.lost_exits
                );
            }
            for (seq, pid, status) in h.exits {
                tracing::debug!("handed-over exit seq {seq} pid {pid} status {status:#x}");
                rt.apply_exit(seq, pid, status);
            }
        }
        rt.open_pidfds();
        if !rt.snap.booted {
            rt.snap.booted = true;
            rt.emit(Event {
                name: "startup".into(),
                env: Vec::new(),
            });
        }
        // A power action the previous supervisor was carrying out goes on.
        rt.settle();
        Ok(rt)
    }

    /// Finds keel-init's children that are job processes (by the `UPSTART_JOB` and
    /// `UPSTART_INSTANCE` every job process starts with) and tracks each as its
    /// instance's running main, so that nothing runs twice after a dropped state.
    fn adopt_survivors(&mut self) {
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

    /// Watches the confdir through `watch` (a new one, or the one from the
    /// lifeboat with its watches).
    fn keep_watch(&mut self, watch: nix::sys::inotify::Inotify) {
        let added = epoll::add(
            &self.epoll,
            watch.as_fd(),
            epoll::EventData::new_u64(TOKEN_CONFDIR),
            epoll::EventFlags::IN,
        );
        match added {
            Ok(()) => self.watch = Some(watch),
            Err(e) => tracing::warn!("cannot watch {}: {e}", self.config.confdir.display()),
        }
    }

    /// Watches the confdir and every directory below it (inotify is not recursive).
    /// The watch goes into the lifeboat too, so that it sees what changes while no
    /// supervisor runs.
    fn watch_confdir(&mut self) {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        if self.watch.is_none() {
            match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
                Ok(w) => {
                    if let Some(link) = &self.link
                        && let Err(e) = link.deposit(LIFEBOAT_CONFDIR_WATCH, w.as_fd())
                    {
                        tracing::warn!("cannot keep the confdir's watch in the lifeboat: {e}");
                    }
                    self.keep_watch(w);
                    if self.watch.is_none() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot watch {}: {e}", self.config.confdir.display());
                    return;
                }
            }
        }
        let Some(watch) = &self.watch else { return };
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE_SELF;
        let mut dirs = vec![self.config.confdir.clone()];
        while let Some(dir) = dirs.pop() {
            // Adding a watch twice returns the same descriptor: harmless.
            let _ = watch.add_watch(&dir, flags);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                // The type comes with the entry: no stat of every job file, only
                // of a symlink (followed, as the confdir's reader does).
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| match e.file_type() {
                            Ok(t) if t.is_symlink() => e.path().is_dir(),
                            Ok(t) => t.is_dir(),
                            Err(_) => false,
                        })
                        .map(|e| e.path()),
                );
            }
        }
    }

    fn confdir_changed(&mut self) {
        let mut any = false;
        // Saved first: a supervisor killed after the changes are read below and
        // before the definitions made from them are saved must not take the
        // saved ones for current.
        if self.snap.shell.confdir.take().is_some() {
            self.persist();
        }
        if let Some(watch) = &self.watch {
            while let Ok(events) = watch.read_events() {
                if events.is_empty() {
                    break;
                }
                any = true;
            }
        }
        if any && test_fault_once("abort-mid-reload") {
            std::process::abort();
        }
        if any {
            tracing::info!("job files changed; reloading");
            self.load_confdir();
            self.watch_confdir();
        }
    }

    fn load_confdir(&mut self) {
        let conf = crate::check::load_confdir(&self.config.confdir);
        for p in &conf.problems {
            tracing::warn!("{p}");
        }
        self.load_failures = Some(conf.failed);
        self.snap.jobs.set_definitions(conf.jobs);
        self.overrides = conf.overrides;
        self.sync_sockets();
        self.sync_files();
        // With a watch to see what changes from now on.
        self.snap.shell.confdir = self
            .watch
            .as_ref()
            .and_then(|_| crate::check::Loaded::now(&self.config.confdir));
        self.dirty = true;
    }

    /// Watches connection `id` and serves what it has sent already.
    fn watch_conn(&mut self, id: ConnId) {
        if let Some(fd) = self.control.conn_fd(id) {
            let _ = epoll::add(
                &self.epoll,
                fd,
                epoll::EventData::new_u64(TOKEN_CONN_BASE + id),
                epoll::EventFlags::IN
                    | epoll::EventFlags::OUT
                    | epoll::EventFlags::ET
                    | epoll::EventFlags::RDHUP,
            );
        }
        self.control.flush(id);
        self.serve(id);
    }

    /// `reload-configuration`, SIGHUP: every job file read again.
    fn reload_configuration(&mut self) {
        self.load_confdir();
        self.watch_confdir();
    }

    /// Runs until the power action (never returns under keel-init).
    pub fn run(&mut self) -> anyhow_like::Result<()> {
        let mut events = Vec::with_capacity(64);
        // The saved state is loaded, carried out and saved again (`new`): it is no
        // poison, whatever ends this supervisor.
        if let Some(link) = &self.link
            && let Ok(mark) = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
            && let Err(e) = link.deposit(LIFEBOAT_LOADED, mark.as_fd())
        {
            tracing::warn!("cannot mark the saved state as loaded: {e}");
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
                Err(e) => return Err(format!("epoll_wait: {e}").into()),
            }
            for ev in events.iter() {
                let token = ev.data.u64();
                let flags = ev.flags;
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
                    TOKEN_FILES => {
                        for env in self.files.read() {
                            self.emit(Event {
                                name: job::file::EVENT.into(),
                                env,
                            });
                        }
                    }
                    t if t & TOKEN_SETUP != 0 => self.read_setup_pipe((t & !TOKEN_SETUP) as i32),
                    t if t & TOKEN_LOG != 0 => {
                        if self.logs.drain(
                            &mut self.snap.shell.logs,
                            self.link.as_ref(),
                            t & !TOKEN_LOG,
                        ) {
                            self.dirty = true;
                        }
                        for pipe in self.logs.take_closed() {
                            let _ = epoll::delete(&self.epoll, &pipe);
                        }
                    }
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
                self.dirty = true;
            }
            self.settle();
            // Not while the core has effects to carry out (a spawn's exec read
            // after the round's effects, whose reply is in no saved state): they
            // come first, next round.
            if !self.snap.jobs.effects_pending()
                && let Some(binary) = self.reexec.take()
            {
                self.exec_new_image(&binary);
            }
        }
    }

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
        let unreported = self
            .snap
            .jobs
            .awaiting_exec()
            .iter()
            .any(|pid| !self.setup_pipes.contains_key(pid));
        let mut ms: Option<u64> = [
            self.snap.jobs.next_deadline(),
            self.ready.next_wakeup(&self.snap.jobs, now),
            unreported.then_some(now + crate::ready::watch::POLL_MS),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.saturating_sub(now));
        let check = self.reexec_check.as_ref().map(|(_, c)| c.deadline());
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

    fn read_init_channel(&mut self) -> anyhow_like::Result<()> {
        loop {
            let msg = match self.link.as_ref().map(|l| l.recv()) {
                Some(Ok(Some(m))) => m,
                Some(Ok(None)) | None => return Ok(()),
                // keel-init never closes the channel while we live: it is gone (a
                // test's namespace ending); nothing is left to supervise for.
                Some(Err(e)) => return Err(format!("init channel: {e}").into()),
            };
            match msg {
                Incoming::Exit { seq, pid, status } => {
                    tracing::debug!("exit seq {seq} pid {pid} status {status:#x}");
                    self.apply_exit(seq, pid, status)
                }
                Incoming::Signal(signo) => self.on_signal(signo),
                Incoming::Refused(what) => {
                    tracing::error!("keel-init refused a lifeboat request: {what}")
                }
            }
        }
    }

    fn apply_exit(&mut self, seq: u64, pid: i32, status: i32) {
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
        if !self.setup_failures.contains_key(&pid)
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
        match self.setup_failures.remove(&pid) {
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
                    .contains(&(job.clone(), instance.clone()))
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
    fn open_pidfds(&mut self) {
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
                            .contains(&(job.clone(), instance.clone()))
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

    /// Main processes whose exec no error pipe will report (their spawn was a
    /// previous supervisor's): their exec is read from /proc. True if the state
    /// changed.
    fn confirm_execs(&mut self) -> bool {
        let unreported: Vec<i32> = self
            .snap
            .jobs
            .awaiting_exec()
            .into_iter()
            .filter(|pid| !self.setup_pipes.contains_key(pid))
            .collect();
        let mut changed = false;
        for pid in unreported {
            if crate::ready::procfs::has_execd(pid) {
                self.snap.jobs.execd(pid, now_ms());
                changed = true;
            }
        }
        changed
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
    fn signal(&self, pid: i32, signal: job::Signal) {
        let sig = rustix::process::Signal::from_named_raw(signal.0)
            .unwrap_or(rustix::process::Signal::KILL);
        self.pids.signal(self.link.as_ref(), pid, sig, true);
    }

    /// Reads child `pid`'s error pipe: a failure record is kept until its exit is
    /// applied; at EOF the pipe is dropped, and EOF without a record before it
    /// means it exec'd (after a record, EOF is the failed child's end).
    fn read_setup_pipe(&mut self, pid: i32) {
        let Some(launch) = self.setup_pipes.get(&pid) else {
            return;
        };
        match launch.report() {
            // Kept until EOF: the child may still run on its stack until it ends.
            spawn::Report::Failed(failure) => {
                self.setup_failures.insert(pid, launch.describe(&failure));
                return;
            }
            spawn::Report::Pending => return,
            spawn::Report::Done if self.setup_failures.contains_key(&pid) => {}
            spawn::Report::Done => {
                self.snap.jobs.execd(pid, now_ms());
                self.dirty = true;
            }
        }
        // Out of epoll before it is closed: a child spawned since, before its own
        // setup closed its copy of our fds, keeps the pipe open, and epoll would
        // go on reporting the hang-up to a loop that no longer reads it.
        if let Some(launch) = self.setup_pipes.remove(&pid) {
            let _ = epoll::delete(&self.epoll, launch.errors());
        }
    }

    /// The signals sent to the supervisor itself; without keel-init also our
    /// children's exits (SIGCHLD) and the signals keel-init would relay.
    fn local_signals(&mut self) {
        let mut signals = Vec::new();
        if let Some(fd) = &mut self.signals {
            while let Ok(Some(info)) = fd.read_signal() {
                signals.push((info.ssi_signo as i32, info.ssi_pid));
            }
        }
        for (signo, sender) in signals {
            match signo {
                libc::SIGCHLD => {}
                libc::SIGHUP => {
                    tracing::info!("SIGHUP from pid {sender}: reloading the configuration");
                    self.reload_configuration();
                }
                // What keel-init would relay, it relays; anything else (or a
                // relayable signal sent to the supervisor's own pid) is no reason
                // to lose the state.
                _ if self.link.is_none() => self.on_signal(signo),
                _ => tracing::info!(
                    "signal {} from pid {sender} ignored (the supervisor keeps running)",
                    job::Signal(signo).name()
                ),
            }
        }
        if self.link.is_none() {
            self.reap_own();
        }
    }

    fn reap_own(&mut self) {
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

    /// A signal keel-init relayed (or, without keel-init, one sent to us).
    fn on_signal(&mut self, signo: i32) {
        let event = match signo {
            // Upstart re-read its configuration on SIGHUP.
            libc::SIGHUP => {
                self.reload_configuration();
                return;
            }
            libc::SIGINT => "control-alt-delete",
            libc::SIGPWR => "power-status-changed",
            libc::SIGWINCH => "keyboard-request",
            libc::SIGTERM if self.link.is_none() => {
                // A standalone supervisor told to end: stop every job first.
                self.begin_power(PowerAction::PowerOff);
                return;
            }
            _ => {
                tracing::info!("signal {} received", job::Signal(signo).name());
                return;
            }
        };
        self.emit(Event {
            name: event.into(),
            env: Vec::new(),
        });
    }

    /// Reads and carries out what connection `id` asks, for as long as it asks.
    fn serve(&mut self, id: ConnId) {
        while let Some(incoming) = self.control.read(id) {
            self.request(incoming.conn, incoming.request);
            if !self.control.is_open(id) {
                break;
            }
        }
    }

    fn request(&mut self, conn: ConnId, request: Request) {
        let now = now_ms();
        // Whatever changes something is saved before it is answered, even a goal
        // change that moves no state yet (a stop during pre-start).
        if !request.is_query() {
            self.dirty = true;
        }
        let named_job = match &request {
            Request::Start { job, .. }
            | Request::Stop { job, .. }
            | Request::Restart { job, .. }
            | Request::Reload { job, .. }
            | Request::Status { job, .. }
            | Request::LogPath { job, .. }
            | Request::Usage { job } => Some(job.clone()),
            Request::CheckConfig { job, .. } | Request::ShowConfig { job } => job.clone(),
            _ => None,
        };
        let jobs = &mut self.snap.jobs;
        let answer: Option<Response> = match request {
            Request::Start {
                job,
                instance,
                env,
                wait,
            } => {
                let waiter = wait.then_some(conn);
                let outcome = jobs
                    .request_env(&job, instance.as_deref(), &env)
                    .and_then(|env| jobs.start(&job, env, waiter, now));
                accepted(wait, outcome)
            }
            Request::Stop {
                job,
                instance,
                env,
                wait,
            } => {
                let waiter = wait.then_some(conn);
                let outcome = jobs
                    .request_env(&job, instance.as_deref(), &env)
                    .and_then(|env| jobs.stop(&job, &env, waiter, now));
                accepted(wait, outcome)
            }
            Request::Restart {
                job,
                instance,
                env,
                wait,
            } => {
                let waiter = wait.then_some(conn);
                let outcome = jobs
                    .request_env(&job, instance.as_deref(), &env)
                    .and_then(|env| jobs.restart(&job, &env, waiter, now));
                accepted(wait, outcome)
            }
            Request::Status { job, instance, env } => Some(
                match jobs
                    .request_env(&job, instance.as_deref(), &env)
                    .and_then(|env| jobs.status(&job, &env))
                {
                    Ok(s) => instances(s),
                    Err(e) => refused(e),
                },
            ),
            Request::List => Some(instances(jobs.list())),
            Request::Version => Some(Response::Version {
                version: format!("keel {}", env!("CARGO_PKG_VERSION")),
            }),
            Request::Power { action } => {
                self.begin_power(answer::core_power(action));
                Some(Response::Ok)
            }
            Request::ReloadConfiguration => {
                self.reload_configuration();
                Some(match self.load_failures() {
                    [] => Response::Ok,
                    failed => Response::LoadFailures(failed.to_vec()),
                })
            }
            Request::LoadFailures => Some(Response::LoadFailures(self.load_failures().to_vec())),
            Request::Timeline => Some(Response::Timeline(self.timeline.entries().to_vec())),
            Request::LogPath { job, instance, env } => Some(
                match jobs
                    .request_env(&job, instance.as_deref(), &env)
                    .and_then(|env| jobs.status(&job, &env))
                {
                    Ok(found) => self.log_path(&job, &found),
                    Err(e) => refused(e),
                },
            ),
            Request::CheckConfig { job, ignore } => Some(
                match query::check_config(self.definitions(), job.as_deref(), &ignore) {
                    Ok(problems) => answer::problems(problems),
                    Err(e) => refused(e),
                },
            ),
            Request::ShowConfig { job } => Some(self.show_config(job.as_deref())),
            Request::Reload { job, instance, env } => Some(
                match self.snap.jobs.request_env(&job, instance.as_deref(), &env) {
                    Ok(env) => self.reload(&job, &env),
                    Err(e) => refused(e),
                },
            ),
            Request::Telinit { runlevel, .. } if runlevel == b'u' || runlevel == b'U' => {
                // Upstart's `telinit u`: re-execute.
                self.request_reexec(conn, None)
            }
            Request::Telinit { runlevel, env } => Some(match parse_env(&env) {
                Ok(env) => self.telinit(runlevel, env),
                Err(e) => refused(e),
            }),
            Request::Runlevel => Some(Response::Runlevel {
                previous: self.snap.runlevel.previous,
                current: self.snap.runlevel.current,
            }),
            Request::LogPriority { level } => Some(match level {
                None => Response::Value(crate::logging::priority().to_string()),
                Some(l) => match crate::logging::set_priority(&l) {
                    Ok(()) => {
                        self.snap.shell.log_priority = Some(l);
                        Response::Ok
                    }
                    Err(message) => failed(ErrorKind::InvalidRequest, message),
                },
            }),
            Request::Usage { job } => Some(match self.snap.jobs.usage(&job) {
                Ok(usage) => Response::Value(usage),
                Err(e) => refused(e),
            }),
            Request::ListEnv => Some(Response::Env(self.snap.jobs.environment())),
            Request::GetEnv { name } => Some(match self.snap.jobs.get_env(&name) {
                Ok(value) => Response::Value(value),
                Err(e) => refused(e),
            }),
            Request::SetEnv { vars, retain } => Some(match self.snap.jobs.set_env(vars, retain) {
                Ok(()) => Response::Ok,
                Err(e) => refused(e),
            }),
            Request::UnsetEnv { names } => Some(match self.snap.jobs.unset_env(&names) {
                Ok(()) => Response::Ok,
                Err(e) => refused(e),
            }),
            Request::ResetEnv => {
                self.snap.jobs.reset_env();
                Some(Response::Ok)
            }
            // Early job logs are written out after this round.
            Request::NotifyDiskWriteable => {
                self.logs.flush_wanted = true;
                Some(Response::Ok)
            }
            Request::Reexec { binary } => self.request_reexec(conn, binary),
            Request::Emit { event, env, wait } => match parse_env(&env) {
                Ok(_) if event.is_empty() => Some(refused(Refusal::EmptyEventName)),
                Ok(env) => match jobs.emit(Event { name: event, env }, wait.then_some(conn), now) {
                    Ok(()) if wait => None,
                    Ok(()) => Some(Response::Ok),
                    Err(e) => Some(refused(e)),
                },
                Err(e) => Some(refused(e)),
            },
        };
        if let Some(mut answer) = answer {
            if let (Some(job), Response::Error(e)) = (&named_job, &mut answer)
                && e.kind == ErrorKind::UnknownJob
            {
                self.explain_unknown(job, &mut e.message);
            }
            self.answers.push((conn, answer));
        }
    }

    /// `LogPath`: the log file of the one instance `found`, if its job logs.
    fn log_path(&self, job: &str, found: &[lifecycle::InstanceStatus]) -> Response {
        let [only] = found else {
            return failed(
                ErrorKind::InvalidRequest,
                format!(
                    "{job} has {} instances: name one with KEY=VALUE",
                    found.len()
                ),
            );
        };
        let logs = self
            .snap
            .jobs
            .job(job)
            .is_some_and(|j| j.def().console == Console::Log);
        if !logs {
            return failed(
                ErrorKind::InvalidRequest,
                format!("{job} keeps no log (its console is not `log`)"),
            );
        }
        let path = self.logs.path(&joblog::file_name(job, &only.instance));
        Response::Value(path.display().to_string())
    }

    /// The job files that did not load (read now if the definitions came from
    /// the saved state).
    fn load_failures(&mut self) -> &[LoadFailure] {
        self.load_failures
            .get_or_insert_with(|| crate::check::load_confdir(&self.config.confdir).failed)
    }

    /// `Unknown job: JOB` of a job whose file did not load says why.
    fn explain_unknown(&mut self, job: &str, message: &mut String) {
        if let Some(failed) = self.load_failures().iter().find(|f| f.job == job) {
            message.push_str(&format!(
                " (its job file did not load: {})",
                failed.errors.join("; ")
            ));
        }
    }
}

impl Runtime {
    /// Holds the listening sockets the jobs' `start on socket …` name, no more.
    fn sync_sockets(&mut self) {
        let mut wanted: Vec<job::socket::SocketSpec> = self
            .definitions()
            .flat_map(job::socket::job_sockets)
            .collect();
        wanted.sort();
        wanted.dedup();
        for problem in self
            .sockets
            .sync(&wanted, self.link.as_ref(), Some(&self.epoll))
        {
            tracing::error!("{problem}");
        }
    }

    /// Watches the directories of the jobs' `file` conditions, no others.
    fn sync_files(&mut self) {
        let mut wanted: Vec<job::file::FileSpec> =
            self.definitions().flat_map(job::file::job_files).collect();
        wanted.sort();
        wanted.dedup();
        let (new, problems) = self.files.sync(&wanted, self.link.as_ref());
        for problem in problems {
            tracing::error!("{problem}");
        }
        if new {
            self.watch_files();
        }
    }

    /// Waits on the file conditions' inotify instance, if there is one.
    fn watch_files(&self) {
        if let Some(fd) = self.files.fd() {
            let added = epoll::add(
                &self.epoll,
                fd,
                epoll::EventData::new_u64(TOKEN_FILES),
                epoll::EventFlags::IN,
            );
            if let Err(e) = added {
                tracing::error!("cannot wait for file events: {e}");
            }
        }
    }

    /// Connections arrived on a listening socket: the `socket` event, with
    /// Upstart's variables.
    fn socket_ready(&mut self, token: u64) {
        if let Some(spec) = self.sockets.by_token(token) {
            let env = spec.event_env();
            self.emit(Event {
                name: job::socket::EVENT.into(),
                env,
            });
        }
    }

    /// The listening socket for a process of a job started by `socket`: the
    /// socket the job names whose event variables its environment holds.
    fn listen_socket(&self, def: &JobDef, env: &[String]) -> Option<OwnedFd> {
        let spec = job::socket::job_sockets(def).into_iter().find(|spec| {
            spec.event_env().iter().all(|(k, v)| {
                env.iter().any(|e| {
                    e.strip_prefix(k.as_str()).and_then(|r| r.strip_prefix('=')) == Some(v)
                })
            })
        })?;
        let fd = self.sockets.get(&spec)?;
        rustix::io::fcntl_dupfd_cloexec(fd, 0).ok()
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
        let mut later = Vec::new();
        self.batch = 1;
        loop {
            let effects = self.snap.jobs.take_effects();
            if effects.is_empty() {
                break;
            }
            self.timeline.observe(&effects, &self.snap.jobs, now_ms());
            for effect in effects {
                // Changed since the last save (a batch released on the way saves).
                self.dirty = true;
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
        self.sweep_cgroups();
        if self.go.is_some() {
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

    /// Ends the current round of spawns: the state recording its children (and
    /// that the round is to be released) is saved, then they are released. The
    /// next spawn begins a new round.
    fn release_round(&mut self) {
        let Some((round, go)) = self.go.take() else {
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
        let earlier: Vec<i32> = self.setup_pipes.keys().copied().collect();
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

    /// Saves the state into the lifeboat (under keel-init; standalone there is
    /// nobody to survive). Definitions made since the last save go first, with
    /// every one saved before (the state in the lifeboat may still name those);
    /// once the new state is saved, definitions it does not name are dropped.
    fn persist(&mut self) {
        if self.link.is_none() {
            return;
        }
        // Definitions the new state no longer names, dropped once it is saved.
        let mut unused = None;
        if self.snap.jobs.next_def() != self.defs_upto {
            let live = self.snap.jobs.live_definitions();
            let mut all = self.defs_saved.clone();
            all.extend(live.iter().map(|(id, d)| (*id, d.clone())));
            if all.len() > live.len() {
                unused = Some(live);
            }
            self.save_definitions(all);
            self.defs_upto = self.snap.jobs.next_def();
        }
        let bytes = journal::encode(&self.snap);
        tracing::debug!(
            "saving state: last exit {}, round {}, pending {:?}",
            self.snap.last_exit_seq,
            self.snap.go_rounds,
            self.snap.pending_go
        );
        self.deposit(journal::LIFEBOAT_NAME, bytes, "the state");
        if let Some(live) = unused {
            self.save_definitions(live);
        }
    }

    /// Saves `defs` as the definitions in the lifeboat.
    fn save_definitions(&mut self, defs: journal::Definitions) {
        let bytes = journal::encode_definitions(&defs);
        self.deposit(journal::DEFS_LIFEBOAT_NAME, bytes, "the job definitions");
        self.defs_saved = defs;
    }

    /// `bytes` into a sealed memfd, deposited in the lifeboat as `name`.
    fn deposit(&self, name: &str, bytes: Result<Vec<u8>, journal::SaveError>, what: &str) {
        let Some(link) = &self.link else {
            return;
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(e) => return tracing::error!("{e}"),
        };
        if let Err(e) = journal::to_memfd(&bytes).and_then(|fd| link.deposit(name, fd.as_fd())) {
            tracing::error!("cannot save {what}: {e}");
        }
    }

    fn spawn_process(&mut self, job: &str, instance: &str, kind: ProcessKind) {
        let now = now_ms();
        let (plan, ready_fd) = match self.plan(job, instance, kind) {
            Ok(p) => p,
            Err(reason) => {
                let reason = format!("{} process: {reason}", kind.name());
                tracing::warn!("{job}: {reason}");
                self.snap
                    .jobs
                    .spawn_failed(job, instance, kind, reason, now);
                return;
            }
        };
        if self.go.is_none() {
            match spawn::GoPipe::new() {
                Ok(go) => {
                    self.snap.go_rounds += 1;
                    let round = self.snap.go_rounds;
                    if let Some(link) = &self.link
                        && let Err(e) = link.deposit(&go_name(round), go.write.as_fd())
                    {
                        tracing::error!("cannot deposit the go pipe: {e}");
                    }
                    self.go = Some((round, go));
                }
                Err(e) => {
                    let reason = format!("failed to spawn {} process: {e}", kind.name());
                    self.snap
                        .jobs
                        .spawn_failed(job, instance, kind, reason, now);
                    return;
                }
            }
        }
        let Some((_, go)) = self.go.as_mut() else {
            return;
        };
        let into_cgroup = plan.cgroup.is_some();
        match spawn::spawn(plan, go) {
            Ok(child) if go.waiting >= self.batch => {
                self.spawned(job, instance, kind, child, ready_fd);
                self.release_round();
                let most = SPAWN_BATCH.max((self.snap.jobs.job_count() / 16) as u32);
                self.batch = (self.batch * 2).min(most);
            }
            Ok(child) => self.spawned(job, instance, kind, child, ready_fd),
            Err(e) => {
                let reason = match (into_cgroup, e.raw_os_error()) {
                    (true, Some(libc::EBUSY | libc::EOPNOTSUPP)) => format!(
                        "failed to spawn {} process into its cgroup: {}",
                        kind.name(),
                        spawn::strerror(e.raw_os_error().unwrap_or(0))
                    ),
                    _ => format!("failed to spawn {} process: {e}", kind.name()),
                };
                tracing::warn!("{job}: {reason}");
                self.snap
                    .jobs
                    .spawn_failed(job, instance, kind, reason, now);
            }
        }
    }

    /// Takes a new child into account: its error pipe, its pidfd, an `expect fd`
    /// socket's other end, and its pid for the core.
    fn spawned(
        &mut self,
        job: &str,
        instance: &str,
        kind: ProcessKind,
        child: spawn::Spawned,
        ready_fd: Option<OwnedFd>,
    ) {
        tracing::debug!(
            "spawned {job} {} pid {} in round {}",
            kind.name(),
            child.pid,
            self.snap.go_rounds
        );
        let _ = epoll::add(
            &self.epoll,
            child.launch.errors(),
            epoll::EventData::new_u64(TOKEN_SETUP | child.pid as u64),
            epoll::EventFlags::IN,
        );
        self.setup_pipes.insert(child.pid, child.launch);
        self.pids.spawned(child.pid, child.pidfd);
        if let Some(ours) = ready_fd {
            self.ready
                .keep_fd(child.pid, ours, &self.epoll, self.link.as_ref());
        }
        self.snap.jobs.spawned(job, instance, kind, child.pid);
    }

    /// Everything a process of the instance needs, prepared in the parent: the
    /// command, its environment, its setup (`setup::prepare`), and the instance's
    /// cgroup and log pipe.
    /// With it, keel's end of an `expect fd` main process's readiness socket.
    fn plan(
        &mut self,
        job: &str,
        instance: &str,
        kind: ProcessKind,
    ) -> Result<(spawn::Plan, Option<OwnedFd>), String> {
        let inst = self
            .snap
            .jobs
            .instance(job, instance)
            .ok_or("instance vanished")?;
        let def: &JobDef = inst.def();
        let process = def.process(kind).ok_or("no such process")?;
        let pairs = |env: &[String]| -> Vec<(String, String)> {
            env.iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let env = lifecycle::process_environment(job, inst, kind, &[]);
        let prepared = setup::prepare(def, kind, &pairs(&env), &self.apparmor)?;
        for w in &prepared.warnings {
            tracing::warn!("{job}: {w}");
        }
        let mut env = match &prepared.login {
            Some(login) => lifecycle::process_environment(job, inst, kind, &login.vars()),
            None => env,
        };
        if kind == ProcessKind::Main && def.expect == job::Expect::Notify {
            env.push(format!("NOTIFY_SOCKET={}", self.ready.notify_socket()));
        }
        // initctl inside the job finds this supervisor (unless the job says otherwise).
        if let Some(socket) = self.config.socket.to_str()
            && socket != keel_proto::ctl::DEFAULT_SOCKET
            && !env.iter().any(|e| e.starts_with("KEEL_SOCKET="))
        {
            env.push(format!("{}={socket}", keel_proto::ctl::SOCKET_ENV));
        }
        let ready_target = match (&def.expect, kind) {
            (job::Expect::Fd(n), ProcessKind::Main) => {
                let script = matches!(process, job::Process::Script { .. });
                if spawn::reserved_fd(*n, script) {
                    return Err(format!(
                        "expect fd {n}: fd {n} is keel's own in a job process (choose another)"
                    ));
                }
                Some(*n)
            }
            _ => None,
        };
        let listen = self.listen_socket(def, &env);
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        let root = def.chroot.as_deref();
        let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
        let (argv, script): (Vec<String>, Option<Vec<u8>>) = match process {
            job::Process::Exec { .. } => match process.exec_argv() {
                Some(mut argv) if !argv.is_empty() => {
                    argv[0] = spawn::resolve(&argv[0], &path, root)
                        .ok_or_else(|| format!("{}: command not found", argv[0]))?;
                    (argv, None)
                }
                // Shell metacharacters: let the shell run it, replacing itself.
                _ => {
                    let job::Process::Exec { command } = process else {
                        unreachable!()
                    };
                    (
                        vec![
                            "/bin/sh".into(),
                            "-e".into(),
                            "-c".into(),
                            format!("exec {command}"),
                        ],
                        None,
                    )
                }
            },
            job::Process::Script { interpreter, body } => {
                let mut argv = if interpreter.is_empty() {
                    vec!["/bin/sh".to_string(), "-e".to_string()]
                } else {
                    interpreter.clone()
                };
                argv[0] = spawn::resolve(&argv[0], &path, root)
                    .ok_or_else(|| format!("{}: interpreter not found", argv[0]))?;
                argv.push(format!("/proc/self/fd/{}", spawn::SCRIPT_FD));
                (argv, Some(body.clone().into_bytes()))
            }
        };
        let (settings, warnings) = cgroup::settings(&def.cgroups)?;
        for w in &warnings {
            tracing::warn!("{job}: {w}");
        }
        let mut plan = spawn::Plan {
            argv: argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
            env: env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?,
            script,
            console: def.console,
            log: None,
            chdir: cstr(def.chdir.as_deref().unwrap_or("/"))?,
            umask: def.umask.unwrap_or(0o022),
            init_child: self.link.is_some(),
            pidfd: self.pids.wants_pidfd(),
            cgroup: None,
            ready_fd: None,
            listen_fd: None,
            setup: prepared.setup,
        };
        plan.cgroup = self.instance_cgroup(job, instance, &settings)?;
        // Socket activation: the socket at fd 3, named as systemd and Upstart did.
        if let Some(fd) = listen {
            if ready_target == Some(spawn::LISTEN_FD) {
                return Err(format!(
                    "expect fd {}: the listening socket of `start on socket` is there",
                    spawn::LISTEN_FD
                ));
            }
            for var in ["LISTEN_FDS=1", "UPSTART_FDS=3"] {
                plan.env.push(cstr(var)?);
            }
            plan.listen_fd = Some(fd);
        }
        let mut ours = None;
        if let Some(n) = ready_target {
            let (child, keel) = Watcher::fd_socket()
                .map_err(|e| format!("cannot make the readiness socket: {e}"))?;
            plan.ready_fd = Some((child, n));
            ours = Some(keel);
        }
        if plan.console == Console::Log {
            let (writer, new) = self
                .logs
                .writer(&mut self.snap.shell.logs, self.link.as_ref(), job, instance)
                .map_err(|e| format!("cannot open the log pipe: {e}"))?;
            if let Some(id) = new {
                self.watch_log(id);
            }
            plan.log = Some(writer);
        }
        Ok((plan, ours))
    }

    /// The instance's cgroup, as an fd to spawn into: made, with `settings` written,
    /// before the instance's first process.
    fn instance_cgroup(
        &mut self,
        job: &str,
        instance: &str,
        settings: &[(String, String)],
    ) -> Result<Option<OwnedFd>, String> {
        let Some(tree) = &self.cgroups else {
            if let Some((key, _)) = settings.first() {
                return Err(format!(
                    "cgroup {key}: keel has no cgroup2 hierarchy to apply it in"
                ));
            }
            return Ok(None);
        };
        let key = (job.to_string(), instance.to_string());
        let path = if self.snap.shell.cgroups.instances.contains(&key) {
            tree.instance_path(job, instance)
        } else {
            // Recorded first, so that it is removed again even if this fails half-way.
            self.snap.shell.cgroups.instances.insert(key);
            self.dirty = true;
            tree.create(job, instance, settings)?
        };
        cgroup::Tree::open_dir(&path)
            .map(Some)
            .map_err(|e| format!("cgroup {}: {}", path.display(), e))
    }

    /// Kills whatever is left in the instance's cgroup (main has ended on the way
    /// to post-stop).
    fn kill_remnants(&mut self, job: &str, instance: &str) {
        let Some(tree) = &self.cgroups else { return };
        if !self
            .snap
            .shell
            .cgroups
            .instances
            .contains(&(job.to_string(), instance.to_string()))
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
    /// one still holding a dying process is tried again shortly.
    fn sweep_cgroups(&mut self) {
        let Some(tree) = &self.cgroups else { return };
        let jobs = &self.snap.jobs;
        let done: Vec<(String, String)> = self
            .snap
            .shell
            .cgroups
            .instances
            .iter()
            .filter(|(j, i)| {
                jobs.instance(j, i)
                    .is_none_or(|inst| inst.state() == lifecycle::State::Waiting)
            })
            .cloned()
            .collect();
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

    /// Watches job log pipe `id`.
    fn watch_log(&mut self, id: u64) {
        if let Some(fd) = self.logs.pipe_fd(id)
            && let Err(e) = epoll::add(
                &self.epoll,
                fd,
                epoll::EventData::new_u64(TOKEN_LOG | id),
                epoll::EventFlags::IN,
            )
        {
            tracing::error!("cannot watch log pipe {id}: {e}");
        }
    }

    /// Writes out early job logs once their directory can be written (after a
    /// round, when the state is saved: each flush saves it twice more, see `joblog`).
    fn flush_early_logs(&mut self) {
        for id in self.logs.take_flushes(&self.snap.shell.logs) {
            if !self.logs.flush_begin(&mut self.snap.shell.logs, id) {
                continue;
            }
            self.persist();
            if self.logs.flush_copy(&mut self.snap.shell.logs, id) {
                if test_fault_once("abort-mid-flush") {
                    std::process::abort();
                }
                self.logs
                    .flush_end(&mut self.snap.shell.logs, self.link.as_ref(), id);
                tracing::info!("wrote out the early log {id}");
            }
            self.persist();
        }
    }

    /// The definitions of every job that is not deleted.
    fn definitions(&self) -> impl Iterator<Item = &JobDef> + Clone {
        self.snap.jobs.definitions()
    }

    /// `show-config [JOB]`: each job's conditions, emits and definition.
    fn show_config(&self, only: Option<&str>) -> Response {
        let configs: Vec<_> = self
            .definitions()
            .filter(|d| only.is_none_or(|o| d.name == o))
            .map(|d| query::job_config(d, self.overrides.get(&d.name)))
            .collect();
        match only {
            Some(name) if configs.is_empty() => refused(Refusal::UnknownJob(name.to_string())),
            _ => answer::configs(configs),
        }
    }

    /// `reload`: the job's reload signal to its main process.
    fn reload(&mut self, job: &str, env: &[(String, String)]) -> Response {
        let status = match self.snap.jobs.status(job, env) {
            Ok(s) => s,
            Err(e) => return refused(e),
        };
        let signal = self
            .snap
            .jobs
            .job(job)
            .map(|j| j.def().reload_signal.0)
            .unwrap_or(libc::SIGHUP);
        let main = status
            .first()
            .and_then(|s| s.processes.iter().find(|p| p.kind == "main"))
            .map(|p| p.pid);
        let Some(pid) = main else {
            return refused(Refusal::NotRunning(job.to_string()));
        };
        // As every signal: never a recycled pid.
        match rustix::process::Signal::from_named_raw(signal)
            .is_some_and(|s| self.pids.signal(self.link.as_ref(), pid, s, false))
        {
            true => instances(status),
            false => failed(ErrorKind::Internal, format!("cannot signal process {pid}")),
        }
    }

    /// `telinit N`: records the runlevel and emits Upstart's `runlevel` event with
    /// `RUNLEVEL` and `PREVLEVEL`, which jobs (`start on runlevel [2345]`) follow.
    /// `telinit 0` powers off and `telinit 6` reboots, through that event; `-e`
    /// variables join the event of any other runlevel.
    fn telinit(&mut self, runlevel: u8, extra: Vec<(String, String)>) -> Response {
        match Telinit::parse(runlevel) {
            Err(e) => return refused(e),
            Ok(Telinit::PowerOff) => self.begin_power(PowerAction::PowerOff),
            Ok(Telinit::Reboot) => self.begin_power(PowerAction::Reboot),
            Ok(Telinit::Change(runlevel)) => {
                let mut env = self.change_runlevel(runlevel);
                env.extend(extra);
                self.emit(Event {
                    name: "runlevel".into(),
                    env,
                });
            }
        }
        Response::Ok
    }

    /// Records `runlevel` as the current one; the `runlevel` event's variables.
    fn change_runlevel(&mut self, runlevel: u8) -> Vec<(String, String)> {
        self.dirty = true;
        self.snap.runlevel.change(runlevel)
    }

    /// A re-exec into `binary` (default: this one), which must read this state's
    /// format: refusing here keeps the running supervisor, where a failed load
    /// after exec would lose the state. The very file this supervisor runs (the
    /// same inode) reads its own format and is taken at once; any other is asked
    /// (`reexec`), and `conn` answered once it has said — later rounds, while the
    /// loop goes on serving.
    fn request_reexec(&mut self, conn: ConnId, binary: Option<String>) -> Option<Response> {
        let refuse = |message: String| Some(failed(ErrorKind::InvalidRequest, message));
        if self.link.is_none() {
            return refuse("re-exec needs keel-init to keep the state across it".into());
        }
        if self.reexec_check.is_some() || self.reexec.is_some() {
            return refuse("another re-exec is under way".into());
        }
        let path = match binary {
            Some(b) => PathBuf::from(b),
            None => match std::fs::read_link("/proc/self/exe") {
                Ok(p) => p,
                Err(e) => return refuse(format!("cannot find my own binary: {e}")),
            },
        };
        let file = |p: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
        };
        if file(&path).is_some_and(|f| file(std::path::Path::new("/proc/self/exe")) == Some(f)) {
            self.reexec = Some(path);
            return Some(Response::Ok);
        }
        let check = match crate::reexec::Check::start(&path, Instant::now()) {
            Ok(c) => c,
            Err(message) => return refuse(message),
        };
        if let Err(e) = epoll::add(
            &self.epoll,
            check.fd(),
            epoll::EventData::new_u64(TOKEN_REEXEC_CHECK),
            epoll::EventFlags::IN,
        ) {
            return refuse(format!("cannot watch {}: {e}", path.display()));
        }
        self.reexec_check = Some((conn, check));
        None
    }

    /// Reads the re-exec candidate's answer; once it is known (or its time is up)
    /// answers who asked, and a good one is exec'd at the end of this round.
    fn read_reexec_check(&mut self) {
        let Some((conn, check)) = &mut self.reexec_check else {
            return;
        };
        let Some(verdict) = check.read(Instant::now()) else {
            return;
        };
        let conn = *conn;
        if let Some((_, check)) = self.reexec_check.take() {
            let _ = epoll::delete(&self.epoll, check.fd());
        }
        let answer = match verdict {
            Ok(path) => {
                self.reexec = Some(path);
                Response::Ok
            }
            Err(message) => {
                tracing::warn!("re-exec refused: {message}");
                failed(ErrorKind::InvalidRequest, message)
            }
        };
        self.answers.push((conn, answer));
    }

    /// Replaces this process image, keeping its pid, children and the init
    /// channel; the new image takes everything else back from the lifeboat.
    fn exec_new_image(&mut self, binary: &std::path::Path) {
        use std::os::unix::process::CommandExt;
        // Every connection goes to the new image, with the requests it waits on.
        self.snap.shell.handover =
            Some(self.control.hand_over(std::process::id(), self.generation));
        self.persist();
        let Some(link) = &self.link else { return };
        tracing::info!("re-executing {}", binary.display());
        if let Err(e) = link.keep_across_exec() {
            tracing::error!("cannot keep the init channel across exec: {e}");
            return;
        }
        let err = std::process::Command::new(binary)
            .args(self.config.args.iter().skip(1))
            .env(
                keel_proto::init::SUPERVISOR_FD_ENV,
                link.as_fd().as_raw_fd().to_string(),
            )
            .exec();
        tracing::error!("re-exec of {} failed: {err}; carrying on", binary.display());
        let _ = rustix::io::fcntl_setfd(link.as_fd(), rustix::io::FdFlags::CLOEXEC);
        self.control.take_back();
        self.snap.shell.handover = None;
        self.dirty = true;
    }

    /// A power action, as Upstart's shutdown went: runlevel 0 (halt, power off) or
    /// 6 (reboot), the `runlevel` event carried out, then every job stopped (the
    /// core sees to both, each phase bounded); `run` makes the action once due.
    fn begin_power(&mut self, action: PowerAction) {
        if self.snap.jobs.powering() {
            tracing::info!("{action:?}: a power action is under way already");
            return;
        }
        let level = if action == PowerAction::Reboot {
            b'6'
        } else {
            b'0'
        };
        tracing::info!("{action:?}: runlevel {}", level as char);
        let env = self.change_runlevel(level);
        self.snap.jobs.power(action, env, now_ms());
        self.dirty = true;
    }

    fn finish_power(&mut self, action: PowerAction) -> anyhow_like::Result<()> {
        // Every job has stopped: keel's own subtree goes too, unless it belongs to
        // the machine (its cgroup2 file system goes down with it).
        if let Some(tree) = self.cgroups.as_ref().filter(|_| !self.machine) {
            match cgroup::remove(tree.root()) {
                Ok(true) => self.snap.shell.cgroups = cgroup::Saved::default(),
                Ok(false) => tracing::warn!("{} still holds processes", tree.root().display()),
                Err(e) => tracing::warn!("cannot remove {}: {e}", tree.root().display()),
            }
        }
        // Nothing of keel may keep a filesystem busy while keel-shutdown unmounts:
        // from here on the supervisor logs to the kernel log or the console only.
        let closed = self.logs.close_files();
        tracing::info!("{action:?}: every job stopped, {closed} job log files closed");
        self.persist();
        match &self.link {
            Some(link) => {
                link.power(answer::init_power(action))?;
                // keel-init ends everything from here.
                loop {
                    let _ = rustix::event::poll(&mut [], None);
                }
            }
            None => Ok(()),
        }
    }
}

/// The immediate answer to a start/stop/restart: none while a waiter waits for
/// the outcome, else the status (or the error) now.
fn accepted(
    wait: bool,
    outcome: Result<Option<lifecycle::InstanceStatus>, Refusal>,
) -> Option<Response> {
    match outcome {
        Ok(_) if wait => None,
        Ok(status) => Some(instances(status.into_iter().collect())),
        Err(e) => Some(refused(e)),
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

/// The saved state in `state`, naming definitions saved in `defs`.
fn load_saved(
    state: &OwnedFd,
    defs: Option<&OwnedFd>,
) -> Result<(Snapshot, journal::Definitions), String> {
    let defs = match defs {
        Some(fd) => journal::read_memfd(fd)
            .map_err(|e| format!("job definitions: {e}"))
            .and_then(|b| journal::decode_definitions(&b).map_err(|e| e.to_string()))?,
        None => journal::Definitions::new(),
    };
    let bytes = journal::read_memfd(state).map_err(|e| e.to_string())?;
    let snap = journal::decode(&bytes, &defs).map_err(|e| e.to_string())?;
    Ok((snap, defs))
}

/// The lifeboat name of round `round`'s go pipe: `go:0` or `go:1` by the round's
/// parity. A round's deposit replaces the pipe of the round before the last,
/// which was saved (and released) before the last round began, so an entry is
/// never withdrawn after its release: whatever the saved state's round is, its
/// pipe is still in the lifeboat under this name — and releasing a round twice
/// is harmless, each child reading one byte.
fn go_name(round: u64) -> String {
    format!("go:{}", round % 2)
}

/// `KEY=VALUE` words as pairs; anything else is refused, as Upstart does.
/// A tiny boxed-error alias so the binary can print any setup failure.
pub mod anyhow_like {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
}

fn spare(v: &mut Vec<epoll::Event>) -> rustix::buffer::SpareCapacity<'_, epoll::Event> {
    rustix::buffer::spare_capacity(v)
}
