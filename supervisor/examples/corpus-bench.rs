//! corpus-bench: how fast keel reads a directory of job files, as the supervisor
//! does at boot and on every reload (walk, read, parse, check).
//!
//! ```text
//! cargo run --release -p keel-supervisor --example corpus-bench [-- DIR [ROUNDS]]
//! ```
//!
//! DIR defaults to the Upstart corpus (`$KEEL_CORPUS`, else `../shared/corpus`
//! beside the repository; absent, it says so and measures nothing), ROUNDS to 50. Prints files/s and MB/s over all rounds (the files come from the
//! page cache after the first round).

use std::path::PathBuf;
use std::time::Instant;

#[path = "../../core/tests/corpus_dir/mod.rs"]
mod corpus_dir;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args
        .next()
        .map(PathBuf::from)
        .or_else(corpus_dir::corpus_dir)
    else {
        return;
    };
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(50);
    let paths = walk(&dir);
    let files = paths.len();
    let bytes: u64 = paths
        .iter()
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum();
    let first = keel_supervisor::check::load_confdir(&dir);
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(keel_supervisor::check::load_confdir(&dir));
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}: {files} job files ({} parse, {bytes} bytes), {rounds} rounds: \
         {:.0} files/s, {:.1} MB/s, {:.2} ms per load",
        dir.display(),
        first.jobs.len(),
        (files * rounds) as f64 / seconds,
        (bytes as f64 * rounds as f64) / seconds / 1e6,
        seconds * 1e3 / rounds as f64,
    );
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "conf") {
                out.push(path);
            }
        }
    }
    out
}
