//! Startup: a new supervisor's way from keel-init's handover (or a standalone
//! start) to its first settled round.
//!
//! Owns the order of the steps, which matters: the supervisor's own signals are
//! blocked first thing; the lifeboat's entries are sorted out to their owners
//! ([`Lifeboat`]); the saved state is restored (`persist`) and what it had under
//! way is taken up (handed-over connections, spawns decided, go pipes of
//! unfinished rounds); the control socket, signalfd, cgroups, job logs and epoll
//! are opened; then, on the Runtime, the job definitions are taken or read,
//! survivors adopted after a dropped state, the exits keel-init kept applied, and
//! a first round settled.

use super::confdir::LIFEBOAT_CONFDIR_WATCH;
use super::persist::{self, LIFEBOAT_LOADED, go_name};
use super::{Config, Error, OWN_SIGNALS, Runtime, TOKEN_INIT, TOKEN_LISTENER, TOKEN_SIGNALS};
use crate::control::{self, ConnId, Control};
use crate::initlink::{Handover, InitLink};
use crate::journal::{self, Snapshot};
use crate::lifecycle::Event;
use crate::pidguard::PidGuard;
use crate::ready::notify::NotifyAddr;
use crate::ready::watch::Watcher;
use crate::{boot, cgroup, joblog, setup, spawn};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::SignalFd;
use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};

/// The control socket's entry in the lifeboat.
const LIFEBOAT_CONTROL: &str = "control";

type Entries = Vec<(String, OwnedFd)>;

/// keel-init's lifeboat as handed over, sorted out by owner.
struct Lifeboat {
    /// The saved state (base and log) and the definitions it names (`persist`).
    saved: Option<OwnedFd>,
    saved_log: Option<OwnedFd>,
    saved_defs: Option<OwnedFd>,
    /// The confdir's inotify watch (`confdir`).
    watch: Option<OwnedFd>,
    /// The control socket's listener.
    listener: Option<OwnedFd>,
    /// The last supervisor got through the saved state (`persist::mark_loaded`).
    loaded_before: bool,
    /// The file conditions' inotify watch (`filewatch`).
    files: Option<OwnedFd>,
    /// The device events' netlink socket (`uevents`).
    uevents: Option<OwnedFd>,
    /// Socket activation's listening sockets (`sockets`).
    sockets: Entries,
    /// "go" pipes of rounds a previous supervisor did not finish.
    unfinished_rounds: Entries,
    /// Job log pipes (`joblog`).
    logs: Entries,
}

impl Lifeboat {
    /// Sorts out `entries`; the readiness watcher takes its own on the way.
    fn sort(mut entries: Entries, link: Option<&InitLink>, notify: &str) -> (Lifeboat, Watcher) {
        let mut take = |name: &str| {
            entries
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| entries.swap_remove(i).1)
        };
        let saved = take(journal::LIFEBOAT_NAME);
        let saved_log = take(journal::LOG_LIFEBOAT_NAME);
        let saved_defs = take(journal::DEFS_LIFEBOAT_NAME);
        let watch = take(LIFEBOAT_CONFDIR_WATCH);
        let listener = take(LIFEBOAT_CONTROL);
        let loaded_before = take(LIFEBOAT_LOADED).is_some();
        if loaded_before && let Some(link) = link {
            let _ = link.withdraw(LIFEBOAT_LOADED);
        }
        let files = take(crate::filewatch::LIFEBOAT_NAME);
        let uevents = take(crate::uevents::LIFEBOAT_NAME);
        let (sockets, mut rest): (Entries, Entries) = entries
            .into_iter()
            .partition(|(n, _)| n.starts_with(crate::sockets::LIFEBOAT_PREFIX));
        let ready = Watcher::new(NotifyAddr::parse(notify), &mut rest);
        // What is left are "go" pipes of rounds a previous supervisor did not finish,
        // and job log pipes.
        let (unfinished_rounds, logs): (Entries, Entries) =
            rest.into_iter().partition(|(n, _)| n.starts_with("go:"));
        let lifeboat = Lifeboat {
            saved,
            saved_log,
            saved_defs,
            watch,
            listener,
            loaded_before,
            files,
            uevents,
            sockets,
            unfinished_rounds,
            logs,
        };
        (lifeboat, ready)
    }
}

impl Runtime {
    /// Sets everything up: the handover from keel-init (or a standalone start), the
    /// saved state or a fresh one from the confdir, the control socket.
    // Long for a list: the steps in their order (see the module docs), each one
    // a function or a line, and the Runtime's fields.
    pub fn new(config: Config) -> Result<Runtime, Error> {
        let link = InitLink::from_env();
        // Blocked first thing: from now on they wait for the loop, however long
        // the handover takes.
        let signal_set = block_own_signals(link.is_none())?;
        let began = std::time::Instant::now();
        let mut handover = match &link {
            Some(l) => Some(l.handover().map_err(Error::Handover)?),
            None => None,
        };
        if let Some(h) = &handover {
            tracing::debug!(
                "handover: {} lifeboat entries in {:?}",
                h.fds.len(),
                began.elapsed()
            );
        }
        let entries = handover
            .as_mut()
            .map(|h| std::mem::take(&mut h.fds))
            .unwrap_or_default();
        let (lifeboat, ready) = Lifeboat::sort(entries, link.as_ref(), &config.notify_socket);
        let machine = link.is_some() && boot::is_machine_boot();
        if lifeboat.saved.is_none() && machine {
            boot::mount_missing();
        }

        let persist::Restored {
            mut snap,
            persistence,
            adopt,
        } = persist::restore(
            lifeboat.saved.as_ref(),
            lifeboat.saved_log,
            lifeboat.saved_defs.as_ref(),
            lifeboat.loaded_before,
            handover.as_ref().map_or(0, |h| h.quick_deaths),
        );
        let generation = handover.as_ref().map_or(0, |h| h.generation);
        let conns = take_up(
            &mut snap,
            generation,
            lifeboat.unfinished_rounds,
            link.as_ref(),
        );
        let (control, handed_over) =
            open_control(&config, lifeboat.listener, conns, link.as_ref())?;

        if link.is_none() {
            // Orphans of jobs come to us when no keel-init is there to take them.
            let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
        }
        let signals = SignalFd::with_flags(
            &signal_set,
            nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )
        .map_err(Error::Signalfd)?;
        let cgroups = open_cgroups(&config, &mut snap, machine);
        let mut logs = joblog::Logs::new(joblog::Config {
            dir: config.logdir.clone(),
            size: config.log_size,
            keep: config.log_keep,
        });
        let watch_logs = logs.recover(&mut snap.shell.logs, lifeboat.logs, link.as_ref());
        let epoll = open_epoll(link.as_ref(), &control, &signals)?;

        let fstab = config.fstab.clone();
        let pids = PidGuard::new(link.as_ref());
        let mut rt = Runtime {
            config,
            link,
            signals: Some(signals),
            epoll,
            control,
            spawns: super::spawning::Spawns::default(),
            persistence,
            unacked: None,
            dirty: true,
            answers: Vec::new(),
            confdir: Default::default(),
            reexec: Default::default(),
            ready,
            pids,
            cgroups,
            cgroup_retry: None,
            sweep: Default::default(),
            logs,
            apparmor: setup::AppArmorHost::probe(),
            machine,
            exits_lost: false,
            generation,
            sockets: crate::sockets::Sockets::recover(lifeboat.sockets),
            files: crate::filewatch::FileWatch::recover(lifeboat.files),
            devices: crate::uevents::Uevents::recover(lifeboat.uevents),
            mounts: crate::mountwatch::MountWatch::new(fstab),
            timeline: Default::default(),
            snap,
        };
        rt.watch_sources(handed_over, watch_logs);
        rt.take_definitions(lifeboat.watch);
        if adopt {
            rt.adopt_survivors();
        }
        if let Some(h) = handover {
            rt.apply_handed_over_exits(h);
        }
        rt.open_pidfds();
        if !rt.snap.booted {
            rt.snap.booted = true;
            rt.emit(Event {
                name: "startup".into(),
                env: Vec::new(),
            });
        }
        // After `startup`, and what a predecessor missed.
        rt.mounts_changed();
        // A power action the previous supervisor was carrying out goes on.
        rt.settle();
        Ok(rt)
    }

    /// Waits on the readiness fds, the handed-over connections and the job logs.
    fn watch_sources(&mut self, handed_over: Vec<ConnId>, logs: Vec<u64>) {
        self.ready.start(&self.epoll, self.link.as_ref());
        if !handed_over.is_empty() {
            tracing::info!("{} control connections handed over", handed_over.len());
        }
        for id in handed_over {
            self.watch_conn(id);
        }
        for id in logs {
            self.watch_log(id);
        }
    }

    /// Applies the exits keel-init kept while no supervisor ran.
    fn apply_handed_over_exits(&mut self, handover: Handover) {
        if handover.lost_exits > 0 {
            self.exits_lost = true;
            tracing::warn!(
                "keel-init lost {} exits while its log was full",
                handover.lost_exits
            );
        }
        for (seq, pid, status) in handover.exits {
            tracing::debug!("handed-over exit seq {seq} pid {pid} status {status:#x}");
            self.apply_exit(seq, pid, status);
        }
    }
}

/// Blocks the signals the supervisor takes as events of its loop ([`OWN_SIGNALS`];
/// `standalone`, without keel-init, also SIGCHLD and those keel-init would relay).
fn block_own_signals(standalone: bool) -> Result<SigSet, Error> {
    use nix::sys::signal::Signal;
    let mut set = SigSet::empty();
    for s in OWN_SIGNALS {
        set.add(s);
    }
    if standalone {
        for s in [Signal::SIGCHLD, Signal::SIGPWR, Signal::SIGWINCH] {
            set.add(s);
        }
    }
    set.thread_block().map_err(Error::BlockSignals)?;
    Ok(set)
}

/// Takes up what the restored state had under way: the connections a planned
/// re-exec of this very process handed over (returned), with the requests they
/// wait on — any other start answers no one it finds; the saved log priority;
/// the spawns it decided and the previous supervisor did not make; the round of
/// spawns it saved and did not release.
fn take_up(
    snap: &mut Snapshot,
    generation: u32,
    unfinished_rounds: Entries,
    link: Option<&InitLink>,
) -> Option<control::Handover> {
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
        if let Some(link) = link {
            let _ = link.withdraw(&name);
        }
    }
    snap.pending_go = None;
    conns
}

/// The control socket: the lifeboat's `listener`, or a new one bound (and
/// deposited); with the connections `conns` handed over.
fn open_control(
    config: &Config,
    listener: Option<OwnedFd>,
    conns: Option<control::Handover>,
    link: Option<&InitLink>,
) -> Result<(Control, Vec<ConnId>), Error> {
    let listener = match listener {
        Some(l) => l,
        None => {
            let l = control::bind(&config.socket).map_err(|source| Error::Listen {
                path: config.socket.clone(),
                source,
            })?;
            if let Some(link) = link {
                link.deposit(LIFEBOAT_CONTROL, l.as_fd())
                    .map_err(Error::DepositControl)?;
            }
            l
        }
    };
    let mut control = Control::new(listener).map_err(Error::Control)?;
    let handed_over = conns.map(|h| control.take_over(h)).unwrap_or_default();
    Ok((control, handed_over))
}

/// keel's cgroup subtree (`--cgroup-root`), if there is one to have.
fn open_cgroups(config: &Config, snap: &mut Snapshot, machine: bool) -> Option<cgroup::Tree> {
    match cgroup::Tree::open(
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
    }
}

/// The loop's epoll, waiting on keel-init's channel, the control socket and the
/// signalfd (the other sources are added as they come).
fn open_epoll(
    link: Option<&InitLink>,
    control: &Control,
    signals: &SignalFd,
) -> Result<OwnedFd, Error> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(Error::Epoll)?;
    let mut fds = vec![
        (control.listener(), TOKEN_LISTENER),
        (signals.as_fd(), TOKEN_SIGNALS),
    ];
    if let Some(l) = link {
        fds.insert(0, (l.as_fd(), TOKEN_INIT));
    }
    for (fd, token) in fds {
        epoll::add(
            &epoll,
            fd,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )
        .map_err(Error::Epoll)?;
    }
    Ok(epoll)
}
