//! The block devices of the last phase, between the unmounts and the read-only
//! remount of `/`: attached loop devices are detached and device-mapper devices
//! removed, so that what they hold (a file on `/`, a disk) is released before
//! `/` goes read-only. Like [`crate::mounts`], the order of work is kept free of
//! system calls: a device is released only once nothing holds it (its
//! `holders/` in sysfs is empty: a dm device on a loop device goes first), in
//! passes while a pass makes progress; what is left is named as a failure.
//! The system calls (sysfs reads, LOOP_CLR_FD, DM_DEV_REMOVE) are behind
//! [`Devices`].

use nix::errno::Errno;

/// What kind of device, as sysfs tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A loop device with a backing file (`loop/backing_file`).
    Loop { backing: String },
    /// A device-mapper device (`dm/name`).
    Mapper { name: String },
}

/// One block device to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The kernel's name, `loop0`, `dm-1`.
    pub name: String,
    /// `MAJOR:MINOR`, from sysfs `dev`.
    pub dev: (u32, u32),
    pub kind: Kind,
    /// The kernel names of the devices built on this one (sysfs `holders/`).
    pub holders: Vec<String>,
}

impl Device {
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Loop { backing } => format!("loop device {} ({backing})", self.name),
            Kind::Mapper { name } => format!("device-mapper device {name} ({})", self.name),
        }
    }
}

/// The system calls of the device phase.
pub trait Devices {
    /// The attached loop devices and the device-mapper devices, now.
    fn list(&mut self) -> Vec<Device>;
    /// Detaches a loop device from its file.
    fn detach_loop(&mut self, device: &Device) -> Result<(), Errno>;
    /// Removes a device-mapper device.
    fn remove_mapper(&mut self, device: &Device) -> Result<(), Errno>;
}

/// Releases every device that nothing holds, again while a pass releases
/// one; then names each device left, with the last error it gave.
pub fn release_all(devices: &mut impl Devices, say: &mut impl crate::mounts::Say) {
    let mut errors: Vec<(String, Errno)> = Vec::new();
    loop {
        let present = devices.list();
        let mut progress = false;
        for device in present.iter().filter(|d| d.holders.is_empty()) {
            let result = match device.kind {
                Kind::Loop { .. } => devices.detach_loop(device),
                Kind::Mapper { .. } => devices.remove_mapper(device),
            };
            match result {
                Ok(()) => {
                    say.info(format!("released {}", device.describe()));
                    progress = true;
                }
                Err(e) => {
                    errors.retain(|(name, _)| *name != device.name);
                    errors.push((device.name.clone(), e));
                }
            }
        }
        if !progress {
            for device in present {
                let why = match errors.iter().find(|(name, _)| *name == device.name) {
                    Some((_, e)) => e.desc().to_string(),
                    None => format!("held by {}", device.holders.join(", ")),
                };
                say.failure(format!("cannot release {}: {why}", device.describe()));
            }
            return;
        }
    }
}

/// `MAJOR:MINOR` as sysfs writes it.
pub fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::Lines;

    /// Devices in memory: a device refuses while something holds it, or when
    /// listed in `stuck`.
    #[derive(Default)]
    struct FakeDevices {
        present: Vec<Device>,
        stuck: Vec<String>,
        calls: Vec<String>,
    }

    impl FakeDevices {
        fn release(&mut self, device: &Device) -> Result<(), Errno> {
            self.calls.push(device.name.clone());
            if self.stuck.contains(&device.name) {
                return Err(Errno::EBUSY);
            }
            self.present.retain(|d| d.name != device.name);
            for d in &mut self.present {
                d.holders.retain(|h| *h != device.name);
            }
            Ok(())
        }
    }

    impl Devices for FakeDevices {
        fn list(&mut self) -> Vec<Device> {
            self.present.clone()
        }
        fn detach_loop(&mut self, device: &Device) -> Result<(), Errno> {
            assert!(matches!(device.kind, Kind::Loop { .. }));
            self.release(device)
        }
        fn remove_mapper(&mut self, device: &Device) -> Result<(), Errno> {
            assert!(matches!(device.kind, Kind::Mapper { .. }));
            self.release(device)
        }
    }

    fn looped(name: &str, holders: &[&str]) -> Device {
        Device {
            name: name.into(),
            dev: (7, 0),
            kind: Kind::Loop {
                backing: format!("/srv/{name}.img"),
            },
            holders: holders.iter().map(|h| h.to_string()).collect(),
        }
    }

    fn mapper(name: &str, dm: &str) -> Device {
        Device {
            name: dm.into(),
            dev: (254, 0),
            kind: Kind::Mapper { name: name.into() },
            holders: Vec::new(),
        }
    }

    #[test]
    fn a_mapper_on_a_loop_device_goes_first_then_the_loop() {
        let mut devices = FakeDevices {
            present: vec![looped("loop0", &["dm-0"]), mapper("crypt", "dm-0")],
            ..FakeDevices::default()
        };
        let mut say = Lines::default();
        release_all(&mut devices, &mut say);
        assert_eq!(devices.calls, ["dm-0", "loop0"]);
        assert_eq!(
            say.0,
            [
                "released device-mapper device crypt (dm-0)",
                "released loop device loop0 (/srv/loop0.img)"
            ]
        );
        assert!(devices.present.is_empty());
    }

    #[test]
    fn what_cannot_be_released_is_named_with_its_reason() {
        let mut devices = FakeDevices {
            present: vec![
                looped("loop0", &["dm-0"]),
                mapper("crypt", "dm-0"),
                looped("loop1", &[]),
            ],
            stuck: vec!["dm-0".into()],
            ..FakeDevices::default()
        };
        let mut say = Lines::default();
        release_all(&mut devices, &mut say);
        assert_eq!(
            say.0,
            [
                "released loop device loop1 (/srv/loop1.img)",
                "FAIL cannot release loop device loop0 (/srv/loop0.img): held by dm-0",
                "FAIL cannot release device-mapper device crypt (dm-0): Device or resource busy"
            ]
        );
        // dm-0 was tried once per pass, never loop0 while held.
        assert_eq!(devices.calls, ["dm-0", "loop1", "dm-0"]);
    }

    #[test]
    fn nothing_to_release_says_nothing() {
        let mut devices = FakeDevices::default();
        let mut say = Lines::default();
        release_all(&mut devices, &mut say);
        assert!(say.0.is_empty() && devices.calls.is_empty());
    }

    #[test]
    fn dev_numbers_are_read_as_sysfs_writes_them() {
        assert_eq!(parse_dev("7:3\n"), Some((7, 3)));
        assert_eq!(parse_dev("254:0"), Some((254, 0)));
        for bad in ["", "7", "7:", "x:1", "1:2:3"] {
            assert_eq!(parse_dev(bad), None, "{bad}");
        }
    }
}
