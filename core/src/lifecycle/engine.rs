//! The event engine of the lifecycle core, after Upstart 1.13's `init/event.c`,
//! `event_pending_handle_jobs`, `job_class_induct_job` and `job_finished`. Pure,
//! like the rest of the core, and all of its state is in [`Jobs`] (saved whole).
//!
//! An event is queued pending. Handling it (in queue order) offers it to every
//! instance's `stop on` and then to every job's `start on`; an expression that
//! becomes true stops the instance or starts one (`instance $VAR` names it from
//! the environment) and resets, and the instance holds the events that made it
//! true in `blocking`. A leaf that matched holds its event too, until its
//! expression is reset: a half-matched `and` keeps its event unfinished (as in
//! Upstart, `initctl emit` of it waits until the job starts). An event is
//! finished once nothing holds it any more: the instances waiting on it as their
//! `starting`/`stopping` event go on, the clients waiting for it are answered,
//! and a failed event `E` is followed by `E/failed`.
//!
//! An instance lets its events go when it reaches its goal (a service: running;
//! a task: stopped after its run; a stop: stopped), when a request turns its
//! goal around, and — marking them failed — when it fails.
//!
//! Cost: an event is offered only to the jobs its name concerns ([`Index`]:
//! event names match exactly, so a job whose expressions never name an event
//! can neither take it nor hold it), and the index counts what holds each event,
//! so whether anything still does is one look-up. Handling an event costs what
//! the jobs that wait for it cost, not what every job does.

use super::table::Tracked;
use super::*;
use std::collections::BTreeSet;

/// Where an event is in the queue: pending → handling → finished (Upstart's
/// `EventProgress`; a finished event leaves the queue in the same step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    /// Not yet matched against the jobs.
    Pending,
    /// Matched; waiting until nothing holds it any more.
    Handling,
}

/// One event in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub id: EventId,
    pub event: Event,
    pub progress: Progress,
    /// A job it started or stopped failed: `initctl emit` fails, and `NAME/failed`
    /// follows it.
    pub failed: bool,
    /// Clients waiting for it to finish (`initctl emit` without `--no-wait`).
    pub waiters: Vec<WaiterId>,
}

/// The event queue: a journal table by id (ids grow along the queue, so the
/// map's order is the queue's), saved as the sequence of its events, as the
/// queue always was (`VecDeque`): a round saves the events it changed, not the
/// thousands a bring-up queues.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EventQueue(pub(crate) Tracked<EventId, Queued>);

impl std::ops::Deref for EventQueue {
    type Target = Tracked<EventId, Queued>;
    fn deref(&self) -> &Tracked<EventId, Queued> {
        &self.0
    }
}

impl std::ops::DerefMut for EventQueue {
    fn deref_mut(&mut self) -> &mut Tracked<EventId, Queued> {
        &mut self.0
    }
}

impl EventQueue {
    /// The newest event, to change.
    fn newest_mut(&mut self) -> Option<&mut Queued> {
        let id = *self.0.keys().next_back()?;
        self.0.get_mut(&id)
    }
}

impl Serialize for EventQueue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if super::table::writing_head() {
            return s.collect_seq(std::iter::empty::<&Queued>());
        }
        s.collect_seq(self.0.values())
    }
}

impl<'de> Deserialize<'de> for EventQueue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventQueue, D::Error> {
        let queue = Vec::<Queued>::deserialize(d)?;
        // Saved in id order (a duplicate keeps the last).
        let mut tracked: Tracked<EventId, Queued> = queue.into_iter().map(|q| (q.id, q)).collect();
        tracked.take_changes();
        Ok(EventQueue(tracked))
    }
}

/// Most events the queue holds before a client's `emit` is refused.
pub const MAX_QUEUED_EVENTS: usize = 1024;

/// Most events handled between two [`Jobs::tick`]s (one round of the runtime):
/// jobs that start each other in a circle (`start on stopped a` for `a`, with a
/// process that cannot even be spawned) must not keep the supervisor from its
/// clients. The rest wait, pending and saved, for the next round.
pub const EVENTS_PER_ROUND: usize = 1000;

/// How long each phase of a power action may take, beyond the longest
/// `kill timeout` of any job: then the next phase begins regardless.
pub const POWER_GRACE_MS: u64 = 30_000;

impl Jobs {
    /// `initctl emit`, a relayed signal, `startup`, `runlevel`: queues `event` and
    /// handles what it can. With a `waiter`, an [`Effect::EventFinished`] answers
    /// once the event has finished.
    pub fn emit(
        &mut self,
        event: Event,
        waiter: Option<WaiterId>,
        now: u64,
    ) -> Result<(), Refusal> {
        if event.name.is_empty() {
            return Err(Refusal::EmptyEventName);
        }
        if event.env.iter().any(|(k, _)| k.is_empty()) {
            return Err(Refusal::NotKeyValue);
        }
        if self.events.len() >= MAX_QUEUED_EVENTS {
            return Err(Refusal::QueueFull {
                limit: MAX_QUEUED_EVENTS,
            });
        }
        self.now = self.now.max(now);
        self.queue(event);
        if let (Some(w), Some(q)) = (waiter, self.events.newest_mut()) {
            q.waiters.push(w);
        }
        self.poll();
        Ok(())
    }

    /// Whether events wait to be handled in a later round (the runtime then does
    /// not sleep).
    pub fn events_pending(&self) -> bool {
        self.events
            .values()
            .any(|q| q.progress == Progress::Pending)
    }

    /// Begins a power action with the `runlevel` event (`env`: `RUNLEVEL` and
    /// `PREVLEVEL`). False, changing nothing, if one is under way already.
    pub fn power(&mut self, action: PowerAction, env: Vec<(String, String)>, now: u64) -> bool {
        self.now = self.now.max(now);
        if self.power.is_some() {
            return false;
        }
        let id = self.queue(Event {
            name: "runlevel".into(),
            env,
        });
        self.power = Some(Power {
            action,
            event: Some(id),
            deadline: now.saturating_add(self.power_grace()),
            overdue: false,
        });
        self.poll();
        true
    }

    /// The power action to make now: its `runlevel` event has finished and every
    /// job has stopped (or the time for that is up).
    pub fn power_due(&self) -> Option<PowerAction> {
        self.power
            .as_ref()
            .filter(|p| p.event.is_none() && (p.overdue || self.all_stopped()))
            .map(|p| p.action)
    }

    /// The bounds of a power action's phases.
    pub(super) fn power_tick(&mut self, now: u64) {
        let Some(p) = self
            .power
            .as_mut()
            .filter(|p| !p.overdue && p.deadline <= now)
        else {
            return;
        };
        if p.event.is_some() {
            self.effects.push(Effect::Warn(
                "the runlevel event did not finish in time; stopping every job".into(),
            ));
            self.power_stop_all(now);
        } else {
            p.overdue = true;
            self.effects.push(Effect::Warn(
                "jobs did not stop in time; making the power action regardless".into(),
            ));
        }
    }

    /// The second phase: every job is stopped.
    fn power_stop_all(&mut self, now: u64) {
        let grace = self.power_grace();
        if let Some(p) = self.power.as_mut() {
            p.event = None;
            p.deadline = now.saturating_add(grace);
        }
        self.stop_all(now);
    }

    fn power_grace(&self) -> u64 {
        let longest = self
            .jobs
            .values()
            .flat_map(|j| std::iter::once(&j.def).chain(j.instances.values().map(|i| &i.def)))
            .map(|d| u64::from(d.kill_timeout) * 1000)
            .max()
            .unwrap_or(0);
        POWER_GRACE_MS.saturating_add(longest)
    }

    /// Puts `event` at the end of the queue, pending.
    pub(super) fn queue(&mut self, event: Event) -> EventId {
        let id = self.next_event;
        self.next_event += 1;
        self.effects.push(Effect::Emit(event.clone()));
        self.index.0.pending.insert(id);
        self.events.insert(
            id,
            Queued {
                id,
                event,
                progress: Progress::Pending,
                failed: false,
                waiters: Vec::new(),
            },
        );
        id
    }

    /// Handles pending events and finishes those nothing holds, until neither is
    /// left to do (Upstart's `event_poll`); at most [`EVENTS_PER_ROUND`] handled.
    ///
    /// Each pass goes along the queue as it was when the pass began, in id order,
    /// and the next pass begins if anything was done. A pass visits only the
    /// events that may need something — pending ones, and those whose last
    /// holder let go since they were last visited (the [`Index`]'s worklists) —
    /// since visiting any other does nothing: a pass costs what changed, not the
    /// length of the queue.
    pub(super) fn poll(&mut self) {
        if !self.index.0.valid {
            self.index.0 = Index::of(self);
        }
        loop {
            let mut again = false;
            let end = self.next_event;
            let mut from = 0;
            while let Some(id) = self.index.0.next_to_visit(from, end, self.handled) {
                from = id + 1;
                self.index.0.loose.remove(&id);
                let Some(q) = self.queued(id) else {
                    self.index.0.pending.remove(&id);
                    continue;
                };
                if q.progress == Progress::Pending {
                    if self.handled >= EVENTS_PER_ROUND {
                        continue;
                    }
                    self.handled += 1;
                    if let Some(q) = self.events.get_mut(&id) {
                        q.progress = Progress::Handling;
                    }
                    self.index.0.pending.remove(&id);
                    self.handle(id);
                    again = true;
                }
                if self.queued(id).is_some() && !self.is_held(id) {
                    self.finish(id);
                    again = true;
                }
            }
            if !again {
                break;
            }
        }
        // The worklists are an optimisation only: with few jobs, debug builds
        // check that a scan of the whole queue would find nothing left to do.
        debug_assert!(
            self.jobs.len() > 64
                || self.events.values().all(|q| match q.progress {
                    Progress::Pending => self.handled >= EVENTS_PER_ROUND,
                    Progress::Handling => self.index.0.holds.contains_key(&q.id),
                }),
            "poll left an event it could handle or finish"
        );
    }

    /// Event `id`, while it is queued.
    fn queued(&self, id: EventId) -> Option<&Queued> {
        self.events.get(&id)
    }

    /// Whether something holds event `id`: a leaf of an expression that matched
    /// it, or an instance it started or stopped (counted by the [`Index`]).
    fn is_held(&self, id: EventId) -> bool {
        let held = self.index.0.holds.contains_key(&id);
        // The count is an optimisation only: with few jobs, debug builds check
        // it against every job.
        debug_assert!(
            self.jobs.len() > 64
                || self.index.0.holds.get(&id).copied() == count_holds(self).get(&id).copied(),
            "event {id}: counted {:?} holders, there are {:?}",
            self.index.0.holds.get(&id),
            count_holds(self).get(&id)
        );
        held
    }

    /// Offers event `id` to every `stop on`, then to every `start on` (Upstart's
    /// `event_pending_handle_jobs`: stopping first, so an event both stops and
    /// starts a running job, which then restarts) — of the jobs its name concerns,
    /// in name order.
    fn handle(&mut self, id: EventId) {
        let Some(event) = self.queued(id).map(|q| q.event.clone()) else {
            return;
        };
        let names: Vec<String> = self.index.0.jobs(&event.name).to_vec();
        for job in names {
            let instances: Vec<String> = self
                .jobs
                .get(&job)
                .map(|j| j.instances.keys().cloned().collect())
                .unwrap_or_default();
            for name in instances {
                self.offer_stop(&job, &name, id, &event);
            }
            let Some(j) = self
                .jobs
                .get_mut(&job)
                .filter(|j| !j.deleted && !j.def.manual)
            else {
                continue;
            };
            let Some(expr) = &j.def.start_on else {
                continue;
            };
            let took = j.start_on.handle(expr, id, &event, &[]);
            self.index.0.hold(id, took);
            if took > 0 && j.start_on.value(expr) {
                self.induct(&job);
            }
        }
    }

    /// An instance's `stop on` takes the event; if that makes it true, the
    /// instance is stopped with the stop events' environment, holding them.
    fn offer_stop(&mut self, job: &str, name: &str, id: EventId, event: &Event) {
        let now = self.now;
        let Some(inst) = self
            .jobs
            .get_mut(job)
            .and_then(|j| j.instances.get_mut(name))
        else {
            return;
        };
        let Instance {
            def, stop_on, env, ..
        } = &mut **inst;
        let Some(expr) = &def.stop_on else {
            return;
        };
        let took = stop_on.handle(expr, id, event, env);
        self.index.0.hold(id, took);
        if !(took > 0 && stop_on.value(expr)) {
            return;
        }
        let ids = stop_on.active(expr);
        self.index.0.forget(stop_on);
        if inst.goal == Goal::Stop {
            return;
        }
        let stop_env = self.events_environment(&ids, "UPSTART_STOP_EVENTS");
        self.release(job, name, false);
        if let Some(inst) = self
            .jobs
            .get_mut(job)
            .and_then(|j| j.instances.get_mut(name))
        {
            inst.stop_env = stop_env;
            self.index.0.block(inst, ids);
            inst.goal = Goal::Stop;
        }
        self.advance(job, name, now);
    }

    /// `start on` became true: an instance (named from the environment) is started
    /// with the events' environment, holding them (`job_class_induct_job`).
    fn induct(&mut self, job: &str) {
        let now = self.now;
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        let def = j.def.clone();
        let Some(expr) = &def.start_on else {
            return;
        };
        let ids = j.start_on.active(expr);
        self.index.0.forget(&mut j.start_on);
        let events = self.events_environment(&ids, "UPSTART_EVENTS");
        let env = start_environment(&self.env_table, &def, &events);
        if self.shutting_down {
            return;
        }
        let name = match &def.instance {
            None => String::new(),
            Some(template) => match events::expand(template, &env) {
                Ok(name) => name,
                Err(e) => {
                    self.effects.push(Effect::Warn(format!(
                        "Failed to obtain {job} instance: {e}"
                    )));
                    return;
                }
            },
        };
        // Already started: the events do not wait for it.
        let _ = self.start_instance(job, &name, &def, env, ids, None, now);
    }

    /// The variables of events `ids`, in order (a later one's value wins), and
    /// `key` naming them, space-separated (`event_operator_environment`).
    fn events_environment(&self, ids: &[EventId], key: &str) -> Vec<(String, String)> {
        let mut env = Vec::new();
        let mut names = Vec::new();
        for q in ids.iter().filter_map(|id| self.queued(*id)) {
            for (k, v) in &q.event.env {
                set_var(&mut env, k, v);
            }
            names.push(q.event.name.as_str());
        }
        set_var(&mut env, key, &names.join(" "));
        env
    }

    /// The instance lets go of the events that started or stopped it, marking
    /// them failed if it failed (Upstart's `job_finished`).
    pub(super) fn release(&mut self, job: &str, instance: &str, failed: bool) {
        let Some(inst) = self.instance_mut(job, instance) else {
            return;
        };
        let ids = std::mem::take(&mut inst.blocking);
        self.index.0.unhold(ids.iter().copied());
        if failed {
            for id in ids {
                if let Some(q) = self.events.get_mut(&id) {
                    q.failed = true;
                }
            }
        }
    }

    /// Event `id` is finished (`event_finished`): it leaves the queue, the
    /// instances it held in `starting`/`stopping` go on, its clients are answered,
    /// `NAME/failed` follows a failed one, and a power action goes on to stop
    /// every job once its `runlevel` event is done.
    fn finish(&mut self, id: EventId) {
        let now = self.now;
        let Some(q) = self.events.remove(&id) else {
            return;
        };
        // (A bring-up queues an event per job: a map's nodes go with its
        // entries, so no room is left from it.)
        for waiter in &q.waiters {
            self.effects.push(Effect::EventFinished {
                waiter: *waiter,
                failed: q.failed,
            });
        }
        // An instance waits on its own `starting`/`stopping` event only, which
        // names it by `JOB` and `INSTANCE` (`emit_job_event`).
        let var = |key: &str| q.event.env.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let waiting: Option<(String, String)> = match (var("JOB"), var("INSTANCE")) {
            (Some(job), Some(name))
                if self
                    .instance(job, name)
                    .is_some_and(|i| i.blocker == Some(id)) =>
            {
                Some((job.clone(), name.clone()))
            }
            _ => None,
        };
        debug_assert!(
            self.jobs.len() > 64
                || waiting.iter().count()
                    == self
                        .jobs
                        .values()
                        .flat_map(|j| j.instances.values())
                        .filter(|i| i.blocker == Some(id))
                        .count(),
            "event {id}: an instance waits on it that it does not name"
        );
        if let Some((job, name)) = waiting {
            if let Some(inst) = self.instance_mut(&job, &name) {
                inst.blocker = None;
            }
            self.advance(&job, &name, now);
        }
        if q.failed && !q.event.name.ends_with("/failed") {
            self.queue(Event {
                name: format!("{}/failed", q.event.name),
                env: q.event.env,
            });
        }
        if self.power.as_ref().is_some_and(|p| p.event == Some(id)) {
            self.power_stop_all(now);
        }
    }
}

#[cfg(test)]
mod tests;

/// Which jobs each event name concerns: those whose `start on` or `stop on` —
/// the job's, or that of an instance still on an older definition — names it,
/// and those with an instance that an event of that name started or stopped.
/// Only these can take an event of the name or hold one (names match exactly),
/// so the engine asks no other job. Rebuilt when definitions change (and after a
/// load); between rebuilds every new holder is already in it: instances get the
/// job's current definition, and hold only events its expressions matched.
///
/// It also counts what holds each queued event (leaves that matched it and
/// instances it started or stopped): every place that takes or lets go of an
/// event tells it (`hold`, `block`, `forget`, `unhold`), and a rebuild counts
/// afresh.
///
/// Its worklists tell [`Jobs::poll`] which events to visit: the pending ones,
/// and the loose ones — those nothing may hold any more (their count fell to
/// none since `poll` last visited them). A rebuild puts every queued event on
/// them, so at worst `poll` visits one in vain.
#[derive(Clone, Debug, Default)]
pub(super) struct Index {
    valid: bool,
    /// Event name → job names, sorted.
    by_event: BTreeMap<String, Vec<String>>,
    /// Event → how many leaves and instances hold it (absent: none).
    holds: BTreeMap<EventId, u32>,
    /// Events queued and not yet handled.
    pending: BTreeSet<EventId>,
    /// Events whose last holder let go since `poll` last visited them.
    loose: BTreeSet<EventId>,
}

/// What holds each event, counted from every job (see [`Index`]).
fn count_holds(jobs: &Jobs) -> BTreeMap<EventId, u32> {
    let mut holds = BTreeMap::new();
    for j in jobs.jobs.values() {
        let mut ids: Vec<EventId> = j.start_on.ids().collect();
        for i in j.instances.values() {
            ids.extend(i.stop_on.ids().chain(i.blocking.iter().copied()));
        }
        for id in ids {
            *holds.entry(id).or_insert(0) += 1;
        }
    }
    holds
}

impl Index {
    fn of(jobs: &Jobs) -> Index {
        let mut by_event: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, j) in &jobs.jobs {
            let mut names: Vec<&str> = Vec::new();
            let mut exprs = vec![&j.def.start_on, &j.def.stop_on];
            for i in j.instances.values() {
                exprs.extend([&i.def.start_on, &i.def.stop_on]);
                names.extend(
                    i.blocking
                        .iter()
                        .filter_map(|id| jobs.queued(*id))
                        .map(|q| q.event.name.as_str()),
                );
            }
            for expr in exprs.into_iter().flatten() {
                names.extend(expr.leaves().into_iter().map(|m| m.name.as_str()));
            }
            names.sort_unstable();
            names.dedup();
            for event in names {
                by_event
                    .entry(event.to_string())
                    .or_default()
                    .push(name.clone());
            }
        }
        let queued = jobs.events.values();
        Index {
            valid: true,
            by_event,
            holds: count_holds(jobs),
            pending: queued
                .clone()
                .filter(|q| q.progress == Progress::Pending)
                .map(|q| q.id)
                .collect(),
            loose: queued.map(|q| q.id).collect(),
        }
    }

    /// The first event from `from` on, and before `end`, that [`Jobs::poll`]
    /// must visit: a loose one, or a pending one while this round may handle
    /// more (`handled` so far).
    fn next_to_visit(&self, from: EventId, end: EventId, handled: usize) -> Option<EventId> {
        let loose = self.loose.range(from..end).next();
        let pending = (handled < EVENTS_PER_ROUND)
            .then(|| self.pending.range(from..end).next())
            .flatten();
        loose.into_iter().chain(pending).min().copied()
    }

    /// To be rebuilt before the next event is handled.
    pub(super) fn invalidate(&mut self) {
        self.valid = false;
    }

    /// `n` more leaves hold event `id`.
    fn hold(&mut self, id: EventId, n: u32) {
        if n > 0 {
            *self.holds.entry(id).or_insert(0) += n;
        }
    }

    /// One holder less for each of `ids`.
    pub(super) fn unhold(&mut self, ids: impl IntoIterator<Item = EventId>) {
        for id in ids {
            if let Some(n) = self.holds.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    self.holds.remove(&id);
                    self.loose.insert(id);
                }
            }
        }
    }

    /// Forgets what `m` matched, and that it held those events
    /// (`event_operator_reset`).
    pub(super) fn forget(&mut self, m: &mut Matched) {
        self.unhold(m.ids());
        m.reset();
    }

    /// `ids` are the events that started or stopped `inst`, which holds them
    /// (in place of any it held before).
    pub(super) fn block(&mut self, inst: &mut Instance, ids: Vec<EventId>) {
        self.unhold(std::mem::take(&mut inst.blocking));
        for &id in &ids {
            self.hold(id, 1);
        }
        inst.blocking = ids;
    }

    /// An instance goes: nothing it held is held by it any more.
    pub(super) fn drop_instance(&mut self, inst: &Instance) {
        self.unhold(inst.stop_on.ids().chain(inst.blocking.iter().copied()));
    }

    /// The jobs an event named `event` concerns, in name order.
    fn jobs(&self, event: &str) -> &[String] {
        self.by_event.get(event).map_or(&[], Vec::as_slice)
    }
}
