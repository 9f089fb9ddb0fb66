//! Page-walk tests over hand-built 32-bit, PAE, 4-level and 5-level tables.

use super::{
    is_canonical, read_linear, translate, write_linear, Access, WalkError, PF_FETCH, PF_PRESENT,
    PF_RSVD, PF_USER, PF_WRITE,
};
use crate::emulate::testvm::*;
use vcpu::ControlState;

const LA: u64 = 0x0000_7f12_3456_7000;

fn rd() -> Access {
    Access::read(0)
}

fn fault(r: Result<u64, WalkError>) -> u32 {
    match r {
        Err(WalkError::PageFault { error_code, .. }) => error_code,
        other => panic!("expected a page fault, got {other:x?}"),
    }
}

#[test]
fn paging_off_is_identity_within_4_gib() {
    let mut vm = TestVm::new(4);
    let ctrl = ControlState {
        cr0: CR0_PE,
        ..Default::default()
    };
    assert_eq!(
        translate(&ctrl, &vm.ram(), 0x1234_5678, rd()),
        Ok(0x1234_5678)
    );
    assert_eq!(translate(&ctrl, &vm.ram(), 0x1_0000_0010, rd()), Ok(0x10));
}

#[test]
fn four_level_4k_page_keeps_the_offset() {
    let mut vm = TestVm::new(4);
    vm.map(LA, 0x23_4000, 1, P | RW);
    let ctrl = vm.long_mode();
    assert_eq!(translate(&ctrl, &vm.ram(), LA + 0xabc, rd()), Ok(0x23_4abc));
    assert_eq!(
        translate(&ctrl, &vm.ram(), LA + 0x8, Access::write(0)),
        Ok(0x23_4008)
    );
}

#[test]
fn two_mib_and_one_gib_pages() {
    let mut vm = TestVm::new(4);
    vm.map(0x4000_0000, 0x20_0000, 2, P | RW);
    vm.map(0x80_0000_0000, 0x1_4000_0000, 3, P | RW);
    let ctrl = vm.long_mode();
    assert_eq!(
        translate(&ctrl, &vm.ram(), 0x4012_3456, rd()),
        Ok(0x32_3456)
    );
    assert_eq!(
        translate(&ctrl, &vm.ram(), 0x80_3456_789a, rd()),
        Ok(0x1_7456_789a)
    );
}

#[test]
fn reserved_bits_in_a_2_mib_entry_fault_with_rsvd() {
    let mut vm = TestVm::new(4);
    let slot = vm.map(0x4000_0000, 0x20_0000, 2, P | RW);
    vm.write64(slot, vm.read64(slot) | 1 << 13);
    let ctrl = vm.long_mode();
    let code = fault(translate(&ctrl, &vm.ram(), 0x4000_0000, Access::write(0)));
    assert_eq!(code, PF_PRESENT | PF_RSVD | PF_WRITE);
}

#[test]
fn five_level_paging_uses_bits_56_to_48() {
    let mut vm = TestVm::new(5);
    let la = 0x00ab_cdef_1234_5000;
    vm.map(la, 0x4_5000, 1, P);
    let ctrl = vm.long_mode();
    assert_eq!(translate(&ctrl, &vm.ram(), la + 0x10, rd()), Ok(0x4_5010));
    // Canonical with 57 bits, not with 48.
    let mut four = ctrl;
    four.cr4 &= !CR4_LA57;
    assert_eq!(
        translate(&four, &vm.ram(), la, rd()),
        Err(WalkError::NonCanonical)
    );
}

#[test]
fn non_canonical_addresses_are_rejected() {
    let mut vm = TestVm::new(4);
    let ctrl = vm.long_mode();
    assert_eq!(
        translate(&ctrl, &vm.ram(), 0x0000_8000_0000_0000, rd()),
        Err(WalkError::NonCanonical)
    );
    assert!(is_canonical(0xffff_8000_0000_0000, 4));
    assert!(!is_canonical(0xfff0_0000_0000_0000, 4));
}

#[test]
fn not_present_error_codes() {
    let mut vm = TestVm::new(4);
    let ctrl = vm.long_mode();
    assert_eq!(fault(translate(&ctrl, &vm.ram(), LA, rd())), 0);
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), LA, Access::write(3))),
        PF_WRITE | PF_USER
    );
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), LA, Access::fetch(0))),
        PF_FETCH
    );
    assert_eq!(
        translate(&ctrl, &vm.ram(), LA + 0x123, rd()),
        Err(WalkError::PageFault {
            linear: LA + 0x123,
            error_code: 0
        })
    );
}

#[test]
fn write_to_read_only_page_depends_on_cr0_wp() {
    let mut vm = TestVm::new(4);
    vm.map(LA, 0x23_4000, 1, P | US);
    let mut ctrl = vm.long_mode();
    let w0 = Access::write(0);
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), LA, w0)),
        PF_PRESENT | PF_WRITE
    );
    ctrl.cr0 &= !CR0_WP;
    assert_eq!(translate(&ctrl, &vm.ram(), LA, w0), Ok(0x23_4000));
    // User writes honour R/W whatever WP says.
    let code = fault(translate(&ctrl, &vm.ram(), LA, Access::write(3)));
    assert_eq!(code, PF_PRESENT | PF_WRITE | PF_USER);
}

#[test]
fn nx_fetch_faults_and_xd_without_nxe_is_reserved() {
    let mut vm = TestVm::new(4);
    vm.map(LA, 0x23_4000, 1, P | RW | NX);
    let mut ctrl = vm.long_mode();
    assert_eq!(translate(&ctrl, &vm.ram(), LA, rd()), Ok(0x23_4000));
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), LA, Access::fetch(0))),
        PF_PRESENT | PF_FETCH
    );
    ctrl.efer &= !EFER_NXE;
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), LA, rd())),
        PF_PRESENT | PF_RSVD
    );
}

#[test]
fn user_access_to_supervisor_page_faults_at_any_level() {
    let mut vm = TestVm::new(4);
    vm.map(LA, 0x23_4000, 1, P | RW | US);
    let ctrl = vm.long_mode();
    assert_eq!(
        translate(&ctrl, &vm.ram(), LA, Access::read(3)),
        Ok(0x23_4000)
    );
    let pdpte = vm.entry_addr(LA, 3);
    vm.write64(pdpte, vm.read64(pdpte) & !US);
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), LA, Access::read(3))),
        PF_PRESENT | PF_USER
    );
    assert_eq!(translate(&ctrl, &vm.ram(), LA, rd()), Ok(0x23_4000));
}

#[test]
fn smep_blocks_supervisor_fetch_from_user_pages() {
    let mut vm = TestVm::new(4);
    vm.map(LA, 0x23_4000, 1, P | US);
    let mut ctrl = vm.long_mode();
    assert_eq!(
        translate(&ctrl, &vm.ram(), LA, Access::fetch(0)),
        Ok(0x23_4000)
    );
    ctrl.cr4 |= CR4_SMEP;
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), LA, Access::fetch(0))),
        PF_PRESENT | PF_FETCH
    );
}

#[test]
fn entry_outside_ram_is_out_of_ram() {
    let mut vm = TestVm::new(4);
    let ctrl = vm.long_mode();
    let pml4e = ROOT + ((LA >> 39) & 0x1ff) * 8;
    vm.write64(pml4e, 0x40_0000_0000 | P | RW);
    let expect = 0x40_0000_0000 + ((LA >> 30) & 0x1ff) * 8;
    assert_eq!(
        translate(&ctrl, &vm.ram(), LA, rd()),
        Err(WalkError::OutOfRam(expect))
    );
}

fn legacy32(pse: bool) -> ControlState {
    ControlState {
        cr0: CR0_PE | CR0_WP | CR0_PG,
        cr3: 0x5000,
        cr4: if pse { CR4_PSE } else { 0 },
        cs_db: true,
        ..Default::default()
    }
}

#[test]
fn thirty_two_bit_paging_4k_and_4m_pages() {
    let mut vm = TestVm::new(4);
    // PDE 1 → page table at 0x6000, whose PTE 2 → 0x7000. PDE 3 is a 4 MiB page at 0xc0_0000
    // with PSE-36 bits 39:32 = 0x12; PDE 6 a 4 MiB page at 0x40_0000.
    vm.write32(0x5000 + 4, 0x6000 | (P | RW) as u32);
    vm.write32(0x6000 + 2 * 4, 0x7000 | P as u32);
    vm.write32(0x5000 + 3 * 4, 0x00c0_0000 | (0x12 << 13) | (P | PS) as u32);
    vm.write32(0x5000 + 6 * 4, 0x0040_0000 | (P | PS) as u32);
    let ctrl = legacy32(true);
    let la = (1 << 22) | (2 << 12) | 0x345;
    assert_eq!(translate(&ctrl, &vm.ram(), la, rd()), Ok(0x7345));
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), la, Access::write(0))),
        PF_PRESENT | PF_WRITE
    );
    assert_eq!(
        translate(&ctrl, &vm.ram(), (3 << 22) | 0x12_3456, rd()),
        Ok(0x12_00d2_3456)
    );
    assert_eq!(
        translate(&ctrl, &vm.ram(), (6 << 22) | (1 << 12), rd()),
        Ok(0x40_1000)
    );
    // Without CR4.PSE the PS bit is ignored and the PDE names a page table (here empty).
    let no_pse = legacy32(false);
    assert_eq!(
        fault(translate(&no_pse, &vm.ram(), (6 << 22) | (1 << 12), rd())),
        0
    );
    // No NX in 32-bit paging, so a fetch fault carries no I/D bit.
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), 5 << 22, Access::fetch(0))),
        0
    );
}

#[test]
fn pae_paging_4k_and_2m_pages() {
    let mut vm = TestVm::new(4);
    let ctrl = ControlState {
        cr0: CR0_PE | CR0_WP | CR0_PG,
        cr3: 0x5020,
        cr4: CR4_PAE,
        efer: EFER_NXE,
        cs_db: true,
        ..Default::default()
    };
    // PDPTE 2 → PD 0x6000; PDE 1 → PT 0x7000, PTE 3 → 0x9000; PDE 4 → 2 MiB at 0x60_0000.
    vm.write64(0x5020 + 2 * 8, 0x6000 | P);
    vm.write64(0x6000 + 8, 0x7000 | P | RW);
    vm.write64(0x7000 + 3 * 8, 0x9000 | P | RW | NX);
    vm.write64(0x6000 + 4 * 8, 0x60_0000 | P | PS);
    let la = (2 << 30) | (1 << 21) | (3 << 12) | 0x10;
    assert_eq!(
        translate(&ctrl, &vm.ram(), la, Access::write(0)),
        Ok(0x9010)
    );
    assert_eq!(
        fault(translate(&ctrl, &vm.ram(), la, Access::fetch(0))),
        PF_PRESENT | PF_FETCH
    );
    assert_eq!(
        translate(&ctrl, &vm.ram(), (2 << 30) | (4 << 21) | 0x1_2345, rd()),
        Ok(0x61_2345)
    );
    assert_eq!(fault(translate(&ctrl, &vm.ram(), 1 << 30, rd())), 0);
}

#[test]
fn read_linear_crosses_into_a_non_contiguous_page() {
    let mut vm = TestVm::new(4);
    vm.map(LA, 0x30_0000, 1, P | RW);
    vm.map(LA + 0x1000, 0x20_0000, 1, P | RW);
    vm.poke(0x30_0ffe, &[1, 2]);
    vm.poke(0x20_0000, &[3, 4]);
    let ctrl = vm.long_mode();
    let mut buf = [0; 4];
    read_linear(&ctrl, &vm.ram(), LA + 0xffe, rd(), &mut buf).unwrap();
    assert_eq!(buf, [1, 2, 3, 4]);
    let err = read_linear(&ctrl, &vm.ram(), LA + 0x1ffe, rd(), &mut buf);
    assert_eq!(
        err,
        Err(WalkError::PageFault {
            linear: LA + 0x2000,
            error_code: 0
        })
    );
}

#[test]
fn write_linear_splits_and_is_all_or_nothing() {
    let mut vm = TestVm::new(4);
    vm.map(LA, 0x30_0000, 1, P | RW);
    vm.map(LA + 0x1000, 0x20_0000, 1, P);
    let ctrl = vm.long_mode();
    let err = write_linear(&ctrl, &mut vm.ram(), LA + 0xfff, &[9, 9]);
    assert_eq!(
        err,
        Err(WalkError::PageFault {
            linear: LA + 0x1000,
            error_code: PF_PRESENT | PF_WRITE
        })
    );
    assert_eq!(vm.ram[0x30_0fff], 0, "nothing written before the fault");
    vm.map(LA + 0x1000, 0x20_0000, 1, P | RW);
    write_linear(&ctrl, &mut vm.ram(), LA + 0xfff, &[7, 8]).unwrap();
    assert_eq!((vm.ram[0x30_0fff], vm.ram[0x20_0000]), (7, 8));
}
