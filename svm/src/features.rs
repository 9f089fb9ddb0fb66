//! What the CPU's SVM implementation offers (CPUID Fn8000_000A, AMD APM Vol. 3 Appendix E.4.9),
//! and turning SVM on (EFER.SVME, VM_HSAVE_PA; APM Vol. 2 §15.4).

use raw_cpuid::cpuid;

const MSR_EFER: u32 = 0xC000_0080;
const MSR_VM_CR: u32 = 0xC001_0114;
const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
const VM_CR_SVMDIS: u64 = 1 << 4;

/// SVM features the monitor uses when present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub nested_paging: bool,
    pub nrip_save: bool,
    pub decode_assists: bool,
    pub flush_by_asid: bool,
    pub vmcb_clean: bool,
    pub vgif: bool,
    pub asids: u32,
}

impl Features {
    /// Decodes CPUID Fn8000_000A EBX (ASID count) and EDX (feature bits).
    pub fn from_cpuid(ebx: u32, edx: u32) -> Self {
        let bit = |n: u32| edx & (1 << n) != 0;
        Self {
            nested_paging: bit(0),
            nrip_save: bit(3),
            vmcb_clean: bit(5),
            flush_by_asid: bit(6),
            decode_assists: bit(7),
            vgif: bit(16),
            asids: ebx,
        }
    }
}

/// Why SVM cannot be used on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    NotPresent,
    DisabledByFirmware,
    NoNestedPaging,
}

impl core::fmt::Display for Unusable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotPresent => "the CPU has no SVM",
            Self::DisabledByFirmware => "SVM is disabled by the firmware (VM_CR.SVMDIS)",
            Self::NoNestedPaging => "SVM lacks nested paging",
        })
    }
}

/// Probes this CPU.
pub fn detect() -> Result<Features, Unusable> {
    let max_ext = cpuid!(0x8000_0000).eax;
    if max_ext < 0x8000_000A || cpuid!(0x8000_0001).ecx & (1 << 2) == 0 {
        return Err(Unusable::NotPresent);
    }
    // SAFETY: VM_CR exists on every CPU that reports SVM (APM Vol. 2 §15.30.1).
    if unsafe { rdmsr(MSR_VM_CR) } & VM_CR_SVMDIS != 0 {
        return Err(Unusable::DisabledByFirmware);
    }
    let leaf = cpuid!(0x8000_000A);
    let features = Features::from_cpuid(leaf.ebx, leaf.edx);
    if !features.nested_paging {
        return Err(Unusable::NoNestedPaging);
    }
    Ok(features)
}

/// Sets EFER.SVME and the host save area on this CPU.
///
/// # Safety
/// `detect` must have succeeded on this CPU, and `hsave_pa` must be a 4 KiB page reserved for
/// the CPU's host save area for as long as SVM stays enabled.
pub unsafe fn enable(hsave_pa: u64) {
    // SAFETY: per the caller's guarantees these MSRs exist and the page is ours.
    unsafe {
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | crate::vmcb::efer::SVME);
        wrmsr(MSR_VM_HSAVE_PA, hsave_pa);
    }
}

pub(crate) unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

pub(crate) unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR exists and the value is valid.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_tcg_leaf_has_npt_and_nothing_else() {
        // QEMU's emulator: NP (bit 0) and VGIF (bit 16), 16 ASIDs.
        let f = Features::from_cpuid(16, (1 << 0) | (1 << 16));
        assert!(f.nested_paging && f.vgif);
        assert!(!f.nrip_save && !f.decode_assists && !f.vmcb_clean && !f.flush_by_asid);
        assert_eq!(f.asids, 16);
        let full = Features::from_cpuid(0x8000, (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7));
        assert!(full.nrip_save && full.vmcb_clean && full.flush_by_asid && full.decode_assists);
    }
}
