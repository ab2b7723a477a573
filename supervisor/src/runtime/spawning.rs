//! Spawning: from the core's `Spawn` effect to a child waiting for "go".
//!
//! Owns the plan of a process, in two parts: what it is to be (decided from the
//! job: command line found on PATH, environment, setup, cgroup settings) and the
//! fds it needs (made: the instance's cgroup, the listening and readiness
//! sockets, the log pipe); the spawn into the round's go pipe, releasing each
//! batch once full (from 1 spawn up to [`SPAWN_BATCH`] or more: see the runtime's
//! module docs); and the children's error pipes until they exec.

use super::persist::go_name;
use super::{Runtime, SPAWN_BATCH, TOKEN_SETUP, now_ms};
use crate::job::{self, Console, JobDef, ProcessKind};
use crate::lifecycle::{self, DEFAULT_PATH};
use crate::ready::watch::Watcher;
use crate::{cgroup, setup, spawn};
use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use std::collections::BTreeMap;
use std::ffi::CString;

/// This round's spawns and the children that have not exec'd yet.
pub(super) struct Spawns {
    /// This round's "go" pipe, once something was spawned in it: its children are
    /// released when the state recording them is saved.
    pub(super) go: Option<(u64, spawn::GoPipe)>,
    /// How many spawns the current batch of this round takes before it is saved
    /// and released: 1 for a round's first, then doubling (see the runtime's
    /// module docs).
    pub(super) batch: u32,
    /// Spawned children that have not exec'd yet, by pid: their error pipes, and
    /// what they read and run on until they exec (`spawn::Launch`).
    pub(super) launches: BTreeMap<i32, spawn::Launch>,
    /// Setup failures children reported, until their exits are applied.
    pub(super) failures: BTreeMap<i32, String>,
    /// Spawns since the allocator last gave freed memory back (see
    /// [`crate::heap`]).
    pub(super) since_trim: usize,
    /// Main processes a predecessor spawned may still await their exec, which
    /// no error pipe of ours reports ([`Runtime::confirm_execs`]). Every child
    /// this supervisor spawns has a launch, so once none of those is left the
    /// rounds no longer look for them (a walk of every unsettled instance, at
    /// each round of a bring-up of thousands).
    pub(super) adopted_unconfirmed: bool,
}

/// Spawns after which, once every child has exec'd, the freed heap goes back to
/// the kernel: a bring-up's transient allocations (plans, launches, the event
/// queue, env being built) lie between what stays, and glibc keeps the holes.
const TRIM_AFTER_SPAWNS: usize = 256;

impl Default for Spawns {
    fn default() -> Spawns {
        Spawns {
            go: None,
            batch: 1,
            launches: BTreeMap::new(),
            failures: BTreeMap::new(),
            since_trim: 0,
            adopted_unconfirmed: true,
        }
    }
}

impl Runtime {
    /// The core's `Spawn`: the process planned and spawned into this round's go pipe
    /// (released with its batch); a failure is the core's to handle (`spawn_failed`).
    pub(super) fn spawn_process(&mut self, job: &str, instance: &str, kind: ProcessKind) {
        if let Err(e) = self.try_spawn(job, instance, kind) {
            let reason = e.to_string();
            tracing::warn!("{job}: {reason}");
            self.snap
                .jobs
                .spawn_failed(job, instance, kind, reason, now_ms());
            self.dirty = true;
        }
    }

    /// `spawn_process`, its failures as errors.
    fn try_spawn(
        &mut self,
        job: &str,
        instance: &str,
        kind: ProcessKind,
    ) -> Result<(), SpawnError> {
        let (plan, ready_fd) = self
            .plan(job, instance, kind)
            .map_err(|why| SpawnError::Plan { kind, why })?;
        if self.spawns.go.is_none() {
            match spawn::GoPipe::new() {
                Ok(go) => {
                    self.snap.go_rounds += 1;
                    let round = self.snap.go_rounds;
                    if let Some(link) = &self.link
                        && let Err(e) = link.deposit(&go_name(round), go.write.as_fd())
                    {
                        tracing::error!("cannot deposit the go pipe: {e}");
                    }
                    self.spawns.go = Some((round, go));
                }
                Err(source) => return Err(SpawnError::Spawn { kind, source }),
            }
        }
        let Some((_, go)) = self.spawns.go.as_mut() else {
            return Ok(());
        };
        let into_cgroup = plan.cgroup.is_some();
        match spawn::spawn(plan, go) {
            Ok(child) if go.waiting >= self.spawns.batch => {
                self.spawned(job, instance, kind, child, ready_fd);
                self.release_round();
                let most = SPAWN_BATCH.max((self.snap.jobs.job_count() / 16) as u32);
                self.spawns.batch = (self.spawns.batch * 2).min(most);
            }
            Ok(child) => self.spawned(job, instance, kind, child, ready_fd),
            Err(e) => {
                return Err(match (into_cgroup, e.raw_os_error()) {
                    (true, Some(errno @ (libc::EBUSY | libc::EOPNOTSUPP))) => {
                        SpawnError::IntoCgroup { kind, errno }
                    }
                    _ => SpawnError::Spawn { kind, source: e },
                });
            }
        }
        Ok(())
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
        self.spawns.launches.insert(child.pid, child.launch);
        self.spawns.since_trim += 1;
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
    ) -> Result<(spawn::Plan, Option<OwnedFd>), PlanError> {
        let decided = self.decide(job, instance, kind)?;
        self.make_fds(job, instance, decided)
    }

    /// What the process is to be, decided from the job and its instance (reading,
    /// not changing, the world: the user database, PATH).
    fn decide(&self, job: &str, instance: &str, kind: ProcessKind) -> Result<Decided, PlanError> {
        let inst = self
            .snap
            .jobs
            .instance(job, instance)
            .ok_or(PlanError::InstanceVanished)?;
        let def: &JobDef = inst.def();
        let process = def.process(kind).ok_or(PlanError::NoSuchProcess)?;
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
                    return Err(PlanError::ReservedFd(*n));
                }
                Some(*n)
            }
            _ => None,
        };
        let listen = self.listen_socket(def, &env);
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let (argv, script) = command_line(process, path, def.chroot.as_deref())?;
        let (settings, warnings) = cgroup::settings(&def.cgroups)?;
        for w in &warnings {
            tracing::warn!("{job}: {w}");
        }
        let plan = spawn::Plan {
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
        Ok(Decided {
            plan,
            settings,
            ready_target,
            listen,
        })
    }

    /// The fds and directories the decided process needs, made: the instance's
    /// cgroup, the listening socket, the readiness socket, the log pipe.
    fn make_fds(
        &mut self,
        job: &str,
        instance: &str,
        decided: Decided,
    ) -> Result<(spawn::Plan, Option<OwnedFd>), PlanError> {
        let Decided {
            mut plan,
            settings,
            ready_target,
            listen,
        } = decided;
        plan.cgroup = self.instance_cgroup(job, instance, &settings)?;
        // Socket activation: the socket at fd 3, named as systemd and Upstart did.
        if let Some(fd) = listen {
            if ready_target == Some(spawn::LISTEN_FD) {
                return Err(PlanError::ListenFd);
            }
            for var in ["LISTEN_FDS=1", "UPSTART_FDS=3"] {
                plan.env.push(cstr(var)?);
            }
            plan.listen_fd = Some(fd);
        }
        let mut ours = None;
        if let Some(n) = ready_target {
            let (child, keel) = Watcher::fd_socket().map_err(PlanError::ReadySocket)?;
            plan.ready_fd = Some((child, n));
            ours = Some(keel);
        }
        if plan.console == Console::Log {
            let (writer, new) = self
                .logs
                .writer(&mut self.snap.shell.logs, self.link.as_ref(), job, instance)
                .map_err(PlanError::LogPipe)?;
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
    ) -> Result<Option<OwnedFd>, PlanError> {
        let Some(tree) = &self.cgroups else {
            if let Some((key, _)) = settings.first() {
                return Err(PlanError::NoCgroups(key.clone()));
            }
            return Ok(None);
        };
        let key = (job.to_string(), instance.to_string());
        let path = if self.snap.shell.cgroups.instances.contains_key(&key) {
            tree.instance_path(job, instance)
        } else {
            // Recorded first, so that it is removed again even if this fails half-way.
            self.snap.shell.cgroups.instances.insert(key, ());
            self.dirty = true;
            tree.create(job, instance, settings)?
        };
        cgroup::Tree::open_dir(&path)
            .map(Some)
            .map_err(|source| PlanError::OpenCgroup { path, source })
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

    /// Reads child `pid`'s error pipe: a failure record is kept until its exit is
    /// applied; at EOF the pipe is dropped, and EOF without a record before it
    /// means it exec'd (after a record, EOF is the failed child's end).
    pub(super) fn read_setup_pipe(&mut self, pid: i32) {
        let Some(launch) = self.spawns.launches.get(&pid) else {
            return;
        };
        match launch.report() {
            // Kept until EOF: the child may still run on its stack until it ends.
            spawn::Report::Failed(failure) => {
                self.spawns.failures.insert(pid, launch.describe(&failure));
                return;
            }
            spawn::Report::Pending => return,
            spawn::Report::Done if self.spawns.failures.contains_key(&pid) => {}
            spawn::Report::Done => {
                self.snap.jobs.execd(pid, now_ms());
                self.dirty = true;
            }
        }
        // Out of epoll before it is closed: a child spawned since, before its own
        // setup closed its copy of our fds, keeps the pipe open, and epoll would
        // go on reporting the hang-up to a loop that no longer reads it.
        if let Some(launch) = self.spawns.launches.remove(&pid) {
            let _ = epoll::delete(&self.epoll, launch.errors());
        }
        if self.spawns.launches.is_empty() && self.spawns.since_trim >= TRIM_AFTER_SPAWNS {
            self.spawns.since_trim = 0;
            crate::heap::give_back_freed_memory();
        }
    }

    /// Main processes whose exec no error pipe will report (their spawn was a
    /// previous supervisor's): their exec is read from /proc. True if the state
    /// changed.
    pub(super) fn confirm_execs(&mut self) -> bool {
        let unreported = self.unreported_execs();
        self.spawns.adopted_unconfirmed = !unreported.is_empty();
        let mut changed = false;
        for pid in unreported {
            if crate::ready::procfs::has_execd(pid) {
                self.snap.jobs.execd(pid, now_ms());
                changed = true;
            }
        }
        changed
    }

    /// Main processes awaiting their exec that no launch of ours will report
    /// (none once every predecessor's child is confirmed).
    pub(super) fn unreported_execs(&self) -> Vec<i32> {
        if !self.spawns.adopted_unconfirmed {
            return Vec::new();
        }
        self.snap
            .jobs
            .awaiting_exec()
            .into_iter()
            .filter(|pid| !self.spawns.launches.contains_key(pid))
            .collect()
    }
}

/// A process decided ([`Runtime::decide`]), before its fds are made.
struct Decided {
    plan: spawn::Plan,
    /// The instance's cgroup settings, written when its cgroup is made.
    settings: Vec<(String, String)>,
    /// `expect fd N`: N.
    ready_target: Option<i32>,
    /// Socket activation: the listening socket the process gets.
    listen: Option<OwnedFd>,
}

/// The program and arguments of `process`, found on `path` (inside `root`), and
/// a script's text; a command with shell metacharacters runs through the shell.
fn command_line(
    process: &job::Process,
    path: &str,
    root: Option<&str>,
) -> Result<(Vec<String>, Option<Vec<u8>>), PlanError> {
    match process {
        job::Process::Exec { command } => match process.exec_argv() {
            Some(mut argv) if !argv.is_empty() => {
                argv[0] = spawn::resolve(&argv[0], path, root)
                    .ok_or_else(|| PlanError::CommandNotFound(argv[0].clone()))?;
                Ok((argv, None))
            }
            // Shell metacharacters: let the shell run it, replacing itself.
            _ => Ok((
                vec![
                    "/bin/sh".into(),
                    "-e".into(),
                    "-c".into(),
                    format!("exec {command}"),
                ],
                None,
            )),
        },
        job::Process::Script { interpreter, body } => {
            let mut argv = if interpreter.is_empty() {
                vec!["/bin/sh".to_string(), "-e".to_string()]
            } else {
                interpreter.clone()
            };
            argv[0] = spawn::resolve(&argv[0], path, root)
                .ok_or_else(|| PlanError::InterpreterNotFound(argv[0].clone()))?;
            argv.push(format!("/proc/self/fd/{}", spawn::SCRIPT_FD));
            Ok((argv, Some(body.clone().into_bytes())))
        }
    }
}

/// `s` as a C string (a NUL byte in it is the job's error).
fn cstr(s: &str) -> Result<CString, PlanError> {
    CString::new(s).map_err(|_| PlanError::Nul(s.to_string()))
}

/// Why a process could not be planned.
#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error("instance vanished")]
    InstanceVanished,
    #[error("no such process")]
    NoSuchProcess,
    #[error(transparent)]
    Setup(#[from] setup::Error),
    #[error("expect fd {0}: fd {0} is keel's own in a job process (choose another)")]
    ReservedFd(i32),
    #[error(
        "expect fd {fd}: the listening socket of `start on socket` is there",
        fd = spawn::LISTEN_FD
    )]
    ListenFd,
    #[error("{0}: command not found")]
    CommandNotFound(String),
    #[error("{0}: interpreter not found")]
    InterpreterNotFound(String),
    #[error(transparent)]
    Cgroup(#[from] cgroup::Error),
    #[error("cgroup {0}: keel has no cgroup2 hierarchy to apply it in")]
    NoCgroups(String),
    #[error("cgroup {}: {source}", path.display())]
    OpenCgroup {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("NUL byte in {0:?}")]
    Nul(String),
    #[error("cannot make the readiness socket: {0}")]
    ReadySocket(std::io::Error),
    #[error("cannot open the log pipe: {0}")]
    LogPipe(std::io::Error),
}

/// Why a process the core asked for was not spawned: the reason the core records.
#[derive(Debug, thiserror::Error)]
enum SpawnError {
    #[error("{} process: {why}", kind.name())]
    Plan { kind: ProcessKind, why: PlanError },
    #[error("failed to spawn {} process: {source}", kind.name())]
    Spawn {
        kind: ProcessKind,
        source: std::io::Error,
    },
    #[error("failed to spawn {} process into its cgroup: {}", kind.name(), crate::errno::strerror(*errno))]
    IntoCgroup { kind: ProcessKind, errno: i32 },
}
