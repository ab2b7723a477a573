//! A netlink message on the uevent socket (the kernel's or udev's format): the
//! parser never panics, and what it accepts is a device event whose name keel
//! knows and whose variables are printable, `KERNEL` first.
#![no_main]

use keel_supervisor::job::device::is_device_event;
use keel_supervisor::uevents::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, event)) = parse(data) {
        assert!(is_device_event(&event.name), "{}", event.name);
        assert_eq!(event.env[0].0, "KERNEL");
        for (key, value) in &event.env {
            assert!(!key.is_empty());
            assert!(value.chars().all(|c| c == '\t' || (' '..='~').contains(&c)));
        }
    }
});
