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
//! And one of keel's own, which Upstart lacks:
//! 7. the way down is bounded: a hook that holds up a stop — pre-stop and
//!    post-stop from their start, pre-start and post-start once the goal is no
//!    longer start — has `kill timeout` to end, then gets SIGKILL and fails the
//!    instance with that reason (`bound_hook`, `tick`). A hook serving a start
//!    runs as long as it needs, as in Upstart (a pre-start may wait for a
//!    device): a stop bounds it.
//!
//! Events are the core's too (`engine`, following Upstart's `init/event.c`): the
//! queue of events, what each event starts and stops, and the blocking between
//! jobs and events — an instance in `starting` or `stopping` waits until its own
//! event has finished, and an event finishes once every job it started or stopped
//! has reached its goal. All of it is in [`Jobs`], so it is saved whole and a
//! kill -9 of the supervisor loses no event, no half-matched `and` and no wait.
//!
//! The runtime owns everything else: it turns [`Effect`]s into processes, signals
//! and replies, and feeds back what happened.

use crate::events::{self, EventId, Matched, set_var};
use crate::job::{ExitMatch, Expect, JobDef, ProcessKind, Signal};
use crate::refusal::Refusal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::events::Event;

mod def;
mod engine;
mod read;
mod requests;
mod status;
pub(crate) mod table;
pub use def::{Def, DefId};
pub use engine::{EVENTS_PER_ROUND, MAX_QUEUED_EVENTS, POWER_GRACE_MS, Progress, Queued};
pub use read::Owner;
pub use requests::parse_env;
pub use status::{Goal, InstanceStatus, PowerAction, ProcessInfo, State};

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
    /// It respawned too fast: Upstart says `PROCESS=respawn`, without a status.
    pub respawn: bool,
}

/// How long `expect …` may take when the job has no `ready timeout` (systemd's
/// default start timeout): long enough for any honest daemon, short enough that a
/// job whose `expect` does not match what it does ends in an explained state.
pub const DEFAULT_READY_TIMEOUT_S: u32 = 90;

/// After `expect daemon`'s first fork, how long the child may live without forking
/// again before keel takes it for the daemon (it forked once only: a mismatch).
pub const SECOND_FORK_GRACE_MS: u64 = 1000;

/// The readiness an instance in `spawned` still waits for (`expect …`), kept in
/// the saved state so that a new supervisor goes on waiting for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// When the start fails if the job is still not ready (monotonic ms).
    pub deadline: u64,
    /// Forks followed so far (`expect fork` needs 1, `expect daemon` 2).
    pub forks: u8,
    /// When the last fork was followed (monotonic ms).
    pub forked_at: u64,
    /// The main process has exec'd its program (its spawn's error pipe closed): a
    /// job is never running on a process that may still fail to become it. Without
    /// `expect`, that is all the readiness there is.
    pub execd: bool,
}

/// One instance of a job: its own lifecycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Empty for a job without `instance`.
    pub(crate) name: String,
    /// The definition this instance started with (a reload changes the job's, not this).
    pub(crate) def: Def,
    pub(crate) goal: Goal,
    pub(crate) state: State,
    /// The environment it was started with: the job-environment table and the
    /// job's `env` defaults, then the start request's variables or the events'
    /// (with `UPSTART_EVENTS`). Every process of the instance gets it.
    pub(crate) env: Vec<(String, String)>,
    /// The environment of the next start, taken over at `starting` (a start may
    /// come while the last cycle still stops).
    pub(crate) start_env: Option<Vec<(String, String)>>,
    /// What stopped it: the stop events' variables and `UPSTART_STOP_EVENTS` (or a
    /// stop request's `KEY=VALUE`), for pre-stop and post-stop only.
    pub(crate) stop_env: Vec<(String, String)>,
    /// How far its `stop on` has got (each instance has its own).
    pub(crate) stop_on: Matched,
    /// Its own `starting` or `stopping` event, while it waits for it to finish.
    pub(crate) blocker: Option<EventId>,
    /// The events that started or stopped it: each stays unfinished until this
    /// instance reaches its goal or fails (Upstart's `job->blocking`).
    pub(crate) blocking: Vec<EventId>,
    /// Running processes by kind.
    pub(crate) pids: BTreeMap<ProcessKind, i32>,
    /// When SIGKILL goes to the process the state waits for (monotonic ms): main
    /// while killed (guarantee 6), a hook holding up a stop (guarantee 7).
    pub(crate) kill_deadline: Option<u64>,
    /// Times of recent respawns (monotonic ms), for `respawn limit`.
    pub(crate) respawns: Vec<u64>,
    pub(crate) failure: Option<Failure>,
    pub(crate) waiters: Vec<Waiter>,
    /// While in `spawned`: the readiness still awaited (see [`Readiness`]).
    pub(crate) readiness: Option<Readiness>,
    /// What `status` says beside the state: the daemon's own words (sd_notify
    /// `STATUS=`), or keel's about an `expect` that does not match the daemon.
    pub(crate) status_text: Option<String>,
}

impl Instance {
    /// A stopped instance of `def`.
    pub fn new(name: &str, def: Def) -> Instance {
        Instance {
            name: name.to_string(),
            def,
            goal: Goal::Stop,
            state: State::Waiting,
            env: Vec::new(),
            start_env: None,
            stop_env: Vec::new(),
            stop_on: Matched::default(),
            blocker: None,
            blocking: Vec::new(),
            pids: BTreeMap::new(),
            kill_deadline: None,
            respawns: Vec::new(),
            failure: None,
            waiters: Vec::new(),
            readiness: None,
            status_text: None,
        }
    }
}

/// A job: its current definition and its instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub(crate) def: Def,
    /// Boxed: most jobs have one instance, and a map's node holds room for eleven.
    pub(crate) instances: BTreeMap<String, Box<Instance>>,
    /// The job file is gone: the job disappears once no instance runs.
    pub(crate) deleted: bool,
    /// How far its `start on` has got (one for the job: it creates instances).
    pub(crate) start_on: Matched,
}

/// A power action under way: first the `runlevel` event (jobs with `stop on
/// runlevel [016]` stop, jobs with `start on runlevel [06]` run), then every job
/// is stopped, then the runtime makes the action. Each phase is bounded by
/// `deadline`, so a hanging job never keeps the machine up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Power {
    pub action: PowerAction,
    /// The `runlevel` event, until it has finished.
    pub event: Option<EventId>,
    /// When the current phase stops waiting (monotonic ms).
    pub deadline: u64,
    /// The last phase ran out of time: the action is made with jobs still up.
    pub overdue: bool,
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
        error: Option<Refusal>,
    },
    /// An event was queued (the core handles it itself; this is for the log).
    Emit(Event),
    /// An event a client waited for (`initctl emit`) has finished; `failed` if a
    /// job it started or stopped failed.
    EventFinished { waiter: WaiterId, failed: bool },
    /// Something the log should say (an event that could not start a job).
    Warn(String),
    /// A change of a job the log should say that no event tells (a respawn).
    Info(String),
    /// Main has ended on the way to post-stop: whatever is left of the instance
    /// (its cgroup's processes) is killed, before post-stop starts.
    KillRemnants { job: String, instance: String },
}

/// Everything the supervisor knows about its jobs. This is what is persisted.
/// Private: the shell reads it through named accessors (`job`, `instance`,
/// `owner`…) and changes it only through the inputs (`start`, `exited`, `set_env`…).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jobs {
    jobs: table::Tracked<String, Job>,
    /// pid → (job, instance, process kind), for routing exits.
    pids: table::Tracked<i32, (String, String, ProcessKind)>,
    /// Set by a power request: every goal is stop, and no start is accepted.
    shutting_down: bool,
    /// The event queue, oldest first (by id: a journal table).
    events: engine::EventQueue,
    /// The id the next event gets.
    next_event: EventId,
    /// The job-environment table (`set-env`): defaults for every job started after.
    env_table: BTreeMap<String, String>,
    /// A power action under way.
    power: Option<Power>,
    /// The id the next new definition gets (see [`Def`]).
    next_def: DefId,
    #[serde(skip)]
    effects: Vec<Effect>,
    /// Events handled since the last `tick` (see [`EVENTS_PER_ROUND`]).
    #[serde(skip)]
    handled: usize,
    /// The latest `now` any input brought, for the inputs that bring none
    /// (`spawned`). Not persisted: the runtime passes a fresh `now` first thing.
    #[serde(skip)]
    now: u64,
    /// Which jobs each event name can concern (see `engine`); never saved.
    #[serde(skip)]
    index: Derived<engine::Index>,
    /// The instances the per-round looks (`tick`, `next_deadline`,
    /// `awaiting_exec`, `awaiting_readiness`) need to see; never saved.
    #[serde(skip)]
    unsettled: Derived<Unsettled>,
}

/// The instances with a timer or a process start under way, so that what runs
/// every round of the loop costs what is in motion, not the number of jobs: 10,000
/// running jobs with nothing to wait for cost nothing there. An instance is
/// unsettled ([`is_unsettled`]) in any state but `waiting` and `running`, or with
/// a kill deadline or readiness awaited. Every change of an instance goes through
/// `Jobs::instance_mut`, which marks it `touched`; `tick` (first thing each round)
/// looks at the touched ones again. Between ticks the looks see `known` and
/// `touched` together, so an instance changed since is never missed.
#[derive(Clone, Debug, Default)]
struct Unsettled {
    /// The unsettled instances as of the last `tick`; `None` until the first
    /// (a state just loaded): then every instance is looked at.
    known: Option<BTreeSet<(String, String)>>,
    /// Instances changed (or removed) since the last `tick`.
    touched: BTreeSet<(String, String)>,
}

/// Every instance of `jobs`, in order: (job, instance name, instance).
fn every_instance(
    jobs: &BTreeMap<String, Job>,
) -> impl Iterator<Item = (&str, &str, &Instance)> + '_ {
    jobs.iter().flat_map(|(name, j)| {
        j.instances
            .iter()
            .map(move |(iname, inst)| (name.as_str(), iname.as_str(), &**inst))
    })
}

/// Whether the per-round looks need to see `inst` (see [`Unsettled`]).
fn is_unsettled(inst: &Instance) -> bool {
    !matches!(inst.state, State::Waiting | State::Running)
        || inst.kill_deadline.is_some()
        || inst.readiness.is_some()
}

/// Something the core derives from its state to be quick (an index): never saved,
/// rebuilt when needed, and no part of comparing two states.
#[derive(Clone, Debug, Default)]
struct Derived<T>(T);

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Derived<T>) -> bool {
        true
    }
}

impl<T> Eq for Derived<T> {}

impl Jobs {
    /// The tables the journal saves entry by entry (see `crate::journal`).
    pub(crate) fn tables(&mut self) -> Vec<&mut dyn table::Table> {
        vec![&mut self.jobs, &mut self.pids, &mut self.events.0]
    }

    /// Whether effects wait to be taken: what they say (a reply, a spawn) is in
    /// no saved state, so a re-exec must wait for them.
    pub fn effects_pending(&self) -> bool {
        !self.effects.is_empty()
    }

    /// Takes the effects produced so far, every [`Effect::KillRemnants`] first (so
    /// that a post-stop is never among what it kills), then every [`Effect::Spawn`]
    /// (otherwise in the order they arose).
    ///
    /// The runtime calls [`Jobs::spawned`] for each spawn as it executes it, and
    /// the events handled meanwhile may stop the instance again (`stop on
    /// starting …`). With the spawns first, every process decided gets its pid
    /// before anything else is acted on; until then the core keeps the instance
    /// where it is (pid 0 pending, see `blocked`) and never signals pid 0.
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
    /// and dropped once it has stopped. A changed `start on` starts over: what the
    /// old one had matched is forgotten (and those events are let go).
    /// A definition that did not change keeps its [`Def`] (and id).
    pub fn set_definitions(&mut self, defs: Vec<JobDef>) {
        let mut seen = std::collections::BTreeSet::new();
        for def in defs {
            seen.insert(def.name.clone());
            match self.jobs.get(&def.name) {
                Some(job) if *job.def == def => {
                    if let Some(job) = self.jobs.get_mut(&def.name) {
                        job.deleted = false;
                    }
                }
                Some(_) => {
                    let def = self.define(def);
                    if let Some(job) = self.jobs.get_mut(&def.name) {
                        if job.def.start_on != def.start_on || job.def.manual != def.manual {
                            self.index.0.forget(&mut job.start_on);
                        }
                        job.def = def;
                        job.deleted = false;
                    }
                }
                None => {
                    let def = self.define(def);
                    self.jobs.insert(
                        def.name.clone(),
                        Job {
                            def,
                            instances: BTreeMap::new(),
                            deleted: false,
                            start_on: Matched::default(),
                        },
                    );
                }
            }
        }
        // Expressions changed: which jobs an event concerns is worked out anew.
        self.index.0.invalidate();
        let gone: Vec<String> = self
            .jobs
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(job) = self.jobs.get_mut(&name) {
                job.deleted = true;
                self.index.0.forget(&mut job.start_on);
            }
            self.collect(&name);
        }
        self.poll();
    }

    /// `def` as a new shared definition, under the next id.
    fn define(&mut self, def: JobDef) -> Def {
        let id = self.next_def;
        self.next_def += 1;
        Def::new(id, def)
    }

    /// Every definition the state holds (the jobs' and their instances'), by id:
    /// what the saved definitions must contain for this state to load.
    pub fn live_definitions(&self) -> BTreeMap<DefId, Def> {
        let mut out = BTreeMap::new();
        for j in self.jobs.values() {
            out.insert(j.def.id(), j.def.clone());
            for i in j.instances.values() {
                out.entry(i.def.id()).or_insert_with(|| i.def.clone());
            }
        }
        out
    }

    /// How many definitions [`Jobs::live_definitions`] would give, without
    /// making them: each job's own, and the older ones instances still run.
    pub fn live_definition_count(&self) -> usize {
        let mut older = std::collections::BTreeSet::new();
        for j in self.jobs.values() {
            for i in j.instances.values() {
                if i.def.id() != j.def.id() {
                    older.insert(i.def.id());
                }
            }
        }
        self.jobs.len() + older.len()
    }

    /// The instance that `env` (a request's or the events' variables) names:
    /// `instance $TTY` expanded from the job's environment with `env` over it. An
    /// unknown variable is an error, as in Upstart (`Unknown parameter: TTY`).
    fn instance_of(&self, def: &JobDef, env: &[(String, String)]) -> Result<String, Refusal> {
        match &def.instance {
            None => Ok(String::new()),
            Some(template) => Ok(events::expand(
                template,
                &start_environment(&self.env_table, def, env),
            )?),
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
    ) -> Result<Option<InstanceStatus>, Refusal> {
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        let def = self.known_job(job)?.def.clone();
        let name = self.instance_of(&def, &env)?;
        let env = start_environment(&self.env_table, &def, &env);
        let started = self.start_instance(job, &name, &def, env, Vec::new(), waiter, now);
        self.poll();
        started?;
        Ok(self.status_of(job, &name))
    }

    /// Turns the goal of `job`'s instance `name` to start (creating it), with
    /// `env` for its next cycle and `blocking` the events that wait for it —
    /// Upstart's `job_class_start` and `job_class_induct_job` once the instance is
    /// known. Refused if its goal is start already.
    #[allow(clippy::too_many_arguments)]
    fn start_instance(
        &mut self,
        job: &str,
        name: &str,
        def: &Def,
        env: Vec<(String, String)>,
        blocking: Vec<EventId>,
        waiter: Option<WaiterId>,
        now: u64,
    ) -> Result<(), Refusal> {
        let j = self.known_job(job)?;
        let inst = j
            .instances
            .entry(name.to_string())
            .or_insert_with(|| Box::new(Instance::new(name, def.clone())));
        if inst.goal != Goal::Stop {
            return Err(Refusal::AlreadyStarted);
        }
        if inst.state == State::Waiting {
            // A fresh start takes the job's current definition.
            inst.def = def.clone();
        }
        inst.start_env = Some(env);
        // The failure of a cycle still stopping stays until `Starting` (Upstart):
        // its `stopping`/`stopped` events must still say `RESULT=failed`.
        inst.goal = Goal::Start;
        if let Some(id) = waiter {
            inst.waiters.push(Waiter {
                id,
                until: WaitFor::Started,
            });
        }
        // Events that waited for the previous goal are let go (`job_finished`).
        self.release(job, name, false);
        if let Some(inst) = self
            .jobs
            .get_mut(job)
            .and_then(|j| j.instances.get_mut(name))
        {
            self.index.0.block(inst, blocking);
        }
        self.advance(job, name, now);
        Ok(())
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
        let mut inst = Instance::new(instance, j.def.clone());
        inst.goal = Goal::Start;
        inst.state = State::Running;
        inst.env = start_environment(&self.env_table, &j.def, &[]);
        inst.pids.insert(ProcessKind::Main, pid);
        if let Some(old) = j.instances.insert(instance.to_string(), Box::new(inst)) {
            self.index.0.drop_instance(&old);
        }
        self.pids.insert(
            pid,
            (job.to_string(), instance.to_string(), ProcessKind::Main),
        );
        true
    }

    /// A stop request for the instance `env` selects; its pre-stop and post-stop
    /// see `env` too.
    pub fn stop(
        &mut self,
        job: &str,
        env: &[(String, String)],
        waiter: Option<WaiterId>,
        now: u64,
    ) -> Result<Option<InstanceStatus>, Refusal> {
        let name = self.select_instance(job, env)?;
        let inst = self
            .instance_mut(job, &name)
            .ok_or_else(|| unknown_instance(job, &name))?;
        if inst.goal == Goal::Stop {
            return Err(Refusal::AlreadyStopped);
        }
        inst.goal = Goal::Stop;
        inst.stop_env = env.to_vec();
        if let Some(id) = waiter {
            inst.waiters.push(Waiter {
                id,
                until: WaitFor::Stopped,
            });
        }
        self.release(job, &name, false);
        self.advance(job, &name, now);
        self.poll();
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
    ) -> Result<Option<InstanceStatus>, Refusal> {
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        let name = self.select_instance(job, env)?;
        let inst = self
            .instance_mut(job, &name)
            .ok_or_else(|| unknown_instance(job, &name))?;
        if inst.goal == Goal::Stop {
            return Err(Refusal::AlreadyStopped);
        }
        if let Some(id) = waiter {
            inst.waiters.push(Waiter {
                id,
                until: WaitFor::Started,
            });
        }
        if inst.state == State::Running {
            inst.goal = Goal::Respawn;
            inst.stop_env.clear();
            self.release(job, &name, false);
            self.enter(job, &name, State::Stopping, now);
            self.advance(job, &name, now);
            self.poll();
        }
        Ok(self.status_of(job, &name))
    }

    /// Stops everything for a power action; true once every instance is stopped.
    pub fn shutdown(&mut self, now: u64) -> bool {
        self.stop_all(now);
        self.poll();
        self.all_stopped()
    }

    /// Every goal to stop, and no start accepted any more.
    fn stop_all(&mut self, now: u64) {
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
            .instance(job, instance)
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
        self.poll();
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
        self.instance(&job, &instance)
            .is_some_and(|i| i.pids.get(&kind) == Some(&pid))
            .then_some((job, instance, kind))
    }

    /// Timers: SIGKILL after `kill timeout` (guarantees 6 and 7), the bounds of a
    /// power action. Also the start of a new round: events deferred by
    /// [`EVENTS_PER_ROUND`] are handled.
    pub fn tick(&mut self, now: u64) {
        self.now = self.now.max(now);
        self.handled = 0;
        self.power_tick(now);
        self.fold_unsettled();
        let mut kills = Vec::new();
        let mut overdue_hooks = Vec::new();
        // Looked at without `instance_mut` first: that marks a job changed, and
        // every changed job is saved again — each round would save every
        // unsettled instance (at a bring-up of 10,000, the whole state at each
        // batch of spawns).
        let due: Vec<(String, String)> = self
            .unsettled()
            .filter(|(_, _, inst)| inst.kill_deadline.is_some_and(|d| d <= now))
            .map(|(j, i, _)| (j.to_string(), i.to_string()))
            .collect();
        for (name, iname) in due {
            {
                let Some(inst) = self.instance_mut(&name, &iname) else {
                    continue;
                };
                let Some(kind) = awaited_process(inst.state)
                    .filter(|&k| k == ProcessKind::Main || hook_holds_a_stop(inst))
                else {
                    continue;
                };
                // A process still to be spawned (pid 0) is killed once it exists.
                let Some(&pid) = inst.pids.get(&kind).filter(|&&p| p > 0) else {
                    continue;
                };
                if inst.kill_deadline.is_some_and(|d| d <= now) {
                    inst.kill_deadline = None;
                    kills.push(pid);
                    // The hook has failed now, as its exit will say: what a failure
                    // of it does (`process_ended`) is done at once, so that nothing
                    // its failure lets go sees the instance as it was. A pre-stop
                    // whose stop a start has cancelled fails nothing.
                    let cancelled = inst.state == State::PreStop && inst.goal == Goal::Start;
                    if kind != ProcessKind::Main && !cancelled && inst.failure.is_none() {
                        if kind != ProcessKind::PreStop {
                            inst.goal = Goal::Stop;
                        }
                        inst.failure = Some(Failure {
                            process: kind,
                            status: Some(WaitStatus::signaled(Signal::KILL.0)),
                            reason: format!(
                                "{} process ({pid}) did not end within the kill timeout ({} s): killed",
                                kind.name(),
                                inst.def.kill_timeout
                            ),
                            respawn: false,
                        });
                        overdue_hooks.push((name.clone(), iname.clone()));
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
        // A failure fails the events waiting for the instance, and lets them go.
        for (job, instance) in overdue_hooks {
            self.release(&job, &instance, true);
        }
        // Readiness that never came fails the start; `expect daemon` whose child
        // settled without a second fork is taken as it is (and said so).
        let mut late = Vec::new();
        let mut forked_once = Vec::new();
        for (name, iname, inst) in self.unsettled() {
            let Some(r) = inst
                .readiness
                .as_ref()
                .filter(|_| inst.state == State::Spawned)
            else {
                continue;
            };
            if r.deadline <= now {
                late.push((name.to_string(), iname.to_string()));
            } else if inst.def.expect == Expect::Daemon
                && r.forks == 1
                && r.forked_at.saturating_add(SECOND_FORK_GRACE_MS) <= now
            {
                forked_once.push((name.to_string(), iname.to_string()));
            }
        }
        for (job, instance) in late {
            self.not_ready(&job, &instance, now);
        }
        for (job, instance) in forked_once {
            let pid = self.main_pid(&job, &instance).unwrap_or(0);
            let note = format!(
                "expect daemon, but the daemon forked only once (pid {pid}); expect fork would match"
            );
            self.ready(&job, &instance, Some(note), now);
        }
        self.poll();
    }

    /// The earliest timer deadline, for the runtime's timerfd.
    pub fn next_deadline(&self) -> Option<u64> {
        let power = self
            .power
            .as_ref()
            .filter(|p| !p.overdue)
            .map(|p| p.deadline);
        self.unsettled()
            .flat_map(|(_, _, i)| {
                let ready = i.readiness.as_ref().filter(|_| i.state == State::Spawned);
                let second_fork = ready
                    .filter(|r| i.def.expect == Expect::Daemon && r.forks == 1)
                    .map(|r| r.forked_at.saturating_add(SECOND_FORK_GRACE_MS));
                [i.kill_deadline, ready.map(|r| r.deadline), second_fork]
            })
            .flatten()
            .chain(power)
            .min()
    }

    fn main_pid(&self, job: &str, instance: &str) -> Option<i32> {
        self.instance(job, instance)?
            .pids
            .get(&ProcessKind::Main)
            .copied()
            .filter(|&p| p > 0)
    }

    /// Every instance waiting for its main process to be ready:
    /// `(job, instance, expect, main pid)`.
    /// Only main processes that have exec'd: before, a process is a copy of the
    /// supervisor (its fds, its name) and says nothing about the job.
    pub fn awaiting_readiness(&self) -> Vec<(String, String, Expect, i32)> {
        let mut out = Vec::new();
        for (name, iname, inst) in self.unsettled() {
            let execd = inst.readiness.as_ref().is_some_and(|r| r.execd);
            if inst.state != State::Spawned || !execd || inst.def.expect == Expect::None {
                continue;
            }
            if let Some(&pid) = inst.pids.get(&ProcessKind::Main).filter(|&&p| p > 0) {
                out.push((
                    name.to_string(),
                    iname.to_string(),
                    inst.def.expect.clone(),
                    pid,
                ));
            }
        }
        out
    }

    /// Main processes in `spawned` not yet known to have exec'd.
    pub fn awaiting_exec(&self) -> Vec<i32> {
        self.unsettled()
            .map(|(_, _, i)| i)
            .filter(|i| i.state == State::Spawned && i.readiness.as_ref().is_some_and(|r| !r.execd))
            .filter_map(|i| i.pids.get(&ProcessKind::Main).copied().filter(|&p| p > 0))
            .collect()
    }

    /// Process `pid` has exec'd its program (its error pipe closed without a
    /// report). For a main process in `spawned` without `expect`, that makes it
    /// ready; with `expect`, its readiness is awaited from now on.
    pub fn execd(&mut self, pid: i32, now: u64) {
        let Some((job, instance, ProcessKind::Main)) = self.pids.get(&pid).cloned() else {
            return;
        };
        let Some(inst) = self.instance_mut(&job, &instance) else {
            return;
        };
        let Some(r) = inst
            .readiness
            .as_mut()
            .filter(|_| inst.state == State::Spawned)
        else {
            return;
        };
        r.execd = true;
        if inst.def.expect == Expect::None {
            self.ready(&job, &instance, None, now);
        }
    }

    /// The main process is ready (it stopped itself, said `READY=1`, wrote its
    /// newline, listens, owns its bus name): the instance leaves `spawned` for
    /// post-start. For `expect stop`, the process gets its SIGCONT — after the state
    /// recording that it is ready is saved, as every effect is. `note` goes to status.
    pub fn ready(&mut self, job: &str, instance: &str, note: Option<String>, now: u64) {
        let Some(inst) = self.instance_mut(job, instance) else {
            return;
        };
        if inst.state != State::Spawned || inst.readiness.take().is_none() {
            return;
        }
        if note.is_some() {
            inst.status_text = note;
        }
        if inst.def.expect == Expect::Stop
            && let Some(&pid) = inst.pids.get(&ProcessKind::Main).filter(|&&p| p > 0)
        {
            self.effects.push(Effect::Kill {
                pid,
                signal: Signal::CONT,
            });
        }
        self.advance(job, instance, now);
        self.poll();
    }

    /// Readiness did not come in time: the start fails (no respawn: it would only
    /// wait again), the main process is killed, post-stop runs.
    fn not_ready(&mut self, job: &str, instance: &str, now: u64) {
        let pid = self.main_pid(job, instance).unwrap_or(0);
        let Some(inst) = self.instance_mut(job, instance) else {
            return;
        };
        let expect = inst.def.expect.describe().unwrap_or_default();
        let secs = inst.def.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT_S);
        let hint = match inst.def.expect {
            Expect::Fork | Expect::Daemon => "; does it fork as many times as it says?",
            Expect::Stop => "; it never stopped itself with SIGSTOP",
            _ => "",
        };
        let what = match inst.readiness.as_ref() {
            Some(r) if !r.execd => "had not exec'd its program after".to_string(),
            _ => "was not ready within".to_string(),
        };
        inst.readiness = None;
        let failed_before = inst.failure.is_some();
        inst.failure = Some(Failure {
            process: ProcessKind::Main,
            status: None,
            reason: if expect.is_empty() {
                format!("main process ({pid}) {what} {secs} s")
            } else {
                format!("main process ({pid}) {what} {secs} s ({expect}){hint}")
            },
            respawn: false,
        });
        inst.goal = Goal::Stop;
        // The events waiting for this start fail with it (`tick` polls after).
        if !failed_before {
            self.release(job, instance, true);
        }
        self.advance(job, instance, now);
    }

    /// Whether keel follows the forks of `pid`, a main process that just ended:
    /// the main of an `expect fork|daemon` instance, still awaited or already running
    /// (a daemon that forks more often than its `expect` says is still followed).
    pub fn follows_forks(&self, pid: i32) -> bool {
        let Some((job, instance, ProcessKind::Main)) = self.pids.get(&pid) else {
            return false;
        };
        self.instance(job, instance).is_some_and(|i| {
            i.def.expect.forks() > 0
                && i.goal != Goal::Stop
                && matches!(i.state, State::Spawned | State::PostStart | State::Running)
        })
    }

    /// The forking main process `pid` exited successfully and left `child` (the
    /// runtime found it in the instance's cgroup), `forks` forks away from it (2 when
    /// the runtime can tell an intermediate process came and went: `child` is then
    /// no session leader, and not in `pid`'s session). The child is the main process
    /// from now on. With as many forks as `expect` says, the job is ready; forks
    /// beyond them are followed too and reported in status.
    pub fn main_forked(&mut self, pid: i32, child: i32, forks: u8, now: u64) {
        let Some((job, instance, ProcessKind::Main)) = self.pids.remove(&pid) else {
            return;
        };
        self.pids
            .insert(child, (job.clone(), instance.clone(), ProcessKind::Main));
        let Some(inst) = self.instance_mut(&job, &instance) else {
            return;
        };
        inst.pids.insert(ProcessKind::Main, child);
        let needed = inst.def.expect.forks();
        let expect = inst.def.expect.describe().unwrap_or_default();
        let awaited = inst.state == State::Spawned;
        let total = match inst.readiness.as_mut().filter(|_| awaited) {
            Some(r) => {
                // It forked: it ran its program.
                r.execd = true;
                r.forks = r.forks.saturating_add(forks);
                r.forked_at = now;
                r.forks
            }
            None => needed.saturating_add(forks),
        };
        if total > needed {
            let better = if needed == 1 {
                "; expect daemon would match"
            } else {
                ""
            };
            inst.status_text = Some(format!(
                "{expect}, but the daemon forked {total} times: pid {pid} exited, following pid {child}{better}"
            ));
        }
        if awaited && total >= needed {
            self.ready(&job, &instance, None, now);
        }
    }

    /// sd_notify `MAINPID=`: `pid` (which the runtime checked belongs to the job) is
    /// the main process from now on.
    pub fn set_main_pid(&mut self, job: &str, instance: &str, pid: i32) {
        let Some(old) = self.main_pid(job, instance) else {
            return;
        };
        if old == pid {
            return;
        }
        self.pids.remove(&old);
        self.pids.insert(
            pid,
            (job.to_string(), instance.to_string(), ProcessKind::Main),
        );
        if let Some(inst) = self.instance_mut(job, instance) {
            inst.pids.insert(ProcessKind::Main, pid);
        }
    }

    /// What `status` shows beside the state (sd_notify `STATUS=`; `None` clears it).
    pub fn set_status_text(&mut self, job: &str, instance: &str, text: Option<String>) {
        if let Some(inst) = self.instance_mut(job, instance) {
            inst.status_text = text;
        }
    }

    /// After a load: the processes the saved state had decided to spawn but had
    /// no pid for yet (pid 0 pending — the runtime saves between batches of
    /// spawns) are spawned now, as [`Effect::Spawn`]s. A child the previous
    /// supervisor made for one of them was in a round never saved: it ends
    /// without exec (`spawn`), so each process still runs exactly once.
    pub fn resume(&mut self) {
        for (job, j) in &self.jobs {
            for (name, inst) in &j.instances {
                for (kind, _) in inst.pids.iter().filter(|(_, pid)| **pid == 0) {
                    self.effects.push(Effect::Spawn {
                        job: job.clone(),
                        instance: name.clone(),
                        kind: *kind,
                    });
                }
            }
        }
    }

    /// Drops client waiters (their connections died with a previous supervisor).
    /// What jobs and events wait for stays: it is not the clients'.
    /// Only the jobs that had waiters change (and are saved again).
    pub fn forget_waiters(&mut self) {
        let waited: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.instances.values().any(|i| !i.waiters.is_empty()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in waited {
            for inst in self
                .jobs
                .get_mut(&name)
                .into_iter()
                .flat_map(|j| j.instances.values_mut())
            {
                inst.waiters.clear();
            }
        }
        let waited: Vec<EventId> = self
            .events
            .values()
            .filter(|q| !q.waiters.is_empty())
            .map(|q| q.id)
            .collect();
        for id in waited {
            if let Some(q) = self.events.get_mut(&id) {
                q.waiters.clear();
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
        if awaited_process(inst.state) == Some(kind) {
            inst.kill_deadline = None;
        }
        let ok = status.is_some_and(WaitStatus::success);
        let never_ran = status.is_none();
        let failed_before = inst.failure.is_some();
        let mut respawning = false;
        // Upstart's `job_failed`: the first failure of a cycle is the one reported.
        let fail = |inst: &mut Instance| {
            if inst.failure.is_none() {
                inst.failure = Some(Failure {
                    process: kind,
                    status,
                    reason: reason.clone(),
                    respawn: false,
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
                        respawning = inst.goal == Goal::Respawn;
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
        // A failure fails the events waiting for this instance, and lets them go.
        let failed_now = !failed_before && inst.failure.is_some();
        if respawning {
            let shown = shown_instance(job, instance);
            self.effects
                .push(Effect::Info(format!("{shown}: {reason}; respawning")));
        }
        if failed_now {
            self.release(job, instance, true);
        }
        self.advance(job, instance, now);
        self.poll();
    }

    /// Moves the instance through every state it can pass now.
    fn advance(&mut self, job: &str, instance: &str, now: u64) {
        self.now = self.now.max(now);
        loop {
            let Some(inst) = self.instance_mut(job, instance) else {
                return;
            };
            if blocked(inst) {
                bound_hook(inst, now);
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
        // Each state's own process has its own bound (`Killed`, `bound_hook`).
        inst.kill_deadline = None;
        if state != State::Spawned {
            inst.readiness = None;
        }
        let spawn =
            |kind: ProcessKind, inst: &Instance| inst.def.process(kind).is_some().then_some(kind);
        let mut to_spawn = None;
        let mut event = None;
        let mut forgotten = Matched::default();
        // Whether the events that started or stopped it are let go now (Upstart's
        // `job_finished` on the way): it reached its goal.
        let mut release = false;
        match state {
            State::Starting => {
                if inst.goal == Goal::Respawn {
                    inst.goal = Goal::Start;
                }
                // A new cycle: the environment of the start that asked for it, and
                // the last cycle's failure has been reported.
                if let Some(env) = inst.start_env.take() {
                    inst.env = env;
                }
                inst.stop_env.clear();
                inst.failure = None;
                event = Some("starting");
            }
            State::Security => {}
            State::PreStart => to_spawn = spawn(ProcessKind::PreStart, inst),
            State::Spawned => {
                to_spawn = spawn(ProcessKind::Main, inst);
                // Not started until main has exec'd and, with `expect …`, is ready.
                if to_spawn.is_some() {
                    let secs = inst.def.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT_S);
                    inst.readiness = Some(Readiness {
                        deadline: now.saturating_add(u64::from(secs) * 1000),
                        forks: 0,
                        forked_at: now,
                        execd: false,
                    });
                }
                // A new main: what the last one said is void.
                inst.status_text = None;
            }
            State::PostStart => to_spawn = spawn(ProcessKind::PostStart, inst),
            // Back from pre-stop (a start cancelled the stop) is no new start:
            // no second `started` (Upstart's `job_change_state`).
            State::Running if from == State::PreStop => {
                inst.stop_env.clear();
                release = true;
            }
            State::Running => {
                event = Some("started");
                // A service has reached its goal; a task only once it has run.
                release = !inst.def.task;
            }
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
            State::Waiting => {
                event = Some("stopped");
                release = true;
                // Its `stop on` starts over with the next start.
                forgotten = std::mem::take(&mut inst.stop_on);
            }
        }
        self.index.0.unhold(forgotten.ids());
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
            let id = self.emit_job_event(job, instance, name);
            // `starting` and `stopping` hold the instance until they have finished:
            // what they start or stop comes first (Upstart's `job->blocker`).
            if matches!(state, State::Starting | State::Stopping)
                && let Some(inst) = self.instance_mut(job, instance)
            {
                inst.blocker = id;
            }
        }
        if release {
            self.release(job, instance, false);
        }
        match state {
            // A task's start returns once it has run (at `Waiting`), a service's here.
            // Guarantee 4: a start (of a service) is answered once running. A stop
            // cancelled by a start during pre-stop is answered too, as Upstart does
            // (the status says start/running).
            State::Running => {
                let task = self.instance(job, instance).is_some_and(|i| i.def.task);
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

    /// Queues the instance's own `starting`/`started`/`stopping`/`stopped` event
    /// with `JOB`, `INSTANCE`, for the stop events `RESULT` (and for a failure
    /// `PROCESS` and `EXIT_STATUS` or `EXIT_SIGNAL`), then the variables it
    /// `export`s (Upstart's `job_emit_event`).
    fn emit_job_event(&mut self, job: &str, instance: &str, name: &str) -> Option<EventId> {
        let inst = self.instance(job, instance)?;
        let mut env = vec![
            ("JOB".to_string(), job.to_string()),
            ("INSTANCE".to_string(), instance.to_string()),
        ];
        if matches!(name, "stopping" | "stopped") {
            match &inst.failure {
                Some(f) if f.respawn => {
                    env.push(("RESULT".into(), "failed".into()));
                    env.push(("PROCESS".into(), "respawn".into()));
                }
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
        for key in &inst.def.export {
            if let Some((k, v)) = inst.env.iter().find(|(k, _)| k == key)
                && !env.iter().any(|(e, _)| e == k)
            {
                env.push((k.clone(), v.clone()));
            }
        }
        Some(self.queue(Event {
            name: name.to_string(),
            env,
        }))
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
                    Some(Refusal::JobFailed(f.reason.clone()))
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
        let index = &mut self.index.0;
        let unsettled = &mut self.unsettled.0;
        j.instances.retain(|name, i| {
            let keep = i.state != State::Waiting
                || !i.waiters.is_empty()
                || (name.is_empty() && i.failure.is_some() && !j.deleted);
            if !keep {
                index.drop_instance(i);
                if unsettled.known.is_some() {
                    unsettled.touched.insert((job.to_string(), name.clone()));
                }
            }
            keep
        });
        if j.deleted && j.instances.is_empty() {
            index.unhold(j.start_on.ids());
            self.jobs.remove(job);
        }
    }

    fn known_job(&mut self, job: &str) -> Result<&mut Job, Refusal> {
        match self.jobs.get_mut(job) {
            Some(j) if !j.deleted => Ok(j),
            _ => Err(Refusal::UnknownJob(job.to_string())),
        }
    }

    /// The instance a stop/status/restart names: by its instance variables, or the
    /// only instance a job without `instance` has.
    fn select_instance(&self, job: &str, env: &[(String, String)]) -> Result<String, Refusal> {
        let j = self
            .jobs
            .get(job)
            .ok_or_else(|| Refusal::UnknownJob(job.to_string()))?;
        let name = self.instance_of(&j.def, env)?;
        if j.instances.contains_key(&name) {
            return Ok(name);
        }
        Err(unknown_instance(job, &name))
    }

    /// Every change of an instance goes through here: it is looked at again
    /// by the next `tick` (see [`Unsettled`]).
    fn instance_mut(&mut self, job: &str, instance: &str) -> Option<&mut Instance> {
        let inst = self.jobs.get_mut(job)?.instances.get_mut(instance)?;
        let unsettled = &mut self.unsettled.0;
        if unsettled.known.is_some() {
            unsettled
                .touched
                .insert((job.to_string(), instance.to_string()));
        }
        Some(&mut **inst)
    }

    /// The instances the per-round looks see, in the order of a full scan: the
    /// unsettled ones and those changed since the last `tick` (every instance
    /// until the first).
    fn unsettled(&self) -> Box<dyn Iterator<Item = (&str, &str, &Instance)> + '_> {
        let u = &self.unsettled.0;
        match &u.known {
            None => Box::new(every_instance(&self.jobs)),
            Some(known) => {
                #[cfg(debug_assertions)]
                for (name, j) in &self.jobs {
                    for (iname, inst) in &j.instances {
                        let key = (name.clone(), iname.clone());
                        debug_assert!(
                            !is_unsettled(inst) || known.contains(&key) || u.touched.contains(&key),
                            "{name} {iname:?} changed unseen"
                        );
                    }
                }
                Box::new(known.union(&u.touched).filter_map(|(name, iname)| {
                    let inst = self.jobs.get(name)?.instances.get(iname)?;
                    Some((name.as_str(), iname.as_str(), &**inst))
                }))
            }
        }
    }

    /// Looks again at the instances touched since the last fold (all of them the
    /// first time). In debug builds, checks the result against a full scan.
    fn fold_unsettled(&mut self) {
        let jobs = &self.jobs;
        let is = |(name, iname): &(String, String)| {
            jobs.get(name)
                .and_then(|j| j.instances.get(iname))
                .is_some_and(|i| is_unsettled(i))
        };
        let every_unsettled = || -> BTreeSet<(String, String)> {
            every_instance(jobs)
                .filter(|(_, _, i)| is_unsettled(i))
                .map(|(name, iname, _)| (name.to_string(), iname.to_string()))
                .collect()
        };
        let u = &mut self.unsettled.0;
        match &mut u.known {
            None => u.known = Some(every_unsettled()),
            Some(known) => {
                for key in std::mem::take(&mut u.touched) {
                    if is(&key) {
                        known.insert(key);
                    } else {
                        known.remove(&key);
                    }
                }
            }
        }
        u.touched.clear();
        debug_assert_eq!(
            u.known.as_ref(),
            Some(&every_unsettled()),
            "an instance changed unseen"
        );
    }

    /// Instance `instance` of job `job`.
    pub fn instance(&self, job: &str, instance: &str) -> Option<&Instance> {
        self.jobs.get(job)?.instances.get(instance).map(|i| &**i)
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
    ) -> Result<Vec<InstanceStatus>, Refusal> {
        let j = self
            .jobs
            .get(job)
            .ok_or_else(|| Refusal::UnknownJob(job.to_string()))?;
        if j.def.instance.is_some() && env.is_empty() {
            // Every instance; none running reads as the job stopped (Upstart).
            if j.instances.is_empty() {
                return Ok(vec![stopped_status(job, "")]);
            }
            return Ok(j.instances.values().map(|i| describe(job, i)).collect());
        }
        let name = self.instance_of(&j.def, env)?;
        match j.instances.get(&name) {
            Some(inst) => Ok(vec![describe(job, inst)]),
            None if j.def.instance.is_none() => Ok(vec![stopped_status(job, "")]),
            None => Err(unknown_instance(job, &name)),
        }
    }

    /// `list`: every job, every instance; a job without instances (also one with
    /// an `instance` stanza) as stop/waiting, as Upstart lists it.
    pub fn list(&self) -> Vec<InstanceStatus> {
        let mut out = Vec::new();
        for (name, j) in &self.jobs {
            if j.instances.is_empty() {
                out.push(stopped_status(name, ""));
            } else {
                out.extend(j.instances.values().map(|i| describe(name, i)));
            }
        }
        out
    }
}

fn unknown_instance(job: &str, instance: &str) -> Refusal {
    if instance.is_empty() {
        Refusal::AlreadyStopped
    } else {
        Refusal::UnknownInstance {
            job: job.to_string(),
            instance: instance.to_string(),
        }
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
        status_text: match (&inst.readiness, inst.def.expect.describe()) {
            (Some(_), Some(expect)) if inst.state == State::Spawned => {
                Some(format!("waiting until ready ({expect})"))
            }
            _ => inst.status_text.clone(),
        },
    }
}

/// Whether the instance must stay in its state: its own `starting`/`stopping`
/// event has not finished, or the process that belongs to the state has not.
fn blocked(inst: &Instance) -> bool {
    if inst.blocker.is_some() {
        return true;
    }
    let running = |k: ProcessKind| inst.pids.contains_key(&k);
    match inst.state {
        State::PreStart => running(ProcessKind::PreStart),
        // Main must exist (its pid known) before post-start and "running": a main
        // that cannot be spawned must fail the start, not answer it as started.
        // Readiness (`expect …`) holds it too, but only a start: a stop, or a
        // main that ended before it was ready and is to be respawned, leaves
        // `Spawned` as soon as main's pid is known.
        State::Spawned => {
            inst.pids.get(&ProcessKind::Main) == Some(&0)
                || (inst.readiness.is_some() && inst.goal == Goal::Start)
        }
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

/// The process a state waits for, whose end lets the instance go on.
fn awaited_process(state: State) -> Option<ProcessKind> {
    match state {
        State::PreStart => Some(ProcessKind::PreStart),
        State::PostStart => Some(ProcessKind::PostStart),
        State::PreStop => Some(ProcessKind::PreStop),
        State::Killed => Some(ProcessKind::Main),
        State::PostStop => Some(ProcessKind::PostStop),
        _ => None,
    }
}

/// Whether the process the instance's state awaits is a hook holding up a stop:
/// pre-stop and post-stop always belong to the way down; pre-start and post-start
/// once the goal is no longer start.
fn hook_holds_a_stop(inst: &Instance) -> bool {
    match inst.state {
        State::PreStart | State::PostStart => inst.goal != Goal::Start,
        State::PreStop | State::PostStop => true,
        _ => false,
    }
}

/// Guarantee 7: a hook that holds up a stop gets `kill timeout` to end, from the
/// moment it does (`tick` kills it then); one that serves a start again (a start
/// came back during pre-start or post-start) is no longer bounded.
fn bound_hook(inst: &mut Instance, now: u64) {
    let Some(hook) = awaited_process(inst.state).filter(|&k| k != ProcessKind::Main) else {
        return;
    };
    if !hook_holds_a_stop(inst) {
        inst.kill_deadline = None;
    } else if inst.pids.contains_key(&hook) && inst.kill_deadline.is_none() {
        inst.kill_deadline = Some(now.saturating_add(u64::from(inst.def.kill_timeout) * 1000));
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
        // Main ended (to be respawned) before it was ready: no post-start.
        (State::Spawned, Goal::Respawn) => State::Stopping,
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

/// `JOB` or `JOB (INSTANCE)`, as initctl shows an instance.
pub fn shown_instance(job: &str, instance: &str) -> String {
    if instance.is_empty() {
        job.to_string()
    } else {
        format!("{job} ({instance})")
    }
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
                    respawn: true,
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

/// Jobs' processes find their programs here unless the environment says otherwise.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The job-environment table as jobs see it: PATH and TERM by default, then
/// whatever `set-env` put there (`env KEY` without a value takes it from here too).
pub fn base_environment(table: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("TERM".into(), "linux".into()),
    ];
    for (k, v) in table {
        set_var(&mut vars, k, v);
    }
    vars
}

/// The environment an instance of `def` starts with (Upstart's
/// `job_class_environment` and what the start brings): the table, the job's `env`
/// defaults, then `extra` — a start request's `KEY=VALUE`, or the variables of the
/// events that started it with `UPSTART_EVENTS` — over them. Never the
/// supervisor's own environment.
pub fn start_environment(
    table: &BTreeMap<String, String>,
    def: &JobDef,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut vars = base_environment(table);
    for e in &def.env {
        if let Some(v) = &e.value {
            set_var(&mut vars, &e.key, v);
        }
    }
    for (k, v) in extra {
        set_var(&mut vars, k, v);
    }
    // Kept as long as the instance lives: no room left from growing.
    vars.shrink_to_fit();
    vars
}

/// The environment process `kind` of `job`'s instance runs with: the instance's,
/// for pre-stop and post-stop what stopped it, and `UPSTART_JOB` and
/// `UPSTART_INSTANCE` (Upstart's `job_process_run`). The one place that decides it.
/// `login` holds a `setuid` job's login variables (`HOME`, `USER`, `LOGNAME`,
/// `SHELL`, as a login sets them), which the job's own `env` still overrides.
pub fn process_environment(
    job: &str,
    inst: &Instance,
    kind: ProcessKind,
    login: &[(&str, &str)],
) -> Vec<String> {
    let mut vars = inst.env.clone();
    for (k, v) in login {
        if !inst.def.env.iter().any(|e| e.key == *k) {
            set_var(&mut vars, k, v);
        }
    }
    if matches!(kind, ProcessKind::PreStop | ProcessKind::PostStop) {
        for (k, v) in &inst.stop_env {
            set_var(&mut vars, k, v);
        }
    }
    set_var(&mut vars, "UPSTART_JOB", job);
    set_var(&mut vars, "UPSTART_INSTANCE", &inst.name);
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The runtime played without processes, for the core's unit tests: every spawn
/// gets the next pid and execs at once, or fails if `fails(job, instance, kind)`.
/// Returns every effect, in order, spawns included.
#[cfg(test)]
impl Jobs {
    pub(crate) fn play_runtime(
        &mut self,
        last_pid: &mut i32,
        now: u64,
        fails: impl Fn(&str, &str, ProcessKind) -> bool,
    ) -> Vec<Effect> {
        let mut seen = Vec::new();
        loop {
            let effects = self.take_effects();
            if effects.is_empty() {
                return seen;
            }
            for e in effects {
                if let Effect::Spawn {
                    job,
                    instance,
                    kind,
                } = &e
                {
                    if fails(job, instance, *kind) {
                        self.spawn_failed(job, instance, *kind, "cannot".into(), now);
                    } else {
                        *last_pid += 1;
                        self.spawned(job, instance, *kind, *last_pid);
                        // It execs at once (the runtime learns it from its error pipe).
                        self.execd(*last_pid, now);
                    }
                }
                seen.push(e);
            }
        }
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
