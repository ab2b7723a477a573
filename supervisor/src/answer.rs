//! The edge between the core's types and the wire's: the core keeps its own
//! (saved with the state, so the protocol may change without changing the saved
//! format, and the reverse), and this is the one place that converts them. A
//! refused request becomes a `keel_proto::ctl::Error` here: the message is the
//! refusal's own text (`keel_core::refusal`); the kind is what initctl and
//! scripts branch on. So does what the shell refuses or fails by itself
//! ([`Failure`]: a re-exec refused, a permission denied, a malformed frame…):
//! no other module builds a wire error.

use keel_core::lifecycle::{self, Goal, PowerAction, State};
use keel_core::query;
use keel_core::refusal::Refusal;
use keel_proto::ctl::{self, Error, ErrorKind, Response};
use keel_proto::init;

use crate::logging::UnknownPriority;
use crate::reexec;

/// `refusal` as the wire's error.
pub fn wire_error(refusal: &Refusal) -> Error {
    let kind = match refusal {
        Refusal::UnknownJob(_) | Refusal::InvalidJobClass(_) => ErrorKind::UnknownJob,
        Refusal::UnknownInstance { .. } => ErrorKind::UnknownInstance,
        Refusal::AlreadyStarted => ErrorKind::AlreadyStarted,
        Refusal::AlreadyStopped | Refusal::NotRunning(_) => ErrorKind::AlreadyStopped,
        Refusal::JobFailed(_) | Refusal::EventFailed => ErrorKind::JobFailed,
        Refusal::ShuttingDown => ErrorKind::ShuttingDown,
        Refusal::Instance(_)
        | Refusal::NotKeyValue
        | Refusal::EmptyEventName
        | Refusal::QueueFull { .. }
        | Refusal::NoSuchVariable(_)
        | Refusal::InvalidVariableName(_)
        | Refusal::IllegalRunlevel(_) => ErrorKind::InvalidRequest,
    };
    Error {
        kind,
        message: refusal.to_string(),
    }
}

/// The answer to a refused request.
pub fn refused(refusal: Refusal) -> Response {
    Response::Error(wire_error(&refusal))
}

/// `status`, `list` and the answers to job requests.
pub fn instances(list: Vec<lifecycle::InstanceStatus>) -> Response {
    Response::Instances(list.into_iter().map(wire_status).collect())
}

/// One instance's status on the wire.
pub fn wire_status(s: lifecycle::InstanceStatus) -> ctl::InstanceStatus {
    ctl::InstanceStatus {
        job: s.job,
        instance: s.instance,
        goal: match s.goal {
            Goal::Start => ctl::Goal::Start,
            Goal::Stop => ctl::Goal::Stop,
            Goal::Respawn => ctl::Goal::Respawn,
        },
        state: match s.state {
            State::Waiting => ctl::State::Waiting,
            State::Starting => ctl::State::Starting,
            State::Security => ctl::State::Security,
            State::PreStart => ctl::State::PreStart,
            State::Spawned => ctl::State::Spawned,
            State::PostStart => ctl::State::PostStart,
            State::Running => ctl::State::Running,
            State::PreStop => ctl::State::PreStop,
            State::Stopping => ctl::State::Stopping,
            State::Killed => ctl::State::Killed,
            State::PostStop => ctl::State::PostStop,
        },
        processes: s
            .processes
            .into_iter()
            .map(|p| ctl::ProcessInfo {
                kind: p.kind,
                pid: p.pid,
            })
            .collect(),
        failure: s.failure,
        status_text: s.status_text,
    }
}

/// `show-config`.
pub fn configs(list: Vec<query::JobConfig>) -> Response {
    let events = |refs: Vec<query::EventRef>| {
        refs.into_iter()
            .map(|r| ctl::EventRef {
                event: r.event,
                job: r.job,
                env: r.env,
            })
            .collect()
    };
    Response::Config(
        list.into_iter()
            .map(|c| ctl::JobConfig {
                name: c.name,
                emits: c.emits,
                start_on: c.start_on,
                stop_on: c.stop_on,
                start_on_events: events(c.start_on_events),
                stop_on_events: events(c.stop_on_events),
                definition: c.definition,
                override_file: c.overridden.as_ref().map(|o| o.file.clone()),
                overridden: c.overridden.map(|o| o.stanzas).unwrap_or_default(),
            })
            .collect(),
    )
}

/// `check-config`.
pub fn problems(list: Vec<query::ConfigProblem>) -> Response {
    Response::Problems(
        list.into_iter()
            .map(|p| ctl::ConfigProblem {
                job: p.job,
                condition: p.condition,
                message: p.message,
            })
            .collect(),
    )
}

/// A client's power request, for the core.
pub fn core_power(action: init::PowerAction) -> PowerAction {
    match action {
        init::PowerAction::PowerOff => PowerAction::PowerOff,
        init::PowerAction::Reboot => PowerAction::Reboot,
        init::PowerAction::Halt => PowerAction::Halt,
    }
}

/// The core's power action, for keel-init.
pub fn init_power(action: PowerAction) -> init::PowerAction {
    match action {
        PowerAction::PowerOff => init::PowerAction::PowerOff,
        PowerAction::Reboot => init::PowerAction::Reboot,
        PowerAction::Halt => init::PowerAction::Halt,
    }
}

/// What the shell refuses or fails of a request by itself, not a decision of the
/// core's: the facts, given the wire's kind and words by [`failed`].
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{job} has {count} instances: name one with KEY=VALUE")]
    ManyInstances { job: String, count: usize },
    #[error("{job} keeps no log (its console is not `log`)")]
    NoLog { job: String },
    #[error(transparent)]
    Priority(#[from] UnknownPriority),
    #[error("cannot signal process {pid}")]
    Signal { pid: i32 },
    #[error(transparent)]
    Reexec(#[from] reexec::Error),
    /// A change asked by a client that may only query.
    #[error("Permission denied: only root{} may change anything", uid_clause(*own_uid))]
    Denied { own_uid: u32 },
    /// A frame that is no request of this protocol.
    #[error(transparent)]
    Malformed(#[from] keel_proto::frame::FrameError),
    #[error("too many answers wait to be read by other clients; try again")]
    Congested,
    #[error("the answer is too large to send")]
    TooLarge,
}

/// " or uid N" when the supervisor runs as N, not root.
fn uid_clause(own_uid: u32) -> String {
    match own_uid {
        0 => String::new(),
        uid => format!(" or uid {uid}"),
    }
}

/// The answer to a request the shell refused or failed.
pub fn failed(failure: impl Into<Failure>) -> Response {
    Response::Error(wire_failure(&failure.into()))
}

/// `failure` as the wire's error.
pub fn wire_failure(failure: &Failure) -> Error {
    let kind = match failure {
        Failure::Signal { .. } | Failure::Congested | Failure::TooLarge => ErrorKind::Internal,
        Failure::Denied { .. } => ErrorKind::PermissionDenied,
        Failure::ManyInstances { .. }
        | Failure::NoLog { .. }
        | Failure::Priority(_)
        | Failure::Reexec(_)
        | Failure::Malformed(_) => ErrorKind::InvalidRequest,
    };
    Error {
        kind,
        message: failure.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::events::ExpandError;

    /// The words and kinds initctl has always received: changing one is a
    /// change of the interface.
    #[test]
    fn every_refusal_keeps_its_words_and_kind() {
        let cases = [
            (
                Refusal::UnknownJob("web".into()),
                ErrorKind::UnknownJob,
                "Unknown job: web",
            ),
            (
                Refusal::InvalidJobClass("web".into()),
                ErrorKind::UnknownJob,
                "Invalid job class: web",
            ),
            (
                Refusal::UnknownInstance {
                    job: "tty".into(),
                    instance: "tty9".into(),
                },
                ErrorKind::UnknownInstance,
                "Unknown instance: tty (tty9)",
            ),
            (
                Refusal::AlreadyStarted,
                ErrorKind::AlreadyStarted,
                "Job is already running",
            ),
            (
                Refusal::AlreadyStopped,
                ErrorKind::AlreadyStopped,
                "Job has already been stopped",
            ),
            (
                Refusal::NotRunning("web".into()),
                ErrorKind::AlreadyStopped,
                "Job is not running: web",
            ),
            (
                Refusal::JobFailed("main process (12) terminated with status 1".into()),
                ErrorKind::JobFailed,
                "main process (12) terminated with status 1",
            ),
            (Refusal::EventFailed, ErrorKind::JobFailed, "Event failed"),
            (
                Refusal::ShuttingDown,
                ErrorKind::ShuttingDown,
                "the system is shutting down",
            ),
            (
                Refusal::Instance(ExpandError::UnknownParameter("TTY".into())),
                ErrorKind::InvalidRequest,
                "Unknown parameter: TTY",
            ),
            (
                Refusal::NotKeyValue,
                ErrorKind::InvalidRequest,
                "Env must be KEY=VALUE pairs",
            ),
            (
                Refusal::EmptyEventName,
                ErrorKind::InvalidRequest,
                "Name may not be empty string",
            ),
            (
                Refusal::QueueFull { limit: 1024 },
                ErrorKind::InvalidRequest,
                "1024 events are queued already; try again later",
            ),
            (
                Refusal::NoSuchVariable("FOO".into()),
                ErrorKind::InvalidRequest,
                "No such variable: FOO",
            ),
            (
                Refusal::InvalidVariableName("9x".into()),
                ErrorKind::InvalidRequest,
                "Invalid variable name: 9x",
            ),
            (
                Refusal::IllegalRunlevel('7'),
                ErrorKind::InvalidRequest,
                "illegal runlevel: 7",
            ),
        ];
        for (refusal, kind, message) in cases {
            assert_eq!(
                wire_error(&refusal),
                Error {
                    kind,
                    message: message.into()
                },
                "{refusal:?}"
            );
        }
    }

    /// The core's goals and states reach the wire as themselves.
    #[test]
    fn statuses_keep_their_goal_state_and_processes() {
        use State::*;
        let states = [
            Waiting, Starting, Security, PreStart, Spawned, PostStart, Running, PreStop, Stopping,
            Killed, PostStop,
        ];
        for (state, goal) in states
            .into_iter()
            .zip([Goal::Start, Goal::Stop, Goal::Respawn].into_iter().cycle())
        {
            let wire = wire_status(lifecycle::InstanceStatus {
                job: "j".into(),
                instance: "i".into(),
                goal,
                state,
                processes: vec![lifecycle::ProcessInfo {
                    kind: "main".into(),
                    pid: 7,
                }],
                failure: Some("why".into()),
                status_text: None,
            });
            assert_eq!(
                (wire.goal.name(), wire.state.name()),
                (goal.name(), state.name())
            );
            assert_eq!(
                wire.processes,
                [ctl::ProcessInfo {
                    kind: "main".into(),
                    pid: 7
                }]
            );
            assert_eq!(wire.failure.as_deref(), Some("why"));
        }
        for action in [
            PowerAction::PowerOff,
            PowerAction::Reboot,
            PowerAction::Halt,
        ] {
            assert_eq!(core_power(init_power(action)), action);
        }
    }

    /// The shell's own failures keep the words and kinds initctl has received.
    #[test]
    fn every_failure_keeps_its_words_and_kind() {
        let cases = [
            (
                Failure::ManyInstances {
                    job: "web".into(),
                    count: 2,
                },
                ErrorKind::InvalidRequest,
                "web has 2 instances: name one with KEY=VALUE",
            ),
            (
                Failure::NoLog { job: "web".into() },
                ErrorKind::InvalidRequest,
                "web keeps no log (its console is not `log`)",
            ),
            (
                UnknownPriority("loud".into()).into(),
                ErrorKind::InvalidRequest,
                "unknown priority: loud (debug, info, message, warn, error, fatal)",
            ),
            (
                Failure::Signal { pid: 7 },
                ErrorKind::Internal,
                "cannot signal process 7",
            ),
            (
                reexec::Error::UnderWay.into(),
                ErrorKind::InvalidRequest,
                "another re-exec is under way",
            ),
            (
                Failure::Denied { own_uid: 0 },
                ErrorKind::PermissionDenied,
                "Permission denied: only root may change anything",
            ),
            (
                Failure::Denied { own_uid: 1000 },
                ErrorKind::PermissionDenied,
                "Permission denied: only root or uid 1000 may change anything",
            ),
            (
                Failure::Congested,
                ErrorKind::Internal,
                "too many answers wait to be read by other clients; try again",
            ),
            (
                Failure::TooLarge,
                ErrorKind::Internal,
                "the answer is too large to send",
            ),
        ];
        for (failure, kind, words) in cases {
            let wire = wire_failure(&failure);
            assert_eq!((wire.kind, wire.message.as_str()), (kind, words));
        }
    }
}
