//! recovery-bench: how long keel is unanswerable across a live re-exec and across
//! a kill -9 of the supervisor, with N running jobs, and how big its saved state is.
//!
//! ```text
//! cargo build --release && cargo build --release -p keel-init
//! cargo run --release -p keel-tests --bin recovery-bench [-- --jobs N --runs R]
//! ```
//!
//! - `reexec_N`: `Reexec` sent on an open connection until a `Version` request on a
//!   new connection is answered by the new image;
//! - `crash_recovery_N`: SIGKILL of the supervisor until a `Version` request (its
//!   connection made right after the kill, so it waits in the listening socket's
//!   backlog) is answered;
//! - state size: the saved snapshot of N running services, per job.
//!
//! Defaults: N = 1000 jobs, R = 20 runs each. Medians, p90, min, max in ms.

use keel_proto::ctl::{Request, Response};
use keel_supervisor::journal::{self, Snapshot};
use keel_tests::{Keel, Stats, ask, connect, wait_for};
use std::time::{Duration, Instant};

const JOB: &str = "start on startup\nconsole none\nexec sleep 100000\n";

fn main() {
    keel_tests::use_own_binaries();
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = arg("--jobs", 1000);
    let runs = arg("--runs", 20);

    let names: Vec<String> = (0..n).map(|i| format!("job{i:04}")).collect();
    let jobs: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), JOB)).collect();
    let keel = Keel::start(&jobs);
    wait_for("every job to run", Duration::from_secs(300), || {
        keel.ctl_ok(&["list"]).matches("start/running").count() == n
    });

    let mut reexec = Vec::new();
    for _ in 0..runs {
        let mut c = connect(&keel.socket());
        let t = Instant::now();
        assert_eq!(ask(&mut c, &Request::Reexec { binary: None }), Response::Ok);
        let mut v = connect(&keel.socket());
        assert!(matches!(
            ask(&mut v, &Request::Version),
            Response::Version { .. }
        ));
        reexec.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    let mut crash = Vec::new();
    for _ in 0..runs {
        let pid = keel.supervisor_pid().expect("a supervisor");
        let t = Instant::now();
        // SAFETY: kill(2) on a pid we just read; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        loop {
            // The first connection may still reach the dying process; retry.
            let answered = std::panic::catch_unwind(|| {
                let mut v = connect(&keel.socket());
                matches!(ask(&mut v, &Request::Version), Response::Version { .. })
            });
            if answered.unwrap_or(false) && keel.supervisor_pid() != Some(pid) {
                break;
            }
        }
        crash.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    assert_eq!(
        keel.ctl_ok(&["list"]).matches("start/running").count(),
        n,
        "no job lost"
    );

    let size = state_size(&names);
    println!("recovery-bench: {n} running jobs, {runs} runs each (ms)");
    for (name, samples) in [
        (format!("reexec_{n}"), &reexec),
        (format!("crash_recovery_{n}"), &crash),
    ] {
        let s = Stats::of(samples);
        println!(
            "  {name:<22} median {:8.2}  p90 {:8.2}  min {:8.2}  max {:8.2}",
            s.median, s.p90, s.min, s.max
        );
    }
    println!(
        "  saved state            {size} bytes, {} bytes per job",
        size / n
    );
}

/// The size of the snapshot the supervisor saves for these running jobs.
fn state_size(names: &[String]) -> usize {
    use keel_supervisor::job::{ProcessKind, parse};
    let mut snap = Snapshot::default();
    snap.jobs
        .set_definitions(names.iter().map(|n| parse(n, JOB).def.unwrap()).collect());
    for (i, name) in names.iter().enumerate() {
        let _ = snap.jobs.start(name, vec![], None, 0);
        snap.jobs
            .spawned(name, "", ProcessKind::Main, 1000 + i as i32);
    }
    let _ = snap.jobs.take_effects();
    journal::encode(&snap).len()
}
