//! The core's refusals in the wire's words: the one place where a refused
//! request becomes a `keel_proto::ctl::Error`. The message is the refusal's own
//! text (`keel_core::refusal`); the kind is what initctl and scripts branch on.

use keel_core::refusal::Refusal;
use keel_proto::ctl::{Error, ErrorKind, Response};

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
        | Refusal::QueueFull
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

/// An error of the shell's own (a failed system call, a refused re-exec), not a
/// decision of the core's.
pub fn failed(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error(Error {
        kind,
        message: message.into(),
    })
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
                Refusal::QueueFull,
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
}
