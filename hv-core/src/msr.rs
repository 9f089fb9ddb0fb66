//! The guest's model-specific registers that neither the platform's devices (APIC) nor the
//! backend's saved state (EFER, PAT) hold: an explicit allow-list, where anything unknown is a
//! #GP, as on a CPU without that MSR.
//!
//! Values here are a minimal, consistent machine: no variable or fixed MTRRs (write-back by
//! default), no machine-check banks, no microcode.

/// Outcome of an MSR access handled here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Value(u64),
    Done,
    /// Not an MSR this machine has: the guest gets #GP(0).
    Fault,
}

const TSC: u32 = 0x10;
const UCODE_REV: u32 = 0x8B;
const MTRR_CAP: u32 = 0xFE;
const MCG_CAP: u32 = 0x179;
const MCG_STATUS: u32 = 0x17A;
const MISC_ENABLE: u32 = 0x1A0;
const MTRR_DEF_TYPE: u32 = 0x2FF;
const SPEC_CTRL: u32 = 0x48;
const PRED_CMD: u32 = 0x49;
const AMD_SYSCFG: u32 = 0xC001_0010;
const AMD_HWCR: u32 = 0xC001_0015;
const AMD_DE_CFG: u32 = 0xC001_1029;

/// MTRR_DEF_TYPE: enabled (bit 11), default type write-back.
const DEF_TYPE_RESET: u64 = (1 << 11) | 6;
/// IA32_MISC_ENABLE: fast strings; BTS and PEBS unavailable.
const MISC_ENABLE_VALUE: u64 = 1 | (1 << 11) | (1 << 12);
/// HWCR: TscFreqSel (the TSC runs at the P0 frequency).
const HWCR_VALUE: u64 = 1 << 24;
/// DE_CFG: LFENCE is dispatch-serializing.
const DE_CFG_VALUE: u64 = 1 << 1;

/// Per-vCPU state of the MSRs this module owns.
#[derive(Clone, Debug)]
pub struct MsrState {
    mtrr_def_type: u64,
    spec_ctrl: u64,
}

impl Default for MsrState {
    fn default() -> Self {
        Self {
            mtrr_def_type: DEF_TYPE_RESET,
            spec_ctrl: 0,
        }
    }
}

impl MsrState {
    /// RDMSR; `tsc` is the guest's current TSC.
    pub fn read(&self, msr: u32, tsc: u64) -> Access {
        Access::Value(match msr {
            TSC => tsc,
            UCODE_REV | MTRR_CAP | MCG_CAP | MCG_STATUS | AMD_SYSCFG => 0,
            MISC_ENABLE => MISC_ENABLE_VALUE,
            MTRR_DEF_TYPE => self.mtrr_def_type,
            SPEC_CTRL => self.spec_ctrl,
            AMD_HWCR => HWCR_VALUE,
            AMD_DE_CFG => DE_CFG_VALUE,
            _ => return Access::Fault,
        })
    }

    /// WRMSR.
    pub fn write(&mut self, msr: u32, value: u64) -> Access {
        match msr {
            // Writes that a real CPU accepts and that change nothing the guest can observe here:
            // TSC adjustment (the guest TSC is the host's), microcode loads, cache and
            // speculation commands.
            TSC | UCODE_REV | MISC_ENABLE | PRED_CMD | AMD_HWCR | AMD_DE_CFG => Access::Done,
            MCG_STATUS if value == 0 => Access::Done,
            MTRR_DEF_TYPE if valid_def_type(value) => {
                self.mtrr_def_type = value;
                Access::Done
            }
            // IBRS, STIBP, SSBD.
            SPEC_CTRL if value & !0b111 == 0 => {
                self.spec_ctrl = value;
                Access::Done
            }
            _ => Access::Fault,
        }
    }
}

/// Type in bits 7:0 must be a defined memory type; only E (11) and FE (10) may be set above it,
/// and FE needs fixed-range MTRRs, which this machine has none of (SDM Vol. 3A §13.11.2.1).
fn valid_def_type(value: u64) -> bool {
    matches!(value & 0xFF, 0 | 1 | 4 | 5 | 6) && value & !(0xFF | (1 << 11)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_msrs_fault_both_ways() {
        let mut m = MsrState::default();
        for msr in [0x2, 0x200, 0x250, 0x4000_0000, 0xC001_1FFF, 0xDEAD_BEEF] {
            assert_eq!(m.read(msr, 0), Access::Fault, "{msr:#x}");
            assert_eq!(m.write(msr, 0), Access::Fault, "{msr:#x}");
        }
    }

    #[test]
    fn tsc_reads_the_guest_clock() {
        assert_eq!(MsrState::default().read(TSC, 12345), Access::Value(12345));
    }

    #[test]
    fn mtrr_default_type_is_stored_and_validated() {
        let mut m = MsrState::default();
        assert_eq!(m.read(MTRR_DEF_TYPE, 0), Access::Value(0x806));
        assert_eq!(m.write(MTRR_DEF_TYPE, 0x800), Access::Done);
        assert_eq!(m.read(MTRR_DEF_TYPE, 0), Access::Value(0x800));
        assert_eq!(
            m.write(MTRR_DEF_TYPE, 0x802),
            Access::Fault,
            "type 2 is reserved"
        );
        assert_eq!(
            m.write(MTRR_DEF_TYPE, 0xC06),
            Access::Fault,
            "no fixed MTRRs"
        );
        assert_eq!(m.read(MTRR_CAP, 0), Access::Value(0));
    }

    #[test]
    fn spec_ctrl_and_machine_check_status() {
        let mut m = MsrState::default();
        assert_eq!(m.write(SPEC_CTRL, 0b101), Access::Done);
        assert_eq!(m.read(SPEC_CTRL, 0), Access::Value(0b101));
        assert_eq!(m.write(SPEC_CTRL, 0b1000), Access::Fault);
        assert_eq!(m.write(MCG_STATUS, 0), Access::Done);
        assert_eq!(m.write(MCG_STATUS, 1), Access::Fault);
    }
}
