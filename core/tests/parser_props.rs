//! Properties of the job parser over generated input: it never panics (bytes,
//! token soup, mutated real job files), its verdict is consistent (a definition
//! exactly when there is no error, diagnostics inside the text), and whatever it
//! accepts renders back to the same definition — also for generated definitions.

mod corpus_dir;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use keel_core::job::{
    self, ArgMatch, CAPABILITIES, Cgroup, Console, EnvVar, EventExpr, EventMatch, ExitMatch,
    Expect, JobDef, Limit, LimitValue, OomScore, Process, Resource, RespawnLimit, Severity, Signal,
};
use proptest::prelude::*;
use proptest::sample::subsequence;

/// Parses `text` and checks what must hold for any input.
fn check_parse(text: &str) -> Option<JobDef> {
    let parsed = job::parse("prop", text);
    let has_error = parsed
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    assert_eq!(parsed.def.is_some(), !has_error, "definition iff no error");
    let lines = text.split('\n').count() as u32;
    for d in &parsed.diagnostics {
        assert!(
            d.line >= 1 && d.line <= lines && d.col >= 1,
            "{d:?} outside the text"
        );
        assert!(!d.message.is_empty());
    }
    parsed.def
}

/// A parsed definition renders to text that parses back to it.
fn check_round_trip(def: &JobDef) {
    let text = job::render(def);
    let again = job::parse(&def.name, &text);
    let errors: Vec<String> = again
        .diagnostics
        .iter()
        .map(|d| d.render("rendered"))
        .collect();
    assert_eq!(
        again.def.as_ref(),
        Some(def),
        "rendered as\n{text}\n{errors:?}"
    );
}

const WORDS: &[&str] = &[
    "start",
    "on",
    "stop",
    "exec",
    "script",
    "end script",
    "end",
    "pre-start",
    "post-stop",
    "pre-stop",
    "post-start",
    "and",
    "or",
    "(",
    ")",
    "\"",
    "'",
    "\\",
    "\n",
    "\\\n",
    "#",
    " ",
    "\t",
    "\r",
    "description",
    "env",
    "export",
    "emits",
    "A=1",
    "X!=y",
    "limit",
    "nofile",
    "1",
    "65536",
    "unlimited",
    "expect",
    "fork",
    "daemon",
    "fd",
    "3",
    "dbus",
    "respawn",
    "normal",
    "exit",
    "TERM",
    "kill",
    "signal",
    "timeout",
    "reload",
    "oom",
    "score",
    "never",
    "-5",
    "console",
    "log",
    "output",
    "cgroup",
    "capabilities",
    "none",
    "net_admin",
    "no",
    "new",
    "privileges",
    "manual",
    "task",
    "instance",
    "$X",
    "[2345]",
    "é",
    "runlevel",
    "usage",
    "umask",
    "022",
    "nice",
    "setuid",
    "chdir",
    "/tmp",
    "apparmor",
    "load",
    "ready",
    "debug",
    "\0",
    "\"\"",
    "=",
];

const STANZAS: &[&str] = &[
    "start on",
    "stop on",
    "exec",
    "script",
    "end script",
    "pre-start",
    "post-stop",
    "env",
    "expect",
    "respawn",
    "respawn limit",
    "normal exit",
    "kill signal",
    "kill timeout",
    "limit nofile",
    "oom score",
    "console",
    "cgroup",
    "capabilities",
    "no new privileges",
    "description",
    "emits",
    "manual",
    "task",
    "ready timeout",
    "apparmor load",
    "",
    "  ",
];

/// Lines of a stanza name and random words, so that much of it parses.
fn token_soup() -> impl Strategy<Value = String> {
    let line = (
        prop::sample::select(STANZAS),
        prop::collection::vec((prop::sample::select(WORDS), prop::bool::ANY), 0..6),
    );
    prop::collection::vec(line, 0..16).prop_map(|lines| {
        let mut text = String::new();
        for (stanza, words) in lines {
            text.push_str(stanza);
            for (word, spaced) in words {
                if spaced {
                    text.push(' ');
                }
                text.push_str(word);
            }
            text.push('\n');
        }
        text
    })
}

/// The corpus's job files, or `None` when it is absent (the test then skips).
fn corpus_texts() -> Option<&'static [String]> {
    static TEXTS: OnceLock<Option<Vec<String>>> = OnceLock::new();
    TEXTS
        .get_or_init(|| {
            let root = corpus_dir::corpus_dir()?;
            let mut paths = Vec::new();
            collect_confs(&root, &mut paths);
            paths.sort();
            Some(
                paths
                    .iter()
                    .map(|p| std::fs::read_to_string(p).expect("readable corpus file"))
                    .collect(),
            )
        })
        .as_deref()
}

fn collect_confs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable corpus directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_confs(&path, out);
        } else if path.extension().is_some_and(|e| e == "conf") {
            out.push(path);
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, word: &'static str },
    DuplicateLine { at: usize },
    SetByte { at: usize, byte: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::sample::select(WORDS))
            .prop_map(|(at, word)| Mutation::Insert { at, word }),
        any::<usize>().prop_map(|at| Mutation::DuplicateLine { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for mutation in mutations {
        let len = bytes.len();
        match *mutation {
            Mutation::Delete { at, len: n } if len > 0 => {
                let at = at % len;
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Insert { at, word } => {
                let at = at % (len + 1);
                bytes.splice(at..at, word.bytes());
            }
            Mutation::DuplicateLine { at } if len > 0 => {
                let at = at % len;
                let start = bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(len, |i| at + i + 1);
                let line = bytes[start..end].to_vec();
                bytes.splice(start..start, line);
            }
            Mutation::SetByte { at, byte } if len > 0 => bytes[at % len] = byte,
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

// Generated definitions, limited to what the parser can produce.

/// A non-empty argument: anything but newline and NUL.
fn text() -> impl Strategy<Value = String> {
    "[^\n\0]{1,10}"
}

fn event_match() -> impl Strategy<Value = EventMatch> {
    let positional = prop::collection::vec("[^\n\0=]{1,6}", 0..3);
    // `!` is left out of plain values: `K=a!=b` reads as `K=a` negated.
    let named = prop::collection::vec(
        ("[A-Z_]{1,5}", prop::bool::ANY).prop_flat_map(|(key, negated)| {
            let value = if negated {
                "[^\n\0]{0,6}"
            } else {
                "[^\n\0!]{0,6}"
            };
            value.prop_map(move |value| ArgMatch {
                key: Some(key.clone()),
                value,
                negated,
            })
        }),
        0..3,
    );
    (text(), positional, named).prop_map(|(name, positional, named)| {
        let mut args: Vec<ArgMatch> = positional
            .into_iter()
            .map(|value| ArgMatch {
                key: None,
                value,
                negated: false,
            })
            .collect();
        args.extend(named);
        EventMatch { name, args }
    })
}

fn expression() -> impl Strategy<Value = EventExpr> {
    event_match()
        .prop_map(EventExpr::Event)
        .prop_recursive(5, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(l, r)| EventExpr::And(Box::new(l), Box::new(r))),
                (inner.clone(), inner).prop_map(|(l, r)| EventExpr::Or(Box::new(l), Box::new(r))),
            ]
        })
}

fn command() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        "[a-zA-Z0-9/._$=*-]{1,8}",
        "[^\"\\\\\n\0]{0,8}".prop_map(|inner| format!("\"{inner}\"")),
        "[^'\\\\\n\0]{0,8}".prop_map(|inner| format!("'{inner}'")),
        Just("\\$HOME".to_string()),
    ];
    prop::collection::vec(word, 1..5).prop_map(|words| words.join(" "))
}

/// A script body as the parser leaves it: the first line not indented, no
/// line that ends the block.
fn body() -> impl Strategy<Value = String> {
    (
        "[^\n\0 \t\r][^\n\0]{0,10}",
        prop::collection::vec("[^\n\0]{0,10}", 0..4),
    )
        .prop_filter("a line would end the block", |(_, rest)| {
            rest.iter().all(|line| {
                !line
                    .trim_start_matches([' ', '\t', '\r'])
                    .starts_with("end")
            })
        })
        .prop_filter("the first line would end the block", |(first, _)| {
            !first.starts_with("end")
        })
        .prop_map(|(first, rest)| {
            let mut body = first;
            body.push('\n');
            for line in rest {
                body.push_str(&line);
                body.push('\n');
            }
            body
        })
}

fn process() -> impl Strategy<Value = Process> {
    prop_oneof![
        command().prop_map(|command| Process::Exec { command }),
        (
            prop::collection::vec(text(), 0..3),
            prop_oneof![Just(String::new()), body()]
        )
            .prop_map(|(interpreter, body)| Process::Script { interpreter, body }),
    ]
}

fn signal() -> impl Strategy<Value = Signal> {
    (0i32..=64).prop_map(Signal)
}

fn definition() -> impl Strategy<Value = JobDef> {
    let info = (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::collection::vec(text(), 0..3),
        prop::option::of(text()),
    );
    let events = (
        prop::option::of(expression()),
        prop::option::of(expression()),
        prop::bool::ANY,
        prop::collection::vec(
            (
                "[A-Za-z_][A-Za-z0-9_]{0,6}",
                prop::option::of("[^\n\0]{0,8}"),
            )
                .prop_map(|(key, value)| EnvVar { key, value }),
            0..3,
        ),
        prop::collection::vec(text(), 0..3),
    );
    let lifecycle = (
        prop::bool::ANY,
        prop::bool::ANY,
        prop_oneof![
            (any::<u32>(), any::<u32>())
                .prop_map(|(count, interval)| RespawnLimit::Limit { count, interval }),
            Just(RespawnLimit::Unlimited),
        ],
        prop::collection::vec(
            prop_oneof![
                (0i32..=255).prop_map(ExitMatch::Status),
                (1i32..=31).prop_map(|n| ExitMatch::Signal(Signal(n))),
            ],
            0..3,
        ),
        prop_oneof![
            Just(Expect::None),
            Just(Expect::Fork),
            Just(Expect::Daemon),
            Just(Expect::Stop),
            Just(Expect::Notify),
            Just(Expect::Listen),
            (3i32..=1024).prop_map(Expect::Fd),
            text().prop_map(Expect::Dbus),
        ],
        prop::option::of(1u32..),
        signal(),
        any::<u32>(),
        signal(),
    );
    let processes = (
        prop::option::of(process()),
        prop::option::of(process()),
        prop::option::of(process()),
        prop::option::of(process()),
        prop::option::of(process()),
    );
    let limit_value = prop_oneof![
        any::<u64>().prop_map(LimitValue::Value),
        Just(LimitValue::Unlimited)
    ];
    let environment = (
        prop_oneof![
            Just(Console::None),
            Just(Console::Log),
            Just(Console::Output),
            Just(Console::Owner)
        ],
        prop::option::of(0u32..=0o777),
        prop::option::of(-20i32..=19),
        prop::option::of(prop_oneof![
            (-1000i32..=1000).prop_map(OomScore::Adj),
            Just(OomScore::Never)
        ]),
        prop::option::of(text()),
        prop::option::of(text()),
        subsequence(Resource::ALL.to_vec(), 0..4).prop_flat_map(move |resources| {
            let n = resources.len();
            prop::collection::vec((limit_value.clone(), limit_value.clone()), n).prop_map(
                move |values| {
                    resources
                        .iter()
                        .zip(values)
                        .map(|(&resource, (soft, hard))| Limit {
                            resource,
                            soft,
                            hard,
                        })
                        .collect::<Vec<_>>()
                },
            )
        }),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::collection::vec(
            (
                text(),
                prop::option::of(text()),
                prop::option::of((text(), text())),
            )
                .prop_map(|(controller, name, setting)| Cgroup {
                    controller,
                    name,
                    setting,
                }),
            0..3,
        ),
        prop::option::of(text()),
        prop::option::of(text()),
    );
    let keel = (
        prop::bool::ANY,
        prop::option::of(
            subsequence(CAPABILITIES.to_vec(), 0..5)
                .prop_map(|caps| caps.into_iter().map(String::from).collect::<Vec<_>>()),
        ),
        prop::bool::ANY,
    );
    (info, events, lifecycle, processes, environment, keel).prop_map(
        |(info, events, lifecycle, processes, environment, keel)| {
            let mut def = JobDef::new("generated");
            (
                def.description,
                def.author,
                def.version,
                def.usage,
                def.emits,
                def.instance,
            ) = info;
            (def.start_on, def.stop_on, def.manual, def.env, def.export) = events;
            if def.manual {
                // `manual` discards `start on`; the parser never has both.
                def.start_on = None;
            }
            (
                def.task,
                def.respawn,
                def.respawn_limit,
                def.normal_exit,
                def.expect,
                def.ready_timeout,
                def.kill_signal,
                def.kill_timeout,
                def.reload_signal,
            ) = lifecycle;
            let (pre_start, main, post_start, pre_stop, post_stop) = processes;
            def.main = main;
            def.pre_start = pre_start.map(Box::new);
            def.post_start = post_start.map(Box::new);
            def.pre_stop = pre_stop.map(Box::new);
            def.post_stop = post_stop.map(Box::new);
            (
                def.console,
                def.umask,
                def.nice,
                def.oom_score,
                def.chroot,
                def.chdir,
                def.limits,
                def.setuid,
                def.setgid,
                def.cgroups,
                def.apparmor_load,
                def.apparmor_switch,
            ) = environment;
            (def.debug, def.capabilities, def.no_new_privileges) = keel;
            def
        },
    )
}

/// Few enough cases that the file runs in seconds in a debug build. Failures
/// print their input; nothing is persisted (integration tests have no lib.rs
/// for proptest to put it beside).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Some(def) = check_parse(&String::from_utf8_lossy(&bytes)) {
            check_round_trip(&def);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        if let Some(def) = check_parse(&text) {
            check_round_trip(&def);
        }
    }

    #[test]
    fn token_soup_never_panics_and_what_parses_round_trips(text in token_soup()) {
        if let Some(def) = check_parse(&text) {
            check_round_trip(&def);
        }
    }

    #[test]
    fn generated_definitions_round_trip(def in definition()) {
        check_round_trip(&def);
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated_corpus_files_never_panic(
        index in any::<usize>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let Some(texts) = corpus_texts() else {
            return Ok(());
        };
        let text = mutate(&texts[index % texts.len()], &mutations);
        if let Some(def) = check_parse(&text) {
            check_round_trip(&def);
        }
    }
}
