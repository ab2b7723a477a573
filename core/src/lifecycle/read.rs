//! What the shell may read of the core's state. `Jobs` keeps its fields private:
//! the runtime looks through these accessors (shared references only) and
//! changes anything solely through the core's inputs.

use super::*;

/// Who a tracked process is: its job, instance and process kind.
pub type Owner = (String, String, ProcessKind);

impl Jobs {
    /// Job `name`, also one whose file was removed (`deleted`) while an instance
    /// of it still runs.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.get(name)
    }

    /// How many jobs there are, removed ones still running included.
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// The definitions of every job that is not deleted.
    pub fn definitions(&self) -> impl Iterator<Item = &JobDef> + Clone {
        self.jobs.values().filter(|j| !j.deleted).map(|j| &*j.def)
    }

    /// Every instance, in order of (job, instance name): for walking beside
    /// another sorted list without a lookup per entry.
    pub fn instances(&self) -> impl Iterator<Item = (&str, &str, &Instance)> {
        every_instance(&self.jobs)
    }

    /// The jobs changed (or gone) since the state was last saved whole or in a
    /// round of the journal (every job of a state never saved).
    pub fn changed_jobs(&self) -> impl Iterator<Item = &String> {
        self.jobs.changed_keys()
    }

    /// Whose process `pid` is, if it is a tracked one.
    pub fn owner_of(&self, pid: i32) -> Option<&Owner> {
        self.pids.get(&pid)
    }

    /// Every tracked process (pid 0: decided, not yet spawned).
    pub fn tracked(&self) -> impl Iterator<Item = (i32, &Owner)> {
        self.pids.iter().map(|(pid, owner)| (*pid, owner))
    }

    /// The id the next new definition gets: it moves whenever definitions are
    /// added, which is when the shell saves them again.
    pub fn next_def(&self) -> DefId {
        self.next_def
    }

    /// Whether a power action is under way.
    pub fn powering(&self) -> bool {
        self.power.is_some()
    }

    /// The event queue, oldest first.
    pub fn events_queued(&self) -> impl Iterator<Item = &Queued> {
        self.events.values()
    }

    /// `usage JOB`: the job's `usage` text.
    pub fn usage(&self, job: &str) -> Result<String, Refusal> {
        self.jobs
            .get(job)
            .filter(|j| !j.deleted)
            .map(|j| j.def.usage.clone().unwrap_or_default())
            .ok_or_else(|| Refusal::UnknownJob(job.to_string()))
    }
}

/// An instance's fields are the core's too; the shell reads these.
impl Instance {
    /// The definition this instance runs (its job's, as of its start).
    pub fn def(&self) -> &Def {
        &self.def
    }

    pub fn goal(&self) -> Goal {
        self.goal
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The environment its processes get.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Its running process of `kind`.
    pub fn pid(&self, kind: ProcessKind) -> Option<i32> {
        self.pids.get(&kind).copied()
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }
}

/// A job's fields are the core's; the shell reads these.
impl Job {
    /// The job's current definition.
    pub fn def(&self) -> &Def {
        &self.def
    }

    /// How far its `start on` has got.
    pub fn start_on(&self) -> &Matched {
        &self.start_on
    }

    /// Its instance `name` (`""`: the only one of a job without `instance`).
    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.get(name).map(|i| &**i)
    }
}
