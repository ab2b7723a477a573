//! The managers compared, each run as PID 1 of its own PID namespace, with N
//! trivial services: how each is configured, started, asked for status, told to
//! restart a service, and which of its processes are "the manager" when memory is
//! counted. Every setting chosen here is the peer's fastest honest one; README.md
//! of tests/bench lists them.
//!
//! A service is `sleep NUMBER`, the number (`base + i`) naming service `i`, so the
//! benchmark tells a service's process from every other one by its command line
//! alone, whichever manager started it.

use keel_tests::{Keel, Namespace, Scratch, Setup, children, comm, state};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Keel,
    S6,
    Runit,
    /// Not a manager: spawn-floor, which posix_spawns the services and keeps them.
    Floor,
}

impl Manager {
    pub fn name(self) -> &'static str {
        match self {
            Manager::Keel => "keel",
            Manager::S6 => "s6",
            Manager::Runit => "runit",
            Manager::Floor => "spawn_floor",
        }
    }
}

/// What the services are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Bring-up and memory: a trivial service, nothing else.
    Trivial,
    /// Restart and respawn: restarted at once when killed. keel: `respawn` with no
    /// respawn limit (Upstart's default limit, 10 in 5 s, would stop the job);
    /// s6: readiness notification (s6-supervise restarts without its 1 s pause
    /// only a service that was ready at least 1 s before it died).
    Pool,
}

/// Where the compared programs are.
pub struct Tools {
    pub keel_bin: PathBuf,
    pub floor: PathBuf,
}

/// runsvdir's compiled-in `MAXSERVICES` (Debian's runit): one runsvdir starts no
/// more. Beyond it, runit is run as its users run that many: the services split
/// into groups of this size, each group's runsvdir a service of the top one.
pub const RUNIT_MAX_SERVICES: usize = 1000;

/// One manager running as PID 1 of its namespace with its services.
pub struct Running {
    pub manager: Manager,
    dir: PathBuf,
    /// runit beyond [`RUNIT_MAX_SERVICES`]: service `i` is in `group{i / MAX}/`.
    runit_groups: bool,
    inner: Inner,
}

enum Inner {
    Keel(Keel),
    Peer { ns: Namespace, _dir: Scratch },
}

/// The service directory (s6, runit) or job name (keel) of service `i`.
pub fn service_name(i: usize) -> String {
    format!("s{i:04}")
}

/// Where a peer's service directories are.
struct Placement<'a> {
    dir: &'a Path,
    runit_groups: bool,
}

impl Placement<'_> {
    fn service_dir(&self, i: usize) -> PathBuf {
        let scan = if self.runit_groups {
            self.dir.join(format!("group{}", i / RUNIT_MAX_SERVICES))
        } else {
            self.dir.join("scan")
        };
        scan.join(service_name(i))
    }
}

/// A peer's `run` script: the shell is the fastest runner here (measured against
/// execlineb, which is slower to start on this machine); `exec` leaves `sleep`
/// as the supervised process itself.
fn run_script(manager: Manager, flavour: Flavour, arg: u32) -> String {
    match (manager, flavour) {
        // The newline on fd 3 (notification-fd) tells s6-supervise it is ready.
        (Manager::S6, Flavour::Pool) => format!("#!/bin/sh\necho >&3\nexec sleep {arg}\n"),
        _ => format!("#!/bin/sh\nexec sleep {arg}\n"),
    }
}

/// keel's job: started on startup, `console none` (the peers' services inherit a
/// console nobody writes to; keel's default, `console log`, would open a log file
/// per job).
fn job_file(flavour: Flavour, arg: u32) -> String {
    match flavour {
        Flavour::Trivial => format!("start on startup\nconsole none\nexec sleep {arg}\n"),
        Flavour::Pool => format!(
            "start on startup\nconsole none\nrespawn\nrespawn limit unlimited\nexec sleep {arg}\n"
        ),
    }
}

/// Starts `manager` with `n` services. Returns as soon as the namespace's PID 1
/// exists; the services come up by themselves.
pub fn launch(manager: Manager, n: usize, base: u32, flavour: Flavour, tools: &Tools) -> Running {
    match manager {
        Manager::Keel => {
            let texts: Vec<(String, String)> = (0..n)
                .map(|i| (service_name(i), job_file(flavour, base + i as u32)))
                .collect();
            let jobs: Vec<(&str, &str)> = texts
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            let keel = Keel::launch(Setup {
                jobs: &jobs,
                supervisor: None,
                env: &[],
            });
            Running {
                manager,
                dir: keel.dir.0.clone(),
                runit_groups: false,
                inner: Inner::Keel(keel),
            }
        }
        Manager::S6 | Manager::Runit | Manager::Floor => {
            let scratch = Scratch::new(manager.name());
            let dir = scratch.0.clone();
            let scan = dir.join("scan");
            fs::create_dir_all(&scan).expect("scan dir");
            let runit_groups = manager == Manager::Runit && n > RUNIT_MAX_SERVICES;
            let mut scans = vec![scan.clone()];
            if runit_groups {
                for g in 0..n.div_ceil(RUNIT_MAX_SERVICES) {
                    let group = dir.join(format!("group{g}"));
                    let svc = scan.join(format!("group{g}"));
                    fs::create_dir_all(&group).expect("group dir");
                    fs::create_dir_all(&svc).expect("group service dir");
                    let run = svc.join("run");
                    fs::write(
                        &run,
                        format!("#!/bin/sh\nexec runsvdir {}\n", group.display()),
                    )
                    .expect("run script");
                    fs::set_permissions(&run, fs::Permissions::from_mode(0o755))
                        .expect("chmod run");
                    scans.push(group);
                }
            }
            let placed = Placement {
                dir: &dir,
                runit_groups,
            };
            if manager != Manager::Floor {
                for i in 0..n {
                    let svc = placed.service_dir(i);
                    fs::create_dir_all(&svc).expect("service dir");
                    let run = svc.join("run");
                    fs::write(&run, run_script(manager, flavour, base + i as u32))
                        .expect("run script");
                    fs::set_permissions(&run, fs::Permissions::from_mode(0o755))
                        .expect("chmod run");
                    if manager == Manager::S6 && flavour == Flavour::Pool {
                        fs::write(svc.join("notification-fd"), "3\n").expect("notification-fd");
                    }
                }
            }
            // runsvdir waits a second before scanning a directory modified within
            // the current second (its mtime has a resolution of one); a real scan
            // directory is older than that.
            let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
            for scan in &scans {
                fs::File::open(scan)
                    .and_then(|d| d.set_modified(past))
                    .expect("scan dir mtime");
            }
            let (program, args): (PathBuf, Vec<std::ffi::OsString>) = match manager {
                // -c: s6-svscan refuses services beyond 500 unless told more.
                Manager::S6 => (
                    "s6-svscan".into(),
                    vec![
                        "-c".into(),
                        n.max(500).to_string().into(),
                        scan.clone().into(),
                    ],
                ),
                Manager::Runit => ("runsvdir".into(), vec![scan.clone().into()]),
                _ => (
                    tools.floor.clone(),
                    vec![n.to_string().into(), base.to_string().into()],
                ),
            };
            let program = which(&program);
            let ns = Namespace::launch(&program, &args, &[], &dir.join("console"));
            Running {
                manager,
                dir,
                runit_groups,
                inner: Inner::Peer { ns, _dir: scratch },
            }
        }
    }
}

/// A program's path: as given if it has a slash, else the first on PATH.
fn which(program: &Path) -> PathBuf {
    if program.components().count() > 1 {
        return program.to_path_buf();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{} not found on PATH", program.display()))
}

impl Running {
    /// The namespace's PID 1, as a host pid.
    pub fn init_pid(&self) -> i32 {
        match &self.inner {
            Inner::Keel(k) => k.init_pid,
            Inner::Peer { ns, .. } => ns.init_pid,
        }
    }

    fn service_dir(&self, i: usize) -> PathBuf {
        Placement {
            dir: &self.dir,
            runit_groups: self.runit_groups,
        }
        .service_dir(i)
    }

    /// The manager's own processes (the services and anything they run are not):
    /// keel-init and keel-supervisor; s6-svscan and every s6-supervise; runsvdir
    /// and every runsv (with groups, also each group's runsvdir and its runsvs).
    pub fn own_processes(&self) -> Vec<i32> {
        let helpers: &[&str] = match self.manager {
            Manager::Keel => &["keel-supervisor"],
            Manager::S6 => &["s6-supervise"],
            Manager::Runit => &["runsv", "runsvdir"],
            Manager::Floor => &[],
        };
        let mut out = vec![self.init_pid()];
        let mut next = 0;
        while next < out.len() {
            let parent = out[next];
            next += 1;
            out.extend(children(parent).into_iter().filter(|&p| {
                comm(p).is_some_and(|c| helpers.contains(&c.as_str())) && state(p) != Some('Z')
            }));
        }
        out
    }

    fn tool(&self, program: &str) -> Command {
        let mut c = match &self.inner {
            Inner::Keel(k) => {
                let mut c = Command::new(keel_tests::bin(program));
                c.env("KEEL_SOCKET", k.socket());
                c
            }
            Inner::Peer { .. } => Command::new(program),
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// The manager's command-line status query of service `i`.
    pub fn status_command(&self, i: usize) -> Command {
        self.service_command(i, "status", &["s6-svstat"], "status")
    }

    /// The manager's command-line restart of service `i`. (`sv restart` then waits
    /// for runsv to report the service up again, polling every 420 ms; the
    /// benchmark times the restart to the new process's exec, not to sv's exit.)
    pub fn restart_command(&self, i: usize) -> Command {
        self.service_command(i, "restart", &["s6-svc", "-r"], "restart")
    }

    /// keel's `initctl start` of service `i` (it returns once the job runs).
    pub fn start_command(&self, i: usize) -> Command {
        assert_eq!(self.manager, Manager::Keel, "start_latency is keel's alone");
        self.service_command(i, "start", &[], "")
    }

    /// `initctl VERB JOB` (keel), `S6_TOOL... DIR` (s6), `sv VERB DIR` (runit).
    fn service_command(&self, i: usize, initctl: &str, s6: &[&str], sv: &str) -> Command {
        let (program, mut args): (&str, Vec<std::ffi::OsString>) = match self.manager {
            Manager::Keel => ("initctl", vec![initctl.into(), service_name(i).into()]),
            Manager::S6 => (s6[0], s6[1..].iter().map(Into::into).collect()),
            Manager::Runit => ("sv", vec![sv.into()]),
            Manager::Floor => unreachable!("spawn-floor has no command-line tool"),
        };
        if self.manager != Manager::Keel {
            args.push(self.service_dir(i).into());
        }
        let mut c = self.tool(program);
        c.args(args);
        c
    }

    /// One sweep of the manager's own status tool over the services in `pending`
    /// (indices), removing those it reports up. keel: one `initctl list` for all;
    /// runit: one `sv status` naming every pending service; s6: one `s6-svstat -o
    /// up` per pending service (it takes one service directory).
    pub fn status_sweep(&self, pending: &mut Vec<usize>) {
        match self.manager {
            Manager::Keel => {
                let mut c = self.tool("initctl");
                c.arg("list").stdout(Stdio::piped());
                if let Ok(out) = c.output() {
                    let text = String::from_utf8_lossy(&out.stdout);
                    let up: std::collections::HashSet<&str> = text
                        .lines()
                        .filter(|l| l.contains(" start/running"))
                        .filter_map(|l| l.split_whitespace().next())
                        .collect();
                    pending.retain(|&i| !up.contains(service_name(i).as_str()));
                }
            }
            Manager::S6 => pending.retain(|&i| {
                let mut c = self.tool("s6-svstat");
                c.args(["-o", "up"])
                    .arg(self.service_dir(i))
                    .stdout(Stdio::piped());
                !c.output()
                    .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"true"))
            }),
            Manager::Runit => {
                if pending.is_empty() {
                    return;
                }
                let mut c = self.tool("sv");
                c.arg("status")
                    .args(pending.iter().map(|&i| self.service_dir(i)))
                    .stdout(Stdio::piped());
                if let Ok(out) = c.output() {
                    let text = String::from_utf8_lossy(&out.stdout);
                    let up: std::collections::HashSet<String> = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("run: "))
                        .filter_map(|l| l.split(':').next())
                        .map(str::to_string)
                        .collect();
                    pending.retain(|&i| !up.contains(&self.service_dir(i).display().to_string()));
                }
            }
            Manager::Floor => pending.clear(),
        }
    }

    /// keel only: the harness's handle (control socket, supervisor pid).
    pub fn keel(&self) -> Option<&Keel> {
        match &self.inner {
            Inner::Keel(k) => Some(k),
            Inner::Peer { .. } => None,
        }
    }
}
