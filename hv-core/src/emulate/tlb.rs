//! A software TLB for the emulator's guest page walks: the last few translations of a linear
//! page for one kind of access under one paging state, each kept with the `Trail` of
//! paging-structure entries its walk read.
//!
//! It is not the CPU's TLB and never stale: an entry is used only after every entry of its trail
//! was read again from guest RAM and still holds the value the walk saw. A walk is a function of
//! the paging controls (CR0, CR3, CR4, EFER and CPL: the key), the linear page, the access and
//! the entries it reads; the first of those lies at an address given by CR3 and the linear
//! address, each later one at an address given by the entry before it. So with the key equal
//! and every entry unchanged a new walk would read the same entries and end the same way: a hit
//! is what walking again would give, whatever the guest did to its page tables since, with or
//! without INVLPG. Faulting walks are not kept.

use super::walk::{translate_traced, Access, Trail, WalkError, PAGE_SIZE};
use crate::memory::GuestMemory;
use vcpu::ControlState;

const ENTRIES: usize = 4;

/// What a walk depends on besides the linear address and the paging-structure entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Key {
    /// The linear address's page number (first: it tells entries apart soonest).
    page: u64,
    cr3: u64,
    cr0: u64,
    cr4: u64,
    efer: u64,
    cpl: u8,
    access: Access,
}

impl Key {
    fn new(ctrl: &ControlState, linear: u64, access: Access) -> Self {
        Self {
            cr0: ctrl.cr0,
            cr3: ctrl.cr3,
            cr4: ctrl.cr4,
            efer: ctrl.efer,
            cpl: ctrl.cpl,
            access,
            page: linear / PAGE_SIZE,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    key: Key,
    /// The guest-physical page the linear page translates to.
    frame: u64,
    trail: Trail,
    valid: bool,
}

/// Recent translations of one vCPU, replaced round-robin.
#[derive(Clone, Debug, Default)]
pub struct Tlb {
    entries: [Entry; ENTRIES],
    next: usize,
}

impl Tlb {
    pub fn new() -> Self {
        Self::default()
    }

    /// `walk::translate`, from a still-valid earlier walk when there is one.
    pub fn translate(
        &mut self,
        ctrl: &ControlState,
        mem: &impl GuestMemory,
        linear: u64,
        access: Access,
    ) -> Result<u64, WalkError> {
        let key = Key::new(ctrl, linear, access);
        let offset = linear % PAGE_SIZE;
        let hit = self
            .entries
            .iter()
            .find(|e| e.valid && e.key == key && e.trail.holds(mem));
        if let Some(e) = hit {
            return Ok(e.frame | offset);
        }
        let (gpa, trail) = translate_traced(ctrl, mem, linear, access)?;
        if let Some(e) = self.entries.get_mut(self.next) {
            *e = Entry {
                key,
                frame: gpa & !(PAGE_SIZE - 1),
                trail,
                valid: true,
            };
        }
        self.next = (self.next + 1) % ENTRIES;
        Ok(gpa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulate::testvm::*;
    use crate::emulate::walk::translate;

    const LA: u64 = 0x0000_7f12_3456_7000;

    #[test]
    fn hits_follow_every_page_table_change() {
        let mut vm = TestVm::new(4);
        let leaf = vm.map(LA, 0x23_4000, 1, P | RW);
        let ctrl = vm.long_mode();
        let rd = Access::read(0);
        let mut tlb = Tlb::new();
        assert_eq!(tlb.translate(&ctrl, &vm.ram(), LA + 5, rd), Ok(0x23_4005));
        assert_eq!(tlb.translate(&ctrl, &vm.ram(), LA + 9, rd), Ok(0x23_4009));
        // Remapped without INVLPG: the cache follows the tables, as a walk does.
        vm.write64(leaf, 0x45_6000 | P | RW);
        assert_eq!(tlb.translate(&ctrl, &vm.ram(), LA, rd), Ok(0x45_6000));
        // A higher level moved to another page table.
        let pde = vm.entry_addr(LA, 2);
        let table = vm.alloc_table();
        vm.write64(pde, table | P | RW);
        vm.write64(table + ((LA >> 12) & 0x1ff) * 8, 0x67_8000 | P);
        assert_eq!(tlb.translate(&ctrl, &vm.ram(), LA, rd), Ok(0x67_8000));
        // Unmapped: the fault of a fresh walk.
        vm.write64(pde, 0);
        let fresh = translate(&ctrl, &vm.ram(), LA, rd);
        assert!(fresh.is_err());
        assert_eq!(tlb.translate(&ctrl, &vm.ram(), LA, rd), fresh);
    }

    #[test]
    fn the_key_covers_the_controls_and_the_access() {
        let mut vm = TestVm::new(4);
        vm.map(LA, 0x23_4000, 1, P);
        let mut ctrl = vm.long_mode();
        ctrl.cr0 &= !CR0_WP;
        let mut tlb = Tlb::new();
        assert_eq!(
            tlb.translate(&ctrl, &vm.ram(), LA, Access::read(0)),
            Ok(0x23_4000)
        );
        assert!(
            tlb.translate(&ctrl, &vm.ram(), LA, Access::write(0))
                .is_ok(),
            "CR0.WP clear: supervisor writes ignore R/W"
        );
        ctrl.cr0 |= CR0_WP;
        assert!(tlb
            .translate(&ctrl, &vm.ram(), LA, Access::write(0))
            .is_err());
        ctrl.cpl = 3;
        assert!(tlb
            .translate(&ctrl, &vm.ram(), LA, Access::read(3))
            .is_err());
        ctrl.cr3 = 0x5000;
        assert!(tlb
            .translate(&ctrl, &vm.ram(), LA, Access::read(0))
            .is_err());
    }

    #[test]
    fn agrees_with_walks_over_more_pages_than_it_keeps() {
        let mut vm = TestVm::new(5);
        for i in 0..16 {
            vm.map(LA + i * PAGE_SIZE, 0x10_0000 + i * 3 * PAGE_SIZE, 1, P | RW);
        }
        let ctrl = vm.long_mode();
        let rd = Access::read(0);
        let mut tlb = Tlb::new();
        for round in 0..3u64 {
            for i in [0, 1, 2, 0, 3, 4, 5, 1, 15, 16] {
                let la = LA + i * PAGE_SIZE + round * 8;
                assert_eq!(
                    tlb.translate(&ctrl, &vm.ram(), la, rd),
                    translate(&ctrl, &vm.ram(), la, rd),
                    "page {i}"
                );
            }
        }
    }
}
