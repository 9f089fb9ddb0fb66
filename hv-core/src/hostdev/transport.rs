//! The modern virtio PCI transport from the driver's side: the common configuration registers
//! (virtio 1.2, 4.1.4.3), the device initialization sequence (3.1.1) with feature negotiation,
//! queue setup and the notification address of each queue (4.1.4.4). The device drivers
//! (`virtio_blk`, `virtio_net`) build on it.
//!
//! It is not the legacy transport and does no MSI-X: drivers poll.

use super::virtqueue::SplitQueue;
use super::Bus;

/// Common configuration registers (4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0;
const DEVICE_FEATURE: u64 = 4;
const DRIVER_FEATURE_SELECT: u64 = 8;
const DRIVER_FEATURE: u64 = 12;
const DEVICE_STATUS: u64 = 20;
const CONFIG_GENERATION: u64 = 21;
const QUEUE_SELECT: u64 = 22;
const QUEUE_SIZE: u64 = 24;
const QUEUE_ENABLE: u64 = 28;
const QUEUE_NOTIFY_OFF: u64 = 30;
const QUEUE_DESC: u64 = 32;
const QUEUE_DRIVER: u64 = 40;
const QUEUE_DEVICE: u64 = 48;

/// Device status bits (2.1).
const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
const FAILED: u8 = 128;

/// VIRTIO_F_VERSION_1 (6): every driver here requires it.
pub const F_VERSION_1: u64 = 1 << 32;

/// Where the device's structures are, as physical addresses (BAR plus capability offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    pub common: u64,
    pub notify: u64,
    pub notify_multiplier: u32,
    pub device: u64,
}

/// A device's transport registers.
pub struct Transport {
    regs: Regs,
}

impl Transport {
    pub fn new(regs: Regs) -> Self {
        Self { regs }
    }

    /// Resets the device, says a driver is here and negotiates VIRTIO_F_VERSION_1 plus those
    /// of `optional` the device offers (3.1.1 steps 1 to 6); returns the features agreed.
    /// `timeout` is in `Bus::now` ticks.
    pub fn start(
        &self,
        bus: &mut dyn Bus,
        optional: u64,
        timeout: u64,
    ) -> Result<u64, &'static str> {
        let status = self.regs.common + DEVICE_STATUS;
        bus.write8(status, 0);
        let begun = bus.now();
        while bus.read8(status) != 0 {
            if bus.now().wrapping_sub(begun) > timeout {
                return Err("the device does not finish its reset");
            }
        }
        bus.write8(status, ACKNOWLEDGE);
        bus.write8(status, ACKNOWLEDGE | DRIVER);
        let mut offered = 0;
        for half in 0..2u32 {
            bus.write32(self.regs.common + DEVICE_FEATURE_SELECT, half);
            offered |= u64::from(bus.read32(self.regs.common + DEVICE_FEATURE)) << (32 * half);
        }
        if offered & F_VERSION_1 == 0 {
            self.fail(bus);
            return Err("the device does not offer VIRTIO_F_VERSION_1");
        }
        let wanted = F_VERSION_1 | (offered & optional);
        for half in 0..2u32 {
            bus.write32(self.regs.common + DRIVER_FEATURE_SELECT, half);
            bus.write32(
                self.regs.common + DRIVER_FEATURE,
                (wanted >> (32 * half)) as u32,
            );
        }
        bus.write8(status, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if bus.read8(status) & FEATURES_OK == 0 {
            self.fail(bus);
            return Err("the device refuses the features");
        }
        Ok(wanted)
    }

    /// Gives queue `index` the rings of `queue` and enables it; returns the address its
    /// notifications are written to (4.1.4.4).
    pub fn queue(
        &self,
        bus: &mut dyn Bus,
        index: u16,
        queue: &SplitQueue,
    ) -> Result<u64, &'static str> {
        let common = self.regs.common;
        bus.write16(common + QUEUE_SELECT, index);
        if bus.read16(common + QUEUE_SIZE) < queue.size() {
            self.fail(bus);
            return Err("the device has no queue large enough");
        }
        bus.write16(common + QUEUE_SIZE, queue.size());
        write64(bus, common + QUEUE_DESC, queue.desc_pa());
        write64(bus, common + QUEUE_DRIVER, queue.avail_pa());
        write64(bus, common + QUEUE_DEVICE, queue.used_pa());
        bus.write16(common + QUEUE_ENABLE, 1);
        let notify_off = u64::from(bus.read16(common + QUEUE_NOTIFY_OFF));
        Ok(self.regs.notify + notify_off * u64::from(self.regs.notify_multiplier))
    }

    /// DRIVER_OK: the device is live (3.1.1 step 8).
    pub fn ready(&self, bus: &mut dyn Bus) {
        bus.write8(
            self.regs.common + DEVICE_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
    }

    /// FAILED: the driver gave the device up.
    pub fn fail(&self, bus: &mut dyn Bus) {
        bus.write8(self.regs.common + DEVICE_STATUS, FAILED);
    }

    /// Reads the device configuration with `read`, again while its generation changes under
    /// it (2.5.1), a bounded number of times.
    pub fn read_config<T>(&self, bus: &mut dyn Bus, read: impl Fn(&mut dyn Bus, u64) -> T) -> T {
        let generation = self.regs.common + CONFIG_GENERATION;
        let mut tries = 1;
        loop {
            let before = bus.read8(generation);
            let value = read(bus, self.regs.device);
            if bus.read8(generation) == before || tries == 16 {
                return value;
            }
            tries += 1;
        }
    }
}

/// 4.1.3.1: a 64-bit field may be written as its low then its high half.
fn write64(bus: &mut dyn Bus, pa: u64, value: u64) {
    bus.write32(pa, value as u32);
    bus.write32(pa + 4, (value >> 32) as u32);
}
