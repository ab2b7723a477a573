//! The event sources' glue: what comes in besides requests, fed to the core.
//!
//! Owns the reading of keel-init's channel (exits, relayed signals), the
//! supervisor's own signals (SIGHUP reloads, the rest are logged; standalone,
//! SIGCHLD reaps), the listening sockets of socket activation and the `file`
//! conditions' watch kept in step with the job definitions, and the job log
//! pipes, including the write-out of early logs once the disk can be written.

use super::{Error, Runtime, TOKEN_FILES, TOKEN_LOG, test_fault_once};
use crate::initlink::Incoming;
use crate::job;
use crate::lifecycle::{Event, PowerAction};
use rustix::event::epoll;

impl Runtime {
    /// Reads what keel-init sent: exits, relayed signals, refused lifeboat requests.
    pub(super) fn read_init_channel(&mut self) -> Result<(), Error> {
        loop {
            let msg = match self.link.as_ref().map(|l| l.recv()) {
                Some(Ok(Some(m))) => m,
                Some(Ok(None)) | None => return Ok(()),
                // keel-init never closes the channel while we live: it is gone (a
                // test's namespace ending); nothing is left to supervise for.
                Some(Err(e)) => return Err(Error::InitChannel(e)),
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

    /// The signals sent to the supervisor itself; without keel-init also our
    /// children's exits (SIGCHLD) and the signals keel-init would relay.
    pub(super) fn local_signals(&mut self) {
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

    /// Holds the listening sockets the jobs' `start on socket …` name, no more.
    pub(super) fn sync_sockets(&mut self) {
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
    pub(super) fn sync_files(&mut self) {
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
    pub(super) fn watch_files(&self) {
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
    pub(super) fn socket_ready(&mut self, token: u64) {
        if let Some(spec) = self.sockets.by_token(token) {
            let env = spec.event_env();
            self.emit(Event {
                name: job::socket::EVENT.into(),
                env,
            });
        }
    }

    /// The file conditions' watch saw changes: a `file` event for each.
    pub(super) fn file_events(&mut self) {
        for env in self.files.read() {
            self.emit(Event {
                name: job::file::EVENT.into(),
                env,
            });
        }
    }

    /// Job log pipe `id` is readable (or closed).
    pub(super) fn log_ready(&mut self, id: u64) {
        if self
            .logs
            .drain(&mut self.snap.shell.logs, self.link.as_ref(), id)
        {
            self.dirty = true;
        }
        for pipe in self.logs.take_closed() {
            let _ = epoll::delete(&self.epoll, &pipe);
        }
    }

    /// Watches job log pipe `id`.
    pub(super) fn watch_log(&mut self, id: u64) {
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
    pub(super) fn flush_early_logs(&mut self) {
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
}
