//! Entering VMX root operation on this CPU (SDM Vol. 3C §24.7-24.8, §24.11.5) and the host
//! state every VMCS restores on exit (§25.5, checked by §27.2.2-27.2.4).
//!
//! VM exits need a usable host TR (a non-zero selector), and the monitor's boot GDT has no TSS.
//! So `enable` builds the host's own GDT: a copy of the live GDT's descriptors followed by a
//! 64-bit TSS descriptor for a zeroed TSS (no ring changes, no IST: it is never consulted), and
//! loads it with LGDT and LTR. The code and data selectors keep their meaning, so CS and SS need
//! no reload. The other CPUs (`enable_other`) load the same GDT and TSS, so that every VMCS's
//! host state is right on every CPU and a VMCS may move between them.

use alloc::boxed::Box;
use core::arch::asm;

use crate::features::{fix, rdmsr, Features};
use crate::vmcs::{self, Region, VmFail};

const CR4_VMXE: u64 = 1 << 13;
const CR4_OSXSAVE: u64 = 1 << 18;
const MSR_EFER: u32 = 0xC000_0080;
const MSR_PAT: u32 = 0x277;
/// The boot GDT has three descriptors; room for a few more keeps the copy general.
const MAX_COPIED: usize = 16;
const TSS_LIMIT: u32 = 0x67;

/// A 64-bit TSS (SDM Vol. 3A §8.7): 104 bytes, all zero but the I/O map base, which points past
/// the limit (no I/O permission bitmap).
#[repr(C, align(16))]
struct Tss([u8; 104]);

#[repr(C, align(16))]
struct Gdt([u64; MAX_COPIED + 2]);

/// The host state the VMCS's host-state area holds (SDM Vol. 3C §25.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cs: u16,
    pub ss: u16,
    pub ds: u16,
    pub es: u16,
    pub tr: u16,
    pub tr_base: u64,
    pub gdtr_base: u64,
    pub idtr_base: u64,
    pub efer: u64,
    pub pat: u64,
}

/// A system-segment descriptor for an available 64-bit TSS (type 9, present; SDM Vol. 3A
/// §8.2.3, Figure 8-4): two GDT slots.
pub fn tss_descriptor(base: u64, limit: u32) -> [u64; 2] {
    let low = u64::from(limit & 0xFFFF)
        | (base & 0xFF_FFFF) << 16
        | 0x89 << 40
        | u64::from((limit >> 16) & 0xF) << 48
        | (base >> 24 & 0xFF) << 56;
    [low, base >> 32]
}

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

fn sgdt() -> Pointer {
    let mut p = Pointer { limit: 0, base: 0 };
    // SAFETY: SGDT stores 10 bytes into `p`.
    unsafe { asm!("sgdt [{}]", in(reg) &mut p, options(nostack)) };
    p
}

fn sidt() -> Pointer {
    let mut p = Pointer { limit: 0, base: 0 };
    // SAFETY: SIDT stores 10 bytes into `p`.
    unsafe { asm!("sidt [{}]", in(reg) &mut p, options(nostack)) };
    p
}

macro_rules! read_reg {
    ($insn:literal) => {{
        let v: u64;
        // SAFETY: reading a control or segment register has no side effects at CPL 0.
        unsafe { asm!($insn, out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Turns VMX on for this CPU: CR0 and CR4 to their fixed bits with CR4.VMXE (and CR4.OSXSAVE
/// when the CPU has XSAVE, so that guests' XSETBV can be carried out), VMXON, then the host GDT
/// with a TSS. Returns the host state for the VMCSs.
///
/// # Safety
/// `features` must come from `features::detect` on this CPU, called once per CPU. The current
/// GDT must be the monitor's flat one (code and data descriptors only).
pub unsafe fn enable(features: &Features) -> Result<HostState, VmFail> {
    // Caches on: firmware may leave CD and NW as reset set them, and VM exits keep them.
    let cr0 = fix(
        read_reg!("mov {}, cr0") & !crate::cr::CR0_CACHE_BITS,
        features.cr0_fixed,
    );
    let osxsave = if crate::xcr0::supported() != 0 {
        CR4_OSXSAVE
    } else {
        0
    };
    let cr4 = fix(
        read_reg!("mov {}, cr4") | CR4_VMXE | osxsave,
        features.cr4_fixed,
    );
    // SAFETY: per the caller.
    unsafe { vmxon(features, cr0, cr4)? };
    let (gdtr_base, tr, tr_base) = load_host_gdt();
    Ok(HostState {
        cr0,
        cr3: read_reg!("mov {}, cr3"),
        cr4,
        cs: read_reg!("mov {:x}, cs") as u16,
        ss: read_reg!("mov {:x}, ss") as u16,
        ds: read_reg!("mov {:x}, ds") as u16,
        es: read_reg!("mov {:x}, es") as u16,
        tr,
        tr_base,
        gdtr_base,
        idtr_base: sidt().base,
        // SAFETY: EFER and PAT exist on every 64-bit CPU.
        efer: unsafe { rdmsr(MSR_EFER) },
        // SAFETY: as above.
        pat: unsafe { rdmsr(MSR_PAT) },
    })
}

/// Turns VMX on for another CPU of the same machine with the host state `enable` returned on
/// the first one: the same CR0 and CR4, VMXON with a region of its own, then the same GDT and
/// TSS (CR3, the IDT, EFER and PAT are the monitor's on every CPU).
///
/// # Safety
/// As for `enable`, on a CPU other than the one `host` came from, after `enable` there.
pub unsafe fn enable_other(features: &Features, host: &HostState) -> Result<(), VmFail> {
    // SAFETY: per the caller.
    unsafe { vmxon(features, host.cr0, host.cr4)? };
    load_shared_gdt(host);
    Ok(())
}

/// Loads CR0 and CR4 and enters VMX root operation with a new VMXON region.
///
/// # Safety
/// As for `enable`; `cr0` and `cr4` hold the fixed bits and CR4.VMXE.
unsafe fn vmxon(features: &Features, cr0: u64, cr4: u64) -> Result<(), VmFail> {
    // SAFETY: the fixed bits are what VMX operation requires; the monitor runs with paging,
    // protection and NE already on, so only bits it does not rely on change.
    unsafe {
        asm!("mov cr0, {}", in(reg) cr0, options(nostack));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack));
    }
    let vmxon = Box::leak(Region::new(features.revision));
    // SAFETY: CR4.VMXE and the fixed bits are set, FEATURE_CONTROL allows VMXON (detect), and
    // the region is leaked, so it lives as long as VMX operation.
    unsafe { vmcs::vmxon(vmxon.pa()) }
}

/// Loads the GDT `load_host_gdt` built on the first CPU, and TR from its TSS descriptor. LTR
/// marks the descriptor busy and faults on a busy one (SDM Vol. 3A §8.2.4), so it is made
/// available again first: the TSS is never consulted, so CPUs may share it.
fn load_shared_gdt(host: &HostState) {
    let gdt = Pointer {
        limit: host.tr + 15,
        base: host.gdtr_base,
    };
    let type_byte = (host.gdtr_base + u64::from(host.tr) + 5) as *mut u8;
    // SAFETY: the GDT was built and leaked by `load_host_gdt` and holds a TSS descriptor at
    // selector `tr`; its type byte goes back to "available 64-bit TSS" (0x89, present).
    unsafe {
        asm!("lgdt [{}]", in(reg) &gdt, options(nostack));
        type_byte.write_volatile(0x89);
        asm!("ltr {:x}", in(reg) host.tr, options(nostack, nomem));
    }
}

/// Copies the live GDT's descriptors into a new GDT, appends the TSS descriptor, and loads
/// both. Returns the GDT base, the TR selector and the TSS base.
fn load_host_gdt() -> (u64, u16, u64) {
    let old = sgdt();
    let count = ((usize::from(old.limit) + 1) / 8).min(MAX_COPIED);
    let mut tss = Box::new(Tss([0; 104]));
    tss.0[102..104].copy_from_slice(&104u16.to_le_bytes());
    let tss = Box::leak(tss);
    let tss_base = tss as *const Tss as u64;
    let gdt = Box::leak(Box::new(Gdt([0; MAX_COPIED + 2])));
    let old_base = old.base as *const u64;
    for (i, slot) in gdt.0.iter_mut().take(count).enumerate() {
        // SAFETY: `i` is below the old GDT's limit, and the monitor's memory is identity-mapped.
        *slot = unsafe { old_base.add(i).read_unaligned() };
    }
    let [lo, hi] = tss_descriptor(tss_base, TSS_LIMIT);
    gdt.0[count] = lo;
    gdt.0[count + 1] = hi;
    let tr = (count * 8) as u16;
    let new = Pointer {
        limit: ((count + 2) * 8 - 1) as u16,
        base: gdt.0.as_ptr() as u64,
    };
    // SAFETY: the new GDT holds the same descriptors at the same selectors plus an available
    // TSS, and is leaked, so it lives for as long as the CPU uses it.
    unsafe {
        asm!("lgdt [{}]", in(reg) &new, options(nostack));
        asm!("ltr {:x}", in(reg) tr, options(nostack, nomem));
    }
    (new.base, tr, tss_base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_splits_base_and_limit() {
        let [lo, hi] = tss_descriptor(0x1234_5678_9ABC_DEF0, 0x67);
        assert_eq!(lo & 0xFFFF, 0x67);
        assert_eq!((lo >> 16) & 0xFF_FFFF, 0xBC_DEF0);
        assert_eq!(
            (lo >> 40) & 0xFF,
            0x89,
            "present, DPL 0, available 64-bit TSS"
        );
        assert_eq!((lo >> 56) & 0xFF, 0x9A);
        assert_eq!(hi, 0x1234_5678);
        assert_eq!(tss_descriptor(0x10_0000, 0x67)[0], 0x0000_8910_0000_0067);
    }
}
