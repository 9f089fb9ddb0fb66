//! What the CPU's VMX implementation offers: CPUID.1:ECX.VMX, IA32_FEATURE_CONTROL and the VMX
//! capability MSRs (SDM Vol. 3C §24.6-24.7, §24.11.5; Vol. 3D Appendix A), decoded into the
//! controls and limits the monitor uses.
//!
//! It does not enter VMX operation; `host::enable` does.

use raw_cpuid::cpuid;
use x86::vmx::vmcs::control::SecondaryControls;

use crate::controls::{ControlCaps, Controls};

pub mod msr {
    pub const FEATURE_CONTROL: u32 = 0x3A;
    pub const VMX_BASIC: u32 = 0x480;
    pub const VMX_PINBASED_CTLS: u32 = 0x481;
    pub const VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const VMX_EXIT_CTLS: u32 = 0x483;
    pub const VMX_ENTRY_CTLS: u32 = 0x484;
    pub const VMX_MISC: u32 = 0x485;
    pub const VMX_CR0_FIXED0: u32 = 0x486;
    pub const VMX_CR0_FIXED1: u32 = 0x487;
    pub const VMX_CR4_FIXED0: u32 = 0x488;
    pub const VMX_CR4_FIXED1: u32 = 0x489;
    pub const VMX_PROCBASED_CTLS2: u32 = 0x48B;
    pub const VMX_EPT_VPID_CAP: u32 = 0x48C;
    pub const VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
    pub const VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
    pub const VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
    pub const VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
}

const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
const FEATURE_CONTROL_VMXON_OUTSIDE_SMX: u64 = 1 << 2;
const BASIC_TRUE_CONTROLS: u64 = 1 << 55;
/// Write-back memory type for the VMCS and other VMX structures (BASIC bits 53:50).
const BASIC_MEMTYPE_WB: u64 = 6;
const PRIMARY_SECONDARY_ALLOWED: u64 = 1 << 63;

/// IA32_VMX_EPT_VPID_CAP bits (SDM Vol. 3D §A.10).
pub mod ept_cap {
    pub const WALK_4_LEVELS: u64 = 1 << 6;
    pub const MEMTYPE_WB: u64 = 1 << 14;
    pub const PAGE_2M: u64 = 1 << 16;
    pub const PAGE_1G: u64 = 1 << 17;
    pub const INVEPT: u64 = 1 << 20;
    pub const ACCESSED_DIRTY: u64 = 1 << 21;
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    pub const INVEPT_ALL: u64 = 1 << 26;
    pub const INVVPID: u64 = 1 << 32;
    pub const INVVPID_SINGLE: u64 = 1 << 41;
    pub const INVVPID_ALL: u64 = 1 << 42;
}

/// The capability MSRs as read from the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub basic: u64,
    pub controls: ControlCaps,
    pub misc: u64,
    pub cr0_fixed: (u64, u64),
    pub cr4_fixed: (u64, u64),
    pub ept_vpid: u64,
}

/// What the monitor uses of this CPU's VMX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// VMCS revision identifier (BASIC bits 30:0), written at the start of every VMXON
    /// region and VMCS.
    pub revision: u32,
    pub controls: Controls,
    /// (FIXED0, FIXED1): bits that must be 1, bits that may be 1.
    pub cr0_fixed: (u64, u64),
    pub cr4_fixed: (u64, u64),
    pub ept_vpid: u64,
    /// The preemption timer counts down every 2^shift TSC ticks (MISC bits 4:0), when the
    /// pin-based control is offered.
    pub preemption_timer_shift: Option<u8>,
}

/// Why VMX cannot be used on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    NotPresent,
    DisabledByFirmware,
    /// VMX structures must be write-back cacheable and fit a 4 KiB page.
    UnsupportedVmcs,
    /// EPT cannot use a 4-level, write-back table.
    UnsupportedEpt,
    Missing(&'static str),
}

impl core::fmt::Display for Unusable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotPresent => f.write_str("the CPU has no VMX"),
            Self::DisabledByFirmware => f.write_str(
                "VMX disabled by firmware (IA32_FEATURE_CONTROL locked without VMXON outside SMX)",
            ),
            Self::UnsupportedVmcs => f.write_str("the VMCS is not write-back or exceeds 4 KiB"),
            Self::UnsupportedEpt => f.write_str("EPT lacks 4-level write-back tables"),
            Self::Missing(what) => write!(f, "VMX lacks {what}"),
        }
    }
}

impl Features {
    /// Decodes the capability MSRs.
    pub fn from_caps(caps: &Caps) -> Result<Self, Unusable> {
        let region_size = (caps.basic >> 32) & 0x1FFF;
        let mem_type = (caps.basic >> 50) & 0xF;
        if region_size > 4096 || mem_type != BASIC_MEMTYPE_WB {
            return Err(Unusable::UnsupportedVmcs);
        }
        let controls = Controls::compute(&caps.controls).map_err(|m| Unusable::Missing(m.0))?;
        if caps.ept_vpid & (ept_cap::WALK_4_LEVELS | ept_cap::MEMTYPE_WB)
            != ept_cap::WALK_4_LEVELS | ept_cap::MEMTYPE_WB
        {
            return Err(Unusable::UnsupportedEpt);
        }
        let timer = x86::vmx::vmcs::control::PinbasedControls::VMX_PREEMPTION_TIMER.bits();
        Ok(Self {
            revision: caps.basic as u32 & 0x7FFF_FFFF,
            controls,
            cr0_fixed: caps.cr0_fixed,
            cr4_fixed: caps.cr4_fixed,
            ept_vpid: caps.ept_vpid,
            preemption_timer_shift: (caps.controls.pin >> 32 & u64::from(timer) != 0)
                .then_some((caps.misc & 0x1F) as u8),
        })
    }

    pub fn ept_cap(&self, bit: u64) -> bool {
        self.ept_vpid & bit != 0
    }

    pub fn vpid(&self) -> bool {
        self.controls.has_secondary(SecondaryControls::ENABLE_VPID)
    }

    pub fn unrestricted_guest(&self) -> bool {
        self.controls
            .has_secondary(SecondaryControls::UNRESTRICTED_GUEST)
    }

    /// CR0 bits the guest must keep at their fixed value: FIXED0 less PE and PG, which
    /// unrestricted guests may clear (SDM Vol. 3C §26.3.1.1).
    pub fn cr0_guest_fixed(&self) -> u64 {
        let relaxed = if self.unrestricted_guest() {
            (1 << 0) | (1 << 31)
        } else {
            0
        };
        self.cr0_fixed.0 & !relaxed
    }
}

/// `value` with the fixed-1 bits set and the fixed-0 bits cleared (SDM Vol. 3D §A.7, §A.8).
pub fn fix(value: u64, (fixed0, fixed1): (u64, u64)) -> u64 {
    (value | fixed0) & fixed1
}

/// Probes this CPU: VMX present, IA32_FEATURE_CONTROL allowing VMXON (setting and locking it
/// when the firmware left it unlocked), then the capability MSRs.
pub fn detect() -> Result<Features, Unusable> {
    if cpuid!(1).ecx & (1 << 5) == 0 {
        return Err(Unusable::NotPresent);
    }
    // SAFETY: IA32_FEATURE_CONTROL exists on every CPU with VMX (SDM Vol. 3C §24.7).
    let fc = unsafe { rdmsr(msr::FEATURE_CONTROL) };
    if fc & FEATURE_CONTROL_LOCK == 0 {
        // SAFETY: unlocked, so the write is accepted; it only permits VMXON outside SMX.
        unsafe {
            wrmsr(
                msr::FEATURE_CONTROL,
                fc | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMXON_OUTSIDE_SMX,
            )
        };
    } else if fc & FEATURE_CONTROL_VMXON_OUTSIDE_SMX == 0 {
        return Err(Unusable::DisabledByFirmware);
    }
    // SAFETY: each MSR read exists per the conditions checked before it (SDM Vol. 3D §A.1).
    let caps = unsafe { read_caps() };
    Features::from_caps(&caps)
}

unsafe fn read_caps() -> Caps {
    // SAFETY: the caller checked VMX is present; the optional MSRs are gated below.
    unsafe {
        let basic = rdmsr(msr::VMX_BASIC);
        let t = basic & BASIC_TRUE_CONTROLS != 0;
        let pick = |plain, true_msr| rdmsr(if t { true_msr } else { plain });
        let primary = pick(msr::VMX_PROCBASED_CTLS, msr::VMX_TRUE_PROCBASED_CTLS);
        let secondary = if primary & PRIMARY_SECONDARY_ALLOWED != 0 {
            rdmsr(msr::VMX_PROCBASED_CTLS2)
        } else {
            0
        };
        let ept_vpid_allowed =
            (SecondaryControls::ENABLE_EPT | SecondaryControls::ENABLE_VPID).bits();
        let ept_vpid = if (secondary >> 32) as u32 & ept_vpid_allowed != 0 {
            rdmsr(msr::VMX_EPT_VPID_CAP)
        } else {
            0
        };
        Caps {
            basic,
            controls: ControlCaps {
                pin: pick(msr::VMX_PINBASED_CTLS, msr::VMX_TRUE_PINBASED_CTLS),
                primary,
                secondary,
                exit: pick(msr::VMX_EXIT_CTLS, msr::VMX_TRUE_EXIT_CTLS),
                entry: pick(msr::VMX_ENTRY_CTLS, msr::VMX_TRUE_ENTRY_CTLS),
            },
            misc: rdmsr(msr::VMX_MISC),
            cr0_fixed: (rdmsr(msr::VMX_CR0_FIXED0), rdmsr(msr::VMX_CR0_FIXED1)),
            cr4_fixed: (rdmsr(msr::VMX_CR4_FIXED0), rdmsr(msr::VMX_CR4_FIXED1)),
            ept_vpid,
        }
    }
}

/// # Safety
/// The MSR must exist.
pub(crate) unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// # Safety
/// The MSR must exist and accept `value`.
pub(crate) unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR exists and the value is valid.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Skylake-class CPU as Bochs models it (values of the same shape).
    pub fn skylake_caps() -> Caps {
        let cap = |lo: u32, hi: u32| (u64::from(hi) << 32) | u64::from(lo);
        Caps {
            basic: (1 << 55) | (6 << 50) | (0x1000 << 32) | 0x10,
            controls: ControlCaps {
                pin: cap(0x16, 0x7F),
                primary: cap(0x0400_6172, 0xFFF9_FFFE),
                secondary: cap(0, 0x0005_32FF),
                exit: cap(0x0003_6DFB, 0x01FF_EFFF),
                entry: cap(0x0000_11FB, 0x0003_D3FF),
            },
            misc: 0x5,
            cr0_fixed: (0x8000_0021, 0xFFFF_FFFF),
            cr4_fixed: (0x2000, 0x0037_27FF),
            ept_vpid: ept_cap::WALK_4_LEVELS
                | ept_cap::MEMTYPE_WB
                | ept_cap::PAGE_2M
                | ept_cap::PAGE_1G
                | ept_cap::INVEPT
                | ept_cap::INVEPT_SINGLE
                | ept_cap::INVEPT_ALL
                | ept_cap::INVVPID
                | ept_cap::INVVPID_SINGLE,
        }
    }

    #[test]
    fn skylake_caps_decode() {
        let f = Features::from_caps(&skylake_caps()).unwrap();
        assert_eq!(f.revision, 0x10);
        assert!(f.vpid() && f.unrestricted_guest());
        assert_eq!(f.preemption_timer_shift, Some(5));
        assert_eq!(f.cr0_guest_fixed(), 1 << 5, "only NE stays fixed");
        assert!(f.ept_cap(ept_cap::PAGE_2M) && f.ept_cap(ept_cap::INVEPT_SINGLE));
    }

    #[test]
    fn refuses_unusable_ept_and_vmcs() {
        let mut c = skylake_caps();
        c.ept_vpid &= !ept_cap::MEMTYPE_WB;
        assert_eq!(Features::from_caps(&c), Err(Unusable::UnsupportedEpt));
        let mut c = skylake_caps();
        c.basic &= !(0xF << 50);
        assert_eq!(Features::from_caps(&c), Err(Unusable::UnsupportedVmcs));
    }

    #[test]
    fn fixed_bits_are_forced() {
        assert_eq!(fix(0x10, (0x21, 0xFF)), 0x31);
        assert_eq!(fix(0x1_0000_0031, (0x21, 0xFFFF_FFFF)), 0x31);
    }
}
