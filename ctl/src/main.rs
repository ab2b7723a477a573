//! initctl: drive keel from the command line, in Upstart's words.
//!
//! Invoked through a link named `start`, `stop`, `restart`, `reload`, `status`,
//! `telinit`, `runlevel`, `poweroff`, `reboot` or `halt`, it is that command. It
//! speaks the control protocol (`keel_proto::ctl`) to the supervisor's socket:
//! `--socket PATH`, else `KEEL_SOCKET`, else `/run/keel/control`.
//!
//! Output and exit codes follow Upstart's initctl (README, "initctl"): answers on
//! stdout, errors on stderr as `NAME: MESSAGE`, exit status 0 or 1. `--json` prints
//! every query's answer in the schema the README documents.
//!
//! A status query is mostly process start, so initctl starts as a C program does
//! (`no_main`): std's own start-up, which reads /proc/self/maps to find the main
//! thread's stack and installs a handler for stack overflows, cost as much as the
//! query itself. What it did that initctl needs, main does: stdout is flushed at
//! the end. SIGPIPE keeps its default, as in Upstart's initctl.
#![cfg_attr(not(test), no_main)]

mod completion;
mod man;

use clap::{Parser, Subcommand};
use keel_proto::ctl::{
    self, ClientHello, ConfigProblem, Error, ErrorKind, EventRef, Goal, InstanceStatus, JobConfig,
    LoadFailure, PowerAction, Request, Response, ServerHello, TimelineEntry,
};
use keel_proto::frame;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug, PartialEq)]
#[command(name = "initctl", version, about = "Control keel, the init system")]
struct Cli {
    /// The supervisor's control socket.
    #[arg(long, global = true, env = ctl::SOCKET_ENV, default_value = ctl::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print answers to queries as JSON (schema in keel's README).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug, PartialEq)]
enum Command {
    /// Start a job (within a job, without JOB: that job's own instance).
    Start(JobArgs),
    /// Stop a job.
    Stop(JobArgs),
    /// Restart a job: kill, post-stop, pre-start, main.
    Restart(JobArgs),
    /// Send a job's main process its reload signal (SIGHUP unless `reload signal`).
    Reload(JobArgs),
    /// Show a job's goal, state and processes (and, after a failure, the last
    /// lines of its log).
    Status(QueryArgs),
    /// The boot: when each job was requested and running, the slowest, and the
    /// chain of jobs the last one waited for.
    Timeline {
        /// Also write the boot as a picture (SVG) to FILE.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Print a job's log (`console log`), each line with its time.
    Log {
        /// Only the last N lines.
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        /// Go on printing lines as the job writes them (until interrupted).
        #[arg(short = 'f', long)]
        follow: bool,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// List every job and instance.
    List,
    /// Emit an event; wait until every job it started has started (a task: has
    /// run) and every job it stopped has stopped.
    Emit {
        /// Do not wait for the event to finish before exiting.
        #[arg(short = 'n', long)]
        no_wait: bool,
        event: Option<String>,
        /// KEY=VALUE pairs for the event's environment.
        env: Vec<String>,
    },
    /// Re-read the job files; exit 1, naming each, if some did not load.
    ReloadConfiguration,
    /// Report job files that did not load, and events and jobs that conditions name
    /// but nothing provides (exit 1 if any).
    CheckConfig {
        /// Events not to report (comma-separated).
        #[arg(short = 'i', long = "ignore-events", value_delimiter = ',')]
        ignore: Vec<String>,
        /// Report every unreachable event (keel always does; accepted for Upstart).
        #[arg(short = 'w', long)]
        warn: bool,
        /// Check this job only.
        conf: Option<String>,
    },
    /// Show emits, start on and stop on of every job (or of CONF).
    ShowConfig {
        /// Enumerate the events (and the jobs of job events) that start or stop each job.
        #[arg(short = 'e', long)]
        enumerate: bool,
        conf: Option<String>,
    },
    /// Replace the supervisor with a new binary, keeping every job.
    Reexec {
        #[arg(long)]
        binary: Option<String>,
    },
    /// Runlevel 0, then stop every job and power off.
    Poweroff,
    /// Runlevel 6, then stop every job and reboot.
    Reboot,
    /// Runlevel 0, then stop every job and halt.
    Halt,
    /// Show keel's version.
    Version,
    /// Change the runlevel: 0-6 or S emit `runlevel`; Q reloads the configuration;
    /// U re-executes the supervisor.
    Telinit {
        /// KEY=VALUE to add to the runlevel event.
        #[arg(short = 'e')]
        env: Vec<String>,
        runlevel: Option<String>,
    },
    /// Show the previous and current runlevel.
    Runlevel,
    /// Show or set the supervisor's log priority (debug, info, message, warn, error, fatal).
    LogPriority { level: Option<String> },
    /// Show a job's usage text.
    Usage { job: Option<String> },
    /// List the job-environment table (defaults every job started afterwards gets).
    ListEnv(EnvScope),
    /// Show one variable of the job-environment table.
    GetEnv {
        #[command(flatten)]
        scope: EnvScope,
        name: Option<String>,
    },
    /// Set variables of the job-environment table (NAME alone: from this environment).
    SetEnv {
        #[command(flatten)]
        scope: EnvScope,
        /// Keep the value of a variable already set.
        #[arg(short = 'r', long)]
        retain: bool,
        /// NAME=VALUE or NAME.
        vars: Vec<String>,
    },
    /// Remove variables from the job-environment table.
    UnsetEnv {
        #[command(flatten)]
        scope: EnvScope,
        names: Vec<String>,
    },
    /// Reset the job-environment table to its defaults.
    ResetEnv(EnvScope),
    /// Tell keel that /var/log is writable.
    NotifyDiskWriteable,
    /// Show how exposed each job is, from 0 (every protection) to 10 (none), or
    /// JOB's findings one by one.
    Security { job: Option<String> },
    /// Print a shell completion script (bash, zsh or fish); it completes job
    /// names by asking the running supervisor.
    Completions { shell: clap_complete::Shell },
    /// The names of the jobs the supervisor knows, one a line, for completion
    /// scripts; nothing (and exit 0) when no supervisor answers.
    #[command(name = "__complete-jobs", hide = true)]
    CompleteJobs,
    /// Print a man page (roff): initctl (the default), keel-init,
    /// keel-supervisor or keel-job.
    Man {
        #[arg(default_value = "initctl", value_parser = clap::builder::PossibleValuesParser::new(man::PAGES))]
        page: String,
    },
}

#[derive(clap::Args, Debug, PartialEq)]
struct JobArgs {
    /// Return once the request is accepted, without waiting for the job.
    #[arg(short = 'n', long)]
    no_wait: bool,
    job: Option<String>,
    /// KEY=VALUE pairs for the job's environment (and to pick an instance).
    env: Vec<String>,
}

#[derive(clap::Args, Debug, PartialEq)]
struct QueryArgs {
    job: Option<String>,
    /// KEY=VALUE pairs that pick an instance.
    env: Vec<String>,
}

#[derive(clap::Args, Debug, PartialEq)]
struct EnvScope {
    /// The global table (keel has only that one; accepted for Upstart).
    #[arg(short = 'g', long)]
    global: bool,
}

/// The names initctl answers to as a link.
const LINKS: &[&str] = &[
    "start", "stop", "restart", "reload", "status", "telinit", "runlevel", "poweroff", "reboot",
    "halt",
];

/// A failure: the message (printed as `NAME: MESSAGE`) and whether to suggest help.
struct Failure {
    message: String,
    usage: bool,
    /// The supervisor closed the connection before answering (see [`ask_again`]).
    lost: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            usage: false,
            lost: false,
        }
    }
}

fn usage_error(message: &str) -> Failure {
    Failure {
        message: message.to_string(),
        usage: true,
        lost: false,
    }
}

/// How long a query is asked again while the supervisor is away.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// [`ask`], across a supervisor that goes away before it answers. A planned
/// re-exec hands every connection to the new image, so only a crash or a kill
/// does that — and the control socket waits in keel-init meanwhile, for the next
/// supervisor. A query changes nothing: it is asked again (for up to
/// [`RETRY_FOR`]). Any other request may or may not have taken effect before the
/// supervisor went: it is not repeated, and the message says so.
fn ask_again(socket: &Path, request: &Request) -> Result<(Response, u32), Failure> {
    let deadline = std::time::Instant::now() + RETRY_FOR;
    loop {
        match ask(socket, request) {
            Err(f) if f.lost && request.is_query() && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(f) if f.lost && request.is_query() => {
                return Err(format!(
                    "the supervisor closed the connection before answering, for {} s; \
                     nothing was changed",
                    RETRY_FOR.as_secs()
                )
                .into());
            }
            Err(f) if f.lost => return Err(outcome_after_loss(socket, request).into()),
            other => return other,
        }
    }
}

/// What can be said of a change whose supervisor went away before answering.
/// A `start` or `stop` is known to have taken effect if the job's goal is now
/// its (the next supervisor is asked, as a query); whether it then reached its
/// end is not. Anything else: unknown.
fn outcome_after_loss(socket: &Path, request: &Request) -> String {
    let lost = "the supervisor closed the connection before answering (it crashed or was \
                killed)";
    let (job, instance, env, stopping) = match request {
        Request::Start {
            job, instance, env, ..
        } => (job, instance, env, false),
        Request::Stop {
            job, instance, env, ..
        } => (job, instance, env, true),
        _ => return format!("{lost}: whether the request took effect is unknown"),
    };
    let status = Request::Status {
        job: job.clone(),
        instance: instance.clone(),
        env: env.clone(),
    };
    match ask_again(socket, &status) {
        Ok((Response::Instances(list), _)) if list.len() == 1 => {
            let now = format_status(&list[0], false);
            let now = now.lines().next().unwrap_or_default();
            if (list[0].goal == Goal::Stop) == stopping {
                format!("{lost}; the request took effect, its end was not awaited: {now}")
            } else {
                format!("{lost}; the request did not take effect, or failed since: {now}")
            }
        }
        _ => format!("{lost}: whether the request took effect is unknown"),
    }
}

// SAFETY: with `no_main` this is the program's only `main`, with the signature
// the C start-up calls it with; it reads its arguments through std.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    let code = initctl();
    // std's start-up is not there to flush it at exit.
    let flushed = std::io::stdout().flush();
    if code == ExitCode::SUCCESS && flushed.is_ok() {
        0
    } else {
        1
    }
}

/// The whole command: parse, ask, show; the exit status.
#[cfg_attr(test, allow(dead_code))] // the test harness has its own main
fn initctl() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("initctl")
        .to_string();
    let name = if LINKS.contains(&invoked.as_str()) {
        args[0] = "initctl".into();
        args.insert(1, invoked.clone());
        invoked
    } else {
        "initctl".to_string()
    };
    let parsed = match plain_query(&args) {
        Some(cli) => Ok(cli),
        None => Cli::try_parse_from(&args),
    };
    let outcome = match parsed {
        Ok(cli) => run(&cli),
        Err(e) => parse_failure(e),
    };
    match outcome {
        Ok(code) => code,
        Err(f) => {
            eprintln!("{name}: {}", f.message);
            if f.usage {
                eprintln!("Try `{name} --help' for more information.");
            }
            ExitCode::from(1)
        }
    }
}

/// What clap would make of `initctl VERB JOB` (status, start, stop, restart,
/// reload) and `initctl list` without options, the commands scripts, monitors
/// and operators run most, without building clap's whole command tree: that
/// was half of such a call's own time (0.69 ms of CPU for a status against
/// 0.34 ms for a static Rust program that does nothing, most of the rest page
/// faults in clap's code). `None` for anything else, which clap parses. The
/// tests hold this to clap's verdict.
fn plain_query(args: &[String]) -> Option<Cli> {
    let command = match args {
        [_, verb, job] if !job.is_empty() && !job.starts_with('-') => {
            let job = JobArgs {
                no_wait: false,
                job: Some(job.clone()),
                env: Vec::new(),
            };
            match verb.as_str() {
                "status" => Command::Status(QueryArgs {
                    job: job.job,
                    env: job.env,
                }),
                "start" => Command::Start(job),
                "stop" => Command::Stop(job),
                "restart" => Command::Restart(job),
                "reload" => Command::Reload(job),
                _ => return None,
            }
        }
        [_, verb] if verb == "list" => Command::List,
        _ => return None,
    };
    let socket = match std::env::var_os(ctl::SOCKET_ENV) {
        None => PathBuf::from(ctl::DEFAULT_SOCKET),
        // clap refuses an empty path: let it say so.
        Some(path) if path.is_empty() => return None,
        Some(path) => PathBuf::from(path),
    };
    Some(Cli {
        socket,
        json: false,
        command,
    })
}

/// clap's verdict in Upstart's words (`invalid command: foo`), exit status 1;
/// `--help` and `--version` print and succeed.
fn parse_failure(e: clap::Error) -> Result<ExitCode, Failure> {
    use clap::error::{ContextKind, ContextValue, ErrorKind as Kind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let message = match e.kind() {
        Kind::DisplayHelp | Kind::DisplayVersion => {
            let _ = e.print();
            return Ok(ExitCode::SUCCESS);
        }
        Kind::MissingSubcommand | Kind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "missing command".to_string()
        }
        Kind::InvalidSubcommand => format!(
            "invalid command: {}",
            context(ContextKind::InvalidSubcommand)
        ),
        Kind::UnknownArgument => format!("invalid option: {}", context(ContextKind::InvalidArg)),
        _ => e
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string(),
    };
    Err(usage_error(&message))
}

/// The job a job command names: JOB, or within a job (no JOB given) the job's own
/// instance from `UPSTART_JOB` and `UPSTART_INSTANCE`, as Upstart does.
struct Target {
    job: String,
    instance: Option<String>,
    env: Vec<String>,
}

fn target(job: &Option<String>, env: &[String]) -> Result<Target, Failure> {
    if let Some(job) = job {
        return Ok(Target {
            job: job.clone(),
            instance: None,
            env: env.to_vec(),
        });
    }
    match (
        std::env::var("UPSTART_JOB"),
        std::env::var("UPSTART_INSTANCE"),
    ) {
        (Ok(job), Ok(instance)) => Ok(Target {
            job,
            instance: Some(instance),
            env: Vec::new(),
        }),
        _ => Err(usage_error("missing job name")),
    }
}

/// How to show an answer: what was asked decides the words.
enum Show {
    /// start, stop, restart: the status, or the failure in Upstart's words
    /// ("Job failed to start").
    Change {
        failed: &'static str,
        job: String,
    },
    /// `status`: with the last lines of the log of each failed instance, in
    /// the order of the answer's instances (filled in once it is there).
    Status {
        tails: Vec<Vec<String>>,
    },
    /// `timeline`, and the picture to write, if asked.
    Timeline {
        svg: Option<PathBuf>,
    },
    /// `list`: the status lines alone, as Upstart's.
    List,
    /// The answer is not shown (reload, emit, power…).
    Nothing,
    Config {
        enumerate: bool,
    },
    /// check-config's findings, after the job files that did not load.
    Problems {
        failed: Vec<LoadFailure>,
    },
    /// `security`: the exposure of each job (`detail`: with every finding).
    Security {
        detail: bool,
    },
    Version,
    Runlevel,
    Value {
        key: &'static str,
        name: Option<String>,
    },
    Usage {
        job: String,
    },
    ListEnv,
}

fn run(cli: &Cli) -> Result<ExitCode, Failure> {
    let change = |failed, t: &Target| Show::Change {
        failed,
        job: t.job.clone(),
    };
    let job_request = |a: &JobArgs, make: fn(Target, bool) -> Request, failed| {
        let t = target(&a.job, &a.env)?;
        // Within a job the request never waits: the job would wait for itself.
        let wait = !a.no_wait && t.instance.is_none();
        let show = change(failed, &t);
        Ok::<_, Failure>((make(t, wait), show))
    };
    let (request, show) = match &cli.command {
        Command::Start(a) => job_request(
            a,
            |t, wait| Request::Start {
                job: t.job,
                instance: t.instance,
                env: t.env,
                wait,
            },
            "Job failed to start",
        )?,
        Command::Stop(a) => job_request(
            a,
            |t, wait| Request::Stop {
                job: t.job,
                instance: t.instance,
                env: t.env,
                wait,
            },
            "Job failed while stopping",
        )?,
        Command::Restart(a) => job_request(
            a,
            |t, wait| Request::Restart {
                job: t.job,
                instance: t.instance,
                env: t.env,
                wait,
            },
            "Job failed to restart",
        )?,
        Command::Reload(a) => {
            let t = target(&a.job, &a.env)?;
            let request = Request::Reload {
                job: t.job,
                instance: t.instance,
                env: t.env,
            };
            (request, Show::Nothing)
        }
        Command::Status(a) => {
            let t = target(&a.job, &a.env)?;
            let request = Request::Status {
                job: t.job,
                instance: t.instance,
                env: t.env,
            };
            (request, Show::Status { tails: Vec::new() })
        }
        Command::List => (Request::List, Show::List),
        Command::Timeline { svg } => (Request::Timeline, Show::Timeline { svg: svg.clone() }),
        Command::Log {
            lines,
            follow,
            query,
        } => {
            let t = target(&query.job, &query.env)?;
            let path = log_path(&cli.socket, t.job, t.instance, t.env)?;
            return print_log(Path::new(&path), *lines, *follow, cli.json);
        }
        Command::Emit {
            no_wait,
            event,
            env,
        } => {
            let event = event
                .clone()
                .ok_or_else(|| usage_error("missing event name"))?;
            let request = Request::Emit {
                event,
                env: env.clone(),
                wait: !no_wait,
            };
            (request, Show::Nothing)
        }
        Command::ReloadConfiguration => (Request::ReloadConfiguration, Show::Nothing),
        Command::CheckConfig { ignore, conf, .. } => {
            let failed: Vec<LoadFailure> = match ask(&cli.socket, &Request::LoadFailures)?.0 {
                Response::LoadFailures(failed) => failed
                    .into_iter()
                    .filter(|f| conf.as_ref().is_none_or(|job| &f.job == job))
                    .collect(),
                other => return render(&Show::Nothing, other, 0, false, &mut String::new()),
            };
            if !failed.is_empty() && conf.is_some() {
                // The job CONF is not defined: its file's errors are the findings.
                let mut out = String::new();
                let show = Show::Problems { failed };
                let code = render(&show, Response::Problems(Vec::new()), 0, cli.json, &mut out)?;
                print!("{out}");
                return Ok(code);
            }
            let request = Request::CheckConfig {
                job: conf.clone(),
                ignore: ignore.clone(),
            };
            (request, Show::Problems { failed })
        }
        Command::ShowConfig { enumerate, conf } => (
            Request::ShowConfig { job: conf.clone() },
            Show::Config {
                enumerate: *enumerate,
            },
        ),
        Command::Security { job } => (
            Request::ShowConfig { job: job.clone() },
            Show::Security {
                detail: job.is_some(),
            },
        ),
        Command::Reexec { binary } => (
            Request::Reexec {
                binary: binary.clone(),
            },
            Show::Nothing,
        ),
        Command::Poweroff => (power(PowerAction::PowerOff), Show::Nothing),
        Command::Reboot => (power(PowerAction::Reboot), Show::Nothing),
        Command::Halt => (power(PowerAction::Halt), Show::Nothing),
        Command::Version => (Request::Version, Show::Version),
        Command::Telinit { env, runlevel } => {
            let runlevel = runlevel
                .as_deref()
                .ok_or_else(|| usage_error("missing runlevel"))?;
            let request = match runlevel.as_bytes() {
                [b'q' | b'Q'] => Request::ReloadConfiguration,
                [level @ (b'0'..=b'6' | b's' | b'S' | b'u' | b'U')] => Request::Telinit {
                    runlevel: level.to_ascii_uppercase(),
                    env: env.clone(),
                },
                _ => return Err(usage_error(&format!("illegal runlevel: {runlevel}"))),
            };
            (request, Show::Nothing)
        }
        Command::Runlevel => (Request::Runlevel, Show::Runlevel),
        Command::LogPriority { level } => (
            Request::LogPriority {
                level: level.clone(),
            },
            Show::Value {
                key: "priority",
                name: None,
            },
        ),
        Command::Usage { job } => {
            let t = target(job, &[])?;
            let show = Show::Usage { job: t.job.clone() };
            (Request::Usage { job: t.job }, show)
        }
        Command::ListEnv(_) => (Request::ListEnv, Show::ListEnv),
        Command::GetEnv { name, .. } => {
            let name = name
                .clone()
                .ok_or_else(|| usage_error("missing variable name"))?;
            let show = Show::Value {
                key: "value",
                name: Some(name.clone()),
            };
            (Request::GetEnv { name }, show)
        }
        Command::SetEnv { retain, vars, .. } => {
            if vars.is_empty() {
                return Err(usage_error("missing variable value"));
            }
            let vars = vars
                .iter()
                .map(|v| match v.split_once('=') {
                    Some((n, value)) => Ok((n.to_string(), value.to_string())),
                    None => std::env::var(v)
                        .map(|value| (v.clone(), value))
                        .map_err(|_| format!("{v} is not set in this environment")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let request = Request::SetEnv {
                vars,
                retain: *retain,
            };
            (request, Show::Nothing)
        }
        Command::UnsetEnv { names, .. } => {
            if names.is_empty() {
                return Err(usage_error("missing variable name"));
            }
            let request = Request::UnsetEnv {
                names: names.clone(),
            };
            (request, Show::Nothing)
        }
        Command::ResetEnv(_) => (Request::ResetEnv, Show::Nothing),
        Command::NotifyDiskWriteable => (Request::NotifyDiskWriteable, Show::Nothing),
        Command::Completions { shell } => {
            std::io::stdout()
                .write_all(completion::script(*shell).as_bytes())
                .map_err(|e| io_text(&e))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::CompleteJobs => {
            // Completion must never print an error into the user's command line.
            if let Ok((Response::Instances(list), _)) = ask(&cli.socket, &Request::List) {
                let mut names: Vec<&str> = list.iter().map(|s| s.job.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                for name in names {
                    println!("{name}");
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { page } => {
            man::write(page, &mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let (response, protocol) = ask_again(&cli.socket, &request)?;
    let mut show = show;
    if let (Show::Status { tails }, Response::Instances(list)) = (&mut show, &response) {
        *tails = list.iter().map(|s| failure_tail(&cli.socket, s)).collect();
    }
    let mut out = String::new();
    let code = render(&show, response, protocol, cli.json, &mut out)?;
    print!("{out}");
    Ok(code)
}

fn power(action: PowerAction) -> Request {
    Request::Power { action }
}

/// Writes the answer as text or JSON into `out`; the exit status, or the error.
fn render(
    show: &Show,
    response: Response,
    protocol: u32,
    as_json: bool,
    out: &mut String,
) -> Result<ExitCode, Failure> {
    use std::fmt::Write as _;
    let mut json_line = |v: Value| {
        let _ = writeln!(out, "{v}");
    };
    match (show, response) {
        (Show::Change { failed, job }, Response::Error(e)) => Err(describe_error(&e, job, failed)),
        (_, Response::Error(e)) => Err(e.message.into()),
        (_, Response::LoadFailures(failed)) => Err(format!(
            "these job files did not load (every other one is loaded):\n{}",
            load_errors(&failed)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        )
        .into()),
        (Show::Nothing, _) => Ok(ExitCode::SUCCESS),
        (_, Response::Instances(list)) => {
            if as_json {
                let mut shown: Vec<Value> = list.iter().map(json_status).collect();
                if let Show::Status { tails } = show {
                    for (object, tail) in shown.iter_mut().zip(tails) {
                        object["log"] = json!(tail);
                    }
                }
                json_line(Value::Array(shown));
            } else {
                // `status` also says what the daemon or keel says about the job
                // (sd_notify STATUS=, an expect that does not match) and why it
                // failed: keel's own lines, tab-indented like Upstart's process
                // lines, only here (start, stop and list keep Upstart's output).
                let (detail, tails) = match show {
                    Show::Status { tails } => (true, tails.as_slice()),
                    _ => (false, &[][..]),
                };
                for (i, s) in list.iter().enumerate() {
                    let mut text = format_status(s, detail);
                    // `list` marks a job that failed (status says why), after
                    // a comma as Upstart's `, process PID`: what parses
                    // Upstart's list still reads the goal and state.
                    if matches!(show, Show::List) && s.failure.is_some() {
                        let end = text.find('\n').unwrap_or(text.len());
                        text.insert_str(end, ", failed");
                    }
                    out.push_str(&text);
                    for line in tails.get(i).into_iter().flatten() {
                        let _ = writeln!(out, "\tlog: {line}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        (Show::Config { enumerate }, Response::Config(configs)) => {
            if as_json {
                json_line(Value::Array(configs.iter().map(json_config).collect()));
            } else {
                configs
                    .iter()
                    .for_each(|c| out.push_str(&format_config(c, *enumerate)));
            }
            Ok(ExitCode::SUCCESS)
        }
        (Show::Security { detail }, Response::Config(configs)) => {
            let mut all = Vec::new();
            for c in &configs {
                let def = keel_core::job::parse(&c.name, &c.definition)
                    .def
                    .ok_or_else(|| {
                        format!("{}: the supervisor's definition does not parse", c.name)
                    })?;
                all.push((c.name.as_str(), keel_core::job::exposure::exposure(&def)));
            }
            if as_json {
                json_line(Value::Array(
                    all.iter().map(|(n, e)| json_exposure(n, e)).collect(),
                ));
            } else {
                all.iter()
                    .for_each(|(n, e)| out.push_str(&format_exposure(n, e, *detail)));
            }
            Ok(ExitCode::SUCCESS)
        }
        (Show::Problems { failed }, Response::Problems(problems)) => {
            if as_json {
                let unloaded = failed.iter().flat_map(|f| {
                    f.errors
                        .iter()
                        .map(|e| json!({"job": f.job, "condition": "job file", "message": e}))
                });
                let found = problems.iter().map(json_problem);
                json_line(Value::Array(unloaded.chain(found).collect()));
            } else {
                load_errors(failed).for_each(|e| {
                    out.push_str(e);
                    out.push('\n');
                });
                out.push_str(&format_problems(&problems));
            }
            Ok(if problems.is_empty() && failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        (Show::Version, Response::Version { version }) => {
            if as_json {
                json_line(json!({ "version": version, "protocol": protocol }));
            } else {
                let _ = writeln!(out, "{version}");
            }
            Ok(ExitCode::SUCCESS)
        }
        (Show::Runlevel, Response::Runlevel { previous, current }) => {
            let show = |r: u8| if r == 0 { 'N' } else { r as char };
            if as_json {
                json_line(
                    json!({ "previous": show(previous).to_string(), "current": show(current).to_string() }),
                );
            } else if current == 0 {
                // Upstart's runlevel(8): no runlevel yet.
                out.push_str("unknown\n");
            } else {
                let _ = writeln!(out, "{} {}", show(previous), show(current));
            }
            Ok(if current == 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        (Show::Value { key, name }, Response::Value(value)) => {
            if as_json {
                let mut object = serde_json::Map::new();
                if let Some(name) = name {
                    object.insert("name".into(), json!(name));
                }
                object.insert((*key).into(), json!(value));
                json_line(Value::Object(object));
            } else {
                let _ = writeln!(out, "{value}");
            }
            Ok(ExitCode::SUCCESS)
        }
        (Show::Usage { job }, Response::Value(usage)) => {
            if as_json {
                json_line(json!({ "job": job, "usage": usage }));
            } else {
                let _ = writeln!(out, "Usage: {usage}");
            }
            Ok(ExitCode::SUCCESS)
        }
        (Show::ListEnv, Response::Env(vars)) => {
            if as_json {
                let object: serde_json::Map<String, Value> =
                    vars.into_iter().map(|(k, v)| (k, json!(v))).collect();
                json_line(Value::Object(object));
            } else {
                for (k, v) in &vars {
                    let _ = writeln!(out, "{k}={v}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        (Show::Timeline { svg }, Response::Timeline(entries)) => {
            if let Some(path) = svg {
                std::fs::write(path, timeline_svg(&entries))
                    .map_err(|e| format!("cannot write {}: {}", path.display(), io_text(&e)))?;
            }
            if as_json {
                json_line(Value::Array(entries.iter().map(json_timeline).collect()));
            } else {
                out.push_str(&format_timeline(&entries));
            }
            Ok(ExitCode::SUCCESS)
        }
        (_, Response::Ok) => Ok(ExitCode::SUCCESS),
        (_, other) => Err(format!("unexpected answer from the supervisor: {other:?}").into()),
    }
}

/// Upstart's words for errors: `Unknown job: foo`, `Job is already running: foo`,
/// `Job failed to start: main process (12) terminated with status 1`.
fn describe_error(e: &Error, job: &str, failed: &str) -> Failure {
    match e.kind {
        ErrorKind::AlreadyStarted | ErrorKind::AlreadyStopped => {
            format!("{}: {job}", e.message).into()
        }
        ErrorKind::JobFailed => format!("{failed}: {}", e.message).into(),
        _ => e.message.clone().into(),
    }
}

/// An I/O error without Rust's "(os error N)".
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Connects, shakes hands, sends one request and reads its answer; also the
/// protocol version the supervisor speaks. The request goes with the hello, in
/// one write (a supervisor reads it once it has answered the hello, and drops it
/// with the connection if it refuses the hello): one round trip, not two. The
/// answers are read through a buffer: both frames in one read, mostly.
fn ask(socket: &Path, request: &Request) -> Result<(Response, u32), Failure> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "Unable to connect to keel: {}: {}",
            socket.display(),
            io_text(&e)
        )
    })?;
    let hello = ClientHello {
        magic: ctl::MAGIC,
        version: ctl::VERSION,
    };
    let mut bytes = frame::encode(&hello).map_err(|e| e.to_string())?;
    bytes.extend(frame::encode(request).map_err(|e| e.to_string())?);
    stream
        .write_all(&bytes)
        .map_err(|e| format!("cannot send the request: {}", io_text(&e)))?;
    let mut answers = std::io::BufReader::new(&stream);
    let answer: ServerHello = receive(&mut answers)?;
    if answer.magic != ctl::MAGIC {
        return Err(format!("{} is not a keel control socket", socket.display()).into());
    }
    if !answer.accepted {
        return Err(format!(
            "protocol version mismatch: this initctl speaks control protocol {}, the \
             supervisor speaks {}; use the initctl that came with the running keel",
            ctl::VERSION,
            answer.version
        )
        .into());
    }
    Ok((receive(&mut answers)?, answer.version))
}

fn receive<T: for<'a> serde::Deserialize<'a>>(stream: &mut impl Read) -> Result<T, Failure> {
    let lost = |e: std::io::Error| -> Failure {
        if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ) {
            Failure {
                lost: true,
                ..Failure::from("the supervisor closed the connection".to_string())
            }
        } else {
            format!("cannot read the answer: {}", io_text(&e)).into()
        }
    };
    let mut header = [0u8; frame::HEADER];
    stream.read_exact(&mut header).map_err(lost)?;
    let len = frame::body_len(header, frame::MAX_FRAME).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).map_err(lost)?;
    frame::decode(&body).map_err(|e| format!("garbled answer from the supervisor: {e}").into())
}

/// How many of the slowest starts `timeline` names.
const SLOWEST: usize = 5;

/// Seconds since boot, from the timeline's milliseconds.
fn secs(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// `JOB` or `JOB (INSTANCE)`.
fn shown(e: &TimelineEntry) -> String {
    if e.instance.is_empty() {
        e.job.clone()
    } else {
        format!("{} ({})", e.job, e.instance)
    }
}

/// Why an instance started: its events (with the job a job event names), or
/// `request` for a start by initctl.
fn why(e: &TimelineEntry) -> String {
    match (&e.events[..], &e.cause_job) {
        ([], _) => "request".to_string(),
        (events, Some(job)) => format!("{} {job}", events.join(" ")),
        (events, None) => events.join(" "),
    }
}

/// How long an instance took from its request to running.
fn took(e: &TimelineEntry) -> Option<u64> {
    Some(e.running_ms?.saturating_sub(e.requested_ms))
}

/// `initctl timeline`: every first start by when it was running (with how long
/// it took and why it started), the slowest, and the chain of job events that
/// the last one to run waited for.
fn format_timeline(entries: &[TimelineEntry]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("  RUNNING     TOOK  JOB (WHY)\n");
    let mut by_running: Vec<&TimelineEntry> = entries.iter().collect();
    by_running.sort_by_key(|e| (e.running_ms.is_none(), e.running_ms, e.requested_ms));
    for e in &by_running {
        let running = e.running_ms.map_or("-".to_string(), secs);
        let took = took(e).map_or("-".to_string(), secs);
        let _ = writeln!(out, "{running:>9} {took:>8}  {} ({})", shown(e), why(e));
    }
    let mut slowest: Vec<&TimelineEntry> = entries.iter().filter(|e| took(e).is_some()).collect();
    slowest.sort_by_key(|e| std::cmp::Reverse(took(e)));
    if !slowest.is_empty() {
        let named: Vec<String> = slowest
            .iter()
            .take(SLOWEST)
            .map(|e| format!("{} {}", shown(e), took(e).map_or_else(String::new, secs)))
            .collect();
        let _ = writeln!(out, "slowest: {}", named.join(", "));
    }
    if let Some(last) = by_running.iter().rev().find(|e| e.running_ms.is_some()) {
        let mut chain = vec![format!("{} ({})", shown(last), why(last))];
        let mut seen = vec![last.job.clone()];
        let mut at = *last;
        while let Some(cause) = at.cause_job.as_ref() {
            let Some(next) = entries.iter().find(|e| &e.job == cause) else {
                break;
            };
            if seen.contains(&next.job) {
                break;
            }
            seen.push(next.job.clone());
            chain.push(format!("{} ({})", shown(next), why(next)));
            at = next;
        }
        let _ = writeln!(out, "last to run: {}", chain.join(" <- "));
    }
    out
}

/// `&`, `<`, `>`, `"` as XML entities.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The boot as a picture, in the spirit of `systemd-analyze plot`: a row per
/// first start, in the order requested, a light bar from its request to its
/// main process's spawn (waiting, pre-start), a dark one from there to running;
/// its name and why it started beside it, and a second scale on top.
fn timeline_svg(entries: &[TimelineEntry]) -> String {
    use std::fmt::Write as _;
    const LEFT: u64 = 20;
    const WIDTH: u64 = 900;
    const ROW: u64 = 22;
    const TOP: u64 = 40;
    let mut rows: Vec<&TimelineEntry> = entries.iter().collect();
    rows.sort_by_key(|e| (e.requested_ms, e.running_ms));
    let start = rows.iter().map(|e| e.requested_ms).min().unwrap_or(0);
    let end = rows
        .iter()
        .map(|e| e.running_ms.unwrap_or(e.requested_ms))
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let x = |ms: u64| LEFT + (ms - start) * WIDTH / (end - start);
    let height = TOP + ROW * rows.len() as u64 + 20;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">",
        LEFT + WIDTH + 300
    );
    let _ = writeln!(
        svg,
        "<title>keel boot timeline: {} starts, {} to {}</title>",
        rows.len(),
        secs(start),
        secs(end)
    );
    // A mark every tenth of the span, with its time since boot.
    for tenth in 0..=10 {
        let ms = start + (end - start) * tenth / 10;
        let at = x(ms);
        let _ = writeln!(
            svg,
            "<line x1=\"{at}\" y1=\"{}\" x2=\"{at}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{at}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            TOP - 10,
            height - 20,
            TOP - 15,
            secs(ms)
        );
    }
    for (i, e) in rows.iter().enumerate() {
        let y = TOP + ROW * i as u64;
        let spawned = e.spawned_ms.or(e.running_ms).unwrap_or(e.requested_ms);
        let running = e.running_ms.unwrap_or(spawned);
        let bar = |from: u64, to: u64, color: &str| {
            format!(
                "<rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{color}\"/>",
                x(from),
                x(to).saturating_sub(x(from)).max(1),
                ROW - 6
            )
        };
        let took = took(e).map_or_else(|| "not running".to_string(), secs);
        let _ = writeln!(
            svg,
            "<g><title>{}: requested {}, running {} ({})</title>{}{}\
             <text x=\"{}\" y=\"{}\">{} ({}) {}</text></g>",
            xml_escape(&shown(e)),
            secs(e.requested_ms),
            e.running_ms.map_or("-".to_string(), secs),
            xml_escape(&why(e)),
            bar(e.requested_ms, spawned, "#9cc3e6"),
            bar(spawned, running, "#2f6fad"),
            x(running) + 6,
            y + ROW - 10,
            xml_escape(&shown(e)),
            xml_escape(&why(e)),
            took
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn json_timeline(e: &TimelineEntry) -> Value {
    json!({
        "job": e.job,
        "instance": e.instance,
        "events": e.events,
        "cause_job": e.cause_job,
        "requested_ms": e.requested_ms,
        "spawned_ms": e.spawned_ms,
        "running_ms": e.running_ms,
    })
}

/// How many lines of a failed instance's log `status` shows.
const FAILURE_TAIL: usize = 5;

/// The path of an instance's log file, from the supervisor.
fn log_path(
    socket: &Path,
    job: String,
    instance: Option<String>,
    env: Vec<String>,
) -> Result<String, Failure> {
    match ask(socket, &Request::LogPath { job, instance, env })?.0 {
        Response::Value(path) => Ok(path),
        Response::Error(e) => Err(e.message.into()),
        other => Err(format!("unexpected answer from the supervisor: {other:?}").into()),
    }
}

/// The last lines of a failed instance's log, if it keeps one that can be read.
fn failure_tail(socket: &Path, s: &InstanceStatus) -> Vec<String> {
    if s.failure.is_none() {
        return Vec::new();
    }
    let instance = (!s.instance.is_empty()).then(|| s.instance.clone());
    log_path(socket, s.job.clone(), instance, Vec::new())
        .ok()
        .and_then(|path| std::fs::read(path).ok())
        .map(|bytes| last_lines(&bytes, FAILURE_TAIL))
        .unwrap_or_default()
}

/// The last `n` lines of `bytes` (a last line without its newline counts).
fn last_lines(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// A log line as JSON: `{"time": "2026-12-07T04:40:01.123Z", "text": "…"}`,
/// `time` null for a line without one (kept while the disk could not be written).
fn json_log_line(line: &str) -> Value {
    match line.split_once(' ') {
        Some((time, text))
            if time.len() == 24 && time.ends_with('Z') && time.as_bytes()[4] == b'-' =>
        {
            json!({"time": time, "text": text})
        }
        _ => json!({"time": null, "text": line}),
    }
}

/// `initctl log`: the file (its last `lines` lines), then with `follow` what is
/// added to it, also across a rotation (a new file at the path starts over).
fn print_log(
    path: &Path,
    lines: Option<usize>,
    follow: bool,
    as_json: bool,
) -> Result<ExitCode, Failure> {
    use std::os::unix::fs::MetadataExt;
    let cannot = |e: std::io::Error| format!("cannot read {}: {}", path.display(), io_text(&e));
    let show = |text: &[String]| -> Result<(), Failure> {
        let mut stdout = std::io::stdout().lock();
        for line in text {
            let shown = if as_json {
                json_log_line(line).to_string()
            } else {
                line.clone()
            };
            writeln!(stdout, "{shown}")
                .and_then(|_| stdout.flush())
                .map_err(|e| format!("cannot write: {}", io_text(&e)))?;
        }
        Ok(())
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        // No output yet: nothing to show, or wait for it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && follow => Vec::new(),
        Err(e) => return Err(cannot(e).into()),
    };
    // Only whole lines; a last one still being written is shown once ended.
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    show(&last_lines(&bytes[..whole], lines.unwrap_or(usize::MAX)))?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut inode = std::fs::metadata(path).map(|m| m.ino()).ok();
    let mut read_to = whole as u64;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if inode != Some(meta.ino()) || meta.len() < read_to {
            // Rotated (or truncated): the new file from its start.
            inode = Some(meta.ino());
            read_to = 0;
        }
        if meta.len() == read_to {
            continue;
        }
        let mut file = std::fs::File::open(path).map_err(cannot)?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(read_to)).map_err(cannot)?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh).map_err(cannot)?;
        let whole = fresh.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        read_to += whole as u64;
        show(&last_lines(&fresh[..whole], usize::MAX))?;
    }
}

/// Upstart's status line: `JOB [(INSTANCE)] GOAL/STATE[, process PID]`, the first
/// process on it (`, (post-start) process PID` if that is neither main, pre-start
/// nor post-stop), then a line `\tKIND process PID` per other process.
fn format_status(s: &InstanceStatus, detail: bool) -> String {
    let mut out = s.job.clone();
    if !s.instance.is_empty() {
        out.push_str(&format!(" ({})", s.instance));
    }
    out.push_str(&format!(" {}/{}", s.goal.name(), s.state.name()));
    if let Some((first, rest)) = s.processes.split_first() {
        match first.kind.as_str() {
            "main" | "pre-start" | "post-stop" => out.push_str(&format!(", process {}", first.pid)),
            kind => out.push_str(&format!(", ({kind}) process {}", first.pid)),
        }
        for p in rest {
            out.push_str(&format!("\n\t{} process {}", p.kind, p.pid));
        }
    }
    if detail {
        if let Some(text) = &s.status_text {
            out.push_str(&format!("\n\tstatus: {text}"));
        }
        if let Some(reason) = &s.failure {
            out.push_str(&format!("\n\tfailed: {reason}"));
        }
    }
    out.push('\n');
    out
}

/// Upstart's show-config: the job's name, then `  emits EVENT` lines, then
/// `  start on COND` and `  stop on COND` — or, enumerated (`-e`), a line per event
/// `  start on EVENT (job: JOB, env: ARGS)`; then, with an override file, keel's
/// `  overridden by FILE: STANZA, …`.
fn format_config(c: &JobConfig, enumerate: bool) -> String {
    let mut out = format!("{}\n", c.name);
    for e in &c.emits {
        out.push_str(&format!("  emits {e}\n"));
    }
    let conditions = [
        ("start on", &c.start_on, &c.start_on_events),
        ("stop on", &c.stop_on, &c.stop_on_events),
    ];
    for (stanza, text, events) in conditions {
        if enumerate {
            for e in events {
                out.push_str(&format!("  {stanza} {}\n", enumerated(e)));
            }
        } else if let Some(text) = text {
            out.push_str(&format!("  {stanza} {text}\n"));
        }
    }
    // keel's own line: which stanzas an override file replaced.
    if let Some(file) = &c.override_file {
        out.push_str(&format!(
            "  overridden by {file}: {}\n",
            c.overridden.join(", ")
        ));
    }
    out
}

fn enumerated(e: &EventRef) -> String {
    let job = e.job.as_ref().map(|j| format!(" {j}")).unwrap_or_default();
    let env: String = e.env.iter().map(|a| format!(" {a}")).collect();
    format!("{} (job:{job}, env:{env})", e.event)
}

/// Every error of the job files that did not load, one a line.
fn load_errors(failed: &[LoadFailure]) -> impl Iterator<Item = &String> {
    failed.iter().flat_map(|f| &f.errors)
}

/// Upstart's check-config: each job with findings, then `  CONDITION: MESSAGE`.
fn format_problems(problems: &[ConfigProblem]) -> String {
    let mut out = String::new();
    let mut last: Option<&str> = None;
    for p in problems {
        if last != Some(p.job.as_str()) {
            out.push_str(&format!("{}\n", p.job));
            last = Some(&p.job);
        }
        out.push_str(&format!("  {}: {}\n", p.condition, p.message));
    }
    out
}

/// The documented JSON shape of one instance (README, "initctl --json").
fn json_status(s: &InstanceStatus) -> Value {
    json!({
        "job": s.job,
        "instance": s.instance,
        "goal": s.goal.name(),
        "state": s.state.name(),
        "processes": s.processes.iter().map(|p| json!({"kind": p.kind, "pid": p.pid})).collect::<Vec<_>>(),
        "failure": s.failure,
        "status": s.status_text,
    })
}

fn json_config(c: &JobConfig) -> Value {
    let events = |list: &[EventRef]| -> Vec<Value> {
        list.iter()
            .map(|e| json!({"event": e.event, "job": e.job, "env": e.env}))
            .collect()
    };
    json!({
        "job": c.name,
        "emits": c.emits,
        "start_on": c.start_on,
        "stop_on": c.stop_on,
        "start_on_events": events(&c.start_on_events),
        "stop_on_events": events(&c.stop_on_events),
        "definition": c.definition,
        "override": c.override_file.as_ref().map(|file| json!({"file": file, "stanzas": c.overridden})),
    })
}

/// `JOB SCORE RATING`, or with `detail` each finding first: `- SETTING: REASON
/// (POINTS of WEIGHT)` where the job is exposed, `+ SETTING` where it is not.
fn format_exposure(job: &str, e: &keel_core::job::exposure::Exposure, detail: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if detail {
        for f in &e.findings {
            if f.points == 0 {
                let _ = writeln!(out, "+ {}", f.setting);
            } else {
                let _ = writeln!(
                    out,
                    "- {}: {} ({} of {})",
                    f.setting, f.reason, f.points, f.weight
                );
            }
        }
    }
    let _ = writeln!(out, "{job} {:.1} {}", e.score, e.rating());
    out
}

fn json_exposure(job: &str, e: &keel_core::job::exposure::Exposure) -> Value {
    let findings: Vec<Value> = e
        .findings
        .iter()
        .map(|f| {
            json!({
                "setting": f.setting,
                "weight": f.weight,
                "points": f.points,
                "reason": f.reason,
            })
        })
        .collect();
    json!({"job": job, "score": e.score, "rating": e.rating(), "findings": findings})
}

fn json_problem(p: &ConfigProblem) -> Value {
    json!({"job": p.job, "condition": p.condition, "message": p.message})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in supervisor on `listener`: reads each connection's hello and
    /// request, closes the first `drop_first` connections unanswered and answers
    /// the others `answer`; after `connections` of them, returns what was asked.
    fn stand_in(
        listener: std::os::unix::net::UnixListener,
        drop_first: usize,
        answer: Response,
        connections: usize,
    ) -> std::thread::JoinHandle<Vec<Request>> {
        std::thread::spawn(move || {
            let mut asked = Vec::new();
            for stream in listener.incoming().take(connections) {
                let mut stream = stream.unwrap();
                let hello: Option<ClientHello> = receive(&mut stream).ok();
                let request: Option<Request> = receive(&mut stream).ok();
                assert!(hello.is_some(), "a hello");
                asked.push(request.expect("a request"));
                if asked.len() <= drop_first {
                    continue;
                }
                let hello = ServerHello {
                    magic: ctl::MAGIC,
                    version: ctl::VERSION,
                    accepted: true,
                };
                let mut bytes = frame::encode(&hello).unwrap();
                bytes.extend(frame::encode(&answer).unwrap());
                stream.write_all(&bytes).unwrap();
            }
            asked
        })
    }

    fn socket_in(tag: &str) -> (PathBuf, std::os::unix::net::UnixListener) {
        let dir = std::env::temp_dir().join(format!("keel-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        (path, listener)
    }

    #[test]
    fn a_query_is_asked_again_when_the_supervisor_goes_away_before_answering() {
        let (path, listener) = socket_in("query");
        let server = stand_in(listener, 2, Response::Value("debug".into()), 3);
        let (answer, _) = ask_again(&path, &Request::LogPriority { level: None })
            .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(answer, Response::Value("debug".into()));
        assert_eq!(server.join().unwrap().len(), 3, "asked three times");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A lost `start` is not sent again: the next supervisor is asked the job's
    /// status instead, which says whether the start took effect.
    #[test]
    fn a_change_is_not_asked_again_and_its_outcome_is_said() {
        let start = Request::Start {
            job: "web".into(),
            instance: None,
            env: Vec::new(),
            wait: true,
        };
        let status = |goal| InstanceStatus {
            job: "web".into(),
            instance: String::new(),
            goal,
            state: keel_proto::ctl::State::PreStart,
            processes: Vec::new(),
            failure: None,
            status_text: None,
        };
        for (goal, said) in [
            (
                Goal::Start,
                "the request took effect, its end was not awaited: web start/pre-start",
            ),
            (
                Goal::Stop,
                "the request did not take effect, or failed since: web stop/pre-start",
            ),
        ] {
            let (path, listener) = socket_in("change");
            let server = stand_in(listener, 1, Response::Instances(vec![status(goal)]), 2);
            let failure = ask_again(&path, &start).expect_err("a failure");
            assert!(failure.message.contains(said), "{}", failure.message);
            let asked = server.join().unwrap();
            assert_eq!(asked[0], start);
            assert!(matches!(asked[1], Request::Status { .. }), "{asked:?}");
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
        // With no supervisor left to ask, nothing is known.
        let (path, listener) = socket_in("unknown");
        let server = stand_in(listener, 1, Response::Ok, 1);
        let failure = ask_again(&path, &start).expect_err("a failure");
        assert!(
            failure
                .message
                .contains("whether the request took effect is unknown"),
            "{}",
            failure.message
        );
        assert_eq!(server.join().unwrap(), vec![start]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    fn argv(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    /// The shortcut takes what clap would, as clap would parse it, and leaves
    /// everything else to clap (the tests run without KEEL_SOCKET).
    #[test]
    fn plain_queries_parse_as_clap_parses_them() {
        assert!(std::env::var_os(ctl::SOCKET_ENV).is_none());
        for line in [
            "initctl status web",
            "/sbin/initctl status tty-1",
            "initctl list",
            "initctl start web",
            "initctl stop net/web",
            "initctl restart tty-1",
            "initctl reload web",
        ] {
            let args = argv(line);
            let clap = Cli::try_parse_from(&args).expect(line);
            assert_eq!(plain_query(&args), Some(clap), "{line}");
        }
        for line in [
            "initctl status",
            "initctl status --json",
            "initctl status -h",
            "initctl status web KEY=VALUE",
            "initctl --json status web",
            "initctl status web --json",
            "initctl list --json",
            "initctl list web",
            "initctl stop",
            "initctl stop -n web",
            "initctl start web -n",
            "initctl restart web KEY=VALUE",
            "initctl reload --help",
            "initctl emit web",
            "initctl version web",
            "initctl",
        ] {
            assert_eq!(plain_query(&argv(line)), None, "{line}");
        }
    }
}
