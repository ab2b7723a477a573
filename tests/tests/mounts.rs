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

use keel_tests::{Keel, Setup, bin, supervisor_args, wait_for};
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

/// keel following `$DIR/fstab`: two virtual entries, a local and a remote one,
/// an optional one, and a swap and a `noauto` entry that are not waited for.
fn start() -> Keel {
    let jobs = jobs();
    let jobs: Vec<(&str, &str)> = jobs.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let mut args = supervisor_args("$DIR/conf");
    args.extend(["--fstab".into(), "$DIR/fstab".into()]);
    let keel = Keel::launch(Setup {
        jobs: &jobs,
        supervisor: Some((bin("keel-supervisor"), args)),
        env: &[],
    });
    let dir = keel.dir.0.display().to_string();
    for point in ["v1", "v2", "disk", "net", "opt", "never"] {
        std::fs::create_dir_all(keel.path(point)).unwrap();
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
    std::fs::write(keel.path("fstab"), fstab).unwrap();
    wait_for("the supervisor to answer", 10 * SECOND, || {
        keel.ctl(&["version"]).status.success()
    });
    keel
}

fn seen(keel: &Keel) -> Vec<String> {
    let mut lines = keel.lines("seen");
    lines.sort();
    lines
}

/// Mounts a tmpfs at `$DIR/point` with the `mount` job and waits for it to end.
fn mount_by_job(keel: &Keel, point: &str) {
    let point = keel.path(point).display().to_string();
    keel.ctl_ok(&["start", "mount", &format!("POINT={point}")]);
}

/// Mounts a tmpfs at `$DIR/point` in keel's mount namespace, from outside.
fn mount_from_outside(keel: &Keel, point: &str) {
    let status = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", keel.init_pid))
        .args(["mount", "-t", "tmpfs", "tmpfs"])
        .arg(keel.path(point))
        .status()
        .expect("nsenter");
    assert!(status.success(), "mount {point}");
}

#[test]
fn each_event_comes_once_when_its_class_of_fstab_entries_is_mounted() {
    let keel = start();
    let dir = keel.dir.0.display().to_string();
    // The fstab was written after the supervisor read it: read it again.
    keel.ctl_ok(&["reload-configuration"]);
    mount_by_job(&keel, "v1");
    let v1 = format!("mounted {dir}/v1 tmpfs tmpfs size=1m");
    wait_for("mounted v1", 10 * SECOND, || seen(&keel) == [v1.clone()]);

    mount_by_job(&keel, "v2");
    let v2 = format!("mounted {dir}/v2 tmpfs none defaults");
    let mut expected = vec![v1, v2, "virtual-filesystems".to_string()];
    expected.sort();
    wait_for("virtual-filesystems", 10 * SECOND, || {
        seen(&keel) == expected
    });

    // The optional entry (not mounted yet) holds nothing up.
    mount_by_job(&keel, "disk");
    expected.push(format!(
        "mounted {dir}/disk ext4 /dev/keel-disk errors=remount-ro"
    ));
    expected.push("local-filesystems".into());
    expected.sort();
    wait_for("local-filesystems", 10 * SECOND, || seen(&keel) == expected);

    mount_by_job(&keel, "net");
    expected.push(format!("mounted {dir}/net nfs srv:/export ro"));
    expected.extend(["remote-filesystems".into(), "filesystem".into()]);
    expected.sort();
    wait_for("remote-filesystems and filesystem", 10 * SECOND, || {
        seen(&keel) == expected
    });

    // A second mount on a point, a reload, or a `noauto` entry emits nothing.
    mount_by_job(&keel, "v1");
    keel.ctl_ok(&["reload-configuration"]);
    mount_by_job(&keel, "never");
    last_mount_seen_and_nothing_else(&keel, expected, mount_by_job);
}

/// Mounts the optional entry last: once its `mounted` is seen and every
/// recorder is done, whatever the mounts before it gave has been recorded, and
/// it is `expected` and that `mounted`.
fn last_mount_seen_and_nothing_else(
    keel: &Keel,
    mut expected: Vec<String>,
    mount: fn(&Keel, &str),
) {
    mount(keel, "opt");
    let dir = keel.dir.0.display().to_string();
    let opt = format!("mounted {dir}/opt ext4 /dev/keel-opt nofail");
    wait_for("mounted opt", 10 * SECOND, || seen(keel).contains(&opt));
    let idle = |job: &str| {
        keel.ctl_ok(&["status", job])
            .lines()
            .all(|l| l.contains("stop/waiting"))
    };
    wait_for("the recorders to be done", 10 * SECOND, || {
        idle("on-mounted") && idle("mount")
    });
    expected.push(opt);
    expected.sort();
    assert_eq!(seen(keel), expected);
}

#[test]
fn mounts_made_while_no_supervisor_runs_are_announced_once_by_its_successor() {
    let keel = start();
    let dir = keel.dir.0.display().to_string();
    keel.ctl_ok(&["reload-configuration"]);
    mount_from_outside(&keel, "v1");
    wait_for("mounted v1", 10 * SECOND, || seen(&keel).len() == 1);
    let old = keel.supervisor_pid().unwrap();
    // SAFETY: kill(2) of the supervisor, by pid; no memory involved.
    unsafe { libc::kill(old, libc::SIGSTOP) };
    mount_from_outside(&keel, "v2");
    // SAFETY: as above.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("a new supervisor", 10 * SECOND, || {
        keel.supervisor_pid().is_some_and(|p| p != old)
    });
    let mut expected = vec![
        format!("mounted {dir}/v1 tmpfs tmpfs size=1m"),
        format!("mounted {dir}/v2 tmpfs none defaults"),
        "virtual-filesystems".to_string(),
    ];
    expected.sort();
    wait_for("v2 and virtual-filesystems", 10 * SECOND, || {
        seen(&keel) == expected
    });
    // Another crash: nothing is announced again.
    let old = keel.supervisor_pid().unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("a new supervisor", 10 * SECOND, || {
        keel.supervisor_pid().is_some_and(|p| p != old)
    });
    mount_from_outside(&keel, "disk");
    mount_from_outside(&keel, "net");
    expected.push(format!(
        "mounted {dir}/disk ext4 /dev/keel-disk errors=remount-ro"
    ));
    expected.push(format!("mounted {dir}/net nfs srv:/export ro"));
    expected.extend(["local-filesystems", "remote-filesystems", "filesystem"].map(String::from));
    expected.sort();
    wait_for("the rest", 10 * SECOND, || seen(&keel) == expected);
    last_mount_seen_and_nothing_else(&keel, expected, mount_from_outside);
}
