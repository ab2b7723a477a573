//! The lifecycle core without processes: each guarantee of the module docs, the
//! requests' answers and effects, respawn limits, readiness, and the state saved
//! and loaded back, driven by `Jobs::play_runtime` and read back from its effects.

use super::*;
use crate::job::{Process, RespawnLimit};

/// A reply that says the job failed (see `T::replies`).
#[derive(Debug, PartialEq)]
struct JobFailed;

fn exec() -> Option<Process> {
    Some(Process::Exec {
        command: "true".into(),
    })
}

/// A service with every process.
fn full() -> JobDef {
    let mut d = JobDef::new("j");
    d.pre_start = exec().map(Box::new);
    d.main = exec();
    d.post_start = exec().map(Box::new);
    d.pre_stop = exec().map(Box::new);
    d.post_stop = exec().map(Box::new);
    d
}

struct T {
    jobs: Jobs,
    pid: i32,
    now: u64,
    /// Every effect so far (spawns as `Spawn`).
    seen: Vec<Effect>,
}

impl T {
    fn new(def: JobDef) -> T {
        let mut jobs = Jobs::default();
        jobs.set_definitions(vec![def]);
        T {
            jobs,
            pid: 100,
            now: 0,
            seen: Vec::new(),
        }
    }
    /// Plays the runtime: every spawn gets a pid at once.
    fn settle(&mut self) {
        let seen = self
            .jobs
            .play_runtime(&mut self.pid, self.now, |_, _, _| false);
        self.seen.extend(seen);
    }
    fn start(&mut self, waiter: Option<WaiterId>) {
        self.jobs.start("j", vec![], waiter, self.now).unwrap();
        self.settle();
    }
    fn stop(&mut self, waiter: Option<WaiterId>) {
        self.jobs.stop("j", &[], waiter, self.now).unwrap();
        self.settle();
    }
    fn inst(&self) -> Option<&Instance> {
        self.jobs.jobs["j"].instances.get("").map(|i| &**i)
    }
    fn state(&self) -> State {
        self.inst().map_or(State::Waiting, |i| i.state)
    }
    fn pid(&self, kind: ProcessKind) -> i32 {
        self.inst().unwrap().pids[&kind]
    }
    fn exit(&mut self, kind: ProcessKind, status: WaitStatus) {
        let pid = self.pid(kind);
        self.jobs.exited(pid, status, self.now);
        self.settle();
    }
    fn ok(&mut self, kind: ProcessKind) {
        self.exit(kind, WaitStatus::exited(0));
    }
    /// The processes spawned so far, in order.
    fn spawns(&self) -> Vec<ProcessKind> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Effect::Spawn { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    }
    fn events(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Effect::Emit(ev) => Some(ev.name.clone()),
                _ => None,
            })
            .collect()
    }
    /// Each reply's waiter and whether it says the job failed.
    fn replies(&self) -> Vec<(WaiterId, Option<JobFailed>)> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Effect::Reply { waiter, error, .. } => Some((
                    *waiter,
                    error.as_ref().map(|e| {
                        assert!(matches!(e, Refusal::JobFailed(_)), "{e}");
                        JobFailed
                    }),
                )),
                _ => None,
            })
            .collect()
    }
    fn kills(&self) -> Vec<(i32, Signal)> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Effect::Kill { pid, signal } => Some((*pid, *signal)),
                _ => None,
            })
            .collect()
    }
    /// Brings `full()` to running.
    fn running(&mut self) {
        self.start(None);
        self.ok(ProcessKind::PreStart);
        self.ok(ProcessKind::PostStart);
        assert_eq!(self.state(), State::Running);
    }
}

use ProcessKind::*;

#[test]
fn stop_during_pre_start_runs_no_main_but_post_stop() {
    let mut t = T::new(full());
    t.start(Some(1));
    assert_eq!(t.state(), State::PreStart);
    t.stop(Some(2));
    assert_eq!(t.state(), State::PreStart, "pre-start is waited for");
    t.ok(PreStart);
    assert_eq!(t.state(), State::PostStop);
    t.ok(PostStop);
    assert_eq!(t.state(), State::Waiting);
    assert_eq!(t.spawns(), vec![PreStart, PostStop]);
    assert_eq!(t.replies(), vec![(1, None), (2, None)]);
}

#[test]
fn stop_during_post_start_waits_for_it_then_kills_main() {
    let mut t = T::new(full());
    t.start(None);
    t.ok(PreStart);
    assert_eq!(t.state(), State::PostStart);
    let main = t.pid(Main);
    t.stop(None);
    assert_eq!(t.state(), State::PostStart);
    assert!(t.kills().is_empty());
    t.ok(PostStart);
    // Never running; no pre-stop (the stop came before running).
    assert_eq!(t.state(), State::Killed);
    assert_eq!(t.kills(), vec![(main, Signal::TERM)]);
    assert!(!t.events().contains(&"started".to_string()));
    t.exit(Main, WaitStatus::signaled(15));
    t.ok(PostStop);
    assert_eq!(t.spawns(), vec![PreStart, Main, PostStart, PostStop]);
    assert_eq!(t.state(), State::Waiting);
}

#[test]
fn stop_in_spawned_without_post_start_goes_straight_on() {
    let mut d = full();
    d.post_start = None;
    d.pre_start = None;
    let mut t = T::new(d);
    t.start(None);
    assert_eq!(t.state(), State::Running);
    t.stop(None);
    assert_eq!(t.state(), State::PreStop);
}

#[test]
fn start_during_pre_stop_returns_to_running_with_the_same_main() {
    let mut t = T::new(full());
    t.running();
    let main = t.pid(Main);
    t.stop(Some(1));
    assert_eq!(t.state(), State::PreStop);
    t.start(Some(2));
    t.ok(PreStop);
    assert_eq!(t.state(), State::Running);
    assert_eq!(t.pid(Main), main);
    assert!(t.kills().is_empty());
    // One started event; both requests answered.
    assert_eq!(t.events().iter().filter(|e| *e == "started").count(), 1);
    assert_eq!(t.replies(), vec![(1, None), (2, None)]);
}

#[test]
fn main_dying_during_a_cancelled_pre_stop_stops_a_plain_service() {
    let mut t = T::new(full());
    t.running();
    t.stop(None);
    t.start(None);
    t.exit(Main, WaitStatus::exited(1));
    t.ok(PreStop);
    assert_eq!(t.state(), State::PostStop);
    t.ok(PostStop);
    assert_eq!(t.state(), State::Waiting, "not restarted: no respawn");
    assert_eq!(t.spawns().iter().filter(|k| **k == Main).count(), 1);
}

#[test]
fn start_during_killed_and_post_stop_runs_post_stop_then_starts_again() {
    for at in [State::Killed, State::PostStop] {
        let mut t = T::new(full());
        t.running();
        t.stop(None);
        t.ok(PreStop);
        assert_eq!(t.state(), State::Killed);
        if at == State::PostStop {
            t.exit(Main, WaitStatus::signaled(15));
            assert_eq!(t.state(), State::PostStop);
        }
        t.start(Some(7));
        assert_eq!(t.state(), at);
        if at == State::Killed {
            t.exit(Main, WaitStatus::signaled(15));
        }
        t.ok(PostStop);
        assert_eq!(t.state(), State::PreStart);
        t.ok(PreStart);
        t.ok(PostStart);
        assert_eq!(t.state(), State::Running);
        assert_eq!(t.replies(), vec![(7, None)]);
        assert_eq!(
            t.spawns(),
            vec![
                PreStart, Main, PostStart, PreStop, PostStop, PreStart, Main, PostStart
            ]
        );
    }
}

#[test]
fn killed_lasts_until_main_exits_with_sigkill_after_the_timeout() {
    let mut t = T::new(full());
    t.running();
    let main = t.pid(Main);
    t.stop(None);
    t.ok(PreStop);
    t.jobs.tick(4_999);
    assert_eq!(t.kills(), vec![(main, Signal::TERM)]);
    t.jobs.tick(5_000);
    t.settle();
    assert_eq!(t.kills(), vec![(main, Signal::TERM), (main, Signal::KILL)]);
    assert_eq!(t.state(), State::Killed);
    t.jobs.tick(60_000);
    t.settle();
    assert_eq!(t.state(), State::Killed, "until main's exit is seen");
    t.exit(Main, WaitStatus::signaled(9));
    assert_eq!(t.state(), State::PostStop);
}

/// A timer tick that finds nothing due changes nothing a save would write: it
/// looked at every unsettled instance through `instance_mut`, which marks its
/// job changed, so every save wrote every unsettled instance again (at a
/// bring-up of 10,000 jobs, nearly the whole state at each batch of spawns).
#[test]
fn a_tick_with_nothing_due_leaves_nothing_to_save() {
    let mut t = T::new(full());
    t.running();
    t.stop(None);
    t.ok(PreStop);
    assert_eq!(t.state(), State::Killed, "unsettled: its kill timer runs");
    let _ = t.jobs.jobs.take_changes();
    let _ = t.jobs.pids.take_changes();
    t.jobs.tick(4_999);
    assert_eq!(t.jobs.changed_jobs().count(), 0);
    t.jobs.tick(5_000);
    assert_eq!(
        t.jobs.changed_jobs().collect::<Vec<_>>(),
        ["j"],
        "the kill timer's end is a change"
    );
}

/// The count a compaction checks is that of the definitions themselves: a job's
/// own, and the older one an instance started before a reload still runs.
#[test]
fn live_definitions_are_counted_as_they_are_made() {
    let mut t = T::new(full());
    t.running();
    assert_eq!(t.jobs.live_definition_count(), 1);
    let mut changed = full();
    changed.kill_timeout += 1;
    t.jobs.set_definitions(vec![changed, JobDef::new("other")]);
    assert_eq!(
        t.jobs.live_definitions().len(),
        3,
        "j's new and old, other's"
    );
    assert_eq!(t.jobs.live_definition_count(), 3);
}

/// Guarantee 7: a hook that never ends, in each place it can hold up a stop,
/// gets SIGKILL `kill timeout` after it began to (its spawn for pre-stop and
/// post-stop, the stop request for pre-start and post-start); the stop goes on
/// with the failure recorded and is answered.
#[test]
fn a_hook_that_never_ends_is_killed_after_the_kill_timeout_and_the_stop_goes_on() {
    for hook in [PreStart, PostStart, PreStop, PostStop] {
        let mut t = T::new(JobDef {
            kill_timeout: 2,
            ..full()
        });
        t.start(None);
        if hook != PreStart {
            t.ok(PreStart);
        }
        if !matches!(hook, PreStart | PostStart) {
            t.ok(PostStart);
        }
        t.now = 1_000;
        t.stop(Some(9));
        let main = t.inst().unwrap().pids.get(&Main).copied();
        if hook == PostStop {
            // Pre-stop ends, main is killed and ends: post-stop begins at 2 s.
            t.ok(PreStop);
            t.now = 2_000;
            t.exit(Main, WaitStatus::signaled(15));
        }
        let since = t.now;
        let pid = t.pid(hook);
        assert_eq!(t.jobs.next_deadline(), Some(since + 2_000), "{hook:?}");
        t.jobs.tick(since + 1_999);
        t.settle();
        assert!(
            !t.kills().contains(&(pid, Signal::KILL)),
            "{hook:?}: too soon"
        );
        t.now = since + 2_000;
        t.jobs.tick(t.now);
        t.settle();
        assert!(
            t.kills().contains(&(pid, Signal::KILL)),
            "{hook:?}: {:?}",
            t.kills()
        );
        t.exit(hook, WaitStatus::signaled(9));
        // The rest of the way down, as after any failure of that hook.
        if let Some(main) = main.filter(|_| hook != PostStop) {
            assert_eq!(t.state(), State::Killed, "{hook:?}");
            t.jobs.exited(main, WaitStatus::signaled(15), t.now);
            t.settle();
        }
        if hook != PostStop {
            t.ok(PostStop);
        }
        assert_eq!(t.state(), State::Waiting, "{hook:?}");
        assert_eq!(
            t.replies(),
            vec![(9, None)],
            "{hook:?}: the stop is answered"
        );
        let failure = t.jobs.status("j", &[]).unwrap()[0].failure.clone();
        let want = format!(
            "{} process ({pid}) did not end within the kill timeout (2 s): killed",
            hook.name()
        );
        assert_eq!(failure.as_deref(), Some(want.as_str()), "{hook:?}");
    }
}

#[test]
fn a_hook_serving_a_start_is_not_bounded_and_one_that_ends_in_time_fails_nothing() {
    let mut t = T::new(full());
    t.start(None);
    assert_eq!(
        t.jobs.next_deadline(),
        None,
        "pre-start of a start: no bound"
    );
    // A stop bounds it; a start back before the bound lifts it again.
    t.stop(None);
    assert_eq!(t.jobs.next_deadline(), Some(5_000));
    t.start(None);
    assert_eq!(t.jobs.next_deadline(), None, "serving a start again");
    t.now = 60_000;
    t.jobs.tick(t.now);
    t.settle();
    assert_eq!(t.kills(), vec![]);
    t.ok(PreStart);
    assert_eq!(t.jobs.next_deadline(), None, "nor post-start");
    t.ok(PostStart);
    t.stop(None);
    assert_eq!(t.jobs.next_deadline(), Some(65_000), "pre-stop: bounded");
    t.now = 64_000;
    t.ok(PreStop);
    // Main's own kill timeout starts now, anew.
    assert_eq!(t.jobs.next_deadline(), Some(69_000));
    t.exit(Main, WaitStatus::signaled(15));
    t.ok(PostStop);
    assert_eq!(t.state(), State::Waiting);
    assert_eq!(t.jobs.next_deadline(), None);
    assert_eq!(t.jobs.status("j", &[]).unwrap()[0].failure, None);
}

#[test]
fn restart_kills_then_post_stop_pre_start_main_without_pre_stop() {
    let mut t = T::new(full());
    t.running();
    let main = t.pid(Main);
    t.jobs.restart("j", &[], Some(3), 0).unwrap();
    t.settle();
    assert_eq!(t.kills(), vec![(main, Signal::TERM)]);
    t.exit(Main, WaitStatus::signaled(15));
    t.ok(PostStop);
    t.ok(PreStart);
    t.ok(PostStart);
    assert_eq!(
        t.spawns(),
        vec![
            PreStart, Main, PostStart, PostStop, PreStart, Main, PostStart
        ]
    );
    assert_eq!(t.replies(), vec![(3, None)]);
}

#[test]
fn restart_cancelled_after_post_stop_runs_post_stop_again() {
    let mut t = T::new(full());
    t.running();
    t.jobs.restart("j", &[], None, 0).unwrap();
    t.settle();
    t.exit(Main, WaitStatus::signaled(15));
    t.ok(PostStop);
    assert_eq!(t.state(), State::PreStart);
    t.stop(None);
    t.ok(PreStart);
    t.ok(PostStop);
    assert_eq!(t.state(), State::Waiting);
    assert_eq!(
        t.spawns(),
        vec![PreStart, Main, PostStart, PostStop, PreStart, PostStop]
    );
}

#[test]
fn pre_start_failure_runs_no_main_and_fails_the_start() {
    let mut t = T::new(full());
    t.start(Some(1));
    t.exit(PreStart, WaitStatus::exited(1));
    assert_eq!(t.state(), State::PostStop);
    t.ok(PostStop);
    assert_eq!(t.spawns(), vec![PreStart, PostStop]);
    assert_eq!(t.replies(), vec![(1, Some(JobFailed))]);
    let stopped = t
        .seen
        .iter()
        .find_map(|e| match e {
            Effect::Emit(ev) if ev.name == "stopped" => Some(ev.env.clone()),
            _ => None,
        })
        .unwrap();
    assert!(stopped.contains(&("PROCESS".into(), "pre-start".into())));
}

#[test]
fn post_start_failure_stops_the_job() {
    let mut t = T::new(full());
    t.start(Some(1));
    t.ok(PreStart);
    t.exit(PostStart, WaitStatus::exited(2));
    assert_eq!(t.state(), State::Killed);
    t.exit(Main, WaitStatus::signaled(15));
    t.ok(PostStop);
    assert_eq!(t.replies(), vec![(1, Some(JobFailed))]);
    assert!(!t.events().contains(&"started".to_string()));
}

#[test]
fn main_spawn_failure_fails_the_start() {
    let mut d = full();
    d.pre_start = None;
    d.post_start = None;
    let mut t = T::new(d);
    t.jobs.start("j", vec![], Some(1), 0).unwrap();
    let effects = t.jobs.take_effects();
    assert!(matches!(effects[0], Effect::Spawn { kind: Main, .. }));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Reply { .. })),
        "not answered before main exists"
    );
    t.jobs.spawn_failed("j", "", Main, "no such file".into(), 0);
    t.settle();
    assert_eq!(t.spawns(), vec![PostStop]);
    t.ok(PostStop);
    assert_eq!(t.replies(), vec![(1, Some(JobFailed))]);
}

#[test]
fn a_setup_failure_of_a_respawning_main_fails_the_job_with_its_reason() {
    let mut d = full();
    d.respawn = true;
    let mut t = T::new(d);
    t.running();
    let main = t.pid(Main);
    t.jobs
        .setup_failed(main, "setrlimit nofile: Operation not permitted", 0);
    t.settle();
    // No respawn: it could only fail again. post-stop still runs.
    assert_eq!(t.spawns(), vec![PreStart, Main, PostStart, PostStop]);
    t.ok(PostStop);
    let failure = t.inst().unwrap().failure.clone().unwrap();
    assert_eq!(
        failure.reason,
        "main process: setrlimit nofile: Operation not permitted"
    );
    assert_eq!(failure.status, None);
    assert_eq!(t.state(), State::Waiting);
    // An untracked pid is ignored.
    t.jobs.setup_failed(4242, "x", 0);
    assert!(t.jobs.take_effects().is_empty());
}

#[test]
fn remnants_are_killed_before_post_stop_is_spawned() {
    let mut t = T::new(full());
    t.running();
    t.stop(None);
    t.ok(PreStop);
    let main = t.pid(Main);
    t.jobs.exited(main, WaitStatus::signaled(15), 0);
    let effects = t.jobs.take_effects();
    let remnants = effects
        .iter()
        .position(|e| matches!(e, Effect::KillRemnants { .. }))
        .expect("remnants killed once main has ended");
    let post_stop = effects
        .iter()
        .position(|e| matches!(e, Effect::Spawn { kind: PostStop, .. }))
        .expect("post-stop spawned");
    assert!(remnants < post_stop, "{effects:?}");
    // Never while main runs.
    let mut r = T::new(full());
    r.running();
    assert!(
        !r.seen
            .iter()
            .any(|e| matches!(e, Effect::KillRemnants { .. }))
    );
}

#[test]
fn task_start_is_answered_when_it_stopped_with_its_failure() {
    let mut d = JobDef::new("j");
    d.task = true;
    d.main = exec();
    let mut t = T::new(d.clone());
    t.start(Some(1));
    assert_eq!(t.state(), State::Running);
    assert!(t.replies().is_empty());
    t.exit(Main, WaitStatus::exited(0));
    assert_eq!(t.replies(), vec![(1, None)]);

    let mut t = T::new(d);
    t.start(Some(1));
    t.exit(Main, WaitStatus::exited(4));
    assert_eq!(t.replies(), vec![(1, Some(JobFailed))]);
}

fn respawning(limit: RespawnLimit) -> T {
    let mut d = JobDef::new("j");
    d.respawn = true;
    d.respawn_limit = limit;
    d.main = exec();
    d.post_stop = exec().map(Box::new);
    d.pre_stop = exec().map(Box::new);
    T::new(d)
}

#[test]
fn respawn_runs_post_stop_and_never_pre_stop_and_gives_up_past_the_limit() {
    let mut t = respawning(RespawnLimit::default());
    t.start(None);
    for i in 0..10 {
        t.now = i * 100;
        t.exit(Main, WaitStatus::exited(0));
        t.ok(PostStop);
        assert_eq!(t.state(), State::Running, "respawn {i}");
    }
    t.now = 1_000;
    t.exit(Main, WaitStatus::exited(0));
    assert_eq!(t.inst().unwrap().goal, Goal::Stop);
    t.ok(PostStop);
    assert_eq!(t.state(), State::Waiting);
    assert!(!t.spawns().contains(&PreStop));
    let stopped = t
        .seen
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::Emit(ev) if ev.name == "stopped" => Some(ev.env.clone()),
            _ => None,
        })
        .unwrap();
    assert!(stopped.contains(&("RESULT".into(), "failed".into())));
    let t2 = {
        let mut t = respawning(RespawnLimit::default());
        t.start(Some(9));
        for i in 0..11 {
            t.now = i * 100;
            t.exit(Main, WaitStatus::exited(1));
            if t.state() == State::PostStop {
                t.ok(PostStop);
            }
        }
        t
    };
    // A service's start was answered when it ran; a waiting stop gets the end.
    assert_eq!(t2.replies(), vec![(9, None)]);
    let mut t = respawning(RespawnLimit::default());
    t.start(None);
    for i in 0..11 {
        t.now = i * 100;
        t.exit(Main, WaitStatus::exited(1));
        t.ok(PostStop);
    }
    assert_eq!(t.state(), State::Waiting);
    let failure = t.seen.iter().rev().find_map(|e| match e {
        Effect::Emit(ev) if ev.name == "stopping" => Some(ev.env.clone()),
        _ => None,
    });
    assert!(
        failure
            .unwrap()
            .contains(&("RESULT".into(), "failed".into()))
    );
    // The reason, as `status` shows it while the instance still stops.
    let mut t = respawning(RespawnLimit::default());
    t.start(None);
    for i in 0..10 {
        t.now = i * 100;
        t.exit(Main, WaitStatus::exited(1));
        t.ok(PostStop);
    }
    t.exit(Main, WaitStatus::exited(1));
    assert_eq!(t.state(), State::PostStop);
    let reason = t.jobs.status("j", &[]).unwrap()[0].failure.clone();
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("respawning too fast")),
        "{reason:?}"
    );
}

#[test]
fn respawns_spread_over_time_go_on_and_limit_zero_is_unlimited() {
    let mut t = respawning(RespawnLimit::Limit {
        count: 2,
        interval: 1,
    });
    t.start(None);
    for i in 0..20 {
        t.now = i * 600;
        t.exit(Main, WaitStatus::exited(1));
        t.ok(PostStop);
        assert_eq!(t.state(), State::Running);
    }
    for limit in [
        RespawnLimit::Unlimited,
        RespawnLimit::Limit {
            count: 0,
            interval: 5,
        },
    ] {
        let mut t = respawning(limit);
        t.start(None);
        for _ in 0..50 {
            t.exit(Main, WaitStatus::exited(1));
            t.ok(PostStop);
            assert_eq!(t.state(), State::Running);
        }
        assert!(t.inst().unwrap().respawns.is_empty(), "nothing piles up");
    }
}

#[test]
fn normal_exit_is_no_failure_and_no_respawn() {
    let mut t = respawning(RespawnLimit::default());
    let mut def = (*t.jobs.jobs["j"].def).clone();
    def.normal_exit = vec![ExitMatch::Status(3), ExitMatch::Signal(Signal::TERM)];
    t.jobs.set_definitions(vec![def]);
    t.start(None);
    t.exit(Main, WaitStatus::exited(3));
    t.ok(PostStop);
    assert_eq!(t.state(), State::Waiting);
    assert!(t.events().len() >= 4);
    assert!(
        t.seen
            .iter()
            .any(|e| matches!(e, Effect::Emit(ev) if ev.name == "stopped"
                && ev.env.contains(&("RESULT".into(), "ok".into()))))
    );
    t.start(None);
    t.exit(Main, WaitStatus::signaled(15));
    t.ok(PostStop);
    assert_eq!(t.state(), State::Waiting);
    // Exit 0 of a respawning service is not normal unless listed.
    t.start(None);
    t.exit(Main, WaitStatus::exited(0));
    assert_eq!(t.state(), State::PostStop);
    t.ok(PostStop);
    assert_eq!(t.state(), State::Running);
}

#[test]
fn failed_post_stop_stops_a_pending_start() {
    let mut t = T::new(full());
    t.running();
    t.stop(None);
    t.ok(PreStop);
    t.exit(Main, WaitStatus::signaled(15));
    t.start(Some(5));
    t.exit(PostStop, WaitStatus::exited(1));
    assert_eq!(t.state(), State::Waiting);
    assert_eq!(t.replies(), vec![(5, Some(JobFailed))]);
}

#[test]
fn a_failed_cycle_reports_failed_even_if_started_again_meanwhile() {
    let mut t = T::new(full());
    t.start(None);
    t.exit(PreStart, WaitStatus::exited(1));
    t.start(None);
    t.ok(PostStop);
    let stopping = t
        .seen
        .iter()
        .find_map(|e| match e {
            Effect::Emit(ev) if ev.name == "stopping" => Some(ev.env.clone()),
            _ => None,
        })
        .unwrap();
    assert!(stopping.contains(&("RESULT".into(), "failed".into())));
    assert_eq!(t.state(), State::PreStart);
    assert!(t.inst().unwrap().failure.is_none(), "cleared at starting");
}

#[test]
fn spawns_come_before_events_and_no_pid_0_is_killed() {
    let mut d = full();
    d.pre_start = None;
    d.post_start = None;
    d.pre_stop = None;
    let mut t = T::new(d);
    t.jobs.start("j", vec![], None, 0).unwrap();
    let effects = t.jobs.take_effects();
    assert!(matches!(effects[0], Effect::Spawn { kind: Main, .. }));
    // A late `spawned` for a stale process: killed, never tracked.
    t.jobs.spawned("j", "", Main, 555);
    t.jobs.spawned("j", "", PreStop, 556);
    let effects: Vec<Effect> = t
        .jobs
        .take_effects()
        .into_iter()
        .filter(|e| matches!(e, Effect::Kill { .. }))
        .collect();
    assert_eq!(
        effects,
        vec![Effect::Kill {
            pid: 556,
            signal: Signal::KILL
        }]
    );
    assert_eq!(t.state(), State::Spawned, "until main has exec'd");
    t.jobs.execd(555, 0);
    assert_eq!(t.state(), State::Running);
}

#[test]
fn a_job_runs_only_once_main_has_execd_and_one_that_never_does_fails() {
    let mut d = JobDef::new("j");
    d.main = exec();
    d.ready_timeout = Some(2);
    let mut t = T::new(d);
    t.jobs.start("j", vec![], Some(1), 0).unwrap();
    for e in t.jobs.take_effects() {
        if let Effect::Spawn { .. } = e {
            t.jobs.spawned("j", "", Main, 700);
        }
    }
    assert_eq!(t.state(), State::Spawned);
    assert_eq!(t.jobs.awaiting_exec(), vec![700]);
    assert!(
        t.jobs.awaiting_readiness().is_empty(),
        "nothing else to wait for"
    );
    t.jobs.tick(2_000);
    t.settle();
    assert_eq!(t.state(), State::Killed);
    let reason = t.jobs.status("j", &[]).unwrap()[0].failure.clone().unwrap();
    assert!(
        reason.contains("had not exec'd its program after 2 s"),
        "{reason}"
    );
}

#[test]
fn a_state_saved_with_spawns_decided_makes_them_once_loaded() {
    let mut t = T::new(full());
    t.jobs.start("j", vec![], None, 0).unwrap();
    // Saved before the pre-start was spawned (between two batches).
    let effects = t.jobs.take_effects();
    assert!(matches!(effects[0], Effect::Spawn { kind: PreStart, .. }));
    assert_eq!(t.inst().unwrap().pids.get(&PreStart), Some(&0));
    let snap: crate::journal::Snapshot = crate::journal::Snapshot {
        jobs: t.jobs.clone(),
        ..Default::default()
    };
    let defs = snap.jobs.live_definitions();
    let mut loaded = crate::journal::decode::<()>(&crate::journal::encode(&snap).unwrap(), &defs)
        .unwrap()
        .jobs;
    loaded.resume();
    let spawns: Vec<Effect> = loaded
        .take_effects()
        .into_iter()
        .filter(|e| matches!(e, Effect::Spawn { .. }))
        .collect();
    assert_eq!(
        spawns,
        vec![Effect::Spawn {
            job: "j".into(),
            instance: String::new(),
            kind: PreStart
        }]
    );
    loaded.spawned("j", "", PreStart, 42);
    assert_eq!(
        loaded.jobs["j"].instances[""].pids.get(&PreStart),
        Some(&42)
    );
    // Nothing else is pending: a second resume spawns nothing.
    loaded.resume();
    assert!(loaded.take_effects().is_empty());
}

fn expecting(expect: Expect) -> T {
    let mut d = full();
    d.pre_start = None;
    d.expect = expect;
    d.ready_timeout = Some(3);
    T::new(d)
}

#[test]
fn a_job_is_not_started_until_its_main_process_is_ready() {
    for expect in [
        Expect::Stop,
        Expect::Notify,
        Expect::Fd(3),
        Expect::Listen,
        Expect::Dbus("org.x".into()),
    ] {
        let mut t = expecting(expect.clone());
        t.start(Some(1));
        assert_eq!(t.state(), State::Spawned, "{expect:?}");
        assert!(
            !t.spawns().contains(&PostStart),
            "post-start waits for readiness"
        );
        assert!(t.replies().is_empty());
        let main = t.pid(Main);
        assert_eq!(
            t.jobs.awaiting_readiness(),
            vec![("j".to_string(), String::new(), expect.clone(), main)]
        );
        let status = t.jobs.status("j", &[]).unwrap();
        assert!(
            status[0]
                .status_text
                .as_deref()
                .unwrap()
                .contains("waiting until ready")
        );
        t.jobs.ready("j", "", None, t.now);
        t.settle();
        assert_eq!(t.state(), State::PostStart);
        t.ok(PostStart);
        assert_eq!(t.state(), State::Running);
        assert_eq!(t.replies(), vec![(1, None)]);
        assert!(t.jobs.awaiting_readiness().is_empty());
        // SIGCONT only for `expect stop`, and only once ready.
        let conts = t.kills().iter().filter(|k| k.1 == Signal::CONT).count();
        assert_eq!(conts, usize::from(expect == Expect::Stop), "{expect:?}");
    }
}

#[test]
fn readiness_that_never_comes_fails_the_start_with_a_reason() {
    let mut t = expecting(Expect::Stop);
    t.start(Some(1));
    let main = t.pid(Main);
    t.jobs.tick(2_999);
    t.settle();
    assert_eq!(t.state(), State::Spawned);
    t.jobs.tick(3_000);
    t.settle();
    assert_eq!(t.state(), State::Killed);
    assert_eq!(t.kills(), vec![(main, Signal::TERM)]);
    t.exit(Main, WaitStatus::signaled(15));
    t.ok(PostStop);
    assert_eq!(t.state(), State::Waiting);
    assert_eq!(t.replies(), vec![(1, Some(JobFailed))]);
    let reason = t.jobs.status("j", &[]).unwrap()[0].failure.clone().unwrap();
    assert!(
        reason.contains("not ready within 3 s (expect stop)"),
        "{reason}"
    );
    // A late `ready` for an instance no longer waiting changes nothing.
    t.jobs.ready("j", "", None, t.now);
    t.settle();
    assert_eq!(t.state(), State::Waiting);
}

#[test]
fn a_respawning_main_that_ends_before_it_is_ready_is_respawned() {
    let mut d = full();
    d.pre_start = None;
    d.expect = Expect::Notify;
    d.respawn = true;
    let mut t = T::new(d);
    t.start(None);
    let first = t.pid(Main);
    // sshd whose address is missing: it exits before READY=1.
    t.exit(Main, WaitStatus::exited(255));
    assert_eq!(
        t.state(),
        State::PostStop,
        "post-stop follows, no post-start"
    );
    t.ok(PostStop);
    assert_eq!(t.state(), State::Spawned, "main spawned again");
    assert_ne!(t.pid(Main), first);
    assert!(!t.spawns().contains(&PostStart));
    assert_eq!(t.jobs.awaiting_readiness().len(), 1);
    t.jobs.ready("j", "", None, t.now);
    t.settle();
    assert_eq!(t.state(), State::PostStart);
    t.ok(PostStart);
    assert_eq!(t.state(), State::Running);
    // Past the respawn limit it stops, as any respawning main.
    let mut t = T::new({
        let mut d = JobDef::new("j");
        d.main = exec();
        d.expect = Expect::Notify;
        d.respawn = true;
        d
    });
    t.start(None);
    for i in 0..11 {
        t.now = i * 100;
        t.exit(Main, WaitStatus::exited(255));
    }
    assert_eq!(t.state(), State::Waiting);
    assert!(t.jobs.awaiting_readiness().is_empty());
}

#[test]
fn a_stop_while_waiting_for_readiness_goes_ahead_at_once() {
    let mut t = expecting(Expect::Notify);
    t.start(Some(1));
    let main = t.pid(Main);
    t.stop(Some(2));
    assert_eq!(t.state(), State::Killed);
    assert_eq!(t.kills(), vec![(main, Signal::TERM)]);
    assert!(t.jobs.awaiting_readiness().is_empty());
    assert_eq!(t.jobs.next_deadline(), Some(5_000), "only the kill timeout");
}

#[test]
fn forks_are_followed_to_the_daemon() {
    let mut t = expecting(Expect::Fork);
    t.start(Some(1));
    let parent = t.pid(Main);
    assert!(t.jobs.follows_forks(parent));
    t.jobs.main_forked(parent, 500, 1, t.now);
    t.settle();
    assert_eq!(t.pid(Main), 500);
    assert_eq!(t.state(), State::PostStart);
    t.ok(PostStart);
    assert_eq!(t.state(), State::Running);
    assert_eq!(t.replies(), vec![(1, None)]);
    // The old pid routes nowhere; the daemon's exit is main's.
    t.jobs.exited(parent, WaitStatus::exited(0), t.now);
    t.settle();
    assert_eq!(t.state(), State::Running);
    t.stop(None);
    assert_eq!(t.state(), State::PreStop);
    t.ok(PreStop);
    assert_eq!(t.kills(), vec![(500, Signal::TERM)]);
    t.exit(Main, WaitStatus::signaled(15));
    assert_eq!(t.state(), State::PostStop);
}

#[test]
fn expect_daemon_needs_two_forks_and_settles_for_one_with_a_note() {
    let mut t = expecting(Expect::Daemon);
    t.start(None);
    let first = t.pid(Main);
    t.now = 10;
    t.jobs.main_forked(first, 600, 1, t.now);
    t.settle();
    assert_eq!(t.state(), State::Spawned, "one fork of two");
    t.jobs.main_forked(600, 601, 1, t.now);
    t.settle();
    assert_eq!(t.state(), State::PostStart);
    assert_eq!(t.pid(Main), 601);

    let mut t = expecting(Expect::Daemon);
    t.start(None);
    let first = t.pid(Main);
    t.jobs.main_forked(first, 700, 1, 100);
    t.settle();
    assert_eq!(t.jobs.next_deadline(), Some(100 + SECOND_FORK_GRACE_MS));
    t.jobs.tick(100 + SECOND_FORK_GRACE_MS);
    t.settle();
    assert_eq!(t.state(), State::PostStart);
    let text = t.jobs.status("j", &[]).unwrap()[0]
        .status_text
        .clone()
        .unwrap();
    assert!(text.contains("forked only once (pid 700)"), "{text}");
}

#[test]
fn a_daemon_forking_more_than_expected_is_still_followed_and_reported() {
    let mut t = expecting(Expect::Fork);
    t.start(None);
    let first = t.pid(Main);
    t.jobs.main_forked(first, 800, 1, t.now);
    t.settle();
    t.ok(PostStart);
    assert_eq!(t.state(), State::Running);
    assert!(t.jobs.follows_forks(800));
    t.jobs.main_forked(800, 801, 1, t.now);
    t.settle();
    assert_eq!(t.state(), State::Running);
    assert_eq!(t.pid(Main), 801);
    let text = t.jobs.status("j", &[]).unwrap()[0]
        .status_text
        .clone()
        .unwrap();
    assert!(text.contains("forked 2 times"), "{text}");
    assert!(text.contains("expect daemon would match"), "{text}");
    // Stopping: no more following, and the stop reaches the daemon.
    t.stop(None);
    assert!(!t.jobs.follows_forks(801));
}

#[test]
fn two_forks_seen_at_once_satisfy_expect_daemon_and_overshoot_expect_fork() {
    let mut t = expecting(Expect::Daemon);
    t.start(None);
    let first = t.pid(Main);
    t.jobs.main_forked(first, 650, 2, t.now);
    t.settle();
    assert_eq!(t.state(), State::PostStart);
    assert_eq!(t.jobs.status("j", &[]).unwrap()[0].status_text, None);

    let mut t = expecting(Expect::Fork);
    t.start(None);
    let first = t.pid(Main);
    t.jobs.main_forked(first, 660, 2, t.now);
    t.settle();
    assert_eq!(
        t.state(),
        State::PostStart,
        "ready, and followed to the end"
    );
    assert_eq!(t.pid(Main), 660);
    let text = t.jobs.status("j", &[]).unwrap()[0]
        .status_text
        .clone()
        .unwrap();
    assert!(
        text.contains("forked 2 times") && text.contains("expect daemon would match"),
        "{text}"
    );
}

#[test]
fn main_pid_and_status_text_come_from_the_daemon() {
    let mut t = expecting(Expect::Notify);
    t.start(None);
    let main = t.pid(Main);
    t.jobs.set_status_text("j", "", Some("warming up".into()));
    t.jobs.set_main_pid("j", "", 900);
    t.jobs.ready("j", "", None, t.now);
    t.settle();
    t.ok(PostStart);
    let status = &t.jobs.status("j", &[]).unwrap()[0];
    assert_eq!(status.status_text.as_deref(), Some("warming up"));
    assert_eq!(status.processes[0].pid, 900);
    t.jobs.exited(main, WaitStatus::exited(0), t.now);
    t.settle();
    assert_eq!(t.state(), State::Running, "the old main is nobody now");
}
