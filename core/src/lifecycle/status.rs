//! The core's own words for where an instance is: its goal and state (saved with
//! it), the power action under way (saved too), and what `status` and `list`
//! report. They mirror the control protocol's types variant for variant, but are
//! not them: the shell converts at its edge (`keel_supervisor::answer`), so the
//! saved format and the protocol can change apart. Their serde shape is the saved
//! format's: variants are never reordered, only added at the end.

use serde::{Deserialize, Serialize};

/// A job's goal, in Upstart's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Goal {
    Start,
    Stop,
    /// Respawning: the main process is being restarted (Upstart's `respawn` goal).
    Respawn,
}

impl Goal {
    pub fn name(self) -> &'static str {
        match self {
            Goal::Start => "start",
            Goal::Stop => "stop",
            Goal::Respawn => "respawn",
        }
    }
}

/// Upstart's job states, in the order an instance goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    Waiting,
    Starting,
    Security,
    PreStart,
    Spawned,
    PostStart,
    Running,
    PreStop,
    Stopping,
    Killed,
    PostStop,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Security => "security",
            State::PreStart => "pre-start",
            State::Spawned => "spawned",
            State::PostStart => "post-start",
            State::Running => "running",
            State::PreStop => "pre-stop",
            State::Stopping => "stopping",
            State::Killed => "killed",
            State::PostStop => "post-stop",
        }
    }
}

/// What the machine does once every job has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerAction {
    PowerOff,
    Reboot,
    Halt,
}

/// One running process of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `main`, `pre-start`, `post-start`, `pre-stop` or `post-stop`.
    pub kind: String,
    pub pid: i32,
}

/// What `status` and `list` say of one job instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceStatus {
    pub job: String,
    /// Empty for a job's single instance.
    pub instance: String,
    pub goal: Goal,
    pub state: State,
    /// Processes in the order Upstart prints them: main first.
    pub processes: Vec<ProcessInfo>,
    /// Why the last start failed or the job stopped, if it did not end normally.
    pub failure: Option<String>,
    /// Free text the job reported about itself (sd_notify `STATUS=`).
    pub status_text: Option<String>,
}
