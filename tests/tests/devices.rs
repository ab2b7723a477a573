//! Device events: a dummy network device created with `ip link add` starts a job
//! on `net-device-added INTERFACE=…` and its removal stops it, also across a
//! kill -9 of the supervisor; udev's messages carry udev's properties; a
//! malformed message changes nothing.
//!
//! Each keel runs in a network namespace of its own (`unshare --net`): the
//! kernel sends a network device's uevents to the namespace that owns it, so the
//! devices made here are seen by this keel only, and vanish with it.

use keel_tests::{Keel, Setup, wait_for};
use std::process::Command;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// A service that runs while the dummy device `kd0` exists; its pre-start
/// (done before it is running) appends the variables of the event that started
/// it to `$DIR/seen`.
const WHILE_KD0: &str = "start on net-device-added INTERFACE=kd0\n\
    stop on net-device-removed INTERFACE=kd0\n\
    pre-start script\n  echo \"$INTERFACE $KERNEL $DEVPATH $SUBSYSTEM $ACTION\" >> $DIR/seen\nend script\n\
    exec sleep 1000\n";

fn start(jobs: &[(&str, &str)]) -> Keel {
    Keel::start_in(
        Setup {
            jobs,
            supervisor: None,
            env: &[],
        },
        &["--net"],
    )
}

/// Runs `ip ARGS` in keel's network namespace; whether it succeeded.
fn try_ip(keel: &Keel, args: &[&str]) -> bool {
    Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", keel.init_pid))
        .arg("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("nsenter")
        .success()
}

/// Adds the virtual network device `name`: a dummy one, or where the kernel
/// has no dummy driver (this host's has none), a bridge.
fn add(keel: &Keel, name: &str) {
    let added = ["dummy", "bridge"]
        .iter()
        .any(|kind| try_ip(keel, &["link", "add", name, "type", kind]));
    assert!(added, "ip link add {name} type dummy|bridge");
}

fn del(keel: &Keel, name: &str) {
    assert!(try_ip(keel, &["link", "del", name]), "ip link del {name}");
}

fn status(keel: &Keel, job: &str) -> String {
    keel.ctl_ok(&["status", job]).trim().to_string()
}

fn wait_status(keel: &Keel, job: &str, prefix: &str) {
    wait_for(&format!("{job}: {prefix}"), 10 * SECOND, || {
        status(keel, job).starts_with(prefix)
    });
}

#[test]
fn a_dummy_device_starts_a_job_and_its_removal_stops_it() {
    let keel = start(&[("while-kd0", WHILE_KD0)]);
    assert_eq!(status(&keel, "while-kd0"), "while-kd0 stop/waiting");
    add(&keel, "kd0");
    wait_status(&keel, "while-kd0", "while-kd0 start/running");
    assert_eq!(
        keel.lines("seen"),
        ["kd0 kd0 /devices/virtual/net/kd0 net add"]
    );
    del(&keel, "kd0");
    wait_status(&keel, "while-kd0", "while-kd0 stop/waiting");
    // Another device is no event of this job's.
    add(&keel, "kd1");
    del(&keel, "kd1");
    add(&keel, "kd0");
    wait_status(&keel, "while-kd0", "while-kd0 start/running");
    assert_eq!(keel.lines("seen").len(), 2);
}

#[test]
fn devices_added_and_removed_while_no_supervisor_runs_or_across_a_re_exec_are_seen_once() {
    let keel = start(&[("while-kd0", WHILE_KD0)]);
    keel.outage(|| add(&keel, "kd0"));
    wait_status(&keel, "while-kd0", "while-kd0 start/running");
    keel.outage(|| del(&keel, "kd0"));
    wait_status(&keel, "while-kd0", "while-kd0 stop/waiting");
    assert_eq!(
        keel.lines("seen"),
        ["kd0 kd0 /devices/virtual/net/kd0 net add"],
        "started once"
    );
    // A live re-exec takes the socket back from the lifeboat too.
    keel.ctl_ok(&["reexec"]);
    add(&keel, "kd0");
    wait_status(&keel, "while-kd0", "while-kd0 start/running");
    keel.ctl_ok(&["reexec"]);
    del(&keel, "kd0");
    wait_status(&keel, "while-kd0", "while-kd0 stop/waiting");
    assert_eq!(keel.lines("seen").len(), 2, "started once more");
}

/// Multicasts `message` to udev's group (2) in keel's network namespace, as
/// udevd does: from a thread that joins the namespace, so the test's own
/// namespace is left as it was.
fn send_as_udev(keel: &Keel, messages: Vec<Vec<u8>>) {
    use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol};
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", keel.init_pid)).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let fd = socket::socket(
            AddressFamily::Netlink,
            socket::SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .expect("a uevent socket");
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        for message in messages {
            socket::sendto(raw, &message, &NetlinkAddr::new(0, 2), MsgFlags::empty())
                .expect("multicast to udev's group");
        }
    })
    .join()
    .unwrap();
}

/// A udev message: udevd's header, then the properties.
fn udev_message(properties: &[&str]) -> Vec<u8> {
    let block: Vec<u8> = properties
        .iter()
        .flat_map(|p| [p.as_bytes(), b"\0"].concat())
        .collect();
    let mut m = b"libudev\0".to_vec();
    m.extend(0xfeed_cafe_u32.to_be_bytes());
    m.extend(40u32.to_ne_bytes());
    m.extend(40u32.to_ne_bytes());
    m.extend((block.len() as u32).to_ne_bytes());
    m.resize(40, 0);
    m.extend(block);
    m
}

#[test]
fn udevs_properties_reach_the_job_and_malformed_messages_change_nothing() {
    let keel = start(&[(
        "on-udev",
        "start on net-device-added INTERFACE=ku0\ntask\n\
         exec sh -c 'echo \"$DEVNAME $ID_NET_DRIVER $ID_PATH\" >> $DIR/seen'\n",
    )]);
    let supervisor = keel.supervisor_pid().unwrap();
    let mut broken = udev_message(&["ACTION=add", "DEVPATH=/d/ku0", "SUBSYSTEM=net"]);
    broken[8] ^= 0xff;
    let malformed = vec![
        b"no header at all".to_vec(),
        broken,
        udev_message(&["ACTION=add", "DEVPATH=/devices/virtual/net/ku0"]),
        udev_message(&["ACTION=add", "=x", "SUBSYSTEM=net", "DEVPATH=/d/ku0"]),
        udev_message(&[
            "ACTION=explode",
            "SUBSYSTEM=net",
            "DEVPATH=/d/ku0",
            "INTERFACE=ku0",
        ]),
    ];
    send_as_udev(&keel, malformed.clone());
    send_as_udev(&keel, malformed);
    send_as_udev(
        &keel,
        vec![udev_message(&[
            "ACTION=add",
            "DEVPATH=/devices/virtual/net/ku0",
            "SUBSYSTEM=net",
            "INTERFACE=ku0",
            "ID_NET_DRIVER=dummy",
            "ID_PATH=virtual-ku0",
        ])],
    );
    wait_for("the job to run once", 10 * SECOND, || {
        keel.lines("seen").len() == 1
    });
    assert_eq!(keel.lines("seen"), [" dummy virtual-ku0"]);
    assert_eq!(
        keel.supervisor_pid(),
        Some(supervisor),
        "the supervisor lives on"
    );
    // Each kind of fault is logged once, however often it came.
    let console = keel.console();
    let dropped: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("device events: a message was dropped"))
        .collect();
    assert_eq!(dropped.len(), 5, "{console}");
    for reason in [
        "neither a kernel uevent nor udev's header",
        "udev's header is broken",
        "ACTION, DEVPATH or SUBSYSTEM is missing",
        "a property is not NAME=VALUE",
        "the ACTION is none the kernel sends",
    ] {
        assert!(
            dropped.iter().any(|l| l.contains(reason)),
            "{reason}: {console}"
        );
    }
}

/// Runs ifupdown's hook `dist/debian/network/HOOK` as ifup or ifdown would,
/// against `socket`.
fn run_hook(hook: &str, socket: &std::path::Path, addrfam: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist/debian/network")
        .join(hook);
    let path = format!(
        "{}:{}",
        keel_tests::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new(&script)
        .env("PATH", path)
        .env("KEEL_SOCKET", socket)
        .envs([
            ("IFACE", "eth7"),
            ("LOGICAL", "lan"),
            ("ADDRFAM", addrfam),
            ("METHOD", "dhcp"),
        ])
        .status()
        .expect("the hook runs");
    assert!(status.success(), "{hook}");
}

#[test]
fn ifupdowns_hooks_emit_net_device_up_and_down_with_its_variables() {
    let keel = start(&[(
        "while-up",
        "start on net-device-up IFACE=eth7\nstop on net-device-down IFACE=eth7\n\
         pre-start exec sh -c 'echo \"$IFACE $LOGICAL $ADDRFAM $METHOD\" >> $DIR/seen'\n\
         exec sleep 1000\n",
    )]);
    // `ifup -a`'s own pass, and a machine where keel does not run: nothing.
    run_hook("if-up.d/keel", &keel.socket(), "meta");
    run_hook("if-up.d/keel", &keel.path("no-such-socket"), "inet");
    run_hook("if-up.d/keel", &keel.socket(), "inet");
    wait_status(&keel, "while-up", "while-up start/running");
    assert_eq!(keel.lines("seen"), ["eth7 lan inet dhcp"]);
    run_hook("if-post-down.d/keel", &keel.socket(), "inet");
    wait_status(&keel, "while-up", "while-up stop/waiting");
}
