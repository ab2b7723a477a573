//! File events in the job language: `start on file FILE=PATH [EVENT=create|modify|
//! delete]` (and `stop on`), as Upstart's upstart-file-bridge read them.
//!
//! This module owns what such an event must say ([`FileSpec::from_event`]), which
//! changes in a directory it matches ([`FileSpec::matches`]) and the variables of
//! the `file` event ([`FileSpec::event_env`]); watching is the supervisor's.
//!
//! `FILE` is absolute: a file (`/run/app.pid`), a directory with a trailing `/`
//! (any file in it), or a glob in the last component (`/var/crash/*.crash`). The
//! event carries `FILE` as the job wrote it, `EVENT`, and for a directory or a
//! glob `MATCH`, the full path of the file that changed. A `FILE` that is not
//! absolute, a pattern in a directory component, an unknown `EVENT` or variable is
//! an error at the argument.

use super::socket::SpecError;
use super::{EventMatch, JobDef};

/// The event's name.
pub const EVENT: &str = "file";

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    Create,
    Modify,
    Delete,
}

impl Change {
    pub const ALL: [Change; 3] = [Change::Create, Change::Modify, Change::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Modify => "modify",
            Change::Delete => "delete",
        }
    }
}

/// Which files of the directory a spec names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// One file.
    File(String),
    /// Files whose name matches the glob.
    Glob(String),
    /// Every file in the directory (`FILE=/dir/`).
    Any,
}

/// One `file` condition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileSpec {
    /// `FILE` as written.
    pub file: String,
    /// The directory to watch (no trailing `/`, except for `/` itself).
    pub dir: String,
    pub target: Target,
    /// `None`: every change.
    pub change: Option<Change>,
}

impl FileSpec {
    /// The file condition a `file …` event describes.
    pub fn from_event(event: &EventMatch) -> Result<FileSpec, SpecError> {
        let mut file = None;
        let mut change = None;
        for (i, arg) in event.args.iter().enumerate() {
            let fail = |message: String| Err((Some(i), message));
            let key = super::socket::key_of(EVENT, i, arg)?;
            match key {
                "FILE" => file = Some((i, arg.value.as_str())),
                "EVENT" => {
                    let found = Change::ALL.into_iter().find(|c| c.name() == arg.value);
                    match found {
                        Some(c) => change = Some(c),
                        None => {
                            return fail(format!(
                                "file: EVENT={} is none of create, modify, delete",
                                arg.value
                            ));
                        }
                    }
                }
                // Matched against the event as any variable; nothing to watch.
                "MATCH" => {}
                other => {
                    return fail(format!(
                        "file: unknown variable {other} (known: FILE, EVENT, MATCH)"
                    ));
                }
            }
        }
        let Some((at, file)) = file else {
            return Err((None, "file: FILE is missing".into()));
        };
        let bad = |message: String| Err((Some(at), message));
        if !file.starts_with('/') {
            return bad(format!("file: FILE={file} is not an absolute path"));
        }
        if file.contains('$') {
            return bad(format!(
                "file: FILE={file}: a file to watch needs a literal path"
            ));
        }
        let (dir, last) = match file.rsplit_once('/') {
            Some(("", last)) => ("/", last),
            Some((dir, last)) => (dir, last),
            None => return bad(format!("file: FILE={file} is not an absolute path")),
        };
        if dir.contains(['*', '?', '[', ']']) {
            return bad(format!(
                "file: FILE={file}: a pattern may only be in the last component"
            ));
        }
        let target = if last.is_empty() {
            Target::Any
        } else if last.contains(['*', '?', '[', ']']) {
            Target::Glob(last.to_string())
        } else {
            Target::File(last.to_string())
        };
        Ok(FileSpec {
            file: file.to_string(),
            dir: dir.to_string(),
            target,
            change,
        })
    }

    /// Whether `change` of the file `name` in [`FileSpec::dir`] is one this
    /// condition waits for.
    pub fn matches(&self, name: &str, change: Change) -> bool {
        self.change.is_none_or(|c| c == change)
            && match &self.target {
                Target::File(file) => file == name,
                Target::Glob(pattern) => crate::glob::glob(pattern, name),
                Target::Any => true,
            }
    }

    /// The `file` event for `change` of `name`: `FILE` as written, `EVENT`, and
    /// `MATCH` (the full path) for a glob or a directory.
    pub fn event_env(&self, name: &str, change: Change) -> Vec<(String, String)> {
        let mut env = vec![
            ("FILE".to_string(), self.file.clone()),
            ("EVENT".to_string(), change.name().to_string()),
        ];
        if self.target != Target::File(name.to_string()) {
            let full = match self.dir.as_str() {
                "/" => format!("/{name}"),
                dir => format!("{dir}/{name}"),
            };
            env.push(("MATCH".to_string(), full));
        }
        env
    }
}

/// The file conditions of a job's `start on` and `stop on`, each once.
pub fn job_files(def: &JobDef) -> Vec<FileSpec> {
    def.condition_specs(EVENT, true, FileSpec::from_event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse;

    fn files(text: &str) -> Vec<FileSpec> {
        job_files(&parse("j", text).def.expect("the job file parses"))
    }

    #[test]
    fn the_three_forms_and_what_each_matches() {
        let specs = files(
            "start on file FILE=/run/app.pid EVENT=create or file FILE=/var/crash/*.crash\n\
             stop on file FILE=/var/log/ EVENT=delete\nexec d\n",
        );
        assert_eq!(specs.len(), 3);
        let pid = &specs[0];
        assert_eq!(
            (pid.dir.as_str(), &pid.target),
            ("/run", &Target::File("app.pid".into()))
        );
        assert!(pid.matches("app.pid", Change::Create));
        assert!(!pid.matches("app.pid", Change::Delete));
        assert!(!pid.matches("other", Change::Create));
        assert_eq!(
            pid.event_env("app.pid", Change::Create),
            [
                ("FILE".into(), "/run/app.pid".into()),
                ("EVENT".into(), "create".into())
            ]
        );
        let crash = &specs[1];
        assert!(
            crash.matches("a.crash", Change::Modify) && !crash.matches("a.txt", Change::Create)
        );
        assert_eq!(
            crash.event_env("a.crash", Change::Modify),
            [
                ("FILE".into(), "/var/crash/*.crash".into()),
                ("EVENT".into(), "modify".into()),
                ("MATCH".into(), "/var/crash/a.crash".into())
            ]
        );
        let logs = &specs[2];
        assert_eq!(
            (logs.dir.as_str(), &logs.target),
            ("/var/log", &Target::Any)
        );
        assert!(logs.matches("syslog", Change::Delete) && !logs.matches("syslog", Change::Create));
        assert!(files("start on file FILE=/x\nmanual\nexec d\n").is_empty());
    }

    #[test]
    fn a_file_condition_keel_cannot_watch_is_an_error_at_its_argument() {
        let cases = [
            (
                "FILE=run/app.pid",
                "FILE",
                "file: FILE=run/app.pid is not an absolute path",
            ),
            (
                "FILE=/var/*/x",
                "FILE",
                "file: FILE=/var/*/x: a pattern may only be in the last component",
            ),
            (
                "FILE=/run/$X",
                "FILE",
                "file: FILE=/run/$X: a file to watch needs a literal path",
            ),
            (
                "FILE=/x EVENT=change",
                "EVENT",
                "file: EVENT=change is none of create, modify, delete",
            ),
            ("EVENT=create", "file", "file: FILE is missing"),
            (
                "FILE=/x WHEN=now",
                "WHEN",
                "file: unknown variable WHEN (known: FILE, EVENT, MATCH)",
            ),
            ("/x", "/x", "file takes KEY=VALUE arguments, found '/x'"),
        ];
        for (args, word, message) in cases {
            for stanza in ["start on", "stop on"] {
                let text = format!("{stanza} file {args}\nexec d\n");
                let parsed = parse("j", &text);
                assert_eq!(parsed.def, None, "{text:?}");
                let col = text.find(word).unwrap() + 1;
                assert_eq!(
                    parsed.diagnostics[0].render("j.conf"),
                    format!("j.conf:1:{col}: error: {message}")
                );
            }
        }
    }
}
