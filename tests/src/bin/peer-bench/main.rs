//! peer-bench: keel against s6, runit, tini and catatonit on the same machine in
//! the same run, as ratios (keel issue 11). `tests/bench/run [--quick]` installs
//! the peers, builds everything and runs this; see tests/bench/README.md for every
//! workload, how it is measured and each peer's setting.
//!
//! ```text
//! peer-bench [--quick] [--large] [--only W1,W2...] [--floor PATH] [--out FILE]
//!            (workloads: bringup,status,restart,respawn,pid1,recovery,socket,sandbox,boot)
//!
//! `--large` adds N = 10,000: bring-up and PSS of every manager (one run each;
//! s6 and runit need about 1.2 GB there), and keel's status, restart, re-exec and
//! crash recovery with 10,000 jobs.
//! ```
//!
//! Every manager runs as PID 1 of its own PID namespace; runs alternate between
//! the managers (the order rotates each round); every process is cleaned up by
//! killing its namespace's PID 1 by pid. The machine is shared and noisy: each
//! figure is a median with its min–max.

mod kernel;
mod managers;
mod report;

use keel_proto::ctl::{Request, Response};
use keel_tests::{Namespace, Scratch, ask, children, comm, connect, descendants, wait_for};
use kernel::{ExecWatch, now_ns, pid_namespace, pss_kib, rss_kib, sleep_arg};
use managers::{Flavour, Manager, Running, Tools, launch, service_name};
use report::Results;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `sleep` numbers: bring-up services, the latency pools, PID 1's child, the
/// recovery jobs. Distinct, so no workload mistakes another's process for its own.
const BRINGUP_BASE: u32 = 100_000;
const POOL_BASE: u32 = 200_000;
const PID1_ARG: u32 = 300_000;
const RECOVERY_BASE: u32 = 400_000;
const SANDBOX_BASE: u32 = 500_000;
/// Services per manager for the latency workloads: s6 and runit restart a service
/// at once only if it ran (was ready) for a second, so each sample takes the
/// service that has run longest, and a pool keeps one always at hand.
const POOL: usize = 20;
const MIN_AGE: Duration = Duration::from_millis(1100);
const PEERS: [Manager; 3] = [Manager::Keel, Manager::S6, Manager::Runit];

struct Config {
    quick: bool,
    /// Also N = 10,000.
    large: bool,
    only: Option<Vec<String>>,
    /// Rounds of bring-up for N = 100 and N = 1,000 (exec times and memory).
    bringup_runs: [usize; 2],
    /// Rounds timed by the status tools instead.
    status_runs: usize,
    latency_samples: usize,
    status_calls: usize,
    pid1_runs: usize,
    recovery_runs: usize,
    boots: usize,
    out: PathBuf,
}

impl Config {
    fn wants(&self, workload: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|w| w == workload))
    }
}

fn main() {
    let mut quick = false;
    let mut large = false;
    let mut only = None;
    let mut floor = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    let usage = "usage: peer-bench [--quick] [--large] [--only bringup,status,restart,respawn,pid1,recovery,socket,sandbox,boot] [--floor PATH] [--out FILE]";
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--large" => large = true,
            "--only" => {
                only = Some(
                    args.next()
                        .unwrap_or_else(|| panic!("{usage}"))
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--floor" => floor = Some(PathBuf::from(args.next().expect(usage))),
            "--out" => out = Some(PathBuf::from(args.next().expect(usage))),
            "-h" | "--help" => {
                println!("{usage}");
                return;
            }
            other => panic!("unknown argument {other:?}\n{usage}"),
        }
    }
    let exe = std::env::current_exe().expect("own path");
    let bin_dir = exe.parent().expect("own directory").to_path_buf();
    if std::env::var_os("KEEL_BIN_DIR").is_none() {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("KEEL_BIN_DIR", &bin_dir) };
    }
    // Scratch directories (job files, scan directories and the state the peers
    // keep in them) on tmpfs, as on a real system's /run: on this machine's disk
    // (ext4 with discard) every fsync and unlink of the peers' status files is
    // slow, and so is removing 1,000 service directories afterwards.
    if std::env::var_os("TMPDIR").is_none() && is_tmpfs(Path::new("/dev/shm")) {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("TMPDIR", "/dev/shm") };
    }
    let target = bin_dir.parent().expect("target dir").join("bench");
    let tools = Tools {
        keel_bin: keel_tests::bin_dir(),
        floor: floor.unwrap_or_else(|| target.join("spawn-floor")),
    };
    assert!(
        tools.floor.is_file(),
        "{} is missing (tests/bench/run compiles it)",
        tools.floor.display()
    );
    let cfg = Config {
        quick,
        large,
        only,
        bringup_runs: if quick { [3, 3] } else { [10, 8] },
        status_runs: if quick { 1 } else { 4 },
        latency_samples: if quick { 20 } else { 200 },
        status_calls: if quick { 300 } else { 1000 },
        pid1_runs: if quick { 1 } else { 3 },
        recovery_runs: if quick { 5 } else { 20 },
        boots: if quick { 1 } else { 3 },
        out: out.unwrap_or_else(|| target.join("results.json")),
    };

    end_namespaces_on_panic();
    let watch = ExecWatch::start().expect("the kernel's proc connector (root, CONFIG_PROC_EVENTS)");
    let mut r = Results::default();
    let started = *STARTED.get_or_init(Instant::now);
    if cfg.wants("bringup") {
        bringup(&cfg, &watch, &tools, &mut r);
    }
    if cfg.wants("status") || cfg.wants("restart") || cfg.wants("respawn") {
        latencies(&cfg, &watch, &tools, &mut r);
    }
    let mut keel_init_static = None;
    if cfg.wants("pid1") {
        keel_init_static = Some(pid1(&cfg, &watch, &tools, &mut r));
    }
    if cfg.wants("recovery") {
        recovery(1000, &cfg, &watch, &tools, &mut r);
        if cfg.large {
            recovery(10_000, &cfg, &watch, &tools, &mut r);
        }
    }
    if cfg.wants("socket") {
        socket(&cfg, &mut r);
    }
    if cfg.wants("sandbox") {
        sandbox(&cfg, &watch, &mut r);
    }
    if cfg.wants("boot") {
        boot(&cfg, &tools, &mut r);
    }
    if watch.lost() {
        r.notes.push(
            "WARNING: the proc connector dropped events at some point; exec-based figures may be off"
                .into(),
        );
    }

    println!();
    println!(
        "peer-bench{}: {:.0} s; medians [min–max] (samples); ms or KiB; a shared, noisy machine (runs alternate between managers)",
        if cfg.quick { " --quick" } else { "" },
        started.elapsed().as_secs_f64()
    );
    print!("{}", r.table());
    for n in &r.notes {
        println!("note: {n}");
    }
    println!("targets:");
    for t in report::targets(&r, keel_init_static) {
        println!("  {t}");
    }
    if let Some(dir) = cfg.out.parent() {
        std::fs::create_dir_all(dir).expect("output dir");
    }
    std::fs::write(&cfg.out, r.json()).expect("results.json");
    println!("wrote {}", cfg.out.display());
}

/// Release builds abort on a panic, so no destructor would end the namespaces
/// started so far: the panic hook does, by SIGKILL to the PID 1 of each (the child
/// of each `unshare` this process started), by pid, and removes their directories.
fn end_namespaces_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        end_namespaces();
        // And the scratch directories (`keel-test-TAG-PID-RANDOM`), for the same reason.
        let mine = format!("-{}-", std::process::id());
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("keel-test-") && name.contains(&mine) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }));
}

/// SIGKILL to the PID 1 of every namespace this process started (the children of
/// its `unshare` children), by pid.
fn end_namespaces() {
    for child in children(std::process::id() as i32) {
        if comm(child).as_deref() == Some("unshare") {
            for init in children(child) {
                // SAFETY: kill(2) of a pid just read from /proc; no memory involved.
                unsafe { libc::kill(init, libc::SIGKILL) };
            }
        }
    }
}

/// Whether `path` is on a tmpfs.
fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes one struct statfs into the zeroed, valid `st`.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path, `st` a valid out-pointer.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type == libc::TMPFS_MAGIC
}

/// `items` starting at `round` (modulo), so that each round has another first.
fn rotated<T: Copy>(items: &[T], round: usize) -> impl Iterator<Item = T> + '_ {
    (0..items.len()).map(move |k| items[(k + round) % items.len()])
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// When the benchmark started, for the progress lines.
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Progress on stderr (seconds since the start), so the table on stdout stays clean.
macro_rules! progress {
    ($($t:tt)*) => {
        eprintln!(
            "peer-bench [{:5.1} s]: {}",
            STARTED.get_or_init(Instant::now).elapsed().as_secs_f64(),
            format_args!($($t)*)
        )
    };
}

// --- bring-up and memory ---------------------------------------------------------

/// The exec of the namespace's PID 1 (the manager's own start), from the kernel.
fn manager_start(watch: &ExecWatch, init: i32, from: usize) -> u64 {
    let mut t = None;
    wait_for("the manager's exec", Duration::from_secs(5), || {
        t = watch.last_exec_of(init, from);
        t.is_some()
    });
    t.expect("waited for")
}

struct Bringup {
    /// Manager's exec → the first service's exec.
    first_ms: f64,
    /// Manager's exec → the last service's exec.
    exec_ms: f64,
    /// PSS of the manager's own processes with every service running.
    pss_kib: f64,
}

/// Starts `manager` with `n` trivial services and times it, from the manager's
/// exec until every service's `sleep` has exec'd, by the kernel's timestamps.
fn bringup_exec(manager: Manager, n: usize, watch: &ExecWatch, tools: &Tools) -> Bringup {
    let from = watch.mark();
    let run = launch(manager, n, BRINGUP_BASE, Flavour::Trivial, tools);
    let init = run.init_pid();
    let ns = pid_namespace(init).expect("the namespace of PID 1");
    let range = BRINGUP_BASE..BRINGUP_BASE + n as u32;
    let mut services: HashMap<i32, u32> = HashMap::new();
    let mut indices: HashSet<u32> = HashSet::new();
    // A run script's shell may not have exec'd `sleep` yet when first looked at.
    let mut shells: Vec<i32> = Vec::new();
    let mut cursor = from;
    let limit = Duration::from_secs(120.max(n as u64 / 20));
    let deadline = Instant::now() + limit;
    while indices.len() < n {
        assert!(
            Instant::now() < deadline,
            "{}: only {} of {n} services exec'd after {limit:?}",
            manager.name(),
            indices.len()
        );
        watch.wait_past(cursor, Duration::from_millis(20));
        let new = watch.since(cursor);
        cursor += new.len();
        let mut look: Vec<i32> = std::mem::take(&mut shells);
        look.extend(new.iter().map(|e| e.pid));
        for pid in look {
            if services.contains_key(&pid) || pid_namespace(pid).as_deref() != Some(&ns) {
                continue;
            }
            match sleep_arg(pid) {
                Some(a) if range.contains(&a) => {
                    services.insert(pid, a);
                    indices.insert(a);
                }
                _ => {
                    let argv = kernel::cmdline(pid);
                    if argv.first().is_some_and(|p| p.ends_with("sh")) {
                        shells.push(pid);
                    }
                }
            }
        }
        // Sort and dedup: a shell seen twice is looked at once.
        shells.sort_unstable();
        shells.dedup();
    }
    // A `sleep` visible in /proc has had its exec event queued; let it arrive.
    std::thread::sleep(Duration::from_millis(30));
    let start = manager_start(watch, init, from);
    let execs: Vec<u64> = services
        .keys()
        .filter_map(|&p| watch.last_exec_of(p, from))
        .collect();
    let first = *execs.iter().min().expect("service execs");
    let end = *execs.iter().max().expect("service execs");
    // Let the manager finish its own bookkeeping (status files, state saves).
    std::thread::sleep(Duration::from_millis(300));
    let pss: u64 = run
        .own_processes()
        .iter()
        .map(|&p| pss_kib(p).unwrap_or(0))
        .sum();
    Bringup {
        first_ms: ms(first.saturating_sub(start)),
        exec_ms: ms(end.saturating_sub(start)),
        pss_kib: pss as f64,
    }
}

/// The same start, timed until the manager's own status tool first says every
/// service is up (polled back to back).
fn bringup_status(manager: Manager, n: usize, watch: &ExecWatch, tools: &Tools) -> f64 {
    let from = watch.mark();
    let run = launch(manager, n, BRINGUP_BASE, Flavour::Trivial, tools);
    let mut pending: Vec<usize> = (0..n).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{}: the status tool still reports {} of {n} services not up after 180 s",
            manager.name(),
            pending.len()
        );
        run.status_sweep(&mut pending);
    }
    let end = now_ns();
    let start = manager_start(watch, run.init_pid(), from);
    ms(end.saturating_sub(start))
}

fn bringup(cfg: &Config, watch: &ExecWatch, tools: &Tools, r: &mut Results) {
    let order = [Manager::Keel, Manager::S6, Manager::Runit, Manager::Floor];
    let mut sizes: Vec<(usize, usize)> = [100, 1000].into_iter().zip(cfg.bringup_runs).collect();
    if cfg.large {
        sizes.push((10_000, 1));
    }
    for (n, runs) in sizes {
        for round in 0..runs {
            for m in rotated(&order, round) {
                let b = bringup_exec(m, n, watch, tools);
                progress!(
                    "bringup_{n} round {}/{runs}: {} {:.1} ms, PSS {:.0} KiB",
                    round + 1,
                    m.name(),
                    b.exec_ms,
                    b.pss_kib
                );
                r.add(&format!("bringup_{n}"), "ms", m.name(), b.exec_ms);
                r.add(&format!("bringup_{n}_first"), "ms", m.name(), b.first_ms);
                if m != Manager::Floor {
                    r.add(&format!("rss_{n}"), "KiB", m.name(), b.pss_kib);
                }
            }
        }
    }
    for round in 0..cfg.status_runs {
        for n in [100, 1000] {
            for m in rotated(&PEERS, round) {
                let t = bringup_status(m, n, watch, tools);
                progress!(
                    "bringup_{n}_status round {}/{}: {} {t:.1} ms",
                    round + 1,
                    cfg.status_runs,
                    m.name()
                );
                r.add(&format!("bringup_{n}_status"), "ms", m.name(), t);
            }
        }
    }
    r.notes.push(format!(
        "bringup_N: manager's exec → the N-th service's exec (the kernel's proc-connector timestamps), {} runs (N = 100 / 1,000; 1 run at 10,000 with --large); \
         bringup_N_first: the same until the first service's exec; \
         bringup_N_status: manager's exec → its status tool first reports all N up, {} runs; \
         rss_N: sum of PSS of the manager's own processes with all N running; \
         runit at 10,000: ten runsvdir of 1,000 services each, each a service of the top runsvdir (one starts at most {})",
        cfg.bringup_runs
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        cfg.status_runs,
        managers::RUNIT_MAX_SERVICES
    ));
}

// --- status, restart and respawn latency -------------------------------------------

/// A manager running its pool, and where each service's current process is.
struct Pool {
    run: Running,
    ns: String,
    /// Per service: its process and when that exec'd (ns).
    current: Vec<(i32, u64)>,
    /// `sv restart` commands still waiting for runsv to report up.
    commands: Vec<(usize, Child)>,
}

impl Pool {
    fn start(manager: Manager, tools: &Tools) -> Pool {
        let run = launch(manager, POOL, POOL_BASE, Flavour::Pool, tools);
        let ns = pid_namespace(run.init_pid()).expect("namespace");
        let mut current = vec![(0, 0); POOL];
        wait_for(
            &format!("{}'s pool services", manager.name()),
            Duration::from_secs(30),
            || {
                let mut n = 0;
                for p in descendants(run.init_pid()) {
                    if let Some(a) =
                        sleep_arg(p).filter(|a| (POOL_BASE..POOL_BASE + POOL as u32).contains(a))
                    {
                        current[(a - POOL_BASE) as usize] = (p, now_ns());
                        n += 1;
                    }
                }
                n == POOL
            },
        );
        Pool {
            run,
            ns,
            current,
            commands: Vec::new(),
        }
    }

    /// The service whose process has run longest, once it has run `MIN_AGE`; and
    /// no command of ours is still working on it.
    /// (A service whose command still runs, such as an `sv restart` waiting for
    /// runsv, is waited for when every service has one.)
    fn oldest(&mut self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (i, since) = loop {
            self.reap(false);
            let busy: HashSet<usize> = self.commands.iter().map(|(i, _)| *i).collect();
            let free = self
                .current
                .iter()
                .enumerate()
                .filter(|(i, _)| !busy.contains(i))
                .min_by_key(|(_, (_, since))| *since);
            if let Some((i, &(_, since))) = free {
                break (i, since);
            }
            assert!(
                Instant::now() < deadline,
                "{}: every service's command is still running after 60 s",
                self.run.manager.name()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let age = Duration::from_nanos(now_ns().saturating_sub(since));
        if age < MIN_AGE {
            std::thread::sleep(MIN_AGE - age);
        }
        i
    }

    /// Collects finished commands (all of them if `all`); each must have succeeded.
    fn reap(&mut self, all: bool) {
        let name = self.run.manager.name();
        self.commands.retain_mut(|(_, c)| {
            let status = if all {
                c.wait().ok()
            } else {
                c.try_wait().ok().flatten()
            };
            match status {
                Some(s) => {
                    assert!(s.success(), "{name}: a restart command failed: {s}");
                    false
                }
                None => true,
            }
        });
    }

    /// Waits for service `i`'s next process (not `old`) to exec; returns its
    /// exec time and records it as the service's current process.
    fn replacement(&mut self, watch: &ExecWatch, i: usize, old: i32, from: usize) -> u64 {
        let what = format!("{}'s service {i}", self.run.manager.name());
        let (pid, t) = replacement(watch, &self.ns, POOL_BASE + i as u32, old, from, &what);
        self.current[i] = (pid, t);
        t
    }
}

/// Waits for the next process of namespace `ns` running `sleep ARG` (not `old`) to
/// exec, looking at the execs after cursor `from`; its pid and exec time.
fn replacement(
    watch: &ExecWatch,
    ns: &str,
    arg: u32,
    old: i32,
    from: usize,
    what: &str,
) -> (i32, u64) {
    let mut cursor = from;
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = 'found: loop {
        assert!(
            Instant::now() < deadline,
            "{what} was not replaced within 10 s"
        );
        watch.wait_past(cursor, Duration::from_millis(50));
        let new = watch.since(cursor);
        cursor += new.len();
        for e in new {
            if e.pid != old
                && sleep_arg(e.pid) == Some(arg)
                && pid_namespace(e.pid).as_deref() == Some(ns)
            {
                break 'found e.pid;
            }
        }
    };
    // A shell that exec'd `sleep` just now: its second exec event is queued.
    std::thread::sleep(Duration::from_millis(3));
    let t = watch
        .last_exec_of(pid, from)
        .expect("an exec of the new process");
    (pid, t)
}

fn latencies(cfg: &Config, watch: &ExecWatch, tools: &Tools, r: &mut Results) {
    let mut pools: Vec<Pool> = PEERS.iter().map(|&m| Pool::start(m, tools)).collect();
    std::thread::sleep(MIN_AGE);

    if cfg.wants("status") {
        // One status query of service 0 per call, round robin over the tools and
        // /bin/true (the cost of starting any command-line tool).
        let slots: Vec<usize> = (0..=pools.len()).collect();
        for call in 0..cfg.status_calls {
            for slot in rotated(&slots, call) {
                let (name, mut cmd) = match pools.get(slot) {
                    Some(p) => (p.run.manager.name(), p.run.status_command(0)),
                    None => {
                        let mut c = Command::new("/bin/true");
                        c.stdin(Stdio::null()).stdout(Stdio::null());
                        ("exec_floor", c)
                    }
                };
                let t = Instant::now();
                let status = cmd.status().expect("status tool");
                let d = t.elapsed().as_secs_f64() * 1000.0;
                assert!(
                    status.success(),
                    "{name}: the status query failed: {status}"
                );
                r.add("status_latency", "ms", name, d);
            }
        }
        progress!("status_latency: {} calls each", cfg.status_calls);
    }

    for (workload, restart) in [("restart_latency", true), ("respawn_latency", false)] {
        if !cfg.wants(if restart { "restart" } else { "respawn" }) {
            continue;
        }
        let slots: Vec<usize> = (0..pools.len()).collect();
        for s in 0..cfg.latency_samples {
            for slot in rotated(&slots, s) {
                let pool = &mut pools[slot];
                let i = pool.oldest();
                let (old, _) = pool.current[i];
                let from = watch.mark();
                let t0 = now_ns();
                if restart {
                    let child = pool
                        .run
                        .restart_command(i)
                        .spawn()
                        .expect("restart command");
                    pool.commands.push((i, child));
                } else {
                    // SAFETY: kill(2) of a process of the benchmark's own namespace.
                    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0, "kill {old}");
                }
                let t1 = pool.replacement(watch, i, old, from);
                r.add(
                    workload,
                    "ms",
                    pool.run.manager.name(),
                    ms(t1.saturating_sub(t0)),
                );
            }
        }
        for p in &mut pools {
            p.reap(true);
        }
        progress!("{workload}: {} samples each", cfg.latency_samples);
    }
    if cfg.wants("restart") {
        start_latency(cfg, watch, &mut pools, r);
    }
    r.notes.push(format!(
        "status_latency: wall time of one status command (initctl status / s6-svstat / sv status) of one service, \
         {} calls each, round robin with /bin/true (exec_floor); restart_latency (initctl restart / s6-svc -r / \
         sv restart) and respawn_latency (kill -9): from the command or the kill until the new process's exec \
         (kernel timestamp), {} samples each, every service having run ≥ 1.1 s first (pools of {POOL})",
        cfg.status_calls, cfg.latency_samples
    ));
}

/// keel only: `initctl start` of a stopped trivial service of the pool, until its
/// process execs (`start_latency`, the kernel's timestamp) and until the command
/// returns (`start_latency_running`): `start` returns once the job is running.
fn start_latency(cfg: &Config, watch: &ExecWatch, pools: &mut [Pool], r: &mut Results) {
    let Some(pool) = pools.iter_mut().find(|p| p.run.manager == Manager::Keel) else {
        return;
    };
    for _ in 0..cfg.latency_samples {
        let i = pool.oldest();
        let (old, _) = pool.current[i];
        let stop = pool
            .run
            .keel()
            .expect("keel")
            .ctl(&["stop", &service_name(i)]);
        assert!(stop.status.success(), "initctl stop failed: {stop:?}");
        let from = watch.mark();
        let t0 = now_ns();
        let mut child = pool.run.start_command(i).spawn().expect("initctl start");
        // Its return is timed apart: looking for the new exec takes a while.
        let returned = std::thread::spawn(move || {
            let status = child.wait().expect("initctl start");
            (status, now_ns())
        });
        let t1 = pool.replacement(watch, i, old, from);
        let (status, t2) = returned.join().expect("the waiting thread");
        assert!(status.success(), "initctl start failed: {status}");
        r.add("start_latency", "ms", "keel", ms(t1.saturating_sub(t0)));
        r.add(
            "start_latency_running",
            "ms",
            "keel",
            ms(t2.saturating_sub(t0)),
        );
    }
    progress!("start_latency: {} samples", cfg.latency_samples);
}

// --- PID 1 ---------------------------------------------------------------------------

/// Whether an ELF file has no program interpreter (is statically linked).
fn is_static(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = phoff + i * size;
        // PT_INTERP = 3
        b.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// keel-init, tini and catatonit as PID 1 with one child (`sleep`): binary size and
/// resident memory of PID 1. keel-init runs `sleep` in its supervisor's place, and
/// (column keel_with_supervisor) with the real supervisor running one job.
/// Returns whether keel-init is static.
fn pid1(cfg: &Config, watch: &ExecWatch, tools: &Tools, r: &mut Results) -> bool {
    let keel_init = tools.keel_bin.join("keel-init");
    let sleep = PID1_ARG.to_string();
    let candidates: Vec<(&str, PathBuf, Vec<String>)> = vec![
        (
            "keel",
            keel_init.clone(),
            vec![
                "--supervisor".into(),
                "/bin/sleep".into(),
                "--".into(),
                sleep.clone(),
            ],
        ),
        (
            "tini-static",
            "/usr/bin/tini-static".into(),
            vec!["--".into(), "sleep".into(), sleep.clone()],
        ),
        (
            "tini",
            "/usr/bin/tini".into(),
            vec!["--".into(), "sleep".into(), sleep.clone()],
        ),
        (
            "catatonit",
            "/usr/bin/catatonit".into(),
            vec!["--".into(), "sleep".into(), sleep.clone()],
        ),
    ];
    for (name, path, _) in &candidates {
        let len = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        r.add("pid1_binary", "KiB", name, len as f64 / 1024.0);
    }
    for round in 0..cfg.pid1_runs {
        for (name, path, args) in &candidates {
            let dir = Scratch::new("pid1");
            let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            let ns = Namespace::launch(path, &args, &[], &dir.0.join("console"));
            wait_for(&format!("{name}'s child"), Duration::from_secs(10), || {
                descendants(ns.init_pid)
                    .iter()
                    .any(|&p| sleep_arg(p) == Some(PID1_ARG))
            });
            std::thread::sleep(Duration::from_millis(200));
            let rss = rss_kib(ns.init_pid).expect("PID 1's VmRSS");
            r.add("pid1", "KiB", name, rss as f64);
            r.add(
                "pid1_pss",
                "KiB",
                name,
                pss_kib(ns.init_pid).unwrap_or(0) as f64,
            );
            progress!("pid1 round {}: {name} {rss} KiB", round + 1);
        }
        // keel-init with the real supervisor and one job.
        let run = launch(Manager::Keel, 1, PID1_ARG, Flavour::Trivial, tools);
        wait_for("keel's one job", Duration::from_secs(10), || {
            descendants(run.init_pid())
                .iter()
                .any(|&p| sleep_arg(p) == Some(PID1_ARG))
        });
        std::thread::sleep(Duration::from_millis(200));
        let rss = rss_kib(run.init_pid()).expect("keel-init's VmRSS");
        r.add("pid1", "KiB", "keel_with_supervisor", rss as f64);
        r.add(
            "pid1_pss",
            "KiB",
            "keel_with_supervisor",
            pss_kib(run.init_pid()).unwrap_or(0) as f64,
        );
        let _ = watch;
    }
    let st = is_static(&keel_init);
    r.notes.push(format!(
        "pid1: VmRSS of PID 1 with one child (sleep), keel-init running sleep in its supervisor's place \
         (keel_with_supervisor: the real supervisor and one job); pid1_pss the same as PSS; pid1_binary: file size; \
         keel-init is {}",
        if st { "statically linked" } else { "NOT statically linked" }
    ));
    st
}

// --- keel only: status, restart, re-exec and crash recovery with N jobs -------------------

/// With `n` jobs (1,000; 10,000 with `--large`): `status_latency_N`, one
/// `initctl status` of one job; `restart_latency_N`, as `restart_latency`;
/// `reexec_N`: `Reexec` on an open connection until a `Version` request on a
/// new connection is answered by the new image. `crash_recovery_N`: SIGKILL of
/// the supervisor until a `Version` request (its connection made right after the
/// kill, so it waits in the listening socket's backlog) is answered.
/// Socket activation: from `connect` until the first line of the answer, for a
/// job started by that very connection (`keel`: the `socket` event, the spawn,
/// the daemon's exec and accept) and for the same daemon already running
/// (`running`). keel alone: no peer here activates sockets.
fn socket(cfg: &Config, r: &mut Results) {
    use std::io::BufRead;
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    };
    let (activated, running) = (free_port(), free_port());
    let daemon = keel_tests::bin("keel-socket-daemon");
    let job = |port: u16| {
        format!(
            "start on socket PROTO=inet PORT={port} ADDR=127.0.0.1\nexec {} --listen-fds\n",
            daemon.display()
        )
    };
    let (act, run) = (job(activated), job(running));
    let keel = keel_tests::Keel::start(&[("act", act.as_str()), ("run", run.as_str())]);
    let first_line = |port: u16| {
        let t = Instant::now();
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut line = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut line)
            .expect("an answer");
        assert!(line.starts_with("hello from "), "{line:?}");
        t.elapsed().as_secs_f64() * 1000.0
    };
    // The running daemon is started once, by a first connection not counted.
    first_line(running);
    for _ in 0..cfg.latency_samples.min(100) {
        let out = keel.ctl(&["stop", "act"]);
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("already"),
            "initctl stop act: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        r.add("socket_first_conn", "ms", "keel", first_line(activated));
        r.add("socket_first_conn", "ms", "running", first_line(running));
    }
}

/// Every sandboxing stanza keel has (`sandbox_start`).
const FULL_SANDBOX: &str = "private tmp\nprivate devices\nprotect system strict\nprotect home\n\
    protect kernel tunables\nprotect kernel logs\nprotect kernel modules\n\
    protect control groups\nno new privileges\n\
    syscalls allow @system-service\nsyscalls deny @clock @module @mount @raw-io @reboot @swap\n\
    address families unix inet inet6\nmemory deny write execute\nlock personality\n\
    restrict namespaces\nrestrict realtime\n";

/// What keel's full sandbox adds to a start (`sandbox_start`): `initctl start`
/// of a stopped job until its process's exec (the kernel's timestamp), for a job
/// with every sandboxing stanza (`keel`) and the same job with none
/// (`no_sandbox`), alternately, each first half the time. So each sample holds
/// the request, the supervisor's setup (the paths resolved, the filters
/// compiled or found compiled), the spawn, the child's mount namespace and
/// filters, the go pipe and the exec. keel alone.
fn sandbox(cfg: &Config, watch: &ExecWatch, r: &mut Results) {
    let plain = format!("exec sleep {SANDBOX_BASE}\n");
    let boxed = format!("{FULL_SANDBOX}exec sleep {}\n", SANDBOX_BASE + 1);
    let keel = keel_tests::Keel::start(&[("plain", plain.as_str()), ("boxed", boxed.as_str())]);
    let sup = keel.supervisor_pid().expect("keel's supervisor");
    let ns = pid_namespace(sup).expect("keel's namespace");
    let mut old = [0, 0];
    let mut one = |job: usize| {
        let (name, column) = [("plain", "no_sandbox"), ("boxed", "keel")][job];
        let stop = keel.ctl(&["stop", name]);
        assert!(
            stop.status.success() || String::from_utf8_lossy(&stop.stderr).contains("already"),
            "initctl stop {name}: {stop:?}"
        );
        let from = watch.mark();
        let t0 = now_ns();
        let start = keel.ctl(&["start", name]);
        assert!(start.status.success(), "initctl start {name}: {start:?}");
        let arg = SANDBOX_BASE + job as u32;
        let (pid, t1) = replacement(watch, &ns, arg, old[job], from, name);
        old[job] = pid;
        r.add("sandbox_start", "ms", column, ms(t1.saturating_sub(t0)));
    };
    for i in 0..cfg.latency_samples {
        let first = i % 2;
        one(first);
        one(1 - first);
    }
    progress!("sandbox_start: {} samples each", cfg.latency_samples);
    r.notes.push(format!(
        "sandbox_start: initctl start until the job's exec (kernel timestamp), a job with every sandboxing \
         stanza (keel) and the same with none (no_sandbox), alternately, {} samples each",
        cfg.latency_samples
    ));
}

fn recovery(n: usize, cfg: &Config, watch: &ExecWatch, tools: &Tools, r: &mut Results) {
    let run = launch(Manager::Keel, n, RECOVERY_BASE, Flavour::Trivial, tools);
    let keel = run.keel().expect("keel");
    // The supervisor may not listen yet: a failed `initctl list` is "not yet".
    wait_for(
        "every job to run",
        Duration::from_secs(300.max(n as u64 / 20)),
        || {
            let out = keel.ctl(&["list"]);
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .matches("start/running")
                    .count()
                    == n
        },
    );
    for _ in 0..cfg.status_calls.min(100) {
        let mut cmd = run.status_command(n / 2);
        let t = Instant::now();
        let status = cmd.status().expect("initctl status");
        assert!(status.success(), "initctl status failed: {status}");
        r.add(
            &format!("status_latency_{n}"),
            "ms",
            "keel",
            t.elapsed().as_secs_f64() * 1000.0,
        );
    }
    // The same restart as restart_latency, with n jobs instead of 20: what
    // every event costs that grows with the number of jobs shows here.
    let ns = pid_namespace(run.init_pid()).expect("namespace");
    for k in 0..cfg.latency_samples.min(50) {
        let i = (k * 37) % n;
        let arg = RECOVERY_BASE + i as u32;
        let old = descendants(run.init_pid())
            .into_iter()
            .find(|&p| sleep_arg(p) == Some(arg))
            .expect("the job's process");
        let from = watch.mark();
        let t0 = now_ns();
        let mut cmd = run.restart_command(i);
        let mut child = cmd.spawn().expect("initctl restart");
        let (_, t1) = replacement(watch, &ns, arg, old, from, &format!("job {i}"));
        assert!(
            child.wait().expect("initctl").success(),
            "initctl restart failed"
        );
        r.add(
            &format!("restart_latency_{n}"),
            "ms",
            "keel",
            ms(t1.saturating_sub(t0)),
        );
    }
    for _ in 0..cfg.recovery_runs {
        let mut c = connect(&keel.socket());
        let t = Instant::now();
        assert_eq!(ask(&mut c, &Request::Reexec { binary: None }), Response::Ok);
        let mut v = connect(&keel.socket());
        assert!(matches!(
            ask(&mut v, &Request::Version),
            Response::Version { .. }
        ));
        r.add(
            &format!("reexec_{n}"),
            "ms",
            "keel",
            t.elapsed().as_secs_f64() * 1000.0,
        );
    }
    for _ in 0..cfg.recovery_runs {
        let pid = keel.supervisor_pid().expect("a supervisor");
        let t = Instant::now();
        // SAFETY: kill(2) on a pid just read; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // Asked once the old one is dead, so the answer is its successor's. (Not
        // `supervisor_pid`: with n jobs among keel-init's children it reads n
        // files, which the figure would include.)
        while !matches!(keel_tests::state(pid), None | Some('Z')) {
            std::hint::spin_loop();
        }
        loop {
            let answered = std::panic::catch_unwind(|| {
                let mut v = connect(&keel.socket());
                matches!(ask(&mut v, &Request::Version), Response::Version { .. })
            });
            if answered.unwrap_or(false) {
                break;
            }
        }
        r.add(
            &format!("crash_recovery_{n}"),
            "ms",
            "keel",
            t.elapsed().as_secs_f64() * 1000.0,
        );
    }
    assert_eq!(
        keel.ctl_ok(&["list"]).matches("start/running").count(),
        n,
        "no job lost across the re-execs and crashes"
    );
    r.add(
        &format!("state_{n}"),
        "KiB",
        "keel",
        state_size(n) as f64 / 1024.0,
    );
    progress!(
        "reexec_{n}, crash_recovery_{n}: {} runs each",
        cfg.recovery_runs
    );
}

/// The size of the snapshot the supervisor saves for `n` running jobs like those
/// of `recovery`.
fn state_size(n: usize) -> usize {
    use keel_supervisor::job::{ProcessKind, parse};
    use keel_supervisor::journal::{self, Snapshot};
    let names: Vec<String> = (0..n).map(|i| format!("s{i:04}")).collect();
    let mut snap = Snapshot::default();
    snap.jobs.set_definitions(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let text = format!(
                    "start on startup\nconsole none\nexec sleep {}\n",
                    RECOVERY_BASE + i as u32
                );
                parse(name, &text).def.expect("a valid job")
            })
            .collect(),
    );
    for (i, name) in names.iter().enumerate() {
        let _ = snap.jobs.start(name, vec![], None, 0);
        snap.jobs
            .spawned(name, "", ProcessKind::Main, 1000 + i as i32);
    }
    let _ = snap.jobs.take_effects();
    journal::encode(&snap).unwrap().len()
}

// --- keel only: boot in QEMU ---------------------------------------------------------------

/// Startup jobs of the boot scenario.
const BOOT_JOBS: usize = 20;

/// `qemu/boot --check` of a scenario whose check reports, from the guest kernel's
/// clock (the one the console's timestamps use), when each startup job's process
/// last ran before sleeping for good; the latest of them is `boot`.
fn boot(cfg: &Config, tools: &Tools, r: &mut Results) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf();
    let scenario = Scratch::new("boot");
    std::fs::copy(
        repo.join("tests/bench/boot/check"),
        scenario.0.join("check"),
    )
    .expect("boot check");
    for i in 0..BOOT_JOBS {
        std::fs::write(
            scenario.0.join(format!("s{i:02}.conf")),
            format!(
                "start on startup\nconsole none\nexec sleep {}\n",
                500_000 + i
            ),
        )
        .expect("boot job");
    }
    for round in 0..cfg.boots {
        let out = Command::new(repo.join("qemu/boot"))
            .arg("--check")
            .arg(&scenario.0)
            .env("KEEL_BIN_DIR", &tools.keel_bin)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("qemu/boot");
        let console = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            console
                .lines()
                .filter_map(|l| l.trim_end_matches('\r').strip_prefix(key))
                .next_back()
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let jobs = field("KEEL-BENCH-BOOT-JOBS=");
        match (
            out.status.success(),
            field("KEEL-BENCH-BOOT-ALL-RUNNING-MS="),
        ) {
            (true, Some(all)) if jobs == Some(BOOT_JOBS as f64) => {
                r.add("boot", "ms", "keel", all);
                // keel-init's first line: "keel-init: started at 1.234s after boot, …"
                let init = console
                    .split("keel-init: started at ")
                    .nth(1)
                    .and_then(|rest| rest.split('s').next())
                    .and_then(|v| v.parse::<f64>().ok());
                if let Some(init) = init {
                    r.add("boot", "ms", "keel_init_started", init * 1000.0);
                    r.add("boot", "ms", "keel_after_init", all - init * 1000.0);
                }
                progress!(
                    "boot {}: all {BOOT_JOBS} startup jobs running at {all:.0} ms",
                    round + 1
                );
            }
            _ => {
                r.notes.push(format!(
                    "boot {}: qemu/boot failed ({}) or reported {jobs:?} of {BOOT_JOBS} jobs; see target/qemu/console.log",
                    round + 1,
                    out.status
                ));
            }
        }
    }
    r.notes.push(format!(
        "boot: guest kernel start → the last of {BOOT_JOBS} startup jobs' sleep running (its last run before \
         sleeping, /proc/PID/sched, the clock of the console's timestamps), {} boots under TCG; \
         keel_init_started: kernel start → keel-init's first line; keel_after_init: the rest (keel's part)",
        cfg.boots
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keel_init_is_static_and_a_libc_program_is_not() {
        assert!(is_static(&keel_tests::bin("keel-init")));
        assert!(!is_static(Path::new("/bin/true")));
        assert!(!is_static(Path::new("/etc/passwd")));
    }

    /// The only test of this binary that starts a namespace: `end_namespaces`
    /// ends every namespace the process started.
    #[test]
    fn a_panic_would_leave_no_namespace_behind() {
        let dir = Scratch::new("end");
        let ns = Namespace::launch(
            Path::new("/bin/sleep"),
            &["1000".into()],
            &[],
            &dir.0.join("console"),
        );
        let init = ns.init_pid;
        end_namespaces();
        wait_for(
            "the namespace's PID 1 to end",
            Duration::from_secs(5),
            || keel_tests::gone(init),
        );
        drop(ns);
    }

    #[test]
    fn dev_shm_is_recognised_as_tmpfs() {
        assert!(is_tmpfs(Path::new("/dev/shm")));
        assert!(!is_tmpfs(Path::new("/proc")));
    }
}
