//! XSETBV for VMX guests. VMX makes XSETBV exit unconditionally (SDM Vol. 3C §26.1.2) where SVM
//! lets it run, so the backend executes it for the guest: the value is checked as the CPU would
//! (SDM Vol. 1 §13.3, Vol. 2 "XSETBV"), and the guest's XCR0 then stays live on the CPU (the
//! monitor uses no extended state), reloaded when another vCPU's VMCS is made current.

use core::arch::asm;

use raw_cpuid::cpuid;

const X87: u64 = 1 << 0;
const SSE: u64 = 1 << 1;
const AVX: u64 = 1 << 2;
const MPX: u64 = (1 << 3) | (1 << 4);
const AVX512: u64 = (1 << 5) | (1 << 6) | (1 << 7);

/// The XCR0 bits this CPU supports (CPUID.(EAX=0DH,ECX=0):EDX:EAX), or 0 without XSAVE.
pub fn supported() -> u64 {
    if cpuid!(1).ecx & (1 << 26) == 0 {
        return 0;
    }
    let leaf = cpuid!(0xD, 0);
    (u64::from(leaf.edx) << 32) | u64::from(leaf.eax)
}

/// Whether XSETBV would accept `value` for XCR0 on a CPU supporting `supported`.
pub fn valid(value: u64, supported: u64) -> bool {
    let all_or_none = |bits: u64| value & bits == 0 || value & bits == bits;
    value & X87 != 0
        && value & !supported == 0
        && (value & AVX == 0 || value & SSE != 0)
        && all_or_none(MPX)
        && all_or_none(AVX512)
        && (value & AVX512 == 0 || value & AVX != 0)
}

/// Loads XCR0.
///
/// # Safety
/// CR4.OSXSAVE set on the host and `valid(value, supported())`.
pub unsafe fn load(value: u64) {
    // SAFETY: per the caller.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nomem, nostack))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xcr0_rules() {
        let cpu = 0xE7; // x87, SSE, AVX, AVX-512
        assert!(valid(0x1, cpu));
        assert!(valid(0x7, cpu));
        assert!(valid(0xE7, cpu));
        assert!(!valid(0x6, cpu), "x87 must stay set");
        assert!(!valid(0x5, cpu), "AVX needs SSE");
        assert!(!valid(0x27, cpu), "AVX-512 state is all or nothing");
        assert!(!valid(0xE3, cpu), "AVX-512 needs AVX");
        assert!(!valid(0x1F, cpu), "MPX not supported here");
        assert!(!valid(0x7, 0x3), "AVX not supported");
    }
}
