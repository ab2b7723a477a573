//! keel-initctl-fifo: sysvinit's control FIFO for keel. sysvinit's `telinit`,
//! `shutdown`, `halt`, `poweroff` and `reboot` (still owned by sysvinit-core on a
//! Debian system that boots keel) write `struct init_request`s into /run/initctl;
//! this job reads them and asks keel for the same through initctl:
//!
//! | request                     | keel                                   |
//! |-----------------------------|----------------------------------------|
//! | runlevel 0 (INIT_HALT=HALT) | `initctl halt`                         |
//! | runlevel 0                  | `initctl telinit 0` (power off)        |
//! | runlevel 1-6, S, Q, U       | `initctl telinit N` with the INIT_* env|
//! | powerfail/now/ok            | `initctl emit power-status-changed`    |
//! | setenv/unsetenv INIT_*      | kept for the next runlevel change      |
//!
//! One request at a time, each carried out before the next is read; a
//! malformed one, or bytes that start no request, are logged and ignored
//! (keel_sysv::initreq::Stream finds the requests). The FIFO is opened
//! read-write so that writers coming and going never make it read EOF.

use clap::Parser;
use keel_sysv::initreq::{Item, PowerState, REQUEST_SIZE, Request, Stream};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

#[derive(Parser)]
#[command(
    name = "keel-initctl-fifo",
    version,
    about = "sysvinit's /run/initctl FIFO, served by keel"
)]
struct Cli {
    #[arg(long, default_value = "/run/initctl")]
    fifo: PathBuf,
    /// The initctl that carries each request to keel.
    #[arg(long, default_value = "/sbin/initctl")]
    initctl: PathBuf,
}

/// The initctl arguments for `request`, given the INIT_* variables set so far;
/// None when the request only changes those variables.
fn initctl_args(request: Request, env: &mut BTreeMap<String, String>) -> Option<Vec<String>> {
    match request {
        Request::Runlevel('0') if env.get("INIT_HALT").is_some_and(|v| v == "HALT") => {
            Some(vec!["halt".into()])
        }
        Request::Runlevel(level) => {
            let mut args = vec!["telinit".to_owned()];
            for (k, v) in env.iter() {
                args.extend(["-e".to_owned(), format!("{k}={v}")]);
            }
            args.push(level.to_string());
            Some(args)
        }
        Request::Power(state) => {
            let status = match state {
                PowerState::Failing => "FAIL",
                PowerState::FailingNow => "CRITICAL",
                PowerState::Ok => "OK",
            };
            Some(vec![
                "emit".into(),
                "--no-wait".into(),
                "power-status-changed".into(),
                format!("POWER_STATUS={status}"),
            ])
        }
        Request::Env(vars) => {
            for (name, value) in vars {
                match value {
                    Some(v) => env.insert(name, v),
                    None => env.remove(&name),
                };
            }
            None
        }
        Request::Ignored(what) => {
            eprintln!("keel-initctl-fifo: {what} request ignored (keel has no use for it)");
            None
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let fifo = &cli.fifo;
    match std::fs::symlink_metadata(fifo) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => return Err(format!("{}: exists and is not a FIFO", fifo.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
                .map_err(|_| "FIFO path contains NUL".to_owned())?;
            // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
            if unsafe { libc::mkfifo(path.as_ptr(), 0o600) } != 0 {
                return Err(format!(
                    "mkfifo {}: {}",
                    fifo.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
        Err(e) => return Err(format!("{}: {e}", fifo.display())),
    }
    let mut reader = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fifo)
        .map_err(|e| format!("{}: {e}", fifo.display()))?;
    let mut env = BTreeMap::new();
    let mut stream = Stream::default();
    let mut buf = vec![0; REQUEST_SIZE * 8];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read {}: {e}", fifo.display())),
        };
        for item in stream.push(&buf[..n]) {
            let request = match item {
                Item::Request(Ok(r)) => r,
                Item::Request(Err(e)) => {
                    eprintln!("keel-initctl-fifo: ignored a malformed request: {e}");
                    continue;
                }
                Item::Garbage(n) => {
                    eprintln!(
                        "keel-initctl-fifo: ignored a malformed write: {n} bytes that start no request"
                    );
                    continue;
                }
            };
            let Some(args) = initctl_args(request, &mut env) else {
                continue;
            };
            eprintln!("keel-initctl-fifo: initctl {}", args.join(" "));
            match Command::new(&cli.initctl).args(&args).status() {
                Ok(s) if s.success() => {}
                Ok(s) => eprintln!("keel-initctl-fifo: initctl {} failed: {s}", args.join(" ")),
                Err(e) => eprintln!("keel-initctl-fifo: {}: {e}", cli.initctl.display()),
            }
        }
    }
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keel-initctl-fifo: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdowns_env_decides_halt_or_poweroff() {
        let mut env = BTreeMap::new();
        let set = |v: &str| Request::Env(vec![("INIT_HALT".into(), Some(v.into()))]);
        assert_eq!(initctl_args(set("HALT"), &mut env), None);
        assert_eq!(
            initctl_args(Request::Runlevel('0'), &mut env),
            Some(vec!["halt".into()])
        );
        initctl_args(set("POWEROFF"), &mut env);
        assert_eq!(
            initctl_args(Request::Runlevel('0'), &mut env),
            Some(
                ["telinit", "-e", "INIT_HALT=POWEROFF", "0"]
                    .map(String::from)
                    .to_vec()
            )
        );
        initctl_args(Request::Env(vec![("INIT_HALT".into(), None)]), &mut env);
        assert_eq!(
            initctl_args(Request::Runlevel('6'), &mut env),
            Some(["telinit", "6"].map(String::from).to_vec())
        );
    }
}
