//! mountall's filesystem events: `mounted MOUNTPOINT=… TYPE=… DEVICE=…
//! OPTIONS=…` per fstab entry once it is mounted, then `virtual-filesystems`,
//! `local-filesystems`, `remote-filesystems` and `filesystem` once their class
//! is, each once per boot — also across a kill -9 of the supervisor.
//!
//! Everything is mounted in the test keel's own mount namespace (unshare's
//! `--mount-proc` makes one, private), by a job or with `nsenter --mount`, and
//! every mount is tmpfs: the test fstab gives some of them a disk's or a
//! network filesystem's type, so that each class is waited for. Nothing of the
//! host's is mounted or unmounted.

use keel_tests::{Keel, Scratch, Setup, bin, supervisor_args, wait_for};
use std::process::Command;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// One job per event, each appending what it saw to `$DIR/seen`, and `mount`,
/// which mounts a tmpfs at `$POINT`.
fn jobs() -> Vec<(&'static str, String)> {
    let mut jobs = vec![
        (
            "on-mounted",
            "start on mounted\ninstance $MOUNTPOINT\ntask\n\
             exec sh -c 'echo \"mounted $MOUNTPOINT $TYPE $DEVICE $OPTIONS\" >> $DIR/seen'\n"
                .to_string(),
        ),
        (
            "mount",
            "instance $POINT\ntask\nexec mount -t tmpfs tmpfs $POINT\n".to_string(),
        ),
    ];
    for event in [
        "virtual-filesystems",
        "local-filesystems",
        "remote-filesystems",
        "filesystem",
    ] {
        jobs.push((
            event,
            format!("start on {event}\ntask\nexec sh -c 'echo {event} >> $DIR/seen'\n"),
        ));
    }
    jobs
}

/// A keel following an fstab (in a directory of its own, with the mount points,
/// written before keel starts): two virtual entries, a local and a remote one,
/// an optional one, and a swap and a `noauto` entry that are not waited for.
struct Booted {
    keel: Keel,
    points: Scratch,
}

impl Booted {
    fn path(&self, point: &str) -> String {
        self.points.0.join(point).display().to_string()
    }
}

fn start() -> Booted {
    let points = Scratch::new("fstab");
    let dir = points.0.display().to_string();
    for point in ["v1", "v2", "disk", "net", "opt", "never"] {
        std::fs::create_dir_all(points.0.join(point)).unwrap();
    }
    let fstab = format!(
        "# keel's test fstab\n\
         tmpfs {dir}/v1 tmpfs size=1m 0 0\n\
         none {dir}/v2/ tmpfs defaults\n\
         /dev/keel-disk {dir}/disk ext4 errors=remount-ro 0 2\n\
         srv:/export {dir}/net nfs ro 0 0\n\
         /dev/keel-opt {dir}/opt ext4 nofail 0 2\n\
         /dev/keel-swap none swap sw 0 0\n\
         /dev/keel-never {dir}/never ext4 noauto 0 0\n"
    );
    std::fs::write(points.0.join("fstab"), fstab).unwrap();
    let jobs = jobs();
    let jobs: Vec<(&str, &str)> = jobs.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let mut args = supervisor_args("$DIR/conf");
    args.extend(["--fstab".into(), format!("{dir}/fstab")]);
    let keel = Keel::start_with(Setup {
        jobs: &jobs,
        supervisor: Some((bin("keel-supervisor"), args)),
        env: &[],
    });
    Booted { keel, points }
}

fn seen(keel: &Keel) -> Vec<String> {
    let mut lines = keel.lines("seen");
    lines.sort();
    lines
}

/// Mounts a tmpfs at `point` with the `mount` job and waits for it to end.
fn mount_by_job(booted: &Booted, point: &str) {
    let point = booted.path(point);
    booted
        .keel
        .ctl_ok(&["start", "mount", &format!("POINT={point}")]);
}

/// Mounts a tmpfs at `point` in keel's mount namespace, from outside.
fn mount_from_outside(booted: &Booted, point: &str) {
    let status = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", booted.keel.init_pid))
        .args(["mount", "-t", "tmpfs", "tmpfs"])
        .arg(booted.path(point))
        .status()
        .expect("nsenter");
    assert!(status.success(), "mount {point}");
}

#[test]
fn each_event_comes_once_when_its_class_of_fstab_entries_is_mounted() {
    let b = start();
    mount_by_job(&b, "v1");
    let v1 = format!("mounted {} tmpfs tmpfs size=1m", b.path("v1"));
    wait_for("mounted v1", 10 * SECOND, || seen(&b.keel) == [v1.clone()]);

    mount_by_job(&b, "v2");
    let v2 = format!("mounted {} tmpfs none defaults", b.path("v2"));
    let mut expected = vec![v1, v2, "virtual-filesystems".to_string()];
    expected.sort();
    wait_for("virtual-filesystems", 10 * SECOND, || {
        seen(&b.keel) == expected
    });

    // The optional entry (not mounted yet) holds nothing up.
    mount_by_job(&b, "disk");
    let disk = b.path("disk");
    expected.push(format!(
        "mounted {disk} ext4 /dev/keel-disk errors=remount-ro"
    ));
    expected.push("local-filesystems".into());
    expected.sort();
    wait_for("local-filesystems", 10 * SECOND, || {
        seen(&b.keel) == expected
    });

    mount_by_job(&b, "net");
    expected.push(format!("mounted {} nfs srv:/export ro", b.path("net")));
    expected.extend(["remote-filesystems".into(), "filesystem".into()]);
    expected.sort();
    wait_for("remote-filesystems and filesystem", 10 * SECOND, || {
        seen(&b.keel) == expected
    });

    // A second mount on a point, a reload, or a `noauto` entry emits nothing.
    mount_by_job(&b, "v1");
    b.keel.ctl_ok(&["reload-configuration"]);
    mount_by_job(&b, "never");
    last_mount_seen_and_nothing_else(&b, expected, mount_by_job);
}

/// Mounts the optional entry last: once its `mounted` is seen and every
/// recorder is done, whatever the mounts before it gave has been recorded, and
/// it is `expected` and that `mounted`.
fn last_mount_seen_and_nothing_else(
    b: &Booted,
    mut expected: Vec<String>,
    mount: fn(&Booted, &str),
) {
    mount(b, "opt");
    let opt = format!("mounted {} ext4 /dev/keel-opt nofail", b.path("opt"));
    wait_for("mounted opt", 10 * SECOND, || seen(&b.keel).contains(&opt));
    let idle = |job: &str| {
        b.keel
            .ctl_ok(&["status", job])
            .lines()
            .all(|l| l.contains("stop/waiting"))
    };
    wait_for("the recorders to be done", 10 * SECOND, || {
        idle("on-mounted") && idle("mount")
    });
    expected.push(opt);
    expected.sort();
    assert_eq!(seen(&b.keel), expected);
}

#[test]
fn mounts_made_while_no_supervisor_runs_are_announced_once_also_across_a_re_exec() {
    let b = start();
    mount_from_outside(&b, "v1");
    wait_for("mounted v1", 10 * SECOND, || seen(&b.keel).len() == 1);
    b.keel.outage(|| mount_from_outside(&b, "v2"));
    let mut expected = vec![
        format!("mounted {} tmpfs tmpfs size=1m", b.path("v1")),
        format!("mounted {} tmpfs none defaults", b.path("v2")),
        "virtual-filesystems".to_string(),
    ];
    expected.sort();
    wait_for("v2 and virtual-filesystems", 10 * SECOND, || {
        seen(&b.keel) == expected
    });
    // Another crash: nothing is announced again.
    b.keel.outage(|| mount_from_outside(&b, "disk"));
    mount_from_outside(&b, "net");
    let disk = b.path("disk");
    expected.push(format!(
        "mounted {disk} ext4 /dev/keel-disk errors=remount-ro"
    ));
    expected.push(format!("mounted {} nfs srv:/export ro", b.path("net")));
    expected.extend(["local-filesystems", "remote-filesystems", "filesystem"].map(String::from));
    expected.sort();
    wait_for("the rest", 10 * SECOND, || seen(&b.keel) == expected);
    // A live re-exec: nothing again, and the table is watched on.
    b.keel.ctl_ok(&["reexec"]);
    last_mount_seen_and_nothing_else(&b, expected, mount_from_outside);
}
