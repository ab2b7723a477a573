//! The control protocol: initctl ⇄ keel-supervisor.
//!
//! A `SOCK_STREAM` unix socket (default [`DEFAULT_SOCKET`]) carrying frames (see
//! [`crate::frame`]). The client speaks first with [`ClientHello`]; the server answers
//! [`ServerHello`]. These two never change shape, so any two versions can tell each
//! other apart. Then the client sends [`Request`]s and reads one [`Response`] each.
//!
//! The peer is authorised from `SO_PEERCRED`, never from anything it sends.

use serde::{Deserialize, Serialize};
use std::string::String;
use std::vec::Vec;

pub use crate::init::PowerAction;

/// The version of the control protocol.
pub const VERSION: u32 = 2;

/// The first bytes of every hello, to tell keel from something else on the socket.
pub const MAGIC: [u8; 4] = *b"keel";

/// Where the supervisor listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/keel/control";

/// The environment variable that overrides the socket path (for initctl).
pub const SOCKET_ENV: &str = "KEEL_SOCKET";

/// The client's first frame. Its shape is frozen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub magic: [u8; 4],
    pub version: u32,
}

/// The server's answer to [`ClientHello`]. Its shape is frozen. When `accepted` is
/// false the server closes the connection after sending it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    pub magic: [u8; 4],
    pub version: u32,
    pub accepted: bool,
}

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

/// Upstart's job states.
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

/// One running process of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// `main`, `pre-start`, `post-start`, `pre-stop` or `post-stop`.
    pub kind: String,
    pub pid: i32,
}

/// What `status` and `list` say of one job instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// What initctl asks.
///
/// `job` requests (start, stop, restart, reload, status) name the instance either by
/// `env` (the instance stanza expanded with it, as Upstart does) or, from within a
/// job, by `instance` (its `UPSTART_INSTANCE`), which then wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Start {
        job: String,
        instance: Option<String>,
        env: Vec<String>,
        wait: bool,
    },
    Stop {
        job: String,
        instance: Option<String>,
        env: Vec<String>,
        wait: bool,
    },
    Restart {
        job: String,
        instance: Option<String>,
        env: Vec<String>,
        wait: bool,
    },
    Reload {
        job: String,
        instance: Option<String>,
        env: Vec<String>,
    },
    Status {
        job: String,
        instance: Option<String>,
        env: Vec<String>,
    },
    List,
    Emit {
        event: String,
        env: Vec<String>,
        wait: bool,
    },
    /// Re-reads the job files: answered `Ok`, or `LoadFailures` when some did
    /// not load (every other one is loaded all the same).
    ReloadConfiguration,
    /// Events and jobs that `start on` / `stop on` name and nothing provides: of
    /// every job, or of `job` only; events in `ignore` are not reported.
    CheckConfig {
        job: Option<String>,
        ignore: Vec<String>,
    },
    /// Every job's configuration, or `job`'s only.
    ShowConfig {
        job: Option<String>,
    },
    Reexec {
        binary: Option<String>,
    },
    Power {
        action: PowerAction,
    },
    /// A runlevel (`b'0'`…`b'6'`, `b'S'`) emits `runlevel` with `env` added;
    /// `b'U'` re-executes the supervisor.
    Telinit {
        runlevel: u8,
        env: Vec<String>,
    },
    Runlevel,
    Version,
    /// Show (`None`) or set the supervisor's log priority.
    LogPriority {
        level: Option<String>,
    },
    /// A job's `usage` text.
    Usage {
        job: String,
    },
    /// The job-environment table: defaults every job started afterwards inherits.
    ListEnv,
    GetEnv {
        name: String,
    },
    /// Sets every pair, or none if one name is invalid; with `retain`, a variable
    /// already in the table keeps its value.
    SetEnv {
        vars: Vec<(String, String)>,
        retain: bool,
    },
    /// Removes every name, or none if one is not in the table.
    UnsetEnv {
        names: Vec<String>,
    },
    ResetEnv,
    /// /var/log is writable: write out job output held back until now.
    NotifyDiskWriteable,
    /// The job files that did not load when the confdir was last read, and why.
    LoadFailures,
    /// The boot timeline: each instance's first start.
    Timeline,
    /// The path of an instance's log file (`console log`), answered as a `Value`.
    LogPath {
        job: String,
        instance: Option<String>,
        env: Vec<String>,
    },
}

impl Request {
    /// Whether the request only reads (anyone may ask) rather than changes
    /// something (root or the supervisor's own uid only). Every variant is named,
    /// so a new request cannot become a query by accident.
    pub fn is_query(&self) -> bool {
        match self {
            Request::Status { .. }
            | Request::List
            | Request::CheckConfig { .. }
            | Request::ShowConfig { .. }
            | Request::Runlevel
            | Request::Version
            | Request::LogPriority { level: None }
            | Request::Usage { .. }
            | Request::ListEnv
            | Request::GetEnv { .. }
            | Request::LoadFailures
            | Request::Timeline
            | Request::LogPath { .. } => true,
            Request::Start { .. }
            | Request::Stop { .. }
            | Request::Restart { .. }
            | Request::Reload { .. }
            | Request::Emit { .. }
            | Request::ReloadConfiguration
            | Request::Reexec { .. }
            | Request::Power { .. }
            | Request::Telinit { .. }
            | Request::LogPriority { level: Some(_) }
            | Request::SetEnv { .. }
            | Request::UnsetEnv { .. }
            | Request::ResetEnv
            | Request::NotifyDiskWriteable => false,
        }
    }
}

/// An event a `start on` / `stop on` names, as `show-config -e` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub event: String,
    /// For the job events (`starting`, `started`, `stopping`, `stopped`): the job
    /// named by the first positional argument or `JOB=`.
    pub job: Option<String>,
    /// The other arguments, as written (`[2345]`, `INTERFACE=eth0`, `KEY!=VALUE`).
    pub env: Vec<String>,
}

/// What `show-config` says of one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobConfig {
    pub name: String,
    /// The events the job says it emits (`emits`).
    pub emits: Vec<String>,
    /// `start on` as Upstart's initctl writes it (every operator in parentheses);
    /// `None` without one (or with `manual`).
    pub start_on: Option<String>,
    pub stop_on: Option<String>,
    /// Each event `start on` names, in the order written.
    pub start_on_events: Vec<EventRef>,
    pub stop_on_events: Vec<EventRef>,
    /// The whole definition as a job file; it parses back to the same definition.
    pub definition: String,
    /// The override file (`NAME.override`) read over the job file, if any.
    pub override_file: Option<String>,
    /// The stanzas that came from `override_file` (`manual`, `start on`, `exec`,
    /// `pre-start exec`…); every other stanza came from the job file.
    pub overridden: Vec<String>,
}

/// One finding of `check-config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigProblem {
    pub job: String,
    /// `start on` or `stop on`.
    pub condition: String,
    /// `unknown event NAME` or `unknown job NAME`.
    pub message: String,
}

/// A job file that did not load (its job is not defined), or a directory that
/// could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFailure {
    /// The job the file would have defined; empty for a directory.
    pub job: String,
    /// Every error, as `FILE:LINE:COL: error: MESSAGE` (`FILE: error: MESSAGE`
    /// when no position applies), as `keel-supervisor --check` prints them.
    pub errors: Vec<String>,
}

/// One instance's first start, as the boot timeline has it (times are
/// monotonic milliseconds since boot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub job: String,
    pub instance: String,
    /// The events that started it (`UPSTART_EVENTS`); empty for a start by request.
    pub events: Vec<String>,
    /// For a job event (`started net`), the job it names.
    pub cause_job: Option<String>,
    /// Its `starting` event.
    pub requested_ms: u64,
    /// Its main process spawned (none for a job without one).
    pub spawned_ms: Option<u64>,
    /// Its `started` event: running (and ready, with `expect`).
    pub running_ms: Option<u64>,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    UnknownJob,
    UnknownInstance,
    AlreadyStarted,
    AlreadyStopped,
    /// The job was started but failed (pre-start, main, post-start…).
    JobFailed,
    PermissionDenied,
    InvalidRequest,
    /// The supervisor restarted while the request was in flight: its outcome is unknown.
    Interrupted,
    /// The supervisor is shutting the machine down.
    ShuttingDown,
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

/// The answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    /// The instances a request concerned, as they are now.
    Instances(Vec<InstanceStatus>),
    /// `show-config`.
    Config(Vec<JobConfig>),
    /// `check-config`: empty when every condition can be met.
    Problems(Vec<ConfigProblem>),
    /// `list-env`: the job-environment table, sorted by name.
    Env(Vec<(String, String)>),
    /// One value: `get-env`, `log-priority`, `usage`.
    Value(String),
    Version {
        version: String,
    },
    /// Runlevels as characters (`b'2'`), 0 for none (shown as `N`).
    Runlevel {
        previous: u8,
        current: u8,
    },
    Error(Error),
    /// `load-failures`, and `reload-configuration` when a file did not load.
    LoadFailures(Vec<LoadFailure>),
    Timeline(Vec<TimelineEntry>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode};
    use std::string::ToString;
    use std::vec;

    #[test]
    fn requests_and_responses_round_trip() {
        let reqs = vec![
            Request::Start {
                job: "net/apache".into(),
                instance: None,
                env: vec!["PORT=80".into()],
                wait: true,
            },
            Request::SetEnv {
                vars: vec![("A".into(), "b".into())],
                retain: true,
            },
            Request::Power {
                action: PowerAction::Halt,
            },
            Request::ShowConfig { job: None },
        ];
        for r in reqs {
            let f = encode(&r).unwrap();
            assert_eq!(decode::<Request>(&f[4..]).unwrap(), r);
        }
        let resp = Response::Instances(vec![InstanceStatus {
            job: "tty".into(),
            instance: "ttyS0".into(),
            goal: Goal::Start,
            state: State::Running,
            processes: vec![ProcessInfo {
                kind: "main".into(),
                pid: 42,
            }],
            failure: None,
            status_text: Some("ready".to_string()),
        }]);
        let f = encode(&resp).unwrap();
        assert_eq!(decode::<Response>(&f[4..]).unwrap(), resp);
    }

    #[test]
    fn hello_shapes_are_frozen() {
        // These bytes are what every released initctl and supervisor send. Changing
        // them breaks the handshake between versions: don't.
        let hello = ClientHello {
            magic: MAGIC,
            version: 1,
        };
        assert_eq!(postcard::to_stdvec(&hello).unwrap(), b"keel\x01");
        let answer = ServerHello {
            magic: MAGIC,
            version: 1,
            accepted: true,
        };
        assert_eq!(postcard::to_stdvec(&answer).unwrap(), b"keel\x01\x01");
    }
}
