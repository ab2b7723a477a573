//! Reading job files from disk: a whole confdir, or `--check PATH…`.
//!
//! This module owns finding `.conf` files (recursively, in sorted order, each
//! directory visited once even through symlink loops), naming jobs after their
//! path, reading them, and reporting every problem as
//! `FILE:LINE:COL: error|warning: MESSAGE` (or `FILE: error: cannot read: …`).
//! Parsing itself is [`crate::job::parse`]; a broken file never affects another.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::job::{self, JobDef, Parsed, Severity};

/// The job name for `file` below `confdir`: the relative path without `.conf`
/// (`net/apache.conf` → `net/apache`). `None` for other files.
pub fn job_name(confdir: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(confdir).ok()?;
    let relative = relative.to_str()?;
    let name = relative.strip_suffix(".conf")?;
    let last = name.rsplit('/').next().unwrap_or(name);
    (!last.is_empty()).then(|| name.to_string())
}

/// Every job of a confdir, and every problem met on the way.
#[derive(Debug, Default)]
pub struct Confdir {
    /// The jobs that parsed, in path order.
    pub jobs: Vec<JobDef>,
    /// Rendered diagnostics (errors and warnings) and read failures.
    pub problems: Vec<String>,
    /// How many of `problems` are errors.
    pub errors: usize,
}

/// Loads every `.conf` file below `dir`.
pub fn load_confdir(dir: &Path) -> Confdir {
    let mut confdir = Confdir::default();
    let mut files = Vec::new();
    find_conf_files(dir, &mut files, &mut confdir.problems, &mut confdir.errors);
    for file in files {
        let Some(name) = job_name(dir, &file) else {
            confdir
                .problems
                .push(format!("{}: error: job name is not UTF-8", file.display()));
            confdir.errors += 1;
            continue;
        };
        let checked = check_file(&file, &name);
        confdir.errors += checked.errors;
        confdir.problems.extend(checked.problems);
        confdir.jobs.extend(checked.def);
    }
    confdir
}

/// `keel-supervisor --check PATH…`: files (whatever their name) and directories
/// (their `.conf` files, recursively). Writes every problem to `out`; returns
/// whether any was an error.
pub fn check_paths(paths: &[PathBuf], out: &mut dyn io::Write) -> io::Result<bool> {
    let mut any_error = false;
    for path in paths {
        let mut problems = Vec::new();
        let mut errors = 0;
        if path.is_dir() {
            let mut files = Vec::new();
            find_conf_files(path, &mut files, &mut problems, &mut errors);
            for file in files {
                let name = job_name(path, &file).unwrap_or_else(|| file_stem(&file));
                let checked = check_file(&file, &name);
                errors += checked.errors;
                problems.extend(checked.problems);
            }
        } else {
            let checked = check_file(path, &file_stem(path));
            errors += checked.errors;
            problems.extend(checked.problems);
        }
        for problem in problems {
            writeln!(out, "{problem}")?;
        }
        any_error |= errors > 0;
    }
    Ok(any_error)
}

/// A named file's job name: its file name without `.conf`.
fn file_stem(file: &Path) -> String {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.strip_suffix(".conf") {
        Some(stem) if !stem.is_empty() => stem.to_string(),
        _ => name,
    }
}

struct Checked {
    def: Option<JobDef>,
    problems: Vec<String>,
    errors: usize,
}

fn check_file(path: &Path, name: &str) -> Checked {
    let shown = path.display().to_string();
    let cannot_read = |reason: String| Checked {
        def: None,
        problems: vec![format!("{shown}: error: cannot read: {reason}")],
        errors: 1,
    };
    let bytes = match read_bounded(path) {
        Ok(bytes) => bytes,
        Err(e) => return cannot_read(e.to_string()),
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            // Point at the first byte that is not UTF-8.
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let col = valid[line_start..]
                .iter()
                .filter(|&&b| b & 0xC0 != 0x80)
                .count()
                + 1;
            return Checked {
                def: None,
                problems: vec![format!("{shown}:{line}:{col}: error: not UTF-8 text")],
                errors: 1,
            };
        }
    };
    let Parsed { def, diagnostics } = job::parse(name, &text);
    Checked {
        def,
        errors: diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count(),
        problems: diagnostics.iter().map(|d| d.render(&shown)).collect(),
    }
}

/// Reads at most one byte more than the parser accepts, so a huge file is
/// refused by the parser without being read whole.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(job::MAX_JOB_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// All `.conf` files below `dir`, sorted by path. Directories are followed
/// through symlinks but each is entered once.
fn find_conf_files(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    problems: &mut Vec<String>,
    errors: &mut usize,
) {
    let mut seen = HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        match fs::metadata(&dir) {
            Ok(meta) if !seen.insert((meta.dev(), meta.ino())) => continue,
            _ => {}
        }
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                problems.push(format!("{}: error: cannot read: {e}", dir.display()));
                *errors += 1;
                continue;
            }
        };
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    problems.push(format!("{}: error: cannot read: {e}", dir.display()));
                    *errors += 1;
                    continue;
                }
            };
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "conf") {
                files.push(path);
            }
        }
    }
    files.sort();
}
