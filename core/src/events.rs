//! Events and the expressions of `start on` / `stop on`, as Upstart 1.13 has them
//! (`init/event.c`, `init/event_operator.c`, `init/environ.c`). Pure.
//!
//! This module owns what an event is ([`Event`], named in the queue by an
//! [`EventId`]) and how far an expression has got ([`Matched`]): each leaf of an
//! expression remembers the event it matched, so `a and b` is true once both have
//! happened, in any order and in different events, until the job starts (or stops)
//! and the progress is reset (Upstart's `event_operator_reset`). The queue, and
//! what handling an event does to jobs, belong to the lifecycle core
//! (`lifecycle/engine.rs`); everything here is plain data and functions of it, so
//! it is saved with the state and survives a kill -9 of the supervisor. It knows
//! nothing of the lifecycle: the dependency goes one way, lifecycle → events.
//!
//! Matching one event against one leaf (`event_operator_match`): the names must be
//! equal (names are not globs in Upstart); then every argument must match —
//! positional ones the event's values in order, `KEY=VALUE` the named variable —
//! as an fnmatch(3) glob, after `$VAR` in it was expanded from the environment the
//! instance was started with (for `stop on`; `start on` has no environment yet, so
//! a reference there matches nothing unless it has a default); `!=` negates. A
//! missing value never matches, not even with `!=`.
//!
//! Also here: [`expand`], Upstart's `$VAR` / `${VAR:-default}` expansion, and
//! [`check_config`] (`initctl check-config`).

use crate::job::{EventExpr, EventMatch, JobDef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Names an event in the queue for as long as it is there.
pub type EventId = u64;

/// An event: a name and an ordered environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub name: String,
    pub env: Vec<(String, String)>,
}

impl Event {
    /// `name` with the variables `env`, in order.
    pub fn new(name: &str, env: &[(&str, &str)]) -> Event {
        Event {
            name: name.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The value of variable `key`, if the event has it.
    pub fn var(&self, key: &str) -> Option<&str> {
        lookup(&self.env, key)
    }
}

/// Events keel itself emits: at boot, for every job, for relayed signals, runlevels,
/// and from its event sources (`socket`: socket activation, `file`: file events,
/// mountall's filesystem events; device events are [`crate::job::device`]'s), and
/// what its ifupdown hooks emit (`net-device-up`, `net-device-down`).
pub const BUILTIN_EVENTS: &[&str] = &[
    "socket",
    "file",
    "mounted",
    "virtual-filesystems",
    "local-filesystems",
    "remote-filesystems",
    "filesystem",
    "net-device-up",
    "net-device-down",
    "startup",
    "starting",
    "started",
    "stopping",
    "stopped",
    "control-alt-delete",
    "power-status-changed",
    "keyboard-request",
    "runlevel",
];

/// How far an expression has got: for each of its leaves, left to right, the
/// event it matched (Upstart's `EventOperator` `value` and `event`). The value of
/// `and` / `or` nodes follows from the leaves, so only these are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matched(pub Vec<Option<EventId>>);

impl Matched {
    /// Offers event `id` to every leaf that has matched nothing yet
    /// (`event_operator_handle`); how many leaves took it (each holds it). `env`
    /// expands `$VAR` in the leaves' values.
    pub fn handle(
        &mut self,
        expr: &EventExpr,
        id: EventId,
        event: &Event,
        env: &[(String, String)],
    ) -> u32 {
        self.offer(expr, &mut 0, id, event, env)
    }

    /// `handle` below the subtree whose first leaf is number `next`. (Recursion is
    /// bounded: the parser limits an expression to `MAX_EXPRESSION_EVENTS` leaves.)
    fn offer(
        &mut self,
        expr: &EventExpr,
        next: &mut usize,
        id: EventId,
        event: &Event,
        env: &[(String, String)],
    ) -> u32 {
        match expr {
            EventExpr::Event(leaf) => {
                let i = *next;
                *next += 1;
                if self.slot(i).is_some() || !matches(leaf, event, env) {
                    return 0;
                }
                if self.0.len() <= i {
                    self.0.resize(i + 1, None);
                }
                self.0[i] = Some(id);
                1
            }
            EventExpr::And(a, b) | EventExpr::Or(a, b) => {
                self.offer(a, next, id, event, env) + self.offer(b, next, id, event, env)
            }
        }
    }

    /// Whether some leaf holds event `id`.
    pub fn holds(&self, id: EventId) -> bool {
        self.0.contains(&Some(id))
    }

    /// Whether the whole expression is true.
    pub fn value(&self, expr: &EventExpr) -> bool {
        self.eval(expr, &mut 0)
    }

    /// The events that made the expression true, in leaf order: the leaves of the
    /// subtrees that are true, ignoring those whose other half did not happen
    /// (Upstart's `event_operator_filter`). Empty if the expression is false.
    pub fn active(&self, expr: &EventExpr) -> Vec<EventId> {
        let mut out = Vec::new();
        if self.value(expr) {
            self.collect(expr, &mut 0, &mut out);
        }
        out
    }

    /// Forgets every match (`event_operator_reset`).
    pub fn reset(&mut self) {
        self.0.clear();
    }

    /// Every event some leaf holds.
    pub fn ids(&self) -> impl Iterator<Item = EventId> + '_ {
        self.0.iter().flatten().copied()
    }

    fn slot(&self, i: usize) -> Option<EventId> {
        self.0.get(i).copied().flatten()
    }

    /// The value of the subtree whose first leaf is number `next`; moves `next`
    /// past its leaves. (Recursion is bounded: the parser limits an expression to
    /// `MAX_EXPRESSION_EVENTS` leaves.)
    fn eval(&self, expr: &EventExpr, next: &mut usize) -> bool {
        match expr {
            EventExpr::Event(_) => {
                *next += 1;
                self.slot(*next - 1).is_some()
            }
            EventExpr::And(a, b) => {
                let (a, b) = (self.eval(a, next), self.eval(b, next));
                a && b
            }
            EventExpr::Or(a, b) => {
                let (a, b) = (self.eval(a, next), self.eval(b, next));
                a || b
            }
        }
    }

    /// `active` below a subtree known to be true.
    fn collect(&self, expr: &EventExpr, next: &mut usize, out: &mut Vec<EventId>) {
        match expr {
            EventExpr::Event(_) => {
                out.extend(self.slot(*next));
                *next += 1;
            }
            EventExpr::And(a, b) | EventExpr::Or(a, b) => {
                for side in [a, b] {
                    let start = *next;
                    if self.eval(side, next) {
                        *next = start;
                        self.collect(side, next, out);
                    }
                }
            }
        }
    }
}

/// Whether `event` satisfies one leaf (`event_operator_match`).
pub fn matches(m: &EventMatch, event: &Event, env: &[(String, String)]) -> bool {
    if m.name != event.name {
        return false;
    }
    m.args.iter().enumerate().all(|(i, arg)| {
        let value = match &arg.key {
            Some(key) => lookup(&event.env, key),
            // Positional values come first (the parser sees to it).
            None => event.env.get(i).map(|(_, v)| v.as_str()),
        };
        let Some(value) = value else {
            return false;
        };
        // Most patterns hold no `$VAR`: matched as they are, without a copy.
        if !arg.value.contains('$') {
            return crate::glob::glob(&arg.value, value) != arg.negated;
        }
        match expand(&arg.value, env) {
            Ok(pattern) => crate::glob::glob(&pattern, value) != arg.negated,
            Err(_) => false,
        }
    })
}

fn lookup<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Sets `key` in `env`, in place if it is there already (Upstart's `environ_set`).
pub fn set_var(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

/// Why [`expand`] failed, in Upstart's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("Unknown parameter: {0}")]
    UnknownParameter(String),
    #[error("Expected operator")]
    ExpectedOperator,
    #[error("Mismatched braces")]
    MismatchedBraces,
    #[error("References nested too deeply")]
    TooDeep,
}

/// Deepest `${A:-${B:-…}}` nesting [`expand`] follows.
const MAX_EXPAND_DEPTH: usize = 16;

/// Upstart's `environ_expand`: `$NAME`, `${NAME}`, `${NAME-default}`,
/// `${NAME:-default}` (also when empty), `${NAME+alternate}`, `${NAME:+alternate}`,
/// and `${}` for a literal `$`. A reference to a variable `env` lacks, without a
/// default, is an error; a `$` before anything else stays as it is.
pub fn expand(template: &str, env: &[(String, String)]) -> Result<String, ExpandError> {
    let mut e = Expander {
        text: template,
        pos: 0,
        env,
    };
    e.until(b"", 0)
}

struct Expander<'a> {
    text: &'a str,
    pos: usize,
    env: &'a [(String, String)],
}

impl Expander<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.text.as_bytes().get(self.pos + ahead).copied()
    }

    /// Expands up to the first byte of `stop` (or the end), leaving `pos` there.
    /// Every split is at an ASCII byte, so the slices are whole characters.
    fn until(&mut self, stop: &[u8], depth: usize) -> Result<String, ExpandError> {
        if depth > MAX_EXPAND_DEPTH {
            return Err(ExpandError::TooDeep);
        }
        let mut out = String::new();
        let mut from = self.pos;
        while let Some(c) = self.peek(0) {
            if stop.contains(&c) {
                break;
            }
            if c != b'$' {
                self.pos += 1;
                continue;
            }
            out.push_str(&self.text[from..self.pos]);
            self.pos += 1;
            match self.peek(0) {
                Some(c) if c == b'_' || c.is_ascii_alphabetic() => {
                    let start = self.pos;
                    while self
                        .peek(0)
                        .is_some_and(|c| c == b'_' || c.is_ascii_alphanumeric())
                    {
                        self.pos += 1;
                    }
                    let name = &self.text[start..self.pos];
                    let value = lookup(self.env, name)
                        .ok_or_else(|| ExpandError::UnknownParameter(name.to_string()))?;
                    out.push_str(value);
                }
                Some(b'{') if self.peek(1) == Some(b'}') => {
                    self.pos += 2;
                    out.push('$');
                }
                Some(b'{') => {
                    self.pos += 1;
                    let value = self.braced(depth)?;
                    out.push_str(&value);
                }
                _ => out.push('$'),
            }
            from = self.pos;
        }
        out.push_str(&self.text[from..self.pos]);
        Ok(out)
    }

    /// The rest of `${…}`, after the brace.
    fn braced(&mut self, depth: usize) -> Result<String, ExpandError> {
        let start = self.pos;
        while self.peek(0).is_some_and(|c| !b"}:-+".contains(&c)) {
            self.pos += 1;
        }
        let name = self.text[start..self.pos].to_string();
        // (operator, also when empty)
        let op = match (self.peek(0), self.peek(1)) {
            (Some(b':'), Some(b'-')) => Some(('-', true)),
            (Some(b':'), Some(b'+')) => Some(('+', true)),
            (Some(b'-'), _) => Some(('-', false)),
            (Some(b'+'), _) => Some(('+', false)),
            (Some(b'}') | None, _) => None,
            _ => return Err(ExpandError::ExpectedOperator),
        };
        if let Some((_, colon)) = op {
            self.pos += if colon { 2 } else { 1 };
        }
        let arg = self.until(b"}", depth + 1)?;
        if self.peek(0) != Some(b'}') {
            return Err(ExpandError::MismatchedBraces);
        }
        self.pos += 1;
        let value = lookup(self.env, &name);
        Ok(match op {
            None => value
                .ok_or(ExpandError::UnknownParameter(name))?
                .to_string(),
            Some(('-', colon)) => match value {
                Some(v) if !(colon && v.is_empty()) => v.to_string(),
                _ => arg,
            },
            Some((_, colon)) => match value {
                Some(v) if !(colon && v.is_empty()) => arg,
                _ => String::new(),
            },
        })
    }
}

/// One finding of [`check_config`]: a condition of `job` waits for what nothing
/// provides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub job: String,
    /// `start on` or `stop on`.
    pub condition: &'static str,
    pub missing: Missing,
}

/// What a condition waits for that nothing provides, in check-config's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// An event no job emits and keel does not either.
    #[error("unknown event {0}")]
    Event(String),
    /// A job event (`started foo`) naming a job that does not exist.
    #[error("unknown job {0}")]
    Job(String),
}

/// `initctl check-config`: every event a `start on` or `stop on` waits for that
/// nothing emits, and every job a job event names (`started foo`) that does not
/// exist. Known events: keel's own ([`BUILTIN_EVENTS`]), what some job's `emits`
/// names (a glob there covers every name it matches, as in Upstart), and
/// `EVENT/failed` for every known `EVENT`. Findings in job order, each naming its
/// job, its condition (`start on`) and what is wrong (`unknown event EVENT`).
/// (Upstart hides an unknown event behind an `or` whose other side is known unless
/// given `--warn`; keel always reports it.)
pub fn check_config<'a>(defs: impl Iterator<Item = &'a JobDef> + Clone) -> Vec<Finding> {
    let jobs: BTreeSet<&str> = defs.clone().map(|d| d.name.as_str()).collect();
    let emitted: Vec<&str> = defs
        .clone()
        .flat_map(|d| d.emits.iter().map(String::as_str))
        .collect();
    let known = |name: &str| {
        let base = name.strip_suffix("/failed").unwrap_or(name);
        [name, base].iter().any(|n| {
            BUILTIN_EVENTS.contains(n)
                || crate::job::device::is_device_event(n)
                || emitted.iter().any(|p| crate::glob::glob(p, n))
        })
    };
    let mut findings = Vec::new();
    for d in defs {
        let mut find = |condition: &'static str, missing: Missing| {
            findings.push(Finding {
                job: d.name.clone(),
                condition,
                missing,
            })
        };
        for (stanza, expr) in [("start on", &d.start_on), ("stop on", &d.stop_on)] {
            let Some(expr) = expr else { continue };
            for m in expr.leaves() {
                if !known(&m.name) {
                    find(stanza, Missing::Event(m.name.clone()));
                }
                let job_event = matches!(
                    m.name.as_str(),
                    "starting" | "started" | "stopping" | "stopped"
                );
                let named = m
                    .args
                    .iter()
                    .find(|a| a.key.is_none() || a.key.as_deref() == Some("JOB"));
                if let Some(arg) = named.filter(|a| {
                    job_event
                        && !a.negated
                        && !a.value.contains(['*', '?', '[', '$'])
                        && !jobs.contains(a.value.as_str())
                }) {
                    find(stanza, Missing::Job(arg.value.clone()));
                }
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{ArgMatch, parse};

    fn ev(name: &str, env: &[(&str, &str)]) -> Event {
        Event::new(name, env)
    }

    fn vars(env: &[(&str, &str)]) -> Vec<(String, String)> {
        ev("", env).env
    }

    /// The `start on` of a job file.
    fn on(text: &str) -> EventExpr {
        parse("t", &format!("start on {text}\n"))
            .def
            .and_then(|d| d.start_on)
            .unwrap_or_else(|| panic!("{text} does not parse"))
    }

    /// Offers the events in turn; the value after each.
    fn run(expr: &EventExpr, events: &[Event], env: &[(String, String)]) -> (Matched, Vec<bool>) {
        let mut m = Matched::default();
        let values = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                m.handle(expr, i as EventId, e, env);
                m.value(expr)
            })
            .collect();
        (m, values)
    }

    #[test]
    fn arguments_positional_named_negated_and_globbed() {
        let e = ev("net-device-up", &[("IFACE", "eth0"), ("ADDRFAM", "inet")]);
        let m = |args: Vec<ArgMatch>| EventMatch {
            name: "net-device-up".into(),
            args,
        };
        let arg = |key: Option<&str>, value: &str, negated| ArgMatch {
            key: key.map(str::to_string),
            value: value.into(),
            negated,
        };
        assert!(matches(&m(vec![]), &e, &[]));
        assert!(matches(
            &m(vec![arg(Some("IFACE"), "eth*", false)]),
            &e,
            &[]
        ));
        assert!(!matches(&m(vec![arg(Some("IFACE"), "lo", false)]), &e, &[]));
        assert!(matches(&m(vec![arg(Some("IFACE"), "lo", true)]), &e, &[]));
        assert!(!matches(
            &m(vec![arg(Some("IFACE"), "eth?", true)]),
            &e,
            &[]
        ));
        assert!(matches(
            &m(vec![arg(None, "eth0", false), arg(None, "inet", false)]),
            &e,
            &[]
        ));
        assert!(!matches(&m(vec![arg(None, "inet", false)]), &e, &[]));
        // Too many positional values, or no such variable: never a match, not
        // even negated.
        assert!(!matches(
            &m(vec![
                arg(None, "*", false),
                arg(None, "*", false),
                arg(None, "*", false)
            ]),
            &e,
            &[]
        ));
        assert!(!matches(&m(vec![arg(Some("MISSING"), "x", true)]), &e, &[]));
        // Names are not globs.
        let star = EventMatch {
            name: "net-*".into(),
            args: vec![],
        };
        assert!(!matches(&star, &e, &[]));
        assert!(matches(&star, &ev("net-*", &[]), &[]));
    }

    #[test]
    fn runlevel_classes_from_job_files() {
        let start = on("runlevel [2345]");
        let stop = on("runlevel [!2345]");
        for (level, starts) in [("2", true), ("5", true), ("0", false), ("S", false)] {
            let e = ev("runlevel", &[("RUNLEVEL", level), ("PREVLEVEL", "N")]);
            assert_eq!(
                run(&start, std::slice::from_ref(&e), &[]).1,
                [starts],
                "{level}"
            );
            assert_eq!(run(&stop, &[e], &[]).1, [!starts], "{level}");
        }
        let named = on("runlevel RUNLEVEL=[06] PREVLEVEL!=N");
        let e = |r, p| ev("runlevel", &[("RUNLEVEL", r), ("PREVLEVEL", p)]);
        assert_eq!(run(&named, &[e("0", "2")], &[]).1, [true]);
        assert_eq!(run(&named, &[e("0", "N")], &[]).1, [false]);
        assert_eq!(run(&named, &[e("2", "N")], &[]).1, [false]);
    }

    #[test]
    fn and_remembers_events_across_emits_until_reset() {
        let expr = on("a and b");
        let (mut m, values) = run(&expr, &[ev("a", &[]), ev("c", &[]), ev("b", &[])], &[]);
        assert_eq!(values, [false, false, true]);
        assert_eq!(m.active(&expr), [0, 2]);
        // A leaf keeps its first event: a second `a` is not taken.
        assert_eq!(m.handle(&expr, 9, &ev("a", &[]), &[]), 0);
        m.reset();
        assert!(!m.value(&expr));
        assert_eq!(m.ids().count(), 0);
        // Either order.
        assert_eq!(
            run(&expr, &[ev("b", &[]), ev("a", &[])], &[]).1,
            [false, true]
        );
    }

    #[test]
    fn or_and_parentheses() {
        let expr = on("a or b");
        assert_eq!(run(&expr, &[ev("b", &[])], &[]).1, [true]);
        // `(a and b) or c`: c alone suffices, and only c made it true.
        let expr = on("(a and b) or c");
        let (m, values) = run(&expr, &[ev("a", &[]), ev("c", &[])], &[]);
        assert_eq!(values, [false, true]);
        assert_eq!(m.active(&expr), [1], "a had no part in it");
        assert_eq!(m.ids().collect::<Vec<_>>(), [0, 1], "but a is still held");
        // `a and (b or c)` with both b and c: both count.
        let expr = on("a and (b or c)");
        let (m, values) = run(&expr, &[ev("c", &[]), ev("b", &[]), ev("a", &[])], &[]);
        assert_eq!(values, [false, false, true]);
        assert_eq!(m.active(&expr), [2, 1, 0]);
        // Without parentheses `and`/`or` group from the left: `(a or b) and c`.
        let expr = on("a or b and c");
        assert_eq!(run(&expr, &[ev("a", &[])], &[]).1, [false]);
        assert_eq!(
            run(&expr, &[ev("a", &[]), ev("c", &[])], &[]).1,
            [false, true]
        );
        // One event may satisfy two leaves (and is held by both).
        let expr = on("x A=1 and x B=2");
        assert_eq!(
            run(&expr, &[ev("x", &[("A", "1"), ("B", "2")])], &[]).1,
            [true]
        );
        let mut m = Matched::default();
        assert_eq!(
            m.handle(&expr, 4, &ev("x", &[("A", "1"), ("B", "2")]), &[]),
            2
        );
        assert_eq!(m.ids().collect::<Vec<_>>(), [4, 4]);
    }

    #[test]
    fn variables_in_stop_on_expand_from_the_instance() {
        let expr = on("stopping JOB=$PARENT");
        let env = vars(&[("PARENT", "db")]);
        assert_eq!(
            run(&expr, &[ev("stopping", &[("JOB", "web")])], &env).1,
            [false]
        );
        assert_eq!(
            run(&expr, &[ev("stopping", &[("JOB", "db")])], &env).1,
            [true]
        );
        // Without the variable (as for `start on`), nothing matches…
        assert_eq!(
            run(&expr, &[ev("stopping", &[("JOB", "db")])], &[]).1,
            [false]
        );
        // …unless a default says what to use.
        let expr = on("stopping JOB=${PARENT:-db}");
        assert_eq!(
            run(&expr, &[ev("stopping", &[("JOB", "db")])], &[]).1,
            [true]
        );
        // The expanded value is a glob, and `!=` negates it.
        let expr = on("net-device-down IFACE!=$IFACE*");
        let env = vars(&[("IFACE", "eth")]);
        assert_eq!(
            run(&expr, &[ev("net-device-down", &[("IFACE", "eth1")])], &env).1,
            [false]
        );
        assert_eq!(
            run(&expr, &[ev("net-device-down", &[("IFACE", "wlan0")])], &env).1,
            [true]
        );
    }

    #[test]
    fn expansion_follows_upstart() {
        let env = vars(&[("A", "1"), ("E", ""), ("TTY", "ttyS0")]);
        let x = |t: &str| expand(t, &env);
        assert_eq!(x("tty $TTY!").as_deref(), Ok("tty ttyS0!"));
        assert_eq!(x("${A}x").as_deref(), Ok("1x"));
        assert_eq!(x("${B-b} ${E-e} ${E:-e} ${B:-b}").as_deref(), Ok("b  e b"));
        assert_eq!(x("${A+y} ${E+y} ${E:+y} ${B+y}.").as_deref(), Ok("y y  ."));
        assert_eq!(x("${B:-${A}}").as_deref(), Ok("1"));
        assert_eq!(x("$ ${} $1 $").as_deref(), Ok("$ $ $1 $"));
        assert_eq!(x("é$A€").as_deref(), Ok("é1€"));
        assert_eq!(
            x("$NOPE"),
            Err(ExpandError::UnknownParameter("NOPE".into()))
        );
        assert_eq!(
            x("${NOPE}"),
            Err(ExpandError::UnknownParameter("NOPE".into()))
        );
        assert_eq!(x("${A"), Err(ExpandError::MismatchedBraces));
        assert_eq!(x("${A:x}"), Err(ExpandError::ExpectedOperator));
        let deep = format!("{}{}", "${B:-".repeat(40), "}".repeat(40));
        assert_eq!(x(&deep), Err(ExpandError::TooDeep));
    }

    #[test]
    fn unknown_events_and_jobs_are_reported() {
        let a = parse("a", "start on startup or foo-happened\nemits bar net-*\n")
            .def
            .unwrap();
        let b = parse(
            "b",
            "start on bar and started a\nstop on stopped ghost or runlevel [016]\n",
        )
        .def
        .unwrap();
        let c = parse(
            "c",
            "start on net-up or bar/failed or starting/failed\nstop on other/failed or baz*\n",
        )
        .def
        .unwrap();
        let report: Vec<String> = check_config([&a, &b, &c].into_iter())
            .into_iter()
            .map(|p| format!("{}: {}: {}", p.job, p.condition, p.missing))
            .collect();
        assert_eq!(
            report,
            [
                "a: start on: unknown event foo-happened",
                "b: stop on: unknown job ghost",
                "c: stop on: unknown event other/failed",
                "c: stop on: unknown event baz*"
            ]
        );
    }
}
