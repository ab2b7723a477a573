//! The parser, stanza by stanza: valid forms and what they produce, every
//! invalid form with its exact line, column and message, tokenising edge cases,
//! recovery, warnings and rendering.

use super::*;

fn parsed(text: &str) -> Parsed {
    parse("test", text)
}

/// The definition of a text that must parse without error.
fn ok(text: &str) -> JobDef {
    let parsed = parsed(text);
    let errors: Vec<String> = parsed
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.render("test"))
        .collect();
    assert!(errors.is_empty(), "{text:?} gives {errors:?}");
    parsed.def.expect("no errors, so a definition")
}

/// Every error as `LINE:COL: MESSAGE`.
fn errors(text: &str) -> Vec<String> {
    let parsed = parsed(text);
    let errors: Vec<String> = parsed
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
        .collect();
    assert_eq!(parsed.def.is_some(), errors.is_empty(), "{text:?}");
    errors
}

fn warnings(text: &str) -> Vec<String> {
    parsed(text)
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
        .collect()
}

fn event(name: &str) -> EventExpr {
    EventExpr::Event(EventMatch {
        name: name.into(),
        args: vec![],
    })
}

fn event_with(name: &str, args: &[(Option<&str>, &str, bool)]) -> EventExpr {
    EventExpr::Event(EventMatch {
        name: name.into(),
        args: args
            .iter()
            .map(|&(key, value, negated)| ArgMatch {
                key: key.map(Into::into),
                value: value.into(),
                negated,
            })
            .collect(),
    })
}

fn and(left: EventExpr, right: EventExpr) -> EventExpr {
    EventExpr::And(Box::new(left), Box::new(right))
}

fn or(left: EventExpr, right: EventExpr) -> EventExpr {
    EventExpr::Or(Box::new(left), Box::new(right))
}

fn exec(command: &str) -> Option<Process> {
    Some(Process::Exec {
        command: command.into(),
    })
}

fn script(body: &str) -> Option<Process> {
    Some(Process::Script {
        interpreter: vec![],
        body: body.into(),
    })
}

/// Every invalid form: text, and its errors as `LINE:COL: MESSAGE`.
const INVALID: &[(&str, &[&str])] = &[
    // Stanza names.
    ("decription \"x\"\n", &["1:1: unknown stanza: decription"]),
    ("\"exec\" foo\n", &["1:1: unknown stanza: \"exec\""]),
    ("  end script\n", &["1:3: unknown stanza: end"]),
    // Text stanzas.
    (
        "description \"\"\n",
        &["1:13: expected text after description (an empty quoted string is no argument)"],
    ),
    ("description\n", &["1:12: expected text after description"]),
    (
        "description # c\n",
        &["1:13: expected text after description"],
    ),
    (
        "description a b\n",
        &["1:15: unexpected argument to description: b"],
    ),
    (
        "description \"abc\nexec foo\n",
        &["1:13: unterminated quoted string"],
    ),
    ("author\n", &["1:7: expected text after author"]),
    ("version\n", &["1:8: expected text after version"]),
    ("usage\n", &["1:6: expected text after usage"]),
    (
        "instance\n",
        &["1:9: expected instance name after instance"],
    ),
    ("emits\n", &["1:6: expected event name after emits"]),
    // Environment.
    ("env\n", &["1:4: expected KEY[=VALUE] after env"]),
    ("env =x\n", &["1:5: expected variable name before '='"]),
    ("env A=1 B=2\n", &["1:9: unexpected argument to env: B=2"]),
    ("export\n", &["1:7: expected variable name after export"]),
    // Events.
    ("start\n", &["1:6: expected 'on' after start"]),
    (
        "start at foo\n",
        &["1:7: unknown argument to start: at (expected 'on')"],
    ),
    (
        "stop in foo\n",
        &["1:6: unknown argument to stop: in (expected 'on')"],
    ),
    ("start on\n", &["1:9: expected event"]),
    ("start on # nothing\n", &["1:10: expected event"]),
    ("start on and foo\n", &["1:10: expected event before 'and'"]),
    ("start on foo and\n", &["1:17: expected event after 'and'"]),
    (
        "start on foo and or bar\n",
        &["1:18: expected event after 'and', found 'or'"],
    ),
    ("start on (foo\n", &["1:10: unclosed '('"]),
    ("start on (a or (b)\n", &["1:10: unclosed '('"]),
    ("start on foo)\n", &["1:13: unmatched ')'"]),
    ("start on ()\n", &["1:11: expected event before ')'"]),
    (
        "start on (a or)\n",
        &["1:15: expected event after 'or', found ')'"],
    ),
    ("start on (a) b\n", &["1:14: expected operator before 'b'"]),
    ("start on a (b)\n", &["1:12: expected operator before '('"]),
    (
        "start on (a) (b)\n",
        &["1:14: expected operator before '('"],
    ),
    (
        "start on a X=1 y\n",
        &["1:16: expected KEY=VALUE, found 'y' (positional values come before KEY=VALUE ones)"],
    ),
    (
        "start on a \"\"\n",
        &["1:12: expected event, found an empty string"],
    ),
    ("start on \"a\n", &["1:10: unterminated quoted string"]),
    // A line with only blanks or a comment inside parentheses: Upstart refuses it.
    ("start on (a or\n\n  b)\nexec x\n", &["2:1: expected event"]),
    (
        "start on (a or # one\n   # two\n   b)\n",
        &["2:4: expected event"],
    ),
    // An error inside parentheses skips the rest of the expression, not more.
    (
        "start on (a and and\n   b)\nexec foo\nexpect WHAT\n",
        &[
            "1:17: expected event after 'and', found 'and'",
            "4:8: unknown argument to expect: WHAT (expected fork, daemon, stop, none, notify, fd, listen or dbus)",
        ],
    ),
    // Without parentheses an expression ends with its line.
    (
        "start on a or\n  b\n",
        &["1:14: expected event after 'or'", "2:3: unknown stanza: b"],
    ),
    // Processes.
    ("exec\n", &["1:5: expected command after exec"]),
    ("exec # nothing\n", &["1:6: expected command after exec"]),
    ("exec foo \\", &["1:10: backslash at the end of the file"]),
    ("exec 'foo\n", &["1:6: unterminated quoted string"]),
    (
        "script\necho hi\n",
        &["1:1: script without an 'end script' line"],
    ),
    (
        "script\necho hi\nend script x\n",
        &["1:1: script without an 'end script' line"],
    ),
    ("script \"x\n", &["1:8: unterminated quoted string"]),
    (
        "pre-start\n",
        &["1:10: expected 'exec' or 'script' after pre-start"],
    ),
    (
        "post-stop run foo\n",
        &["1:11: unknown argument to post-stop: run (expected 'exec' or 'script')"],
    ),
    (
        "pre-stop exec\n",
        &["1:14: expected command after pre-stop"],
    ),
    (
        "post-start script\n  echo\n",
        &["1:12: script without an 'end script' line"],
    ),
    // Readiness.
    (
        "expect WHAT\n",
        &[
            "1:8: unknown argument to expect: WHAT (expected fork, daemon, stop, none, notify, fd, listen or dbus)",
        ],
    ),
    (
        "expect #TODO\n",
        &[
            "1:8: expected readiness after expect (fork, daemon, stop, none, notify, fd N, listen, dbus NAME)",
        ],
    ),
    (
        "expect fork now\n",
        &["1:13: unexpected argument to expect: now"],
    ),
    (
        "expect fd\n",
        &["1:10: expected file descriptor number after expect fd"],
    ),
    (
        "expect fd 2\n",
        &["1:11: illegal file descriptor: 2 (expected 3 or more)"],
    ),
    (
        "expect fd x\n",
        &["1:11: illegal file descriptor (3 or more): x"],
    ),
    (
        "expect dbus\n",
        &["1:12: expected bus name after expect dbus"],
    ),
    ("ready\n", &["1:6: expected 'timeout' after ready"]),
    (
        "ready set\n",
        &["1:7: unknown argument to ready: set (expected 'timeout')"],
    ),
    (
        "ready timeout 0\n",
        &["1:15: illegal ready timeout: 0 (expected seconds, 1 or more)"],
    ),
    (
        "ready timeout x\n",
        &["1:15: illegal ready timeout (seconds, 1 or more): x"],
    ),
    // Lifecycle.
    ("task now\n", &["1:6: unexpected argument to task: now"]),
    ("manual now\n", &["1:8: unexpected argument to manual: now"]),
    ("debug on\n", &["1:7: unexpected argument to debug: on"]),
    (
        "respawn forever\n",
        &["1:9: unknown argument to respawn: forever (expected 'limit')"],
    ),
    (
        "respawn limit\n",
        &["1:14: expected COUNT or 'unlimited' after respawn limit"],
    ),
    (
        "respawn limit 5\n",
        &["1:16: expected INTERVAL after respawn limit COUNT"],
    ),
    ("respawn limit x 5\n", &["1:15: illegal respawn count: x"]),
    ("respawn limit -1 5\n", &["1:15: illegal respawn count: -1"]),
    (
        "respawn limit 5 y\n",
        &["1:17: illegal respawn interval (seconds): y"],
    ),
    (
        "respawn limit 5 5 5\n",
        &["1:19: unexpected argument to respawn limit: 5"],
    ),
    (
        "respawn limit unlimited 5\n",
        &["1:25: unexpected argument to respawn limit: 5"],
    ),
    ("normal\n", &["1:7: expected 'exit' after normal"]),
    (
        "normal stop 0\n",
        &["1:8: unknown argument to normal: stop (expected 'exit')"],
    ),
    (
        "normal exit\n",
        &["1:12: expected exit status or signal after normal exit"],
    ),
    (
        "normal exit 0 256\n",
        &["1:15: illegal exit status: 256 (expected 0 to 255 or a signal name)"],
    ),
    (
        "normal exit FOO\n",
        &["1:13: illegal exit status: FOO (expected 0 to 255 or a signal name)"],
    ),
    (
        "normal exit -1\n",
        &["1:13: illegal exit status: -1 (expected 0 to 255 or a signal name)"],
    ),
    (
        "kill\n",
        &["1:5: expected 'timeout' or 'signal' after kill"],
    ),
    (
        "kill now\n",
        &["1:6: unknown argument to kill: now (expected 'timeout' or 'signal')"],
    ),
    (
        "kill timeout\n",
        &["1:13: expected seconds after kill timeout"],
    ),
    (
        "kill timeout -1\n",
        &["1:14: illegal kill timeout (seconds): -1"],
    ),
    (
        "kill timeout 1.5\n",
        &["1:14: illegal kill timeout (seconds): 1.5"],
    ),
    (
        "kill signal\n",
        &["1:12: expected signal after kill signal"],
    ),
    ("kill signal FOO\n", &["1:13: unknown signal: FOO"]),
    (
        "kill signal 65\n",
        &["1:13: illegal signal: 65 (expected a name or 0 to 64)"],
    ),
    ("kill signal term\n", &["1:13: unknown signal: term"]),
    ("reload\n", &["1:7: expected 'signal' after reload"]),
    (
        "reload now\n",
        &["1:8: unknown argument to reload: now (expected 'signal')"],
    ),
    (
        "reload signal\n",
        &["1:14: expected signal after reload signal"],
    ),
    // Process environment.
    (
        "console\n",
        &["1:8: expected none, log, output or owner after console"],
    ),
    (
        "console logged\n",
        &["1:9: unknown argument to console: logged (expected none, log, output or owner)"],
    ),
    ("umask\n", &["1:6: expected octal mask after umask"]),
    (
        "umask 888\n",
        &["1:7: illegal umask: 888 (expected octal 000 to 777)"],
    ),
    (
        "umask 1000\n",
        &["1:7: illegal umask: 1000 (expected octal 000 to 777)"],
    ),
    (
        "umask +22\n",
        &["1:7: illegal umask: +22 (expected octal 000 to 777)"],
    ),
    ("nice\n", &["1:5: expected priority after nice"]),
    (
        "nice 20\n",
        &["1:6: illegal nice value: 20 (expected -20 to 19)"],
    ),
    (
        "nice -21\n",
        &["1:6: illegal nice value: -21 (expected -20 to 19)"],
    ),
    ("nice x\n", &["1:6: illegal nice value (-20 to 19): x"]),
    ("oom\n", &["1:4: expected 'score' after oom"]),
    (
        "oom score\n",
        &["1:10: expected score or 'never' after oom score"],
    ),
    (
        "oom score 1001\n",
        &["1:11: illegal oom score: 1001 (expected -1000 to 1000 or never)"],
    ),
    (
        "oom score x\n",
        &["1:11: illegal oom score (-1000 to 1000 or never): x"],
    ),
    (
        "oom 16\n",
        &["1:5: illegal oom adjustment: 16 (expected -17 to 15 or never)"],
    ),
    (
        "oom high\n",
        &["1:5: illegal oom adjustment (-17 to 15 or never): high"],
    ),
    ("limit\n", &["1:6: expected resource after limit"]),
    (
        "limit files 1 2\n",
        &["1:7: unknown resource for limit: files"],
    ),
    (
        "limit nofile\n",
        &["1:13: expected soft and hard values after limit nofile"],
    ),
    (
        "limit nofile 65536\n",
        &[
            "1:19: expected hard value after limit nofile SOFT (limit needs a soft and a hard value)",
        ],
    ),
    (
        "limit nofile x 1\n",
        &["1:14: illegal limit: x (expected a number or 'unlimited')"],
    ),
    (
        "limit nofile 1 -1\n",
        &["1:16: illegal limit: -1 (expected a number or 'unlimited')"],
    ),
    (
        "limit nofile 1 2 3\n",
        &["1:18: unexpected argument to limit: 3"],
    ),
    ("chroot\n", &["1:7: expected directory after chroot"]),
    ("chdir\n", &["1:6: expected directory after chdir"]),
    ("setuid\n", &["1:7: expected user name after setuid"]),
    ("setgid\n", &["1:7: expected group name after setgid"]),
    (
        "apparmor\n",
        &["1:9: expected 'load' or 'switch' after apparmor"],
    ),
    (
        "apparmor unload x\n",
        &["1:10: unknown argument to apparmor: unload (expected 'load' or 'switch')"],
    ),
    (
        "apparmor load\n",
        &["1:14: expected profile after apparmor load"],
    ),
    (
        "apparmor switch\n",
        &["1:16: expected profile after apparmor switch"],
    ),
    ("cgroup\n", &["1:7: expected controller after cgroup"]),
    (
        "cgroup a b c d e\n",
        &["1:16: unexpected argument to cgroup: e"],
    ),
    // keel's stanzas.
    (
        "capabilities\n",
        &["1:13: expected capability names or 'none' after capabilities"],
    ),
    (
        "capabilities fly\nexpect WHAT\n",
        &[
            "1:14: unknown capability: fly",
            "2:8: unknown argument to expect: WHAT (expected fork, daemon, stop, none, notify, fd, listen or dbus)",
        ],
    ),
    (
        "emits a \"b\nexec x\n",
        &["1:9: unterminated quoted string"],
    ),
    (
        "capabilities none net_admin\n",
        &["1:19: unexpected argument to capabilities none: net_admin"],
    ),
    ("no\n", &["1:3: expected 'new privileges' after no"]),
    (
        "no old privileges\n",
        &["1:4: unknown stanza: no old (expected 'no new privileges')"],
    ),
    ("no new\n", &["1:7: expected 'new privileges' after no"]),
    (
        "no new privileges please\n",
        &["1:19: unexpected argument to no new privileges: please"],
    ),
    // Bytes no job file should hold.
    ("description a\0b\n", &["1:14: NUL byte in job file"]),
];

#[test]
fn every_invalid_form_has_its_exact_position_and_message() {
    let mut wrong = Vec::new();
    for &(text, expected) in INVALID {
        let got = errors(text);
        if got != expected {
            wrong.push(format!(
                "{text:?}\n   expected {expected:?}\n   got      {got:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_rejected_corpus_quirks_match_upstart() {
    // speech-dispatcher.conf: the empty description fails first; keel goes on
    // and also names the bad expect.
    let text = "description \"\"\n\nstart on filesystem\n\nexpect WHAT\nrespawn\n";
    let got = errors(text);
    assert_eq!(got.len(), 2);
    assert!(got[0].starts_with("1:13: "));
    assert!(got[1].starts_with("5:8: "));
}

#[test]
fn text_stanzas_take_one_argument_last_one_wins() {
    let def = ok("description \"first\"\ndescription 'Second one' # why\n\
                  author  Jane\\ Doe\nversion 1.0\nusage \"KEY - a \\\n     value\"\n");
    assert_eq!(def.description.as_deref(), Some("Second one"));
    assert_eq!(def.author.as_deref(), Some("Jane Doe"));
    assert_eq!(def.version.as_deref(), Some("1.0"));
    assert_eq!(def.usage.as_deref(), Some("KEY - a value"));
    assert_eq!(def.name, "test");
}

#[test]
fn quoting_and_escapes_in_arguments() {
    let description = |text: &str| ok(text).description.unwrap();
    assert_eq!(
        description("description \"a \\\"b\\\" c\"\n"),
        "a \\\"b\\\" c"
    );
    assert_eq!(description("description 'a \"b\" c'\n"), "a \"b\" c");
    assert_eq!(description("description x\"y z\"'#'\n"), "xy z#");
    assert_eq!(description("description a\\\\b\n"), "a\\b");
    assert_eq!(description("description \"  spaced  \"\n"), "  spaced  ");
    assert_eq!(
        description("description \"over\n   two lines\"\n"),
        "over two lines"
    );
    assert_eq!(description("description \\\n   continued\n"), "continued");
    assert_eq!(description("description \"é ü\" \n"), "é ü");
}

#[test]
fn comments_blank_lines_and_crlf() {
    let def = ok(
        "# a comment\n\n   \t\n  # indented comment\ndescription x # trailing\r\n\
                  exec /bin/foo \"#not a comment\" # a comment\r\n",
    );
    assert_eq!(def.description.as_deref(), Some("x"));
    assert_eq!(def.main, exec("/bin/foo \"#not a comment\""));
    assert_eq!(ok("").main, None);
    assert_eq!(ok("\n\n# only comments").description, None);
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_eq!(
        errors("description \"éé\" x\n"),
        ["1:18: unexpected argument to description: x"]
    );
}

#[test]
fn env_export_and_emits_add_up() {
    let def = ok("env A=1\nenv B\nenv C=\"x y\"\nenv D=e=f\nenv A=2\n\
                  export A B\nexport C\nemits up down\nemits *-device-added\n");
    let env: Vec<(&str, Option<&str>)> = def
        .env
        .iter()
        .map(|v| (v.key.as_str(), v.value.as_deref()))
        .collect();
    assert_eq!(
        env,
        [
            ("A", Some("1")),
            ("B", None),
            ("C", Some("x y")),
            ("D", Some("e=f")),
            ("A", Some("2"))
        ]
    );
    assert_eq!(def.export, ["A", "B", "C"]);
    assert_eq!(def.emits, ["up", "down", "*-device-added"]);
    assert_eq!(ok("instance $TTY\n").instance.as_deref(), Some("$TTY"));
}

#[test]
fn and_and_or_have_equal_precedence_from_the_left() {
    let on = |text: &str| ok(&format!("start on {text}\n")).start_on.unwrap();
    assert_eq!(
        on("a or b and c"),
        and(or(event("a"), event("b")), event("c"))
    );
    assert_eq!(
        on("a and b or c"),
        or(and(event("a"), event("b")), event("c"))
    );
    assert_eq!(
        on("a or (b and c)"),
        or(event("a"), and(event("b"), event("c")))
    );
    assert_eq!(on("((a))"), event("a"));
    assert_eq!(
        on("a or b or c"),
        or(or(event("a"), event("b")), event("c"))
    );
}

#[test]
fn event_arguments() {
    let on = |text: &str| ok(&format!("start on {text}\n")).start_on.unwrap();
    assert_eq!(
        on("runlevel [2345]"),
        event_with("runlevel", &[(None, "[2345]", false)])
    );
    assert_eq!(
        on("runlevel [!2345]"),
        event_with("runlevel", &[(None, "[!2345]", false)])
    );
    assert_eq!(
        on("net-device-up IFACE!=lo"),
        event_with("net-device-up", &[(Some("IFACE"), "lo", true)])
    );
    assert_eq!(
        on("started JOB=$JOB INSTANCE=\"$INSTANCE\""),
        event_with(
            "started",
            &[
                (Some("JOB"), "$JOB", false),
                (Some("INSTANCE"), "$INSTANCE", false)
            ]
        )
    );
    assert_eq!(
        on("e a b K=v*"),
        event_with(
            "e",
            &[
                (None, "a", false),
                (None, "b", false),
                (Some("K"), "v*", false)
            ]
        )
    );
    // Upstart looks for `!=` before `=`.
    assert_eq!(on("e A=b!=c"), event_with("e", &[(Some("A=b"), "c", true)]));
    // Quoted operators are words.
    assert_eq!(
        on("e \"and\" 'or'"),
        event_with("e", &[(None, "and", false), (None, "or", false)])
    );
    // Parentheses end words.
    assert_eq!(
        on("(a x)or(b)"),
        or(event_with("a", &[(None, "x", false)]), event("b"))
    );
}

#[test]
fn event_expressions_continue_over_lines_inside_parentheses() {
    let text = "start on runlevel [23] and (\n            not-container or # comment\n\
                \\\n            container CONTAINER=lxc or\n\
                container CONTAINER=lxc-libvirt)\n\nstop on runlevel [!23]\n";
    let def = ok(text);
    assert_eq!(
        def.start_on.unwrap(),
        and(
            event_with("runlevel", &[(None, "[23]", false)]),
            or(
                or(
                    event("not-container"),
                    event_with("container", &[(Some("CONTAINER"), "lxc", false)])
                ),
                event_with("container", &[(Some("CONTAINER"), "lxc-libvirt", false)])
            )
        )
    );
    assert_eq!(
        def.stop_on.unwrap(),
        event_with("runlevel", &[(None, "[!23]", false)])
    );
    // A continuation joins lines outside parentheses too.
    assert_eq!(
        ok("start on a \\\n   or b\n").start_on.unwrap(),
        or(event("a"), event("b"))
    );
}

#[test]
fn parenthesis_depth_is_bounded() {
    let deep = |n: usize| format!("start on {}a{}\n", "(".repeat(n), ")".repeat(n));
    assert_eq!(ok(&deep(MAX_PAREN_DEPTH)).start_on.unwrap(), event("a"));
    let col = 10 + MAX_PAREN_DEPTH;
    assert_eq!(
        errors(&deep(MAX_PAREN_DEPTH + 1)),
        [format!("1:{col}: parentheses nested more than 64 deep")]
    );
}

#[test]
fn expression_size_is_bounded() {
    let events = |n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
        format!("start on {}\n", names.join(" or "))
    };
    assert!(ok(&events(MAX_EXPRESSION_EVENTS)).start_on.is_some());
    let got = errors(&events(MAX_EXPRESSION_EVENTS + 1));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].ends_with("more than 512 events in one expression"),
        "{got:?}"
    );
}

#[test]
fn manual_discards_the_start_on_before_it() {
    let def = ok("start on startup\nmanual\n");
    assert!(def.manual);
    assert_eq!(def.start_on, None);
    let def = ok("manual\nstart on startup\n");
    assert!(!def.manual);
    assert_eq!(def.start_on, Some(event("startup")));
}

#[test]
fn exec_keeps_the_command_as_written() {
    assert_eq!(
        ok("exec /sbin/getty -8 38400 tty2\n").main,
        exec("/sbin/getty -8 38400 tty2")
    );
    assert_eq!(
        ok("exec   foo  \"a  b\"   'c'   # comment\n").main,
        exec("foo  \"a  b\"   'c'")
    );
    assert_eq!(
        ok("exec foo \\\n     --bar \\\n     --baz\n").main,
        exec("foo --bar --baz")
    );
    assert_eq!(ok("exec foo \"x\n   y\"\n").main, exec("foo \"x y\""));
    assert_eq!(
        ok("exec echo \\$HOME \\\\ \\# x\n").main,
        exec("echo \\$HOME \\\\ \\# x")
    );
    assert_eq!(ok("exec a\nexec b\n").main, exec("b"));
}

#[test]
fn scripts_end_at_an_end_script_line_only() {
    // Look-alikes stay in the body; quotes mean nothing inside a block.
    let def = ok(
        "script\n    echo end script\n    # end script\n    x=\"\n    end script\"\n\
                  \x20 end scripts\n\tend script # done\ntask\n",
    );
    assert_eq!(
        def.main,
        script("  echo end script\n  # end script\n  x=\"\n  end script\"\nend scripts\n")
    );
    assert!(def.task);
    // `end script` outside a block is no stanza (and opens no block).
    assert_eq!(
        errors("end script\nend script\n"),
        ["1:1: unknown stanza: end", "2:1: unknown stanza: end"]
    );
}

#[test]
fn script_indentation_and_comments() {
    assert_eq!(
        ok("script # main\n\tif true; then\n\t\techo \"hi\"\n\tfi\nend script\n").main,
        script("if true; then\n\techo \"hi\"\nfi\n")
    );
    // An empty line keeps all indentation (libnih's rule).
    assert_eq!(
        ok("script\n  a\n\n  b\nend script\n").main,
        script("  a\n\n  b\n")
    );
    assert_eq!(ok("script\nend script").main, script(""));
    assert_eq!(ok("script\nexec a\nend script\nexec b\n").main, exec("b"));
    assert_eq!(ok("exec b\nscript\n  x\nend script\n").main, script("x\n"));
}

#[test]
fn process_stanzas_take_exec_or_script() {
    let def = ok(
        "pre-start exec /bin/a\npost-start script\n  b\nend script\n\
                  pre-stop exec c \\\n  d\npost-stop script # x\nend script\n",
    );
    assert_eq!(def.pre_start, exec("/bin/a").map(Box::new));
    assert_eq!(def.post_start, script("b\n").map(Box::new));
    assert_eq!(def.pre_stop, exec("c d").map(Box::new));
    assert_eq!(def.post_stop, script("").map(Box::new));
    assert_eq!(def.main, None);
    for kind in ProcessKind::ALL {
        assert_eq!(def.process(kind).is_some(), kind != ProcessKind::Main);
    }
}

#[test]
fn scripts_may_name_their_interpreter() {
    let def = ok("script /bin/bash -eu\n  set -o pipefail\nend script\n\
                  pre-start script \"/usr/bin/env\" python3 # keel\nprint(1)\nend script\n");
    assert_eq!(
        def.main,
        Some(Process::Script {
            interpreter: vec!["/bin/bash".into(), "-eu".into()],
            body: "set -o pipefail\n".into()
        })
    );
    assert_eq!(
        def.pre_start.as_deref(),
        Some(&Process::Script {
            interpreter: vec!["/usr/bin/env".into(), "python3".into()],
            body: "print(1)\n".into()
        })
    );
}

#[test]
fn exec_argv_follows_upstarts_shell_characters() {
    let argv = |command: &str| {
        Process::Exec {
            command: command.into(),
        }
        .exec_argv()
    };
    assert_eq!(
        argv("/sbin/getty -8\t38400  tty2"),
        Some(vec![
            "/sbin/getty".into(),
            "-8".into(),
            "38400".into(),
            "tty2".into()
        ])
    );
    for shell in [
        "a $B", "a > b", "a=b c", "a 'b'", "a \"b\"", "a; b", "a | b", "a && b", "~/a", "a `b`",
        "a [x]", "a {x}", "a \\ b", "a ?", "a !", "a ^", "a *", "a (b)", "a < b",
    ] {
        assert_eq!(argv(shell), None, "{shell}");
    }
    let script = Process::Script {
        interpreter: vec![],
        body: "a\n".into(),
    };
    assert_eq!(script.exec_argv(), None);
}

#[test]
fn readiness() {
    let expect = |text: &str| ok(&format!("expect {text}\n")).expect;
    assert_eq!(expect("fork"), Expect::Fork);
    assert_eq!(expect("daemon"), Expect::Daemon);
    assert_eq!(expect("stop"), Expect::Stop);
    assert_eq!(expect("none"), Expect::None);
    assert_eq!(expect("\"fork\""), Expect::Fork);
    assert_eq!(expect("notify"), Expect::Notify);
    assert_eq!(expect("fd 3"), Expect::Fd(3));
    assert_eq!(expect("listen"), Expect::Listen);
    assert_eq!(
        expect("dbus org.freedesktop.NetworkManager"),
        Expect::Dbus("org.freedesktop.NetworkManager".into())
    );
    assert_eq!(ok("expect fork\nexpect none\n").expect, Expect::None);
    assert_eq!(ok("ready timeout 30\n").ready_timeout, Some(30));
}

#[test]
fn lifecycle_stanzas() {
    let def = ok(
        "task\nrespawn\nrespawn limit 5 30\nnormal exit 0 1 TERM\nnormal exit SIGHUP\n\
                  kill timeout 30\nkill signal INT\nreload signal USR1\n",
    );
    assert!(def.task && def.respawn);
    assert_eq!(
        def.respawn_limit,
        RespawnLimit::Limit {
            count: 5,
            interval: 30
        }
    );
    assert_eq!(
        def.normal_exit,
        [
            ExitMatch::Status(0),
            ExitMatch::Status(1),
            ExitMatch::Signal(Signal::TERM),
            ExitMatch::Signal(Signal::HUP)
        ]
    );
    assert_eq!(def.kill_timeout, 30);
    assert_eq!(def.kill_signal, Signal::INT);
    assert_eq!(def.reload_signal, Signal(10));
    // `respawn limit` alone does not turn respawning on.
    let def = ok("respawn limit unlimited\n");
    assert!(!def.respawn);
    assert_eq!(def.respawn_limit, RespawnLimit::Unlimited);
    // Defaults.
    let def = ok("");
    assert_eq!(
        (def.kill_signal, def.kill_timeout, def.reload_signal),
        (Signal::TERM, 5, Signal::HUP)
    );
    assert_eq!(
        def.respawn_limit,
        RespawnLimit::Limit {
            count: 10,
            interval: 5
        }
    );
    assert_eq!(def.console, Console::Log);
    // Signal spellings; 0 is used in practice.
    for (text, number) in [
        ("SIGKILL", 9),
        ("9", 9),
        ("KILL", 9),
        ("0", 0),
        ("IOT", 6),
        ("64", 64),
    ] {
        assert_eq!(
            ok(&format!("kill signal {text}\n")).kill_signal,
            Signal(number)
        );
    }
    assert_eq!(ok("reload signal 0\n").reload_signal, Signal(0));
    assert_eq!(ok("kill timeout 0\n").kill_timeout, 0);
}

#[test]
fn process_environment_stanzas() {
    let def = ok(
        "console output\numask 027\nnice -5\noom score -900\nchroot /srv\nchdir /var/run\n\
                  setuid nobody\nsetgid nogroup\nlimit nofile 1024 4096\nlimit core unlimited unlimited\n\
                  limit nofile 10 20\nlimit rttime 1 2\n",
    );
    assert_eq!(def.console, Console::Output);
    assert_eq!(def.umask, Some(0o27));
    assert_eq!(def.nice, Some(-5));
    assert_eq!(def.oom_score, Some(OomScore::Adj(-900)));
    assert_eq!(def.chroot.as_deref(), Some("/srv"));
    assert_eq!(def.chdir.as_deref(), Some("/var/run"));
    assert_eq!(def.setuid.as_deref(), Some("nobody"));
    assert_eq!(def.setgid.as_deref(), Some("nogroup"));
    assert_eq!(
        def.limits,
        [
            Limit {
                resource: Resource::Nofile,
                soft: LimitValue::Value(10),
                hard: LimitValue::Value(20)
            },
            Limit {
                resource: Resource::Core,
                soft: LimitValue::Unlimited,
                hard: LimitValue::Unlimited
            },
            Limit {
                resource: Resource::Rttime,
                soft: LimitValue::Value(1),
                hard: LimitValue::Value(2)
            },
        ]
    );
    for (text, console) in [
        ("none", Console::None),
        ("log", Console::Log),
        ("owner", Console::Owner),
    ] {
        assert_eq!(ok(&format!("console {text}\n")).console, console);
    }
    assert_eq!(ok("umask 0\n").umask, Some(0));
    assert_eq!(ok("umask 0777\n").umask, Some(0o777));
    assert_eq!(ok("nice 19\n").nice, Some(19));
    for (text, score) in [
        ("score never", OomScore::Never),
        ("never", OomScore::Never),
        ("score 1000", OomScore::Adj(1000)),
        ("-17", OomScore::Adj(-1000)),
        ("15", OomScore::Adj(1000)),
        ("10", OomScore::Adj(666)),
        ("-5", OomScore::Adj(-294)),
    ] {
        assert_eq!(
            ok(&format!("oom {text}\n")).oom_score,
            Some(score),
            "oom {text}"
        );
    }
}

#[test]
fn security_stanzas() {
    let def = ok(
        "apparmor load /etc/apparmor.d/usr.sbin.ntpd\napparmor switch /usr/sbin/ntpd\n\
                  cgroup memory\ncgroup cpu mygroup\ncgroup memory memory.limit_in_bytes 52428800\n\
                  cgroup cpuset $UPSTART_CGROUP cpuset.cpus 0\ndebug\n",
    );
    assert_eq!(
        def.apparmor_load.as_deref(),
        Some("/etc/apparmor.d/usr.sbin.ntpd")
    );
    assert_eq!(def.apparmor_switch.as_deref(), Some("/usr/sbin/ntpd"));
    let cgroup = |c: &str, n: Option<&str>, s: Option<(&str, &str)>| Cgroup {
        controller: c.into(),
        name: n.map(Into::into),
        setting: s.map(|(k, v)| (k.into(), v.into())),
    };
    assert_eq!(
        def.cgroups,
        [
            cgroup("memory", None, None),
            cgroup("cpu", Some("mygroup"), None),
            cgroup("memory", None, Some(("memory.limit_in_bytes", "52428800"))),
            cgroup(
                "cpuset",
                Some("$UPSTART_CGROUP"),
                Some(("cpuset.cpus", "0"))
            ),
        ]
    );
    assert!(def.debug);
}

#[test]
fn keel_hardening_stanzas() {
    let def = ok(
        "capabilities net_bind_service CAP_SYS_ADMIN\ncapabilities cap_net_raw net_bind_service\n\
                  no new privileges\n",
    );
    assert_eq!(
        def.capabilities,
        Some(vec![
            "net_bind_service".into(),
            "sys_admin".into(),
            "net_raw".into()
        ])
    );
    assert!(def.no_new_privileges);
    assert_eq!(
        ok("capabilities chown\ncapabilities none\n").capabilities,
        Some(vec![])
    );
    assert_eq!(
        ok("capabilities none\ncapabilities kill\n").capabilities,
        Some(vec!["kill".into()])
    );
    assert_eq!(ok("").capabilities, None);
    assert_eq!(CAPABILITIES.len(), 41);
}

#[test]
fn errors_recover_at_the_next_line_and_every_problem_is_named() {
    let text = "decription x\nexec /bin/foo\nexpect WHAT\nrespawn\nlimit nofile 1\n";
    assert_eq!(
        errors(text),
        [
            "1:1: unknown stanza: decription",
            "3:8: unknown argument to expect: WHAT (expected fork, daemon, stop, none, notify, fd, listen or dbus)",
            "5:15: expected hard value after limit nofile SOFT (limit needs a soft and a hard value)",
        ]
    );
}

#[test]
fn a_broken_line_that_opened_a_script_skips_the_block() {
    let text = "pre-strat script\n  if x; then\n    y\n  fi\nend script\nexec foo\nexpect WHAT\n";
    let got = errors(text);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], "1:1: unknown stanza: pre-strat");
    assert!(got[1].starts_with("7:8: "));
    // `pre-start` without `script`, followed by script lines (motd.conf).
    let text = "pre-start\n\tif test -d x; then\n\t\tstop\n\tfi\nend script\nexec foo\n";
    assert_eq!(
        errors(text),
        ["1:10: expected 'exec' or 'script' after pre-start"]
    );
    // …but not when a stanza follows: then nothing is skipped.
    let text = "pre-start\nexec foo\nscript\n  x\nend script\ntask now\n";
    assert_eq!(
        errors(text),
        [
            "1:10: expected 'exec' or 'script' after pre-start",
            "6:6: unexpected argument to task: now"
        ]
    );
}

#[test]
fn warnings_name_stanzas_not_carried_out() {
    let samples: &[(&str, &str)] = &[
        ("apparmor load", "apparmor load x"),
        ("expect dbus", "expect dbus a.b"),
        ("expect listen", "expect listen"),
        ("debug", "debug"),
    ];
    for key in NOT_CARRIED_OUT {
        let (_, sample) = samples
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no sample for {key}"));
        let text = format!("  {sample}\n");
        assert_eq!(
            warnings(&text),
            [format!("1:3: {key} is parsed but not carried out yet")]
        );
        assert!(parsed(&text).def.is_some(), "warnings are no errors");
    }
    for quiet in [
        "apparmor switch x",
        "cgroup memory",
        "limit nofile 1 2",
        "chroot /x",
        "setuid x",
        "setgid x",
        "capabilities kill",
        "no new privileges",
        "oom never",
        "nice 1",
        "umask 022",
        "expect none",
        "expect stop",
        "expect fork",
        "expect daemon",
        "expect fd 3",
        "expect notify",
        "expect listen",
        "expect dbus org.example.X",
        "respawn",
        "console none",
        "usage x",
        "kill signal 9",
        "env A=1",
        "ready timeout 1",
        "chdir /",
        "task",
        "manual",
    ] {
        assert_eq!(
            warnings(&format!("{quiet}\n")),
            Vec::<String>::new(),
            "{quiet}"
        );
    }
}

#[test]
fn diagnostics_render_as_file_line_col() {
    let parsed = parsed("description ok\nexpect WHAT\ndebug\n");
    let rendered: Vec<String> = parsed
        .diagnostics
        .iter()
        .map(|d| d.render("job.conf"))
        .collect();
    assert_eq!(
        rendered,
        [
            "job.conf:2:8: error: unknown argument to expect: WHAT (expected fork, daemon, stop, none, notify, fd, listen or dbus)",
            "job.conf:3:1: warning: debug is parsed but not carried out yet",
        ]
    );
}

#[test]
fn oversized_files_are_refused_whole() {
    let text = "#".repeat(MAX_JOB_FILE_BYTES + 1);
    assert_eq!(errors(&text), ["1:1: job file larger than 1048576 bytes"]);
}

#[test]
fn render_writes_only_what_differs_from_the_default() {
    assert_eq!(render(&JobDef::new("x")), "");
    let def = ok("exec /bin/foo\nstart on a or b and (c or d)\nrespawn\ndescription \"The job\"\n");
    assert_eq!(
        render(&def),
        "description \"The job\"\nstart on a or b and (c or d)\nrespawn\nexec /bin/foo\n"
    );
}

#[test]
fn render_quotes_what_needs_it() {
    use super::show::quote;
    for word in [
        "plain", "", "a b", "\"", "'", "a\"b'c", "\\", "a\\\"b", "#x", "(", ")", "and", "or",
        "\t x \r", "é", "$VAR", "[2345]",
    ] {
        let text = format!("description {}\n", quote(word));
        if word.is_empty() {
            continue;
        }
        assert_eq!(ok(&text).description.as_deref(), Some(word), "{text:?}");
        let text = format!("start on {}\n", quote(word));
        assert_eq!(ok(&text).start_on, Some(event(word)), "{text:?}");
    }
    assert_eq!(quote("plain"), "plain");
    assert_eq!(quote("and"), "\"and\"");
}

#[test]
fn render_round_trips_every_stanza() {
    let text = "description \"A \\\"quoted\\\" job\"\nauthor 'Jane \"JD\" Doe'\nversion 1\nusage \"X - y\"\n\
        emits a b\ninstance $TTY\nstart on runlevel [2345] and (net-device-up IFACE!=lo or x \"and\" Y=\"a b\")\n\
        stop on runlevel [!2345]\nenv A=1\nenv B\nenv C=\"x y#\"\nexport A B\ntask\nrespawn\nrespawn limit 3 7\n\
        normal exit 0 TERM 2\nexpect fd 4\nready timeout 9\nkill signal 0\nkill timeout 0\nreload signal USR2\n\
        console owner\numask 0\nnice -20\noom score never\nchroot /a\nchdir \"/b c\"\nsetuid u\nsetgid g\n\
        limit nofile 1 unlimited\nlimit as 2 3\ncgroup cpu\ncgroup a b\ncgroup a b c\ncgroup a b c d\n\
        apparmor load p\napparmor switch q\ncapabilities kill chown\nno new privileges\ndebug\n\
        exec /bin/foo \"a  b\" \\$X # c\npre-start script /bin/bash -e\n  echo 'end script'\n\n  x\nend script\n\
        post-start exec a\npre-stop script\nend script\npost-stop exec \"b\"\n";
    let def = ok(text);
    let rendered = render(&def);
    assert_eq!(ok(&rendered), def, "{rendered}");
    assert_eq!(render(&ok(&rendered)), rendered);
    for def in [
        ok("manual\n"),
        ok("capabilities none\n"),
        ok("respawn limit unlimited\n"),
        ok("oom score 5\n"),
    ] {
        assert_eq!(ok(&render(&def)), def);
    }
}

// Override files (init(5)): read over the job file's definition.

fn overridden(conf: &str, over: &str) -> Overridden {
    parse_override(ok(conf), over)
}

#[test]
fn an_override_replaces_the_stanzas_it_gives_and_keeps_the_rest() {
    let conf = "start on startup\nstop on runlevel [06]\nrespawn\nenv A=1\nexec sleep 1\n";
    let o = overridden(conf, "start on net-up\nexec sleep 2\nenv B=2\n");
    let def = o.parsed.def.expect("the override parses");
    assert_eq!(def.start_on, Some(event("net-up")));
    assert_eq!(def.main, exec("sleep 2"));
    assert_eq!(
        def.stop_on,
        ok(conf).stop_on,
        "untouched stanzas stay the job file's"
    );
    assert!(def.respawn);
    // `env` adds up, as in Upstart (the override's parse continues the job's).
    let env: Vec<&str> = def.env.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(env, ["A", "B"]);
    assert_eq!(o.stanzas, ["start on", "exec", "env"]);
    assert_eq!(def.name, "test", "the job keeps its name");
}

#[test]
fn a_manual_override_discards_start_on_and_a_later_start_on_restores_it() {
    let conf = "start on startup\nexec sleep 1\n";
    let def = overridden(conf, "manual\n").parsed.def.unwrap();
    assert!(def.manual);
    assert_eq!(def.start_on, None);
    assert_eq!(def.main, exec("sleep 1"));
    let def = overridden(conf, "manual\nstart on other\n")
        .parsed
        .def
        .unwrap();
    assert!(!def.manual);
    assert_eq!(def.start_on, Some(event("other")));
}

#[test]
fn an_empty_override_changes_nothing_and_names_no_stanza() {
    let conf = "start on startup\nexec sleep 1\n";
    let o = overridden(conf, "# nothing here\n\n");
    assert_eq!(o.parsed.def, Some(ok(conf)));
    assert!(o.stanzas.is_empty());
}

#[test]
fn errors_in_an_override_are_reported_at_their_position_and_give_no_definition() {
    let o = overridden("exec sleep 1\n", "manual\nrespawn limit x 5\n");
    assert_eq!(o.parsed.def, None);
    let shown: Vec<String> = o
        .parsed
        .diagnostics
        .iter()
        .map(|d| d.render("j.override"))
        .collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0].starts_with("j.override:2:15: error: "),
        "{shown:?}"
    );
}
