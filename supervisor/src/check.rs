//! Reading job files from disk: a whole confdir, or `--check PATH…`.
//!
//! This module owns finding `.conf` files (recursively, in sorted order, each
//! directory visited once even through symlink loops), naming jobs after their
//! path, reading them, and reporting every problem as
//! `FILE:LINE:COL: error|warning: MESSAGE` (or `FILE: error: cannot read: …`).
//! Parsing itself is [`crate::job::parse`]; a broken file never affects another.
//!
//! Override files, as init(5): `NAME.override` beside `NAME.conf` is read over
//! the job file ([`crate::job::parse_override`]), its stanzas replacing the job
//! file's. Its errors are reported like a job file's (`NAME.override:L:C: …`)
//! and, like a job file with errors, leave the job unloaded — a broken `manual`
//! must not start a job it was meant to keep down. An override without its
//! `.conf` is not a job and waits, unread, for one (as in Upstart).
//!
//! Only regular files are read: anyone who can put a FIFO, a socket or a device
//! node (or a `.conf` symlink to one) in the confdir must not be able to block the
//! supervisor in `open` or `read`. So a file is `stat`ed first (no side effects)
//! unless the directory's listing already says it is a regular file, then opened
//! `O_NONBLOCK|O_NOCTTY|O_CLOEXEC` and `fstat`ed again (it may have been swapped
//! in between), and anything but a regular file is refused with an error naming
//! it. A job name (the path) with a control character — a newline would print a
//! fake line in `initctl list` — is refused too, the name shown escaped.
//!
//! Reading a confdir costs what the files' bytes cost: the listing's entry types
//! and names say which entries are directories and which job files have an
//! override, so no file is `stat`ed by path (a boot reads every job file before
//! the first job starts).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::job::{self, JobDef, Parsed, Severity};
use crate::query::Override;
use keel_proto::ctl::LoadFailure;

/// The job name for `file` below `confdir`: the relative path without `.conf`
/// (`net/apache.conf` → `net/apache`). `None` for other files.
pub fn job_name(confdir: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(confdir).ok()?;
    let relative = relative.to_str()?;
    let name = relative.strip_suffix(".conf")?;
    let last = name.rsplit('/').next().unwrap_or(name);
    (!last.is_empty()).then(|| name.to_string())
}

/// Which job files a set of definitions was made from, and by which binary (a
/// new one may read them differently): the confdir's path and the supervisor's
/// executable as a file (device, inode, size, modification time in ns).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Loaded {
    pub confdir: PathBuf,
    pub binary: (u64, u64, u64, i128),
}

impl Loaded {
    /// `confdir` as read by the binary running now (`None` if that is unknown).
    pub fn now(confdir: &Path) -> Option<Loaded> {
        let exe = fs::metadata("/proc/self/exe").ok()?;
        let mtime = i128::from(exe.mtime()) * 1_000_000_000 + i128::from(exe.mtime_nsec());
        Some(Loaded {
            confdir: confdir.to_path_buf(),
            binary: (exe.dev(), exe.ino(), exe.size(), mtime),
        })
    }
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
    /// The jobs an override file was read over, by name, and what it gave.
    pub overrides: BTreeMap<String, Override>,
    /// The files that did not load (and directories not read), with their errors.
    pub failed: Vec<LoadFailure>,
}

/// Loads every `.conf` file below `dir`.
pub fn load_confdir(dir: &Path) -> Confdir {
    let mut confdir = Confdir::default();
    let mut files = Vec::new();
    find_conf_files(dir, &mut files, &mut confdir.problems, &mut confdir.errors);
    confdir
        .failed
        .extend(confdir.problems.iter().map(|p| LoadFailure {
            job: String::new(),
            errors: vec![p.clone()],
        }));
    for file in files {
        let Some(name) = job_name(dir, &file.path) else {
            confdir.refuse(
                String::new(),
                format!("{}: error: job name is not UTF-8", file.path.display()),
            );
            continue;
        };
        if name.chars().any(char::is_control) {
            let shown = file.path.display().to_string().escape_debug().to_string();
            confdir.refuse(
                name.escape_debug().to_string(),
                format!("{shown}: error: job name contains a control character"),
            );
            continue;
        }
        let (checked, overridden) = check_job(&file, &name);
        confdir.errors += checked.errors;
        if checked.def.is_none() {
            confdir.failed.push(LoadFailure {
                errors: checked.errors(),
                job: name,
            });
        }
        confdir.problems.extend(checked.problems);
        if let (Some(def), Some(overridden)) = (&checked.def, overridden) {
            confdir.overrides.insert(def.name.clone(), overridden);
        }
        confdir.jobs.extend(checked.def);
    }
    confdir
}

impl Confdir {
    /// A file refused before it is parsed.
    fn refuse(&mut self, job: String, error: String) {
        self.problems.push(error.clone());
        self.errors += 1;
        self.failed.push(LoadFailure {
            job,
            errors: vec![error],
        });
    }
}

/// What the override files of `dir`'s jobs give, by job name, without the job
/// files: for a supervisor that took the definitions from its saved state (which
/// has no room for where a stanza came from). Overrides with errors are left out,
/// as their jobs were.
pub fn confdir_overrides(dir: &Path) -> BTreeMap<String, Override> {
    let mut files = Vec::new();
    find_conf_files(dir, &mut files, &mut Vec::new(), &mut 0);
    files
        .iter()
        .filter(|file| file.has_override)
        .filter_map(|file| {
            let name = job_name(dir, &file.path)?;
            let (checked, overridden) = read_override(&file.path, JobDef::new(name.clone()));
            checked.def.and(Some((name, overridden)))
        })
        .collect()
}

/// A job file to read, with what its directory's listing said of it.
struct ConfFile {
    path: PathBuf,
    /// The listing says it is a regular file: no `stat` before opening it.
    regular: bool,
    /// `NAME.override` is beside it.
    has_override: bool,
}

impl ConfFile {
    /// A file named on the command line: nothing known of it yet.
    fn named(path: &Path) -> ConfFile {
        let absent = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let has_override = path.extension().is_none_or(|ext| ext != "override")
            && !fs::symlink_metadata(path.with_extension("override")).is_err_and(|e| absent(&e));
        ConfFile {
            path: path.to_path_buf(),
            regular: false,
            has_override,
        }
    }
}

/// The job file `file` (job `name`) with its override file read over it, if it
/// has one (and the job file has no error).
fn check_job(file: &ConfFile, name: &str) -> (Checked, Option<Override>) {
    let mut checked = check_file(file, name);
    let mut overridden = None;
    if file.has_override
        && let Some(def) = checked.def.take()
    {
        let (over, o) = read_override(&file.path, def);
        checked.problems.extend(over.problems);
        checked.errors += over.errors;
        checked.def = over.def;
        overridden = Some(o);
    }
    // The system-call filters are compiled (and kept) now: a name this
    // architecture lacks is told at load, and fails each start with the same
    // reason (the job still loads, as its other processes' stanzas are sound).
    if let Some(def) = &checked.def
        && let Err(e) = crate::sandbox::cached_syscall_filters(&def.sandbox)
    {
        checked
            .problems
            .push(format!("{}: warning: {e}", file.path.display()));
    }
    (checked, overridden)
}

/// `NAME.override` beside the job file `file` (there is one), read over `base`.
fn read_override(file: &Path, base: JobDef) -> (Checked, Override) {
    let path = file.with_extension("override");
    let shown = path.display().to_string();
    let (checked, stanzas) = match read_text(&path, false) {
        Ok(text) => {
            let job::Overridden { parsed, stanzas } = job::parse_override(base, &text);
            (checked_from(parsed, &shown), stanzas)
        }
        Err(problem) => (unreadable(problem), Vec::new()),
    };
    let overridden = Override {
        file: shown,
        stanzas,
    };
    (checked, overridden)
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
                let name = job_name(path, &file.path).unwrap_or_else(|| file_stem(&file.path));
                let (checked, _) = check_job(&file, &name);
                errors += checked.errors;
                problems.extend(checked.problems);
            }
        } else {
            let (checked, _) = check_job(&ConfFile::named(path), &file_stem(path));
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

impl Checked {
    /// Its errors (rendered), which say why it did not load when `def` is none.
    fn errors(&self) -> Vec<String> {
        self.problems
            .iter()
            .filter(|p| p.contains(": error: "))
            .cloned()
            .collect()
    }
}

fn check_file(file: &ConfFile, name: &str) -> Checked {
    match read_text(&file.path, file.regular) {
        Ok(text) => checked_from(job::parse(name, &text), &file.path.display().to_string()),
        Err(problem) => unreadable(problem),
    }
}

/// Why a job (or override) file gives no text, rendered as a diagnostic.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("{}: error: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}:{col}: error: not UTF-8 text", path.display())]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        col: usize,
    },
}

/// A file that could not be read: one error, no definition.
fn unreadable(problem: Unreadable) -> Checked {
    Checked {
        def: None,
        problems: vec![problem.to_string()],
        errors: 1,
    }
}

/// The text of the job (or override) file `path` (`regular` if the listing said
/// so), or why it cannot be read or is not UTF-8.
fn read_text(path: &Path, regular: bool) -> Result<String, Unreadable> {
    let bytes = read_bounded(path, regular).map_err(|source| Unreadable::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        // Point at the first byte that is not UTF-8.
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let col = valid[line_start..]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count()
            + 1;
        Unreadable::NotUtf8 {
            path: path.to_path_buf(),
            line,
            col,
        }
    })
}

/// A parse's outcome with its diagnostics rendered against `shown`.
fn checked_from(parsed: Parsed, shown: &str) -> Checked {
    let Parsed { def, diagnostics } = parsed;
    Checked {
        def,
        errors: diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count(),
        problems: diagnostics.iter().map(|d| d.render(shown)).collect(),
    }
}

/// Reads a regular file, at most one byte more than the parser accepts (so a huge
/// file is refused by the parser without being read whole); anything else is
/// refused without blocking (see the module docs). `regular`: the directory's
/// listing said it is a regular file, so the `stat` before opening is skipped.
fn read_bounded(path: &Path, regular: bool) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    if !regular {
        regular_file(&fs::metadata(path)?)?;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    regular_file(&meta)?;
    let limit = job::MAX_JOB_FILE_BYTES as u64 + 1;
    // Room for the whole file and the read that finds its end: two reads.
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize + 1);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `Ok` for a regular file, else an error saying what the file is.
fn regular_file(meta: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "a special file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file but {what}"),
    ))
}

/// All `.conf` files below `dir`, sorted by path. Directories are followed
/// through symlinks but each is entered once. The listing's entry types say
/// which entries are directories (only a symlink is `stat`ed), and its names
/// which job files have an override beside them.
fn find_conf_files(
    dir: &Path,
    files: &mut Vec<ConfFile>,
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
        let first = files.len();
        let mut overrides = HashSet::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    problems.push(format!("{}: error: cannot read: {e}", dir.display()));
                    *errors += 1;
                    continue;
                }
            };
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "override") {
                // Whatever it is: reading it says what is wrong with it.
                overrides.insert(path.with_extension(""));
            }
            let kind = entry.file_type().ok();
            let is_dir = match kind {
                Some(t) if !t.is_symlink() => t.is_dir(),
                // A symlink (followed) or a type the listing did not give.
                _ => path.is_dir(),
            };
            if is_dir {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "conf") {
                files.push(ConfFile {
                    path,
                    regular: kind.is_some_and(|t| t.is_file()),
                    has_override: false,
                });
            }
        }
        for file in &mut files[first..] {
            file.has_override = overrides.contains(&file.path.with_extension(""));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "keel-check-{}-{}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().expect("has a parent")).expect("create dirs");
            fs::write(&path, contents).expect("write file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn job_names_come_from_the_relative_path() {
        let dir = Path::new("/etc/init");
        let name = |file: &str| job_name(dir, Path::new(file));
        assert_eq!(name("/etc/init/apache.conf").as_deref(), Some("apache"));
        assert_eq!(
            name("/etc/init/net/apache.conf").as_deref(),
            Some("net/apache")
        );
        assert_eq!(name("/etc/init/a.b.conf").as_deref(), Some("a.b"));
        assert_eq!(name("/etc/init/README"), None);
        assert_eq!(name("/etc/init/apache.conf.bak"), None);
        assert_eq!(name("/etc/init/apache.override"), None);
        assert_eq!(name("/etc/init/.conf"), None);
        assert_eq!(name("/etc/init/net/.conf"), None);
        assert_eq!(name("/etc/other/apache.conf"), None);
    }

    #[test]
    fn a_confdir_loads_every_good_job_and_reports_the_rest() {
        let dir = TempDir::new();
        dir.write("a.conf", "exec /bin/a\n");
        dir.write("net/b.conf", "start on startup\nexec /bin/b\n");
        dir.write("c.conf", "exec /bin/c\nexpect WHAT\n");
        dir.write("d.conf", "debug\nexec /bin/d\n");
        dir.write("README", "not a job\n");
        dir.write("net/notes.txt", "nor this\n");
        dir.write("e.conf", b"description \"caf\xe9\"\n\x80\n");
        std::os::unix::fs::symlink(dir.0.join("missing"), dir.0.join("f.conf")).expect("symlink");
        // A loop through a symlinked directory is entered once.
        std::os::unix::fs::symlink(&dir.0, dir.0.join("net/loop")).expect("symlink");

        let confdir = load_confdir(&dir.0);
        let names: Vec<&str> = confdir.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["a", "d", "net/b"]);
        let root = dir.0.display();
        assert_eq!(
            confdir.problems,
            [
                format!(
                    "{root}/c.conf:2:8: error: unknown argument to expect: WHAT (expected fork, daemon, stop, none, notify, fd, listen or dbus)"
                ),
                format!("{root}/d.conf:1:1: warning: debug is parsed but not carried out yet"),
                format!("{root}/e.conf:1:17: error: not UTF-8 text"),
                format!(
                    "{root}/f.conf: error: cannot read: No such file or directory (os error 2)"
                ),
            ]
        );
        assert_eq!(confdir.errors, 3);
    }

    #[test]
    fn a_missing_confdir_is_one_error() {
        let dir = TempDir::new();
        let confdir = load_confdir(&dir.0.join("nope"));
        assert!(confdir.jobs.is_empty());
        assert_eq!(confdir.errors, 1);
        assert!(
            confdir.problems[0]
                .ends_with("nope: error: cannot read: No such file or directory (os error 2)")
        );
    }

    fn check(paths: &[PathBuf]) -> (bool, String) {
        let mut out = Vec::new();
        let failed = check_paths(paths, &mut out).expect("writing to a Vec");
        (failed, String::from_utf8(out).expect("UTF-8 output"))
    }

    #[test]
    fn check_reports_files_and_directories() {
        let dir = TempDir::new();
        dir.write("jobs/good.conf", "exec /bin/true\n");
        dir.write("jobs/sub/warn.conf", "debug\nexec /bin/true\n");
        dir.write("jobs/skip.txt", "garbage\n");
        let named = dir.write("named-job", "exec\n");

        let (failed, out) = check(&[dir.0.join("jobs")]);
        assert!(!failed);
        assert_eq!(
            out,
            format!(
                "{}/jobs/sub/warn.conf:1:1: warning: debug is parsed but not carried out yet\n",
                dir.0.display()
            )
        );

        let (failed, out) = check(&[named.clone(), dir.0.join("jobs/skip.txt")]);
        assert!(failed);
        assert_eq!(
            out,
            format!(
                "{}:1:5: error: expected command after exec\n{}:1:1: error: unknown stanza: garbage\n",
                named.display(),
                dir.0.join("jobs/skip.txt").display()
            )
        );

        // A system call this architecture lacks: told at load, the job loads.
        let filtered = dir.write(
            "filtered.conf",
            "syscalls deny frobnicate\nexec /bin/true\n",
        );
        let (failed, out) = check(std::slice::from_ref(&filtered));
        assert!(!failed);
        assert_eq!(
            out,
            format!(
                "{}: warning: syscalls deny: unknown system call frobnicate on {}\n",
                filtered.display(),
                std::env::consts::ARCH
            )
        );

        let missing = dir.0.join("missing.conf");
        let (failed, out) = check(std::slice::from_ref(&missing));
        assert!(failed);
        assert_eq!(
            out,
            format!(
                "{}: error: cannot read: No such file or directory (os error 2)\n",
                missing.display()
            )
        );
    }

    /// `load_confdir` on another thread: a blocking open fails the test instead of
    /// hanging it.
    fn load_within_deadline(dir: &Path) -> Confdir {
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = dir.to_path_buf();
        std::thread::spawn(move || tx.send(load_confdir(&dir)));
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("load_confdir blocked on a special file")
    }

    #[test]
    fn special_files_are_refused_without_blocking_and_the_rest_loads() {
        let dir = TempDir::new();
        dir.write("good.conf", "exec /bin/good\n");
        dir.write("x.conf/inner.conf", "exec /bin/inner\n");
        let fifo = dir.0.join("fifo.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .expect("mkfifo");
        std::os::unix::fs::symlink(&fifo, dir.0.join("to-fifo.conf")).expect("symlink");
        std::os::unix::fs::symlink("/dev/null", dir.0.join("null.conf")).expect("symlink");
        let _socket =
            std::os::unix::net::UnixListener::bind(dir.0.join("socket.conf")).expect("bind");

        let confdir = load_within_deadline(&dir.0);
        let names: Vec<&str> = confdir.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["good", "x.conf/inner"]);
        let root = dir.0.display();
        assert_eq!(
            confdir.problems,
            [
                format!("{root}/fifo.conf: error: cannot read: not a regular file but a FIFO"),
                format!(
                    "{root}/null.conf: error: cannot read: not a regular file but a character device"
                ),
                format!("{root}/socket.conf: error: cannot read: not a regular file but a socket"),
                format!("{root}/to-fifo.conf: error: cannot read: not a regular file but a FIFO"),
            ]
        );
        assert_eq!(confdir.errors, 4);

        // `--check` of a FIFO named on the command line: the same error.
        let (failed, out) = check(std::slice::from_ref(&fifo));
        assert!(failed);
        assert_eq!(
            out,
            format!(
                "{}: error: cannot read: not a regular file but a FIFO\n",
                fifo.display()
            )
        );
    }

    #[test]
    fn job_names_with_control_characters_are_refused() {
        let dir = TempDir::new();
        dir.write("good.conf", "exec /bin/good\n");
        dir.write(
            "evil\nfake start/running, process 1.conf",
            "exec /bin/evil\n",
        );
        dir.write("bell\x07.conf", "exec /bin/bell\n");
        let confdir = load_within_deadline(&dir.0);
        let names: Vec<&str> = confdir.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        let root = dir.0.display().to_string();
        assert_eq!(
            confdir.problems,
            [
                format!("{root}/bell\\u{{7}}.conf: error: job name contains a control character"),
                format!(
                    "{root}/evil\\nfake start/running, process 1.conf: error: job name contains a control character"
                ),
            ]
        );
        assert_eq!(confdir.errors, 2);
    }

    #[test]
    fn huge_files_are_refused_without_reading_them_whole() {
        let dir = TempDir::new();
        let big = dir.write("big.conf", vec![b'#'; job::MAX_JOB_FILE_BYTES + 4096]);
        let (failed, out) = check(&[big]);
        assert!(failed);
        assert!(
            out.ends_with(":1:1: error: job file larger than 1048576 bytes\n"),
            "{out}"
        );
    }

    #[test]
    fn an_override_is_read_over_its_job_file_and_its_errors_unload_the_job() {
        let dir = TempDir::new();
        dir.write("svc.conf", "start on startup\nexec /bin/svc\n");
        dir.write("svc.override", "manual\nexec /bin/other\n");
        dir.write("net/web.conf", "start on startup\nexec /bin/web\n");
        dir.write("net/web.override", "start on net-up\n");
        dir.write("orphan.override", "manual\n");
        dir.write("broken.conf", "start on startup\nexec /bin/broken\n");
        dir.write("broken.override", "manual\nrespawn limit x 5\n");
        let fifo = dir.0.join("fifo.override");
        dir.write("fifo.conf", "exec /bin/fifo\n");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .expect("mkfifo");

        let confdir = load_within_deadline(&dir.0);
        let names: Vec<&str> = confdir.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            ["net/web", "svc"],
            "an override without its job is no job"
        );
        let svc = &confdir.jobs[1];
        assert!(svc.manual && svc.start_on.is_none());
        assert_eq!(
            svc.main,
            Some(job::Process::Exec {
                command: "/bin/other".into()
            })
        );
        let root = dir.0.display().to_string();
        let over = |file: &str, stanzas: &[&str]| Override {
            file: format!("{root}/{file}"),
            stanzas: stanzas.iter().map(|s| s.to_string()).collect(),
        };
        let expected: BTreeMap<String, Override> = [
            (
                "net/web".to_string(),
                over("net/web.override", &["start on"]),
            ),
            ("svc".to_string(), over("svc.override", &["manual", "exec"])),
        ]
        .into();
        assert_eq!(confdir.overrides, expected);
        assert_eq!(
            confdir.problems,
            [
                format!("{root}/broken.override:2:15: error: illegal respawn count: x"),
                format!("{root}/fifo.override: error: cannot read: not a regular file but a FIFO"),
            ]
        );
        assert_eq!(confdir.errors, 2);
        // A supervisor that took saved definitions learns the same provenance.
        assert_eq!(confdir_overrides(&dir.0), expected);

        // `--check` reads a job's override too.
        let (failed, out) = check(&[dir.0.join("broken.conf")]);
        assert!(failed);
        assert!(
            out.starts_with(&format!("{root}/broken.override:2:15: error:")),
            "{out}"
        );
    }
}
