//! initctl: drive keel from the command line, in Upstart's words.
//!
//! Invoked through a link named `start`, `stop`, `restart`, `reload`, `status`,
//! `poweroff`, `reboot` or `halt`, it is that command. It speaks the control protocol
//! (`keel_proto::ctl`) to the supervisor's socket: `--socket PATH`, else
//! `KEEL_SOCKET`, else `/run/keel/control`.

use clap::{Parser, Subcommand};
use keel_proto::ctl::{
    self, ClientHello, Error, ErrorKind, InstanceStatus, PowerAction, Request, Response,
    ServerHello,
};
use keel_proto::frame;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "initctl", version, about = "Control keel, the init system")]
struct Cli {
    /// The supervisor's control socket.
    #[arg(long, global = true, env = ctl::SOCKET_ENV, default_value = ctl::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print answers to queries as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a job.
    Start(JobArgs),
    /// Stop a job.
    Stop(JobArgs),
    /// Restart a job: kill, post-stop, pre-start, main.
    Restart(JobArgs),
    /// Send a job its reload signal.
    Reload(JobArgs),
    /// Show a job's goal, state and processes.
    Status(QueryArgs),
    /// List every job and instance.
    List,
    /// Emit an event; wait until every job it started has started (a task: has
    /// run) and every job it stopped has stopped.
    Emit {
        /// Return once the event is queued.
        #[arg(short = 'n', long)]
        no_wait: bool,
        event: String,
        env: Vec<String>,
    },
    /// Re-read the job files.
    ReloadConfiguration,
    /// Report events jobs wait for that nothing emits, and jobs they name that do not exist.
    CheckConfig,
    /// Show job definitions.
    ShowConfig {
        #[arg(short = 'e', long)]
        enumerate: bool,
        job: Option<String>,
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
    /// Change the runlevel (emits `runlevel`); `telinit u` re-executes the supervisor.
    Telinit { runlevel: String },
    /// Show the previous and current runlevel.
    Runlevel,
    /// Show or set the supervisor's log priority (debug, info, message, warn, error, fatal).
    LogPriority { level: Option<String> },
    /// Show a job's usage text.
    Usage { job: String },
    /// List the job-environment table (defaults every job started afterwards gets).
    ListEnv,
    /// Show one variable of the job-environment table.
    GetEnv { name: String },
    /// Set NAME=VALUE in the job-environment table (NAME alone: from this environment).
    SetEnv { assignment: String },
    /// Remove a variable from the job-environment table.
    UnsetEnv { name: String },
    /// Reset the job-environment table to its defaults.
    ResetEnv,
    /// Tell keel that /var/log is writable.
    NotifyDiskWriteable,
    /// Print a shell completion script (bash, zsh or fish).
    Completions { shell: clap_complete::Shell },
    /// Print initctl's man page (roff).
    Man,
}

#[derive(clap::Args, Debug)]
struct JobArgs {
    /// Return once the request is accepted, without waiting for the job.
    #[arg(short = 'n', long)]
    no_wait: bool,
    job: String,
    /// KEY=VALUE pairs for the job's environment (and to pick an instance).
    env: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct QueryArgs {
    job: String,
    env: Vec<String>,
}

/// The names initctl answers to as a link, and the subcommand each means.
const LINKS: &[&str] = &[
    "start", "stop", "restart", "reload", "status", "telinit", "runlevel", "poweroff", "reboot",
    "halt",
];

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let invoked = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("initctl")
        .to_string();
    if LINKS.contains(&invoked.as_str()) {
        args[0] = "initctl".into();
        args.insert(1, invoked.clone());
    }
    let cli = Cli::parse_from(&args);
    let name = if LINKS.contains(&invoked.as_str()) {
        invoked
    } else {
        "initctl".to_string()
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let (request, job) = match &cli.command {
        Command::Start(a) => (
            Request::Start {
                job: a.job.clone(),
                env: a.env.clone(),
                wait: !a.no_wait,
            },
            Some(&a.job),
        ),
        Command::Stop(a) => (
            Request::Stop {
                job: a.job.clone(),
                env: a.env.clone(),
                wait: !a.no_wait,
            },
            Some(&a.job),
        ),
        Command::Restart(a) => (
            Request::Restart {
                job: a.job.clone(),
                env: a.env.clone(),
                wait: !a.no_wait,
            },
            Some(&a.job),
        ),
        Command::Reload(a) => (
            Request::Reload {
                job: a.job.clone(),
                env: a.env.clone(),
            },
            Some(&a.job),
        ),
        Command::Status(a) => (
            Request::Status {
                job: a.job.clone(),
                env: a.env.clone(),
            },
            Some(&a.job),
        ),
        Command::List => (Request::List, None),
        Command::Emit {
            no_wait,
            event,
            env,
        } => (
            Request::Emit {
                event: event.clone(),
                env: env.clone(),
                wait: !no_wait,
            },
            None,
        ),
        Command::ReloadConfiguration => (Request::ReloadConfiguration, None),
        Command::CheckConfig => (Request::CheckConfig, None),
        Command::ShowConfig { enumerate, job } => (
            Request::ShowConfig {
                job: job.clone(),
                enumerate: *enumerate,
            },
            None,
        ),
        Command::Reexec { binary } => (
            Request::Reexec {
                binary: binary.clone(),
            },
            None,
        ),
        Command::Poweroff => (
            Request::Power {
                action: PowerAction::PowerOff,
            },
            None,
        ),
        Command::Reboot => (
            Request::Power {
                action: PowerAction::Reboot,
            },
            None,
        ),
        Command::Halt => (
            Request::Power {
                action: PowerAction::Halt,
            },
            None,
        ),
        Command::Version => (Request::Version, None),
        Command::Telinit { runlevel } => match runlevel.as_bytes() {
            [level] => (Request::Telinit { runlevel: *level }, None),
            _ => return Err(format!("illegal runlevel: {runlevel}")),
        },
        Command::Runlevel => (Request::Runlevel, None),
        Command::LogPriority { level } => (
            Request::LogPriority {
                level: level.clone(),
            },
            None,
        ),
        Command::Usage { job } => (Request::Usage { job: job.clone() }, Some(job)),
        Command::ListEnv => (Request::ListEnv, None),
        Command::GetEnv { name } => (Request::GetEnv { name: name.clone() }, None),
        Command::SetEnv { assignment } => {
            let (name, value) = match assignment.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = std::env::var(assignment)
                        .map_err(|_| format!("{assignment} is not set in this environment"))?;
                    (assignment.clone(), v)
                }
            };
            (Request::SetEnv { name, value }, None)
        }
        Command::UnsetEnv { name } => (Request::UnsetEnv { name: name.clone() }, None),
        Command::ResetEnv => (Request::ResetEnv, None),
        Command::NotifyDiskWriteable => (Request::NotifyDiskWriteable, None),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "initctl", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            return clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(|e| e.to_string());
        }
    };
    let response = ask(&cli.socket, &request)?;
    match response {
        Response::Error(e) => Err(describe_error(&e, job.map(String::as_str))),
        Response::Instances(list) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::Value::Array(list.iter().map(json_status).collect())
                );
            } else {
                for s in &list {
                    print!("{}", format_status(s));
                }
            }
            Ok(())
        }
        Response::Text(t) => {
            if cli.json {
                println!("{}", serde_json::json!({ "text": t }));
            } else {
                print!("{t}");
            }
            Ok(())
        }
        Response::Version { version } => {
            if cli.json {
                println!("{}", serde_json::json!({ "version": version }));
            } else {
                println!("{version}");
            }
            Ok(())
        }
        Response::Runlevel { previous, current } => {
            let show = |r: u8| if r == 0 { 'N' } else { r as char };
            println!("{} {}", show(previous), show(current));
            Ok(())
        }
        Response::Ok => Ok(()),
    }
}

/// Upstart's words for errors: `Unknown job: foo`, `Job is already running: foo`.
fn describe_error(e: &Error, job: Option<&str>) -> String {
    match (e.kind, job) {
        (ErrorKind::AlreadyStarted | ErrorKind::AlreadyStopped, Some(job)) => {
            format!("{}: {job}", e.message)
        }
        _ => e.message.clone(),
    }
}

/// Connects, shakes hands, sends one request and reads its answer.
fn ask(socket: &PathBuf, request: &Request) -> Result<Response, String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let hello = ClientHello {
        magic: ctl::MAGIC,
        version: ctl::VERSION,
    };
    send(&mut stream, &hello)?;
    let answer: ServerHello = receive(&mut stream)?;
    if answer.magic != ctl::MAGIC {
        return Err(format!("{} is not a keel control socket", socket.display()));
    }
    if !answer.accepted {
        return Err(format!(
            "protocol version mismatch: initctl speaks {}, the supervisor speaks {}",
            ctl::VERSION,
            answer.version
        ));
    }
    send(&mut stream, request)?;
    receive(&mut stream)
}

fn send<T: serde::Serialize>(stream: &mut UnixStream, msg: &T) -> Result<(), String> {
    let bytes = frame::encode(msg).map_err(|e| e.to_string())?;
    stream
        .write_all(&bytes)
        .map_err(|e| format!("cannot send the request: {e}"))
}

fn receive<T: for<'a> serde::Deserialize<'a>>(stream: &mut UnixStream) -> Result<T, String> {
    let lost = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the supervisor closed the connection (it may have restarted); the request's outcome is unknown".to_string()
        } else {
            format!("cannot read the answer: {e}")
        }
    };
    let mut header = [0u8; frame::HEADER];
    stream.read_exact(&mut header).map_err(lost)?;
    let len = frame::body_len(header, frame::MAX_FRAME).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).map_err(lost)?;
    frame::decode(&body).map_err(|e| format!("garbled answer from the supervisor: {e}"))
}

/// `JOB [(INSTANCE)] GOAL/STATE[, process PID]` plus a line per other process.
fn format_status(s: &InstanceStatus) -> String {
    let mut out = s.job.clone();
    if !s.instance.is_empty() {
        out.push_str(&format!(" ({})", s.instance));
    }
    out.push_str(&format!(" {}/{}", s.goal.name(), s.state.name()));
    let main = s.processes.iter().find(|p| p.kind == "main");
    if let Some(p) = main {
        out.push_str(&format!(", process {}", p.pid));
    }
    out.push('\n');
    for p in s.processes.iter().filter(|p| p.kind != "main") {
        out.push_str(&format!("\t{} process {}\n", p.kind, p.pid));
    }
    out
}

/// The documented JSON shape of one instance (see README, "initctl --json").
fn json_status(s: &InstanceStatus) -> serde_json::Value {
    serde_json::json!({
        "job": s.job,
        "instance": s.instance,
        "goal": s.goal.name(),
        "state": s.state.name(),
        "processes": s.processes.iter().map(|p| serde_json::json!({"kind": p.kind, "pid": p.pid})).collect::<Vec<_>>(),
        "failure": s.failure,
        "status": s.status_text,
    })
}
