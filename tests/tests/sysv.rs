//! sysvinit's control FIFO served by keel (crate `sysv`, `keel-initctl-fifo`): the
//! bridge runs as a job of keel in a PID namespace, the test writes
//! `struct init_request`s into its FIFO as sysvinit's telinit and shutdown do,
//! and keel changes runlevel with the INIT_* variables, ignores malformed writes
//! and goes on serving, and powers off on runlevel 0.

use keel_tests::{Keel, bin, wait_for};
use std::io::Write;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);
const MAGIC: i32 = 0x0309_1969;

/// A 384-byte init_request (sysvinit's initreq.h).
fn request(cmd: i32, runlevel: u8, data: &[u8]) -> Vec<u8> {
    let mut r = vec![0; 384];
    r[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    r[4..8].copy_from_slice(&cmd.to_ne_bytes());
    r[8..12].copy_from_slice(&i32::from(runlevel).to_ne_bytes());
    r[16..16 + data.len()].copy_from_slice(data);
    r
}

#[test]
fn sysvinit_requests_reach_keel_through_the_fifo() {
    let bridge = format!(
        "start on startup\nrespawn\nenv KEEL_SOCKET=$DIR/control\nexec {} --fifo $DIR/initctl --initctl {}\n",
        bin("keel-initctl-fifo").display(),
        bin("initctl").display()
    );
    let keel = Keel::start(&[
        ("fifo", &bridge),
        (
            "level",
            "start on runlevel\ntask\nexec sh -c 'echo \"$RUNLEVEL ${INIT_HALT:-}\" >> $DIR/trace'\n",
        ),
    ]);
    let fifo = keel.path("initctl");
    wait_for("the bridge to make its FIFO", 20 * SECOND, || fifo.exists());
    let write = |bytes: &[u8]| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open the FIFO");
        f.write_all(bytes).expect("write the FIFO");
    };

    // Garbage, a short write and a bad magic: ignored (the short write and the
    // bad one read as one torn request), and the bridge goes on.
    write(b"not a request at all");
    write(&request(1, b'2', b"")[..200]);
    let mut bad = request(1, b'2', b"");
    bad[0] ^= 0xff;
    write(&bad);
    // shutdown's way: the INIT_HALT variable first, then the runlevel.
    write(&request(6, 0, b"INIT_HALT=HALT\0"));
    write(&request(1, b'3', b""));
    wait_for("runlevel 3 from the FIFO", 20 * SECOND, || {
        keel.lines("trace") == ["3 HALT"]
    });
    assert_eq!(keel.ctl_ok(&["runlevel"]), "N 3\n");
    let log = std::fs::read_to_string(keel.path("log/fifo.log")).unwrap_or_default();
    assert_eq!(
        log.matches("ignored a malformed").count(),
        3,
        "the bridge's log:\n{log}"
    );

    // telinit 0 without INIT_HALT=HALT: keel powers off, which ends the namespace.
    write(&request(7, 0, b"INIT_HALT\0"));
    write(&request(1, b'0', b""));
    let mut keel = keel;
    keel.wait_end(20 * SECOND);
    assert_eq!(keel.lines("trace"), ["3 HALT", "0 "]);
}
