//! keel-supervisor: see the library docs. This binary parses its arguments, sets
//! up logging, and either checks job files offline or runs the event loop.

use clap::Parser;
use keel_supervisor::runtime::{Config, Runtime};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "keel-supervisor",
    version,
    about = "keel's supervisor: job files, lifecycles, events, the control socket"
)]
struct Args {
    /// Directory of job files (NAME.conf).
    #[arg(long, default_value = "/etc/init")]
    confdir: PathBuf,
    /// Control socket path.
    #[arg(long, default_value = keel_proto::ctl::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The sd_notify socket for `expect notify` jobs: a path, or `@NAME` for an
    /// abstract socket. Default: `notify` beside the control socket.
    #[arg(long, value_name = "PATH|@NAME", env = "KEEL_NOTIFY_SOCKET")]
    notify_socket: Option<String>,
    /// Directory for `console log` output.
    #[arg(long, default_value = "/var/log/keel")]
    logdir: PathBuf,
    /// Check job files or directories offline and exit (1 if any error).
    #[arg(long, num_args = 1.., value_name = "PATH")]
    check: Option<Vec<PathBuf>>,
    /// Print the newest state format this binary reads, and exit (used before a
    /// live upgrade).
    #[arg(long, hide = true)]
    state_format: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.state_format {
        println!("{}", keel_supervisor::journal::FORMAT_VERSION);
        return ExitCode::SUCCESS;
    }
    if let Some(paths) = args.check {
        let stdout = std::io::stdout();
        return match keel_supervisor::check::check_paths(&paths, &mut stdout.lock()) {
            Ok(false) => ExitCode::SUCCESS,
            Ok(true) => ExitCode::from(1),
            Err(e) => {
                eprintln!("keel-supervisor: {e}");
                ExitCode::from(2)
            }
        };
    }
    keel_supervisor::logging::init(std::env::var_os("KEEL_DEBUG").is_some());
    let notify_socket = args.notify_socket.unwrap_or_else(|| {
        args.socket
            .with_file_name("notify")
            .to_string_lossy()
            .into_owned()
    });
    let config = Config {
        notify_socket,
        confdir: args.confdir,
        socket: args.socket,
        logdir: args.logdir,
        args: std::env::args_os().collect(),
    };
    let result = Runtime::new(config).and_then(|mut rt| rt.run());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
