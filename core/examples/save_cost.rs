//! What a save and a load of the state cost with N running jobs (issue 17):
//! `cargo run --release -p keel-core --example save_cost -- 1000 10000` prints,
//! for each N, the state's size, a whole save (a compaction of the journal:
//! the base), a round of the journal after one job's stop (its bytes and time),
//! and the decodes (state, definitions) a re-exec or crash recovery makes.

use keel_core::events::Event;
use keel_core::job::parse;
use keel_core::journal::{
    Snapshot, Writer, decode, decode_definitions, encode, encode_definitions,
};
use std::time::Instant;

mod common;
use common::run_effects;

/// Milliseconds `f` takes, the best of five.
fn best_ms(mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("each argument is a number of jobs"))
        .collect();
    for n in if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    } {
        let defs = (0..n)
            .map(|i| {
                let text = format!("start on startup\nconsole none\nexec sleep {i}\n");
                parse(&format!("svc{i}"), &text).def.expect("it parses")
            })
            .collect();
        let mut snap = Snapshot::<()>::default();
        snap.jobs.set_definitions(defs);
        snap.jobs
            .emit(Event::new("startup", &[]), None, 0)
            .expect("startup is queued");
        let mut pid = 1;
        run_effects(&mut snap.jobs, &mut pid);
        let mut compacted = None;
        let whole =
            best_ms(|| compacted = Some(Writer::compact(&mut snap, 1).expect("it encodes")));
        let (mut writer, base, _) = compacted.expect("compacted");
        let mut round = 0;
        let mut round_bytes = 0;
        let after_restart = best_ms(|| {
            round += 1;
            let job = format!("svc{}", round * 37 % n);
            snap.jobs.stop(&job, &[], None, 0).expect("it stops");
            drop(snap.jobs.take_effects());
            round_bytes = writer.round(&mut snap).expect("it encodes").len();
        });
        let saved_defs = encode_definitions(&snap.jobs.live_definitions()).expect("they encode");
        let load_defs = best_ms(|| drop(decode_definitions(&saved_defs).expect("they decode")));
        let defs = decode_definitions(&saved_defs).expect("they decode");
        let bytes = encode(&snap).expect("it encodes");
        let load = best_ms(|| drop(decode::<()>(&bytes, &defs).expect("it decodes")));
        println!(
            "{n} jobs: state {} KiB; whole save (compaction) {whole:.2} ms; \
             a round with one job changed {after_restart:.3} ms ({round_bytes} bytes); \
             decode {load:.2} ms, and the definitions' {load_defs:.2} ms",
            base.len() / 1024,
        );
    }
}
