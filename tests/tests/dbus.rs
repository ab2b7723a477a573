//! keel's minimal D-Bus client against a real `dbus-daemon` (Debian's `dbus-daemon`)
//! and a real name owner (`dbus-test-tool black-hole` from `dbus-tests`): a name
//! owned after we started watching, and a name owned before we connected, are both
//! reported; a bus that goes away ends the connection with an error.

use keel_supervisor::ready::dbus::{Address, Bus, BusEvent};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    dir: std::path::PathBuf,
    socket: std::path::PathBuf,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("keel-dbus-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("bus");
        let config = keel_tests::bus_config(&dir);
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog"])
            .stdout(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon) must be installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The socket file exists from bind(2) on; connections work from listen(2).
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon { child, dir, socket }
    }

    fn address(&self) -> Address {
        Address::Path(self.socket.display().to_string())
    }

    /// A process owning `name` on this bus until it is killed.
    fn owner(&self, name: &str) -> Owner {
        Owner(
            Command::new("dbus-test-tool")
                .args(["black-hole", "--system", &format!("--name={name}")])
                .env(
                    "DBUS_SYSTEM_BUS_ADDRESS",
                    format!("unix:path={}", self.socket.display()),
                )
                .spawn()
                .expect("dbus-test-tool (Debian package dbus-tests) must be installed"),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Owner(Child);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Drives the connection as the event loop would, until `name` is reported owned.
fn wait_owned(bus: &mut Bus, name: &str) {
    use rustix::event::{PollFd, PollFlags, poll};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "{name} was never reported owned");
        let mut flags = PollFlags::IN;
        if bus.wants_write() {
            flags |= PollFlags::OUT;
        }
        let mut fds = [PollFd::from_borrowed_fd(bus.fd(), flags)];
        let timeout = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        poll(&mut fds, Some(&timeout)).unwrap();
        bus.flush().unwrap();
        let events = bus.on_readable().expect("the bus connection works");
        if events.contains(&BusEvent::Owned(name.to_string())) {
            return;
        }
    }
}

#[test]
fn names_owned_later_and_already_owned_are_both_reported() {
    let daemon = Daemon::start("names");
    let uid = rustix::process::getuid().as_raw();

    let mut bus = Bus::connect(&daemon.address(), uid).unwrap();
    bus.watch("org.keel.Later");
    let _later = daemon.owner("org.keel.Later");
    wait_owned(&mut bus, "org.keel.Later");

    let _early = daemon.owner("org.keel.Early");
    // Once a first connection has seen the name owned…
    let mut probe = Bus::connect(&daemon.address(), uid).unwrap();
    probe.watch("org.keel.Early");
    wait_owned(&mut probe, "org.keel.Early");
    // …a fresh connection (a supervisor after a restart) learns it from NameHasOwner.
    let mut fresh = Bus::connect(&daemon.address(), uid).unwrap();
    fresh.watch("org.keel.Early");
    wait_owned(&mut fresh, "org.keel.Early");
}

#[test]
fn a_bus_that_goes_away_ends_the_connection() {
    let mut daemon = Daemon::start("gone");
    let uid = rustix::process::getuid().as_raw();
    let mut bus = Bus::connect(&daemon.address(), uid).unwrap();
    bus.watch("org.keel.Never");
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the dead bus was never noticed");
        if bus.on_readable().is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(Bus::connect(&daemon.address(), uid).is_err());
}
