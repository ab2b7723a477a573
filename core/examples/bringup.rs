//! The lifecycle core alone bringing up N services started on `startup`, with
//! the runtime played in memory (every spawn execs at once), to show how the
//! core's cost grows with the number of jobs: `cargo run --release -p keel-core
//! --example bringup -- 1000 10000` prints the time for each N and the growth
//! factor between the first and the last (10× more jobs costing 10× is linear).

use keel_core::events::Event;
use keel_core::job::parse;
use keel_core::lifecycle::{Jobs, State};
use std::time::{Duration, Instant};

mod common;
use common::run_effects;

/// Brings up `n` services and returns the time the core took.
fn bring_up(n: usize) -> Duration {
    let defs = (0..n)
        .map(|i| {
            parse(&format!("svc{i}"), "start on startup\nexec /bin/true\n")
                .def
                .expect("the job file parses")
        })
        .collect();
    let began = Instant::now();
    let mut jobs = Jobs::default();
    jobs.set_definitions(defs);
    jobs.emit(Event::new("startup", &[]), None, 0)
        .expect("startup is queued");
    run_effects(&mut jobs, &mut 1);
    let took = began.elapsed();
    let running = (0..n)
        .filter(|i| {
            jobs.job(&format!("svc{i}"))
                .and_then(|j| j.instance(""))
                .is_some_and(|i| i.state() == State::Running)
        })
        .count();
    assert_eq!(running, n, "every service is running");
    took
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("each argument is a number of jobs"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let mut first: Option<(usize, Duration)> = None;
    for n in sizes {
        let took = bring_up(n);
        println!("{n} jobs: {:.1} ms", took.as_secs_f64() * 1e3);
        match first {
            None => first = Some((n, took)),
            Some((n0, t0)) => println!(
                "growth {n0} -> {n}: {:.1}x time for {:.1}x jobs",
                took.as_secs_f64() / t0.as_secs_f64(),
                n as f64 / n0 as f64
            ),
        }
    }
}
