//! The event engine without processes: job files parsed as written, a driver
//! that plays the runtime (fresh pids, every effect logged in order), and the
//! order of what happened read back from the log.

use super::*;
use crate::job::parse;
use ProcessKind::*;

struct W {
    jobs: Jobs,
    pid: i32,
    now: u64,
    /// What happened, in order: `spawn JOB[/INSTANCE] KIND`, `kill JOB KIND`,
    /// `event NAME K=V…`, `finished WAITER ok|failed`, `warn …`.
    log: Vec<String>,
    /// Spawns that fail instead of getting a pid (by `JOB KIND`).
    failing: Vec<String>,
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn who(job: &str, instance: &str) -> String {
    if instance.is_empty() {
        job.to_string()
    } else {
        format!("{job}/{instance}")
    }
}

impl W {
    fn new(files: &[(&str, &str)]) -> W {
        let mut jobs = Jobs::default();
        jobs.set_definitions(
            files
                .iter()
                .map(|(name, text)| {
                    let parsed = parse(name, text);
                    parsed
                        .def
                        .unwrap_or_else(|| panic!("{name}: {:?}", parsed.diagnostics))
                })
                .collect(),
        );
        let mut w = W {
            jobs,
            pid: 100,
            now: 1_000,
            log: Vec::new(),
            failing: Vec::new(),
        };
        w.settle();
        w
    }

    /// Plays the runtime: every spawn gets a pid at once (or fails, if listed).
    fn settle(&mut self) {
        let failing = &self.failing;
        let fails = |job: &str, instance: &str, kind: ProcessKind| {
            failing.contains(&format!("{} {}", who(job, instance), kind.name()))
        };
        for e in self.jobs.play_runtime(&mut self.pid, self.now, fails) {
            match e {
                Effect::Spawn {
                    job,
                    instance,
                    kind,
                } => self
                    .log
                    .push(format!("spawn {} {}", who(&job, &instance), kind.name())),
                Effect::Kill { pid, .. } => {
                    let (job, instance, kind) = self.jobs.pids[&pid].clone();
                    self.log
                        .push(format!("kill {} {}", who(&job, &instance), kind.name()));
                }
                Effect::Emit(ev) => {
                    let mut line = format!("event {}", ev.name);
                    for (k, v) in &ev.env {
                        line.push_str(&format!(" {k}={v}"));
                    }
                    self.log.push(line);
                }
                Effect::EventFinished { waiter, failed } => self.log.push(format!(
                    "finished {waiter} {}",
                    if failed { "failed" } else { "ok" }
                )),
                Effect::Warn(message) => self.log.push(format!("warn {message}")),
                Effect::Info(_) => {}
                Effect::Reply { .. } | Effect::KillRemnants { .. } => {}
            }
        }
    }

    fn emit(&mut self, name: &str, vars: &[(&str, &str)], waiter: Option<WaiterId>) {
        self.jobs
            .emit(
                Event {
                    name: name.into(),
                    env: env(vars),
                },
                waiter,
                self.now,
            )
            .unwrap();
        self.settle();
    }

    fn start(&mut self, job: &str) {
        self.jobs.start(job, vec![], None, self.now).unwrap();
        self.settle();
    }

    fn stop(&mut self, job: &str) {
        self.jobs.stop(job, &[], None, self.now).unwrap();
        self.settle();
    }

    fn inst(&self, job: &str, instance: &str) -> Option<&Instance> {
        self.jobs
            .jobs
            .get(job)?
            .instances
            .get(instance)
            .map(|i| &**i)
    }

    fn state(&self, job: &str) -> State {
        self.inst(job, "").map_or(State::Waiting, |i| i.state)
    }

    fn exit_of(&mut self, job: &str, instance: &str, kind: ProcessKind, status: WaitStatus) {
        let pid = self
            .inst(job, instance)
            .and_then(|i| i.pids.get(&kind).copied())
            .unwrap_or_else(|| panic!("{job} ({instance}) has no {kind:?}\n{:#?}", self.log));
        self.jobs.exited(pid, status, self.now);
        self.settle();
    }

    fn exit(&mut self, job: &str, kind: ProcessKind, status: WaitStatus) {
        self.exit_of(job, "", kind, status);
    }

    fn ok(&mut self, job: &str, kind: ProcessKind) {
        self.exit(job, kind, WaitStatus::exited(0));
    }

    /// The names of the events in the queue.
    fn queue(&self) -> Vec<&str> {
        self.jobs
            .events
            .values()
            .map(|q| q.event.name.as_str())
            .collect()
    }

    /// Where `line` is in the log (panics if it is not).
    fn at(&self, line: &str) -> usize {
        self.log
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line:?} is not in the log:\n{:#?}", self.log))
    }

    fn has(&self, line: &str) -> bool {
        self.log.iter().any(|l| l == line)
    }

    /// The environment process `kind` of the instance would run with.
    fn process_env(&self, job: &str, instance: &str, kind: ProcessKind) -> Vec<String> {
        process_environment(job, self.inst(job, instance).unwrap(), kind, &[])
    }
}

const TASK: &str = "task\nexec true\n";

#[test]
fn and_remembers_events_across_emits_until_the_job_starts() {
    let mut w = W::new(&[("j", &format!("start on a and b\n{TASK}"))]);
    w.emit("a", &[("X", "1")], None);
    assert_eq!(w.state("j"), State::Waiting);
    assert_eq!(w.queue(), ["a"], "the matched leaf holds its event");
    w.emit("c", &[], None);
    assert_eq!(w.queue(), ["a"], "an event nothing wants finishes at once");
    w.emit("b", &[("Y", "2")], None);
    assert_eq!(w.state("j"), State::Running);
    let vars = w.process_env("j", "", Main);
    for v in ["X=1", "Y=2", "UPSTART_EVENTS=a b"] {
        assert!(vars.contains(&v.to_string()), "{v} in {vars:?}");
    }
    // The task holds both events until it has run.
    assert_eq!(w.queue(), ["a", "b"]);
    w.ok("j", Main);
    assert!(w.queue().is_empty());
    // Reset when the job started: `b` alone starts nothing now.
    w.emit("b", &[], None);
    assert_eq!(w.state("j"), State::Waiting);
    assert_eq!(w.queue(), ["b"]);
}

#[test]
fn or_and_parentheses_start_on_what_completes_them() {
    let mut w = W::new(&[("j", &format!("start on (a and b) or c\n{TASK}"))]);
    w.emit("a", &[("A", "1")], None);
    w.emit("c", &[("C", "1")], None);
    assert_eq!(w.state("j"), State::Running);
    let vars = w.process_env("j", "", Main);
    assert!(vars.contains(&"UPSTART_EVENTS=c".to_string()), "{vars:?}");
    assert!(!vars.contains(&"A=1".to_string()), "a had no part in it");
    // The start reset the whole expression, `a` included: it is let go.
    assert_eq!(w.queue(), ["c"]);
    w.ok("j", Main);
    assert!(w.queue().is_empty());
}

#[test]
fn runlevels_start_and_stop_with_classes_and_negation() {
    let mut w = W::new(&[(
        "getty",
        "start on runlevel [2345]\nstop on runlevel [!2345]\nrespawn\nexec getty\n",
    )]);
    let level = |w: &mut W, r| w.emit("runlevel", &[("RUNLEVEL", r), ("PREVLEVEL", "N")], None);
    level(&mut w, "S");
    assert_eq!(w.state("getty"), State::Waiting);
    level(&mut w, "2");
    assert_eq!(w.state("getty"), State::Running);
    level(&mut w, "3");
    assert_eq!(w.state("getty"), State::Running, "already running");
    level(&mut w, "1");
    assert_eq!(w.state("getty"), State::Killed);
    w.exit("getty", Main, WaitStatus::signaled(15));
    assert_eq!(w.state("getty"), State::Waiting);
    assert!(w.queue().is_empty());
}

#[test]
fn stop_on_remembers_per_instance_and_resets_when_stopped() {
    let mut w = W::new(&[("svc", "stop on a and b\nexec sleep\npost-stop exec true\n")]);
    w.start("svc");
    w.emit("a", &[], None);
    assert_eq!(w.state("svc"), State::Running);
    w.emit("b", &[("WHY", "b")], None);
    assert_eq!(w.state("svc"), State::Killed);
    w.exit("svc", Main, WaitStatus::signaled(15));
    // The post-stop knows what stopped it.
    let vars = w.process_env("svc", "", PostStop);
    assert!(
        vars.contains(&"UPSTART_STOP_EVENTS=a b".to_string()),
        "{vars:?}"
    );
    assert!(vars.contains(&"WHY=b".to_string()), "{vars:?}");
    assert!(
        !w.process_env("svc", "", Main)
            .iter()
            .any(|v| v.starts_with("UPSTART_STOP_EVENTS=")),
        "only pre-stop and post-stop see it"
    );
    assert_eq!(w.queue(), ["a", "b"], "held until stopped");
    w.ok("svc", PostStop);
    assert!(w.queue().is_empty());
    // Started again: `b` alone no longer stops it.
    w.start("svc");
    w.emit("b", &[], None);
    assert_eq!(w.state("svc"), State::Running);
}

#[test]
fn stop_on_variables_expand_from_each_instances_environment() {
    let mut w = W::new(&[
        ("p1", "exec sleep\n"),
        ("p2", "exec sleep\n"),
        (
            "child",
            "start on started JOB=p*\nstop on stopping JOB=$JOB\ninstance $JOB\nexec sleep\n",
        ),
    ]);
    w.start("p1");
    w.start("p2");
    let names: Vec<&String> = w.jobs.jobs["child"].instances.keys().collect();
    assert_eq!(names, ["p1", "p2"]);
    w.stop("p1");
    let state = |w: &W, i| w.inst("child", i).map_or(State::Waiting, |i| i.state);
    assert_eq!(state(&w, "p1"), State::Killed);
    assert_eq!(state(&w, "p2"), State::Running);
    // p1's stopping waits for its child to stop.
    assert_eq!(w.state("p1"), State::Stopping);
    w.exit_of("child", "p1", Main, WaitStatus::signaled(15));
    assert_eq!(w.state("p1"), State::Killed);
}

#[test]
fn instances_are_created_from_the_events_variables() {
    let mut w = W::new(&[(
        "ifup",
        "start on net-device-added IFACE!=lo\ninstance $IFACE\ntask\nexec true\n",
    )]);
    w.emit("net-device-added", &[("IFACE", "eth0")], None);
    w.emit("net-device-added", &[("IFACE", "eth1")], None);
    w.emit("net-device-added", &[("IFACE", "lo")], None);
    let names: Vec<&String> = w.jobs.jobs["ifup"].instances.keys().collect();
    assert_eq!(names, ["eth0", "eth1"]);
    assert!(w.has("spawn ifup/eth0 main") && w.has("spawn ifup/eth1 main"));
    // An instance name that cannot be made: said in the log, nothing started.
    let mut w = W::new(&[("tty", "start on go\ninstance $TTY\nexec getty\n")]);
    w.emit("go", &[], None);
    assert!(w.jobs.jobs["tty"].instances.is_empty());
    assert!(
        w.has("warn Failed to obtain tty instance: Unknown parameter: TTY"),
        "{:#?}",
        w.log
    );
    assert!(w.queue().is_empty(), "and the event is let go");
}

#[test]
fn a_job_started_on_starting_x_runs_before_xs_pre_start() {
    for task in [false, true] {
        let hook = format!(
            "start on starting x\n{}pre-start exec true\nexec hook\npost-start exec true\n",
            if task { "task\n" } else { "" }
        );
        let mut w = W::new(&[("x", "pre-start exec true\nexec x\n"), ("hook", &hook)]);
        w.start("x");
        assert_eq!(w.state("x"), State::Starting, "held by its starting event");
        w.ok("hook", PreStart);
        assert!(w.has("spawn hook main"));
        assert!(!w.has("spawn x pre-start"), "hook is not running yet");
        w.ok("hook", PostStart);
        if task {
            assert_eq!(w.state("hook"), State::Running);
            assert!(!w.has("spawn x pre-start"), "a task must have run first");
            w.ok("hook", Main);
            assert_eq!(w.state("hook"), State::Waiting);
        } else {
            assert_eq!(w.state("hook"), State::Running);
        }
        assert!(w.has("spawn x pre-start"), "{:#?}", w.log);
        assert_eq!(w.state("x"), State::PreStart);
        assert!(w.queue().is_empty());
    }
}

#[test]
fn stopping_x_holds_xs_kill_until_what_it_stopped_has_stopped() {
    let mut w = W::new(&[
        ("x", "exec x\npre-stop exec true\n"),
        (
            "hook",
            "start on started x\nstop on stopping x\nexec hook\npost-stop exec true\n",
        ),
    ]);
    w.start("x");
    assert_eq!(w.state("hook"), State::Running);
    w.stop("x");
    w.ok("x", PreStop);
    assert_eq!(w.state("x"), State::Stopping);
    assert!(w.has("kill hook main"));
    assert!(!w.has("kill x main"));
    w.exit("hook", Main, WaitStatus::signaled(15));
    assert!(!w.has("kill x main"), "hook's post-stop still runs");
    w.ok("hook", PostStop);
    assert!(w.at("event stopped JOB=hook INSTANCE= RESULT=ok") < w.at("kill x main"));
    assert_eq!(w.state("x"), State::Killed);
}

#[test]
fn a_failing_job_fails_the_event_and_e_failed_follows() {
    // Through `initctl emit`: the waiter learns, and `poke/failed` is emitted.
    let mut w = W::new(&[
        ("t", "start on poke\ntask\nexec false\n"),
        ("after", "start on poke/failed\ntask\nexec false\n"),
    ]);
    w.emit("poke", &[("K", "v")], Some(7));
    assert!(!w.has("finished 7 failed"), "not before the task has run");
    w.exit("t", Main, WaitStatus::exited(1));
    assert!(w.has("finished 7 failed"));
    assert!(w.has("event poke/failed K=v"));
    w.exit("after", Main, WaitStatus::exited(1));
    assert!(
        !w.log
            .iter()
            .any(|l| l.starts_with("event poke/failed/failed")),
        "a failed E/failed is not followed by another"
    );
    assert!(w.queue().is_empty());
    // A job's own starting event: the job it started fails, the job goes on, and
    // `starting/failed` says which job it was.
    let mut w = W::new(&[
        ("x", "pre-start exec true\nexec x\n"),
        (
            "hook",
            "start on starting x\npre-start exec false\nexec hook\n",
        ),
    ]);
    w.start("x");
    w.exit("hook", PreStart, WaitStatus::exited(1));
    assert!(w.has("spawn x pre-start"), "x is not held back");
    assert!(w.has("event starting/failed JOB=x INSTANCE="));
}

#[test]
fn stop_events_say_how_a_job_failed() {
    let stopped = |w: &W| {
        w.log
            .iter()
            .rev()
            .find(|l| l.starts_with("event stopped "))
            .cloned()
            .unwrap()
    };
    let mut w = W::new(&[("j", "exec j\n")]);
    w.start("j");
    w.exit("j", Main, WaitStatus::exited(3));
    assert_eq!(
        stopped(&w),
        "event stopped JOB=j INSTANCE= RESULT=failed PROCESS=main EXIT_STATUS=3"
    );
    w.start("j");
    w.exit("j", Main, WaitStatus::signaled(11));
    assert_eq!(
        stopped(&w),
        "event stopped JOB=j INSTANCE= RESULT=failed PROCESS=main EXIT_SIGNAL=SEGV"
    );
    let mut w = W::new(&[("j", "pre-start exec false\nexec j\n")]);
    w.start("j");
    w.exit("j", PreStart, WaitStatus::exited(2));
    assert!(w.has("event stopping JOB=j INSTANCE= RESULT=failed PROCESS=pre-start EXIT_STATUS=2"));
    // Not even spawned: no status.
    let mut w = W::new(&[("j", "exec j\n")]);
    w.failing.push("j main".into());
    w.start("j");
    assert_eq!(
        stopped(&w),
        "event stopped JOB=j INSTANCE= RESULT=failed PROCESS=main"
    );
    // Respawning too fast: Upstart's PROCESS=respawn.
    let mut w = W::new(&[("j", "respawn\nrespawn limit 1 10\nexec j\n")]);
    w.start("j");
    w.exit("j", Main, WaitStatus::exited(1));
    w.exit("j", Main, WaitStatus::exited(1));
    assert_eq!(
        stopped(&w),
        "event stopped JOB=j INSTANCE= RESULT=failed PROCESS=respawn"
    );
    // A clean stop.
    let mut w = W::new(&[("j", "exec j\n")]);
    w.start("j");
    w.stop("j");
    w.exit("j", Main, WaitStatus::signaled(15));
    assert_eq!(stopped(&w), "event stopped JOB=j INSTANCE= RESULT=ok");
}

#[test]
fn exported_variables_ride_on_the_jobs_own_events() {
    let mut w = W::new(&[("j", "env FOO=bar\nenv OTHER=x\nexport FOO JOB\nexec j\n")]);
    w.start("j");
    w.stop("j");
    w.exit("j", Main, WaitStatus::signaled(15));
    for line in [
        "event starting JOB=j INSTANCE= FOO=bar",
        "event started JOB=j INSTANCE= FOO=bar",
        "event stopping JOB=j INSTANCE= RESULT=ok FOO=bar",
        "event stopped JOB=j INSTANCE= RESULT=ok FOO=bar",
    ] {
        assert!(w.has(line), "{line}: {:#?}", w.log);
    }
}

#[test]
fn the_environment_is_table_then_env_then_events() {
    let mut w = W::new(&[(
        "j",
        "start on go\nenv A=from-env\nenv B=from-env\nenv KEEP=kept\nexec j\n",
    )]);
    w.jobs.env_table.insert("A".into(), "from-table".into());
    w.jobs.env_table.insert("T".into(), "table".into());
    w.emit("go", &[("B", "from-event"), ("E", "e")], None);
    let vars = w.process_env("j", "", Main);
    for v in [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TERM=linux",
        "A=from-env",
        "T=table",
        "B=from-event",
        "KEEP=kept",
        "E=e",
        "UPSTART_EVENTS=go",
        "UPSTART_JOB=j",
        "UPSTART_INSTANCE=",
    ] {
        assert!(vars.contains(&v.to_string()), "{v} in {vars:?}");
    }
    assert_eq!(vars.len(), 10, "{vars:?}");
    // A stop request's variables reach pre-stop and post-stop.
    let mut w = W::new(&[("j", "exec j\npre-stop exec true\n")]);
    w.start("j");
    w.jobs
        .stop("j", &env(&[("WHY", "asked")]), None, w.now)
        .unwrap();
    w.settle();
    assert!(
        w.process_env("j", "", PreStop)
            .contains(&"WHY=asked".to_string())
    );
    // A start of the next cycle during post-stop brings its own environment, taken
    // over at `starting`; the post-stop still runs with the old one.
    let mut w = W::new(&[("j", "instance x\nexec j\npost-stop exec true\n")]);
    w.jobs.start("j", env(&[("V", "1")]), None, w.now).unwrap();
    w.settle();
    w.jobs.stop("j", &[], None, w.now).unwrap();
    w.settle();
    w.exit_of("j", "x", Main, WaitStatus::signaled(15));
    w.jobs.start("j", env(&[("V", "2")]), None, w.now).unwrap();
    w.settle();
    assert!(
        w.process_env("j", "x", PostStop)
            .contains(&"V=1".to_string())
    );
    w.exit_of("j", "x", PostStop, WaitStatus::exited(0));
    assert!(w.process_env("j", "x", Main).contains(&"V=2".to_string()));
}

#[test]
fn emit_waits_for_what_the_event_started_and_no_longer() {
    let mut w = W::new(&[
        ("svc", "start on up\npre-start exec true\nexec svc\n"),
        ("t", "start on up\ntask\nexec t\n"),
    ]);
    w.emit("up", &[], Some(1));
    w.ok("svc", PreStart);
    assert!(!w.has("finished 1 ok"), "the task has not run");
    w.ok("t", Main);
    assert!(w.has("finished 1 ok"));
    // An event nothing waits for is finished at once.
    w.emit("nobody-cares", &[], Some(2));
    assert!(w.has("finished 2 ok"));
    // An event that only half-matches an `and` waits for the other half (Upstart).
    let mut w = W::new(&[("j", &format!("start on a and b\n{TASK}"))]);
    w.emit("a", &[], Some(3));
    assert!(!w.has("finished 3 ok"));
    w.emit("b", &[], Some(4));
    w.ok("j", Main);
    assert!(w.at("finished 3 ok") > w.at("spawn j main"));
    assert!(w.has("finished 4 ok"));
}

#[test]
fn bad_emits_are_refused_and_change_nothing() {
    let mut w = W::new(&[("j", &format!("start on x\n{TASK}"))]);
    let before = w.jobs.clone();
    let refused = |w: &mut W, name: &str, vars| {
        w.jobs
            .emit(
                Event {
                    name: name.into(),
                    env: env(vars),
                },
                Some(1),
                w.now,
            )
            .unwrap_err()
    };
    assert_eq!(refused(&mut w, "", &[]), Refusal::EmptyEventName);
    assert_eq!(refused(&mut w, "x", &[("", "v")]), Refusal::NotKeyValue);
    assert_eq!(w.jobs, before);
    // A flood of emits in one round: past the round's budget they wait, pending
    // (and saved), until the queue's bound refuses more.
    let mut w = W::new(&[]);
    for i in 0..EVENTS_PER_ROUND + MAX_QUEUED_EVENTS {
        w.emit("flood", &[("N", &i.to_string())], None);
    }
    assert_eq!(w.jobs.events.len(), MAX_QUEUED_EVENTS);
    assert!(w.jobs.events_pending());
    assert_eq!(
        refused(&mut w, "flood", &[]),
        Refusal::QueueFull {
            limit: MAX_QUEUED_EVENTS
        }
    );
    assert_eq!(w.jobs.events.len(), MAX_QUEUED_EVENTS);
    // The next rounds handle them, a round's worth at a time.
    w.jobs.tick(w.now);
    assert_eq!(w.jobs.events.len(), MAX_QUEUED_EVENTS - EVENTS_PER_ROUND);
    w.jobs.tick(w.now);
    assert!(w.jobs.events.is_empty());
}

#[test]
fn a_circle_of_jobs_is_handled_a_round_at_a_time() {
    // Each stop starts it again, and it cannot even be spawned: endless without
    // a bound on a round.
    let mut w = W::new(&[("a", "start on go or stopped a\ntask\nexec nowhere\n")]);
    w.failing.push("a main".into());
    w.emit("go", &[], None);
    assert!(w.jobs.events_pending(), "the rest waits for the next round");
    let spawns = w.log.iter().filter(|l| *l == "spawn a main").count();
    assert!(
        (EVENTS_PER_ROUND / 4..=EVENTS_PER_ROUND).contains(&spawns),
        "{spawns}"
    );
    w.jobs.tick(w.now);
    w.settle();
    let more = w.log.iter().filter(|l| *l == "spawn a main").count();
    assert!(more > spawns, "the next round goes on");
}

#[test]
fn a_power_action_runs_the_runlevel_event_then_stops_everything() {
    let mut w = W::new(&[
        (
            "svc",
            "start on startup\nstop on runlevel [016]\nexec svc\npost-stop exec true\n",
        ),
        ("final", "start on runlevel [06]\ntask\nexec sync\n"),
        ("other", "start on startup\nexec other\n"),
    ]);
    w.emit("startup", &[], None);
    assert!(w.jobs.power(
        PowerAction::PowerOff,
        env(&[("RUNLEVEL", "0"), ("PREVLEVEL", "2")]),
        w.now
    ));
    assert!(
        !w.jobs.power(PowerAction::Reboot, vec![], w.now),
        "one at a time"
    );
    w.settle();
    assert!(w.has("spawn final main"));
    assert!(w.has("kill svc main"));
    assert!(
        !w.has("kill other main"),
        "not before the runlevel event is done"
    );
    assert!(!w.jobs.shutting_down);
    w.exit("svc", Main, WaitStatus::signaled(15));
    w.ok("svc", PostStop);
    assert!(!w.has("kill other main"));
    w.ok("final", Main);
    // The runlevel event is done: everything else stops, then the action is due.
    assert!(w.jobs.shutting_down);
    assert!(w.has("kill other main"));
    assert_eq!(w.jobs.power_due(), None);
    w.exit("other", Main, WaitStatus::signaled(15));
    assert_eq!(w.jobs.power_due(), Some(PowerAction::PowerOff));
}

#[test]
fn a_power_action_finishes_even_if_jobs_hang() {
    let mut w = W::new(&[
        ("hang", "start on runlevel\ntask\nexec hang\n"),
        ("stuck", "exec stuck\npre-stop exec hang\n"),
    ]);
    w.start("stuck");
    w.jobs.power(PowerAction::Reboot, vec![], w.now);
    w.settle();
    let grace = POWER_GRACE_MS + 5_000;
    assert_eq!(w.jobs.next_deadline(), Some(w.now + grace));
    w.now += grace - 1;
    w.jobs.tick(w.now);
    w.settle();
    assert!(!w.jobs.shutting_down);
    w.now += 1;
    w.jobs.tick(w.now);
    w.settle();
    assert!(w.jobs.shutting_down, "the runlevel event is given up on");
    assert!(w.has("spawn stuck pre-stop"));
    assert_eq!(w.jobs.power_due(), None);
    w.now += grace;
    w.jobs.tick(w.now);
    w.settle();
    assert_eq!(w.jobs.power_due(), Some(PowerAction::Reboot));
    assert!(
        w.log
            .iter()
            .any(|l| l.starts_with("warn jobs did not stop in time"))
    );
}

#[test]
fn events_in_flight_survive_a_save_and_load() {
    let files = [
        ("x", "pre-start exec true\nexec x\n"),
        ("hook", "start on starting x and go\ntask\nexec hook\n"),
    ];
    let mut w = W::new(&files);
    w.start("x");
    // x waits in starting; hook has matched half its `and`.
    let snap: crate::journal::Snapshot = crate::journal::Snapshot {
        jobs: w.jobs.clone(),
        ..Default::default()
    };
    let defs = snap.jobs.live_definitions();
    let loaded =
        crate::journal::decode::<()>(&crate::journal::encode(&snap).unwrap(), &defs).unwrap();
    let mut copy = W::new(&files);
    copy.jobs = loaded.jobs;
    copy.pid = w.pid;
    for d in [&mut w, &mut copy] {
        d.log.clear();
        d.emit("go", &[], Some(5));
        d.ok("hook", Main);
        d.ok("x", PreStart);
    }
    assert_eq!(copy.log, w.log);
    assert!(
        w.has("spawn x main") && w.has("finished 5 ok"),
        "{:#?}",
        w.log
    );
    assert_eq!(copy.jobs.events, w.jobs.events);
    assert!(w.jobs.events.is_empty());
}

#[test]
fn a_changed_start_on_forgets_what_the_old_one_matched() {
    let mut w = W::new(&[("j", &format!("start on a and b\n{TASK}"))]);
    w.emit("a", &[], None);
    assert_eq!(w.queue(), ["a"]);
    let same = parse("j", &format!("start on a and b\n{TASK}"))
        .def
        .unwrap();
    w.jobs.set_definitions(vec![same]);
    assert_eq!(w.queue(), ["a"], "the same expression keeps its progress");
    let changed = parse("j", &format!("start on a and c\n{TASK}"))
        .def
        .unwrap();
    w.jobs.set_definitions(vec![changed]);
    assert!(w.queue().is_empty());
    w.emit("c", &[], None);
    assert_eq!(w.state("j"), State::Waiting);
}

#[test]
fn an_event_that_stops_and_starts_a_running_job_restarts_it() {
    let mut w = W::new(&[("j", "start on bounce\nstop on bounce\nexec j\n")]);
    w.start("j");
    w.emit("bounce", &[], Some(1));
    assert!(w.has("kill j main"));
    w.exit("j", Main, WaitStatus::signaled(15));
    assert_eq!(w.state("j"), State::Running);
    assert_eq!(w.log.iter().filter(|l| *l == "spawn j main").count(), 2);
    assert!(w.has("finished 1 ok"));
}

#[test]
fn a_start_that_is_never_ready_fails_the_event_that_asked_for_it() {
    let mut w = W::new(&[("d", "start on go\nexpect stop\nready timeout 1\nexec d\n")]);
    w.emit("go", &[], Some(1));
    assert_eq!(w.state("d"), State::Spawned);
    assert!(!w.has("finished 1 failed") && !w.has("finished 1 ok"));
    w.now += 1_000;
    w.jobs.tick(w.now);
    w.settle();
    assert!(w.has("finished 1 failed"), "{:#?}", w.log);
    assert!(w.has("event go/failed"));
}

/// Parsed job files, as the confdir would give them.
fn defs(files: &[(&str, &str)]) -> Vec<crate::job::JobDef> {
    files
        .iter()
        .map(|(n, t)| parse(n, t).def.unwrap())
        .collect()
}

#[test]
fn events_reach_only_the_jobs_that_name_them_and_an_unchanged_reload_keeps_definitions() {
    let mut w = W::new(&[
        ("a", &format!("start on go\n{TASK}")),
        ("b", &format!("start on other\n{TASK}")),
        ("c", "exec sleep 1\n"),
    ]);
    let ids = |w: &W| -> Vec<DefId> { w.jobs.jobs.values().map(|j| j.def.id()).collect() };
    let before = ids(&w);
    assert_eq!(w.jobs.index.0.jobs("go"), ["a"]);
    assert!(w.jobs.index.0.jobs("starting").is_empty());
    w.emit("go", &[], Some(1));
    assert!(w.has("spawn a main") && !w.has("spawn b main"));
    // The same files again: every job keeps its definition (and the index).
    w.jobs.set_definitions(defs(&[
        ("a", &format!("start on go\n{TASK}")),
        ("b", &format!("start on other\n{TASK}")),
        ("c", "exec sleep 1\n"),
    ]));
    assert_eq!(ids(&w), before);
    // A changed file: that job gets a new definition, the others keep theirs.
    w.jobs.set_definitions(defs(&[
        ("a", &format!("start on go or other\n{TASK}")),
        ("b", &format!("start on other\n{TASK}")),
        ("c", "exec sleep 1\n"),
    ]));
    let after = ids(&w);
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1..], before[1..]);
    w.emit("other", &[], None);
    assert_eq!(w.jobs.index.0.jobs("other"), ["a", "b"]);
}

#[test]
fn an_event_stays_held_by_the_instance_it_started_across_reloads_that_forget_it() {
    // x runs on a definition without `start on`; while it is on its way down, a
    // reload gives the job `start on go`, and `go` starts it again (the instance
    // keeps its definition: it is not waiting). Another reload drops `go` from
    // the job: nothing names `go` any more but the instance it started, which
    // holds it until x is running.
    let v1 = "pre-start exec true\nexec sleep 1\npost-stop exec true\n";
    let mut w = W::new(&[("x", v1)]);
    w.start("x");
    w.ok("x", PreStart);
    assert_eq!(w.state("x"), State::Running);
    w.stop("x");
    w.exit("x", Main, WaitStatus::signaled(15));
    assert_eq!(w.state("x"), State::PostStop);
    w.jobs
        .set_definitions(defs(&[("x", &format!("start on go\n{v1}"))]));
    w.emit("go", &[], Some(7));
    w.jobs
        .set_definitions(defs(&[("x", &format!("start on other\n{v1}"))]));
    w.settle();
    assert!(!w.has("finished 7 ok"), "go finished early: {:#?}", w.log);
    assert_eq!(w.queue(), ["go"]);
    w.ok("x", PostStop);
    w.ok("x", PreStart);
    assert_eq!(w.state("x"), State::Running);
    assert!(w.has("finished 7 ok"), "{:#?}", w.log);
}

#[test]
fn a_half_matched_stop_on_lets_its_event_go_when_the_job_stops_otherwise() {
    let mut w = W::new(&[("j", "stop on a and b\nexec sleep 1\n")]);
    w.start("j");
    w.emit("a", &[], Some(3));
    assert_eq!(w.queue(), ["a"], "the matched leaf holds a");
    w.stop("j");
    w.exit("j", Main, WaitStatus::signaled(15));
    assert_eq!(w.state("j"), State::Waiting);
    assert!(w.queue().is_empty(), "{:?}", w.queue());
    assert!(w.has("finished 3 ok"));
}
