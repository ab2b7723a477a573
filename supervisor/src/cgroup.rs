//! Job cgroups, on cgroup v2 only: keel's subtree, one cgroup per job instance, the
//! `cgroup` stanza's settings, and killing what is left of an instance.
//!
//! keel's subtree ([`Tree`]) is chosen once and kept in the saved state
//! ([`Saved`]), so a restarted supervisor finds it:
//! - `--cgroup-root PATH` names it (`none`: no cgroups);
//! - as PID 1 of a machine, `/sys/fs/cgroup/keel` (the supervisor mounts cgroup2 at
//!   `/sys/fs/cgroup` first, `boot`), with every controller keel knows enabled down
//!   to it;
//! - otherwise `keel-RANDOM` under the supervisor's own cgroup2 cgroup (from
//!   `/proc/self/cgroup` and the cgroup2 mount in `/proc/self/mountinfo`), unique
//!   per keel, with the controllers its parent delegates.
//!
//! If none can be made, there are no cgroups, said once in the log; a job whose
//! `cgroup` stanza sets something then fails to start instead of running unlimited.
//!
//! An instance's cgroup is `ROOT/JOB` (`ROOT/JOB/INSTANCE` for a job with
//! `instance`), names escaped ([`escape`]). It is made, with the stanza's settings
//! written into it, before the instance's first process, which like every later one
//! is born in it (`CLONE_INTO_CGROUP`, `spawn`). When main has ended on the way to
//! post-stop whatever is left is killed ([`kill_each`]); once the instance has
//! stopped its cgroup is removed, retried later while a killed process is still
//! dying.
//!
//! Why not `cgroup.kill` for that: on the kernels this was built on (6.18 here), a
//! process cloned with `CLONE_INTO_CGROUP` into a cgroup that was ever killed
//! through `cgroup.kill` is itself killed at birth (the kill sequence number is
//! sampled from the parent's cgroup, compared with the target's). keel spawns
//! post-stop — and for a respawn the next pre-start and main — into the very cgroup
//! whose remnants it just killed, so it kills them by pid instead: each process of
//! `cgroup.procs` through a pidfd (checked to still be in the cgroup, so a recycled
//! pid is never hit), pass after pass until a pass finds nothing new. A process
//! with SIGKILL pending cannot fork any more, so each pass catches the children of
//! the last. [`kill`] (`cgroup.kill`) is for a subtree nothing is spawned into again.
//!
//! Upstart's v1 settings are mapped where v2 has an equivalent ([`settings`]):
//! `memory.limit_in_bytes` → `memory.max`, `cpu.shares` → `cpu.weight`,
//! `blkio.weight` → `io.weight`; v2 keys are taken as they are.

use crate::job::Cgroup;
use rustix::fd::OwnedFd;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// The controllers keel enables for its jobs (those its settings need).
pub const CONTROLLERS: [&str; 4] = ["cpu", "io", "memory", "pids"];

/// What the saved state keeps: keel's subtree and the instance cgroups that exist.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// keel's cgroup2 subtree (absolute path); `None` until one is chosen.
    pub root: Option<String>,
    /// (job, instance) of every instance cgroup made and not yet removed.
    /// A journal table (`()` values: a set, saved entry by entry).
    pub instances: keel_core::journal::Tracked<(String, String), ()>,
}

/// How keel's subtree is chosen (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootChoice {
    /// `--cgroup-root PATH`.
    Path(PathBuf),
    /// `--cgroup-root none`.
    Disabled,
    /// The default: machine or own cgroup.
    Auto,
}

impl RootChoice {
    pub fn parse(arg: Option<&Path>) -> RootChoice {
        match arg {
            None => RootChoice::Auto,
            Some(p) if p == Path::new("none") => RootChoice::Disabled,
            Some(p) => RootChoice::Path(p.to_path_buf()),
        }
    }
}

/// Why keel has no cgroups, an instance's cgroup cannot be made, or a job's
/// `cgroup` stanza cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("disabled by --cgroup-root none")]
    Disabled,
    #[error("the supervisor is in no cgroup2 hierarchy")]
    NoOwnCgroup,
    #[error("{} is not inside a cgroup2 hierarchy", .0.display())]
    NotCgroup2(PathBuf),
    #[error("cannot create {}: {source}", path.display())]
    CreateRoot { path: PathBuf, source: io::Error },
    #[error("cannot create cgroup {}: {}", path.display(), crate::errno::no_os_error(source))]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "cgroup {key}: the {controller} controller is not available to keel's cgroups here \
         (cgroup v2 controllers: {})",
        if available.is_empty() { "none".to_string() } else { available.join(" ") }
    )]
    NoController {
        key: String,
        controller: String,
        available: Vec<String>,
    },
    #[error("cgroup {key} {value}: {}", crate::errno::no_os_error(source))]
    Write {
        key: String,
        value: String,
        source: io::Error,
    },
    #[error("cgroup {controller} {key}: the setting belongs to the {owner} controller")]
    WrongController {
        controller: String,
        key: String,
        owner: String,
    },
    #[error("cgroup {key}: bad value {value:?}")]
    BadValue { key: String, value: String },
    #[error("cgroup {key}: {value} is not a number")]
    NotANumber { key: String, value: String },
    #[error(
        "cgroup {0}: unknown or without a cgroup v2 equivalent (keel takes memory.max, \
         memory.high, memory.low, memory.min, memory.swap.max, pids.max, cpu.weight, cpu.max, \
         io.weight, and Upstart's memory.limit_in_bytes, cpu.shares, blkio.weight)"
    )]
    UnknownKey(String),
}

/// keel's cgroup2 subtree.
#[derive(Debug, Clone)]
pub struct Tree {
    root: PathBuf,
}

impl Tree {
    /// Opens (making it if needed) keel's subtree: the saved one if there is one,
    /// else as `choice` says. `Err` says why there are no cgroups.
    pub fn open(saved: &mut Saved, choice: &RootChoice, machine: bool) -> Result<Tree, Error> {
        if *choice == RootChoice::Disabled {
            saved.root = None;
            return Err(Error::Disabled);
        }
        let root = match (&saved.root, choice) {
            (Some(r), _) => PathBuf::from(r),
            (None, RootChoice::Path(p)) => p.clone(),
            (None, _) if machine => PathBuf::from("/sys/fs/cgroup/keel"),
            (None, _) => {
                let own = own_cgroup2().ok_or(Error::NoOwnCgroup)?;
                own.join(format!("keel-{:016x}", random_u64()))
            }
        };
        if !is_cgroup2(root.parent().unwrap_or(Path::new("/"))) {
            return Err(Error::NotCgroup2(root));
        }
        if machine && let Some(parent) = root.parent() {
            // The root cgroup may enable controllers while it has processes.
            enable_controllers(parent);
        }
        match std::fs::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::CreateRoot { path: root, source }),
        }
        enable_controllers(&root);
        saved.root = Some(root.to_string_lossy().into_owned());
        Ok(Tree { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The instance's cgroup (a later readiness protocol reads its processes).
    pub fn instance_path(&self, job: &str, instance: &str) -> PathBuf {
        let dir = self.root.join(escape(job));
        if instance.is_empty() {
            dir
        } else {
            dir.join(escape(instance))
        }
    }

    /// Makes the instance's cgroup and writes its settings into it.
    pub fn create(
        &self,
        job: &str,
        instance: &str,
        settings: &[(String, String)],
    ) -> Result<PathBuf, Error> {
        let path = self.instance_path(job, instance);
        if !instance.is_empty() {
            let parent = self.root.join(escape(job));
            mkdir(&parent)?;
            enable_controllers(&parent);
        }
        mkdir(&path)?;
        let available = controllers(&path);
        for (key, value) in settings {
            let controller = key.split('.').next().unwrap_or(key);
            if !available.iter().any(|c| c == controller) {
                return Err(Error::NoController {
                    key: key.clone(),
                    controller: controller.to_string(),
                    available,
                });
            }
            std::fs::write(path.join(key), value).map_err(|source| Error::Write {
                key: key.clone(),
                value: value.clone(),
                source,
            })?;
        }
        Ok(path)
    }

    /// The instance's cgroup as an fd to be born in (`CLONE_INTO_CGROUP`).
    pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
        use rustix::fs::{Mode, OFlags};
        Ok(rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }
}

/// The processes in the cgroup at `path` (`cgroup.procs`).
pub fn procs(path: &Path) -> io::Result<Vec<i32>> {
    Ok(std::fs::read_to_string(path.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// The most passes [`kill_each`] makes (a fork bomb outrunning this many is left
/// to the next sweep).
const KILL_PASSES: usize = 16;

/// SIGKILL to every process in the cgroup at `path` and below, by pid (see the
/// module docs); the number of processes signalled.
pub fn kill_each(path: &Path) -> usize {
    // Most often nothing is left: `populated 0` (of the whole subtree) says so in
    // one read.
    if populated(path) == Some(false) {
        return 0;
    }
    let mut signalled = BTreeSet::new();
    for _ in 0..KILL_PASSES {
        let mut new = 0;
        for dir in subtree(path) {
            for pid in procs(&dir).unwrap_or_default() {
                if signalled.insert(pid) {
                    new += 1;
                    kill_member(pid, &dir);
                }
            }
        }
        if new == 0 {
            break;
        }
    }
    signalled.len()
}

/// Whether any process is in the cgroup at `path` or below (`cgroup.events`).
pub fn populated(path: &Path) -> Option<bool> {
    let events = std::fs::read_to_string(path.join("cgroup.events")).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("populated "))
        .map(|v| v.trim() != "0")
}

/// SIGKILL to `pid` if it is (still) a member of the cgroup at `dir`.
fn kill_member(pid: i32, dir: &Path) {
    use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
    let Some(fd) = Pid::from_raw(pid).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok()) else {
        return;
    };
    // The pidfd pins the process: if it is in `dir` now, it is the one listed (or
    // a process of the same cgroup that took its pid, as much a remnant).
    let member = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| {
        c.lines()
            .filter_map(|l| l.strip_prefix("0::"))
            .any(|rel| rel.len() > 1 && dir.ends_with(rel.trim_start_matches('/')))
    });
    if member {
        let _ = pidfd_send_signal(&fd, Signal::KILL);
    }
}

/// Kills every process in the cgroup at `path` and below with `cgroup.kill`
/// (SIGKILL to each member through a pidfd before Linux 5.14). Only for a subtree nothing will be
/// spawned into again (see the module docs).
pub fn kill(path: &Path) -> io::Result<()> {
    match std::fs::write(path.join("cgroup.kill"), "1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && path.exists() => {
            // Before Linux 5.14: each process through a pidfd, if it is still
            // a member (a pid recycled outside the cgroup is not hit).
            for dir in subtree(path) {
                for pid in procs(&dir).unwrap_or_default() {
                    kill_member(pid, &dir);
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Removes the cgroup at `path` and any the job made below it. `Ok(false)` while a
/// process is still in it (try again later); a cgroup already gone counts as removed.
pub fn remove(path: &Path) -> io::Result<bool> {
    let mut dirs = subtree(path);
    // Deepest first.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// `path` and every cgroup below it.
fn subtree(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![path.to_path_buf()];
    while let Some(dir) = todo.pop() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            todo.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        out.push(dir);
    }
    out
}

fn mkdir(path: &Path) -> Result<(), Error> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The controllers available in the cgroup at `path` (`cgroup.controllers`).
pub fn controllers(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Enables, for the cgroups below `path`, every controller of [`CONTROLLERS`] that
/// `path` has. One at a time: a controller that cannot be enabled (its cgroup has
/// processes, or it is not delegated) leaves the others.
fn enable_controllers(path: &Path) {
    let have = controllers(path);
    for c in CONTROLLERS.iter().filter(|c| have.iter().any(|h| h == *c)) {
        if let Err(e) = std::fs::write(path.join("cgroup.subtree_control"), format!("+{c}")) {
            tracing::debug!(
                "cannot enable the {c} controller below {}: {e}",
                path.display()
            );
        }
    }
}

/// Whether `path` is on a cgroup2 file system.
fn is_cgroup2(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type == libc::CGROUP2_SUPER_MAGIC)
}

/// The supervisor's own cgroup2 cgroup as a path: the `0::PATH` line of
/// `/proc/self/cgroup` under the mount point of the cgroup2 file system.
pub fn own_cgroup2() -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    own_cgroup2_in(own, &mountinfo)
}

/// `own_cgroup2` on given file contents: the cgroup2 mount whose root is a prefix
/// of `own`, and `own` below it.
fn own_cgroup2_in(own: &str, mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        if fields.get(sep + 1) != Some(&"cgroup2") {
            return None;
        }
        let (root, mount) = (fields.get(3)?, fields.get(4)?);
        let rest = own.strip_prefix(root.trim_end_matches('/'))?;
        Some(PathBuf::from(format!("{mount}{rest}")))
    })
}

/// A cgroup directory name for a job or instance name: letters, digits, `-` and
/// `_` are kept, every other byte is `%XX` — so `/` never nests and no name can
/// collide with a control file (`cgroup.procs`, `memory.max`: these have a dot).
/// Names that would be too long for a directory entry end in a hash.
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    if out.len() > 200 {
        // FNV-1a of the whole name keeps long names apart.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut cut = 180;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&format!("~{hash:016x}"));
    }
    out
}

/// (file, value) pairs to write, and warnings.
pub type Settings = (Vec<(String, String)>, Vec<String>);

/// The cgroup v2 settings of a job's `cgroup` stanzas, as (file, value), and
/// warnings for what is accepted but has no effect. Upstart's v1 keys are mapped
/// where v2 has an equivalent; an unknown key, or one without one, is an error.
pub fn settings(stanzas: &[Cgroup]) -> Result<Settings, Error> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for c in stanzas {
        if let Some(name) = &c.name {
            warnings.push(format!(
                "cgroup {} {name}: the name is not used; keel gives each instance its own cgroup",
                c.controller
            ));
        }
        let Some((key, value)) = &c.setting else {
            continue;
        };
        let (file, value) = setting(key, value)?;
        let owner = file.split('.').next().unwrap_or_default();
        let stanza = match c.controller.as_str() {
            "blkio" => "io",
            other => other,
        };
        if owner != stanza {
            return Err(Error::WrongController {
                controller: c.controller.clone(),
                key: key.clone(),
                owner: owner.to_string(),
            });
        }
        out.retain(|(f, _): &(String, String)| *f != file);
        out.push((file, value));
    }
    Ok((out, warnings))
}

/// One setting in v2 terms.
fn setting(key: &str, value: &str) -> Result<(String, String), Error> {
    if value.is_empty() || value.contains(['\n', '\0']) {
        return Err(Error::BadValue {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    let number = |key: &str| -> Result<u64, Error> {
        value.parse::<u64>().map_err(|_| Error::NotANumber {
            key: key.to_string(),
            value: value.to_string(),
        })
    };
    let mapped = match key {
        "memory.max" | "memory.high" | "memory.low" | "memory.min" | "memory.swap.max"
        | "pids.max" | "cpu.weight" | "cpu.max" | "io.weight" => {
            (key.to_string(), value.to_string())
        }
        // v1 → v2: -1 is v1's "no limit".
        "memory.limit_in_bytes" => (
            "memory.max".into(),
            if value == "-1" {
                "max".into()
            } else {
                value.into()
            },
        ),
        // v1 shares (2..=262144, default 1024) → v2 weight (1..=10000, default 100),
        // the conversion container runtimes use.
        "cpu.shares" => {
            let shares = number(key)?.clamp(2, 262_144);
            (
                "cpu.weight".into(),
                (1 + (shares - 2) * 9999 / 262_142).to_string(),
            )
        }
        // v1 blkio weight (10..=1000) → v2 io weight (1..=10000).
        "blkio.weight" => {
            let weight = number(key)?.clamp(10, 1000);
            (
                "io.weight".into(),
                (1 + (weight - 10) * 9999 / 990).to_string(),
            )
        }
        _ => return Err(Error::UnknownKey(key.to_string())),
    };
    Ok(mapped)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::NONBLOCK) {
        Ok(8) => u64::from_ne_bytes(b),
        // No entropy yet this early in a boot: the time will do for a unique name.
        _ => {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
            (t.tv_sec as u64) << 30 ^ t.tv_nsec as u64 ^ u64::from(std::process::id()) << 48
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cg(controller: &str, name: Option<&str>, kv: Option<(&str, &str)>) -> Cgroup {
        Cgroup {
            controller: controller.into(),
            name: name.map(str::to_string),
            setting: kv.map(|(k, v)| (k.to_string(), v.to_string())),
        }
    }

    #[test]
    fn v1_settings_map_to_v2_and_v2_pass_through() {
        let (s, w) = settings(&[
            cg("memory", None, Some(("memory.limit_in_bytes", "52428800"))),
            cg("cpu", None, Some(("cpu.shares", "1024"))),
            cg("pids", None, Some(("pids.max", "10"))),
            cg("blkio", None, Some(("blkio.weight", "500"))),
            cg("memory", Some("mygroup"), Some(("memory.high", "40M"))),
            cg("cpu", None, None),
        ])
        .unwrap();
        let s: Vec<(&str, &str)> = s.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            s,
            [
                ("memory.max", "52428800"),
                ("cpu.weight", "39"),
                ("pids.max", "10"),
                ("io.weight", "4950"),
                ("memory.high", "40M"),
            ]
        );
        assert_eq!(w.len(), 1, "the cgroup name is not used: {w:?}");
        let (s, _) =
            settings(&[cg("memory", None, Some(("memory.limit_in_bytes", "-1")))]).unwrap();
        assert_eq!(s, [("memory.max".to_string(), "max".to_string())]);
    }

    #[test]
    fn unknown_and_mismatched_settings_are_refused() {
        let err = settings(&[cg("memory", None, Some(("memory.bogus", "1")))])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cgroup memory.bogus: unknown"), "{err}");
        let err = settings(&[cg("cpu", None, Some(("memory.max", "1")))])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cgroup cpu memory.max: the setting belongs to the memory controller"
        );
        let err = settings(&[cg("cpu", None, Some(("cpu.shares", "lots")))])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "cgroup cpu.shares: lots is not a number");
    }

    #[test]
    fn names_escape_to_single_safe_directory_names() {
        assert_eq!(escape("net/apache"), "net%2Fapache");
        assert_eq!(escape("tty1"), "tty1");
        assert_eq!(escape("cgroup.procs"), "cgroup%2Eprocs");
        assert_eq!(escape(""), "%00");
        let long = escape(&"é".repeat(300));
        assert!(long.len() <= 200, "{}", long.len());
        assert_ne!(long, escape(&"é".repeat(301)));
    }

    #[test]
    fn the_own_cgroup_is_found_under_its_cgroup2_mount() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup2_in("/", mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified/"))
        );
        assert_eq!(
            own_cgroup2_in("/user.slice/x", mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified/user.slice/x"))
        );
        let pure = "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            own_cgroup2_in("/init.scope", pure),
            Some(PathBuf::from("/sys/fs/cgroup/init.scope"))
        );
        assert_eq!(
            own_cgroup2_in("/", "1 1 0:1 / / rw - ext4 /dev/x rw\n"),
            None
        );
    }
}
