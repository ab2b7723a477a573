//! An fstab's text and a mount table's: the parsers never panic, and the rule
//! gives each event at most once however the table grows.
#![no_main]

use keel_supervisor::mounts::{due, parse_fstab, parse_mountinfo};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (fstab, table) = text.split_once("\n--\n").unwrap_or((&text, ""));
    let (entries, _) = parse_fstab(fstab, &|t| t.starts_with('t'));
    let table = parse_mountinfo(table);
    let mut emitted = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for upto in 0..=table.len() {
        for (name, env) in due(&entries, &table[..upto], &mut emitted) {
            assert!(seen.insert((name, env)), "an event twice");
        }
    }
});
