//! control-bench: how fast the control socket answers, measured with the
//! integration harness (keel-init as PID 1 of a fresh PID namespace, the real
//! supervisor, one running job).
//!
//! ```text
//! cargo build --release && cargo build --release -p keel-init
//! cargo run --release -p keel-tests --bin control-bench [-- --calls N --clients C]
//! ```
//!
//! Measures:
//! - `initctl status`: the whole command (process start, connect, handshake,
//!   request, answer, exit), N calls one after another (default 10,000): median,
//!   p90, p99, min, max in ms;
//! - one `Status` request on an open connection (handshake done), N round trips;
//! - requests per second with C concurrent clients (default 8), first each running
//!   `initctl status` in a loop, then each on its own open connection.
//!
//! The machine is shared: the load average before and after is printed with the
//! figures. The binaries come from this executable's directory (`KEEL_BIN_DIR`
//! overrides).

use keel_proto::ctl::{Request, Response};
use keel_tests::{Keel, Stats, ask, bin, connect, wait_for};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    keel_tests::use_own_binaries();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: control-bench [--calls N] [--clients C]");
        return;
    }
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .map(|i| {
                args.get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .unwrap_or_else(|| panic!("{name} N (N > 0)"))
            })
            .unwrap_or(default)
    };
    let calls = arg("--calls", 10_000);
    let clients = arg("--clients", 8);

    let keel = Keel::start(&[("svc", "start on startup\nconsole none\nexec sleep 100000\n")]);
    wait_for("svc to run", Duration::from_secs(10), || {
        keel.ctl_ok(&["status", "svc"]).contains("start/running")
    });
    let load_before = loadavg();

    let command: Vec<f64> = (0..calls)
        .map(|_| timed(|| initctl_status(&keel)))
        .collect();
    let mut conn = connect(&keel.socket());
    let request = status();
    let round_trip: Vec<f64> = (0..calls)
        .map(|_| timed(|| expect_status(ask(&mut conn, &request))))
        .collect();

    // Concurrent: every client does the same share of the work.
    let per_command = (calls / clients).max(1);
    let command_rps = concurrently(clients, per_command, |_| {
        for _ in 0..per_command {
            initctl_status(&keel);
        }
    });
    let per_conn = (calls * 10 / clients).max(1);
    let socket = keel.socket();
    let conn_rps = concurrently(clients, per_conn, |_| {
        let mut c = connect(&socket);
        let request = status();
        for _ in 0..per_conn {
            expect_status(ask(&mut c, &request));
        }
    });

    println!(
        "control-bench: {calls} calls each, times in ms (load average {load_before} → {})",
        loadavg()
    );
    println!(
        "{:<36} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "median", "p90", "p99", "min", "max"
    );
    for (name, samples) in [
        ("initctl status (command)", &command),
        ("Status on an open connection", &round_trip),
    ] {
        let s = Stats::of(samples);
        println!(
            "{name:<36} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            s.median, s.p90, s.p99, s.min, s.max
        );
    }
    println!("{clients} concurrent clients:");
    println!("  initctl status in a loop           {command_rps:>10.0} requests/s");
    println!("  Status on open connections         {conn_rps:>10.0} requests/s");
}

fn status() -> Request {
    Request::Status {
        job: "svc".into(),
        instance: None,
        env: vec![],
    }
}

fn expect_status(r: Response) {
    match r {
        Response::Instances(list) if list.len() == 1 => {}
        other => panic!("unexpected answer {other:?}"),
    }
}

fn initctl_status(keel: &Keel) {
    let out = Command::new(bin("initctl"))
        .env("KEEL_SOCKET", keel.socket())
        .args(["status", "svc"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("initctl");
    assert!(
        out.status.success() && out.stdout.starts_with(b"svc start/running"),
        "initctl status failed"
    );
}

/// Milliseconds `f` took.
fn timed(f: impl FnOnce()) -> f64 {
    let t0 = Instant::now();
    f();
    t0.elapsed().as_secs_f64() * 1000.0
}

/// Runs `work` on `clients` threads at once; requests per second overall, each
/// thread doing `each` requests.
fn concurrently(clients: usize, each: usize, work: impl Fn(usize) + Sync) -> f64 {
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for i in 0..clients {
            let work = &work;
            s.spawn(move || work(i));
        }
    });
    (clients * each) as f64 / t0.elapsed().as_secs_f64()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
