//! Why the core refuses a request, and the words a person reads for it. Every
//! message initctl prints for a refused request is written here once, as the
//! `Display` of a [`Refusal`] (Upstart's words where Upstart had them); the shell
//! turns a refusal into the wire's error at its edge and never writes one itself.

use crate::events::ExpandError;

/// A request the core will not carry out. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such job (or one whose file was removed).
    #[error("Unknown job: {0}")]
    UnknownJob(String),
    /// `check-config JOB` of a job that does not exist.
    #[error("Invalid job class: {0}")]
    InvalidJobClass(String),
    #[error("Unknown instance: {job} ({instance})")]
    UnknownInstance { job: String, instance: String },
    /// A start of an instance whose goal is start already (initctl adds the name).
    #[error("Job is already running")]
    AlreadyStarted,
    /// A stop or restart of an instance whose goal is stop already.
    #[error("Job has already been stopped")]
    AlreadyStopped,
    /// A reload of an instance without a main process.
    #[error("Job is not running: {0}")]
    NotRunning(String),
    /// A request's waiter learns that the instance failed: why.
    #[error("{0}")]
    JobFailed(String),
    /// An event a client waited for finished, and a job it started or stopped
    /// failed.
    #[error("Event failed")]
    EventFailed,
    #[error("the system is shutting down")]
    ShuttingDown,
    /// `instance $VAR` could not be expanded.
    #[error(transparent)]
    Instance(#[from] ExpandError),
    #[error("Env must be KEY=VALUE pairs")]
    NotKeyValue,
    #[error("Name may not be empty string")]
    EmptyEventName,
    /// The event queue holds its limit (`lifecycle::MAX_QUEUED_EVENTS`).
    #[error("{limit} events are queued already; try again later")]
    QueueFull { limit: usize },
    #[error("No such variable: {0}")]
    NoSuchVariable(String),
    #[error("Invalid variable name: {0}")]
    InvalidVariableName(String),
    #[error("illegal runlevel: {0}")]
    IllegalRunlevel(char),
}
