//! The job language: Upstart 1.13's init(5) plus keel's own stanzas.
//!
//! This module owns the typed job definition ([`JobDef`]) and turning job-file text
//! into it ([`parse`]) and back ([`render`]). It never touches the filesystem or
//! any other syscall: callers hand it text and a name, it hands back a definition
//! and diagnostics (`FILE:LINE:COL: error|warning: MESSAGE`).
//!
//! Every stanza of Upstart 1.13 is represented here with its documented default;
//! stanzas keel does not carry out yet parse into the definition and produce a
//! warning saying so ([`NOT_CARRIED_OUT`]), never silently vanish.
//!
//! keel's own stanzas, beside Upstart's:
//! - `script INTERPRETER [ARG…]` … `end script`: the block runs under that
//!   interpreter instead of `/bin/sh -e` (also `pre-start script /bin/bash`, …).
//! - `expect notify` (`READY=1` on `NOTIFY_SOCKET`), `expect fd N` (a newline on
//!   fd N, N ≥ 3), `expect listen` (the main process listens on a socket),
//!   `expect dbus NAME` (the bus name is owned).
//! - `ready timeout SECONDS`: how long an `expect` may take before the start fails.
//! - `capabilities CAP…`: the capabilities the job keeps (several lines add up;
//!   `CAP_NET_ADMIN`, `cap_net_admin` and `net_admin` are the same);
//!   `capabilities none` keeps none.
//! - `no new privileges`.
//! - `limit rttime SOFT HARD` (Linux has the resource; Upstart 1.13 did not list it).
//! - the sandboxing stanzas of [`sandbox`]: `private tmp|devices`, `protect …`,
//!   `read-only`, `writable`, `inaccessible`, and the system-call filters.
//!
//! `start on socket PROTO=… PORT=…|PATH=…` must describe a socket keel can bind
//! ([`socket`]); anything else there is an error at the argument.
//!
//! Override files (`NAME.override`, init(5)): [`parse_override`] reads one over
//! the job file's definition, its stanzas replacing the job file's.
//!
//! Submodules: `lexer` (libnih's tokenising), `event` (`start on`/`stop on`),
//! `parse` (the stanzas), [`show`] (rendering), [`signal`] (signal names).

use serde::{Deserialize, Serialize};

/// `SUBSYSTEM-device-added` and the like: the device events a job waits for.
pub mod device;
mod event;
/// How exposed a job is (`initctl security`).
pub mod exposure;
/// `start on file FILE=…`: the files a job waits on.
pub mod file;
mod lexer;
mod parse;
/// The sandboxing stanzas: mount namespace, paths, system-call filters.
pub mod sandbox;
/// Rendering a definition back into job-file text.
pub mod show;
/// Signal numbers and names as the job language spells them.
pub mod signal;
/// `start on socket …`: the sockets a job is started on.
pub mod socket;

pub use event::{MAX_EXPRESSION_EVENTS, MAX_PAREN_DEPTH};
pub use parse::{CAPABILITIES, MAX_JOB_FILE_BYTES, Overridden, Parsed, parse, parse_override};
pub use show::render;
pub use signal::Signal;

/// Stanzas that parse but that keel does not carry out yet; each use gives
/// `warning: STANZA is parsed but not carried out yet`. An entry is a stanza
/// name (`limit`, `apparmor`) or a specific form (`expect fork`; `oom score`
/// also covers Upstart's older `oom N`). Remove an entry once the runtime
/// carries it out: this list is the only place that decides the warning.
pub const NOT_CARRIED_OUT: &[&str] = &["apparmor load", "debug"];

/// Characters that make Upstart run an `exec` command through `/bin/sh -e -c`
/// (`SHELL_CHARS` in Upstart's init/job_process.c).
pub const SHELL_CHARS: &str = "~`!$^&*()=|\\{}[];\"'<>?";

/// A complete, typed job definition. Defaults are Upstart's documented ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDef {
    /// Name from the path relative to the confdir, without `.conf`: `net/apache`.
    pub name: String,
    pub description: Option<String>,
    pub author: Option<String>,
    pub version: Option<String>,
    pub usage: Option<String>,
    /// `emits EVENT…` — events this job says it emits (for check-config).
    pub emits: Vec<String>,

    pub start_on: Option<EventExpr>,
    pub stop_on: Option<EventExpr>,
    /// `manual`: ignore `start on` (Upstart 1.13 semantics: `manual` discards the
    /// `start on` before it, a later `start on` applies again; so the parser
    /// never produces `manual` together with `start_on`).
    pub manual: bool,
    /// `instance NAME` — a template expanded from the start environment (`$TTY`).
    pub instance: Option<String>,

    /// `env KEY=VALUE` (or `env KEY`, taking the value from the supervisor's job
    /// environment table), in file order.
    pub env: Vec<EnvVar>,
    /// `export KEY…` — variables added to this job's own events.
    pub export: Vec<String>,

    /// `task`: start waits until main has run and exited.
    pub task: bool,
    pub respawn: bool,
    pub respawn_limit: RespawnLimit,
    /// `normal exit` — statuses and signals that count as a normal end of main.
    pub normal_exit: Vec<ExitMatch>,

    /// The main process (`exec` or `script`).
    pub main: Option<Process>,
    /// The hooks, boxed: most jobs have none, and four unboxed would take 160
    /// bytes of every job's definition (1.6 MB at 10,000 jobs).
    pub pre_start: Option<Box<Process>>,
    pub post_start: Option<Box<Process>>,
    pub pre_stop: Option<Box<Process>>,
    pub post_stop: Option<Box<Process>>,

    pub console: Console,
    /// `umask NNN` (octal); `None` means Upstart's default 022.
    pub umask: Option<u32>,
    pub nice: Option<i32>,
    pub oom_score: Option<OomScore>,
    pub chroot: Option<String>,
    pub chdir: Option<String>,
    pub limits: Vec<Limit>,
    pub setuid: Option<String>,
    pub setgid: Option<String>,
    pub cgroups: Vec<Cgroup>,
    pub apparmor_load: Option<String>,
    pub apparmor_switch: Option<String>,

    pub kill_signal: Signal,
    /// Seconds between the kill signal and SIGKILL (`kill timeout`, default 5).
    pub kill_timeout: u32,
    pub reload_signal: Signal,
    pub expect: Expect,
    pub debug: bool,

    // keel's own stanzas
    /// `capabilities CAP…|none`: `None` leaves the bounding set alone, `Some(vec![])`
    /// is `capabilities none`. Names are lower case without `cap_` (`net_bind_service`).
    pub capabilities: Option<Vec<String>>,
    /// `no new privileges`
    pub no_new_privileges: bool,
    /// `ready timeout SECONDS`: how long `expect …` may take before the start fails.
    pub ready_timeout: Option<u32>,
    /// The sandboxing stanzas ([`sandbox`]). Saved apart, after the definitions
    /// (`journal::encode_definitions`), so that saved states of earlier formats
    /// still load.
    #[serde(skip)]
    pub sandbox: sandbox::SandboxSlot,
}

impl JobDef {
    /// A definition with every stanza at Upstart's default.
    pub fn new(name: impl Into<String>) -> Self {
        JobDef {
            name: name.into(),
            description: None,
            author: None,
            version: None,
            usage: None,
            emits: Vec::new(),
            start_on: None,
            stop_on: None,
            manual: false,
            instance: None,
            env: Vec::new(),
            export: Vec::new(),
            task: false,
            respawn: false,
            respawn_limit: RespawnLimit::default(),
            normal_exit: Vec::new(),
            main: None,
            pre_start: None,
            post_start: None,
            pre_stop: None,
            post_stop: None,
            console: Console::default(),
            umask: None,
            nice: None,
            oom_score: None,
            chroot: None,
            chdir: None,
            limits: Vec::new(),
            setuid: None,
            setgid: None,
            cgroups: Vec::new(),
            apparmor_load: None,
            apparmor_switch: None,
            kill_signal: Signal::TERM,
            kill_timeout: 5,
            reload_signal: Signal::HUP,
            expect: Expect::None,
            debug: false,
            capabilities: None,
            no_new_privileges: false,
            ready_timeout: None,
            sandbox: sandbox::SandboxSlot::default(),
        }
    }

    /// What an event source serves for this job: each event named `event` in
    /// `start on` (none for a `manual` job) and, with `stop_on_too`, in `stop on`,
    /// read by `spec` (those it refuses were reported when the file was parsed),
    /// sorted, each once.
    pub fn condition_specs<T: Ord, E>(
        &self,
        event: &str,
        stop_on_too: bool,
        spec: impl Fn(&EventMatch) -> Result<T, E>,
    ) -> Vec<T> {
        let start_on = self.start_on.iter().filter(|_| !self.manual);
        let stop_on = self.stop_on.iter().filter(|_| stop_on_too);
        let mut specs: Vec<T> = start_on
            .chain(stop_on)
            .flat_map(EventExpr::leaves)
            .filter(|e| e.name == event)
            .filter_map(|e| spec(e).ok())
            .collect();
        specs.sort();
        specs.dedup();
        specs
    }

    /// The process of the given kind, if the job defines one.
    pub fn process(&self, kind: ProcessKind) -> Option<&Process> {
        match kind {
            ProcessKind::Main => self.main.as_ref(),
            ProcessKind::PreStart => self.pre_start.as_deref(),
            ProcessKind::PostStart => self.post_start.as_deref(),
            ProcessKind::PreStop => self.pre_stop.as_deref(),
            ProcessKind::PostStop => self.post_stop.as_deref(),
        }
    }
}

/// The five processes of a job, in Upstart's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProcessKind {
    PreStart,
    Main,
    PostStart,
    PreStop,
    PostStop,
}

impl ProcessKind {
    pub const ALL: [ProcessKind; 5] = [
        ProcessKind::PreStart,
        ProcessKind::Main,
        ProcessKind::PostStart,
        ProcessKind::PreStop,
        ProcessKind::PostStop,
    ];

    /// Upstart's name: `main`, `pre-start`, … (used in `PROCESS=` and status).
    pub fn name(self) -> &'static str {
        match self {
            ProcessKind::PreStart => "pre-start",
            ProcessKind::Main => "main",
            ProcessKind::PostStart => "post-start",
            ProcessKind::PreStop => "pre-stop",
            ProcessKind::PostStop => "post-stop",
        }
    }
}

/// What a process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Process {
    /// `exec COMMAND…`: the command line as written (after continuation joining).
    /// Run directly (split on whitespace) unless it contains shell metacharacters,
    /// then through `/bin/sh -e -c`, as Upstart decides.
    Exec { command: String },
    /// `script [INTERPRETER ARG…] … end script`. `interpreter` empty means the
    /// default `/bin/sh -e`.
    Script {
        interpreter: Vec<String>,
        body: String,
    },
}

impl Process {
    /// The argv to exec directly: `Some` for an `exec` command without any of
    /// [`SHELL_CHARS`], split on whitespace as Upstart does; `None` when the
    /// command needs `/bin/sh -e -c` (or is a script).
    pub fn exec_argv(&self) -> Option<Vec<String>> {
        match self {
            Process::Exec { command } if !command.contains(|c| SHELL_CHARS.contains(c)) => Some(
                command
                    .split([' ', '\t', '\r', '\n'])
                    .filter(|word| !word.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub key: String,
    /// `None` for `env KEY` with no value.
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RespawnLimit {
    /// At most `count` respawns within `interval` seconds.
    Limit {
        count: u32,
        interval: u32,
    },
    Unlimited,
}

impl Default for RespawnLimit {
    /// Upstart's default: 10 respawns in 5 seconds.
    fn default() -> Self {
        RespawnLimit::Limit {
            count: 10,
            interval: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitMatch {
    Status(i32),
    Signal(Signal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Console {
    /// stdio on /dev/null.
    None,
    /// stdout/stderr into the job's log file (Upstart 1.13's default).
    #[default]
    Log,
    /// The system console.
    Output,
    /// The console as controlling terminal.
    Owner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OomScore {
    /// `oom score N`, -1000..=1000.
    Adj(i32),
    /// `oom score never` (= -1000).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub resource: Resource,
    pub soft: LimitValue,
    pub hard: LimitValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitValue {
    Value(u64),
    Unlimited,
}

/// Every resource name Upstart's `limit` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resource {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl Resource {
    pub const ALL: [Resource; 15] = [
        Resource::As,
        Resource::Core,
        Resource::Cpu,
        Resource::Data,
        Resource::Fsize,
        Resource::Memlock,
        Resource::Msgqueue,
        Resource::Nice,
        Resource::Nofile,
        Resource::Nproc,
        Resource::Rss,
        Resource::Rtprio,
        Resource::Rttime,
        Resource::Sigpending,
        Resource::Stack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::As => "as",
            Resource::Core => "core",
            Resource::Cpu => "cpu",
            Resource::Data => "data",
            Resource::Fsize => "fsize",
            Resource::Memlock => "memlock",
            Resource::Msgqueue => "msgqueue",
            Resource::Nice => "nice",
            Resource::Nofile => "nofile",
            Resource::Nproc => "nproc",
            Resource::Rss => "rss",
            Resource::Rtprio => "rtprio",
            Resource::Rttime => "rttime",
            Resource::Sigpending => "sigpending",
            Resource::Stack => "stack",
        }
    }

    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// `cgroup CONTROLLER [NAME] [KEY VALUE]` (Upstart 1.13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    pub controller: String,
    pub name: Option<String>,
    pub setting: Option<(String, String)>,
}

/// Readiness: when the main process counts as started.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Expect {
    /// Ready once exec succeeded.
    #[default]
    None,
    /// The process forks once; the child is the daemon.
    Fork,
    /// The process forks twice; the grandchild is the daemon.
    Daemon,
    /// The process raises SIGSTOP when ready.
    Stop,
    /// keel: `sd_notify` `READY=1` on `NOTIFY_SOCKET`.
    Notify,
    /// keel: s6-style — a newline written to fd N.
    Fd(i32),
    /// keel: ready once the main process listens on a socket.
    Listen,
    /// keel: ready once the bus name is owned on the system bus.
    Dbus(String),
}

impl Expect {
    /// The stanza in words, for messages (`expect fork`); `None` for `expect none`.
    pub fn describe(&self) -> Option<String> {
        Some(match self {
            Expect::None => return None,
            Expect::Fork => "expect fork".into(),
            Expect::Daemon => "expect daemon".into(),
            Expect::Stop => "expect stop".into(),
            Expect::Notify => "expect notify".into(),
            Expect::Fd(fd) => format!("expect fd {fd}"),
            Expect::Listen => "expect listen".into(),
            Expect::Dbus(name) => format!("expect dbus {name}"),
        })
    }

    /// How many forks keel follows before the daemon is found.
    pub fn forks(&self) -> u8 {
        match self {
            Expect::Fork => 1,
            Expect::Daemon => 2,
            _ => 0,
        }
    }
}

/// An event expression of `start on` / `stop on`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventExpr {
    Event(EventMatch),
    And(Box<EventExpr>, Box<EventExpr>),
    Or(Box<EventExpr>, Box<EventExpr>),
}

impl EventExpr {
    /// Its leaves, left to right.
    pub fn leaves(&self) -> Vec<&EventMatch> {
        let mut out = Vec::new();
        let mut todo = vec![self];
        while let Some(e) = todo.pop() {
            match e {
                EventExpr::Event(m) => out.push(m),
                EventExpr::And(a, b) | EventExpr::Or(a, b) => {
                    todo.push(b);
                    todo.push(a);
                }
            }
        }
        out
    }
}

/// One event with its argument matches: `net-device-up IFACE!=lo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMatch {
    pub name: String,
    pub args: Vec<ArgMatch>,
}

/// An argument match. `value` is a glob pattern that may hold `$VAR` references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgMatch {
    /// `Some(KEY)` for `KEY=VALUE` / `KEY!=VALUE`, `None` for a positional value.
    pub key: Option<String>,
    pub value: String,
    pub negated: bool,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a job file, pointing at the offending token (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub line: u32,
    pub col: u32,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    /// `FILE:LINE:COL: error: MESSAGE`
    pub fn render(&self, file: &str) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        format!("{file}:{}:{}: {sev}: {}", self.line, self.col, self.message)
    }
}

#[cfg(test)]
mod tests;
