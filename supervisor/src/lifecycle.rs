//! The lifecycle core: every job instance's goal and state, and what follows from
//! each input. Pure: `(state, input) -> (state, effects)` with no syscalls, no clock
//! (time comes in as `now`, monotonic milliseconds) and no I/O, so it is tested
//! exhaustively without processes and serialises as it is (crash recovery and live
//! upgrade load exactly this).
//!
//! The states and their order are Upstart's (see `next_state`); each guarantee of
//! "Upstart 0.5: Job Lifecycle" is cited where it is enforced:
//! 1. every start of a job is followed by its post-stop — `State::Killed` always
//!    leads to `State::PostStop`, whatever ran before;
//! 2. main runs only after pre-start succeeded — `process_ended` for pre-start;
//! 3. restart = kill → post-stop → pre-start → main — `restart`;
//! 4. running only after post-start finished — `blocked` for `State::PostStart`;
//! 5. pre-stop only on a stop request, cancellable by a start — `next_state`;
//! 6. killed lasts until the main process's exit is seen — `blocked` for
//!    `State::Killed`, SIGKILL after `kill timeout` in `tick`.
//!
//! The runtime owns everything else: it turns [`Effect`]s into processes, signals,
//! replies and events, and feeds back what happened.

use crate::job::{ExitMatch, JobDef, ProcessKind, Signal};
use keel_proto::ctl::{Error, ErrorKind, Goal, InstanceStatus, ProcessInfo, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A raw wait status, as reaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitStatus(pub i32);

impl WaitStatus {
    pub fn exited(code: i32) -> WaitStatus {
        WaitStatus((code & 0xff) << 8)
    }
    pub fn signaled(sig: i32) -> WaitStatus {
        WaitStatus(sig & 0x7f)
    }
    /// The exit code, if the process exited.
    pub fn code(self) -> Option<i32> {
        (self.0 & 0x7f == 0).then_some((self.0 >> 8) & 0xff)
    }
    /// The signal, if one killed the process.
    pub fn signal(self) -> Option<i32> {
        let sig = self.0 & 0x7f;
        (sig != 0 && sig != 0x7f).then_some(sig)
    }
    pub fn success(self) -> bool {
        self.code() == Some(0)
    }
    /// `status 1` / `signal TERM`, for messages.
    pub fn describe(self) -> String {
        match (self.code(), self.signal()) {
            (Some(c), _) => format!("status {c}"),
            (_, Some(s)) => format!("signal {}", Signal(s).name()),
            _ => format!("wait status {:#x}", self.0),
        }
    }
}

/// Who waits for a request to complete (a client connection's request id).
pub type WaiterId = u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitFor {
    /// Until the instance is running (or, for a task, has run and stopped).
    Started,
    /// Until the instance is stopped.
    Stopped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub id: WaiterId,
    pub until: WaitFor,
}

/// Why an instance failed, in Upstart's terms (`RESULT=failed PROCESS=… EXIT_STATUS=…`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub process: ProcessKind,
    pub status: Option<WaitStatus>,
    pub reason: String,
}

/// One instance of a job: its own lifecycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Empty for a job without `instance`.
    pub name: String,
    /// The definition this instance started with (a reload changes the job's, not this).
    pub def: JobDef,
    pub goal: Goal,
    pub state: State,
    /// The environment it was started with (`KEY=VALUE` from start or the event).
    pub env: Vec<(String, String)>,
    /// Running processes by kind.
    pub pids: BTreeMap<ProcessKind, i32>,
    /// When SIGKILL follows the kill signal (monotonic ms), while killed.
    pub kill_deadline: Option<u64>,
    /// Times of recent respawns (monotonic ms), for `respawn limit`.
    pub respawns: Vec<u64>,
    pub failure: Option<Failure>,
    pub waiters: Vec<Waiter>,
}

/// A job: its current definition and its instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub def: JobDef,
    pub instances: BTreeMap<String, Instance>,
    /// The job file is gone: the job disappears once no instance runs.
    pub deleted: bool,
}

/// Job lifecycle events, emitted as Upstart names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub name: String,
    pub env: Vec<(String, String)>,
}

/// What the runtime must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Start process `kind` of the instance (definition and environment are in it).
    Spawn {
        job: String,
        instance: String,
        kind: ProcessKind,
    },
    /// Send `signal` to the process group led by `pid`.
    Kill { pid: i32, signal: Signal },
    /// Answer a waiting request: the instance's status as it is when the answer is
    /// sent (after this round's processes exist), or the error.
    Reply {
        waiter: WaiterId,
        job: String,
        instance: String,
        error: Option<Error>,
    },
    /// A job event happened.
    Emit(Event),
    /// Main has ended on the way to post-stop: whatever is left of the instance
    /// (its cgroup's processes) is killed, before post-stop starts.
    KillRemnants { job: String, instance: String },
}

/// Everything the supervisor knows about its jobs. This is what is persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jobs {
    pub jobs: BTreeMap<String, Job>,
    /// pid → (job, instance, process kind), for routing exits.
    pub pids: BTreeMap<i32, (String, String, ProcessKind)>,
    /// Set by a power request: every goal is stop, and no start is accepted.
    pub shutting_down: bool,
    #[serde(skip)]
    effects: Vec<Effect>,
    /// The latest `now` any input brought, for the inputs that bring none
    /// (`spawned`). Not persisted: the runtime passes a fresh `now` first thing.
    #[serde(skip)]
    now: u64,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error {
        kind,
        message: message.into(),
    }
}

impl Jobs {
    /// Takes the effects produced so far, every [`Effect::KillRemnants`] first (so
    /// that a post-stop is never among what it kills), then every [`Effect::Spawn`]
    /// (otherwise in the order they arose).
    ///
    /// The runtime calls [`Jobs::spawned`] for each spawn as it executes it, and
    /// emitting an event may run other requests (`stop on starting …`). With the
    /// spawns first, no request can ever see a process that is decided but has no
    /// pid yet — such a main would be "killed" as pid 0 (the caller's own process
    /// group) and then spawned anyway with goal stop.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        let (mut first, rest): (Vec<Effect>, Vec<Effect>) = std::mem::take(&mut self.effects)
            .into_iter()
            .partition(|e| matches!(e, Effect::KillRemnants { .. }));
        let (spawns, rest): (Vec<Effect>, Vec<Effect>) = rest
            .into_iter()
            .partition(|e| matches!(e, Effect::Spawn { .. }));
        first.extend(spawns);
        first.extend(rest);
        first
    }

    /// Adds or replaces job definitions (from the confdir). Running instances keep
    /// the definition they started with; a job whose file is gone is marked deleted
    /// and dropped once it has stopped.
    pub fn set_definitions(&mut self, defs: Vec<JobDef>) {
        let mut seen = std::collections::BTreeSet::new();
        for def in defs {
            seen.insert(def.name.clone());
            match self.jobs.get_mut(&def.name) {
                Some(job) => {
                    job.def = def;
                    job.deleted = false;
                }
                None => {
                    self.jobs.insert(
                        def.name.clone(),
                        Job {
                            def,
                            instances: BTreeMap::new(),
                            deleted: false,
                        },
                    );
                }
            }
        }
        let gone: Vec<String> = self
            .jobs
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(job) = self.jobs.get_mut(&name) {
                job.deleted = true;
            }
            self.collect(&name);
        }
    }

    /// The instance name a start environment selects (`instance $TTY`).
    pub fn instance_name(def: &JobDef, env: &[(String, String)]) -> String {
        match &def.instance {
            None => String::new(),
            Some(template) => expand(template, env),
        }
    }

    /// A start request. `Ok` means accepted: the reply comes as an effect if a
    /// waiter was given, or at once otherwise (`Ok(statuses)`).
    pub fn start(
        &mut self,
        job: &str,
        env: Vec<(String, String)>,
        waiter: Option<WaiterId>,
        now: u64,
    ) -> Result<Option<InstanceStatus>, Error> {
        if self.shutting_down {
            return Err(error(
                ErrorKind::ShuttingDown,
                "the system is shutting down",
            ));
        }
        let j = self.known_job(job)?;
        let def = j.def.clone();
        let name = Self::instance_name(&def, &env);
        let inst = j.instances.entry(name.clone()).or_insert_with(|| Instance {
            name: name.clone(),
            def: def.clone(),
            goal: Goal::Stop,
            state: State::Waiting,
            env: Vec::new(),
            pids: BTreeMap::new(),
            kill_deadline: None,
            respawns: Vec::new(),
            failure: None,
            waiters: Vec::new(),
        });
        if inst.goal != Goal::Stop {
            return Err(error(ErrorKind::AlreadyStarted, "Job is already running"));
        }
        if inst.state == State::Waiting {
            // A fresh start takes the job's current definition and environment.
            inst.def = def;
            inst.env = env;
        }
        // The failure of a cycle still stopping stays until `Starting` (Upstart):
        // its `stopping`/`stopped` events must still say `RESULT=failed`.
        inst.goal = Goal::Start;
        if let Some(id) = waiter {
            inst.waiters.push(Waiter {
                id,
                until: WaitFor::Started,
            });
        }
        self.advance(job, &name, now);
        Ok(self.status_of(job, &name))
    }

    /// Tracks `pid`, found alive with no saved state to explain it (a poisoned state
    /// was dropped), as the running main process of `job`'s `instance`. False if
    /// the job is unknown or that instance is already tracked.
    pub fn adopt(&mut self, job: &str, instance: &str, pid: i32) -> bool {
        let Some(j) = self.jobs.get_mut(job).filter(|j| !j.deleted) else {
            return false;
        };
        if j.instances
            .get(instance)
            .is_some_and(|i| i.goal != Goal::Stop)
        {
            return false;
        }
        let def = j.def.clone();
        j.instances.insert(
            instance.to_string(),
            Instance {
                name: instance.to_string(),
                def,
                goal: Goal::Start,
                state: State::Running,
                env: Vec::new(),
                pids: BTreeMap::from([(ProcessKind::Main, pid)]),
                kill_deadline: None,
                respawns: Vec::new(),
                failure: None,
                waiters: Vec::new(),
            },
        );
        self.pids.insert(
            pid,
            (job.to_string(), instance.to_string(), ProcessKind::Main),
        );
        true
    }

    /// A stop request for the instance `env` selects.
    pub fn stop(
        &mut self,
        job: &str,
        env: &[(String, String)],
        waiter: Option<WaiterId>,
        now: u64,
    ) -> Result<Option<InstanceStatus>, Error> {
        let name = self.select_instance(job, env)?;
        let inst = self
            .instance_mut(job, &name)
            .ok_or_else(|| unknown_instance(job, &name))?;
        if inst.goal == Goal::Stop {
            return Err(error(
                ErrorKind::AlreadyStopped,
                "Job has already been stopped",
            ));
        }
        inst.goal = Goal::Stop;
        if let Some(id) = waiter {
            inst.waiters.push(Waiter {
                id,
                until: WaitFor::Stopped,
            });
        }
        self.advance(job, &name, now);
        Ok(self.status_of(job, &name))
    }

    /// Restart: kill main → post-stop → pre-start → main (guarantee 3), without
    /// pre-stop, which belongs to stop requests only.
    pub fn restart(
        &mut self,
        job: &str,
        env: &[(String, String)],
        waiter: Option<WaiterId>,
        now: u64,
    ) -> Result<Option<InstanceStatus>, Error> {
        if self.shutting_down {
            return Err(error(
                ErrorKind::ShuttingDown,
                "the system is shutting down",
            ));
        }
        let name = self.select_instance(job, env)?;
        let inst = self
            .instance_mut(job, &name)
            .ok_or_else(|| unknown_instance(job, &name))?;
        if inst.goal == Goal::Stop {
            return Err(error(
                ErrorKind::AlreadyStopped,
                "Job has already been stopped",
            ));
        }
        if let Some(id) = waiter {
            inst.waiters.push(Waiter {
                id,
                until: WaitFor::Started,
            });
        }
        if inst.state == State::Running {
            inst.goal = Goal::Respawn;
            self.enter(job, &name, State::Stopping, now);
            self.advance(job, &name, now);
        }
        Ok(self.status_of(job, &name))
    }

    /// Stops everything for a power action; true once every instance is stopped.
    pub fn shutdown(&mut self, now: u64) -> bool {
        self.shutting_down = true;
        let all: Vec<(String, String)> = self
            .jobs
            .iter()
            .flat_map(|(j, job)| job.instances.keys().map(move |i| (j.clone(), i.clone())))
            .collect();
        for (job, name) in all {
            if let Some(inst) = self.instance_mut(&job, &name) {
                inst.goal = Goal::Stop;
            }
            self.advance(&job, &name, now);
        }
        self.all_stopped()
    }

    pub fn all_stopped(&self) -> bool {
        self.jobs
            .values()
            .flat_map(|j| j.instances.values())
            .all(|i| i.state == State::Waiting)
    }

    /// A process was started for `kind` (answering an [`Effect::Spawn`]).
    ///
    /// A process nobody waits for (the instance is gone, or no spawn of `kind` is
    /// pending) is not tracked but killed at once, so it is never leaked. A main
    /// process whose instance was told to stop before its pid was known (only
    /// possible if a runtime delays `spawned`) gets the kill signal now
    /// (guarantee 6).
    pub fn spawned(&mut self, job: &str, instance: &str, kind: ProcessKind, pid: i32) {
        let pending = self
            .instance_ref(job, instance)
            .is_some_and(|i| i.pids.get(&kind) == Some(&0));
        if !pending || pid <= 0 {
            if pid > 0 {
                self.effects.push(Effect::Kill {
                    pid,
                    signal: Signal::KILL,
                });
            }
            return;
        }
        self.pids
            .insert(pid, (job.to_string(), instance.to_string(), kind));
        let Some(inst) = self.instance_mut(job, instance) else {
            return;
        };
        inst.pids.insert(kind, pid);
        // `enter(Killed)` armed the deadline but had no pid to signal.
        if kind == ProcessKind::Main && inst.state == State::Killed {
            let signal = inst.def.kill_signal;
            self.effects.push(Effect::Kill { pid, signal });
        }
        // `Spawned` waits for main's pid (see `blocked`).
        let now = self.now;
        self.advance(job, instance, now);
    }

    /// A process could not be started: it counts as one that failed at once, and
    /// (as in Upstart) the job's goal becomes stop — except for pre-stop, whose
    /// failure never matters.
    pub fn spawn_failed(
        &mut self,
        job: &str,
        instance: &str,
        kind: ProcessKind,
        reason: String,
        now: u64,
    ) {
        self.process_ended(job, instance, kind, None, reason, now);
    }

    /// A child ended. Exits of pids no job owns (re-parented orphans) are ignored.
    pub fn exited(&mut self, pid: i32, status: WaitStatus, now: u64) {
        let Some((job, instance, kind)) = self.owner(pid) else {
            return;
        };
        let reason = format!(
            "{} process ({pid}) terminated with {}",
            kind.name(),
            status.describe()
        );
        self.process_ended(&job, &instance, kind, Some(status), reason, now);
    }

    /// A child ended before its exec, its setup having failed (`what`: the step
    /// and the error, `setrlimit nofile: Operation not permitted`). It counts as a
    /// process that could not be started, as in Upstart: the job fails, without
    /// respawning.
    pub fn setup_failed(&mut self, pid: i32, what: &str, now: u64) {
        let Some((job, instance, kind)) = self.owner(pid) else {
            return;
        };
        let reason = format!("{} process: {what}", kind.name());
        self.process_ended(&job, &instance, kind, None, reason, now);
    }

    /// The instance and kind of a tracked pid, no longer tracked.
    fn owner(&mut self, pid: i32) -> Option<(String, String, ProcessKind)> {
        let (job, instance, kind) = self.pids.remove(&pid)?;
        self.instance_ref(&job, &instance)
            .is_some_and(|i| i.pids.get(&kind) == Some(&pid))
            .then_some((job, instance, kind))
    }

    /// Timers: SIGKILL after `kill timeout`.
    pub fn tick(&mut self, now: u64) {
        let mut kills = Vec::new();
        for job in self.jobs.values_mut() {
            for inst in job.instances.values_mut() {
                if inst.kill_deadline.is_some_and(|d| d <= now) {
                    inst.kill_deadline = None;
                    if let Some(&pid) = inst.pids.get(&ProcessKind::Main).filter(|&&p| p > 0) {
                        kills.push(pid);
                    }
                }
            }
        }
        for pid in kills {
            self.effects.push(Effect::Kill {
                pid,
                signal: Signal::KILL,
            });
        }
    }

    /// The earliest timer deadline, for the runtime's timerfd.
    pub fn next_deadline(&self) -> Option<u64> {
        self.jobs
            .values()
            .flat_map(|j| j.instances.values())
            .filter_map(|i| i.kill_deadline)
            .min()
    }

    /// Drops client waiters (their connections died with a previous supervisor).
    pub fn forget_waiters(&mut self) {
        for job in self.jobs.values_mut() {
            for inst in job.instances.values_mut() {
                inst.waiters.clear();
            }
        }
    }

    /// A process of the instance ended (`status` is `None` if it never started).
    /// Mirrors Upstart's `job_process_terminated`.
    fn process_ended(
        &mut self,
        job: &str,
        instance: &str,
        kind: ProcessKind,
        status: Option<WaitStatus>,
        reason: String,
        now: u64,
    ) {
        let Some(inst) = self.instance_mut(job, instance) else {
            return;
        };
        inst.pids.remove(&kind);
        let ok = status.is_some_and(WaitStatus::success);
        let never_ran = status.is_none();
        // Upstart's `job_failed`: the first failure of a cycle is the one reported.
        let fail = |inst: &mut Instance| {
            if inst.failure.is_none() {
                inst.failure = Some(Failure {
                    process: kind,
                    status,
                    reason: reason.clone(),
                });
            }
        };
        match kind {
            // Guarantee 2: main runs only after pre-start succeeded — a failed
            // pre-start turns the goal to stop, so `next_state` goes from
            // `PreStart` to `Stopping` (and on to post-stop, guarantee 1).
            ProcessKind::PreStart if !ok => {
                fail(inst);
                inst.goal = Goal::Stop;
            }
            // Guarantee 4 (keel is stricter than Upstart, which ignores it): a
            // failing post-start stops the job instead of declaring it running.
            ProcessKind::PostStart if !ok && inst.goal != Goal::Stop => {
                fail(inst);
                inst.goal = Goal::Stop;
            }
            // Upstart: a failed post-stop stops the job, also when a start or a
            // restart was waiting for it.
            ProcessKind::PostStop if !ok => {
                fail(inst);
                inst.goal = Goal::Stop;
            }
            // A pre-stop that could not even start: as Upstart, the stop goes on.
            ProcessKind::PreStop => {}
            ProcessKind::Main => {
                inst.kill_deadline = None;
                // Dying when killed (or while stopping anyway) is never a failure,
                // and the goal is left alone: a restart may be under way.
                let stopping = matches!(inst.state, State::Stopping | State::Killed)
                    || inst.goal == Goal::Stop;
                if never_ran && !stopping {
                    // Upstart: a process that cannot be spawned fails the job;
                    // respawning it would only spin.
                    fail(inst);
                    inst.goal = Goal::Stop;
                } else if !stopping {
                    // init(5): every end of a respawning service is abnormal except
                    // the statuses `normal exit` lists; a task may end with 0. This
                    // holds in pre-stop too, once a start has cancelled the stop.
                    let listed = is_listed_normal_exit(&inst.def, status);
                    let failed = !listed && (!ok || (inst.def.respawn && !inst.def.task));
                    if failed && inst.def.respawn {
                        respawn_or_give_up(inst, kind, status, &reason, now);
                    } else {
                        if failed {
                            fail(inst);
                        }
                        inst.goal = Goal::Stop;
                    }
                }
            }
            _ => {}
        }
        self.advance(job, instance, now);
    }

    /// Moves the instance through every state it can pass now.
    fn advance(&mut self, job: &str, instance: &str, now: u64) {
        self.now = self.now.max(now);
        loop {
            let Some(inst) = self.instance_mut(job, instance) else {
                return;
            };
            if blocked(inst) {
                return;
            }
            let Some(next) = next_state(inst) else {
                return;
            };
            self.enter(job, instance, next, now);
        }
    }

    /// Enters `state` and starts what belongs to it.
    fn enter(&mut self, job: &str, instance: &str, state: State, now: u64) {
        let Some(inst) = self.instance_mut(job, instance) else {
            return;
        };
        let from = inst.state;
        inst.state = state;
        let spawn =
            |kind: ProcessKind, inst: &Instance| inst.def.process(kind).is_some().then_some(kind);
        let mut to_spawn = None;
        let mut event = None;
        match state {
            State::Starting => {
                if inst.goal == Goal::Respawn {
                    inst.goal = Goal::Start;
                }
                // A new cycle: the last one's failure has been reported.
                inst.failure = None;
                event = Some("starting");
            }
            State::Security => {}
            State::PreStart => to_spawn = spawn(ProcessKind::PreStart, inst),
            State::Spawned => to_spawn = spawn(ProcessKind::Main, inst),
            State::PostStart => to_spawn = spawn(ProcessKind::PostStart, inst),
            // Back from pre-stop (a start cancelled the stop) is no new start:
            // no second `started` (Upstart's `job_change_state`).
            State::Running if from == State::PreStop => {}
            State::Running => event = Some("started"),
            State::PreStop => to_spawn = spawn(ProcessKind::PreStop, inst),
            State::Stopping => event = Some("stopping"),
            // Guarantee 6: the kill signal now, SIGKILL at the deadline (`tick`);
            // `blocked` keeps the state until main's exit is seen. A main still
            // pending (pid 0) is signalled by `spawned`, never as pid 0.
            State::Killed => {
                if let Some(&pid) = inst.pids.get(&ProcessKind::Main) {
                    let signal = inst.def.kill_signal;
                    inst.kill_deadline =
                        Some(now.saturating_add(u64::from(inst.def.kill_timeout) * 1000));
                    if pid > 0 {
                        self.effects.push(Effect::Kill { pid, signal });
                    }
                }
            }
            State::PostStop => {
                self.effects.push(Effect::KillRemnants {
                    job: job.to_string(),
                    instance: instance.to_string(),
                });
                let Some(inst) = self.instance_mut(job, instance) else {
                    return;
                };
                to_spawn = spawn(ProcessKind::PostStop, inst);
            }
            State::Waiting => event = Some("stopped"),
        }
        if let Some(kind) = to_spawn {
            self.effects.push(Effect::Spawn {
                job: job.to_string(),
                instance: instance.to_string(),
                kind,
            });
            // Mark the process as pending until `spawned` records its pid, so the
            // state does not complete before the process even exists.
            if let Some(inst) = self.instance_mut(job, instance) {
                inst.pids.insert(kind, 0);
            }
        }
        if let Some(name) = event {
            self.emit_job_event(job, instance, name);
        }
        match state {
            // A task's start returns once it has run (at `Waiting`), a service's here.
            // Guarantee 4: a start (of a service) is answered once running. A stop
            // cancelled by a start during pre-stop is answered too, as Upstart does
            // (the status says start/running).
            State::Running => {
                let task = self.instance_ref(job, instance).is_some_and(|i| i.def.task);
                // A stop still waited for at `running` was overtaken by a start
                // (during pre-stop, or later on the way down): it is answered with
                // the status as it is, as Upstart does.
                self.reply_waiters(job, instance, |w| match w {
                    WaitFor::Started => !task,
                    WaitFor::Stopped => true,
                })
            }
            State::Waiting => {
                self.reply_waiters(job, instance, |_| true);
                self.collect(job);
            }
            _ => {}
        }
    }

    fn emit_job_event(&mut self, job: &str, instance: &str, name: &str) {
        let Some(inst) = self.instance_ref(job, instance) else {
            return;
        };
        let mut env = vec![
            ("JOB".to_string(), job.to_string()),
            ("INSTANCE".to_string(), instance.to_string()),
        ];
        if matches!(name, "stopping" | "stopped") {
            match &inst.failure {
                Some(f) => {
                    env.push(("RESULT".into(), "failed".into()));
                    env.push(("PROCESS".into(), f.process.name().into()));
                    if let Some(s) = f.status {
                        match (s.code(), s.signal()) {
                            (Some(c), _) => env.push(("EXIT_STATUS".into(), c.to_string())),
                            (_, Some(sig)) => env.push(("EXIT_SIGNAL".into(), Signal(sig).name())),
                            _ => {}
                        }
                    }
                }
                None => env.push(("RESULT".into(), "ok".into())),
            }
        }
        self.effects.push(Effect::Emit(Event {
            name: name.to_string(),
            env,
        }));
    }

    /// Answers the waiters `which` selects (all of them when the instance stopped).
    fn reply_waiters(&mut self, job: &str, instance: &str, which: impl Fn(&WaitFor) -> bool) {
        let Some(inst) = self.instance_mut(job, instance) else {
            return;
        };
        let failure = inst.failure.clone();
        let stopped = inst.state == State::Waiting;
        let task = inst.def.task;
        let (done, keep): (Vec<Waiter>, Vec<Waiter>) =
            inst.waiters.drain(..).partition(|w| which(&w.until));
        inst.waiters = keep;
        for w in done {
            let error = match (&w.until, &failure) {
                (WaitFor::Started, Some(f)) if stopped || task => {
                    Some(error(ErrorKind::JobFailed, f.reason.clone()))
                }
                _ => None,
            };
            self.effects.push(Effect::Reply {
                waiter: w.id,
                job: job.to_string(),
                instance: instance.to_string(),
                error,
            });
        }
    }

    /// Removes stopped instances, and deleted jobs once they have none. A job's
    /// single (unnamed) instance stays while it carries a failure, so `status`
    /// can still say why the job stopped.
    fn collect(&mut self, job: &str) {
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        j.instances.retain(|name, i| {
            i.state != State::Waiting
                || !i.waiters.is_empty()
                || (name.is_empty() && i.failure.is_some() && !j.deleted)
        });
        if j.deleted && j.instances.is_empty() {
            self.jobs.remove(job);
        }
    }

    fn known_job(&mut self, job: &str) -> Result<&mut Job, Error> {
        match self.jobs.get_mut(job) {
            Some(j) if !j.deleted => Ok(j),
            _ => Err(error(ErrorKind::UnknownJob, format!("Unknown job: {job}"))),
        }
    }

    /// The instance a stop/status/restart names: by its instance variables, or the
    /// only instance a job without `instance` has.
    fn select_instance(&self, job: &str, env: &[(String, String)]) -> Result<String, Error> {
        let j = self
            .jobs
            .get(job)
            .ok_or_else(|| error(ErrorKind::UnknownJob, format!("Unknown job: {job}")))?;
        let name = Self::instance_name(&j.def, env);
        if j.instances.contains_key(&name) {
            return Ok(name);
        }
        Err(unknown_instance(job, &name))
    }

    fn instance_mut(&mut self, job: &str, instance: &str) -> Option<&mut Instance> {
        self.jobs.get_mut(job)?.instances.get_mut(instance)
    }

    fn instance_ref(&self, job: &str, instance: &str) -> Option<&Instance> {
        self.jobs.get(job)?.instances.get(instance)
    }

    /// Status of one instance (or of a job's stopped, absent instance).
    pub fn status_of(&self, job: &str, instance: &str) -> Option<InstanceStatus> {
        let j = self.jobs.get(job)?;
        Some(match j.instances.get(instance) {
            Some(inst) => describe(job, inst),
            None => stopped_status(job, instance),
        })
    }

    /// `status JOB [KEY=VALUE…]`.
    pub fn status(
        &self,
        job: &str,
        env: &[(String, String)],
    ) -> Result<Vec<InstanceStatus>, Error> {
        let j = self
            .jobs
            .get(job)
            .ok_or_else(|| error(ErrorKind::UnknownJob, format!("Unknown job: {job}")))?;
        if j.def.instance.is_some() && env.is_empty() {
            return Ok(j.instances.values().map(|i| describe(job, i)).collect());
        }
        let name = Self::instance_name(&j.def, env);
        match j.instances.get(&name) {
            Some(inst) => Ok(vec![describe(job, inst)]),
            None if j.def.instance.is_none() => Ok(vec![stopped_status(job, "")]),
            None => Err(unknown_instance(job, &name)),
        }
    }

    /// `list`: every job, every instance; a job without instances as stop/waiting.
    pub fn list(&self) -> Vec<InstanceStatus> {
        let mut out = Vec::new();
        for (name, j) in &self.jobs {
            if j.instances.is_empty() {
                if j.def.instance.is_none() {
                    out.push(stopped_status(name, ""));
                }
            } else {
                out.extend(j.instances.values().map(|i| describe(name, i)));
            }
        }
        out
    }
}

fn unknown_instance(job: &str, instance: &str) -> Error {
    if instance.is_empty() {
        error(ErrorKind::AlreadyStopped, "Job has already been stopped")
    } else {
        error(
            ErrorKind::UnknownInstance,
            format!("Unknown instance: {job} ({instance})"),
        )
    }
}

fn stopped_status(job: &str, instance: &str) -> InstanceStatus {
    InstanceStatus {
        job: job.to_string(),
        instance: instance.to_string(),
        goal: Goal::Stop,
        state: State::Waiting,
        processes: Vec::new(),
        failure: None,
        status_text: None,
    }
}

fn describe(job: &str, inst: &Instance) -> InstanceStatus {
    let mut processes: Vec<ProcessInfo> = inst
        .pids
        .iter()
        .filter(|(_, pid)| **pid > 0)
        .map(|(kind, pid)| ProcessInfo {
            kind: kind.name().to_string(),
            pid: *pid,
        })
        .collect();
    // Upstart prints main first, then the others.
    processes.sort_by_key(|p| p.kind != "main");
    InstanceStatus {
        job: job.to_string(),
        instance: inst.name.clone(),
        goal: inst.goal,
        state: inst.state,
        processes,
        failure: inst.failure.as_ref().map(|f| f.reason.clone()),
        status_text: None,
    }
}

/// Whether the instance must stay in its state: the process that belongs to the
/// state has not finished yet.
fn blocked(inst: &Instance) -> bool {
    let running = |k: ProcessKind| inst.pids.contains_key(&k);
    match inst.state {
        State::PreStart => running(ProcessKind::PreStart),
        // Main must exist (its pid known) before post-start and "running": a main
        // that cannot be spawned must fail the start, not answer it as started.
        // (Upstart also waits here for `expect` readiness; keel does not block a
        // stop on readiness — a stop leaves `Spawned` as soon as the pid is known.)
        State::Spawned => inst.pids.get(&ProcessKind::Main) == Some(&0),
        // Guarantee 4: not running until post-start finished.
        State::PostStart => running(ProcessKind::PostStart),
        // Guarantee 5: main is not killed until pre-stop finished.
        State::PreStop => running(ProcessKind::PreStop),
        // Guarantee 6: killed lasts until main's exit is seen.
        State::Killed => running(ProcessKind::Main),
        State::PostStop => running(ProcessKind::PostStop),
        _ => false,
    }
}

/// Upstart's state table: where an instance goes next, given its goal.
fn next_state(inst: &Instance) -> Option<State> {
    let main_alive = inst.pids.contains_key(&ProcessKind::Main);
    let has_main = inst.def.main.is_some();
    Some(match (inst.state, inst.goal) {
        (State::Waiting, Goal::Stop) => return None,
        (State::Waiting, _) => State::Starting,
        (State::Starting, Goal::Stop) => State::Stopping,
        (State::Starting, _) => State::Security,
        (State::Security, Goal::Stop) => State::Stopping,
        (State::Security, _) => State::PreStart,
        (State::PreStart, Goal::Stop) => State::Stopping,
        (State::PreStart, _) => State::Spawned,
        (State::Spawned, Goal::Stop) => State::Stopping,
        (State::Spawned, _) => State::PostStart,
        (State::PostStart, Goal::Stop) => State::Stopping,
        // Main ended (to be respawned) while post-start ran: never "running".
        (State::PostStart, Goal::Respawn) => State::Stopping,
        // Main ended on its own during post-start and a start came since: not
        // "running" without main (Upstart would pass through running and answer
        // the start); round again via post-stop instead.
        (State::PostStart, Goal::Start) if has_main && !main_alive => State::Stopping,
        (State::PostStart, Goal::Start) => State::Running,
        // Guarantee 5: pre-stop runs only on a stop request while main runs.
        (State::Running, Goal::Stop) if main_alive => State::PreStop,
        (State::Running, Goal::Stop) => State::Stopping,
        (State::Running, Goal::Respawn) => State::Stopping,
        // A task, or a service whose main ended, is done; a job without main
        // (a "state" job) stays running until stopped.
        (State::Running, Goal::Start) if main_alive || !has_main => return None,
        (State::Running, Goal::Start) => State::Stopping,
        // A start request during pre-stop cancels the stop.
        (State::PreStop, Goal::Stop) => State::Stopping,
        // Main ended (to be respawned) after the stop was cancelled.
        (State::PreStop, Goal::Respawn) => State::Stopping,
        (State::PreStop, Goal::Start) if has_main && !main_alive => State::Stopping,
        (State::PreStop, Goal::Start) => State::Running,
        (State::Stopping, _) => State::Killed,
        // Guarantee 1: whatever ran, post-stop follows.
        (State::Killed, _) => State::PostStop,
        (State::PostStop, Goal::Stop) => State::Waiting,
        (State::PostStop, _) => State::Starting,
    })
}

/// Whether `normal exit` lists this status or signal.
fn is_listed_normal_exit(def: &JobDef, status: Option<WaitStatus>) -> bool {
    let Some(status) = status else {
        return false;
    };
    def.normal_exit.iter().any(|m| match *m {
        ExitMatch::Status(c) => status.code() == Some(c),
        ExitMatch::Signal(s) => status.signal() == Some(s.0),
    })
}

/// Respawns main unless it did so too often (`respawn limit`), then gives up.
fn respawn_or_give_up(
    inst: &mut Instance,
    kind: ProcessKind,
    status: Option<WaitStatus>,
    reason: &str,
    now: u64,
) {
    use crate::job::RespawnLimit;
    match inst.def.respawn_limit {
        // Upstart (`job_process_catch_runaway`): a count or an interval of 0
        // disables the limit, as `unlimited` does. Nothing is recorded then, so
        // the persisted state does not grow with every respawn.
        RespawnLimit::Limit { count, interval } if count > 0 && interval > 0 => {
            let window = u64::from(interval) * 1000;
            inst.respawns.retain(|&t| now.saturating_sub(t) < window);
            if inst.respawns.len() >= count as usize {
                inst.failure = Some(Failure {
                    process: kind,
                    status,
                    reason: format!("{reason}; respawning too fast, stopped"),
                });
                inst.goal = Goal::Stop;
                return;
            }
            inst.respawns.push(now);
        }
        _ => inst.respawns.clear(),
    }
    inst.goal = Goal::Respawn;
}

/// Expands `$VAR` and `${VAR}` from `env` (unknown variables become empty).
pub fn expand(template: &str, env: &[(String, String)]) -> String {
    let lookup = |k: &str| {
        env.iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some((name, tail)) = after.strip_prefix('{').and_then(|b| b.split_once('}')) {
            out.push_str(lookup(name));
            rest = tail;
            continue;
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len == 0 {
            out.push('$');
        } else {
            out.push_str(lookup(&after[..len]));
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Process, RespawnLimit};

    fn exec() -> Option<Process> {
        Some(Process::Exec {
            command: "true".into(),
        })
    }

    /// A service with every process.
    fn full() -> JobDef {
        let mut d = JobDef::new("j");
        d.pre_start = exec();
        d.main = exec();
        d.post_start = exec();
        d.pre_stop = exec();
        d.post_stop = exec();
        d
    }

    struct T {
        jobs: Jobs,
        pid: i32,
        now: u64,
        /// Every effect so far (spawns as `Spawn`).
        seen: Vec<Effect>,
    }

    impl T {
        fn new(def: JobDef) -> T {
            let mut jobs = Jobs::default();
            jobs.set_definitions(vec![def]);
            T {
                jobs,
                pid: 100,
                now: 0,
                seen: Vec::new(),
            }
        }
        /// Plays the runtime: every spawn gets a pid at once.
        fn settle(&mut self) {
            loop {
                let effects = self.jobs.take_effects();
                if effects.is_empty() {
                    return;
                }
                for e in effects {
                    if let Effect::Spawn {
                        job,
                        instance,
                        kind,
                    } = &e
                    {
                        self.pid += 1;
                        self.jobs.spawned(job, instance, *kind, self.pid);
                    }
                    self.seen.push(e);
                }
            }
        }
        fn start(&mut self, waiter: Option<WaiterId>) {
            self.jobs.start("j", vec![], waiter, self.now).unwrap();
            self.settle();
        }
        fn stop(&mut self, waiter: Option<WaiterId>) {
            self.jobs.stop("j", &[], waiter, self.now).unwrap();
            self.settle();
        }
        fn inst(&self) -> Option<&Instance> {
            self.jobs.jobs["j"].instances.get("")
        }
        fn state(&self) -> State {
            self.inst().map_or(State::Waiting, |i| i.state)
        }
        fn pid(&self, kind: ProcessKind) -> i32 {
            self.inst().unwrap().pids[&kind]
        }
        fn exit(&mut self, kind: ProcessKind, status: WaitStatus) {
            let pid = self.pid(kind);
            self.jobs.exited(pid, status, self.now);
            self.settle();
        }
        fn ok(&mut self, kind: ProcessKind) {
            self.exit(kind, WaitStatus::exited(0));
        }
        /// The processes spawned so far, in order.
        fn spawns(&self) -> Vec<ProcessKind> {
            self.seen
                .iter()
                .filter_map(|e| match e {
                    Effect::Spawn { kind, .. } => Some(*kind),
                    _ => None,
                })
                .collect()
        }
        fn events(&self) -> Vec<String> {
            self.seen
                .iter()
                .filter_map(|e| match e {
                    Effect::Emit(ev) => Some(ev.name.clone()),
                    _ => None,
                })
                .collect()
        }
        fn replies(&self) -> Vec<(WaiterId, Option<ErrorKind>)> {
            self.seen
                .iter()
                .filter_map(|e| match e {
                    Effect::Reply { waiter, error, .. } => {
                        Some((*waiter, error.as_ref().map(|e| e.kind)))
                    }
                    _ => None,
                })
                .collect()
        }
        fn kills(&self) -> Vec<(i32, Signal)> {
            self.seen
                .iter()
                .filter_map(|e| match e {
                    Effect::Kill { pid, signal } => Some((*pid, *signal)),
                    _ => None,
                })
                .collect()
        }
        /// Brings `full()` to running.
        fn running(&mut self) {
            self.start(None);
            self.ok(ProcessKind::PreStart);
            self.ok(ProcessKind::PostStart);
            assert_eq!(self.state(), State::Running);
        }
    }

    use ProcessKind::*;

    #[test]
    fn stop_during_pre_start_runs_no_main_but_post_stop() {
        let mut t = T::new(full());
        t.start(Some(1));
        assert_eq!(t.state(), State::PreStart);
        t.stop(Some(2));
        assert_eq!(t.state(), State::PreStart, "pre-start is waited for");
        t.ok(PreStart);
        assert_eq!(t.state(), State::PostStop);
        t.ok(PostStop);
        assert_eq!(t.state(), State::Waiting);
        assert_eq!(t.spawns(), vec![PreStart, PostStop]);
        assert_eq!(t.replies(), vec![(1, None), (2, None)]);
    }

    #[test]
    fn stop_during_post_start_waits_for_it_then_kills_main() {
        let mut t = T::new(full());
        t.start(None);
        t.ok(PreStart);
        assert_eq!(t.state(), State::PostStart);
        let main = t.pid(Main);
        t.stop(None);
        assert_eq!(t.state(), State::PostStart);
        assert!(t.kills().is_empty());
        t.ok(PostStart);
        // Never running; no pre-stop (the stop came before running).
        assert_eq!(t.state(), State::Killed);
        assert_eq!(t.kills(), vec![(main, Signal::TERM)]);
        assert!(!t.events().contains(&"started".to_string()));
        t.exit(Main, WaitStatus::signaled(15));
        t.ok(PostStop);
        assert_eq!(t.spawns(), vec![PreStart, Main, PostStart, PostStop]);
        assert_eq!(t.state(), State::Waiting);
    }

    #[test]
    fn stop_in_spawned_without_post_start_goes_straight_on() {
        let mut d = full();
        d.post_start = None;
        d.pre_start = None;
        let mut t = T::new(d);
        t.start(None);
        assert_eq!(t.state(), State::Running);
        t.stop(None);
        assert_eq!(t.state(), State::PreStop);
    }

    #[test]
    fn start_during_pre_stop_returns_to_running_with_the_same_main() {
        let mut t = T::new(full());
        t.running();
        let main = t.pid(Main);
        t.stop(Some(1));
        assert_eq!(t.state(), State::PreStop);
        t.start(Some(2));
        t.ok(PreStop);
        assert_eq!(t.state(), State::Running);
        assert_eq!(t.pid(Main), main);
        assert!(t.kills().is_empty());
        // One started event; both requests answered.
        assert_eq!(t.events().iter().filter(|e| *e == "started").count(), 1);
        assert_eq!(t.replies(), vec![(1, None), (2, None)]);
    }

    #[test]
    fn main_dying_during_a_cancelled_pre_stop_stops_a_plain_service() {
        let mut t = T::new(full());
        t.running();
        t.stop(None);
        t.start(None);
        t.exit(Main, WaitStatus::exited(1));
        t.ok(PreStop);
        assert_eq!(t.state(), State::PostStop);
        t.ok(PostStop);
        assert_eq!(t.state(), State::Waiting, "not restarted: no respawn");
        assert_eq!(t.spawns().iter().filter(|k| **k == Main).count(), 1);
    }

    #[test]
    fn start_during_killed_and_post_stop_runs_post_stop_then_starts_again() {
        for at in [State::Killed, State::PostStop] {
            let mut t = T::new(full());
            t.running();
            t.stop(None);
            t.ok(PreStop);
            assert_eq!(t.state(), State::Killed);
            if at == State::PostStop {
                t.exit(Main, WaitStatus::signaled(15));
                assert_eq!(t.state(), State::PostStop);
            }
            t.start(Some(7));
            assert_eq!(t.state(), at);
            if at == State::Killed {
                t.exit(Main, WaitStatus::signaled(15));
            }
            t.ok(PostStop);
            assert_eq!(t.state(), State::PreStart);
            t.ok(PreStart);
            t.ok(PostStart);
            assert_eq!(t.state(), State::Running);
            assert_eq!(t.replies(), vec![(7, None)]);
            assert_eq!(
                t.spawns(),
                vec![
                    PreStart, Main, PostStart, PreStop, PostStop, PreStart, Main, PostStart
                ]
            );
        }
    }

    #[test]
    fn killed_lasts_until_main_exits_with_sigkill_after_the_timeout() {
        let mut t = T::new(full());
        t.running();
        let main = t.pid(Main);
        t.stop(None);
        t.ok(PreStop);
        t.jobs.tick(4_999);
        assert_eq!(t.kills(), vec![(main, Signal::TERM)]);
        t.jobs.tick(5_000);
        t.settle();
        assert_eq!(t.kills(), vec![(main, Signal::TERM), (main, Signal::KILL)]);
        assert_eq!(t.state(), State::Killed);
        t.jobs.tick(60_000);
        t.settle();
        assert_eq!(t.state(), State::Killed, "until main's exit is seen");
        t.exit(Main, WaitStatus::signaled(9));
        assert_eq!(t.state(), State::PostStop);
    }

    #[test]
    fn restart_kills_then_post_stop_pre_start_main_without_pre_stop() {
        let mut t = T::new(full());
        t.running();
        let main = t.pid(Main);
        t.jobs.restart("j", &[], Some(3), 0).unwrap();
        t.settle();
        assert_eq!(t.kills(), vec![(main, Signal::TERM)]);
        t.exit(Main, WaitStatus::signaled(15));
        t.ok(PostStop);
        t.ok(PreStart);
        t.ok(PostStart);
        assert_eq!(
            t.spawns(),
            vec![
                PreStart, Main, PostStart, PostStop, PreStart, Main, PostStart
            ]
        );
        assert_eq!(t.replies(), vec![(3, None)]);
    }

    #[test]
    fn restart_cancelled_after_post_stop_runs_post_stop_again() {
        let mut t = T::new(full());
        t.running();
        t.jobs.restart("j", &[], None, 0).unwrap();
        t.settle();
        t.exit(Main, WaitStatus::signaled(15));
        t.ok(PostStop);
        assert_eq!(t.state(), State::PreStart);
        t.stop(None);
        t.ok(PreStart);
        t.ok(PostStop);
        assert_eq!(t.state(), State::Waiting);
        assert_eq!(
            t.spawns(),
            vec![PreStart, Main, PostStart, PostStop, PreStart, PostStop]
        );
    }

    #[test]
    fn pre_start_failure_runs_no_main_and_fails_the_start() {
        let mut t = T::new(full());
        t.start(Some(1));
        t.exit(PreStart, WaitStatus::exited(1));
        assert_eq!(t.state(), State::PostStop);
        t.ok(PostStop);
        assert_eq!(t.spawns(), vec![PreStart, PostStop]);
        assert_eq!(t.replies(), vec![(1, Some(ErrorKind::JobFailed))]);
        let stopped = t
            .seen
            .iter()
            .find_map(|e| match e {
                Effect::Emit(ev) if ev.name == "stopped" => Some(ev.env.clone()),
                _ => None,
            })
            .unwrap();
        assert!(stopped.contains(&("PROCESS".into(), "pre-start".into())));
    }

    #[test]
    fn post_start_failure_stops_the_job() {
        let mut t = T::new(full());
        t.start(Some(1));
        t.ok(PreStart);
        t.exit(PostStart, WaitStatus::exited(2));
        assert_eq!(t.state(), State::Killed);
        t.exit(Main, WaitStatus::signaled(15));
        t.ok(PostStop);
        assert_eq!(t.replies(), vec![(1, Some(ErrorKind::JobFailed))]);
        assert!(!t.events().contains(&"started".to_string()));
    }

    #[test]
    fn main_spawn_failure_fails_the_start() {
        let mut d = full();
        d.pre_start = None;
        d.post_start = None;
        let mut t = T::new(d);
        t.jobs.start("j", vec![], Some(1), 0).unwrap();
        let effects = t.jobs.take_effects();
        assert!(matches!(effects[0], Effect::Spawn { kind: Main, .. }));
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::Reply { .. })),
            "not answered before main exists"
        );
        t.jobs.spawn_failed("j", "", Main, "no such file".into(), 0);
        t.settle();
        assert_eq!(t.spawns(), vec![PostStop]);
        t.ok(PostStop);
        assert_eq!(t.replies(), vec![(1, Some(ErrorKind::JobFailed))]);
    }

    #[test]
    fn a_setup_failure_of_a_respawning_main_fails_the_job_with_its_reason() {
        let mut d = full();
        d.respawn = true;
        let mut t = T::new(d);
        t.running();
        let main = t.pid(Main);
        t.jobs
            .setup_failed(main, "setrlimit nofile: Operation not permitted", 0);
        t.settle();
        // No respawn: it could only fail again. post-stop still runs.
        assert_eq!(t.spawns(), vec![PreStart, Main, PostStart, PostStop]);
        t.ok(PostStop);
        let failure = t.inst().unwrap().failure.clone().unwrap();
        assert_eq!(
            failure.reason,
            "main process: setrlimit nofile: Operation not permitted"
        );
        assert_eq!(failure.status, None);
        assert_eq!(t.state(), State::Waiting);
        // An untracked pid is ignored.
        t.jobs.setup_failed(4242, "x", 0);
        assert!(t.jobs.take_effects().is_empty());
    }

    #[test]
    fn remnants_are_killed_before_post_stop_is_spawned() {
        let mut t = T::new(full());
        t.running();
        t.stop(None);
        t.ok(PreStop);
        let main = t.pid(Main);
        t.jobs.exited(main, WaitStatus::signaled(15), 0);
        let effects = t.jobs.take_effects();
        let remnants = effects
            .iter()
            .position(|e| matches!(e, Effect::KillRemnants { .. }))
            .expect("remnants killed once main has ended");
        let post_stop = effects
            .iter()
            .position(|e| matches!(e, Effect::Spawn { kind: PostStop, .. }))
            .expect("post-stop spawned");
        assert!(remnants < post_stop, "{effects:?}");
        // Never while main runs.
        let mut r = T::new(full());
        r.running();
        assert!(
            !r.seen
                .iter()
                .any(|e| matches!(e, Effect::KillRemnants { .. }))
        );
    }

    #[test]
    fn task_start_is_answered_when_it_stopped_with_its_failure() {
        let mut d = JobDef::new("j");
        d.task = true;
        d.main = exec();
        let mut t = T::new(d.clone());
        t.start(Some(1));
        assert_eq!(t.state(), State::Running);
        assert!(t.replies().is_empty());
        t.exit(Main, WaitStatus::exited(0));
        assert_eq!(t.replies(), vec![(1, None)]);

        let mut t = T::new(d);
        t.start(Some(1));
        t.exit(Main, WaitStatus::exited(4));
        assert_eq!(t.replies(), vec![(1, Some(ErrorKind::JobFailed))]);
    }

    fn respawning(limit: RespawnLimit) -> T {
        let mut d = JobDef::new("j");
        d.respawn = true;
        d.respawn_limit = limit;
        d.main = exec();
        d.post_stop = exec();
        d.pre_stop = exec();
        T::new(d)
    }

    #[test]
    fn respawn_runs_post_stop_and_never_pre_stop_and_gives_up_past_the_limit() {
        let mut t = respawning(RespawnLimit::default());
        t.start(None);
        for i in 0..10 {
            t.now = i * 100;
            t.exit(Main, WaitStatus::exited(0));
            t.ok(PostStop);
            assert_eq!(t.state(), State::Running, "respawn {i}");
        }
        t.now = 1_000;
        t.exit(Main, WaitStatus::exited(0));
        assert_eq!(t.inst().unwrap().goal, Goal::Stop);
        t.ok(PostStop);
        assert_eq!(t.state(), State::Waiting);
        assert!(!t.spawns().contains(&PreStop));
        let stopped = t
            .seen
            .iter()
            .rev()
            .find_map(|e| match e {
                Effect::Emit(ev) if ev.name == "stopped" => Some(ev.env.clone()),
                _ => None,
            })
            .unwrap();
        assert!(stopped.contains(&("RESULT".into(), "failed".into())));
        let t2 = {
            let mut t = respawning(RespawnLimit::default());
            t.start(Some(9));
            for i in 0..11 {
                t.now = i * 100;
                t.exit(Main, WaitStatus::exited(1));
                if t.state() == State::PostStop {
                    t.ok(PostStop);
                }
            }
            t
        };
        // A service's start was answered when it ran; a waiting stop gets the end.
        assert_eq!(t2.replies(), vec![(9, None)]);
        let mut t = respawning(RespawnLimit::default());
        t.start(None);
        for i in 0..11 {
            t.now = i * 100;
            t.exit(Main, WaitStatus::exited(1));
            t.ok(PostStop);
        }
        assert_eq!(t.state(), State::Waiting);
        let failure = t.seen.iter().rev().find_map(|e| match e {
            Effect::Emit(ev) if ev.name == "stopping" => Some(ev.env.clone()),
            _ => None,
        });
        assert!(
            failure
                .unwrap()
                .contains(&("RESULT".into(), "failed".into()))
        );
        // The reason, as `status` shows it while the instance still stops.
        let mut t = respawning(RespawnLimit::default());
        t.start(None);
        for i in 0..10 {
            t.now = i * 100;
            t.exit(Main, WaitStatus::exited(1));
            t.ok(PostStop);
        }
        t.exit(Main, WaitStatus::exited(1));
        assert_eq!(t.state(), State::PostStop);
        let reason = t.jobs.status("j", &[]).unwrap()[0].failure.clone();
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.contains("respawning too fast")),
            "{reason:?}"
        );
    }

    #[test]
    fn respawns_spread_over_time_go_on_and_limit_zero_is_unlimited() {
        let mut t = respawning(RespawnLimit::Limit {
            count: 2,
            interval: 1,
        });
        t.start(None);
        for i in 0..20 {
            t.now = i * 600;
            t.exit(Main, WaitStatus::exited(1));
            t.ok(PostStop);
            assert_eq!(t.state(), State::Running);
        }
        for limit in [
            RespawnLimit::Unlimited,
            RespawnLimit::Limit {
                count: 0,
                interval: 5,
            },
        ] {
            let mut t = respawning(limit);
            t.start(None);
            for _ in 0..50 {
                t.exit(Main, WaitStatus::exited(1));
                t.ok(PostStop);
                assert_eq!(t.state(), State::Running);
            }
            assert!(t.inst().unwrap().respawns.is_empty(), "nothing piles up");
        }
    }

    #[test]
    fn normal_exit_is_no_failure_and_no_respawn() {
        let mut t = respawning(RespawnLimit::default());
        if let Some(j) = t.jobs.jobs.get_mut("j") {
            j.def.normal_exit = vec![ExitMatch::Status(3), ExitMatch::Signal(Signal::TERM)];
        }
        t.start(None);
        t.exit(Main, WaitStatus::exited(3));
        t.ok(PostStop);
        assert_eq!(t.state(), State::Waiting);
        assert!(t.events().len() >= 4);
        assert!(
            t.seen
                .iter()
                .any(|e| matches!(e, Effect::Emit(ev) if ev.name == "stopped"
                    && ev.env.contains(&("RESULT".into(), "ok".into()))))
        );
        t.start(None);
        t.exit(Main, WaitStatus::signaled(15));
        t.ok(PostStop);
        assert_eq!(t.state(), State::Waiting);
        // Exit 0 of a respawning service is not normal unless listed.
        t.start(None);
        t.exit(Main, WaitStatus::exited(0));
        assert_eq!(t.state(), State::PostStop);
        t.ok(PostStop);
        assert_eq!(t.state(), State::Running);
    }

    #[test]
    fn failed_post_stop_stops_a_pending_start() {
        let mut t = T::new(full());
        t.running();
        t.stop(None);
        t.ok(PreStop);
        t.exit(Main, WaitStatus::signaled(15));
        t.start(Some(5));
        t.exit(PostStop, WaitStatus::exited(1));
        assert_eq!(t.state(), State::Waiting);
        assert_eq!(t.replies(), vec![(5, Some(ErrorKind::JobFailed))]);
    }

    #[test]
    fn a_failed_cycle_reports_failed_even_if_started_again_meanwhile() {
        let mut t = T::new(full());
        t.start(None);
        t.exit(PreStart, WaitStatus::exited(1));
        t.start(None);
        t.ok(PostStop);
        let stopping = t
            .seen
            .iter()
            .find_map(|e| match e {
                Effect::Emit(ev) if ev.name == "stopping" => Some(ev.env.clone()),
                _ => None,
            })
            .unwrap();
        assert!(stopping.contains(&("RESULT".into(), "failed".into())));
        assert_eq!(t.state(), State::PreStart);
        assert!(t.inst().unwrap().failure.is_none(), "cleared at starting");
    }

    #[test]
    fn spawns_come_before_events_and_no_pid_0_is_killed() {
        let mut d = full();
        d.pre_start = None;
        d.post_start = None;
        d.pre_stop = None;
        let mut t = T::new(d);
        t.jobs.start("j", vec![], None, 0).unwrap();
        let effects = t.jobs.take_effects();
        assert!(matches!(effects[0], Effect::Spawn { kind: Main, .. }));
        // A late `spawned` for a stale process: killed, never tracked.
        t.jobs.spawned("j", "", Main, 555);
        t.jobs.spawned("j", "", PreStop, 556);
        let effects: Vec<Effect> = t
            .jobs
            .take_effects()
            .into_iter()
            .filter(|e| matches!(e, Effect::Kill { .. }))
            .collect();
        assert_eq!(
            effects,
            vec![Effect::Kill {
                pid: 556,
                signal: Signal::KILL
            }]
        );
        assert_eq!(t.state(), State::Running);
    }
}
