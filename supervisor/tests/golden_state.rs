//! Every released state format must load in the current binary (live upgrade
//! from any earlier release). The golden files are states written by the release
//! that introduced each format (`state-vN.bin`, with the job definitions it names
//! in `defs-vN.bin`, and from version 3 on the journal's log, `log-vN.bin`,
//! whose rounds take the base to the reference state); this test loads each and
//! checks what it holds.
//!
//! To add a format: bump `journal::FORMAT_VERSION`, then run this test once with
//! `KEEL_BLESS=1` to write both files for the new version, and commit them.

use keel_supervisor::job::parse;
use keel_supervisor::journal::{self, FORMAT_VERSION, Snapshot};
use keel_supervisor::lifecycle::Jobs;
use std::path::PathBuf;

fn golden(what: &str, version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{what}-v{version}.bin"))
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (bless the new format, see the module docs)",
            path.display()
        )
    })
}

/// The state every golden file was made from: a running service with pre-start
/// done, a task mid-run, an instance job, an exit seq and a pending go round, the
/// job-environment table, and a `start on` half matched (`started web` held in
/// the event queue).
fn reference() -> Snapshot {
    let mut jobs = Jobs::default();
    let defs = [
        (
            "web",
            "respawn\nenv PORT=80\npre-start exec true\nexec sleep 1000\n",
        ),
        ("backup", "task\nscript\n  sleep 5\nend script\n"),
        ("tty", "instance $TTY\nexec getty 38400 $TTY\n"),
        ("after", "start on started web and ready\nexec true\n"),
    ];
    jobs.set_definitions(defs.iter().map(|(n, t)| parse(n, t).def.unwrap()).collect());
    jobs.set_env(vec![("LANG".to_string(), "C.UTF-8".to_string())], false)
        .unwrap();
    let _ = jobs.start("web", vec![], None, 1_000);
    jobs.spawned("web", "", keel_supervisor::job::ProcessKind::PreStart, 100);
    jobs.exited(
        100,
        keel_supervisor::lifecycle::WaitStatus::exited(0),
        1_010,
    );
    jobs.spawned("web", "", keel_supervisor::job::ProcessKind::Main, 101);
    jobs.execd(101, 1_015);
    let _ = jobs.start("backup", vec![], Some(7), 1_020);
    jobs.spawned("backup", "", keel_supervisor::job::ProcessKind::Main, 102);
    jobs.execd(102, 1_025);
    let _ = jobs.start("tty", vec![("TTY".into(), "ttyS0".into())], None, 1_030);
    jobs.spawned("tty", "ttyS0", keel_supervisor::job::ProcessKind::Main, 103);
    jobs.execd(103, 1_035);
    let _ = jobs.take_effects();
    Snapshot {
        jobs,
        last_exit_seq: 42,
        booted: true,
        go_rounds: 9,
        pending_go: Some((9, 1)),
        runlevel: keel_supervisor::runlevel::Runlevels {
            current: b'2',
            previous: b'S',
        },
        shell: journal::Shell {
            cgroups: keel_supervisor::cgroup::Saved {
                root: Some("/sys/fs/cgroup/keel".into()),
                instances: [(("web".to_string(), String::new()), ())].into(),
            },
            logs: keel_supervisor::joblog::Saved {
                next_id: 4,
                pipes: [(
                    3,
                    keel_supervisor::joblog::SavedPipe {
                        job: "web".into(),
                        instance: String::new(),
                        early: true,
                        flush_base: Some(120),
                        dropped: 0,
                        closed: false,
                    },
                )]
                .into(),
            },
            confdir: Some(keel_supervisor::check::Loaded {
                confdir: "/etc/init".into(),
                binary: (8, 1234, 2_000_000, 1_700_000_000_123_456_789),
            }),
            log_priority: Some("debug".into()),
            handover: Some(keel_supervisor::control::Handover {
                pid: 77,
                generation: 3,
                next_id: 12,
                conns: vec![keel_supervisor::control::SavedConn {
                    id: 11,
                    fd: 40,
                    greeted: true,
                    busy: true,
                    closing: false,
                    unread: vec![1, 2],
                    unsent: vec![3],
                }],
            }),
            mount_events: Default::default(),
        },
    }
}

#[test]
fn every_released_state_format_loads() {
    let current = golden("state", FORMAT_VERSION);
    if std::env::var_os("KEEL_BLESS").is_some() && !current.exists() {
        // The base lacks the last exit and a cgroup; the log's one round adds them.
        let mut snap = reference();
        let cgroup = snap.shell.cgroups.instances.keys().next().cloned().unwrap();
        snap.shell.cgroups.instances.remove(&cgroup);
        snap.last_exit_seq = 41;
        let (mut writer, base, mut log) = journal::Writer::compact(&mut snap, 5).unwrap();
        snap.shell.cgroups.instances.insert(cgroup, ());
        snap.last_exit_seq = 42;
        log.extend(writer.round(&mut snap).unwrap());
        std::fs::write(&current, base).unwrap();
        std::fs::write(golden("log", FORMAT_VERSION), log).unwrap();
        std::fs::write(
            golden("defs", FORMAT_VERSION),
            journal::encode_definitions(&snap.jobs.live_definitions()).unwrap(),
        )
        .unwrap();
    }
    for version in 1..=FORMAT_VERSION {
        let path = golden("state", version);
        let defs_path = golden("defs", version);
        let defs = journal::decode_definitions(&read(&defs_path))
            .unwrap_or_else(|e| panic!("{}: {e}", defs_path.display()));
        let log = (version >= 3).then(|| read(&golden("log", version)));
        let loaded = journal::load(&read(&path), log.as_deref(), &defs)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .snapshot;
        // What a supervisor needs to carry on is all there.
        assert_eq!(loaded.last_exit_seq, 42);
        assert_eq!(loaded.pending_go, Some((9, 1)));
        assert_eq!(
            loaded.runlevel,
            keel_supervisor::runlevel::Runlevels {
                current: b'2',
                previous: b'S'
            }
        );
        assert_eq!(loaded.jobs.get_env("LANG").ok().as_deref(), Some("C.UTF-8"));
        let held: Vec<&str> = loaded
            .jobs
            .events_queued()
            .map(|q| q.event.name.as_str())
            .collect();
        assert_eq!(held, ["started"], "the half-matched `and` holds its event");
        assert_eq!(
            loaded.jobs.job("after").unwrap().start_on().ids().count(),
            1
        );
        assert!(
            loaded.shell.mount_events.is_empty(),
            "saved before the field"
        );
        // Version 2: the log priority and a re-exec's connections.
        if version >= 2 {
            assert_eq!(loaded.shell.log_priority.as_deref(), Some("debug"));
            let h = loaded.shell.handover.as_ref().expect("the handover");
            assert_eq!((h.pid, h.generation, h.conns[0].fd), (77, 3, 40));
        } else {
            assert_eq!(
                (
                    loaded.shell.log_priority.as_ref(),
                    loaded.shell.handover.as_ref()
                ),
                (None, None)
            );
        }
        assert_eq!(
            loaded.shell.cgroups.root.as_deref(),
            Some("/sys/fs/cgroup/keel")
        );
        assert!(
            loaded
                .shell
                .cgroups
                .instances
                .contains_key(&("web".to_string(), String::new()))
        );
        assert_eq!(loaded.shell.logs.pipes[&3].flush_base, Some(120));
        assert_eq!(
            loaded.shell.confdir.as_ref().map(|c| c.binary.1),
            Some(1234),
            "which binary read which job files"
        );
        let web = loaded.jobs.status("web", &[]).unwrap();
        assert_eq!(web[0].processes[0].pid, 101);
        assert_eq!(web[0].state, keel_supervisor::lifecycle::State::Running);
        let tty = loaded
            .jobs
            .status("tty", &[("TTY".into(), "ttyS0".into())])
            .unwrap();
        assert_eq!(tty[0].processes[0].pid, 103);
        // The job and its running instance share one definition again.
        let web = loaded.jobs.job("web").unwrap().def();
        assert!(web.main.is_some());
        let running = loaded.jobs.instance("web", "").unwrap();
        assert_eq!(web.id(), running.def().id());
        if version == FORMAT_VERSION {
            // Compared as saved bytes: the core's clock is not part of the state.
            assert_eq!(
                journal::encode(&loaded).unwrap(),
                journal::encode(&reference()).unwrap(),
                "the current format round-trips exactly"
            );
            assert_eq!(
                journal::encode_definitions(&loaded.jobs.live_definitions()).unwrap(),
                journal::encode_definitions(&reference().jobs.live_definitions()).unwrap(),
            );
        }
    }
}

#[test]
fn a_newer_format_is_refused_with_a_clear_error() {
    let mut bytes = journal::encode(&reference()).unwrap();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = journal::decode(&bytes, &journal::Definitions::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("newer than this supervisor's"), "{err}");
}
