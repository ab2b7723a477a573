//! Model-based test of the lifecycle core: random requests, exits, spawn failures
//! and timer ticks over a handful of job shapes, with a small driver that plays the
//! runtime (fresh fake pids for spawns, kills recorded, replies and events
//! collected). After every step the Upstart guarantees (DESIGN.md, invariant 4) are
//! checked; at the end everything is shut down and must drain completely.
//!
//! One job, `hook`, is driven by events only (`start on starting full`, `stop on
//! stopping full`), never by requests: `starting full` must hold `full` until
//! `hook` runs, and `stopping full` must hold full's main from its kill until
//! `hook` has stopped (or failed). At the end no event may be left in the queue.
//!
//! Two jobs await readiness: `ready` (`expect notify`, readied by `Op::Ready`) and
//! `daemon` (`expect daemon`, whose main forks by `Op::Fork`); neither may reach
//! post-start or running before it is ready, and both give up at a ready timeout.

use crate::job::{ExitMatch, Expect, JobDef, Process, ProcessKind, RespawnLimit, Signal, parse};
use crate::journal::{
    Definitions, Snapshot, Writer, decode_definitions, encode, encode_definitions, load,
};
use crate::lifecycle::{Effect, Event, Goal, Instance, Jobs, State, WaitStatus};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

type Key = (String, String);

fn exec() -> Option<Process> {
    Some(Process::Exec {
        command: "true".into(),
    })
}

/// The job shapes the model runs.
fn defs() -> Vec<JobDef> {
    let mut full = JobDef::new("full");
    full.pre_start = exec().map(Box::new);
    full.main = exec();
    full.post_start = exec().map(Box::new);
    full.pre_stop = exec().map(Box::new);
    full.post_stop = exec().map(Box::new);

    let mut plain = JobDef::new("plain");
    plain.main = exec();

    let mut task = JobDef::new("task");
    task.task = true;
    task.pre_start = exec().map(Box::new);
    task.main = exec();
    task.post_stop = exec().map(Box::new);

    let mut resp = JobDef::new("resp");
    resp.respawn = true;
    resp.respawn_limit = RespawnLimit::Limit {
        count: 2,
        interval: 1,
    };
    resp.main = exec();
    resp.post_start = exec().map(Box::new);
    resp.pre_stop = exec().map(Box::new);
    resp.post_stop = exec().map(Box::new);

    let mut norm = JobDef::new("norm");
    norm.respawn = true;
    norm.respawn_limit = RespawnLimit::Limit {
        count: 3,
        interval: 2,
    };
    norm.normal_exit = vec![ExitMatch::Status(3), ExitMatch::Signal(Signal::TERM)];
    norm.pre_start = exec().map(Box::new);
    norm.main = exec();
    norm.post_stop = exec().map(Box::new);

    let mut state = JobDef::new("state");
    state.pre_start = exec().map(Box::new);
    state.pre_stop = exec().map(Box::new);
    state.post_stop = exec().map(Box::new);

    let mut inst = JobDef::new("inst");
    inst.instance = Some("$X".into());
    inst.main = exec();
    inst.pre_stop = exec().map(Box::new);
    inst.post_stop = exec().map(Box::new);
    inst.kill_timeout = 2;

    let hook = parse(
        "hook",
        "start on starting full\nstop on stopping full\nexec true\npost-stop exec true\n",
    )
    .def
    .expect("hook parses");

    // Readiness: a notify job readied (or not) by `Op::Ready`, a daemon whose main
    // forks by `Op::Fork`; both give up after a ready timeout.
    let mut ready = JobDef::new("ready");
    ready.expect = Expect::Notify;
    ready.ready_timeout = Some(4);
    ready.main = exec();
    ready.post_start = exec().map(Box::new);
    ready.post_stop = exec().map(Box::new);

    let mut daemon = JobDef::new("daemon");
    daemon.expect = Expect::Daemon;
    daemon.ready_timeout = Some(4);
    daemon.respawn = true;
    daemon.main = exec();
    daemon.pre_stop = exec().map(Box::new);
    daemon.post_stop = exec().map(Box::new);

    vec![
        full, plain, task, resp, norm, state, inst, ready, daemon, hook,
    ]
}

/// The job only events start and stop.
const HOOK: &str = "hook";

const STATUSES: [fn() -> WaitStatus; 5] = [
    || WaitStatus::exited(0),
    || WaitStatus::exited(1),
    || WaitStatus::exited(3),
    || WaitStatus::signaled(9),
    || WaitStatus::signaled(15),
];

#[derive(Clone, Copy, Debug)]
enum Req {
    Start,
    Stop,
    Restart,
}

#[derive(Clone, Debug)]
enum Op {
    Request {
        req: Req,
        job: usize,
        inst: usize,
        wait: bool,
    },
    /// The `pick`th live process ends with `STATUSES[status]`.
    Exit {
        pick: usize,
        status: usize,
    },
    /// The `pick`th instance awaiting readiness is ready.
    Ready {
        pick: usize,
    },
    /// The `pick`th main process keel follows forks: it exits 0, a child is left.
    Fork {
        pick: usize,
    },
    /// The next spawn fails.
    FailNextSpawn,
    Tick {
        ms: u64,
    },
    /// Save and load the state; the loaded copy must behave identically.
    RoundTrip,
}

fn op() -> impl Strategy<Value = Op> {
    let req = prop_oneof![Just(Req::Start), Just(Req::Stop), Just(Req::Restart)];
    prop_oneof![
        4 => (req, 0..9usize, 0..2usize, any::<bool>())
            .prop_map(|(req, job, inst, wait)| Op::Request { req, job, inst, wait }),
        // Mostly clean exits, so that starts get as far as running.
        5 => (any::<usize>(), prop_oneof![3 => Just(0), 2 => 0..STATUSES.len()])
            .prop_map(|(pick, status)| Op::Exit { pick, status }),
        1 => any::<usize>().prop_map(|pick| Op::Ready { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Fork { pick }),
        1 => Just(Op::FailNextSpawn),
        2 => (0..3000u64).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::RoundTrip),
    ]
}

#[derive(Clone, Debug)]
struct RestartWatch {
    expect: Vec<&'static str>,
    at: usize,
}

#[derive(Clone, Debug, Default)]
struct Track {
    starting: u32,
    post_stops: u32,
    /// Pre-start exited 0 since the last main spawn.
    prestart_ok: bool,
    /// A stop request (or shutdown) is the reason the goal is stop.
    stop_req: bool,
    restart: Option<RestartWatch>,
    /// Main's pid when a start cancelled a stop during pre-stop.
    cancel_main: Option<i32>,
    /// Since the last main spawn: the job said it is ready, forks followed.
    ready_said: bool,
    forks: u32,
}

#[derive(Clone, Debug)]
struct WaiterInfo {
    key: Key,
    started: bool,
    answered: u32,
}

#[derive(Clone)]
struct Driver {
    jobs: Jobs,
    defs: BTreeMap<String, JobDef>,
    now: u64,
    next_pid: i32,
    fail_next: bool,
    next_waiter: u64,
    waiters: BTreeMap<u64, WaiterInfo>,
    track: BTreeMap<Key, Track>,
    killed: BTreeSet<i32>,
    /// Everything observable of the last step (for comparing a loaded copy).
    log: Vec<String>,
    /// Instances that reached `Waiting` (a `stopped` event) in this step.
    stopped_now: BTreeSet<Key>,
    replies: Vec<(u64, Key)>,
    /// Shutting everything down: `stopping full` no longer waits for `hook`,
    /// whose goal is stop already.
    draining: bool,
}

fn key_of(ev: &Event) -> Key {
    let get = |k: &str| {
        ev.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    (get("JOB"), get("INSTANCE"))
}

impl Driver {
    fn new() -> Driver {
        let mut jobs = Jobs::default();
        let defs = defs();
        jobs.set_definitions(defs.clone());
        Driver {
            jobs,
            defs: defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
            now: 1_000_000,
            next_pid: 100,
            fail_next: false,
            next_waiter: 1,
            waiters: BTreeMap::new(),
            track: BTreeMap::new(),
            killed: BTreeSet::new(),
            log: Vec::new(),
            stopped_now: BTreeSet::new(),
            replies: Vec::new(),
            draining: false,
        }
    }

    fn hook(&self) -> Option<&Instance> {
        self.inst(&(HOOK.to_string(), String::new()))
    }

    fn inst(&self, key: &Key) -> Option<&Instance> {
        self.jobs
            .jobs
            .get(&key.0)?
            .instances
            .get(&key.1)
            .map(|i| &**i)
    }

    fn state(&self, key: &Key) -> State {
        self.inst(key).map_or(State::Waiting, |i| i.state)
    }

    fn main_pid(&self, key: &Key) -> Option<i32> {
        self.inst(key)
            .and_then(|i| i.pids.get(&ProcessKind::Main).copied())
    }

    fn tr(&mut self, key: &Key) -> &mut Track {
        self.track.entry(key.clone()).or_default()
    }

    fn step(&mut self, op: &Op) {
        self.log.clear();
        self.stopped_now.clear();
        self.replies.clear();
        match *op {
            Op::Request {
                req,
                job,
                inst,
                wait,
            } => self.request(req, job, inst, wait),
            Op::Exit { pick, status } => {
                let live: Vec<i32> = self.jobs.pids.keys().copied().collect();
                if !live.is_empty() {
                    let pid = live[pick % live.len()];
                    self.exit(pid, STATUSES[status]());
                }
            }
            Op::Ready { pick } => {
                // What the runtime readies by a protocol (forks come by `Fork`).
                let awaiting: Vec<_> = self
                    .jobs
                    .awaiting_readiness()
                    .into_iter()
                    .filter(|(_, _, e, _)| *e == Expect::Notify)
                    .collect();
                if !awaiting.is_empty() {
                    let (job, inst, _, _) = awaiting[pick % awaiting.len()].clone();
                    self.tr(&(job.clone(), inst.clone())).ready_said = true;
                    self.log.push(format!("ready {job} {inst}"));
                    self.jobs.ready(&job, &inst, None, self.now);
                }
            }
            Op::Fork { pick } => {
                let followed: Vec<i32> = self
                    .jobs
                    .pids
                    .keys()
                    .copied()
                    .filter(|&p| self.jobs.follows_forks(p))
                    .collect();
                if !followed.is_empty() {
                    let pid = followed[pick % followed.len()];
                    let (job, inst, _) = self.jobs.pids[&pid].clone();
                    let child = self.next_pid;
                    self.next_pid += 1;
                    self.tr(&(job, inst)).forks += 1;
                    self.killed.remove(&pid);
                    self.log.push(format!("fork {pid} -> {child}"));
                    self.jobs.main_forked(pid, child, 1, self.now);
                }
            }
            Op::FailNextSpawn => self.fail_next = true,
            Op::Tick { ms } => self.tick(ms),
            Op::RoundTrip => {}
        }
        self.settle();
        self.check();
    }

    fn request(&mut self, req: Req, job: usize, inst: usize, wait: bool) {
        let name = self
            .defs
            .keys()
            .filter(|k| *k != HOOK)
            .nth(job)
            .unwrap()
            .clone();
        let instanced = self.defs[&name].instance.is_some();
        let env = if instanced {
            vec![("X".to_string(), ["a", "b"][inst].to_string())]
        } else {
            Vec::new()
        };
        let key = (
            name.clone(),
            if instanced { ["a", "b"][inst] } else { "" }.to_string(),
        );
        let waiter = wait.then(|| {
            let id = self.next_waiter;
            self.next_waiter += 1;
            let started = !matches!(req, Req::Stop);
            self.waiters.insert(
                id,
                WaiterInfo {
                    key: key.clone(),
                    started,
                    answered: 0,
                },
            );
            id
        });
        let before = self.inst(&key).cloned();
        let now = self.now;
        let result = match req {
            Req::Start => self.jobs.start(&name, env, waiter, now),
            Req::Stop => self.jobs.stop(&name, &env, waiter, now),
            Req::Restart => {
                // Guarantee 3: on a running instance, kill main → post-stop →
                // pre-start → main, and nothing else in between.
                if let Some(b) = before.as_ref().filter(|b| {
                    b.state == State::Running && b.goal == Goal::Start && !self.jobs.shutting_down
                }) {
                    let mut expect = Vec::new();
                    if b.pids.contains_key(&ProcessKind::Main) {
                        expect.push("kill");
                    }
                    for (kind, has) in [
                        ("post-stop", b.def.post_stop.is_some()),
                        ("pre-start", b.def.pre_start.is_some()),
                        ("main", b.def.main.is_some()),
                    ] {
                        if has {
                            expect.push(kind);
                        }
                    }
                    self.tr(&key).restart = Some(RestartWatch { expect, at: 0 });
                }
                self.jobs.restart(&name, &env, waiter, now)
            }
        };
        self.log.push(format!("{req:?} {key:?} -> {result:?}"));
        match (&result, req) {
            (Err(_), _) => {
                if let Some(id) = waiter {
                    self.waiters.remove(&id);
                }
                if matches!(req, Req::Restart) {
                    self.tr(&key).restart = None;
                }
            }
            (Ok(_), Req::Start) => {
                let t = self.tr(&key);
                t.stop_req = false;
                if before.as_ref().is_some_and(|b| b.state == State::PreStop) {
                    t.cancel_main = before.unwrap().pids.get(&ProcessKind::Main).copied();
                }
            }
            (Ok(_), Req::Stop) => {
                let t = self.tr(&key);
                t.stop_req = true;
                t.restart = None;
                t.cancel_main = None;
            }
            (Ok(_), Req::Restart) => {}
        }
    }

    fn exit(&mut self, pid: i32, status: WaitStatus) {
        let (job, inst, kind) = self.jobs.pids[&pid].clone();
        let key = (job, inst);
        if kind == ProcessKind::PreStart && status.success() {
            self.tr(&key).prestart_ok = true;
        }
        if !status.success() && kind != ProcessKind::Main && kind != ProcessKind::PreStop {
            // A failing helper legitimately changes a restart's course.
            self.tr(&key).restart = None;
        }
        if kind == ProcessKind::Main {
            self.tr(&key).cancel_main = None;
            // Main may end on its own while `stopping` holds a restart (here: until
            // `hook` has stopped): then there is nothing left to kill.
            if let Some(w) = &mut self.tr(&key).restart
                && w.at == 0
                && w.expect.first() == Some(&"kill")
            {
                w.expect.remove(0);
            }
        }
        self.killed.remove(&pid);
        self.log.push(format!("exit {pid} {status:?}"));
        self.jobs.exited(pid, status, self.now);
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
        // Guarantees 6 and 7: SIGKILL for every main killed, and every hook holding
        // up a stop, whose kill deadline passed.
        let awaited = |s: State| match s {
            State::Killed => Some(ProcessKind::Main),
            State::PreStart => Some(ProcessKind::PreStart),
            State::PostStart => Some(ProcessKind::PostStart),
            State::PreStop => Some(ProcessKind::PreStop),
            State::PostStop => Some(ProcessKind::PostStop),
            _ => None,
        };
        let due: Vec<i32> = self
            .jobs
            .jobs
            .values()
            .flat_map(|j| j.instances.values())
            .filter(|i| i.kill_deadline.is_some_and(|d| d <= self.now))
            .filter_map(|i| i.pids.get(&awaited(i.state)?).copied())
            .filter(|&pid| pid > 0)
            .collect();
        self.jobs.tick(self.now);
        let effects = self.jobs.take_effects();
        for pid in due {
            assert!(
                effects.contains(&Effect::Kill {
                    pid,
                    signal: Signal::KILL
                }),
                "no SIGKILL for {pid} after its kill timeout: {effects:?}"
            );
        }
        for e in effects {
            self.effect(e);
        }
    }

    /// Plays the runtime's `settle`.
    fn settle(&mut self) {
        loop {
            let effects = self.jobs.take_effects();
            if effects.is_empty() {
                break;
            }
            for e in effects {
                self.effect(e);
            }
        }
        for (id, key) in std::mem::take(&mut self.replies) {
            let info = self
                .waiters
                .get_mut(&id)
                .expect("reply to an unknown waiter");
            assert_eq!(info.key, key, "reply for the wrong instance");
            info.answered += 1;
            assert_eq!(info.answered, 1, "waiter {id} answered twice");
            let started = info.started;
            let st = self.state(&key);
            let stopped = self.stopped_now.contains(&key);
            let task = self.defs[&key.0].task;
            if started {
                // Guarantee 4: a start is answered once running (a task: once it
                // has run), or when it stopped instead.
                assert!(
                    stopped || (!task && st == State::Running),
                    "start of {key:?} answered in {st:?}"
                );
            } else {
                assert!(
                    stopped || st == State::Running,
                    "stop of {key:?} answered in {st:?}"
                );
            }
        }
    }

    fn effect(&mut self, e: Effect) {
        self.log.push(format!("{e:?}"));
        match e {
            // Runs before any spawn of its batch: a main that exists is at most one
            // decided in the same batch (pid 0), never a running one.
            Effect::KillRemnants { job, instance } => {
                let main = self
                    .jobs
                    .jobs
                    .get(&job)
                    .and_then(|j| j.instances.get(&instance))
                    .and_then(|i| i.pids.get(&ProcessKind::Main).copied());
                assert!(
                    main.is_none_or(|p| p == 0),
                    "remnants of {job} killed while its main {main:?} runs"
                );
            }
            Effect::Spawn {
                job,
                instance,
                kind,
            } => {
                let key = (job.clone(), instance.clone());
                self.on_spawn(&key, kind);
                if std::mem::take(&mut self.fail_next) {
                    self.tr(&key).restart = None;
                    self.jobs
                        .spawn_failed(&job, &instance, kind, "cannot".into(), self.now);
                } else {
                    let pid = self.next_pid;
                    self.next_pid += 1;
                    self.jobs.spawned(&job, &instance, kind, pid);
                    // Every process execs at once here (exec failures are spawn
                    // failures to the model).
                    self.jobs.execd(pid, self.now);
                }
            }
            Effect::Kill { pid, signal } => {
                let (job, inst, kind) = self
                    .jobs
                    .pids
                    .get(&pid)
                    .cloned()
                    .unwrap_or_else(|| panic!("kill of untracked pid {pid}"));
                if kind != ProcessKind::Main {
                    // Guarantee 7: a hook gets only SIGKILL, once it has held up a
                    // stop for the kill timeout, and only the one its state awaits.
                    // It has failed then (whatever exit the model gives it), which
                    // legitimately changes a restart's course.
                    let key = (job, inst);
                    self.tr(&key).restart = None;
                    let i = self.inst(&key).unwrap();
                    assert_eq!(signal, Signal::KILL, "{kind:?} {pid} signalled");
                    let holds_a_stop = match i.state {
                        State::PreStart | State::PostStart => i.goal != Goal::Start,
                        State::PreStop | State::PostStop => true,
                        _ => false,
                    };
                    assert!(
                        holds_a_stop,
                        "{kind:?} {pid} killed in {:?}/{:?}",
                        i.goal, i.state
                    );
                    assert_eq!(format!("{:?}", i.state), format!("{kind:?}"), "{pid}");
                    return;
                }
                // `stopping full` held full until `hook` stopped: its main is gone.
                if job == "full" && !self.draining {
                    assert!(
                        self.hook()
                            .is_none_or(|h| !h.pids.contains_key(&ProcessKind::Main)),
                        "full's main killed while hook's main runs: {:?}",
                        self.hook()
                    );
                }
                let key = (job, inst);
                let i = self.inst(&key).unwrap();
                // Guarantee 5: main is not killed while pre-stop runs.
                assert!(
                    !i.pids.contains_key(&ProcessKind::PreStop),
                    "main of {key:?} killed while pre-stop runs"
                );
                assert_eq!(i.state, State::Killed, "kill outside killed");
                if signal == Signal::KILL {
                    assert!(self.killed.contains(&pid), "SIGKILL before the kill signal");
                }
                self.killed.insert(pid);
                if let Some(w) = &mut self.tr(&key).restart
                    && w.at == 0
                    && w.expect.first() == Some(&"kill")
                {
                    w.at = 1;
                }
            }
            Effect::Reply {
                waiter,
                job,
                instance,
                ..
            } => self.replies.push((waiter, (job, instance))),
            Effect::Emit(ev) => {
                let key = key_of(&ev);
                match ev.name.as_str() {
                    "starting" => self.tr(&key).starting += 1,
                    "stopped" => {
                        self.stopped_now.insert(key);
                    }
                    _ => {}
                }
            }
            Effect::EventFinished { .. } | Effect::Warn(_) | Effect::Info(_) => {}
        }
    }

    fn on_spawn(&mut self, key: &Key, kind: ProcessKind) {
        let inst = self
            .inst(key)
            .expect("spawn for a missing instance")
            .clone();
        let def = &inst.def;
        assert!(def.process(kind).is_some(), "spawn of an undefined process");
        // `starting full` held full until `hook` ran (or failed, goal stop).
        if key.0 == "full" && kind == ProcessKind::PreStart && !self.draining {
            let hook = self.hook().map(|h| (h.goal, h.state));
            assert!(
                matches!(
                    hook,
                    Some((Goal::Start, State::Running)) | Some((Goal::Stop, _))
                ),
                "full's pre-start while hook is {hook:?}"
            );
        }
        match kind {
            ProcessKind::PreStart => self.tr(key).prestart_ok = false,
            ProcessKind::Main => {
                // Main never runs towards stop, and only after pre-start exited 0
                // in this cycle (guarantee 2).
                assert_ne!(
                    inst.goal,
                    Goal::Stop,
                    "main of {key:?} spawned with goal stop"
                );
                assert_eq!(inst.state, State::Spawned);
                if def.pre_start.is_some() {
                    assert!(
                        self.tr(key).prestart_ok,
                        "main of {key:?} spawned without a successful pre-start"
                    );
                }
                self.tr(key).prestart_ok = false;
                self.tr(key).ready_said = false;
                self.tr(key).forks = 0;
            }
            ProcessKind::PreStop => {
                // Guarantee 5: only on a stop request while main runs.
                let main = inst.pids.get(&ProcessKind::Main).copied();
                assert!(
                    main.is_some_and(|p| p > 0),
                    "pre-stop of {key:?} without main"
                );
                assert!(
                    self.tr(key).stop_req,
                    "pre-stop of {key:?} without a stop request"
                );
            }
            ProcessKind::PostStop => self.tr(key).post_stops += 1,
            // A job is not started (post-start, running) before it is ready.
            ProcessKind::PostStart => self.assert_ready(key, &inst),
        }
        if let Some(w) = &mut self.tr(key).restart {
            let name = kind.name();
            assert_eq!(
                w.expect.get(w.at),
                Some(&name),
                "restart of {key:?}: {name} out of order (expected {:?})",
                w.expect
            );
            w.at += 1;
            if w.at == w.expect.len() {
                self.tr(key).restart = None;
            }
        }
    }

    fn check(&mut self) {
        // The pid table and the instances agree; no spawn is left pending.
        for (pid, (job, inst, kind)) in &self.jobs.pids {
            let i = self.jobs.jobs[job]
                .instances
                .get(inst)
                .expect("pid of a gone instance");
            assert_eq!(i.pids.get(kind), Some(pid));
        }
        let keys: Vec<Key> = self.track.keys().cloned().collect();
        for j in self.jobs.jobs.values() {
            for i in j.instances.values() {
                for (kind, pid) in &i.pids {
                    assert!(*pid > 0, "{kind:?} of {} still pending", i.name);
                    assert!(self.jobs.pids.contains_key(pid));
                }
                // Guarantee 4: running only after post-start finished.
                if i.state == State::Running {
                    assert!(!i.pids.contains_key(&ProcessKind::PostStart));
                }
                // Readiness holds `spawned` until it comes (or the stop).
                if matches!(i.state, State::PostStart | State::Running) && i.goal != Goal::Stop {
                    let key = (i.def.name.clone(), i.name.clone());
                    self.assert_ready(&key, i);
                }
            }
        }
        for key in keys {
            let st = self.state(&key);
            let has_post_stop = self.defs[&key.0].post_stop.is_some();
            let main = self.main_pid(&key);
            let t = self.tr(&key).clone();
            // Guarantee 1: one post-stop for every start, by the time it waits.
            if has_post_stop {
                assert!(
                    t.post_stops <= t.starting && t.starting - t.post_stops <= 1,
                    "{key:?}: {} starts, {} post-stops",
                    t.starting,
                    t.post_stops
                );
                if st == State::Waiting {
                    assert_eq!(t.starting, t.post_stops, "{key:?} waits without post-stop");
                }
            }
            // Guarantee 3 must have run its course by the time it waits.
            if st == State::Waiting {
                assert!(t.restart.is_none(), "restart of {key:?} ended early: {t:?}");
            }
            // Guarantee 5: a start during pre-stop returns to running, same main.
            if let Some(pid) = t.cancel_main {
                match st {
                    State::PreStop => {}
                    State::Running => {
                        assert_eq!(main, Some(pid), "{key:?} back to running with another main");
                        self.tr(&key).cancel_main = None;
                    }
                    _ => panic!("{key:?}: a start during pre-stop led to {st:?}"),
                }
            }
            // Guarantee 6: killed lasts until main's exit is seen.
            if let Some(pid) = main
                && self.killed.contains(&pid)
            {
                assert_eq!(st, State::Killed, "{key:?} left killed with main alive");
            }
        }
    }

    /// An `expect` job past `spawned` was ready: said so, forked enough, or (an
    /// `expect daemon` that forked once) was taken as it was, with a note.
    fn assert_ready(&self, key: &Key, i: &Instance) {
        let t = self.track.get(key).cloned().unwrap_or_default();
        let ok = match i.def.expect {
            Expect::Notify => t.ready_said,
            Expect::Daemon => {
                t.forks >= 2
                    || (t.forks == 1
                        && i.status_text
                            .as_deref()
                            .is_some_and(|s| s.contains("forked only once")))
            }
            _ => true,
        };
        assert!(ok, "{key:?} in {:?} but never ready: {t:?}", i.state);
    }

    /// Shuts everything down, every process eventually ends; nothing may remain.
    fn drain(&mut self) {
        self.draining = true;
        self.log.clear();
        self.stopped_now.clear();
        for t in self.track.values_mut() {
            t.stop_req = true;
            t.restart = None;
            t.cancel_main = None;
        }
        self.jobs.shutdown(self.now);
        self.settle();
        self.check();
        for round in 0..500 {
            if self.jobs.all_stopped() {
                break;
            }
            self.stopped_now.clear();
            if round % 3 == 2 {
                self.tick(6000);
            } else if let Some(&pid) = self.jobs.pids.keys().next() {
                let status = if self.killed.contains(&pid) {
                    WaitStatus::signaled(15)
                } else {
                    WaitStatus::exited(0)
                };
                self.exit(pid, status);
            }
            self.settle();
            self.check();
        }
        assert!(self.jobs.all_stopped(), "not stopped after draining");
        assert!(self.jobs.pids.is_empty(), "pids left: {:?}", self.jobs.pids);
        assert!(
            self.jobs.events.is_empty(),
            "events never finished: {:?}",
            self.jobs.events
        );
        for j in self.jobs.jobs.values() {
            for i in j.instances.values() {
                assert_eq!(i.state, State::Waiting);
                assert!(i.pids.is_empty());
            }
        }
        for (id, w) in &self.waiters {
            assert_eq!(
                w.answered, 1,
                "waiter {id} ({w:?}) answered {} times",
                w.answered
            );
        }
    }
}

fn same_state(a: &Jobs, b: &Jobs) {
    assert_eq!(a.jobs, b.jobs);
    assert_eq!(a.pids, b.pids);
    assert_eq!(a.shutting_down, b.shutting_down);
    assert_eq!(a.events, b.events);
    assert_eq!(a.next_event, b.next_event);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn lifecycle_keeps_upstarts_guarantees(ops in prop::collection::vec(op(), 1..60)) {
        let mut d = Driver::new();
        let mut shadow: Option<Driver> = None;
        // The journal as saved so far: writer, base, log, and every definition
        // they name.
        let mut saved: Option<(Writer, Vec<u8>, Vec<u8>, Definitions)> = None;
        for (trip, op) in ops.iter().enumerate() {
            if let Op::RoundTrip = op {
                // The driver's own jobs, so that the changes noted since the last
                // round are what this one writes.
                let mut snap: Snapshot = Snapshot { jobs: std::mem::take(&mut d.jobs), last_exit_seq: 7, booted: true, ..Snapshot::default() };
                match &mut saved {
                    // Every third trip compacts, so both paths are taken.
                    Some((writer, _, log, defs)) if trip % 3 != 0 => {
                        let round = writer.round(&mut snap).unwrap();
                        writer.appended(round.len());
                        log.extend_from_slice(&round);
                        defs.extend(snap.jobs.live_definitions());
                    }
                    _ => {
                        let (writer, base, log) = Writer::compact(&mut snap, trip as u64).unwrap();
                        saved = Some((writer, base, log, snap.jobs.live_definitions()));
                    }
                }
                prop_assert_eq!(snap.jobs.live_definition_count(), snap.jobs.live_definitions().len());
                let Some((_, base, log, defs)) = &saved else { unreachable!() };
                let defs = decode_definitions(&encode_definitions(defs).unwrap())
                    .expect("the definitions load back");
                let loaded: Snapshot = load(base, Some(log), &defs).expect("the state loads back").snapshot;
                prop_assert_eq!(encode(&loaded).unwrap(), encode(&snap).unwrap(), "base + log is not the whole state");
                d.jobs = snap.jobs;
                same_state(&loaded.jobs, &d.jobs);
                let mut copy = d.clone();
                copy.jobs = loaded.jobs;
                shadow = Some(copy);
                continue;
            }
            d.step(op);
            if let Some(mut s) = shadow.take() {
                s.step(op);
                prop_assert_eq!(&s.log, &d.log, "the loaded state behaves differently");
                same_state(&s.jobs, &d.jobs);
            }
        }
        d.drain();
    }
}

/// A start during pre-stop, step by step (also a check that the model's own
/// bookkeeping sees it).
#[test]
fn start_during_pre_stop_keeps_main() {
    let mut d = Driver::new();
    let inst = d
        .defs
        .keys()
        .filter(|k| *k != HOOK)
        .position(|k| k == "inst")
        .unwrap();
    let req = |req| Op::Request {
        req,
        job: inst,
        inst: 0,
        wait: true,
    };
    d.step(&req(Req::Start));
    let key = ("inst".to_string(), "a".to_string());
    assert_eq!(d.state(&key), State::Running);
    let main = d.main_pid(&key);
    d.step(&req(Req::Stop));
    assert_eq!(d.state(&key), State::PreStop);
    d.step(&req(Req::Start));
    assert!(d.tr(&key).cancel_main.is_some());
    let pre_stop = d.inst(&key).unwrap().pids[&ProcessKind::PreStop];
    d.exit(pre_stop, WaitStatus::exited(0));
    d.settle();
    d.check();
    assert_eq!(d.state(&key), State::Running);
    assert_eq!(d.main_pid(&key), main);
    d.drain();
}
