//! An 82093AA-style I/O APIC, version 0x20 (with the EOI register): 24 input pins, each routed
//! by a redirection entry to an interrupt message (82093AA datasheet, sections 3.0-3.2). It only
//! produces messages; choosing and interrupting the target local APIC is the platform's job.

use crate::layout;

/// The delivery mode field of a redirection entry (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    ExtInt,
}

impl DeliveryMode {
    /// The mode a 3-bit delivery mode field names (also the MSI data field, SDM 11.11.2);
    /// `None` for the reserved values 011 and 110.
    pub fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits & 0b111 {
            0b000 => Self::Fixed,
            0b001 => Self::LowestPriority,
            0b010 => Self::Smi,
            0b100 => Self::Nmi,
            0b101 => Self::Init,
            0b111 => Self::ExtInt,
            _ => return None,
        })
    }
}

/// An interrupt message for the local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub vector: u8,
    /// APIC ID (physical) or logical destination mask, from entry bits 63:56.
    pub dest: u32,
    pub logical: bool,
    pub level_triggered: bool,
    pub mode: DeliveryMode,
}

/// Direct registers, as offsets in the MMIO window.
const IOREGSEL: u32 = 0x00;
const IOWIN: u32 = 0x10;
const EOI: u32 = 0x40;

/// Indirect registers, selected through IOREGSEL.
const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
const REG_REDIRECTION: u8 = 0x10;
const REG_REDIRECTION_LAST: u8 = REG_REDIRECTION + 2 * layout::IOAPIC_PINS - 1;

const PINS: usize = layout::IOAPIC_PINS as usize;
/// Version 0x20 with the highest redirection entry index in bits 23:16.
const VERSION: u32 = 0x20 | ((layout::IOAPIC_PINS as u32 - 1) << 16);
const ID_SHIFT: u32 = 24;
const ID_MASK: u32 = 0x0F00_0000;

const DEST_LOGICAL: u64 = 1 << 11;
const DELIVERY_STATUS: u32 = 1 << 12;
const ACTIVE_LOW: u64 = 1 << 13;
const REMOTE_IRR: u64 = 1 << 14;
const LEVEL_TRIGGERED: u64 = 1 << 15;
const MASKED: u64 = 1 << 16;
/// Vector, delivery mode, destination mode, polarity, trigger mode, mask.
const LOW_WRITABLE: u32 = 0x0001_AFFF;
/// Destination field, bits 63:56.
const HIGH_WRITABLE: u32 = 0xFF00_0000;

/// The I/O APIC.
pub struct IoApic {
    select: u8,
    id: u32,
    redirection: [u64; PINS],
    /// Raw input line levels, one bit per pin, before polarity.
    inputs: u32,
    /// Edge-triggered pins that saw an asserting edge not yet delivered.
    edge_pending: u32,
    /// The entries' polarity and mask bits, one bit per pin (set: active low; not masked), as
    /// `write_indirect`, the only writer of those bits, leaves them.
    active_low: u32,
    unmasked: u32,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    /// The reset state: ID `layout::IOAPIC_ID`, every entry masked.
    pub fn new() -> Self {
        Self {
            select: 0,
            id: u32::from(layout::IOAPIC_ID) << ID_SHIFT,
            redirection: [MASKED; PINS],
            inputs: 0,
            edge_pending: 0,
            active_low: 0,
            unmasked: 0,
        }
    }

    /// Reads the register window; unknown offsets read 0.
    pub fn mmio_read(&mut self, offset: u32) -> u32 {
        match offset {
            IOREGSEL => u32::from(self.select),
            IOWIN => self.read_indirect(self.select),
            _ => 0,
        }
    }

    /// Writes the register window; unknown offsets ignore writes.
    pub fn mmio_write(&mut self, offset: u32, value: u32) {
        match offset {
            IOREGSEL => self.select = value as u8,
            IOWIN => self.write_indirect(self.select, value),
            EOI => self.eoi(value as u8),
            _ => {}
        }
    }

    fn read_indirect(&self, index: u8) -> u32 {
        match index {
            REG_ID | REG_ARBITRATION => self.id,
            REG_VERSION => VERSION,
            REG_REDIRECTION..=REG_REDIRECTION_LAST => {
                let pin = usize::from((index - REG_REDIRECTION) / 2);
                let entry = self.redirection.get(pin).copied().unwrap_or(0);
                if index & 1 == 0 {
                    let status = if self.waiting(pin) {
                        DELIVERY_STATUS
                    } else {
                        0
                    };
                    entry as u32 | status
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_indirect(&mut self, index: u8, value: u32) {
        match index {
            REG_ID => self.id = value & ID_MASK,
            REG_REDIRECTION..=REG_REDIRECTION_LAST => {
                let pin = usize::from((index - REG_REDIRECTION) / 2);
                let Some(entry) = self.redirection.get_mut(pin) else {
                    return;
                };
                *entry = if index & 1 == 0 {
                    (*entry & !u64::from(LOW_WRITABLE)) | u64::from(value & LOW_WRITABLE)
                } else {
                    (*entry & 0xFFFF_FFFF) | u64::from(value & HIGH_WRITABLE) << 32
                };
                // Remote IRR is meaningless for edge-triggered entries; keep it clear.
                if *entry & LEVEL_TRIGGERED == 0 {
                    *entry &= !REMOTE_IRR;
                }
                // A latched edge is lost when the entry is masked or becomes level-triggered.
                if *entry & (MASKED | LEVEL_TRIGGERED) != 0 {
                    self.edge_pending &= !(1 << pin);
                }
                let mirror = |mask: &mut u32, on: bool| {
                    *mask = if on {
                        *mask | 1 << pin
                    } else {
                        *mask & !(1 << pin)
                    };
                };
                mirror(&mut self.active_low, *entry & ACTIVE_LOW != 0);
                mirror(&mut self.unmasked, *entry & MASKED == 0);
            }
            // Version and arbitration ID are read-only.
            _ => {}
        }
    }

    /// Whether a pin's input is asserted, after the polarity bit.
    fn asserted(&self, pin: usize) -> bool {
        let entry = self.redirection.get(pin).copied().unwrap_or(0);
        let high = self.inputs & (1 << pin) != 0;
        high != (entry & ACTIVE_LOW != 0)
    }

    /// Whether a pin has a message waiting: an edge not yet delivered, or an asserted
    /// level-triggered input with Remote IRR clear. Masked pins wait for nothing.
    fn waiting(&self, pin: usize) -> bool {
        let entry = self.redirection.get(pin).copied().unwrap_or(MASKED);
        if entry & MASKED != 0 {
            false
        } else if entry & LEVEL_TRIGGERED == 0 {
            self.edge_pending & (1 << pin) != 0
        } else {
            entry & REMOTE_IRR == 0 && self.asserted(pin)
        }
    }

    /// Drives input `pin`; pins beyond the last are ignored. Edge-triggered entries latch an
    /// asserting edge unless masked (a masked edge is lost); level-triggered ones are sampled
    /// by [`IoApic::take_delivery`].
    pub fn set_irq(&mut self, pin: u8, level: bool) {
        let pin = usize::from(pin);
        let Some(&entry) = self.redirection.get(pin) else {
            return;
        };
        let was_asserted = self.asserted(pin);
        if level {
            self.inputs |= 1 << pin;
        } else {
            self.inputs &= !(1 << pin);
        }
        let edge = !was_asserted && self.asserted(pin);
        if edge && entry & (LEVEL_TRIGGERED | MASKED) == 0 {
            self.edge_pending |= 1 << pin;
        }
    }

    /// The next interrupt message, lowest pin first. A level-triggered message sets Remote IRR
    /// and is not sent again until an EOI for its vector. Entries with a reserved delivery
    /// mode send nothing.
    pub fn take_delivery(&mut self) -> Option<Delivery> {
        // Only a latched edge or an asserted input can make an unmasked pin wait.
        let mut candidates = (self.edge_pending | (self.inputs ^ self.active_low)) & self.unmasked;
        while candidates != 0 {
            let pin = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            if !self.waiting(pin) {
                continue;
            }
            self.edge_pending &= !(1 << pin);
            let entry = self.redirection.get_mut(pin)?;
            let Some(delivery) = decode(*entry) else {
                continue;
            };
            if delivery.level_triggered {
                *entry |= REMOTE_IRR;
            }
            return Some(delivery);
        }
        None
    }

    /// An EOI for `vector`, broadcast by a local APIC or written to the EOI register: clears
    /// Remote IRR of the level-triggered entries using it, so a still-asserted input is sent
    /// again (82093AA 3.2.4; version 0x20 EOI register).
    pub fn eoi(&mut self, vector: u8) {
        for entry in &mut self.redirection {
            if *entry & LEVEL_TRIGGERED != 0 && *entry as u8 == vector {
                *entry &= !REMOTE_IRR;
            }
        }
    }
}

/// The message a redirection entry describes; `None` for a reserved delivery mode.
fn decode(entry: u64) -> Option<Delivery> {
    let mode = DeliveryMode::from_bits((entry >> 8) as u8)?;
    Some(Delivery {
        vector: entry as u8,
        dest: (entry >> 56) as u32,
        logical: entry & DEST_LOGICAL != 0,
        level_triggered: entry & LEVEL_TRIGGERED != 0,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_entry(ioapic: &mut IoApic, pin: u8, low: u32, high: u32) {
        ioapic.mmio_write(IOREGSEL, u32::from(REG_REDIRECTION + 2 * pin + 1));
        ioapic.mmio_write(IOWIN, high);
        ioapic.mmio_write(IOREGSEL, u32::from(REG_REDIRECTION + 2 * pin));
        ioapic.mmio_write(IOWIN, low);
    }

    fn read_indirect(ioapic: &mut IoApic, index: u8) -> u32 {
        ioapic.mmio_write(IOREGSEL, u32::from(index));
        ioapic.mmio_read(IOWIN)
    }

    fn fixed(vector: u8, dest: u32, level_triggered: bool) -> Delivery {
        Delivery {
            vector,
            dest,
            logical: false,
            level_triggered,
            mode: DeliveryMode::Fixed,
        }
    }

    #[test]
    fn identification_registers() {
        let mut ioapic = IoApic::new();
        assert_eq!(read_indirect(&mut ioapic, REG_ID), 1 << 24);
        assert_eq!(read_indirect(&mut ioapic, REG_VERSION), 0x0017_0020);
        assert_eq!(read_indirect(&mut ioapic, REG_ARBITRATION), 1 << 24);
        assert_eq!(ioapic.mmio_read(IOREGSEL), u32::from(REG_ARBITRATION));
        ioapic.mmio_write(IOREGSEL, u32::from(REG_ID));
        ioapic.mmio_write(IOWIN, 0xFFFF_FFFF);
        assert_eq!(ioapic.mmio_read(IOWIN), 0x0F00_0000);
        ioapic.mmio_write(IOREGSEL, u32::from(REG_VERSION));
        ioapic.mmio_write(IOWIN, 0);
        assert_eq!(ioapic.mmio_read(IOWIN), 0x0017_0020, "version is read-only");
        assert_eq!(read_indirect(&mut ioapic, 0x03), 0);
        assert_eq!(read_indirect(&mut ioapic, 0x40), 0, "past the last entry");
        assert_eq!(ioapic.mmio_read(0x20), 0);
    }

    #[test]
    fn entries_reset_masked_and_keep_read_only_bits() {
        let mut ioapic = IoApic::new();
        for pin in 0..layout::IOAPIC_PINS {
            assert_eq!(
                read_indirect(&mut ioapic, REG_REDIRECTION + 2 * pin),
                0x1_0000
            );
            assert_eq!(read_indirect(&mut ioapic, REG_REDIRECTION + 2 * pin + 1), 0);
        }
        write_entry(&mut ioapic, 3, 0xFFFF_FFFF, 0xFFFF_FFFF);
        assert_eq!(read_indirect(&mut ioapic, REG_REDIRECTION + 6), 0x0001_AFFF);
        assert_eq!(read_indirect(&mut ioapic, REG_REDIRECTION + 7), 0xFF00_0000);
    }

    #[test]
    fn masked_edges_are_lost() {
        let mut ioapic = IoApic::new();
        ioapic.set_irq(4, true);
        ioapic.set_irq(4, false);
        write_entry(&mut ioapic, 4, 0x34, 0);
        assert_eq!(ioapic.take_delivery(), None);
        // Latched, then masked before delivery: dropped too.
        ioapic.set_irq(4, true);
        write_entry(&mut ioapic, 4, 0x1_0034, 0);
        write_entry(&mut ioapic, 4, 0x34, 0);
        assert_eq!(ioapic.take_delivery(), None);
    }

    #[test]
    fn edge_triggered_fires_once_per_rising_edge() {
        let mut ioapic = IoApic::new();
        write_entry(&mut ioapic, 2, 0x30, 0x0300_0000);
        ioapic.set_irq(2, true);
        assert_eq!(read_indirect(&mut ioapic, REG_REDIRECTION + 4), 0x1030);
        assert_eq!(ioapic.take_delivery(), Some(fixed(0x30, 3, false)));
        assert_eq!(read_indirect(&mut ioapic, REG_REDIRECTION + 4), 0x30);
        assert_eq!(ioapic.take_delivery(), None);
        ioapic.set_irq(2, true);
        assert_eq!(ioapic.take_delivery(), None, "no edge while held high");
        ioapic.set_irq(2, false);
        ioapic.set_irq(2, true);
        assert_eq!(ioapic.take_delivery(), Some(fixed(0x30, 3, false)));
        // Two edges before delivery coalesce.
        ioapic.set_irq(2, false);
        ioapic.set_irq(2, true);
        ioapic.set_irq(2, false);
        ioapic.set_irq(2, true);
        assert!(ioapic.take_delivery().is_some());
        assert_eq!(ioapic.take_delivery(), None);
    }

    #[test]
    fn level_triggered_waits_for_eoi() {
        let mut ioapic = IoApic::new();
        write_entry(&mut ioapic, 9, 0x80A9, 0);
        ioapic.set_irq(9, true);
        assert_eq!(ioapic.take_delivery(), Some(fixed(0xA9, 0, true)));
        assert_eq!(
            read_indirect(&mut ioapic, REG_REDIRECTION + 18),
            0xC0A9,
            "remote IRR"
        );
        assert_eq!(ioapic.take_delivery(), None);
        ioapic.eoi(0xA8);
        assert_eq!(ioapic.take_delivery(), None, "other vector");
        // Still asserted at EOI: sent again.
        ioapic.eoi(0xA9);
        assert_eq!(ioapic.take_delivery(), Some(fixed(0xA9, 0, true)));
        // Deasserted before EOI: nothing more.
        ioapic.set_irq(9, false);
        ioapic.mmio_write(EOI, 0xA9);
        assert_eq!(read_indirect(&mut ioapic, REG_REDIRECTION + 18), 0x80A9);
        assert_eq!(ioapic.take_delivery(), None);
    }

    #[test]
    fn remote_irr_is_read_only() {
        let mut ioapic = IoApic::new();
        write_entry(&mut ioapic, 5, 0xC055, 0);
        assert_eq!(read_indirect(&mut ioapic, REG_REDIRECTION + 10), 0x8055);
        ioapic.set_irq(5, true);
        assert!(ioapic.take_delivery().is_some());
        write_entry(&mut ioapic, 5, 0x8056, 0);
        assert_eq!(read_indirect(&mut ioapic, REG_REDIRECTION + 10), 0xC056);
        assert_eq!(ioapic.take_delivery(), None);
        // Switching to edge drops it.
        write_entry(&mut ioapic, 5, 0x56, 0);
        assert_eq!(read_indirect(&mut ioapic, REG_REDIRECTION + 10), 0x56);
    }

    #[test]
    fn masked_level_fires_on_unmask() {
        let mut ioapic = IoApic::new();
        write_entry(&mut ioapic, 10, 0x1_8061, 0);
        ioapic.set_irq(10, true);
        assert_eq!(ioapic.take_delivery(), None);
        write_entry(&mut ioapic, 10, 0x8061, 0);
        assert_eq!(ioapic.take_delivery(), Some(fixed(0x61, 0, true)));
        // Masked and deasserted before unmask: nothing.
        write_entry(&mut ioapic, 11, 0x1_8062, 0);
        ioapic.set_irq(11, true);
        ioapic.set_irq(11, false);
        write_entry(&mut ioapic, 11, 0x8062, 0);
        assert_eq!(ioapic.take_delivery(), None);
    }

    #[test]
    fn active_low_inverts_the_input() {
        let mut ioapic = IoApic::new();
        write_entry(&mut ioapic, 12, 0xA070, 0);
        assert_eq!(
            ioapic.take_delivery(),
            Some(fixed(0x70, 0, true)),
            "low line asserted"
        );
        ioapic.set_irq(12, true);
        ioapic.eoi(0x70);
        assert_eq!(ioapic.take_delivery(), None, "high line deasserted");
        // Edge-triggered active low fires on the falling edge.
        write_entry(&mut ioapic, 13, 0x2071, 0);
        ioapic.set_irq(13, true);
        assert_eq!(ioapic.take_delivery(), None);
        ioapic.set_irq(13, false);
        assert_eq!(ioapic.take_delivery(), Some(fixed(0x71, 0, false)));
    }

    #[test]
    fn decodes_message_fields_and_ignores_bad_pins() {
        let mut ioapic = IoApic::new();
        write_entry(&mut ioapic, 0, 0x0F00, 0x0500_0000);
        write_entry(&mut ioapic, 1, 0x0942, 0x0F00_0000);
        write_entry(&mut ioapic, 6, 0x0380, 0);
        ioapic.set_irq(0, true);
        ioapic.set_irq(1, true);
        ioapic.set_irq(6, true);
        ioapic.set_irq(24, true);
        ioapic.set_irq(255, true);
        assert_eq!(
            ioapic.take_delivery(),
            Some(Delivery {
                vector: 0,
                dest: 5,
                logical: true,
                level_triggered: false,
                mode: DeliveryMode::ExtInt,
            })
        );
        assert_eq!(
            ioapic.take_delivery(),
            Some(Delivery {
                vector: 0x42,
                dest: 0x0F,
                logical: true,
                level_triggered: false,
                mode: DeliveryMode::LowestPriority,
            })
        );
        assert_eq!(
            ioapic.take_delivery(),
            None,
            "reserved mode 3 sends nothing"
        );
        for (bits, mode) in [
            (0b010, DeliveryMode::Smi),
            (0b100, DeliveryMode::Nmi),
            (0b101, DeliveryMode::Init),
            (0b000, DeliveryMode::Fixed),
        ] {
            assert_eq!(decode(bits << 8).map(|d| d.mode), Some(mode));
        }
        assert_eq!(decode(0b110 << 8), None);
    }
}
