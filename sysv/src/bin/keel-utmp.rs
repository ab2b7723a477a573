//! keel-utmp: writes the boot, runlevel and shutdown records of utmp and wtmp as
//! sysvinit did, for `who -b`, `runlevel`, `last reboot` and sysvinit's `halt`.
//! Run by the job set (dist/debian/init/utmp*.conf); see keel_sysv::utmp.

use clap::{Parser, Subcommand};
use keel_sysv::utmp::{self, Record};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(
    name = "keel-utmp",
    version,
    about = "Write sysvinit's utmp/wtmp records"
)]
struct Cli {
    #[arg(long, default_value = "/run/utmp")]
    utmp: PathBuf,
    #[arg(long, default_value = "/var/log/wtmp")]
    wtmp: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start utmp afresh with the boot record (the kernel's boot time); append
    /// it to wtmp, creating wtmp if missing.
    Boot,
    /// Record the runlevel LEVEL, entered from PREVIOUS (default N: none).
    Runlevel {
        level: String,
        previous: Option<String>,
    },
    /// Append the shutdown record to wtmp.
    Shutdown,
}

fn level_char(text: &str) -> Result<char, String> {
    match text.as_bytes() {
        [] => Ok('N'),
        [b @ (b'0'..=b'6' | b'S' | b's' | b'N')] => Ok(char::from(*b).to_ascii_uppercase()),
        _ => Err(format!("not a runlevel: {text:?} (0-6, S or N)")),
    }
}

/// The kernel's boot time, from /proc/stat's `btime`.
fn boot_time() -> Result<SystemTime, String> {
    let stat = fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|s| s.trim().parse().ok())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .ok_or_else(|| "/proc/stat: no btime line".to_owned())
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Creates `path` (emptied when `truncate`) with the owner and mode login
/// programs expect: root:utmp 0664.
fn prepare(path: &Path, truncate: bool) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(truncate)
        .mode(0o664)
        .open(path)
        .map_err(fail)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o664)).map_err(fail)?;
    if let Some(gid) = utmp_group() {
        std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(fail)?;
    }
    Ok(())
}

fn utmp_group() -> Option<u32> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut fields = l.split(':');
        (fields.next() == Some("utmp")).then(|| fields.nth(1)?.parse().ok())?
    })
}

fn run(cli: Cli) -> Result<(), String> {
    let now = SystemTime::now();
    let io = |e: std::io::Error| e.to_string();
    match cli.command {
        Command::Boot => {
            let record = utmp::to_utmpx(&Record::Boot {
                at: boot_time()?,
                kernel: kernel_release(),
            });
            prepare(&cli.utmp, true)?;
            prepare(&cli.wtmp, false)?;
            utmp::put_utmp(&cli.utmp, &record).map_err(io)?;
            utmp::append_wtmp(&cli.wtmp, &record).map_err(io)
        }
        Command::Runlevel { level, previous } => {
            let level = level_char(&level)?;
            let previous = level_char(previous.as_deref().unwrap_or(""))?;
            let record = utmp::to_utmpx(&Record::Runlevel {
                level,
                previous,
                at: now,
            });
            utmp::put_utmp(&cli.utmp, &record).map_err(io)?;
            utmp::append_wtmp(&cli.wtmp, &record).map_err(io)
        }
        Command::Shutdown => {
            let record = utmp::to_utmpx(&Record::Shutdown {
                at: now,
                kernel: kernel_release(),
            });
            utmp::append_wtmp(&cli.wtmp, &record).map_err(io)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-utmp: {e}");
            ExitCode::FAILURE
        }
    }
}
