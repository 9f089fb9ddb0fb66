//! Conventional PCI as the guest sees it: configuration mechanism #1 (CONFIG_ADDRESS at 0xCF8,
//! CONFIG_DATA at 0xCFC..0xCFF; PCI Local Bus Specification 3.0, 3.2.2.3.2) and a type 0
//! configuration header (6.1) with write masks, so that BAR sizing (6.2.5.1: write all ones,
//! read back the size mask), the command register and the capability list (6.7) behave as on
//! hardware. The host bridge at 0:0.0 is one such header.
//!
//! It is not a bus scanner or a resource allocator: the platform places BARs itself, and it
//! routes each slot's INTA# to an I/O APIC pin (`layout::PCI_GSI_BASE`).

use crate::layout;

/// Header offsets (PCI 3.0, 6.1).
pub mod reg {
    pub const VENDOR_ID: u8 = 0x00;
    pub const DEVICE_ID: u8 = 0x02;
    pub const COMMAND: u8 = 0x04;
    pub const STATUS: u8 = 0x06;
    pub const REVISION: u8 = 0x08;
    pub const CLASS: u8 = 0x09;
    pub const HEADER_TYPE: u8 = 0x0E;
    pub const BAR0: u8 = 0x10;
    pub const SUBSYSTEM_VENDOR_ID: u8 = 0x2C;
    pub const SUBSYSTEM_ID: u8 = 0x2E;
    pub const CAPABILITIES: u8 = 0x34;
    pub const INTERRUPT_LINE: u8 = 0x3C;
    pub const INTERRUPT_PIN: u8 = 0x3D;
}

/// Command register bits the guest may change: I/O space, memory space, bus master, INTx
/// disable (6.2.2).
pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const COMMAND_WRITABLE: u16 =
    COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
/// Status bits (6.2.3): INTx asserted, capability list present.
pub const STATUS_INTERRUPT: u16 = 1 << 3;
pub const STATUS_CAP_LIST: u16 = 1 << 4;

const CONFIG_BYTES: usize = 256;
/// Capabilities follow the 64-byte header.
const FIRST_CAPABILITY: u8 = 0x40;

/// What identifies a function: IDs, class code and revision.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub vendor: u16,
    pub device: u16,
    /// Base class, subclass, programming interface, as a 24-bit value (0xBBSSPP).
    pub class: u32,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// The capability list has no room for another capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

/// One function's 256-byte configuration space: its bytes and, per byte, which bits a guest
/// write may change. Everything else reads back as set up by the platform.
pub struct ConfigSpace {
    bytes: [u8; CONFIG_BYTES],
    writable: [u8; CONFIG_BYTES],
    /// Where the next capability goes, and the last one's `next` pointer offset.
    next_capability: u8,
    last_link: u8,
}

impl ConfigSpace {
    pub fn new(id: &Identity) -> Self {
        let mut cs = Self {
            bytes: [0; CONFIG_BYTES],
            writable: [0; CONFIG_BYTES],
            next_capability: FIRST_CAPABILITY,
            last_link: reg::CAPABILITIES,
        };
        cs.set(reg::VENDOR_ID, &id.vendor.to_le_bytes());
        cs.set(reg::DEVICE_ID, &id.device.to_le_bytes());
        cs.set(reg::REVISION, &[id.revision]);
        cs.set(reg::CLASS, &id.class.to_le_bytes()[..3]);
        cs.set(reg::HEADER_TYPE, &[0]);
        cs.set(reg::SUBSYSTEM_VENDOR_ID, &id.subsystem_vendor.to_le_bytes());
        cs.set(reg::SUBSYSTEM_ID, &id.subsystem.to_le_bytes());
        cs.set_writable(reg::COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        cs
    }

    /// Makes BAR `index` a 32-bit, non-prefetchable memory BAR of `size` bytes (a power of two,
    /// at least 16) at `address` (6.2.5.1).
    pub fn set_memory_bar(&mut self, index: u8, address: u32, size: u32) {
        let at = reg::BAR0 + 4 * index;
        let mask = !(size.max(16) - 1);
        self.set(at, &(address & mask).to_le_bytes());
        self.set_writable(at, &mask.to_le_bytes());
    }

    /// The address memory BAR `index` decodes at, when memory decoding is on.
    pub fn memory_bar(&self, index: u8) -> Option<u64> {
        if self.command() & COMMAND_MEMORY == 0 {
            return None;
        }
        let at = reg::BAR0 + 4 * index;
        let value = u32::from_le_bytes(self.get4(at));
        let mask = u32::from_le_bytes(self.get4_writable(at));
        (mask != 0).then_some(u64::from(value & mask))
    }

    /// Declares interrupt pin `pin` (1 = INTA#) with `line` as the routing the firmware
    /// reports in the interrupt line register (writable, 6.2.4).
    pub fn set_interrupt(&mut self, pin: u8, line: u8) {
        self.set(reg::INTERRUPT_PIN, &[pin]);
        self.set(reg::INTERRUPT_LINE, &[line]);
        self.set_writable(reg::INTERRUPT_LINE, &[0xFF]);
    }

    /// Appends a capability with ID `id`; `body` follows the ID and next-pointer bytes. Returns
    /// the capability's offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<u8, NoRoom> {
        let at = self.next_capability;
        let len = 2 + body.len();
        let end = usize::from(at) + len;
        if end > CONFIG_BYTES {
            return Err(NoRoom);
        }
        self.set(at, &[id, 0]);
        self.set(at + 2, body);
        self.set(self.last_link, &[at]);
        self.last_link = at + 1;
        // Capabilities are dword aligned (6.7); the last one may end the space.
        self.next_capability = u8::try_from(end.next_multiple_of(4)).unwrap_or(u8::MAX);
        let status = self.status() | STATUS_CAP_LIST;
        self.set(reg::STATUS, &status.to_le_bytes());
        Ok(at)
    }

    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.bytes[4], self.bytes[5]])
    }

    pub fn status(&self) -> u16 {
        u16::from_le_bytes([self.bytes[6], self.bytes[7]])
    }

    /// Reflects the function's INTx state in the status register.
    pub fn set_interrupt_status(&mut self, asserted: bool) {
        let status = self.status() & !STATUS_INTERRUPT;
        let status = status | if asserted { STATUS_INTERRUPT } else { 0 };
        self.set(reg::STATUS, &status.to_le_bytes());
    }

    /// Whether the function may assert INTx# (not disabled by the command register).
    pub fn intx_enabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE == 0
    }

    /// Reads `size` (1, 2 or 4) bytes at `offset`; bytes past the end read as ones.
    pub fn read(&self, offset: u8, size: u8) -> u32 {
        (0..size).fold(0, |acc, i| {
            let byte = usize::from(offset)
                .checked_add(usize::from(i))
                .and_then(|at| self.bytes.get(at))
                .copied()
                .unwrap_or(0xFF);
            acc | u32::from(byte) << (8 * u32::from(i))
        })
    }

    /// Writes `size` bytes at `offset`, changing only the writable bits.
    pub fn write(&mut self, offset: u8, size: u8, value: u32) {
        for i in 0..size.min(4) {
            let at = usize::from(offset) + usize::from(i);
            let (Some(byte), Some(&mask)) = (self.bytes.get_mut(at), self.writable.get(at)) else {
                return;
            };
            let new = (value >> (8 * u32::from(i))) as u8;
            *byte = (*byte & !mask) | (new & mask);
        }
    }

    fn set(&mut self, offset: u8, data: &[u8]) {
        let at = usize::from(offset);
        if let Some(dst) = self.bytes.get_mut(at..at + data.len()) {
            dst.copy_from_slice(data);
        }
    }

    /// Lets guest writes change the bits of `mask` in the bytes from `offset`.
    pub(crate) fn set_writable(&mut self, offset: u8, mask: &[u8]) {
        let at = usize::from(offset);
        if let Some(dst) = self.writable.get_mut(at..at + mask.len()) {
            dst.copy_from_slice(mask);
        }
    }

    fn get4(&self, offset: u8) -> [u8; 4] {
        self.read(offset, 4).to_le_bytes()
    }

    fn get4_writable(&self, offset: u8) -> [u8; 4] {
        let at = usize::from(offset);
        let mut out = [0; 4];
        if let Some(src) = self.writable.get(at..at + 4) {
            out.copy_from_slice(src);
        }
        out
    }
}

/// The host bridge at 0:0.0 (class 06/00/00), as QEMU's generic host bridge identifies itself.
pub fn host_bridge() -> ConfigSpace {
    ConfigSpace::new(&Identity {
        vendor: 0x1B36,
        device: 0x0008,
        class: 0x06_00_00,
        revision: 0,
        subsystem_vendor: 0x1AF4,
        subsystem: 0x1100,
    })
}

/// The I/O APIC pin INTA# of `slot` is wired to.
pub fn slot_gsi(slot: u8) -> u8 {
    layout::PCI_GSI_BASE + slot % layout::PCI_GSI_COUNT
}

/// Where a CONFIG_DATA access goes: bus, device (slot), function and register offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
    pub offset: u8,
}

/// The CONFIG_ADDRESS latch. Only dword accesses to 0xCF8 reach it (byte accesses to 0xCF9
/// are the reset control register on PC chipsets).
#[derive(Default)]
pub struct ConfigPorts {
    address: u32,
}

const ADDRESS_ENABLE: u32 = 1 << 31;
/// Bits 30:24 and 1:0 are reserved and read as zero.
const ADDRESS_WRITABLE: u32 = 0x80FF_FFFC;

impl ConfigPorts {
    /// Whether an access of `size` bytes at `port` is a configuration-mechanism access.
    pub fn claims(port: u16, size: u8) -> bool {
        match port {
            layout::PCI_CONFIG_ADDRESS => size == 4,
            p if p.wrapping_sub(layout::PCI_CONFIG_DATA) < 4 => {
                let offset = p - layout::PCI_CONFIG_DATA;
                matches!(size, 1 | 2 | 4) && offset + u16::from(size) <= 4
            }
            _ => false,
        }
    }

    pub fn address(&self) -> u32 {
        self.address
    }

    pub fn set_address(&mut self, value: u32) {
        self.address = value & ADDRESS_WRITABLE;
    }

    /// The register a CONFIG_DATA access at `port` reaches; `None` while disabled.
    pub fn target(&self, port: u16) -> Option<Target> {
        if self.address & ADDRESS_ENABLE == 0 {
            return None;
        }
        let byte = port.wrapping_sub(layout::PCI_CONFIG_DATA) as u8 & 3;
        Some(Target {
            bus: (self.address >> 16) as u8,
            slot: (self.address >> 11) as u8 & 0x1F,
            function: (self.address >> 8) as u8 & 7,
            offset: (self.address as u8 & 0xFC) | byte,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function() -> ConfigSpace {
        ConfigSpace::new(&Identity {
            vendor: 0x1AF4,
            device: 0x1042,
            class: 0x01_80_00,
            revision: 1,
            subsystem_vendor: 0x1AF4,
            subsystem: 0x40,
        })
    }

    #[test]
    fn identity_reads_back() {
        let cs = function();
        assert_eq!(cs.read(0, 4), 0x1042_1AF4);
        assert_eq!(cs.read(reg::REVISION, 4), 0x0180_0001);
        assert_eq!(cs.read(reg::SUBSYSTEM_VENDOR_ID, 4), 0x0040_1AF4);
        assert_eq!(cs.read(reg::HEADER_TYPE, 1), 0);
        assert_eq!(cs.read(reg::CAPABILITIES, 1), 0, "no capabilities yet");
        assert_eq!(cs.status() & STATUS_CAP_LIST, 0);
    }

    #[test]
    fn read_only_fields_ignore_writes() {
        let mut cs = function();
        cs.write(0, 4, 0xDEAD_BEEF);
        cs.write(reg::CLASS, 2, 0xFFFF);
        cs.write(reg::STATUS, 2, 0xFFFF);
        assert_eq!(cs.read(0, 4), 0x1042_1AF4);
        assert_eq!(cs.read(reg::CLASS, 2), 0x8000);
        assert_eq!(cs.status(), 0);
    }

    #[test]
    fn command_register_keeps_only_its_writable_bits() {
        let mut cs = function();
        cs.write(reg::COMMAND, 2, 0xFFFF);
        assert_eq!(cs.command(), COMMAND_WRITABLE);
        assert!(!cs.intx_enabled());
        cs.write(reg::COMMAND, 1, 0x02);
        assert_eq!(
            cs.command(),
            COMMAND_MEMORY | COMMAND_INTX_DISABLE,
            "byte write"
        );
        cs.write(reg::COMMAND + 1, 1, 0);
        assert!(cs.intx_enabled());
    }

    #[test]
    fn bar_sizing_and_decoding() {
        let mut cs = function();
        cs.set_memory_bar(0, 0xC001_0000, 0x1000);
        assert_eq!(cs.memory_bar(0), None, "memory decoding off");
        cs.write(reg::COMMAND, 2, u32::from(COMMAND_MEMORY));
        assert_eq!(cs.memory_bar(0), Some(0xC001_0000));
        cs.write(reg::BAR0, 4, 0xFFFF_FFFF);
        assert_eq!(cs.read(reg::BAR0, 4), 0xFFFF_F000, "size mask of 4 KiB");
        cs.write(reg::BAR0, 4, 0xC002_0123);
        assert_eq!(cs.read(reg::BAR0, 4), 0xC002_0000);
        assert_eq!(cs.memory_bar(0), Some(0xC002_0000));
        // Unimplemented BARs read zero whatever is written.
        cs.write(reg::BAR0 + 4, 4, 0xFFFF_FFFF);
        assert_eq!(cs.read(reg::BAR0 + 4, 4), 0);
        assert_eq!(cs.memory_bar(1), None);
    }

    #[test]
    fn capability_list_walks_to_the_end() {
        let mut cs = function();
        let first = cs.add_capability(0x09, &[16, 1, 0, 0]).unwrap();
        let second = cs.add_capability(0x09, &[20, 2, 0, 0, 0]).unwrap();
        assert_eq!(first, 0x40);
        assert_eq!(second % 4, 0);
        assert_ne!(cs.status() & STATUS_CAP_LIST, 0);
        let mut found = std::vec::Vec::new();
        let mut at = cs.read(reg::CAPABILITIES, 1) as u8;
        while at != 0 {
            found.push((at, cs.read(at, 1), cs.read(at + 3, 1)));
            at = cs.read(at + 1, 1) as u8;
        }
        assert_eq!(found, [(first, 0x09, 1), (second, 0x09, 2)]);
        while cs.add_capability(0x09, &[0; 14]).is_ok() {}
        assert_eq!(cs.add_capability(0x09, &[0; 14]), Err(NoRoom));
    }

    #[test]
    fn interrupt_line_is_writable_pin_is_not() {
        let mut cs = function();
        cs.set_interrupt(1, 17);
        assert_eq!(cs.read(reg::INTERRUPT_LINE, 2), 0x0111);
        cs.write(reg::INTERRUPT_LINE, 2, 0x040B);
        assert_eq!(cs.read(reg::INTERRUPT_LINE, 2), 0x010B);
        cs.set_interrupt_status(true);
        assert_ne!(cs.status() & STATUS_INTERRUPT, 0);
    }

    #[test]
    fn accesses_past_the_end_read_ones_and_are_dropped() {
        let mut cs = function();
        assert_eq!(cs.read(0xFE, 4), 0xFFFF_0000);
        cs.write(0xFE, 4, 0);
        assert_eq!(cs.read(0xFC, 4), 0);
    }

    #[test]
    fn config_address_decoding() {
        let mut ports = ConfigPorts::default();
        assert!(ConfigPorts::claims(0xCF8, 4));
        assert!(!ConfigPorts::claims(0xCF8, 1));
        assert!(!ConfigPorts::claims(0xCF9, 1), "reset control register");
        assert!(ConfigPorts::claims(0xCFE, 2));
        assert!(
            !ConfigPorts::claims(0xCFE, 4),
            "straddles CONFIG_DATA's end"
        );
        assert_eq!(ports.target(0xCFC), None);
        ports.set_address(0xFFFF_FFFF);
        assert_eq!(ports.address(), 0x80FF_FFFC);
        ports.set_address(0x8000_1A44);
        assert_eq!(
            ports.target(0xCFE),
            Some(Target {
                bus: 0,
                slot: 3,
                function: 2,
                offset: 0x46
            })
        );
    }

    #[test]
    fn slots_share_eight_gsis() {
        assert_eq!(slot_gsi(1), 17);
        assert_eq!(slot_gsi(8), 16);
    }
}
