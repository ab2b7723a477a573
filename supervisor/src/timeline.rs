//! The boot timeline: for each instance's first start, when it was requested
//! (its `starting` event), when its main process was spawned, when it was
//! running (its `started` event, which for a job with `expect` is also when it
//! was ready), and why it started: the events of its start (`UPSTART_EVENTS`)
//! and, for a job event, the job it names (`JOB`). It watches the core's
//! effects and asks nothing of the system; times are the core's clock
//! (monotonic milliseconds since boot).
//!
//! Only first starts are kept (a respawn or a later restart adds nothing), at
//! most [`MAX_ENTRIES`] of them; beyond that a start is not recorded and the log
//! says so once. The timeline lives in this supervisor's memory: a supervisor
//! that restarts begins an empty one.

use crate::lifecycle::{Effect, Jobs};
use keel_proto::ctl::TimelineEntry;
use std::collections::BTreeMap;

/// The most instances a timeline records.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct Timeline {
    entries: Vec<TimelineEntry>,
    /// Index into `entries` by (job, instance).
    index: BTreeMap<(String, String), usize>,
    /// Whether a start went unrecorded because the timeline is full.
    full: bool,
}

impl Timeline {
    /// Notes what a batch of effects says of first starts, at `now`: the
    /// events first (a `starting` may come after its instance's spawn in one
    /// batch), then the spawns.
    pub fn observe(&mut self, effects: &[Effect], jobs: &Jobs, now: u64) {
        let (events, others): (Vec<&Effect>, Vec<&Effect>) =
            effects.iter().partition(|e| matches!(e, Effect::Emit(_)));
        for effect in events.into_iter().chain(others) {
            self.observe_one(effect, jobs, now);
        }
    }

    fn observe_one(&mut self, effect: &Effect, jobs: &Jobs, now: u64) {
        match effect {
            Effect::Emit(event) => {
                let (Some(job), Some(instance)) = (event.var("JOB"), event.var("INSTANCE")) else {
                    return;
                };
                let (job, instance) = (job.to_string(), instance.to_string());
                match event.name.as_str() {
                    "starting" => self.requested(jobs, job, instance, now),
                    "started" => {
                        if let Some(e) = self.entry(&job, &instance) {
                            e.running_ms.get_or_insert(now);
                        }
                    }
                    _ => {}
                }
            }
            Effect::Spawn {
                job,
                instance,
                kind: crate::job::ProcessKind::Main,
            } => {
                if let Some(e) = self.entry(job, instance) {
                    e.spawned_ms.get_or_insert(now);
                }
            }
            _ => {}
        }
    }

    fn requested(&mut self, jobs: &Jobs, job: String, instance: String, now: u64) {
        let key = (job, instance);
        if self.index.contains_key(&key) {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            if !self.full {
                tracing::warn!(
                    "the boot timeline is full ({MAX_ENTRIES} starts): later starts are not in it"
                );
                self.full = true;
            }
            return;
        }
        let env = jobs
            .instance(&key.0, &key.1)
            .map(|i| i.env().to_vec())
            .unwrap_or_default();
        let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let events = var("UPSTART_EVENTS")
            .map(|e| e.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push(TimelineEntry {
            job: key.0,
            instance: key.1,
            events,
            cause_job: var("JOB"),
            requested_ms: now,
            spawned_ms: None,
            running_ms: None,
        });
    }

    fn entry(&mut self, job: &str, instance: &str) -> Option<&mut TimelineEntry> {
        let i = *self.index.get(&(job.to_string(), instance.to_string()))?;
        self.entries.get_mut(i)
    }

    /// Every recorded start, in the order they were requested.
    pub fn entries(&self) -> &[TimelineEntry] {
        &self.entries
    }
}
