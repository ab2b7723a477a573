//! Power and re-exec: the supervisor's ways out.
//!
//! Owns [`Reexec`], a live upgrade under way: the candidate binary being asked
//! whether it reads this state's format (`reexec::Check`, read from the loop),
//! then the exec of the new image once the round is done, handing every
//! connection over. And the power actions: `telinit`'s runlevel changes, the
//! shutdown the core carries out (`begin_power`), and the action itself once
//! every job has stopped (`finish_power`, made by keel-init).

use super::{Error, Runtime, TOKEN_REEXEC_CHECK, now_ms};
use crate::answer::{self, failed, refused};
use crate::cgroup;
use crate::control::ConnId;
use crate::lifecycle::{Event, PowerAction};
use crate::reexec;
use crate::runlevel::Telinit;
use keel_proto::ctl::Response;
use rustix::event::epoll;
use rustix::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

/// A live upgrade under way.
#[derive(Default)]
pub(super) struct Reexec {
    /// A live upgrade requested: the binary to exec once this round is done.
    due: Option<PathBuf>,
    /// A re-exec candidate being asked its state format, and who asked.
    check: Option<(ConnId, reexec::Check)>,
}

impl Reexec {
    /// The binary to exec now, taken.
    pub(super) fn take_due(&mut self) -> Option<PathBuf> {
        self.due.take()
    }

    /// When the candidate being checked runs out of time.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.check.as_ref().map(|(_, c)| c.deadline())
    }
}

impl Runtime {
    /// `telinit N`: records the runlevel and emits Upstart's `runlevel` event with
    /// `RUNLEVEL` and `PREVLEVEL`, which jobs (`start on runlevel [2345]`) follow.
    /// `telinit 0` powers off and `telinit 6` reboots, through that event; `-e`
    /// variables join the event of any other runlevel.
    pub(super) fn telinit(&mut self, runlevel: u8, extra: Vec<(String, String)>) -> Response {
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
    pub(super) fn request_reexec(
        &mut self,
        conn: ConnId,
        binary: Option<String>,
    ) -> Option<Response> {
        self.begin_reexec(conn, binary)
            .unwrap_or_else(|e| Some(failed(e)))
    }

    /// `request_reexec`, its refusals as errors.
    fn begin_reexec(
        &mut self,
        conn: ConnId,
        binary: Option<String>,
    ) -> Result<Option<Response>, reexec::Error> {
        if self.link.is_none() {
            return Err(reexec::Error::NoInit);
        }
        if self.reexec.check.is_some() || self.reexec.due.is_some() {
            return Err(reexec::Error::UnderWay);
        }
        let path = match binary {
            Some(b) => PathBuf::from(b),
            None => std::fs::read_link("/proc/self/exe").map_err(reexec::Error::OwnBinary)?,
        };
        let file = |p: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
        };
        if file(&path).is_some_and(|f| file(std::path::Path::new("/proc/self/exe")) == Some(f)) {
            self.reexec.due = Some(path);
            return Ok(Some(Response::Ok));
        }
        let check = reexec::Check::start(&path, Instant::now())?;
        epoll::add(
            &self.epoll,
            check.fd(),
            epoll::EventData::new_u64(TOKEN_REEXEC_CHECK),
            epoll::EventFlags::IN,
        )
        .map_err(|e| reexec::Error::Watch {
            path,
            source: e.into(),
        })?;
        self.reexec.check = Some((conn, check));
        Ok(None)
    }

    /// Reads the re-exec candidate's answer; once it is known (or its time is up)
    /// answers who asked, and a good one is exec'd at the end of this round.
    pub(super) fn read_reexec_check(&mut self) {
        let Some((conn, check)) = &mut self.reexec.check else {
            return;
        };
        let Some(verdict) = check.read(Instant::now()) else {
            return;
        };
        let conn = *conn;
        if let Some((_, check)) = self.reexec.check.take() {
            let _ = epoll::delete(&self.epoll, check.fd());
        }
        let answer = match verdict {
            Ok(path) => {
                self.reexec.due = Some(path);
                Response::Ok
            }
            Err(e) => {
                tracing::warn!("re-exec refused: {e}");
                failed(e)
            }
        };
        self.answers.push((conn, answer));
    }

    /// Replaces this process image, keeping its pid, children and the init
    /// channel; the new image takes everything else back from the lifeboat.
    pub(super) fn exec_new_image(&mut self, binary: &std::path::Path) {
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
    pub(super) fn begin_power(&mut self, action: PowerAction) {
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

    /// Every job has stopped: the cgroups and job log files go, the state is saved,
    /// and keel-init makes the power action (standalone: `run` returns).
    pub(super) fn finish_power(&mut self, action: PowerAction) -> Result<(), Error> {
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
                link.power(answer::init_power(action))
                    .map_err(Error::Power)?;
                // keel-init ends everything from here.
                loop {
                    let _ = rustix::event::poll(&mut [], None);
                }
            }
            None => Ok(()),
        }
    }
}
