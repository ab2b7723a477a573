//! Answers to the configuration queries, `show-config` and `check-config`, built
//! from job definitions — pure, no syscalls. The shell puts them into the control
//! protocol's types; initctl turns those into Upstart's text or into JSON.

use crate::events;
use crate::events::Missing;
use crate::job::{self, ArgMatch, EventExpr, EventMatch, JobDef};
use crate::refusal::Refusal;

/// What `show-config` says of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobConfig {
    pub name: String,
    /// The events the job says it emits (`emits`).
    pub emits: Vec<String>,
    /// `start on` as Upstart's initctl writes it (every operator in parentheses);
    /// `None` without one (or with `manual`).
    pub start_on: Option<String>,
    pub stop_on: Option<String>,
    /// Each event `start on` names, in the order written.
    pub start_on_events: Vec<EventRef>,
    pub stop_on_events: Vec<EventRef>,
    /// The whole definition as a job file; it parses back to the same definition.
    pub definition: String,
    /// The override file read over the job file, if there is one.
    pub overridden: Option<Override>,
}

/// Where a job's stanzas came from when an override file (`NAME.override`) was
/// read over its job file: the stanzas named here came from `file`, every other
/// one from the job file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Override {
    /// The override file's path.
    pub file: String,
    /// The stanzas it gives, as [`crate::job::Overridden::stanzas`] names them.
    pub stanzas: Vec<String>,
}

/// An event a `start on` / `stop on` names, as `show-config -e` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRef {
    pub event: String,
    /// For the job events (`starting`, `started`, `stopping`, `stopped`): the job
    /// named by the first positional argument or `JOB=`.
    pub job: Option<String>,
    /// The other arguments, as written (`[2345]`, `INTERFACE=eth0`, `KEY!=VALUE`).
    pub env: Vec<String>,
}

/// One finding of `check-config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub job: String,
    /// `start on` or `stop on`.
    pub condition: String,
    /// `unknown event NAME` or `unknown job NAME`.
    pub message: String,
}

/// What `show-config` says of `def`, read with the override `overridden`.
pub fn job_config(def: &JobDef, overridden: Option<&Override>) -> JobConfig {
    let start_on = def.start_on.as_ref().filter(|_| !def.manual);
    JobConfig {
        name: def.name.clone(),
        emits: def.emits.clone(),
        start_on: start_on.map(condition),
        stop_on: def.stop_on.as_ref().map(condition),
        start_on_events: start_on.map(event_refs).unwrap_or_default(),
        stop_on_events: def.stop_on.as_ref().map(event_refs).unwrap_or_default(),
        definition: job::render(def),
        overridden: overridden.cloned(),
    }
}

/// An event expression as Upstart's initctl writes it: every operator with its
/// operands in parentheses, `((a and b) or c)`; arguments as written, unquoted.
pub fn condition(expr: &EventExpr) -> String {
    match expr {
        EventExpr::Event(event) => {
            let mut text = event.name.clone();
            for arg in &event.args {
                text.push(' ');
                text.push_str(&arg_text(arg));
            }
            text
        }
        EventExpr::And(left, right) => format!("({} and {})", condition(left), condition(right)),
        EventExpr::Or(left, right) => format!("({} or {})", condition(left), condition(right)),
    }
}

fn arg_text(arg: &ArgMatch) -> String {
    match (&arg.key, arg.negated) {
        (Some(key), true) => format!("{key}!={}", arg.value),
        (Some(key), false) => format!("{key}={}", arg.value),
        (None, _) => arg.value.clone(),
    }
}

/// Each event an expression names, left to right, with the job a job event names
/// (its first positional argument or `JOB=`, as Upstart's `show-config -e`).
pub fn event_refs(expr: &EventExpr) -> Vec<EventRef> {
    let mut out = Vec::new();
    let mut todo = vec![expr];
    while let Some(e) = todo.pop() {
        match e {
            EventExpr::Event(event) => out.push(event_ref(event)),
            EventExpr::And(left, right) | EventExpr::Or(left, right) => {
                todo.push(right);
                todo.push(left);
            }
        }
    }
    out
}

fn event_ref(event: &EventMatch) -> EventRef {
    let job_event = matches!(
        event.name.as_str(),
        "starting" | "started" | "stopping" | "stopped"
    );
    let names_job = |i: usize, a: &ArgMatch| match &a.key {
        Some(key) => key == "JOB" && !a.negated,
        None => i == 0,
    };
    let job_arg = event
        .args
        .iter()
        .enumerate()
        .position(|(i, a)| job_event && names_job(i, a));
    EventRef {
        event: event.name.clone(),
        job: job_arg.map(|i| event.args[i].value.clone()),
        env: event
            .args
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != job_arg)
            .map(|(_, a)| arg_text(a))
            .collect(),
    }
}

/// `check-config [JOB] [--ignore-events E,…]`: what no job file provides, checked
/// against every job (an event counts as emitted if any job says so), reported for
/// `only` (or every job), leaving out unknown events named in `ignore`.
pub fn check_config<'a>(
    defs: impl Iterator<Item = &'a JobDef> + Clone,
    only: Option<&str>,
    ignore: &[String],
) -> Result<Vec<ConfigProblem>, Refusal> {
    if let Some(name) = only
        && !defs.clone().any(|d| d.name == name)
    {
        return Err(Refusal::InvalidJobClass(name.to_string()));
    }
    Ok(events::check_config(defs)
        .into_iter()
        .filter(|f| only.is_none_or(|o| o == f.job))
        .filter(|f| !matches!(&f.missing, Missing::Event(e) if ignore.contains(e)))
        .map(|f| ConfigProblem {
            message: f.missing.to_string(),
            job: f.job,
            condition: f.condition.to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(text: &str) -> JobDef {
        let parsed = job::parse("j", text);
        parsed
            .def
            .unwrap_or_else(|| panic!("{:?}", parsed.diagnostics))
    }

    #[test]
    fn conditions_read_as_upstart_writes_them() {
        let d = def("start on (started net and filesystem) or runlevel [2345]\n\
             stop on runlevel [!2345] or net-device-down IFACE!=lo\nexec true\n");
        let c = job_config(&d, None);
        assert_eq!(
            c.start_on.as_deref(),
            Some("((started net and filesystem) or runlevel [2345])")
        );
        assert_eq!(
            c.stop_on.as_deref(),
            Some("(runlevel [!2345] or net-device-down IFACE!=lo)")
        );
        assert_eq!(
            condition(&def("start on startup\nexec true\n").start_on.unwrap()),
            "startup"
        );
        let parsed_back = job::parse("j", &c.definition).def;
        assert_eq!(parsed_back, Some(d));
    }

    #[test]
    fn enumerated_events_name_the_job_of_job_events() {
        let d = def(
            "start on started JOB=net FOO=bar or stopping web RESULT=failed\n\
             stop on runlevel [06]\nexec true\n",
        );
        let c = job_config(&d, None);
        let refs = |r: &[EventRef]| {
            r.iter()
                .map(|e| (e.event.clone(), e.job.clone(), e.env.join(" ")))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            refs(&c.start_on_events),
            [
                ("started".into(), Some("net".into()), "FOO=bar".into()),
                (
                    "stopping".into(),
                    Some("web".into()),
                    "RESULT=failed".into()
                ),
            ]
        );
        assert_eq!(
            refs(&c.stop_on_events),
            [("runlevel".into(), None, "[06]".into())]
        );
    }

    #[test]
    fn a_manual_job_shows_no_start_on() {
        let c = job_config(&def("start on startup\nmanual\nexec true\n"), None);
        assert_eq!(c.start_on, None);
        assert!(c.start_on_events.is_empty());
    }

    #[test]
    fn check_config_filters_by_job_and_ignored_events() {
        let a = job::parse("a", "start on startup or never\nexec true\n")
            .def
            .unwrap();
        let b = job::parse("b", "start on started ghost or other\nexec true\n")
            .def
            .unwrap();
        let defs = [a, b];
        let all = check_config(defs.iter(), None, &[]).unwrap();
        let words: Vec<String> = all
            .iter()
            .map(|p| format!("{} {}: {}", p.job, p.condition, p.message))
            .collect();
        assert_eq!(
            words,
            [
                "a start on: unknown event never",
                "b start on: unknown job ghost",
                "b start on: unknown event other",
            ]
        );
        let only_b = check_config(defs.iter(), Some("b"), &["other".into()]).unwrap();
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].message, "unknown job ghost");
        // keel's event sources emit `socket`, `file`, device and filesystem
        // events themselves, its ifupdown hooks `net-device-up`.
        let sourced = job::parse(
            "s",
            "start on socket PROTO=unix PATH=/run/s or file FILE=/run/f\n\
             stop on net-device-removed or block-device-changed or local-filesystems \
             or mounted MOUNTPOINT=/ or net-device-up\nexec true\n",
        )
        .def
        .unwrap();
        assert_eq!(check_config([sourced].iter(), None, &[]).unwrap(), []);
        let err = check_config(defs.iter(), Some("nope"), &[]).unwrap_err();
        assert_eq!(err.to_string(), "Invalid job class: nope");
    }
}
