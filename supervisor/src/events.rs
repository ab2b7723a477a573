//! Matching events against `start on` / `stop on` expressions. Pure.
//!
//! An event is a name and an ordered environment. An `EventMatch` matches when the
//! name matches (a glob) and every argument does: positional arguments match the
//! event's values in order, `KEY=VALUE` the named variable, both as globs, `!=`
//! negated.

use crate::job::{ArgMatch, EventExpr, EventMatch};
use crate::lifecycle::Event;

/// Whether one event satisfies `expr`. (`and` needs both sides from this one
/// event: remembering earlier events belongs to the event engine.)
pub fn matches(expr: &EventExpr, event: &Event) -> bool {
    match expr {
        EventExpr::Event(m) => matches_one(m, event),
        EventExpr::Or(a, b) => matches(a, event) || matches(b, event),
        EventExpr::And(a, b) => matches(a, event) && matches(b, event),
    }
}

fn matches_one(m: &EventMatch, event: &Event) -> bool {
    if !glob(&m.name, &event.name) {
        return false;
    }
    let mut position = 0;
    m.args.iter().all(|arg| {
        let value = match &arg.key {
            Some(key) => event
                .env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str()),
            None => {
                position += 1;
                event.env.get(position - 1).map(|(_, v)| v.as_str())
            }
        };
        arg_matches(arg, value)
    })
}

fn arg_matches(arg: &ArgMatch, value: Option<&str>) -> bool {
    match value {
        Some(v) => glob(&arg.value, v) != arg.negated,
        None => false,
    }
}

/// fnmatch(3)-style: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `\x`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    // Iterative with one backtrack point for `*`: linear in practice, never recursive.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, len)) = class(&p[pi..], t[ti]) {
                        if ok {
                            pi += len;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == t[ti] => {
                    pi += 2;
                    ti += 1;
                    continue;
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A bracket class at the start of `p`: (matches `c`, length), or None if unclosed.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                found = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                found = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("runlevel", "runlevel"));
        assert!(glob("[2345]", "3"));
        assert!(!glob("[2345]", "1"));
        assert!(glob("[!016]", "2"));
        assert!(!glob("[!016]", "0"));
        assert!(glob("tty*", "ttyS0"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("\\*", "*"));
        assert!(glob("[", "["));
    }

    #[test]
    fn arguments() {
        let ev = Event {
            name: "net-device-up".into(),
            env: vec![
                ("IFACE".into(), "eth0".into()),
                ("ADDRFAM".into(), "inet".into()),
            ],
        };
        let m = |args: Vec<ArgMatch>| {
            EventExpr::Event(EventMatch {
                name: "net-device-up".into(),
                args,
            })
        };
        let arg = |key: Option<&str>, value: &str, negated| ArgMatch {
            key: key.map(str::to_string),
            value: value.into(),
            negated,
        };
        assert!(matches(&m(vec![]), &ev));
        assert!(matches(&m(vec![arg(Some("IFACE"), "eth*", false)]), &ev));
        assert!(!matches(&m(vec![arg(Some("IFACE"), "lo", false)]), &ev));
        assert!(matches(&m(vec![arg(Some("IFACE"), "lo", true)]), &ev));
        assert!(matches(
            &m(vec![arg(None, "eth0", false), arg(None, "inet", false)]),
            &ev
        ));
        assert!(!matches(&m(vec![arg(None, "inet", false)]), &ev));
        assert!(!matches(&m(vec![arg(Some("MISSING"), "x", false)]), &ev));
    }
}

/// Events keel itself emits: at boot, for every job, for relayed signals, runlevels.
pub const BUILTIN_EVENTS: &[&str] = &[
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

/// `initctl check-config`: every event a `start on` or `stop on` waits for that no
/// job says it `emits` and keel does not emit itself, and every job named by a
/// job event (`started foo`) that does not exist. One finding per line, grouped by
/// job in Upstart's shape: `JOB\n  start on: unknown event EVENT\n`.
pub fn check_config<'a>(defs: impl Iterator<Item = &'a crate::job::JobDef> + Clone) -> String {
    let mut known: std::collections::BTreeSet<&str> = BUILTIN_EVENTS.iter().copied().collect();
    let jobs: std::collections::BTreeSet<&str> = defs.clone().map(|d| d.name.as_str()).collect();
    for d in defs.clone() {
        known.extend(d.emits.iter().map(String::as_str));
    }
    let mut out = String::new();
    for d in defs {
        let mut findings = Vec::new();
        for (stanza, expr) in [("start on", &d.start_on), ("stop on", &d.stop_on)] {
            let Some(expr) = expr else { continue };
            let mut leaves = Vec::new();
            collect_leaves(expr, &mut leaves);
            for m in leaves {
                let globbed = m.name.contains(['*', '?', '[']);
                if !globbed && !known.contains(m.name.as_str()) {
                    findings.push(format!("  {stanza}: unknown event {}\n", m.name));
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
                    findings.push(format!("  {stanza}: unknown job {}\n", arg.value));
                }
            }
        }
        if !findings.is_empty() {
            out.push_str(&d.name);
            out.push('\n');
            findings.into_iter().for_each(|f| out.push_str(&f));
        }
    }
    out
}

fn collect_leaves<'a>(expr: &'a EventExpr, out: &mut Vec<&'a EventMatch>) {
    let mut todo = vec![expr];
    while let Some(e) = todo.pop() {
        match e {
            EventExpr::Event(m) => out.push(m),
            EventExpr::And(a, b) | EventExpr::Or(a, b) => {
                todo.push(b);
                todo.push(a);
            }
        }
    }
}

#[cfg(test)]
mod check_tests {
    use crate::job::parse;

    #[test]
    fn unknown_events_and_jobs_are_reported() {
        let a = parse("a", "start on startup or foo-happened\nemits bar\n")
            .def
            .unwrap();
        let b = parse(
            "b",
            "start on bar and started a\nstop on stopped ghost or runlevel [016]\n",
        )
        .def
        .unwrap();
        let c = parse("c", "start on net-*\n").def.unwrap();
        let report = super::check_config([&a, &b, &c].into_iter());
        assert_eq!(
            report,
            "a\n  start on: unknown event foo-happened\nb\n  stop on: unknown job ghost\n"
        );
    }
}
