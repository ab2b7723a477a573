//! The parser against ~690 real Upstart job files (`$KEEL_CORPUS`, or
//! `shared/corpus/` beside the repository; see `corpus_dir`): every file Upstart 1.13 accepts parses without error, every file
//! it refuses (listed in `REJECTED`) fails at the same line, and every parsed
//! definition renders back to itself.
//!
//! Throughput: `cargo run --release -p keel-supervisor --example corpus-bench`.

mod corpus_dir;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use keel_core::job::{self, Severity};

struct JobFile {
    /// Path relative to the corpus, as `REJECTED` names it.
    relative: String,
    name: String,
    text: String,
}

fn corpus(root: &Path) -> Vec<JobFile> {
    let mut paths = Vec::new();
    collect_confs(root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(root)
                .expect("walked below the corpus")
                .to_string_lossy()
                .into_owned();
            let name = relative.trim_end_matches(".conf").to_string();
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            JobFile {
                relative,
                name,
                text,
            }
        })
        .collect()
}

fn collect_confs(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_confs(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "conf") {
            out.push(path);
        }
    }
}

/// `REJECTED`: `PATH: LINE: why`, `#` comments.
fn rejected(root: &Path) -> BTreeMap<String, u32> {
    let text = fs::read_to_string(root.join("REJECTED")).expect("corpus/REJECTED");
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let path = parts.next().unwrap_or_default().trim().to_string();
            let line_no = parts
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("REJECTED: no line number in {line:?}"));
            (path, line_no)
        })
        .collect()
}

#[test]
fn corpus_parses_as_upstart_does() {
    let Some(root) = corpus_dir::corpus_dir() else {
        return;
    };
    let files = corpus(&root);
    let rejected = rejected(&root);
    let mut failures = Vec::new();
    let mut parsed = 0;
    let mut refused = 0;
    for file in &files {
        let result = job::parse(&file.name, &file.text);
        let first_error = result
            .diagnostics
            .iter()
            .find(|d| d.severity == Severity::Error);
        match (rejected.get(&file.relative), first_error) {
            (None, None) => {
                assert!(
                    result.def.is_some(),
                    "{}: no error but no definition",
                    file.relative
                );
                parsed += 1;
            }
            (None, Some(error)) => failures.push(error.render(&file.relative)),
            (Some(line), Some(error)) if error.line == *line => {
                assert!(
                    result.def.is_none(),
                    "{}: error but a definition",
                    file.relative
                );
                refused += 1;
            }
            (Some(line), Some(error)) => failures.push(format!(
                "{}: first error should be on line {line}, is {}",
                file.relative,
                error.render(&file.relative)
            )),
            (Some(line), None) => failures.push(format!(
                "{}: parses, but Upstart refuses it at line {line}",
                file.relative
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} files differ from Upstart:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for path in rejected.keys() {
        assert!(
            files.iter().any(|f| &f.relative == path),
            "REJECTED names {path}, which is not in the corpus"
        );
    }
    assert_eq!(refused, rejected.len());
    assert_eq!(parsed + refused, files.len());
    assert!(
        files.len() >= 680,
        "only {} job files in the corpus",
        files.len()
    );
    eprintln!(
        "corpus: {} files, {parsed} parse, {refused} refused as by Upstart",
        files.len()
    );
}

#[test]
fn corpus_renders_back_to_the_same_definition() {
    let Some(root) = corpus_dir::corpus_dir() else {
        return;
    };
    let mut checked = 0;
    for file in corpus(&root) {
        let Some(def) = job::parse(&file.name, &file.text).def else {
            continue;
        };
        let text = job::render(&def);
        let again = job::parse(&file.name, &text);
        assert!(
            again
                .diagnostics
                .iter()
                .all(|d| d.severity != Severity::Error),
            "{}: rendered text does not parse:\n{}\n{text}",
            file.relative,
            again
                .diagnostics
                .iter()
                .map(|d| d.render("rendered"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(
            again.def.as_ref(),
            Some(&def),
            "{}: rendered as\n{text}",
            file.relative
        );
        // Rendering is canonical: a second round changes nothing.
        assert_eq!(job::render(&def), text);
        checked += 1;
    }
    assert!(checked > 600);
}
