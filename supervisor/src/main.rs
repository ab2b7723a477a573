//! keel-supervisor: see the library docs. This binary parses its arguments (and
//! the options from outside, see `options`), sets up logging, and either checks
//! job files offline or runs the event loop.

use clap::Parser;
use keel_supervisor::options::{self, Options};
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
    /// Directory of job files (NAME.conf). Default: /etc/init.
    #[arg(long)]
    confdir: Option<PathBuf>,
    /// Control socket path. Default: /run/keel/control.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The sd_notify socket for `expect notify` jobs: a path, or `@NAME` for an
    /// abstract socket. Default: `notify` beside the control socket.
    #[arg(long, value_name = "PATH|@NAME", env = "KEEL_NOTIFY_SOCKET")]
    notify_socket: Option<String>,
    /// Directory for `console log` output. Default: /var/log/keel.
    #[arg(long)]
    logdir: Option<PathBuf>,
    /// The size cap of one job log file (bytes, or with K, M or G; 0 for none):
    /// a full JOB.log becomes JOB.log.1 and a new one starts. Default: 16M.
    #[arg(long, env = "KEEL_LOG_SIZE", value_parser = options::parse_size)]
    log_size: Option<u64>,
    /// How many rotated job log files are kept (JOB.log.1 … JOB.log.N).
    /// Default: 3.
    #[arg(long, env = "KEEL_LOG_KEEP")]
    log_keep: Option<u32>,
    /// keel's cgroup2 subtree for job cgroups (`none`: no cgroups). Default: as
    /// PID 1 of a machine /sys/fs/cgroup/keel, otherwise keel-RANDOM under the
    /// supervisor's own cgroup2 cgroup.
    #[arg(long, env = "KEEL_CGROUP_ROOT", value_name = "PATH")]
    cgroup_root: Option<PathBuf>,
    /// The fstab whose mounts give mountall's events (`mounted`,
    /// `local-filesystems`…; `none`: no such events). Default: /etc/fstab as PID 1
    /// of a machine, otherwise none.
    #[arg(long, value_name = "PATH|none")]
    fstab: Option<PathBuf>,
    /// The configuration file: KEY=VALUE lines named like these options, which
    /// they set where neither the command line nor a `keel.KEY=` word of the
    /// kernel command line (read on the machine's init only) does.
    #[arg(long, value_name = "FILE", default_value = options::DEFAULT_FILE)]
    config: PathBuf,
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
    keel_supervisor::heap::fix_mmap_threshold();
    let machine = keel_supervisor::boot::is_machine_boot();
    keel_supervisor::logging::init(std::env::var_os("KEEL_DEBUG").is_some(), machine);
    let (soft, hard) = keel_supervisor::fdlimit::raise();
    tracing::debug!("fd limit {soft} (hard {hard})");
    let (outside, problems) = options::from_outside(&args.config, machine);
    for problem in problems {
        tracing::warn!("{problem} (ignored)");
    }
    let given = Options {
        confdir: args.confdir,
        socket: args.socket,
        notify_socket: args.notify_socket,
        logdir: args.logdir,
        log_size: args.log_size,
        log_keep: args.log_keep,
        cgroup_root: args.cgroup_root,
    }
    .or(outside);
    let socket = given
        .socket
        .unwrap_or_else(|| keel_proto::ctl::DEFAULT_SOCKET.into());
    let notify_socket = given.notify_socket.unwrap_or_else(|| {
        socket
            .with_file_name("notify")
            .to_string_lossy()
            .into_owned()
    });
    let config = Config {
        notify_socket,
        confdir: given.confdir.unwrap_or_else(|| "/etc/init".into()),
        socket,
        logdir: given.logdir.unwrap_or_else(|| "/var/log/keel".into()),
        log_size: given.log_size.unwrap_or(16 << 20),
        log_keep: given
            .log_keep
            .unwrap_or(keel_supervisor::joblog::DEFAULT_KEEP),
        cgroup_root: given.cgroup_root,
        args: std::env::args_os().collect(),
        fstab: match args.fstab {
            Some(path) if path.as_os_str() == "none" => None,
            Some(path) => Some(path),
            None => machine.then(|| "/etc/fstab".into()),
        },
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
