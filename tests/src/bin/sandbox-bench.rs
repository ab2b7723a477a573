//! The sandbox's cost at a job's start (`tests/bench/sandbox`): keel-init as PID 1
//! of a PID namespace with two jobs that exec `date +%s%N` — one with no sandbox,
//! one with every sandboxing stanza keel has — started alternately with
//! `initctl start`. Each sample is from just before `initctl start` until the
//! time the job's `date` reads right after its exec (both CLOCK_REALTIME, ns), so
//! it holds the request, the spawn, the child's setup (the mount namespace and
//! the filters for the sandboxed job), the go pipe and the exec. The difference of
//! the medians is what the sandbox adds. Prints medians with p10–p90.

use keel_tests::{Keel, Setup};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SANDBOX: &str = "private tmp\nprivate devices\nprotect system strict\nprotect home\n\
    protect kernel tunables\nprotect kernel logs\nprotect kernel modules\n\
    protect control groups\nno new privileges\n\
    syscalls deny @clock @module @mount @raw-io @reboot @swap\n\
    address families unix inet inet6\nmemory deny write execute\nlock personality\n\
    restrict namespaces\nrestrict realtime\n";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

/// One start of `job`: ms from before `initctl start` to its exec'd `date`.
fn sample(keel: &Keel, job: &str) -> f64 {
    let log = keel.path(&format!("log/{job}.log"));
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let t0 = now_ns();
    keel.ctl_ok(&["start", job]);
    let mut stamp = None;
    keel_tests::wait_for(&format!("{job}'s date"), Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        stamp = text
            .get(before..)
            .and_then(|new| new.lines().next())
            .and_then(|l| l.trim().parse::<u128>().ok());
        stamp.is_some()
    });
    let t1 = stamp.expect("a stamp");
    t1.saturating_sub(t0) as f64 / 1e6
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let sandboxed = format!("task\n{SANDBOX}exec /bin/date +%s%N\n");
    let keel = Keel::start_with(Setup {
        jobs: &[
            ("plain", "task\nexec /bin/date +%s%N\n"),
            ("sandboxed", &sandboxed),
        ],
        supervisor: None,
        env: &[],
    });
    let (mut plain, mut boxed) = (Vec::new(), Vec::new());
    for i in 0..samples {
        // Alternating, each first half the time.
        if i % 2 == 0 {
            plain.push(sample(&keel, "plain"));
            boxed.push(sample(&keel, "sandboxed"));
        } else {
            boxed.push(sample(&keel, "sandboxed"));
            plain.push(sample(&keel, "plain"));
        }
    }
    for v in [&mut plain, &mut boxed] {
        v.sort_by(f64::total_cmp);
    }
    println!("start to exec, ms ({samples} samples each): median (p10-p90)");
    for (name, v) in [("no sandbox", &plain), ("full sandbox", &boxed)] {
        println!(
            "  {name:<13} {:.3} ({:.3}-{:.3})",
            percentile(v, 0.5),
            percentile(v, 0.1),
            percentile(v, 0.9)
        );
    }
    let added = percentile(&boxed, 0.5) - percentile(&plain, 0.5);
    println!(
        "  the sandbox adds {added:.3} ms (target: <= 1 ms: {})",
        if added <= 1.0 { "met" } else { "MISSED" }
    );
}
