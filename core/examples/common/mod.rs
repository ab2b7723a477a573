//! What the examples share: the runtime played in memory.

use keel_core::lifecycle::{Effect, Jobs};

/// Carries out the spawns the core asks for, each exec'd at once (pids from
/// `pid` up), until it asks for nothing more and no event is left to handle.
pub fn run_effects(jobs: &mut Jobs, pid: &mut i32) {
    loop {
        let effects = jobs.take_effects();
        if effects.is_empty() && jobs.events_queued().next().is_none() {
            return;
        }
        for e in effects {
            if let Effect::Spawn {
                job,
                instance,
                kind,
            } = e
            {
                *pid += 1;
                jobs.spawned(&job, &instance, kind, *pid);
                jobs.execd(*pid, 0);
            }
        }
        jobs.tick(0);
    }
}
