//! Job-file text → [`JobDef`] plus diagnostics: the stanza table and what each
//! stanza accepts.
//!
//! Upstart stops at the first error; keel reports it, skips to the next line
//! (past a whole `script` block when the broken line opened one) and goes on,
//! so one run names every problem. A stanza given twice keeps the last value,
//! as in Upstart; `env`, `export`, `emits`, `normal exit`, `cgroup`, `limit`
//! (per resource) and `capabilities` add up.
//!
//! Where Upstart 1.13 accepts nonsense, keel refuses it: words after `manual`
//! or `debug` (Upstart reads them as the next stanza), `env =VALUE`, signal
//! numbers above 64 and exit statuses above 255 (Upstart takes any int).

use super::event;
use super::lexer::{Delim, Lexer, Problem, Token};
use super::{
    Cgroup, Console, Diagnostic, EnvVar, ExitMatch, Expect, JobDef, Limit, LimitValue,
    NOT_CARRIED_OUT, OomScore, Process, ProcessKind, Resource, RespawnLimit, Severity, Signal,
};

/// Larger job files are refused unread (real ones are a few KiB).
pub const MAX_JOB_FILE_BYTES: usize = 1 << 20;

/// The outcome of parsing one job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// `None` if and only if some diagnostic is an error.
    pub def: Option<JobDef>,
    /// Errors and warnings in file order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses the text of job `name` (its path relative to the confdir, without
/// `.conf`). Never panics, whatever the text.
pub fn parse(name: &str, text: &str) -> Parsed {
    parse_onto(JobDef::new(name), text).0
}

/// The outcome of reading an override file onto a job's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overridden {
    /// The job file's definition with the override's stanzas read over it;
    /// `None` if and only if some diagnostic is an error.
    pub parsed: Parsed,
    /// The stanzas the override gives, each named once in the order first
    /// given: `manual`, `start on`, `exec`, `pre-start exec`, `limit nofile`.
    /// (Distinct names are few — one per stanza form — so this stays small.)
    pub stanzas: Vec<String>,
}

/// Reads an override file (`NAME.override`, init(5)) over `base`, the job
/// file's definition, as Upstart does: the override is parsed into the same
/// definition after the job file, so each stanza it gives replaces the job
/// file's (`manual` discards `start on`; the stanzas that add up — `env`,
/// `export`, `emits`, … — add to the job file's). Never panics.
pub fn parse_override(base: JobDef, text: &str) -> Overridden {
    let (parsed, stanzas) = parse_onto(base, text);
    Overridden { parsed, stanzas }
}

/// Reads `text`'s stanzas into `def`; also returns the name of each stanza read.
fn parse_onto(def: JobDef, text: &str) -> (Parsed, Vec<String>) {
    let lines = LineIndex::new(text);
    if text.len() > MAX_JOB_FILE_BYTES {
        let problem = Problem::new(
            0,
            format!("job file larger than {MAX_JOB_FILE_BYTES} bytes"),
        );
        let parsed = Parsed {
            def: None,
            diagnostics: vec![lines.diagnostic(&problem, Severity::Error)],
        };
        return (parsed, Vec::new());
    }
    let mut parser = Parser {
        lexer: Lexer::new(text),
        lines,
        def,
        diagnostics: Vec::new(),
        no_block_end_from: None,
        stanzas: Vec::new(),
    };
    if let Some(nul) = text.bytes().position(|b| b == 0) {
        parser.error(Problem::new(nul, "NUL byte in job file"));
    }
    parser.run();
    let failed = parser
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    parser.diagnostics.sort_by_key(|d| (d.line, d.col));
    let parsed = Parsed {
        def: (!failed).then_some(parser.def),
        diagnostics: parser.diagnostics,
    };
    (parsed, parser.stanzas)
}

/// Byte offsets → 1-based line and column (in characters).
struct LineIndex<'a> {
    src: &'a [u8],
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let src = text.as_bytes();
        let starts = std::iter::once(0)
            .chain(
                src.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        LineIndex { src, starts }
    }

    fn locate(&self, pos: usize) -> (u32, u32) {
        let pos = pos.min(self.src.len());
        let line = self.starts.partition_point(|&start| start <= pos).max(1);
        let line_start = self.starts.get(line - 1).copied().unwrap_or(0);
        // Count characters, not bytes: skip UTF-8 continuation bytes.
        let col = self.src[line_start..pos]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count()
            + 1;
        (
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(col).unwrap_or(u32::MAX),
        )
    }

    fn diagnostic(&self, problem: &Problem, severity: Severity) -> Diagnostic {
        let (line, col) = self.locate(problem.pos);
        Diagnostic {
            line,
            col,
            severity,
            message: problem.message.clone(),
        }
    }
}

/// A stanza's reader. It returns the stanza's specific form when it has one
/// (`expect fork`, `limit nofile`, `pre-start exec`), for [`NOT_CARRIED_OUT`].
type Handler<'a> = fn(&mut Parser<'a>, &Token) -> Result<Form, Problem>;
pub(super) type Form = Option<String>;

pub(super) fn form(text: &str) -> Form {
    Some(text.to_string())
}

/// Every stanza: Upstart 1.13's, then keel's own (`capabilities`, `no new
/// privileges`, `ready timeout`; `expect` and `script` take keel's forms too).
fn handler<'a>(stanza: &str) -> Option<Handler<'a>> {
    let handler: Handler<'a> = match stanza {
        "instance" => Parser::instance,
        "description" => Parser::description,
        "author" => Parser::author,
        "version" => Parser::version,
        "env" => Parser::env,
        "export" => Parser::export,
        "start" => Parser::start,
        "stop" => Parser::stop,
        "emits" => Parser::emits,
        "exec" => Parser::exec,
        "script" => Parser::script,
        "pre-start" => Parser::pre_start,
        "post-start" => Parser::post_start,
        "pre-stop" => Parser::pre_stop,
        "post-stop" => Parser::post_stop,
        "expect" => Parser::expect,
        "task" => Parser::task,
        "kill" => Parser::kill,
        "reload" => Parser::reload,
        "respawn" => Parser::respawn,
        "normal" => Parser::normal,
        "console" => Parser::console,
        "umask" => Parser::umask,
        "nice" => Parser::nice,
        "oom" => Parser::oom,
        "limit" => Parser::limit,
        "chroot" => Parser::chroot,
        "chdir" => Parser::chdir,
        "setuid" => Parser::setuid,
        "setgid" => Parser::setgid,
        "debug" => Parser::debug,
        "manual" => Parser::manual,
        "usage" => Parser::usage,
        "apparmor" => Parser::apparmor,
        "cgroup" => Parser::cgroup,
        "capabilities" => Parser::capabilities,
        "no" => Parser::no_new_privileges,
        "ready" => Parser::ready,
        "private" => Parser::private,
        "protect" => Parser::protect,
        "read-only" => Parser::read_only,
        "writable" => Parser::writable,
        "inaccessible" => Parser::inaccessible,
        "syscalls" => Parser::syscalls,
        "syscall" => Parser::syscall,
        "address" => Parser::address,
        "memory" => Parser::memory,
        "lock" => Parser::lock,
        "restrict" => Parser::restrict,
        _ => return None,
    };
    Some(handler)
}

/// Linux capability names, lower case without `cap_`, in number order.
pub const CAPABILITIES: &[&str] = &[
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

pub(super) struct Parser<'a> {
    lexer: Lexer<'a>,
    lines: LineIndex<'a>,
    pub(super) def: JobDef,
    diagnostics: Vec<Diagnostic>,
    /// No `end script` line starts at or after this offset (saves rescanning).
    no_block_end_from: Option<usize>,
    /// The name of each stanza read, in order (an override's provenance).
    stanzas: Vec<String>,
}

impl Parser<'_> {
    fn run(&mut self) {
        while !self.lexer.at_end() {
            self.lexer.skip_blanks();
            if !self.lexer.has_token() {
                self.lexer.next_line();
                continue;
            }
            let start = self.lexer.pos();
            if let Err(problem) = self.stanza() {
                self.error(problem);
                self.recover(start);
            }
        }
    }

    fn stanza(&mut self) -> Result<(), Problem> {
        let keyword = self.lexer.token(Delim::Word, false)?;
        match handler(&keyword.text) {
            Some(handler) => {
                let form = handler(self, &keyword)?;
                self.warn_if_not_carried_out(&keyword, form.as_deref());
                let name = form.unwrap_or(keyword.text);
                if !self.stanzas.contains(&name) {
                    self.stanzas.push(name);
                }
                Ok(())
            }
            None if keyword.text.is_empty() => Err(Problem::new(keyword.start, "expected stanza")),
            None => Err(Problem::new(
                keyword.start,
                format!("unknown stanza: {}", keyword.text),
            )),
        }
    }

    fn error(&mut self, problem: Problem) {
        let diagnostic = self.lines.diagnostic(&problem, Severity::Error);
        self.diagnostics.push(diagnostic);
    }

    /// After an error: skips the rest of the line, and the `script` block the
    /// line opened — if it named `script`, or if it was a process stanza
    /// (`pre-start` …) followed by a line that is no stanza — when an `end
    /// script` line follows.
    fn recover(&mut self, stanza_start: usize) {
        let mut scan = self.lexer.at(stanza_start);
        let mut words = Vec::new();
        while scan.has_token() && scan.pos() < self.lexer.pos() {
            match scan.token(Delim::Word, false) {
                Ok(token) => words.push(token.text),
                Err(_) => break,
            }
        }
        loop {
            self.lexer.skip_whitespace();
            if !self.lexer.has_token() {
                break;
            }
            match self.lexer.token(Delim::Word, false) {
                Ok(token) => words.push(token.text),
                Err(_) => break,
            }
        }
        self.lexer.next_line();
        // A stray `end script` closes nothing and opens nothing.
        let opened_script =
            words.first().is_some_and(|w| w != "end") && words.iter().any(|w| w == "script");
        let process_stanza = words.first().is_some_and(|w| {
            ProcessKind::ALL
                .iter()
                .any(|kind| *kind != ProcessKind::Main && kind.name() == w)
        });
        if opened_script || (process_stanza && !self.next_line_is_stanza()) {
            self.skip_block();
        }
    }

    /// Whether the next line with a token starts with a known stanza.
    fn next_line_is_stanza(&self) -> bool {
        let mut probe = self.lexer.clone();
        loop {
            probe.skip_blanks();
            if probe.at_end() {
                return false;
            }
            if probe.has_token() {
                return probe
                    .token(Delim::Word, false)
                    .is_ok_and(|word| handler(&word.text).is_some());
            }
            probe.next_line();
        }
    }

    fn skip_block(&mut self) {
        let from = self.lexer.pos();
        if self.no_block_end_from.is_some_and(|limit| from >= limit) {
            return;
        }
        let mut probe = self.lexer.clone();
        if probe.block().is_some() {
            self.lexer = probe;
        } else {
            self.no_block_end_from = Some(from);
        }
    }

    /// Warns if the stanza — its specific form (`expect fork`) or its name
    /// (`expect`) — is in [`NOT_CARRIED_OUT`].
    fn warn_if_not_carried_out(&mut self, keyword: &Token, form: Option<&str>) {
        let listed = form
            .into_iter()
            .chain([keyword.text.as_str()])
            .find(|key| NOT_CARRIED_OUT.contains(key));
        if let Some(key) = listed {
            let problem = Problem::new(
                keyword.start,
                format!("{key} is parsed but not carried out yet"),
            );
            let diagnostic = self.lines.diagnostic(&problem, Severity::Warning);
            self.diagnostics.push(diagnostic);
        }
    }

    // Reading arguments.

    /// The next argument (dequoted); `what` names it in the error.
    fn arg(&mut self, what: &str) -> Result<Token, Problem> {
        let pos = self.lexer.pos();
        if !self.lexer.has_token() {
            return Err(Problem::new(pos, format!("expected {what}")));
        }
        let token = self.lexer.token(Delim::Word, true)?;
        if token.text.is_empty() {
            return Err(Problem::new(
                pos,
                format!("expected {what} (an empty quoted string is no argument)"),
            ));
        }
        Ok(token)
    }

    /// Whether the line has another argument.
    pub(super) fn has_more(&self) -> bool {
        self.lexer.has_token()
    }

    /// The next word as written (not dequoted): a sub-keyword.
    pub(super) fn word(&mut self, what: &str) -> Result<Token, Problem> {
        let pos = self.lexer.pos();
        if !self.lexer.has_token() {
            return Err(Problem::new(pos, format!("expected {what}")));
        }
        self.lexer.token(Delim::Word, false)
    }

    /// All arguments up to the end of the line (a comment or the newline).
    fn rest(&mut self) -> Result<Vec<Token>, Problem> {
        let mut args = Vec::new();
        while self.lexer.has_token() {
            let pos = self.lexer.pos();
            let token = self.lexer.token(Delim::Word, true)?;
            if token.text.is_empty() {
                return Err(Problem::new(
                    pos,
                    "expected argument (an empty quoted string is no argument)",
                ));
            }
            args.push(token);
        }
        Ok(args)
    }

    /// At least one argument, up to the end of the line.
    pub(super) fn some_args(&mut self, stanza: &str, what: &str) -> Result<Vec<Token>, Problem> {
        if !self.lexer.has_token() {
            return Err(Problem::new(
                self.lexer.pos(),
                format!("expected {what} after {stanza}"),
            ));
        }
        self.rest()
    }

    /// Nothing but a comment may follow on this line.
    pub(super) fn end(&mut self, stanza: &str) -> Result<(), Problem> {
        if self.lexer.has_token() {
            let pos = self.lexer.pos();
            let message = match self.lexer.clone().token(Delim::Word, false) {
                Ok(extra) => format!("unexpected argument to {stanza}: {}", extra.text),
                Err(_) => format!("unexpected argument to {stanza}"),
            };
            return Err(Problem::new(pos, message));
        }
        self.lexer.next_line();
        Ok(())
    }

    /// `STANZA ARG` for a single-valued text stanza.
    fn text(&mut self, stanza: &str, what: &str) -> Result<String, Problem> {
        let value = self.arg(&format!("{what} after {stanza}"))?;
        self.end(stanza)?;
        Ok(value.text)
    }

    // Upstart's informational stanzas.

    fn instance(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.instance = Some(self.text("instance", "instance name")?);
        Ok(None)
    }

    fn description(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.description = Some(self.text("description", "text")?);
        Ok(None)
    }

    fn author(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.author = Some(self.text("author", "text")?);
        Ok(None)
    }

    fn version(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.version = Some(self.text("version", "text")?);
        Ok(None)
    }

    fn usage(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.usage = Some(self.text("usage", "text")?);
        Ok(None)
    }

    fn emits(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let events = self.some_args("emits", "event name")?;
        self.end("emits")?;
        self.def.emits.extend(events.into_iter().map(|t| t.text));
        Ok(None)
    }

    // Environment.

    fn env(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let token = self.arg("KEY[=VALUE] after env")?;
        let (key, value) = match token.text.split_once('=') {
            Some((key, value)) => (key.to_string(), Some(value.to_string())),
            None => (token.text.clone(), None),
        };
        if key.is_empty() {
            return Err(Problem::new(
                token.start,
                "expected variable name before '='",
            ));
        }
        self.end("env")?;
        self.def.env.push(EnvVar { key, value });
        Ok(None)
    }

    fn export(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let keys = self.some_args("export", "variable name")?;
        self.end("export")?;
        self.def.export.extend(keys.into_iter().map(|t| t.text));
        Ok(None)
    }

    // Events.

    fn start(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.on("start")?;
        self.def.start_on = Some(event::parse_start_on(&mut self.lexer)?);
        self.end("start on")?;
        // Upstart's `manual` only discards the `start on` seen before it.
        self.def.manual = false;
        Ok(form("start on"))
    }

    fn stop(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.on("stop")?;
        self.def.stop_on = Some(event::parse_on(&mut self.lexer)?);
        self.end("stop on")?;
        Ok(form("stop on"))
    }

    fn on(&mut self, stanza: &str) -> Result<(), Problem> {
        let on = self.word(&format!("'on' after {stanza}"))?;
        if on.text != "on" {
            return Err(Problem::new(
                on.start,
                format!("unknown argument to {stanza}: {} (expected 'on')", on.text),
            ));
        }
        Ok(())
    }

    fn manual(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.end("manual")?;
        self.def.manual = true;
        self.def.start_on = None;
        Ok(None)
    }

    // Processes.

    fn exec(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.main = Some(self.exec_command("exec")?);
        Ok(None)
    }

    fn script(&mut self, keyword: &Token) -> Result<Form, Problem> {
        self.def.main = Some(self.script_block(keyword)?);
        Ok(None)
    }

    fn pre_start(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.process(ProcessKind::PreStart)
    }

    fn post_start(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.process(ProcessKind::PostStart)
    }

    fn pre_stop(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.process(ProcessKind::PreStop)
    }

    fn post_stop(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.process(ProcessKind::PostStop)
    }

    /// `pre-start exec …` / `pre-start script …` and the like.
    fn process(&mut self, kind: ProcessKind) -> Result<Form, Problem> {
        let stanza = kind.name();
        let how = self.word(&format!("'exec' or 'script' after {stanza}"))?;
        let process = match how.text.as_str() {
            "exec" => self.exec_command(stanza)?,
            "script" => self.script_block(&how)?,
            other => {
                return Err(Problem::new(
                    how.start,
                    format!("unknown argument to {stanza}: {other} (expected 'exec' or 'script')"),
                ));
            }
        };
        match kind {
            ProcessKind::Main => self.def.main = Some(process),
            ProcessKind::PreStart => self.def.pre_start = Some(Box::new(process)),
            ProcessKind::PostStart => self.def.post_start = Some(Box::new(process)),
            ProcessKind::PreStop => self.def.pre_stop = Some(Box::new(process)),
            ProcessKind::PostStop => self.def.post_stop = Some(Box::new(process)),
        }
        Ok(Some(format!("{stanza} {}", how.text)))
    }

    /// The rest of the line, as written (quotes kept, continuations joined).
    fn exec_command(&mut self, stanza: &str) -> Result<Process, Problem> {
        if !self.lexer.has_token() {
            return Err(Problem::new(
                self.lexer.pos(),
                format!("expected command after {stanza}"),
            ));
        }
        let command = self.lexer.token(Delim::Line, false)?;
        self.lexer.next_line();
        Ok(Process::Exec {
            command: command.text,
        })
    }

    /// `script [INTERPRETER ARG…]`, the block, `end script`.
    fn script_block(&mut self, keyword: &Token) -> Result<Process, Problem> {
        let interpreter = self.rest()?.into_iter().map(|t| t.text).collect();
        self.end("script")?;
        let body = self
            .lexer
            .block()
            .ok_or_else(|| Problem::new(keyword.start, "script without an 'end script' line"))?;
        Ok(Process::Script { interpreter, body })
    }

    // Lifecycle.

    fn task(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.end("task")?;
        self.def.task = true;
        Ok(None)
    }

    fn respawn(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        if !self.lexer.has_token() {
            self.lexer.next_line();
            self.def.respawn = true;
            return Ok(None);
        }
        let sub = self.word("'limit' after respawn")?;
        if sub.text != "limit" {
            return Err(Problem::new(
                sub.start,
                format!(
                    "unknown argument to respawn: {} (expected 'limit')",
                    sub.text
                ),
            ));
        }
        let count = self.arg("COUNT or 'unlimited' after respawn limit")?;
        let limit = if count.text == "unlimited" {
            RespawnLimit::Unlimited
        } else {
            let count = number::<u32>(&count, "respawn count")?;
            let interval = self.arg("INTERVAL after respawn limit COUNT")?;
            let interval = number::<u32>(&interval, "respawn interval (seconds)")?;
            RespawnLimit::Limit { count, interval }
        };
        self.end("respawn limit")?;
        self.def.respawn_limit = limit;
        Ok(form("respawn limit"))
    }

    fn normal(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let sub = self.word("'exit' after normal")?;
        if sub.text != "exit" {
            return Err(Problem::new(
                sub.start,
                format!("unknown argument to normal: {} (expected 'exit')", sub.text),
            ));
        }
        let mut matches = Vec::new();
        loop {
            let token = self.arg("exit status or signal after normal exit")?;
            matches.push(exit_match(&token)?);
            if !self.lexer.has_token() {
                break;
            }
        }
        self.end("normal exit")?;
        self.def.normal_exit.extend(matches);
        Ok(form("normal exit"))
    }

    fn kill(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let sub = self.word("'timeout' or 'signal' after kill")?;
        match sub.text.as_str() {
            "timeout" => {
                let token = self.arg("seconds after kill timeout")?;
                let seconds = number::<u32>(&token, "kill timeout (seconds)")?;
                self.end("kill timeout")?;
                self.def.kill_timeout = seconds;
                Ok(form("kill timeout"))
            }
            "signal" => {
                let token = self.arg("signal after kill signal")?;
                let signal = signal(&token)?;
                self.end("kill signal")?;
                self.def.kill_signal = signal;
                Ok(form("kill signal"))
            }
            other => Err(Problem::new(
                sub.start,
                format!("unknown argument to kill: {other} (expected 'timeout' or 'signal')"),
            )),
        }
    }

    fn reload(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let sub = self.word("'signal' after reload")?;
        if sub.text != "signal" {
            return Err(Problem::new(
                sub.start,
                format!(
                    "unknown argument to reload: {} (expected 'signal')",
                    sub.text
                ),
            ));
        }
        let token = self.arg("signal after reload signal")?;
        let signal = signal(&token)?;
        self.end("reload signal")?;
        self.def.reload_signal = signal;
        Ok(form("reload signal"))
    }

    fn expect(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let kind = self.arg(
            "readiness after expect (fork, daemon, stop, none, notify, fd N, listen, dbus NAME)",
        )?;
        let expect = match kind.text.as_str() {
            "none" => Expect::None,
            "fork" => Expect::Fork,
            "daemon" => Expect::Daemon,
            "stop" => Expect::Stop,
            "notify" => Expect::Notify,
            "listen" => Expect::Listen,
            "fd" => {
                let token = self.arg("file descriptor number after expect fd")?;
                let fd = number::<i32>(&token, "file descriptor (3 or more)")?;
                // 0, 1 and 2 are the job's standard input and output.
                if fd < 3 {
                    return Err(Problem::new(
                        token.start,
                        format!("illegal file descriptor: {fd} (expected 3 or more)"),
                    ));
                }
                Expect::Fd(fd)
            }
            "dbus" => Expect::Dbus(self.arg("bus name after expect dbus")?.text),
            other => {
                return Err(Problem::new(
                    kind.start,
                    format!(
                        "unknown argument to expect: {other} (expected fork, daemon, stop, none, notify, fd, listen or dbus)"
                    ),
                ));
            }
        };
        self.end("expect")?;
        self.def.expect = expect;
        let specific = format!("expect {}", kind.text);
        Ok(form(&specific))
    }

    fn ready(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let sub = self.word("'timeout' after ready")?;
        if sub.text != "timeout" {
            return Err(Problem::new(
                sub.start,
                format!(
                    "unknown argument to ready: {} (expected 'timeout')",
                    sub.text
                ),
            ));
        }
        let token = self.arg("seconds after ready timeout")?;
        let seconds = number::<u32>(&token, "ready timeout (seconds, 1 or more)")?;
        if seconds == 0 {
            return Err(Problem::new(
                token.start,
                "illegal ready timeout: 0 (expected seconds, 1 or more)",
            ));
        }
        self.end("ready timeout")?;
        self.def.ready_timeout = Some(seconds);
        Ok(form("ready timeout"))
    }

    fn console(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let token = self.arg("none, log, output or owner after console")?;
        let console = match token.text.as_str() {
            "none" => Console::None,
            "log" => Console::Log,
            "output" => Console::Output,
            "owner" => Console::Owner,
            other => {
                return Err(Problem::new(
                    token.start,
                    format!(
                        "unknown argument to console: {other} (expected none, log, output or owner)"
                    ),
                ));
            }
        };
        self.end("console")?;
        self.def.console = console;
        let specific = format!("console {}", token.text);
        Ok(form(&specific))
    }

    // Process environment and privileges.

    fn umask(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let token = self.arg("octal mask after umask")?;
        let mask = u32::from_str_radix(&token.text, 8)
            .ok()
            .filter(|mask| *mask <= 0o777 && token.text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                Problem::new(
                    token.start,
                    format!("illegal umask: {} (expected octal 000 to 777)", token.text),
                )
            })?;
        self.end("umask")?;
        self.def.umask = Some(mask);
        Ok(None)
    }

    fn nice(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let token = self.arg("priority after nice")?;
        let nice = number::<i32>(&token, "nice value (-20 to 19)")?;
        if !(-20..=19).contains(&nice) {
            return Err(Problem::new(
                token.start,
                format!("illegal nice value: {nice} (expected -20 to 19)"),
            ));
        }
        self.end("nice")?;
        self.def.nice = Some(nice);
        Ok(None)
    }

    /// `oom score N|never`, and Upstart's older `oom N|never` (-17..=15,
    /// scaled to a score as Upstart does).
    fn oom(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let token = self.arg("'score' after oom")?;
        let score = match token.text.as_str() {
            "score" => {
                let value = self.arg("score or 'never' after oom score")?;
                if value.text == "never" {
                    OomScore::Never
                } else {
                    let score = number::<i32>(&value, "oom score (-1000 to 1000 or never)")?;
                    if !(-1000..=1000).contains(&score) {
                        return Err(Problem::new(
                            value.start,
                            format!("illegal oom score: {score} (expected -1000 to 1000 or never)"),
                        ));
                    }
                    OomScore::Adj(score)
                }
            }
            "never" => OomScore::Never,
            _ => {
                let adj = number::<i32>(&token, "oom adjustment (-17 to 15 or never)")?;
                if !(-17..=15).contains(&adj) {
                    return Err(Problem::new(
                        token.start,
                        format!("illegal oom adjustment: {adj} (expected -17 to 15 or never)"),
                    ));
                }
                OomScore::Adj(adj * 1000 / if adj < 0 { 17 } else { 15 })
            }
        };
        self.end("oom")?;
        self.def.oom_score = Some(score);
        Ok(form("oom score"))
    }

    fn limit(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let token = self.arg("resource after limit")?;
        let resource = Resource::from_name(&token.text).ok_or_else(|| {
            Problem::new(
                token.start,
                format!("unknown resource for limit: {}", token.text),
            )
        })?;
        let soft = self.arg(&format!("soft and hard values after limit {}", token.text))?;
        let soft = limit_value(&soft)?;
        let hard = self.arg(&format!(
            "hard value after limit {} SOFT (limit needs a soft and a hard value)",
            token.text
        ))?;
        let hard = limit_value(&hard)?;
        self.end("limit")?;
        let limit = Limit {
            resource,
            soft,
            hard,
        };
        match self.def.limits.iter_mut().find(|l| l.resource == resource) {
            Some(existing) => *existing = limit,
            None => self.def.limits.push(limit),
        }
        let specific = format!("limit {}", token.text);
        Ok(form(&specific))
    }

    fn chroot(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.chroot = Some(self.text("chroot", "directory")?);
        Ok(None)
    }

    fn chdir(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.chdir = Some(self.text("chdir", "directory")?);
        Ok(None)
    }

    fn setuid(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.setuid = Some(self.text("setuid", "user name")?);
        Ok(None)
    }

    fn setgid(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.def.setgid = Some(self.text("setgid", "group name")?);
        Ok(None)
    }

    fn debug(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        self.end("debug")?;
        self.def.debug = true;
        Ok(None)
    }

    fn apparmor(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let sub = self.word("'load' or 'switch' after apparmor")?;
        match sub.text.as_str() {
            "load" => {
                let profile = self.arg("profile after apparmor load")?;
                self.end("apparmor load")?;
                self.def.apparmor_load = Some(profile.text);
            }
            "switch" => {
                let profile = self.arg("profile after apparmor switch")?;
                self.end("apparmor switch")?;
                self.def.apparmor_switch = Some(profile.text);
            }
            other => {
                return Err(Problem::new(
                    sub.start,
                    format!("unknown argument to apparmor: {other} (expected 'load' or 'switch')"),
                ));
            }
        }
        let specific = format!("apparmor {}", sub.text);
        Ok(form(&specific))
    }

    /// `cgroup CONTROLLER [NAME] [KEY VALUE]`: two words are a name, three a
    /// setting, four both (Upstart's reading).
    fn cgroup(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let controller = self.arg("controller after cgroup")?.text;
        let mut more = Vec::new();
        while more.len() < 3 && self.lexer.has_token() {
            more.push(self.arg("argument")?.text);
        }
        self.end("cgroup")?;
        let mut more = more.into_iter();
        let cgroup = match (more.next(), more.next(), more.next()) {
            (None, _, _) => Cgroup {
                controller,
                name: None,
                setting: None,
            },
            (Some(name), None, _) => Cgroup {
                controller,
                name: Some(name),
                setting: None,
            },
            (Some(key), Some(value), None) => Cgroup {
                controller,
                name: None,
                setting: Some((key, value)),
            },
            (Some(name), Some(key), Some(value)) => Cgroup {
                controller,
                name: Some(name),
                setting: Some((key, value)),
            },
        };
        self.def.cgroups.push(cgroup);
        Ok(None)
    }

    // keel's own stanzas.

    /// `capabilities CAP…` adds to the set; `capabilities none` empties it.
    fn capabilities(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        let names = self.some_args("capabilities", "capability names or 'none'")?;
        if names.iter().any(|t| t.text == "none") {
            if let Some(extra) = names.iter().find(|t| t.text != "none") {
                return Err(Problem::new(
                    extra.start,
                    format!("unexpected argument to capabilities none: {}", extra.text),
                ));
            }
            self.def.capabilities = Some(Vec::new());
        } else {
            let mut set = self.def.capabilities.take().unwrap_or_default();
            for token in &names {
                let name = capability(token)?;
                if !set.contains(&name) {
                    set.push(name);
                }
            }
            self.def.capabilities = Some(set);
        }
        self.end("capabilities")?;
        Ok(None)
    }

    fn no_new_privileges(&mut self, _keyword: &Token) -> Result<Form, Problem> {
        for expected in ["new", "privileges"] {
            let word = self.word("'new privileges' after no")?;
            if word.text != expected {
                return Err(Problem::new(
                    word.start,
                    format!(
                        "unknown stanza: no {} (expected 'no new privileges')",
                        word.text
                    ),
                ));
            }
        }
        self.end("no new privileges")?;
        self.def.no_new_privileges = true;
        Ok(form("no new privileges"))
    }
}

/// A decimal number of type `T` (a leading `+` or `-` as Rust reads it).
fn number<T: std::str::FromStr>(token: &Token, what: &str) -> Result<T, Problem> {
    token
        .text
        .parse::<T>()
        .map_err(|_| Problem::new(token.start, format!("illegal {what}: {}", token.text)))
}

/// A signal by name (`TERM`, `SIGTERM`) or number 0..=64. Upstart takes any
/// number up to INT_MAX; keel refuses those no kernel has. 0 is used in
/// practice (`reload signal 0`) and kept.
fn signal(token: &Token) -> Result<Signal, Problem> {
    if token.text.bytes().all(|b| b.is_ascii_digit()) {
        return match token.text.parse::<i32>() {
            Ok(n @ 0..=64) => Ok(Signal(n)),
            _ => Err(Problem::new(
                token.start,
                format!(
                    "illegal signal: {} (expected a name or 0 to 64)",
                    token.text
                ),
            )),
        };
    }
    Signal::parse(&token.text)
        .ok_or_else(|| Problem::new(token.start, format!("unknown signal: {}", token.text)))
}

/// `normal exit` takes exit statuses (0..=255) and signal names.
fn exit_match(token: &Token) -> Result<ExitMatch, Problem> {
    if token.text.bytes().all(|b| b.is_ascii_digit()) {
        return match token.text.parse::<i32>() {
            Ok(status @ 0..=255) => Ok(ExitMatch::Status(status)),
            _ => Err(Problem::new(
                token.start,
                format!(
                    "illegal exit status: {} (expected 0 to 255 or a signal name)",
                    token.text
                ),
            )),
        };
    }
    Signal::parse(&token.text)
        .map(ExitMatch::Signal)
        .ok_or_else(|| {
            Problem::new(
                token.start,
                format!(
                    "illegal exit status: {} (expected 0 to 255 or a signal name)",
                    token.text
                ),
            )
        })
}

fn limit_value(token: &Token) -> Result<LimitValue, Problem> {
    if token.text == "unlimited" {
        return Ok(LimitValue::Unlimited);
    }
    token
        .text
        .parse::<u64>()
        .map(LimitValue::Value)
        .map_err(|_| {
            Problem::new(
                token.start,
                format!(
                    "illegal limit: {} (expected a number or 'unlimited')",
                    token.text
                ),
            )
        })
}

/// `CAP_NET_ADMIN`, `cap_net_admin` and `net_admin` all name `net_admin`.
fn capability(token: &Token) -> Result<String, Problem> {
    let lower = token.text.to_ascii_lowercase();
    let name = lower.strip_prefix("cap_").unwrap_or(&lower);
    if CAPABILITIES.contains(&name) {
        Ok(name.to_string())
    } else {
        Err(Problem::new(
            token.start,
            format!("unknown capability: {}", token.text),
        ))
    }
}
