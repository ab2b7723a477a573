//! [`JobDef`] → canonical job-file text (`initctl show-config`, tests).
//!
//! Every stanza that differs from its default is written, one per line, in a
//! fixed order; arguments are quoted where the tokeniser needs it. For every
//! definition the parser produces, `parse(name, &render(&def)).def == Some(def)`.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::{
    Cgroup, Console, EventExpr, EventMatch, ExitMatch, Expect, JobDef, LimitValue, OomScore,
    Process, ProcessKind, RespawnLimit, Signal,
};

/// The job file for `def`.
pub fn render(def: &JobDef) -> String {
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };

    let texts = [
        ("description", &def.description),
        ("author", &def.author),
        ("version", &def.version),
        ("usage", &def.usage),
    ];
    for (stanza, value) in texts {
        if let Some(value) = value {
            line(&format!("{stanza} {}", quote(value)));
        }
    }
    if !def.emits.is_empty() {
        line(&format!("emits {}", quote_all(&def.emits)));
    }
    if let Some(instance) = &def.instance {
        line(&format!("instance {}", quote(instance)));
    }
    if def.manual {
        line("manual");
    } else if let Some(start_on) = &def.start_on {
        line(&format!("start on {}", expression(start_on)));
    }
    if let Some(stop_on) = &def.stop_on {
        line(&format!("stop on {}", expression(stop_on)));
    }
    for var in &def.env {
        let assignment = match &var.value {
            Some(value) => format!("{}={value}", var.key),
            None => var.key.clone(),
        };
        line(&format!("env {}", quote(&assignment)));
    }
    if !def.export.is_empty() {
        line(&format!("export {}", quote_all(&def.export)));
    }

    if def.task {
        line("task");
    }
    if def.respawn {
        line("respawn");
    }
    if def.respawn_limit != RespawnLimit::default() {
        match def.respawn_limit {
            RespawnLimit::Limit { count, interval } => {
                line(&format!("respawn limit {count} {interval}"));
            }
            RespawnLimit::Unlimited => line("respawn limit unlimited"),
        }
    }
    if !def.normal_exit.is_empty() {
        let matches: Vec<String> = def
            .normal_exit
            .iter()
            .map(|m| match m {
                ExitMatch::Status(status) => status.to_string(),
                ExitMatch::Signal(signal) => signal.name(),
            })
            .collect();
        line(&format!("normal exit {}", matches.join(" ")));
    }
    match &def.expect {
        Expect::None => {}
        Expect::Fork => line("expect fork"),
        Expect::Daemon => line("expect daemon"),
        Expect::Stop => line("expect stop"),
        Expect::Notify => line("expect notify"),
        Expect::Fd(fd) => line(&format!("expect fd {fd}")),
        Expect::Listen => line("expect listen"),
        Expect::Dbus(name) => line(&format!("expect dbus {}", quote(name))),
    }
    if let Some(seconds) = def.ready_timeout {
        line(&format!("ready timeout {seconds}"));
    }
    if def.kill_signal != Signal::TERM {
        line(&format!("kill signal {}", def.kill_signal.name()));
    }
    if def.kill_timeout != 5 {
        line(&format!("kill timeout {}", def.kill_timeout));
    }
    if def.reload_signal != Signal::HUP {
        line(&format!("reload signal {}", def.reload_signal.name()));
    }

    match def.console {
        Console::Log => {}
        Console::None => line("console none"),
        Console::Output => line("console output"),
        Console::Owner => line("console owner"),
    }
    if let Some(mask) = def.umask {
        line(&format!("umask {mask:03o}"));
    }
    if let Some(nice) = def.nice {
        line(&format!("nice {nice}"));
    }
    match def.oom_score {
        None => {}
        Some(OomScore::Adj(score)) => line(&format!("oom score {score}")),
        Some(OomScore::Never) => line("oom score never"),
    }
    let paths = [
        ("chroot", &def.chroot),
        ("chdir", &def.chdir),
        ("setuid", &def.setuid),
        ("setgid", &def.setgid),
    ];
    for (stanza, value) in paths {
        if let Some(value) = value {
            line(&format!("{stanza} {}", quote(value)));
        }
    }
    for limit in &def.limits {
        line(&format!(
            "limit {} {} {}",
            limit.resource.name(),
            limit_value(limit.soft),
            limit_value(limit.hard)
        ));
    }
    for cgroup in &def.cgroups {
        line(&cgroup_line(cgroup));
    }
    if let Some(profile) = &def.apparmor_load {
        line(&format!("apparmor load {}", quote(profile)));
    }
    if let Some(profile) = &def.apparmor_switch {
        line(&format!("apparmor switch {}", quote(profile)));
    }
    match &def.capabilities {
        None => {}
        Some(caps) if caps.is_empty() => line("capabilities none"),
        Some(caps) => line(&format!("capabilities {}", quote_all(caps))),
    }
    if def.no_new_privileges {
        line("no new privileges");
    }
    for stanza in def.sandbox.lines(quote_all) {
        line(&stanza);
    }
    if def.debug {
        line("debug");
    }

    for kind in ProcessKind::ALL {
        if let Some(process) = def.process(kind) {
            let stanza = match kind {
                ProcessKind::Main => "",
                other => other.name(),
            };
            process_lines(&mut out, stanza, process);
        }
    }
    out
}

fn process_lines(out: &mut String, stanza: &str, process: &Process) {
    if !stanza.is_empty() {
        out.push_str(stanza);
        out.push(' ');
    }
    match process {
        Process::Exec { command } => {
            let _ = writeln!(out, "exec {command}");
        }
        Process::Script { interpreter, body } => {
            out.push_str("script");
            for arg in interpreter {
                out.push(' ');
                out.push_str(&quote(arg));
            }
            out.push('\n');
            // The parser's body is already free of common indentation, so it
            // is written as it is and reads back the same.
            out.push_str(body);
            if !body.is_empty() && !body.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("end script\n");
        }
    }
}

fn limit_value(value: LimitValue) -> String {
    match value {
        LimitValue::Value(n) => n.to_string(),
        LimitValue::Unlimited => "unlimited".to_string(),
    }
}

fn cgroup_line(cgroup: &Cgroup) -> String {
    let mut words = vec![quote(&cgroup.controller)];
    if let Some(name) = &cgroup.name {
        words.push(quote(name));
    }
    if let Some((key, value)) = &cgroup.setting {
        words.push(quote(key));
        words.push(quote(value));
    }
    format!("cgroup {}", words.join(" "))
}

/// Operators group from the left at equal precedence, so only an operator on
/// the right needs parentheses.
fn expression(expr: &EventExpr) -> String {
    match expr {
        EventExpr::Event(event) => event_match(event),
        EventExpr::And(left, right) => {
            format!("{} and {}", expression(left), right_operand(right))
        }
        EventExpr::Or(left, right) => {
            format!("{} or {}", expression(left), right_operand(right))
        }
    }
}

fn right_operand(expr: &EventExpr) -> String {
    match expr {
        EventExpr::Event(event) => event_match(event),
        operator => format!("({})", expression(operator)),
    }
}

fn event_match(event: &EventMatch) -> String {
    let mut text = quote(&event.name).into_owned();
    for arg in &event.args {
        let word = match (&arg.key, arg.negated) {
            (Some(key), true) => format!("{key}!={}", arg.value),
            (Some(key), false) => format!("{key}={}", arg.value),
            (None, _) => arg.value.clone(),
        };
        text.push(' ');
        text.push_str(&quote(&word));
    }
    text
}

fn quote_all(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// `word` as one argument: bare if the tokeniser reads it back unchanged
/// (also as an event operand), else in double quotes — with `\` doubled and
/// `"` written as `'"'` (a backslash would stay in front of a quote).
pub(super) fn quote(word: &str) -> Cow<'_, str> {
    let special = |c: char| {
        matches!(
            c,
            ' ' | '\t' | '\r' | '\n' | '"' | '\'' | '#' | '\\' | '(' | ')'
        )
    };
    if !word.is_empty() && word != "and" && word != "or" && !word.contains(special) {
        return Cow::Borrowed(word);
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('"');
    for c in word.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\"'\"'\""),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    Cow::Owned(quoted)
}
