//! The protocol of one client, without sockets: framing across any segmentation,
//! the handshake, refusals, deadlines, bounds — and arbitrary bytes never panic.

use super::*;
use keel_proto::ctl::{ClientHello, Error, ErrorKind, MAGIC, PowerAction, ServerHello, VERSION};
use proptest::prelude::*;

const ROOT: u32 = 0;
const NOBODY: u32 = 65534;

fn hello_bytes(version: u32) -> Vec<u8> {
    frame::encode(&ClientHello {
        magic: MAGIC,
        version,
    })
    .unwrap()
}

fn request_bytes(r: &Request) -> Vec<u8> {
    frame::encode(r).unwrap()
}

/// Takes every whole frame out of the session's output.
fn drain_frames(s: &mut Session, now: Instant) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let out = s.output().to_vec();
    s.sent(out.len(), now);
    let mut rest = &out[..];
    while let Ok(Some((range, used))) = frame::split(rest, frame::MAX_FRAME) {
        frames.push(rest[range].to_vec());
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "output holds whole frames only");
    frames
}

fn server_hello(body: &[u8]) -> ServerHello {
    frame::decode(body).expect("a server hello")
}

fn response(body: &[u8]) -> Response {
    frame::decode(body).expect("a response")
}

fn greeted(uid: u32, now: Instant) -> Session {
    let mut s = Session::new(uid, ROOT, now);
    s.feed(&hello_bytes(VERSION), now);
    assert_eq!(s.take_request(now), None);
    let frames = drain_frames(&mut s, now);
    assert!(server_hello(&frames[0]).accepted);
    s
}

fn status() -> Request {
    Request::Status {
        job: "svc".into(),
        instance: None,
        env: vec![],
    }
}

#[test]
fn requests_arrive_whole_however_the_bytes_are_cut() {
    let now = Instant::now();
    let mut bytes = hello_bytes(VERSION);
    bytes.extend(request_bytes(&status()));
    bytes.extend(request_bytes(&Request::List));
    for cut in 0..=bytes.len() {
        let mut s = Session::new(ROOT, ROOT, now);
        let mut got = Vec::new();
        for part in [&bytes[..cut], &bytes[cut..]] {
            s.feed(part, now);
            loop {
                let taken = s.take_request(now);
                let answered = !drain_frames(&mut s, now).is_empty();
                match taken {
                    Some(r) => {
                        got.push(r);
                        s.answer(&Response::Ok, MAX_QUEUED, now);
                    }
                    None if !answered => break,
                    None => {}
                }
            }
        }
        assert_eq!(got, vec![status(), Request::List], "cut at {cut}");
    }
}

#[test]
fn one_request_at_a_time_and_nothing_while_an_answer_is_unsent() {
    let now = Instant::now();
    let mut s = greeted(ROOT, now);
    s.feed(&request_bytes(&status()), now);
    s.feed(&request_bytes(&Request::List), now);
    assert_eq!(s.take_request(now), Some(status()));
    assert!(!s.wants_input());
    assert_eq!(s.take_request(now), None, "busy until answered");
    s.answer(&Response::Ok, MAX_QUEUED, now);
    assert_eq!(s.take_request(now), None, "the answer is not read yet");
    drain_frames(&mut s, now);
    assert_eq!(s.take_request(now), Some(Request::List));
}

#[test]
fn a_wrong_version_or_garbage_before_the_handshake_gets_a_refused_hello() {
    let now = Instant::now();
    let oversized = (MAX_HELLO as u32 + 1).to_le_bytes().to_vec();
    let truncated_hello = {
        let mut h = hello_bytes(VERSION);
        h[0] -= 1; // a shorter frame: the body is cut
        h
    };
    for first in [
        hello_bytes(VERSION + 1),
        hello_bytes(0),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        oversized,
        truncated_hello,
        frame::encode(&ClientHello {
            magic: *b"upst",
            version: VERSION,
        })
        .unwrap(),
    ] {
        let mut s = Session::new(ROOT, ROOT, now);
        s.feed(&first, now);
        assert_eq!(s.take_request(now), None);
        let frames = drain_frames(&mut s, now);
        assert_eq!(frames.len(), 1, "{first:?}");
        let hello = server_hello(&frames[0]);
        assert!(!hello.accepted);
        assert_eq!(hello.version, VERSION);
        assert!(s.finished(), "closed after the refusal");
        s.feed(&request_bytes(&Request::List), now);
        assert_eq!(s.take_request(now), None);
    }
}

#[test]
fn garbage_oversized_and_truncated_frames_after_the_handshake_close_with_an_error() {
    let now = Instant::now();
    let mut truncated = request_bytes(&status());
    truncated[0] -= 1;
    let cases = [
        vec![3, 0, 0, 0, 0xff, 0xff, 0xff],
        (MAX_REQUEST as u32 + 1).to_le_bytes().to_vec(),
        u32::MAX.to_le_bytes().to_vec(),
        truncated,
    ];
    for bytes in cases {
        let mut s = greeted(ROOT, now);
        s.feed(&bytes, now);
        s.feed(&request_bytes(&Request::List), now);
        assert_eq!(s.take_request(now), None, "{bytes:?}");
        let frames = drain_frames(&mut s, now);
        assert!(
            matches!(
                response(&frames[0]),
                Response::Error(Error {
                    kind: ErrorKind::InvalidRequest,
                    ..
                })
            ),
            "{bytes:?}"
        );
        assert!(s.finished());
    }
}

#[test]
fn an_unprivileged_client_may_query_but_changes_are_refused() {
    let now = Instant::now();
    let mut s = greeted(NOBODY, now);
    let change = Request::Power {
        action: PowerAction::PowerOff,
    };
    s.feed(&request_bytes(&change), now);
    s.feed(&request_bytes(&status()), now);
    assert_eq!(s.take_request(now), None);
    let frames = drain_frames(&mut s, now);
    match response(&frames[0]) {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::PermissionDenied);
            assert_eq!(
                e.message,
                "Permission denied: only root may change anything"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.take_request(now),
        Some(status()),
        "the connection goes on"
    );
    // The supervisor's own uid may change things too (an unprivileged instance).
    let mut own = Session::new(1000, 1000, now);
    own.feed(&hello_bytes(VERSION), now);
    own.feed(&request_bytes(&change), now);
    own.take_request(now);
    drain_frames(&mut own, now);
    assert_eq!(own.take_request(now), Some(change));
    let mut other = Session::new(1001, 1000, now);
    other.feed(&hello_bytes(VERSION), now);
    other.feed(&request_bytes(&Request::ResetEnv), now);
    other.take_request(now);
    drain_frames(&mut other, now);
    assert_eq!(other.take_request(now), None);
    let frames = drain_frames(&mut other, now);
    assert!(
        matches!(response(&frames[0]), Response::Error(e) if e.message.ends_with("only root or uid 1000 may change anything"))
    );
}

#[test]
fn deadlines_run_while_the_client_owes_bytes_only() {
    let t0 = Instant::now();
    let mut s = Session::new(ROOT, ROOT, t0);
    assert_eq!(s.deadline(), Some(t0 + DEADLINE), "the hello is due");
    let t1 = t0 + Duration::from_secs(1);
    s.feed(&hello_bytes(VERSION), t1);
    s.take_request(t1);
    assert_eq!(
        s.deadline(),
        Some(t1 + DEADLINE),
        "the hello's answer must be read"
    );
    drain_frames(&mut s, t1);
    assert_eq!(s.deadline(), None, "greeted and idle: nothing owed");
    let req = request_bytes(&status());
    let t2 = t0 + Duration::from_secs(2);
    s.feed(&req[..3], t2);
    assert_eq!(s.deadline(), Some(t2 + DEADLINE), "a frame begun must end");
    let t3 = t0 + Duration::from_secs(3);
    s.feed(&req[3..], t3);
    assert_eq!(s.deadline(), Some(t2 + DEADLINE));
    assert_eq!(s.take_request(t3), Some(status()));
    assert_eq!(s.deadline(), None, "a request in flight may take its time");
    let t4 = t0 + Duration::from_secs(60);
    s.answer(&Response::Ok, MAX_QUEUED, t4);
    assert_eq!(s.deadline(), Some(t4 + DEADLINE), "the answer must be read");
    drain_frames(&mut s, t4);
    assert_eq!(s.deadline(), None);
}

#[test]
fn idle_connections_that_never_spoke_are_evicted_first() {
    let t0 = Instant::now();
    let silent = Session::new(ROOT, ROOT, t0 + Duration::from_secs(5));
    let spoke_early = greeted(ROOT, t0);
    assert!(silent.eviction_rank() < spoke_early.eviction_rank());
    let mut busy = greeted(ROOT, t0);
    busy.feed(&request_bytes(&status()), t0);
    busy.take_request(t0);
    assert!(!busy.evictable());
    busy.answer(&Response::Ok, MAX_QUEUED, t0);
    assert!(!busy.evictable(), "an unsent answer is kept");
    drain_frames(&mut busy, t0);
    assert!(busy.evictable());
}

#[test]
fn large_answers_wait_for_room_small_ones_always_go() {
    let now = Instant::now();
    let mut s = greeted(ROOT, now);
    s.feed(&request_bytes(&Request::ListEnv), now);
    s.take_request(now);
    let big = Response::Value("x".repeat(SMALL_ANSWER * 2));
    s.answer(&big, SMALL_ANSWER, now);
    let frames = drain_frames(&mut s, now);
    assert!(matches!(response(&frames[0]), Response::Error(e) if e.kind == ErrorKind::Internal));
    s.feed(&request_bytes(&Request::ListEnv), now);
    s.take_request(now);
    s.answer(&big, MAX_QUEUED, now);
    assert_eq!(response(&drain_frames(&mut s, now)[0]), big);
    s.feed(&request_bytes(&Request::Version), now);
    s.take_request(now);
    s.answer(&Response::Ok, 0, now);
    assert_eq!(response(&drain_frames(&mut s, now)[0]), Response::Ok);
}

#[test]
fn end_of_input_closes_after_the_answer_in_flight() {
    let now = Instant::now();
    let mut s = greeted(ROOT, now);
    s.feed(&request_bytes(&status()), now);
    assert!(s.take_request(now).is_some());
    s.end_of_input();
    assert!(!s.finished(), "the answer is still owed");
    s.answer(&Response::Ok, MAX_QUEUED, now);
    assert!(!s.finished());
    drain_frames(&mut s, now);
    assert!(s.finished());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever arrives, in whatever pieces, with or without a valid hello first:
    /// no panic, buffers stay bounded, an unprivileged client never gets a change
    /// through, and a closing session yields nothing more.
    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        greet in any::<bool>(),
        privileged in any::<bool>(),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..CHUNK), 0..16),
    ) {
        let now = Instant::now();
        let uid = if privileged { ROOT } else { NOBODY };
        let mut s = Session::new(uid, ROOT, now);
        if greet {
            s.feed(&hello_bytes(VERSION), now);
        }
        for chunk in &chunks {
            if s.wants_input() {
                s.feed(chunk, now);
            }
            while let Some(request) = s.take_request(now) {
                prop_assert!(privileged || request.is_query());
                prop_assert!(!s.closing);
                s.answer(&Response::Ok, MAX_QUEUED, now);
                drain_frames(&mut s, now);
            }
            prop_assert!(s.rbuf.len() <= MAX_REQUEST + frame::HEADER + CHUNK);
            prop_assert!(s.output().len() <= SMALL_ANSWER);
            drain_frames(&mut s, now);
            if s.closing {
                prop_assert_eq!(s.take_request(now), None);
            }
        }
    }

    /// Valid requests mixed with frames of arbitrary bodies: each valid one comes
    /// out intact, until the first malformed frame closes the session.
    #[test]
    fn valid_requests_survive_among_arbitrary_frames(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let now = Instant::now();
        let mut s = greeted(ROOT, now);
        for body in &bodies {
            let mut f = (body.len() as u32).to_le_bytes().to_vec();
            f.extend_from_slice(body);
            s.feed(&f, now);
            s.feed(&request_bytes(&Request::List), now);
            let expected: Option<Request> = frame::decode(body).ok();
            match expected {
                Some(r) => {
                    prop_assert_eq!(s.take_request(now), Some(r));
                    s.answer(&Response::Ok, MAX_QUEUED, now);
                    drain_frames(&mut s, now);
                    prop_assert_eq!(s.take_request(now), Some(Request::List));
                    s.answer(&Response::Ok, MAX_QUEUED, now);
                    drain_frames(&mut s, now);
                }
                _ => {
                    prop_assert_eq!(s.take_request(now), None);
                    prop_assert!(s.closing);
                    break;
                }
            }
        }
    }
}

/// A session of `uid` with an answer unsent: never evictable by an
/// unprivileged newcomer.
fn with_unsent_answer(uid: u32, now: Instant) -> Session {
    let mut s = greeted(uid, now);
    s.feed(&request_bytes(&Request::List), now);
    assert_eq!(s.take_request(now), Some(Request::List));
    s.answer(&Response::Ok, MAX_QUEUED, now);
    assert!(!s.evictable());
    s
}

fn decide(sessions: &[(ConnId, Session)], uid: u32, max: usize) -> Admission {
    admission(
        sessions.iter().map(|(id, s)| (*id, s)),
        uid,
        uid == ROOT,
        max,
    )
}

#[test]
fn root_always_gets_through_and_nobody_keeps_to_its_share() {
    let now = Instant::now();
    let max = 64;
    let (unprivileged, per_uid) = unprivileged_slots(max);
    assert_eq!((unprivileged, per_uid), (56, 7));

    // nobody, with answers it never reads, holds its share and no more.
    let mut open: Vec<(ConnId, Session)> = Vec::new();
    let mut id = 0;
    while decide(&open, NOBODY, max) == Admission::Admit {
        id += 1;
        open.push((id, with_unsent_answer(NOBODY, now)));
    }
    assert_eq!(open.len(), per_uid);
    assert_eq!(decide(&open, NOBODY, max), Admission::Refuse);
    // Another user still gets in, up to the unprivileged slots.
    let mut other = 1000;
    while decide(&open, other, max) == Admission::Admit {
        id += 1;
        open.push((id, with_unsent_answer(other, now)));
        if open.iter().filter(|(_, s)| s.uid() == other).count() == per_uid {
            other += 1;
        }
    }
    assert_eq!(open.len(), unprivileged);
    assert_eq!(decide(&open, 4242, max), Admission::Refuse);
    // Root takes the reserved slots, then evicts the heaviest unprivileged uid's
    // connection even with an answer unsent.
    while decide(&open, ROOT, max) == Admission::Admit {
        id += 1;
        open.push((id, with_unsent_answer(ROOT, now)));
    }
    assert_eq!(open.len(), max);
    let Admission::Evict(victim) = decide(&open, ROOT, max) else {
        panic!("root must get through");
    };
    let victim = open.iter().find(|(i, _)| *i == victim).unwrap();
    assert!(!victim.1.privileged());
    // An unprivileged newcomer never displaces root, nor a busy connection.
    assert_eq!(decide(&open, 4242, max), Admission::Refuse);

    // Nobody's connections again, one of them idle: the slots are full.
    open.retain(|(_, s)| s.uid() != NOBODY);
    id += 1;
    let idle = id;
    open.push((idle, greeted(NOBODY, now)));
    for _ in 1..per_uid {
        id += 1;
        open.push((id, with_unsent_answer(NOBODY, now)));
    }
    assert_eq!(open.len(), max);
    // An idle connection goes before any busy one; nobody at its share only
    // displaces an idle connection of its own.
    assert_eq!(decide(&open, ROOT, max), Admission::Evict(idle));
    assert_eq!(decide(&open, NOBODY, max), Admission::Evict(idle));
}

#[test]
fn one_unprivileged_uid_queues_at_most_its_share_of_answer_bytes() {
    let now = Instant::now();
    let big = Response::Problems(
        (0..2000)
            .map(|i| keel_proto::ctl::ConfigProblem {
                job: format!("job-{i:04}-{}", "x".repeat(200)),
                condition: "start on".into(),
                message: "unknown event".into(),
            })
            .collect(),
    );
    let size = frame::encode(&big).unwrap().len();
    assert!(size > 256 << 10, "{size}");
    let mut open: Vec<(ConnId, Session)> = Vec::new();
    let mut refused = 0;
    for id in 0..64 {
        let mut s = greeted(NOBODY, now);
        s.feed(&request_bytes(&Request::List), now);
        assert_eq!(s.take_request(now), Some(Request::List));
        let room = queue_room(open.iter().map(|(i, s)| (*i, s)), &s);
        s.answer(&big, room, now);
        if s.output().len() < SMALL_ANSWER {
            refused += 1;
        }
        open.push((id, s));
    }
    let queued: usize = open.iter().map(|(_, s)| s.output().len()).sum();
    assert!(
        queued <= MAX_QUEUED / UID_SHARE + 64 * SMALL_ANSWER,
        "{queued}"
    );
    assert!(refused > 0);
    // Root still has the rest of the room.
    let root = greeted(ROOT, now);
    let room = queue_room(open.iter().map(|(i, s)| (*i, s)), &root);
    assert_eq!(room, MAX_QUEUED - queued);
}

/// A re-exec's hand-over, within one process: the old `Control` is forgotten (as
/// an exec leaves its fds open), a new one takes the connections over with what
/// they had read and not yet sent, and a request in flight is answered by it.
#[test]
fn connections_handed_over_keep_their_requests_and_bytes() {
    use std::io::{Read, Write};
    let dir = std::env::temp_dir().join(format!("keel-handover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("control");
    let mut old = Control::new(bind(&path).unwrap()).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let mut bytes = hello_bytes(VERSION);
    bytes.extend(request_bytes(&status()));
    // The next request, cut in two: its first half is read before the exec.
    let next = request_bytes(&Request::List);
    bytes.extend(&next[..3]);
    client.write_all(&bytes).unwrap();
    let id = old.accept()[0];
    let incoming = old.read(id).expect("the first request");
    assert_eq!(incoming.request, status());
    let listener = rustix::io::dup(old.listener()).unwrap();
    let handover = old.hand_over(7, 1);
    assert!(handover.conns[0].busy && handover.conns[0].unread == next[..3]);
    std::mem::forget(old);

    let mut new = Control::new(listener).unwrap();
    assert_eq!(new.take_over(handover), vec![id]);
    // The answer to the request in flight, then the rest of the next one.
    new.reply(id, &Response::Ok);
    client.write_all(&next[3..]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let list = loop {
        if let Some(incoming) = new.read(id) {
            break incoming.request;
        }
        assert!(
            Instant::now() < deadline,
            "the next request never came whole"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(list, Request::List);
    let mut answers = Vec::new();
    let want = frame::encode(&ServerHello {
        magic: MAGIC,
        version: VERSION,
        accepted: true,
    })
    .unwrap()
    .len()
        + frame::encode(&Response::Ok).unwrap().len();
    let mut buf = [0u8; 256];
    while answers.len() < want {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed");
        answers.extend_from_slice(&buf[..n]);
    }
    let (range, used) = frame::split(&answers, frame::MAX_FRAME).unwrap().unwrap();
    assert!(server_hello(&answers[range]).accepted);
    let (range, _) = frame::split(&answers[used..], frame::MAX_FRAME)
        .unwrap()
        .unwrap();
    assert_eq!(response(&answers[used..][range]), Response::Ok);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Numbers that are no open socket are not taken (nor closed).
#[test]
fn a_handover_naming_no_socket_takes_nothing() {
    let dir = std::env::temp_dir().join(format!("keel-handover-none-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut control = Control::new(bind(&dir.join("control")).unwrap()).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let saved = |fd: i32| SavedConn {
        id: 5,
        fd,
        greeted: true,
        busy: true,
        closing: false,
        unread: vec![],
        unsent: vec![],
    };
    let handover = Handover {
        pid: 1,
        generation: 0,
        next_id: 6,
        conns: vec![saved(rustix::fd::AsRawFd::as_raw_fd(&file)), saved(999_999)],
    };
    assert!(control.take_over(handover).is_empty());
    // The file is still open: it was not ours to close.
    assert!(rustix::fs::fstat(&file).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
