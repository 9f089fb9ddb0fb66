//! The guest's writes to CR0 and CR4 that exit because they touch a bit the monitor owns
//! through the guest/host masks (MOV to CR0/CR4, CLTS, LMSW; SDM Vol. 3C §26.1.3, §26.3):
//! the value the guest meant, checked as the CPU would check it (SDM Vol. 3A §2.5, Vol. 2B
//! "MOV—Move to/from Control Registers"), split into the read shadow the guest sees and the
//! register the hardware holds with the VMX fixed bits forced.
//!
//! Pure arithmetic; reading and writing the VMCS is `vcpu`'s job. CR3 and CR8 are not here:
//! the monitor does not ask for their exits.

use crate::features::fix;

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_TS: u64 = 1 << 3;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NW: u64 = 1 << 29;
pub const CR0_CD: u64 = 1 << 30;
/// CD and NW, which VM entry and exit leave as they are (SDM Vol. 3C §28.3.2.1, §29.5.1): the
/// host owns them, so that no guest can turn the CPU's caches off for the host and the other
/// guests.
pub const CR0_CACHE_BITS: u64 = CR0_CD | CR0_NW;

/// The CR0 the CPU runs a guest with for the guest's `value`: VMX's fixed bits applied and
/// the caching bits left to the host (VM entry never loads CD and NW, SDM Vol. 3C §28.3.2.1;
/// the guest's live only in the read shadow).
pub fn hardware_cr0(value: u64, fixed: (u64, u64)) -> u64 {
    fix(value, fixed) & !CR0_CACHE_BITS
}
pub const CR0_PG: u64 = 1 << 31;
/// PE, MP, EM, TS, ET, NE, WP, AM, NW, CD, PG. Writes to the other bits of 31:0 are ignored;
/// bits 63:32 are reserved and fault.
const CR0_DEFINED: u64 = 0xE005_003F;
/// The bits LMSW loads: PE, MP, EM, TS (it can set PE but not clear it).
const LMSW_BITS: u64 = 0xF;

pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_LA57: u64 = 1 << 12;
pub const CR4_VMXE: u64 = 1 << 13;
pub const CR4_SMXE: u64 = 1 << 14;
pub const CR4_PCIDE: u64 = 1 << 17;

pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

/// The write faults with #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

/// What VMX allows in CR0 and CR4 while the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// (bits that must be 1, bits that may be 1) of the real CR0, PE and PG already relaxed
    /// for an unrestricted guest.
    pub cr0_fixed: (u64, u64),
    /// The same for CR4 (VMXE is among the must-be-1 bits).
    pub cr4_fixed: (u64, u64),
}

/// The guest's state a write is checked against, as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guest {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CS.L with EFER.LMA: 64-bit mode.
    pub cs_long: bool,
}

/// A write the guest may make: what it will read back, what the hardware holds, and EFER
/// with LMA following CR0.PG (also the "IA-32e mode guest" entry control, SDM Vol. 3C
/// §26.2.1.1 / §26.3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    pub shadow: u64,
    pub hardware: u64,
    pub efer: u64,
}

impl Update {
    pub fn long_mode(&self) -> bool {
        self.efer & EFER_LMA != 0
    }
}

impl Rules {
    /// MOV to CR0 of `value`.
    pub fn cr0(&self, g: &Guest, value: u64) -> Result<Update, Fault> {
        if value >> 32 != 0
            || (value & CR0_PG != 0 && value & CR0_PE == 0)
            || (value & CR0_NW != 0 && value & CR0_CD == 0)
        {
            return Err(Fault);
        }
        let paging_on = g.cr0 & CR0_PG == 0 && value & CR0_PG != 0;
        let paging_off = g.cr0 & CR0_PG != 0 && value & CR0_PG == 0;
        if paging_on && g.efer & EFER_LME != 0 && g.cr4 & CR4_PAE == 0 {
            return Err(Fault);
        }
        // Paging can be turned off in compatibility mode only, which leaves IA-32e mode.
        if paging_off && g.efer & EFER_LMA != 0 && g.cs_long {
            return Err(Fault);
        }
        let visible = (value & CR0_DEFINED) | CR0_ET;
        let lma = value & CR0_PG != 0 && g.efer & EFER_LME != 0;
        Ok(Update {
            shadow: visible,
            hardware: hardware_cr0(visible, self.cr0_fixed),
            efer: (g.efer & !EFER_LMA) | if lma { EFER_LMA } else { 0 },
        })
    }

    /// MOV to CR4 of `value`. VMX and SMX are hidden from the guest, so VMXE and SMXE are
    /// reserved for it.
    pub fn cr4(&self, g: &Guest, value: u64) -> Result<Update, Fault> {
        let allowed = self.cr4_fixed.1 & !(CR4_VMXE | CR4_SMXE);
        let long = g.efer & EFER_LMA != 0;
        let pcid_on = g.cr4 & CR4_PCIDE == 0 && value & CR4_PCIDE != 0;
        if value & !allowed != 0
            || (long && value & CR4_PAE == 0)
            || (long && (value ^ g.cr4) & CR4_LA57 != 0)
            || (pcid_on && (!long || g.cr3 & 0xFFF != 0))
        {
            return Err(Fault);
        }
        Ok(Update {
            shadow: value,
            hardware: fix(value, self.cr4_fixed),
            efer: g.efer,
        })
    }

    /// CLTS: clears CR0.TS.
    pub fn clts(&self, g: &Guest) -> Result<Update, Fault> {
        self.cr0(g, g.cr0 & !CR0_TS)
    }

    /// LMSW of `source`: loads PE, MP, EM and TS, never clearing PE.
    pub fn lmsw(&self, g: &Guest, source: u16) -> Result<Update, Fault> {
        let low = u64::from(source) & LMSW_BITS;
        self.cr0(g, (g.cr0 & !(LMSW_BITS & !CR0_PE)) | low)
    }
}

/// Bits whose change invalidates the guest's linear translations (SDM Vol. 3A §4.10.4.1).
pub const CR0_PAGING_BITS: u64 = CR0_PG | CR0_PE | (1 << 16);
pub const CR4_PAGING_BITS: u64 =
    (1 << 4) | CR4_PAE | (1 << 7) | CR4_LA57 | CR4_PCIDE | (1 << 20) | (1 << 21) | (1 << 22);

#[cfg(test)]
mod tests {
    use super::*;

    /// Skylake-like fixed bits, unrestricted guest: CR0 must have NE, CR4 must have VMXE.
    fn rules() -> Rules {
        Rules {
            cr0_fixed: (0x20, 0xFFFF_FFFF),
            cr4_fixed: (CR4_VMXE, 0x0037_27FF),
        }
    }

    fn long_mode() -> Guest {
        Guest {
            cr0: 0x8001_0033,
            cr3: 0x9000,
            cr4: 0x20,
            efer: EFER_LME | EFER_LMA,
            cs_long: true,
        }
    }

    fn real_mode() -> Guest {
        Guest {
            cr0: 0x10,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs_long: false,
        }
    }

    #[test]
    fn ne_is_emulated_through_the_shadow() {
        let g = long_mode();
        let u = rules().cr0(&g, g.cr0 & !0x20).unwrap();
        assert_eq!(u.shadow, 0x8001_0013, "the guest reads NE clear");
        assert_eq!(u.hardware, 0x8001_0033, "the CPU keeps NE");
        assert_eq!(u.efer, g.efer);
        let u = rules().cr0(&real_mode(), 0x31).unwrap();
        assert_eq!((u.shadow, u.hardware), (0x31, 0x31));
    }

    #[test]
    fn reserved_and_inconsistent_cr0_values_fault() {
        let g = long_mode();
        let r = rules();
        assert_eq!(r.cr0(&g, g.cr0 | 1 << 32), Err(Fault));
        assert_eq!(r.cr0(&g, g.cr0 & !CR0_PE), Err(Fault), "PG without PE");
        assert_eq!(
            r.cr0(&g, g.cr0 & !CR0_PG),
            Err(Fault),
            "paging off in 64-bit mode"
        );
        assert_eq!(r.cr0(&g, (g.cr0 | CR0_NW) & !CR0_CD), Err(Fault));
        let mut lme = real_mode();
        lme.cr0 = 0x11;
        lme.efer = EFER_LME;
        assert_eq!(
            r.cr0(&lme, 0x8000_0011),
            Err(Fault),
            "long mode without PAE"
        );
        // Undefined low bits are ignored, ET stays set.
        assert_eq!(r.cr0(&real_mode(), 0x0000_0100).unwrap().shadow, 0x10);
    }

    #[test]
    fn paging_transitions_follow_lme_into_lma() {
        let r = rules();
        let mut g = real_mode();
        g.cr0 = 0x11;
        g.cr4 = CR4_PAE;
        g.efer = EFER_LME;
        let on = r.cr0(&g, 0x8000_0011).unwrap();
        assert!(on.long_mode());
        assert_eq!(on.efer, EFER_LME | EFER_LMA);
        // Leaving from compatibility mode is allowed and clears LMA.
        let compat = Guest {
            cs_long: false,
            ..long_mode()
        };
        let off = r.cr0(&compat, compat.cr0 & !CR0_PG).unwrap();
        assert!(!off.long_mode());
        assert_eq!(off.efer, EFER_LME);
        // Without LME paging stays 32-bit.
        assert!(!r
            .cr0(&Guest { efer: 0, ..g }, 0x8000_0011)
            .unwrap()
            .long_mode());
    }

    #[test]
    fn cr4_hides_vmx_and_checks_long_mode_rules() {
        let r = rules();
        let g = long_mode();
        assert_eq!(r.cr4(&g, g.cr4 | CR4_VMXE), Err(Fault), "VMX is hidden");
        assert_eq!(r.cr4(&g, g.cr4 | CR4_SMXE), Err(Fault));
        assert_eq!(r.cr4(&g, g.cr4 | 1 << 63), Err(Fault));
        assert_eq!(r.cr4(&g, g.cr4 | 1 << 31), Err(Fault));
        assert_eq!(r.cr4(&g, 0), Err(Fault), "PAE off in long mode");
        assert_eq!(r.cr4(&g, g.cr4 | CR4_LA57), Err(Fault));
        let u = r.cr4(&g, g.cr4 | CR4_PCIDE).unwrap();
        assert_eq!((u.shadow, u.hardware), (0x2_0020, 0x2_0020 | CR4_VMXE));
        let dirty_cr3 = Guest { cr3: 0x9001, ..g };
        assert_eq!(r.cr4(&dirty_cr3, g.cr4 | CR4_PCIDE), Err(Fault));
        assert_eq!(
            r.cr4(&real_mode(), CR4_PCIDE),
            Err(Fault),
            "PCIDE outside long mode"
        );
        assert_eq!(r.cr4(&real_mode(), 0).unwrap().hardware, CR4_VMXE);
    }

    #[test]
    fn caching_bits_live_in_the_shadow_only() {
        let r = rules();
        let g = long_mode();
        let u = r.cr0(&g, g.cr0 | CR0_CD | CR0_NW).unwrap();
        assert_eq!(u.shadow & CR0_CACHE_BITS, CR0_CACHE_BITS);
        assert_eq!(
            u.hardware & CR0_CACHE_BITS,
            0,
            "VM entry would ignore them anyway"
        );
        assert_eq!(r.cr0(&g, g.cr0 | CR0_CD).unwrap().shadow & CR0_CD, CR0_CD);
    }

    #[test]
    fn clts_and_lmsw() {
        let r = rules();
        let g = Guest {
            cr0: 0x8001_003B,
            ..long_mode()
        };
        assert_eq!(r.clts(&g).unwrap().shadow, 0x8001_0033);
        // LMSW cannot clear PE but sets MP/EM/TS as given.
        assert_eq!(r.lmsw(&g, 0x0).unwrap().shadow, 0x8001_0031);
        assert_eq!(r.lmsw(&real_mode(), 0x1).unwrap().shadow, 0x11);
        assert_eq!(r.lmsw(&real_mode(), 0xFFFE).unwrap().shadow, 0x1E);
    }
}
