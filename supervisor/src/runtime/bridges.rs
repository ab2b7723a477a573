//! Bridges: the device events of the uevent socket (`uevents`) and mountall's
//! filesystem events of the mount table against fstab (`mountwatch`), each
//! opened once some job waits for its events.

use super::{Runtime, TOKEN_DEVICES, TOKEN_MOUNTS};
use crate::job;
use crate::lifecycle::Event;
use rustix::event::epoll;

impl Runtime {
    /// Opens the device and filesystem event sources once some job waits for
    /// their events.
    pub(super) fn sync_sources(&mut self) {
        let devices = self.definitions().flat_map(job::device::job_device_events);
        let (new, problems) = self.devices.sync(devices.collect(), self.link.as_ref());
        if new {
            self.watch_devices();
        }
        let wanted = self.definitions().any(crate::mounts::job_waits);
        let (new_table, more) = self.mounts.sync(wanted);
        for problem in problems.into_iter().chain(more) {
            tracing::error!("{problem}");
        }
        if let Some(fd) = self.mounts.fd().filter(|_| new_table) {
            let token = epoll::EventData::new_u64(TOKEN_MOUNTS);
            if let Err(e) = epoll::add(&self.epoll, fd, token, epoll::EventFlags::PRI) {
                tracing::error!("cannot wait for changes of the mount table: {e}");
            }
        }
        self.mounts_changed();
    }

    /// Waits on the device events' socket, if there is one.
    pub(super) fn watch_devices(&self) {
        if let Some(fd) = self.devices.fd() {
            let token = epoll::EventData::new_u64(TOKEN_DEVICES);
            if let Err(e) = epoll::add(&self.epoll, fd, token, epoll::EventFlags::IN) {
                tracing::error!("cannot wait for device events: {e}");
            }
        }
    }

    /// The uevent socket is readable: the device events jobs wait for.
    pub(super) fn device_events(&mut self) {
        for device in self.devices.read() {
            self.emit(Event {
                name: device.name,
                env: device.env,
            });
        }
    }

    /// The filesystem events due with the mount table as it is (none before
    /// `startup`), each recorded as emitted in the state saved with it.
    pub(super) fn mounts_changed(&mut self) {
        if !self.snap.booted {
            return;
        }
        for (name, env) in self.mounts.due(&mut self.snap.shell.mount_events) {
            self.emit(Event { name, env });
        }
    }
}
