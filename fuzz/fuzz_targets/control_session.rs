//! A control connection's bytes, cut at arbitrary points: the frame decoder and
//! one session's frame handling (handshake, requests, refusals, deadlines) never
//! panic.
#![no_main]

use keel_proto::ctl::{Request, Response};
use keel_proto::frame;
use keel_supervisor::control::{MAX_QUEUED, MAX_REQUEST, Session};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    // The decoder alone, on the whole input.
    let _ = frame::decode::<Request>(data);
    let _ = frame::split(data, MAX_REQUEST);
    // The first byte says who connects and how the rest is cut.
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let uid = if head & 1 == 0 { 0 } else { 65534 };
    let chunk = usize::from(head >> 1).max(1);
    let start = Instant::now();
    let mut session = Session::new(uid, 0, start);
    for (i, piece) in rest.chunks(chunk).enumerate() {
        let now = start + Duration::from_millis(i as u64);
        if session.wants_input() {
            session.feed(piece, now);
        }
        while let Some(_request) = session.take_request(now) {
            session.answer(&Response::Ok, MAX_QUEUED, now);
            let sent = session.output().len();
            session.sent(sent, now);
        }
        let sent = session.output().len();
        session.sent(sent, now);
        let _ = session.deadline();
        let _ = session.finished();
    }
});
