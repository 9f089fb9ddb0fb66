//! virtio 1.x devices over PCI, modern transport only (virtio 1.2, 4.1): each device is a PCI
//! function (vendor 0x1AF4, device 0x1040 + type, revision 1) whose one memory BAR holds the
//! common configuration, ISR status, device configuration and notification structures, each
//! announced by a vendor-specific capability (4.1.4). Interrupts are INTx, or MSI-X once the
//! driver enables it: a vector per queue and one for configuration changes, chosen by the
//! driver through `queue_msix_vector` and `config_msix_vector` (4.1.4.3, 4.1.5.1.2), the table
//! and PBA in the second page of the BAR.
//!
//! Queue notifications are only recorded by MMIO writes; `service` does the work with guest
//! memory at hand, so the transport stays a host-testable state machine. A malformed queue is a
//! device error: the device sets DEVICE_NEEDS_RESET (2.1.1) and stops until the driver resets
//! it. It is not a legacy (0.9.5) transport and it does not offer packed queues or indirect
//! descriptors.

pub mod blk;
pub mod console;
pub mod net;
pub mod queue;

use alloc::vec::Vec;

use crate::mem::GuestMemory;
use crate::msix::{self, Message, Msix};
use crate::pci::{ConfigSpace, Identity};
use queue::{Queue, QueueError, QUEUE_MAX};

/// Bytes of the BAR, and where each structure lives in it. The MSI-X table and PBA share no
/// 4 KiB page with the other structures (PCI 3.0, 6.8.2).
pub const BAR_SIZE: u32 = 0x2000;
const COMMON: u64 = 0x000;
const COMMON_LEN: u32 = 0x38;
const ISR: u64 = 0x100;
const ISR_LEN: u32 = 4;
const DEVICE: u64 = 0x200;
const DEVICE_LEN: u32 = 0x100;
const NOTIFY: u64 = 0x300;
const NOTIFY_LEN: u32 = 4;
const MSIX_TABLE: u32 = 0x1000;
const MSIX_PBA: u32 = 0x1800;
// Past the first page, and inside the BAR with room for the largest table.
const _: () = assert!(
    MSIX_TABLE >= 0x1000 && MSIX_PBA >= MSIX_TABLE + msix::ENTRY_BYTES * msix::MAX_VECTORS as u32
);
const _: () = assert!(MSIX_PBA + 8 <= BAR_SIZE);

/// `cfg_type` of the vendor capabilities (4.1.4).
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

/// Device status bits (2.1).
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_NEEDS_RESET: u8 = 64;
const F_VERSION_1: u64 = 1 << 32;
/// ISR bits (4.1.4.5).
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;
const NO_VECTOR: u16 = 0xFFFF;
const VENDOR: u16 = 0x1AF4;

/// Common configuration field offsets (4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0C;
    pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1A;
    pub const QUEUE_ENABLE: u64 = 0x1C;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1E;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
}

/// The device behind a transport.
pub enum Device {
    Blk(blk::Blk),
    Net(net::Net),
    Console(console::Console),
}

impl Device {
    fn type_id(&self) -> u16 {
        match self {
            Self::Blk(_) => blk::DEVICE_ID,
            Self::Net(_) => net::DEVICE_ID,
            Self::Console(_) => console::DEVICE_ID,
        }
    }

    /// PCI class code: mass storage/SCSI, network/Ethernet, communication/other.
    fn class(&self) -> u32 {
        match self {
            Self::Blk(_) => 0x01_00_00,
            Self::Net(_) => 0x02_00_00,
            Self::Console(_) => 0x07_80_00,
        }
    }

    fn features(&self) -> u64 {
        F_VERSION_1
            | match self {
                Self::Blk(b) => b.features(),
                Self::Net(n) => n.features(),
                Self::Console(_) => 0,
            }
    }

    fn queue_count(&self) -> usize {
        match self {
            Self::Blk(_) => 1,
            Self::Net(_) => net::QUEUES,
            Self::Console(_) => console::QUEUES,
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        match self {
            Self::Blk(b) => b.read_config(offset, data),
            Self::Net(n) => n.read_config(offset, data),
            Self::Console(c) => c.read_config(data),
        }
    }

    fn has_pending(&self) -> bool {
        matches!(self, Self::Net(n) if n.has_pending())
    }

    fn reset(&mut self) {
        if let Self::Net(n) = self {
            n.reset();
        }
    }
}

/// One virtio device as a PCI function.
pub struct VirtioPci {
    pub pci: ConfigSpace,
    pub device: Device,
    msix: Msix,
    queues: Vec<Queue>,
    queue_vectors: Vec<u16>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    config_vector: u16,
    isr: u8,
    /// One bit per queue the driver notified and the device has not looked at yet.
    notified: u32,
}

impl VirtioPci {
    /// The device with its BAR at `bar` (in the PCI hole) and INTA# reported as `line`.
    pub fn new(device: Device, bar: u32, line: u8) -> Self {
        let mut pci = ConfigSpace::new(&Identity {
            vendor: VENDOR,
            device: 0x1040 + device.type_id(),
            class: device.class(),
            revision: 1,
            subsystem_vendor: VENDOR,
            subsystem: 0x1100,
        });
        pci.set_memory_bar(0, bar, BAR_SIZE);
        pci.set_interrupt(1, line);
        for (cfg_type, offset, len) in [
            (CFG_COMMON, COMMON, COMMON_LEN),
            (CFG_ISR, ISR, ISR_LEN),
            (CFG_DEVICE, DEVICE, DEVICE_LEN),
        ] {
            let body = vendor_cap(16, cfg_type, offset as u32, len);
            // The header has room for every capability here: 0x40 + 3 * 16 + 20 < 256.
            let _ = pci.add_capability(CAP_VENDOR, &body[..14]);
        }
        // notify_off_multiplier 0: every queue notifies at the same address (4.1.4.4).
        let mut notify = [0u8; 18];
        notify[..14].copy_from_slice(&vendor_cap(20, CFG_NOTIFY, NOTIFY as u32, NOTIFY_LEN)[..14]);
        let _ = pci.add_capability(CAP_VENDOR, &notify);
        let n = device.queue_count();
        // A vector per queue and one for configuration changes. The layout is fixed and the
        // capability ends at 0x90 (a unit test walks it), so this cannot fail.
        let vectors = n as u16 + 1;
        let msix = Msix::new(&mut pci, vectors, 0, MSIX_TABLE, MSIX_PBA)
            .expect("the MSI-X capability fits after the virtio ones");
        Self {
            pci,
            device,
            msix,
            queues: (0..n).map(|_| Queue::new(QUEUE_MAX)).collect(),
            queue_vectors: alloc::vec![NO_VECTOR; n],
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            config_vector: NO_VECTOR,
            isr: 0,
            notified: 0,
        }
    }

    /// The guest-physical address of the BAR, while memory decoding is on.
    pub fn bar(&self) -> Option<u64> {
        self.pci.memory_bar(0)
    }

    /// The level of INTA#, which is idle while MSI-X is enabled (PCI 3.0, 6.8.2.3).
    pub fn irq_level(&self) -> bool {
        self.isr != 0 && self.pci.intx_enabled() && !self.msix.enabled(&self.pci)
    }

    /// The next MSI-X message the device may send now (see `msix::Msix::take_message`).
    pub fn take_message(&mut self) -> Option<Message> {
        self.msix.take_message(&self.pci)
    }

    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        let value = match offset {
            o if o.wrapping_sub(COMMON) < u64::from(COMMON_LEN) => self.common_read(o),
            o if o.wrapping_sub(ISR) < u64::from(ISR_LEN) => {
                // Reading the ISR acknowledges the interrupt (4.1.4.5).
                let isr = core::mem::take(&mut self.isr);
                self.pci.set_interrupt_status(false);
                u64::from(isr)
            }
            o if o.wrapping_sub(DEVICE) < u64::from(DEVICE_LEN) => {
                let mut buf = [0u8; 8];
                let n = usize::from(size.min(8));
                self.device.read_config(o - DEVICE, &mut buf[..n]);
                u64::from_le_bytes(buf)
            }
            o if self.msix.claims(o) => self.msix.read(o, size),
            _ => 0,
        };
        value & mask(size)
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        match offset {
            o if o.wrapping_sub(COMMON) < u64::from(COMMON_LEN) => {
                self.common_write(o, size, value)
            }
            o if o.wrapping_sub(NOTIFY) < u64::from(NOTIFY_LEN) => {
                if let Some(bit) = 1u32.checked_shl(u32::from(value as u16)) {
                    self.notified |= bit & self.queue_mask();
                }
            }
            o if self.msix.claims(o) => self.msix.write(o, size, value),
            _ => log::trace!("virtio: write to read-only offset {offset:#x} dropped"),
        }
    }

    /// Does the work notifications asked for and delivers pending frames, with guest memory at
    /// hand; `emit` takes console output. Interrupts for the queues whose buffers were used.
    pub fn service(&mut self, mem: &mut dyn GuestMemory, emit: &mut dyn FnMut(&[u8])) {
        if self.status & STATUS_DRIVER_OK == 0 || self.status & STATUS_NEEDS_RESET != 0 {
            return;
        }
        if self.notified == 0 && !self.device.has_pending() {
            return;
        }
        self.notified = 0;
        let used = |queue: usize, any: bool| u32::from(any) << queue;
        let result = match &mut self.device {
            Device::Blk(b) => b.service(&mut self.queues[0], mem).map(|u| used(0, u)),
            Device::Net(n) => n.service(&mut self.queues, mem),
            Device::Console(c) => {
                let q = console::TRANSMIT_QUEUE;
                c.service(&mut self.queues[q], mem, emit)
                    .map(|u| used(q, u))
            }
        };
        match result {
            Ok(queues) => self.notify_queues(queues),
            Err(e) => self.fail(e),
        }
    }

    /// Whether `service` has work: a notification or frames waiting for the guest.
    pub fn needs_service(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0
            && self.status & STATUS_NEEDS_RESET == 0
            && (self.notified != 0 || self.device.has_pending())
    }

    pub fn needs_reset(&self) -> bool {
        self.status & STATUS_NEEDS_RESET != 0
    }

    fn fail(&mut self, e: QueueError) {
        log::warn!(
            "virtio device {:#x}: {e}; the device needs a reset",
            0x1040 + self.device.type_id()
        );
        self.status |= STATUS_NEEDS_RESET;
        // The ISR's configuration bit is set whether or not MSI-X is on (4.1.4.5.1).
        self.isr |= ISR_CONFIG;
        if self.msix.enabled(&self.pci) {
            self.msix.signal(self.config_vector);
        } else {
            self.pci.set_interrupt_status(true);
        }
    }

    /// Interrupts for the queues in the bit mask `queues`: each queue's vector with MSI-X
    /// (none for NO_VECTOR), else the ISR's queue bit and INTA# (4.1.4.5.1).
    fn notify_queues(&mut self, queues: u32) {
        if queues == 0 {
            return;
        }
        if !self.msix.enabled(&self.pci) {
            self.isr |= ISR_QUEUE;
            self.pci.set_interrupt_status(true);
            return;
        }
        for (q, &vector) in self.queue_vectors.iter().enumerate() {
            if queues & 1 << q != 0 {
                self.msix.signal(vector);
            }
        }
    }

    /// What `config_msix_vector` or `queue_msix_vector` holds after the driver wrote `vector`:
    /// the vector if the table has it, NO_VECTOR (the mapping failed) if not (4.1.5.1.2.1).
    fn mappable(&self, vector: u64) -> u16 {
        let vector = vector as u16;
        if vector < self.msix.vectors() {
            vector
        } else {
            NO_VECTOR
        }
    }

    fn queue_mask(&self) -> u32 {
        (1u32 << self.queues.len()) - 1
    }

    fn offered(&self) -> u64 {
        self.device.features()
    }

    fn common_read(&self, offset: u64) -> u64 {
        use common::*;
        let q = self.queues.get(usize::from(self.queue_select));
        let (start, value) = match offset & !7 {
            QUEUE_DESC | QUEUE_DRIVER | QUEUE_DEVICE => {
                let base = offset & !7;
                let v = q.map_or(0, |q| match base {
                    QUEUE_DESC => q.desc,
                    QUEUE_DRIVER => q.driver,
                    _ => q.device,
                });
                (base, v)
            }
            _ => {
                let start = field_start(offset);
                let v = match start {
                    DEVICE_FEATURE_SELECT => u64::from(self.device_feature_select),
                    DEVICE_FEATURE => match self.device_feature_select {
                        0 => self.offered() & 0xFFFF_FFFF,
                        1 => self.offered() >> 32,
                        _ => 0,
                    },
                    DRIVER_FEATURE_SELECT => u64::from(self.driver_feature_select),
                    DRIVER_FEATURE => match self.driver_feature_select {
                        0 => self.driver_features & 0xFFFF_FFFF,
                        1 => self.driver_features >> 32,
                        _ => 0,
                    },
                    CONFIG_MSIX_VECTOR => u64::from(self.config_vector),
                    NUM_QUEUES => self.queues.len() as u64,
                    DEVICE_STATUS => u64::from(self.status),
                    CONFIG_GENERATION => 0,
                    QUEUE_SELECT => u64::from(self.queue_select),
                    QUEUE_SIZE => q.map_or(0, |q| u64::from(q.size)),
                    QUEUE_MSIX_VECTOR => self
                        .queue_vectors
                        .get(usize::from(self.queue_select))
                        .map_or(u64::from(NO_VECTOR), |&v| u64::from(v)),
                    QUEUE_ENABLE => q.map_or(0, |q| u64::from(q.ready)),
                    // Every queue notifies at offset 0 of the notification structure.
                    QUEUE_NOTIFY_OFF => 0,
                    _ => 0,
                };
                (start, v)
            }
        };
        value >> (8 * (offset - start))
    }

    fn common_write(&mut self, offset: u64, size: u8, value: u64) {
        use common::*;
        let qi = usize::from(self.queue_select);
        match (offset, size) {
            (DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = value as u32,
            (DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = value as u32,
            (DRIVER_FEATURE, 4) => {
                let shift = match self.driver_feature_select {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let keep = !(0xFFFF_FFFFu64 << shift);
                self.driver_features =
                    (self.driver_features & keep) | (value & 0xFFFF_FFFF) << shift;
            }
            (CONFIG_MSIX_VECTOR, 2) => self.config_vector = self.mappable(value),
            (DEVICE_STATUS, 1) => self.write_status(value as u8),
            (QUEUE_SELECT, 2) => self.queue_select = value as u16,
            (QUEUE_SIZE, 2) => {
                if let Some(q) = self.queues.get_mut(qi).filter(|q| !q.ready) {
                    q.set_size(value as u16);
                }
            }
            (QUEUE_MSIX_VECTOR, 2) => {
                let vector = self.mappable(value);
                if let Some(v) = self.queue_vectors.get_mut(qi) {
                    *v = vector;
                }
            }
            (QUEUE_ENABLE, 2) => {
                if let Some(q) = self.queues.get_mut(qi) {
                    // Only 1 may be written (4.1.4.3.2); a queue is disabled by device reset.
                    q.ready |= value == 1;
                }
            }
            (o, 4 | 8) if (QUEUE_DESC..QUEUE_DEVICE + 8).contains(&o) => {
                self.write_queue_address(o, size, value)
            }
            _ => log::trace!("virtio: common config write {offset:#x}/{size} dropped"),
        }
    }

    /// The 64-bit queue addresses, written whole or as two dwords.
    fn write_queue_address(&mut self, offset: u64, size: u8, value: u64) {
        let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) else {
            return;
        };
        if q.ready {
            return;
        }
        let field = match offset & !7 {
            common::QUEUE_DESC => &mut q.desc,
            common::QUEUE_DRIVER => &mut q.driver,
            _ => &mut q.device,
        };
        *field = match (size, offset & 4) {
            (8, 0) => value,
            (4, 0) => (*field & !0xFFFF_FFFF) | (value & 0xFFFF_FFFF),
            (4, _) => (*field & 0xFFFF_FFFF) | value << 32,
            _ => *field,
        };
    }

    /// Device status (2.1, 3.1.1): 0 resets; FEATURES_OK sticks only if the driver accepted a
    /// subset of the offered features that includes VERSION_1.
    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value & !STATUS_NEEDS_RESET;
        let acceptable =
            self.driver_features & !self.offered() == 0 && self.driver_features & F_VERSION_1 != 0;
        if value & STATUS_FEATURES_OK != 0 && !acceptable {
            value &= !STATUS_FEATURES_OK;
        }
        self.status = value | (self.status & STATUS_NEEDS_RESET);
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_vectors.fill(NO_VECTOR);
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.queue_select = 0;
        self.config_vector = NO_VECTOR;
        self.isr = 0;
        self.notified = 0;
        self.msix.clear_pending();
        self.pci.set_interrupt_status(false);
        self.device.reset();
    }
}

/// The first byte of the common configuration field holding `offset`.
fn field_start(offset: u64) -> u64 {
    use common::*;
    match offset {
        0x00..=0x0F => offset & !3,
        0x10..=0x13 => offset & !1,
        DEVICE_STATUS | CONFIG_GENERATION => offset,
        _ => offset & !1,
    }
}

/// `struct virtio_pci_cap` after cap_vndr and cap_next: cap_len, cfg_type, bar, id, padding,
/// offset, length (4.1.4), then room for notify_off_multiplier.
fn vendor_cap(cap_len: u8, cfg_type: u8, offset: u32, length: u32) -> [u8; 18] {
    let mut b = [0u8; 18];
    b[0] = cap_len;
    b[1] = cfg_type;
    b[6..10].copy_from_slice(&offset.to_le_bytes());
    b[10..14].copy_from_slice(&length.to_le_bytes());
    b
}

fn mask(size: u8) -> u64 {
    match size {
        1..=7 => (1 << (8 * u32::from(size))) - 1,
        _ => u64::MAX,
    }
}

#[cfg(test)]
mod tests;
