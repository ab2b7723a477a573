//! Where the Upstart job-file corpus is: `$KEEL_CORPUS`, else `shared/corpus`
//! beside the repository. It is not part of the repository, so a test that needs it
//! says plainly when it is absent and skips itself — except under `CI=true`, where
//! an absent corpus is a failure (CI must provide it).

use std::path::PathBuf;

/// The corpus directory, or `None` (after saying so) to skip the calling test.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("KEEL_CORPUS").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus")),
        PathBuf::from,
    );
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the Upstart job-file corpus is missing at {}; CI must provide it \
         (set KEEL_CORPUS or put it at shared/corpus beside the repository)",
        dir.display()
    );
    println!(
        "skipped: the Upstart job-file corpus is absent ({}; set KEEL_CORPUS)",
        dir.display()
    );
    None
}
