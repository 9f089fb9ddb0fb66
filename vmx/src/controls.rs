//! The VM-execution, VM-exit and VM-entry controls the monitor asks for, adjusted against the
//! capability MSRs (SDM Vol. 3D Appendix A.3-A.5): a control the CPU forces to 1 is set, one it
//! cannot set is dropped when optional and fatal when required.
//!
//! Pure arithmetic over MSR values; reading the MSRs is `features`' job.

use x86::vmx::vmcs::control::{
    EntryControls, ExitControls, PinbasedControls, PrimaryControls, SecondaryControls,
};

/// `desired` with the bits a capability MSR forces to 1 (its allowed-0 settings, bits 31:0)
/// set and the bits it forbids (allowed-1 settings clear, bits 63:32) cleared.
pub fn adjust(desired: u32, cap: u64) -> u32 {
    (desired | cap as u32) & (cap >> 32) as u32
}

/// The bits of `required` the capability MSR does not allow to be 1.
pub fn unsupported(required: u32, cap: u64) -> u32 {
    required & !((cap >> 32) as u32)
}

/// The raw capability MSRs the controls are adjusted against: the TRUE variants where
/// IA32_VMX_BASIC bit 55 says they exist, `secondary` zero when the CPU has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlCaps {
    pub pin: u64,
    pub primary: u64,
    pub secondary: u64,
    pub exit: u64,
    pub entry: u64,
}

/// The adjusted controls every VMCS starts with. `entry` lacks "IA-32e mode guest", which
/// each vCPU sets from its start state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    pub pin: u32,
    pub primary: u32,
    pub secondary: u32,
    pub exit: u32,
    pub entry: u32,
    /// "NMI-window exiting" may be set: the CPU offers it and "virtual NMIs" is on, which it
    /// needs (SDM Vol. 3C §27.2.1.1).
    pub nmi_window: bool,
}

/// A control the monitor cannot run without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missing(pub &'static str);

impl Controls {
    /// The monitor's policy: exits on external interrupts, NMIs, HLT, every port, every MSR
    /// but the pass-through ones, MONITOR/MWAIT; the VMX-preemption timer (a backstop that
    /// ends a slice the host timer could not), virtual NMIs (the CPU tracks the guest's NMI
    /// blocking until its IRET, SDM Vol. 3C §26.3), EPT, VPID, unrestricted guest, RDTSCP,
    /// INVPCID and XSAVES where offered; a 64-bit host; EFER and PAT switched by the CPU.
    /// Acknowledge-interrupt-on-exit stays clear: the interrupt remains pending in the host's
    /// LAPIC and the host takes it through its IDT once it opens an interrupt window.
    pub fn compute(caps: &ControlCaps) -> Result<Self, Missing> {
        let pin =
            (PinbasedControls::EXTERNAL_INTERRUPT_EXITING | PinbasedControls::NMI_EXITING).bits();
        let pin_optional =
            (PinbasedControls::VMX_PREEMPTION_TIMER | PinbasedControls::VIRTUAL_NMIS).bits();
        let primary = (PrimaryControls::HLT_EXITING
            | PrimaryControls::UNCOND_IO_EXITING
            | PrimaryControls::USE_MSR_BITMAPS
            | PrimaryControls::MWAIT_EXITING
            | PrimaryControls::MONITOR_EXITING
            | PrimaryControls::SECONDARY_CONTROLS)
            .bits();
        let secondary_required = SecondaryControls::ENABLE_EPT.bits();
        let secondary_optional = (SecondaryControls::ENABLE_VPID
            | SecondaryControls::UNRESTRICTED_GUEST
            | SecondaryControls::ENABLE_RDTSCP
            | SecondaryControls::ENABLE_INVPCID
            | SecondaryControls::ENABLE_XSAVES_XRSTORS)
            .bits();
        let exit = (ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::SAVE_IA32_EFER
            | ExitControls::LOAD_IA32_EFER
            | ExitControls::SAVE_IA32_PAT
            | ExitControls::LOAD_IA32_PAT)
            .bits();
        let entry = (EntryControls::LOAD_IA32_EFER | EntryControls::LOAD_IA32_PAT).bits();
        let checks = [
            (pin, caps.pin, "external-interrupt and NMI exiting"),
            (
                primary,
                caps.primary,
                "HLT, I/O and MSR-bitmap exiting, secondary controls",
            ),
            (secondary_required, caps.secondary, "EPT"),
            (
                exit,
                caps.exit,
                "64-bit host, EFER and PAT switching on exit",
            ),
            (entry, caps.entry, "EFER and PAT loading on entry"),
            (
                EntryControls::IA32E_MODE_GUEST.bits(),
                caps.entry,
                "IA-32e mode guests",
            ),
        ];
        if let Some(&(_, _, what)) = checks
            .iter()
            .find(|(bits, cap, _)| unsupported(*bits, *cap) != 0)
        {
            return Err(Missing(what));
        }
        let pin = adjust(pin | pin_optional, caps.pin);
        let virtual_nmis = pin & PinbasedControls::VIRTUAL_NMIS.bits() != 0;
        let nmi_window = PrimaryControls::NMI_WINDOW_EXITING.bits();
        Ok(Self {
            pin,
            primary: adjust(primary, caps.primary),
            secondary: adjust(secondary_required | secondary_optional, caps.secondary),
            exit: adjust(exit, caps.exit),
            entry: adjust(entry, caps.entry),
            nmi_window: virtual_nmis && unsupported(nmi_window, caps.primary) == 0,
        })
    }

    pub fn has_pin(&self, c: PinbasedControls) -> bool {
        self.pin & c.bits() == c.bits()
    }

    pub fn has_secondary(&self, c: SecondaryControls) -> bool {
        self.secondary & c.bits() == c.bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allowed-0 in the low half, allowed-1 in the high half.
    fn cap(must_be_one: u32, may_be_one: u32) -> u64 {
        (u64::from(may_be_one) << 32) | u64::from(must_be_one)
    }

    #[test]
    fn adjust_sets_forced_bits_and_drops_forbidden_ones() {
        // Bit 1 forced on, bits 0..=7 allowed: asking for bits 0 and 9 gives 0 and 1.
        assert_eq!(adjust(0b10_0000_0001, cap(0b10, 0xFF)), 0b11);
        assert_eq!(unsupported(0b10_0000_0001, cap(0b10, 0xFF)), 0b10_0000_0000);
        assert_eq!(adjust(0, cap(0x16, 0x16)), 0x16);
        assert_eq!(unsupported(0x16, cap(0, 0x16)), 0);
    }

    /// Capability values of a Skylake-class CPU with TRUE controls (default-1 bits clear
    /// except the ones the TRUE MSRs still force).
    fn skylake() -> ControlCaps {
        ControlCaps {
            pin: cap(0x16, 0x7F),
            primary: cap(0x0400_6172, 0xFFF9_FFFE),
            secondary: cap(0, 0x0005_32FF),
            exit: cap(0x0003_6DFB, 0x01FF_EFFF),
            entry: cap(0x0000_11FB, 0x0003_D3FF),
        }
    }

    #[test]
    fn the_policy_on_a_skylake_class_cpu() {
        let c = Controls::compute(&skylake()).unwrap();
        let p = PrimaryControls::from_bits_truncate(c.primary);
        assert!(p.contains(
            PrimaryControls::HLT_EXITING
                | PrimaryControls::UNCOND_IO_EXITING
                | PrimaryControls::USE_MSR_BITMAPS
                | PrimaryControls::SECONDARY_CONTROLS
        ));
        assert!(!p.contains(PrimaryControls::INTERRUPT_WINDOW_EXITING));
        assert_eq!(c.pin & 0x16, 0x16, "default-1 pin controls stay set");
        assert!(c.has_pin(PinbasedControls::VMX_PREEMPTION_TIMER));
        assert!(c.has_pin(PinbasedControls::VIRTUAL_NMIS));
        assert!(c.nmi_window);
        assert!(
            !p.contains(PrimaryControls::NMI_WINDOW_EXITING),
            "asked for only while an NMI waits"
        );
        for s in [
            SecondaryControls::ENABLE_EPT,
            SecondaryControls::ENABLE_VPID,
            SecondaryControls::UNRESTRICTED_GUEST,
            SecondaryControls::ENABLE_RDTSCP,
            SecondaryControls::ENABLE_INVPCID,
        ] {
            assert!(c.has_secondary(s), "{s:?}");
        }
        assert!(
            !c.has_secondary(SecondaryControls::ENABLE_XSAVES_XRSTORS),
            "not offered by this capability value"
        );
        assert_eq!(c.exit & ExitControls::ACK_INTERRUPT_ON_EXIT.bits(), 0);
        assert!(c.exit & ExitControls::HOST_ADDRESS_SPACE_SIZE.bits() != 0);
        assert_eq!(c.entry & EntryControls::IA32E_MODE_GUEST.bits(), 0);
    }

    #[test]
    fn a_cpu_without_ept_or_msr_bitmaps_is_refused() {
        let mut caps = skylake();
        caps.secondary = cap(0, 0x20);
        assert_eq!(Controls::compute(&caps), Err(Missing("EPT")));
        let mut caps = skylake();
        caps.pin = cap(0x16, 0x3F);
        let c = Controls::compute(&caps).unwrap();
        assert!(
            !c.has_pin(PinbasedControls::VMX_PREEMPTION_TIMER),
            "the preemption timer is optional"
        );
        let mut caps = skylake();
        caps.primary = cap(0x0400_6172, 0xEFF9_FFFE);
        assert!(Controls::compute(&caps).is_err());
    }

    #[test]
    fn nmi_window_exiting_needs_virtual_nmis() {
        let mut caps = skylake();
        caps.pin = cap(0x16, 0x5F);
        let c = Controls::compute(&caps).unwrap();
        assert!(!c.has_pin(PinbasedControls::VIRTUAL_NMIS));
        assert!(!c.nmi_window, "offered, but useless without virtual NMIs");
        let mut caps = skylake();
        caps.primary = cap(0x0400_6172, 0xFFB9_FFFE);
        let c = Controls::compute(&caps).unwrap();
        assert!(c.has_pin(PinbasedControls::VIRTUAL_NMIS));
        assert!(!c.nmi_window, "not offered");
    }
}
