//! keel-init's side of its channel: a packet from the supervisor (`ToInit`),
//! and the supervisor's side (`ToSupervisor`), decoded from arbitrary bytes:
//! never a panic, and whatever decodes encodes back to the same bytes.
#![no_main]

use keel_proto::init::{ToInit, ToSupervisor, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; 256];
    if let Some(msg) = decode::<ToInit>(data) {
        if let ToInit::Deposit { name } | ToInit::Withdraw { name } = &msg {
            let _ = (name.is_valid(), name.as_str());
        }
        let again = encode(&msg, &mut buf).expect("a decoded message encodes");
        assert_eq!(decode::<ToInit>(again), Some(msg));
    }
    if let Some(msg) = decode::<ToSupervisor>(data) {
        let again = encode(&msg, &mut buf).expect("a decoded message encodes");
        assert_eq!(decode::<ToSupervisor>(again), Some(msg));
    }
});
