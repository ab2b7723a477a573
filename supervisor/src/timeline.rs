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

/// The most instances a timeline records.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct Timeline {
    /// Grown by an eighth at a time: at 10,000 starts a vector doubled would
    /// hold room for 6,000 more.
    entries: Vec<TimelineEntry>,
    /// Positions in `entries`, sorted by (job, instance): the index costs four
    /// bytes an entry, and the names are not kept twice.
    index: Vec<u32>,
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
        let Err(at) = self.find(&job, &instance) else {
            return;
        };
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
            .instance(&job, &instance)
            .map(|i| i.env().to_vec())
            .unwrap_or_default();
        let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let events = var("UPSTART_EVENTS")
            .map(|e| e.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact(self.entries.len() / 8 + 16);
        }
        self.index.insert(at, self.entries.len() as u32);
        self.entries.push(TimelineEntry {
            job,
            instance,
            events,
            cause_job: var("JOB"),
            requested_ms: now,
            spawned_ms: None,
            running_ms: None,
        });
    }

    fn entry(&mut self, job: &str, instance: &str) -> Option<&mut TimelineEntry> {
        let at = self.find(job, instance).ok()?;
        self.entries.get_mut(self.index[at] as usize)
    }

    /// Where (job, instance) is in the index: `Ok` if recorded, else where it
    /// would go.
    fn find(&self, job: &str, instance: &str) -> Result<usize, usize> {
        self.index.binary_search_by(|&i| {
            let e = &self.entries[i as usize];
            (e.job.as_str(), e.instance.as_str()).cmp(&(job, instance))
        })
    }

    /// Every recorded start, in the order they were requested.
    pub fn entries(&self) -> &[TimelineEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ProcessKind;
    use crate::lifecycle::Event;

    fn starting(job: &str, instance: &str) -> Effect {
        Effect::Emit(Event::new(
            "starting",
            &[("JOB", job), ("INSTANCE", instance)],
        ))
    }

    fn spawn(job: &str, instance: &str) -> Effect {
        Effect::Spawn {
            job: job.into(),
            instance: instance.into(),
            kind: ProcessKind::Main,
        }
    }

    #[test]
    fn each_start_is_found_by_job_and_instance_whatever_the_order_they_came_in() {
        let jobs = Jobs::default();
        let mut t = Timeline::default();
        let starts = [("z", ""), ("a", "2"), ("m", ""), ("a", "1"), ("a", "")];
        for (n, (job, instance)) in starts.iter().enumerate() {
            t.observe(&[starting(job, instance)], &jobs, n as u64);
        }
        // Spawned in the reverse order, each at its own time; a second
        // `starting` of one already recorded adds nothing.
        for (n, (job, instance)) in starts.iter().enumerate().rev() {
            t.observe(&[spawn(job, instance)], &jobs, 100 + n as u64);
        }
        t.observe(&[starting("m", "")], &jobs, 200);
        let seen: Vec<(&str, &str, u64, Option<u64>)> = t
            .entries()
            .iter()
            .map(|e| {
                (
                    e.job.as_str(),
                    e.instance.as_str(),
                    e.requested_ms,
                    e.spawned_ms,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("z", "", 0, Some(100)),
                ("a", "2", 1, Some(101)),
                ("m", "", 2, Some(102)),
                ("a", "1", 3, Some(103)),
                ("a", "", 4, Some(104)),
            ]
        );
    }
}
