//! Device events in the job language: `SUBSYSTEM-device-added|changed|removed`
//! (`net-device-added INTERFACE=eth0`, `block-device-added DEVNAME=/dev/sda1`),
//! as Upstart's upstart-udev-bridge emitted them.
//!
//! This module owns the events' names ([`event_name`]), which names are device
//! events ([`is_device_event`]) and which of them a job waits for
//! ([`job_device_events`]); reading the kernel's and udev's messages is the
//! supervisor's (`supervisor/src/uevents.rs`).
//!
//! The name is the device's subsystem, `-device-`, and the action: `add`,
//! `change` and `remove` become `added`, `changed` and `removed`; any other
//! action (`move`, `bind`, `unbind`, `online`, `offline`) is kept as it is
//! (`block-device-move`), as in Upstart. `net-device-up` and `net-device-down`
//! are not device events of this kind: ifupdown's hooks emit them with
//! `initctl emit`.

use super::JobDef;

/// The actions a uevent may carry, and the word each becomes in the event name.
pub const ACTIONS: [(&str, &str); 8] = [
    ("add", "added"),
    ("change", "changed"),
    ("remove", "removed"),
    ("move", "move"),
    ("online", "online"),
    ("offline", "offline"),
    ("bind", "bind"),
    ("unbind", "unbind"),
];

/// The event a device's uevent becomes: `net` and `add` give `net-device-added`.
/// `None` for an action the kernel does not send.
pub fn event_name(subsystem: &str, action: &str) -> Option<String> {
    let (_, word) = ACTIONS.iter().find(|(a, _)| *a == action)?;
    Some(format!("{subsystem}-device-{word}"))
}

/// Whether `name` is an event the device source emits.
pub fn is_device_event(name: &str) -> bool {
    name.rsplit_once("-device-")
        .is_some_and(|(subsystem, word)| {
            !subsystem.is_empty() && ACTIONS.iter().any(|(_, w)| *w == word)
        })
}

/// The device events a job's `start on` (unless it is `manual`) and `stop on`
/// name, each once.
pub fn job_device_events(def: &JobDef) -> Vec<String> {
    let start_on = def.start_on.iter().filter(|_| !def.manual);
    let mut names: Vec<String> = start_on
        .chain(def.stop_on.iter())
        .flat_map(crate::job::EventExpr::leaves)
        .filter(|e| is_device_event(&e.name))
        .map(|e| e.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::parse;

    #[test]
    fn names_as_upstart_udev_bridge_made_them() {
        assert_eq!(event_name("net", "add").unwrap(), "net-device-added");
        assert_eq!(
            event_name("block", "change").unwrap(),
            "block-device-changed"
        );
        assert_eq!(event_name("tty", "remove").unwrap(), "tty-device-removed");
        assert_eq!(event_name("block", "move").unwrap(), "block-device-move");
        assert_eq!(event_name("net", "explode"), None);
        for name in [
            "net-device-added",
            "usb-device-removed",
            "block-device-move",
        ] {
            assert!(is_device_event(name), "{name}");
        }
        for name in [
            "net-device-up",
            "net-device-down",
            "-device-added",
            "startup",
        ] {
            assert!(!is_device_event(name), "{name}");
        }
    }

    #[test]
    fn the_device_events_a_job_waits_for() {
        let def = |text: &str| parse("j", text).def.expect("the job file parses");
        let job = def(
            "start on net-device-added INTERFACE=d0 or (startup and block-device-added)\n\
             stop on net-device-removed INTERFACE=d0 or net-device-down\nexec d\n",
        );
        assert_eq!(
            job_device_events(&job),
            [
                "block-device-added",
                "net-device-added",
                "net-device-removed"
            ]
        );
        let manual = def("start on net-device-added\nstop on tty-device-removed\nmanual\nexec d\n");
        assert_eq!(job_device_events(&manual), ["tty-device-removed"]);
    }
}
