//! A mock VM for the emulator's unit tests: guest RAM in a `Vec`, 4- or 5-level page tables
//! built on demand, and a device bus that records every access.
//!
//! Test support only; never built into the monitor.

use super::MmioBus;
use crate::memory::GuestRam;
use vcpu::ControlState;

pub const RAM_SIZE: usize = 8 << 20;
/// The root table; further tables are allocated upwards from the next page.
pub const ROOT: u64 = 0x1000;

pub const P: u64 = 1 << 0;
pub const RW: u64 = 1 << 1;
pub const US: u64 = 1 << 2;
pub const PS: u64 = 1 << 7;
pub const NX: u64 = 1 << 63;

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PSE: u64 = 1 << 4;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_LA57: u64 = 1 << 12;
pub const CR4_SMEP: u64 = 1 << 20;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;

pub struct TestVm {
    pub ram: Vec<u8>,
    levels: u32,
    next_table: u64,
}

impl TestVm {
    /// A VM whose tables have `levels` (4 or 5) levels, rooted at `ROOT`.
    pub fn new(levels: u32) -> Self {
        Self {
            ram: vec![0; RAM_SIZE],
            levels,
            next_table: ROOT + 0x1000,
        }
    }

    pub fn ram(&mut self) -> GuestRam<'_> {
        GuestRam::new(&mut self.ram)
    }

    /// 64-bit mode at CPL 0 with WP and NX on, paging through these tables.
    pub fn long_mode(&self) -> ControlState {
        let la57 = if self.levels == 5 { CR4_LA57 } else { 0 };
        ControlState {
            cr0: CR0_PE | CR0_WP | CR0_PG,
            cr3: ROOT,
            cr4: CR4_PAE | la57,
            efer: EFER_LME | EFER_LMA | EFER_NXE,
            cs_long: true,
            ..Default::default()
        }
    }

    pub fn read64(&self, gpa: u64) -> u64 {
        let at = gpa as usize;
        u64::from_le_bytes(self.ram[at..at + 8].try_into().unwrap())
    }

    pub fn write64(&mut self, gpa: u64, value: u64) {
        let at = gpa as usize;
        self.ram[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    pub fn write32(&mut self, gpa: u64, value: u32) {
        let at = gpa as usize;
        self.ram[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    pub fn poke(&mut self, gpa: u64, bytes: &[u8]) {
        let at = gpa as usize;
        self.ram[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// A zeroed page for a paging structure.
    pub fn alloc_table(&mut self) -> u64 {
        let t = self.next_table;
        self.next_table += 0x1000;
        assert!(self.next_table <= 0x10_0000, "test page tables overflow");
        t
    }

    /// Maps `linear` to `pa` with a leaf at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) carrying
    /// `flags` (PS is added for large pages); tables above it are P|RW|US. Returns the
    /// guest-physical address of the leaf entry.
    pub fn map(&mut self, linear: u64, pa: u64, level: u32, flags: u64) -> u64 {
        let mut table = ROOT;
        for l in (level + 1..=self.levels).rev() {
            let slot = table + index(linear, l) * 8;
            let e = self.read64(slot);
            table = if e & P == 0 {
                let t = self.alloc_table();
                self.write64(slot, t | P | RW | US);
                t
            } else {
                e & 0x000f_ffff_ffff_f000
            };
        }
        let slot = table + index(linear, level) * 8;
        let ps = if level > 1 { PS } else { 0 };
        self.write64(slot, pa | flags | ps);
        slot
    }

    /// The guest-physical address of the entry at `level` on the walk for `linear`.
    pub fn entry_addr(&self, linear: u64, level: u32) -> u64 {
        let mut table = ROOT;
        for l in (level + 1..=self.levels).rev() {
            table = self.read64(table + index(linear, l) * 8) & 0x000f_ffff_ffff_f000;
        }
        table + index(linear, level) * 8
    }
}

fn index(linear: u64, level: u32) -> u64 {
    (linear >> (12 + 9 * (level - 1))) & 0x1ff
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusOp {
    Read { gpa: u64, size: u8 },
    Write { gpa: u64, size: u8, value: u64 },
}

/// Records accesses; every read returns `read_value`.
#[derive(Default)]
pub struct MockBus {
    pub log: Vec<BusOp>,
    pub read_value: u64,
}

impl MmioBus for MockBus {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        self.log.push(BusOp::Read { gpa, size });
        self.read_value
    }

    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        self.log.push(BusOp::Write { gpa, size, value });
    }
}
