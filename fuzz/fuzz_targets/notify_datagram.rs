//! An sd_notify datagram's text: the parser never panics, and what it keeps is
//! bounded (a STATUS= no longer than the cap, MAINPID= above 1).
#![no_main]

use keel_supervisor::ready::notify::{MAX_DATAGRAM, MAX_STATUS, Update, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_DATAGRAM)];
    for update in parse(data) {
        match update {
            Update::Status(text) => assert!(text.chars().count() <= MAX_STATUS),
            Update::MainPid(pid) => assert!(pid > 1),
            Update::Ready | Update::Reloading | Update::Stopping => {}
        }
    }
});
