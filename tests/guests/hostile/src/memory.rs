//! Memory attacks: reads and writes over the guest-physical address space, page tables that
//! point at guest-physical addresses with nothing behind them, CR3 in a hole, and instruction
//! fetch from a hole.
//!
//! What the attacker must see: its own RAM and nothing else. Below the top of its RAM it may
//! read anything except the canary's pattern (`canary::pattern`), which exists only in the
//! canary's RAM; above it every address outside the platform's devices reads as all ones and
//! drops writes, as a PC bus with nothing decoding the address does. Host-physical addresses
//! where the monitor and the canary live are covered as guest-physical addresses: all of the
//! emulator's RAM (1 GiB) lies in the swept range. Addresses at or above MAXPHYADDR cannot be
//! mapped at all: a page-table entry holding one has reserved bits set and raises #PF with
//! the RSVD bit (Intel SDM Vol. 3A 4.7; AMD APM Vol. 2 5.3.1).

use rt::insn::{self, Width};
use rt::trap::{Trap, PF};

use crate::canary::pattern;
use crate::report::{check, note};
use crate::rng::Rng;
use crate::{cpu, paging};

/// Windows the platform decodes: the PCI BARs, the I/O APIC and the local APIC.
const DEVICES: [(u64, u64); 3] = [
    (0xC000_0000, 0xC000_0000 + 17 * 0x1_0000),
    (0xFEC0_0000, 0xFEC0_1000),
    (0xFEE0_0000, 0xFEE0_1000),
];
/// A hole: above any test VM's RAM, in no device's window.
pub const HOLE: u64 = 0xF000_0000;
/// #PF error code bit: reserved bit set in a paging entry (Intel SDM Vol. 3A 4.7).
const PF_RSVD: u64 = 1 << 3;
const FOUR_GIB: u64 = 1 << 32;
const TWO_MIB: u64 = 1 << 21;

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

fn in_device(gpa: u64) -> bool {
    DEVICES.iter().any(|&(s, e)| (s..e).contains(&gpa))
}

/// Reads `va` (guest-physical `gpa`) with every width; each must give all ones.
fn expect_all_ones(va: u64, gpa: u64) {
    for width in Width::ALL {
        // SAFETY: nothing is behind `gpa`; a read changes nothing.
        let got = unsafe { insn::read(va, width) };
        check!(
            got == Ok(width.ones()),
            "{}-byte read of gpa {gpa:#x} gave {}",
            width.bytes(),
            insn::Outcome(got)
        );
    }
}

/// Writes zeros of every width to `va` (guest-physical `gpa`), then reads it back.
fn expect_write_dropped(va: u64, gpa: u64) {
    for width in Width::ALL {
        // SAFETY: nothing is behind `gpa`; the write must be dropped.
        let done = unsafe { insn::write(va, width, 0) };
        check!(
            done.is_ok(),
            "{}-byte write to gpa {gpa:#x} {}",
            width.bytes(),
            insn::Completion(done)
        );
    }
    expect_all_ones(va, gpa);
}

pub fn scan(boot_params: u64) {
    paging::install();
    let top = cpu::ram_top(boot_params);
    check!(top > 0 && top < FOUR_GIB, "RAM top {top:#x}");
    own_ram(top);
    below_4g(top);
    above_4g();
}

/// Every page of the attacker's own range must hold anything but the canary's pattern.
fn own_ram(top: u64) {
    let image = (&raw const __image_start as u64)..(&raw const __image_end as u64);
    let mut pages = 0;
    for page in (0..top).step_by(4096) {
        if image.contains(&page) {
            continue;
        }
        for offset in [0, 0x800, 0xFF8] {
            let gpa = page + offset;
            // SAFETY: identity-mapped; RAM or a hole, reading changes nothing.
            let got = unsafe { insn::read(gpa, Width::Qword) };
            check!(
                got != Ok(pattern(gpa)),
                "read the canary's pattern at {gpa:#x}"
            );
        }
        pages += 1;
    }
    note(format_args!("{pages} pages of own range clean"));
}

/// From the top of RAM to 4 GiB: one address in every 2 MiB, outside the devices.
fn below_4g(top: u64) {
    let mut rng = Rng::new(0x6D65_6D00);
    let mut n = 0;
    let mut gpa = (top + TWO_MIB - 1) & !(TWO_MIB - 1);
    while gpa < FOUR_GIB {
        let at = gpa + (rng.below(TWO_MIB) & !7);
        if !in_device(at) {
            expect_all_ones(at, at);
            if n % 8 == 0 {
                expect_write_dropped(at, at);
            }
            n += 1;
        }
        gpa += TWO_MIB;
    }
    note(format_args!("{n} addresses below 4 GiB read all ones"));
}

/// From 4 GiB to MAXPHYADDR: each power of two, around it, and random addresses, through the
/// window.
fn above_4g() {
    let bits = cpu::max_phys_bits();
    let mut rng = Rng::new(0x6869_6768);
    let mut n = 0;
    let mut try_at = |gpa: u64, write: bool| {
        let va = paging::map(gpa);
        expect_all_ones(va, gpa);
        if write {
            expect_write_dropped(va, gpa);
        }
        n += 1;
    };
    for k in 32..bits {
        let base = 1u64 << k;
        try_at(base, true);
        try_at(base + (rng.below(base) & !7), false);
        try_at(2 * base - 8, true);
    }
    for _ in 0..256 {
        let gpa = FOUR_GIB + (rng.below((1u64 << bits) - FOUR_GIB) & !7);
        try_at(gpa, false);
    }
    note(format_args!("{n} addresses up to 2^{bits} read all ones"));
}

/// #PF with RSVD set. The architecture also sets P (the entry is present); QEMU's TCG leaves it
/// clear, and with nested paging the guest's own walk never reaches the monitor, so P is not
/// checked.
fn is_rsvd_pf(got: Result<u64, Trap>) -> bool {
    matches!(got, Err(Trap { vector: PF, error, .. }) if error & PF_RSVD != 0)
}

pub fn page_tables_to_nowhere(_: u64) {
    paging::install();
    let bits = cpu::max_phys_bits();
    // 4 KiB pages of nothing beyond 4 GiB and in the hole below it.
    let mut ptes = [0u64; 66];
    for (i, e) in ptes.iter_mut().enumerate().take(64) {
        *e = paging::pte(FOUR_GIB + i as u64 * 0x10_0000);
    }
    // An address at MAXPHYADDR: reserved bits in the PTE.
    ptes[64] = paging::pte(1 << bits);
    ptes[65] = paging::pte(HOLE);
    // A 2 MiB entry with bits 20:13 set, which must be zero (reserved) for a 2 MiB page.
    let slot = paging::map_raw(&ptes, paging::huge_pde(FOUR_GIB | 0x1F_E000));
    for i in 0..64 {
        let gpa = FOUR_GIB + i * 0x10_0000;
        expect_write_dropped(slot + i * 4096, gpa);
    }
    expect_write_dropped(slot + 65 * 4096, HOLE);
    for (what, va) in [
        ("PTE at MAXPHYADDR", slot + 64 * 4096),
        ("2 MiB PDE with reserved bits", slot + TWO_MIB),
    ] {
        // SAFETY: the entry is invalid; the read faults.
        let got = unsafe { insn::read(va, Width::Qword) };
        check!(
            is_rsvd_pf(got),
            "{what}: read gave {}, not #PF(RSVD)",
            insn::Outcome(got)
        );
    }
    // A page directory in the hole: the walk reads all ones, a present entry with reserved
    // bits set, so #PF(RSVD) as on hardware.
    let va = paging::map_directory_at(2, HOLE);
    // SAFETY: the walk reaches no RAM; the read faults.
    let got = unsafe { insn::read(va + 0x1234, Width::Qword) };
    check!(
        is_rsvd_pf(got),
        "directory in the hole: read gave {}, not #PF(RSVD)",
        insn::Outcome(got)
    );
    note(format_args!("page tables into nothing behaved"));
}

/// CR3 in the hole: the next fetch walks tables that are not there. Not expected to return.
pub fn cr3_in_a_hole(_: u64) {
    // SAFETY: the guest gives up its address space on purpose; it never runs on.
    unsafe { cpu::set_cr3(HOLE) };
    report_survived("fetch through tables in a hole")
}

/// Jumps to the hole: fetching from nothing. Not expected to return.
pub fn fetch_from_a_hole(_: u64) {
    // SAFETY: the guest gives up on purpose; nothing returns from the hole.
    unsafe { core::arch::asm!("jmp {}", in(reg) HOLE, options(noreturn)) }
}

fn report_survived(what: &str) -> ! {
    crate::report::fail(format_args!("{what} returned"))
}
