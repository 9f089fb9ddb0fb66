//! MSI-X for a PCI function (PCI Local Bus Specification 3.0, 6.8.2): the capability in
//! configuration space (MSI-X Enable and Function Mask in Message Control), the table of
//! message address, data and vector control entries and the pending bit array (PBA), both in a
//! memory BAR, and the decoding of a message into an interrupt for the local APICs (Intel SDM
//! Vol. 3A, 11.11).
//!
//! An event for a vector sets its pending bit; `take_message` sends (and clears) the pending
//! bits whose vector may signal: MSI-X enabled, the function and the entry unmasked (6.8.2.9).
//! It is not the delivery to a local APIC (the platform's job), and not plain MSI (capability
//! 05h). Table sizes are limited to `MAX_VECTORS`.

use alloc::vec::Vec;

use crate::ioapic::{Delivery, DeliveryMode};
use crate::pci::{ConfigSpace, NoRoom};

/// The MSI-X capability ID (6.8.2.1).
pub const CAP_ID: u8 = 0x11;
/// The most vectors a table holds here: the PBA is one QWORD.
pub const MAX_VECTORS: u16 = 64;
/// Bytes per table entry (6.8.2.6).
pub const ENTRY_BYTES: u32 = 16;

/// Message Control (6.8.2.3): bit 15 MSI-X Enable, bit 14 Function Mask, bits 10:0 the table
/// size minus one (read-only).
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector Control (6.8.2.9): bit 0 masks the vector; the other bits are reserved.
const VECTOR_MASKED: u32 = 1;

/// The interrupt messages of the local APICs are writes to 0xFEEx_xxxx (SDM 11.11.1).
const MSI_ADDRESS_WINDOW: u64 = 0xFEE;
const ADDRESS_REDIRECTION_HINT: u64 = 1 << 3;
const ADDRESS_DEST_LOGICAL: u64 = 1 << 2;

/// One message: where the function writes and what (6.8.2.6 to 6.8.2.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub address: u64,
    pub data: u32,
}

impl Message {
    /// The interrupt the message asks for (SDM 11.11.1 and 11.11.2): destination from address
    /// bits 19:12, logical when DM (bit 2) is set (as KVM and QEMU read it, whatever RH says),
    /// vector from data bits 7:0 and delivery mode from bits 10:8. PCI messages are edges:
    /// the trigger mode bit is not honoured. `None` for a write outside 0xFEEx_xxxx (a memory
    /// write, not an interrupt, which is not modelled) or a reserved delivery mode.
    pub fn decode(&self) -> Option<Delivery> {
        if self.address >> 20 != MSI_ADDRESS_WINDOW {
            return None;
        }
        let mode = DeliveryMode::from_bits((self.data >> 8) as u8 & 0b111)?;
        // A redirection hint asks for the lowest-priority agent among the destinations.
        let mode = match mode {
            DeliveryMode::Fixed if self.address & ADDRESS_REDIRECTION_HINT != 0 => {
                DeliveryMode::LowestPriority
            }
            m => m,
        };
        Some(Delivery {
            vector: self.data as u8,
            dest: (self.address >> 12) as u32 & 0xFF,
            logical: self.address & ADDRESS_DEST_LOGICAL != 0,
            level_triggered: false,
            mode,
        })
    }
}

#[derive(Clone, Copy)]
struct Entry {
    address: u64,
    data: u32,
    control: u32,
}

/// Every entry comes out of reset masked (6.8.2.9).
const RESET_ENTRY: Entry = Entry {
    address: 0,
    data: 0,
    control: VECTOR_MASKED,
};

/// A function's MSI-X state, beside its configuration space.
pub struct Msix {
    /// Where the capability is in configuration space.
    cap: u8,
    entries: Vec<Entry>,
    /// Where the table and the PBA are in the BAR.
    table: u32,
    pba: u32,
    /// One bit per vector (the PBA).
    pending: u64,
}

impl Msix {
    /// Adds an MSI-X capability for `vectors` vectors (1..=`MAX_VECTORS`) to `cs`, its table
    /// at `table` and its PBA at `pba` in BAR `bir`; both offsets must be QWORD aligned.
    pub fn new(
        cs: &mut ConfigSpace,
        vectors: u16,
        bir: u8,
        table: u32,
        pba: u32,
    ) -> Result<Self, NoRoom> {
        let vectors = vectors.clamp(1, MAX_VECTORS);
        let mut body = [0u8; 10];
        body[..2].copy_from_slice(&(vectors - 1).to_le_bytes());
        body[2..6].copy_from_slice(&(table & !7 | u32::from(bir & 7)).to_le_bytes());
        body[6..10].copy_from_slice(&(pba & !7 | u32::from(bir & 7)).to_le_bytes());
        let cap = cs.add_capability(CAP_ID, &body)?;
        let writable = CONTROL_ENABLE | CONTROL_FUNCTION_MASK;
        cs.set_writable(cap + 2, &writable.to_le_bytes());
        Ok(Self {
            cap,
            entries: alloc::vec![RESET_ENTRY; usize::from(vectors)],
            table: table & !7,
            pba: pba & !7,
            pending: 0,
        })
    }

    /// How many vectors the table holds.
    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    fn control(&self, cs: &ConfigSpace) -> u16 {
        cs.read(self.cap + 2, 2) as u16
    }

    /// Whether MSI-X is on: the function then does not use INTx (6.8.2.3).
    pub fn enabled(&self, cs: &ConfigSpace) -> bool {
        self.control(cs) & CONTROL_ENABLE != 0
    }

    /// An event for `vector`: it is pending until `take_message` sends it. Vectors the table
    /// does not hold (such as virtio's NO_VECTOR) signal nothing.
    pub fn signal(&mut self, vector: u16) {
        if usize::from(vector) < self.entries.len() {
            self.pending |= 1 << vector;
        }
    }

    /// The next pending message that may be sent now, its pending bit cleared.
    pub fn take_message(&mut self, cs: &ConfigSpace) -> Option<Message> {
        let control = self.control(cs);
        if control & CONTROL_ENABLE == 0 || control & CONTROL_FUNCTION_MASK != 0 {
            return None;
        }
        let unmasked = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.control & VECTOR_MASKED == 0)
            .fold(0u64, |bits, (i, _)| bits | 1 << i);
        let ready = self.pending & unmasked;
        if ready == 0 {
            return None;
        }
        let vector = ready.trailing_zeros() as usize;
        self.pending &= !(1 << vector);
        let entry = self.entries[vector];
        Some(Message {
            address: entry.address,
            data: entry.data,
        })
    }

    /// Forgets the pending events (the function was reset); the table keeps what software
    /// wrote.
    pub fn clear_pending(&mut self) {
        self.pending = 0;
    }

    /// Whether BAR offset `offset` is in the table or the PBA.
    pub fn claims(&self, offset: u64) -> bool {
        self.table_index(offset).is_some() || self.pba_index(offset).is_some()
    }

    /// A read of the table or the PBA. Only aligned DWORD and QWORD accesses are defined
    /// (6.8.2); anything else reads zero.
    pub fn read(&self, offset: u64, size: u8) -> u64 {
        if !aligned(offset, size) {
            return 0;
        }
        let dword = |at: u64| -> u64 {
            if let Some((i, field)) = self.table_index(at) {
                let e = &self.entries[i];
                u64::from(match field {
                    0 => e.address as u32,
                    4 => (e.address >> 32) as u32,
                    8 => e.data,
                    _ => e.control,
                })
            } else if let Some(half) = self.pba_index(at) {
                self.pending >> (32 * half) & 0xFFFF_FFFF
            } else {
                0
            }
        };
        match size {
            8 => dword(offset) | dword(offset + 4) << 32,
            _ => dword(offset),
        }
    }

    /// A write to the table (the PBA is read-only). Only aligned DWORD and QWORD accesses are
    /// defined (6.8.2); anything else is dropped.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        if !aligned(offset, size) {
            return;
        }
        self.write_dword(offset, value as u32);
        if size == 8 {
            self.write_dword(offset + 4, (value >> 32) as u32);
        }
    }

    fn write_dword(&mut self, offset: u64, value: u32) {
        let Some((i, field)) = self.table_index(offset) else {
            return;
        };
        let e = &mut self.entries[i];
        match field {
            // Message Address bits 1:0 are zero for DWORD alignment (6.8.2.6).
            0 => e.address = (e.address & !0xFFFF_FFFF) | u64::from(value & !3),
            4 => e.address = (e.address & 0xFFFF_FFFF) | u64::from(value) << 32,
            8 => e.data = value,
            _ => e.control = value & VECTOR_MASKED,
        }
    }

    /// The entry and the DWORD field in it at BAR offset `offset`.
    fn table_index(&self, offset: u64) -> Option<(usize, u64)> {
        let rel = offset.checked_sub(u64::from(self.table))?;
        let i = usize::try_from(rel / u64::from(ENTRY_BYTES)).ok()?;
        (i < self.entries.len()).then_some((i, (rel % u64::from(ENTRY_BYTES)) & !3))
    }

    /// Which DWORD of the one-QWORD PBA is at `offset`.
    fn pba_index(&self, offset: u64) -> Option<u64> {
        let rel = offset.checked_sub(u64::from(self.pba))?;
        (rel < 8).then_some(rel / 4)
    }
}

/// An aligned DWORD or QWORD access.
fn aligned(offset: u64, size: u8) -> bool {
    matches!(size, 4 | 8) && offset & (u64::from(size) - 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{reg, Identity};

    const TABLE: u32 = 0x1000;
    const PBA: u32 = 0x1800;

    fn function(vectors: u16) -> (ConfigSpace, Msix) {
        let mut cs = ConfigSpace::new(&Identity {
            vendor: 0x1AF4,
            device: 0x1041,
            class: 0x02_00_00,
            revision: 1,
            subsystem_vendor: 0x1AF4,
            subsystem: 0x1100,
        });
        let msix = Msix::new(&mut cs, vectors, 0, TABLE, PBA).unwrap();
        (cs, msix)
    }

    fn program(msix: &mut Msix, vector: u64, address: u64, data: u32) {
        let at = u64::from(TABLE) + vector * 16;
        msix.write(at, 8, address);
        msix.write(at + 8, 4, u64::from(data));
        msix.write(at + 12, 4, 0);
    }

    fn enable(cs: &mut ConfigSpace, msix: &Msix, control: u16) {
        cs.write(msix.cap + 2, 2, u32::from(control));
    }

    #[test]
    fn capability_layout_in_config_space() {
        let (mut cs, msix) = function(3);
        let at = cs.read(reg::CAPABILITIES, 1) as u8;
        assert_eq!(at, msix.cap);
        assert_eq!(cs.read(at, 1), u32::from(CAP_ID));
        assert_eq!(cs.read(at + 1, 1), 0, "last capability");
        assert_eq!(cs.read(at + 2, 2), 2, "table size 3, encoded N-1, disabled");
        assert_eq!(cs.read(at + 4, 4), TABLE, "table offset, BIR 0");
        assert_eq!(cs.read(at + 8, 4), PBA, "PBA offset, BIR 0");
        // Only Enable and Function Mask are writable; the size and offsets are read-only.
        cs.write(at + 2, 2, 0xFFFF);
        assert_eq!(cs.read(at + 2, 2), 0xC002);
        cs.write(at + 4, 4, 0xFFFF_FFFF);
        cs.write(at + 8, 4, 0);
        assert_eq!((cs.read(at + 4, 4), cs.read(at + 8, 4)), (TABLE, PBA));
        assert!(msix.enabled(&cs));
        cs.write(at + 3, 1, 0x40);
        assert!(!msix.enabled(&cs), "byte write clears Enable");
        let (_, big) = function(1000);
        assert_eq!(big.entries.len(), usize::from(MAX_VECTORS));
    }

    #[test]
    fn table_reads_back_what_was_written() {
        let (_, mut msix) = function(2);
        for (i, field) in [(0, 0), (4, 0), (8, 0), (12, 1), (16, 0), (28, 1)] {
            assert_eq!(msix.read(u64::from(TABLE) + i, 4), field, "reset {i:#x}");
        }
        msix.write(0x1010, 8, 0x0000_0001_FEE0_100F);
        assert_eq!(
            msix.read(0x1010, 8),
            0x0000_0001_FEE0_100C,
            "bits 1:0 are zero"
        );
        assert_eq!(msix.read(0x1014, 4), 1);
        msix.write(0x1018, 8, 0xFFFF_FFFF_0000_0041);
        assert_eq!(msix.read(0x1018, 4), 0x41);
        assert_eq!(msix.read(0x101C, 4), 1, "only the mask bit is writable");
        assert_eq!(msix.read(0x1000, 8), 0, "entry 0 untouched");
    }

    #[test]
    fn malformed_accesses_are_dropped() {
        let (_, mut msix) = function(2);
        for (offset, size) in [
            (0x1002, 4),
            (0x1004, 8),
            (0x1000, 2),
            (0x1000, 1),
            (0x1000, 3),
        ] {
            msix.write(offset, size, u64::MAX);
            assert_eq!(msix.read(offset, size), 0, "{offset:#x}/{size}");
        }
        assert_eq!(msix.read(0x1000, 8), 0);
        // Past the table and the PBA, and the read-only PBA.
        msix.write(0x1020, 4, 0);
        assert_eq!(msix.read(0x1020, 4), 0);
        assert!(!msix.claims(0x1020) && !msix.claims(0x1808) && !msix.claims(0xFFF));
        assert!(msix.claims(0x101C) && msix.claims(0x1804));
        msix.write(u64::from(PBA), 8, u64::MAX);
        assert_eq!(msix.read(u64::from(PBA), 8), 0);
        msix.write(u64::MAX - 3, 4, 0);
        assert_eq!(msix.read(u64::MAX - 7, 8), 0);
        msix.signal(2);
        msix.signal(0xFFFF);
        assert_eq!(msix.pending, 0, "no such vectors");
    }

    #[test]
    fn masked_vectors_stay_pending_until_unmasked() {
        let (mut cs, mut msix) = function(3);
        let fee = 0xFEE0_0000;
        msix.signal(1);
        assert_eq!(msix.take_message(&cs), None, "disabled");
        assert_eq!(msix.read(u64::from(PBA), 8), 0b10);
        enable(&mut cs, &msix, CONTROL_ENABLE);
        assert_eq!(msix.take_message(&cs), None, "entry masked since reset");
        program(&mut msix, 1, fee, 0x41);
        assert_eq!(
            msix.take_message(&cs),
            Some(Message {
                address: fee,
                data: 0x41
            })
        );
        assert_eq!(msix.read(u64::from(PBA), 4), 0, "sent: no longer pending");
        assert_eq!(msix.take_message(&cs), None);

        // Function Mask holds every vector, whatever its own mask.
        enable(&mut cs, &msix, CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        program(&mut msix, 2, fee, 0x42);
        msix.signal(2);
        msix.signal(1);
        assert_eq!(msix.take_message(&cs), None);
        assert_eq!(msix.read(u64::from(PBA), 8), 0b110);
        // Per-vector mask: only vector 2 goes once the function is unmasked.
        msix.write(u64::from(TABLE) + 16 + 12, 4, 1);
        enable(&mut cs, &msix, CONTROL_ENABLE);
        assert_eq!(msix.take_message(&cs).map(|m| m.data), Some(0x42));
        assert_eq!(msix.take_message(&cs), None);
        assert_eq!(msix.read(u64::from(PBA) + 4, 4), 0);
        assert_eq!(msix.read(u64::from(PBA), 4), 0b10);
        msix.write(u64::from(TABLE) + 16 + 12, 4, 0);
        assert_eq!(msix.take_message(&cs).map(|m| m.data), Some(0x41));
        msix.signal(1);
        msix.clear_pending();
        assert_eq!(msix.take_message(&cs), None);
    }

    #[test]
    fn messages_decode_to_apic_interrupts() {
        let fixed = Message {
            address: 0xFEE0_1000,
            data: 0x4031,
        };
        assert_eq!(
            fixed.decode(),
            Some(Delivery {
                vector: 0x31,
                dest: 1,
                logical: false,
                level_triggered: false,
                mode: DeliveryMode::Fixed,
            })
        );
        let logical = Message {
            address: 0xFEE0_F00C,
            data: 0x8122,
        };
        let d = logical.decode().unwrap();
        assert_eq!((d.dest, d.logical), (0x0F, true));
        assert_eq!(d.mode, DeliveryMode::LowestPriority);
        assert!(!d.level_triggered, "PCI messages are edges");
        let hinted = Message {
            address: 0xFEE0_0008,
            data: 0x30,
        };
        assert_eq!(hinted.decode().unwrap().mode, DeliveryMode::LowestPriority);
        let nmi = Message {
            address: 0xFEE0_0000,
            data: 0x400,
        };
        assert_eq!(nmi.decode().unwrap().mode, DeliveryMode::Nmi);
        for (address, data) in [
            (0xFED0_0000, 0x30),
            (0x1_FEE0_0000, 0x30),
            (0, 0x30),
            (0xFEE0_0000, 0x330),
            (0xFEE0_0000, 0x630),
        ] {
            assert_eq!(
                Message { address, data }.decode(),
                None,
                "{address:#x} {data:#x}"
            );
        }
    }
}
