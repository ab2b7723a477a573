//! lifecycle-bench: how fast keel starts and respawns a trivial service, measured
//! with the integration harness (keel-init as PID 1 of a fresh PID namespace, the
//! real supervisor).
//!
//! ```text
//! cargo build --release && cargo build --release -p keel-init
//! cargo run --release -p keel-tests --bin lifecycle-bench [-- --runs N]
//! ```
//!
//! Measures, N runs each (default 200), median / p90 / min / max in ms:
//! - `start → reply`: a `Start` request on an open control connection (handshake
//!   done beforehand) until its answer (`start/running`);
//! - `start → exec`: the same request until the main process has exec'd (`sleep`
//!   appears under keel-init in /proc, polled in a tight loop);
//! - `initctl start`: the whole `initctl start` command, process spawn included;
//! - `kill -9 → respawn exec`: SIGKILL of the main process until a new main has
//!   exec'd (respawn), polled in a tight loop.
//!
//! The binaries come from this executable's directory (`KEEL_BIN_DIR` overrides).

use keel_proto::ctl::{Request, Response};
use keel_proto::frame;
use keel_tests::{Keel, Stats, children, comm, connect, wait_for};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const JOB: &str = "svc";

fn main() {
    let mut runs = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--runs N (N > 0)")
            }
            "-h" | "--help" => {
                println!("usage: lifecycle-bench [--runs N]");
                return;
            }
            other => panic!("unknown argument {other:?} (usage: lifecycle-bench [--runs N])"),
        }
    }
    // The harness looks two levels up (target/<profile>/deps/<test>); a bin lives
    // in target/<profile> itself, next to keel-init.
    keel_tests::use_own_binaries();

    let start = bench_start(runs);
    let respawn = bench_respawn(runs);

    println!("lifecycle-bench: {runs} runs each, times in ms");
    println!(
        "{:<26} {:>8} {:>8} {:>8} {:>8}",
        "", "median", "p90", "min", "max"
    );
    for (name, samples) in [
        ("start → reply", &start.reply),
        ("start → exec", &start.exec),
        ("initctl start (command)", &start.command),
        ("kill -9 → respawn exec", &respawn),
    ] {
        let s = Stats::of(samples);
        println!(
            "{name:<26} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            s.median, s.p90, s.min, s.max
        );
    }
}

struct StartTimes {
    reply: Vec<f64>,
    exec: Vec<f64>,
    command: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// keel-init's children whose command is `sleep` (exec'd job mains).
fn sleepers(init: i32) -> Vec<i32> {
    children(init)
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some("sleep"))
        .collect()
}

fn bench_start(runs: usize) -> StartTimes {
    let keel = Keel::start(&[(JOB, "exec sleep 1000\n")]);
    let mut out = StartTimes {
        reply: Vec::with_capacity(runs),
        exec: Vec::with_capacity(runs),
        command: Vec::with_capacity(runs),
    };
    for _ in 0..runs {
        let mut conn = connect(&keel.socket());
        let request = frame::encode(&Request::Start {
            job: JOB.into(),
            instance: None,
            env: Vec::new(),
            wait: true,
        })
        .unwrap();
        conn.set_nonblocking(true).unwrap();
        let mut reader = FrameReader::default();
        let t0 = Instant::now();
        conn.write_all(&request).expect("send start");
        let (mut reply, mut exec) = (None, None);
        while reply.is_none() || exec.is_none() {
            if exec.is_none() && !sleepers(keel.init_pid).is_empty() {
                exec = Some(t0.elapsed());
            }
            if reply.is_none()
                && let Some(body) = reader.poll(&mut conn)
            {
                reply = Some(t0.elapsed());
                match frame::decode::<Response>(&body).expect("an answer") {
                    Response::Instances(_) => {}
                    other => panic!("start failed: {other:?}"),
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "start hangs");
        }
        out.reply.push(ms(reply.unwrap()));
        out.exec.push(ms(exec.unwrap()));
        stop(&keel);
    }
    for _ in 0..runs {
        let t0 = Instant::now();
        keel.ctl_ok(&["start", JOB]);
        out.command.push(ms(t0.elapsed()));
        stop(&keel);
    }
    out
}

fn stop(keel: &Keel) {
    keel.ctl_ok(&["stop", JOB]);
    // `stop` returns once the exit is seen; keel-init has reaped it by then.
    wait_for("the main process gone", Duration::from_secs(5), || {
        sleepers(keel.init_pid).is_empty()
    });
}

fn bench_respawn(runs: usize) -> Vec<f64> {
    let keel = Keel::start(&[(JOB, "respawn\nrespawn limit unlimited\nexec sleep 1000\n")]);
    keel.ctl_ok(&["start", JOB]);
    let mut current = 0;
    wait_for("the main process", Duration::from_secs(5), || {
        current = sleepers(keel.init_pid).first().copied().unwrap_or(0);
        current != 0
    });
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let old = current;
        let t0 = Instant::now();
        // SAFETY: a plain kill(2) of a process of the bench's own namespace.
        assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0, "kill {old}");
        loop {
            if let Some(&new) = sleepers(keel.init_pid).iter().find(|&&p| p != old) {
                out.push(ms(t0.elapsed()));
                current = new;
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no respawn");
        }
        // The old one is reaped before the next round counts sleepers.
        wait_for("the old main reaped", Duration::from_secs(5), || {
            !children(keel.init_pid).contains(&old)
        });
    }
    out
}

/// A control connection past the handshake.
/// Reads one frame from a non-blocking stream, a piece at a time.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    fn poll(&mut self, s: &mut UnixStream) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => panic!("the supervisor closed the connection"),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        if self.buf.len() < frame::HEADER {
            return None;
        }
        let header: [u8; frame::HEADER] = self.buf[..frame::HEADER].try_into().unwrap();
        let len = frame::body_len(header, frame::MAX_FRAME).expect("frame length");
        if self.buf.len() < frame::HEADER + len {
            return None;
        }
        Some(self.buf[frame::HEADER..frame::HEADER + len].to_vec())
    }
}
