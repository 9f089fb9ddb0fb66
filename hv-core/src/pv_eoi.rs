//! KVM's paravirtual end of interrupt (PV EOI). The guest registers a word of its memory
//! through MSR_KVM_PV_EOI_EN; while bit 0 of that word is set, the guest ends its current
//! interrupt by clearing the bit instead of writing the local APIC's EOI register, which would
//! exit. The monitor sets the bit before an entry only when that EOI can wait for the next exit
//! (`Platform::eoi_may_skip_exit`: one edge-triggered vector in service, nothing in the IRR),
//! clears it again when that no longer holds, and at each exit performs the EOI the guest
//! signalled by clearing it.
//!
//! Format: Linux `Documentation/virt/kvm/x86/msr.rst` (MSR_KVM_PV_EOI_EN); the conditions and
//! the #GP on a bad address follow KVM (`arch/x86/kvm/lapic.c`, `kvm_lapic_set_pv_eoi`). It is
//! not the local APIC: the caller performs the EOI.

use crate::memory::GuestMemory;

pub const MSR_KVM_PV_EOI_EN: u32 = 0x4b56_4d04;
/// CPUID 0x40000001 EAX bit KVM_FEATURE_PV_EOI.
pub const CPUID_FEATURE: u32 = 1 << 6;

/// MSR bit 0: enabled; the rest is the word's guest-physical address, 4-byte aligned.
const MSR_ENABLE: u64 = 1;
/// KVM_PV_EOI_ENABLED: bit 0 of the guest's word, which KVM reads and writes as one byte.
const FLAG: u8 = 1;

/// The value written is not a usable address: the WRMSR raises #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidAddress;

/// One vCPU's PV EOI state.
#[derive(Clone, Copy, Debug, Default)]
pub struct PvEoi {
    msr: u64,
    /// The flag is set in the guest's word: its next EOI may be a clear of the flag.
    offered: bool,
}

impl PvEoi {
    /// The last value written to the MSR.
    pub fn msr(&self) -> u64 {
        self.msr
    }

    pub fn is_enabled(&self) -> bool {
        self.msr & MSR_ENABLE != 0
    }

    fn word(&self) -> u64 {
        self.msr & !MSR_ENABLE
    }

    /// WRMSR. A misaligned address is refused whether or not it enables; an enabled one must
    /// lie in RAM. A flag still offered at the old word is withdrawn first.
    pub fn write_msr(
        &mut self,
        mem: &mut impl GuestMemory,
        value: u64,
    ) -> Result<(), InvalidAddress> {
        let gpa = value & !MSR_ENABLE;
        if gpa & 3 != 0 || (value & MSR_ENABLE != 0 && mem.read(gpa, &mut [0; 4]).is_err()) {
            return Err(InvalidAddress);
        }
        self.offer(mem, false);
        self.msr = value;
        Ok(())
    }

    /// After an exit: whether the guest cleared the flag, which ends its current interrupt;
    /// the caller then performs that EOI.
    pub fn take_eoi(&mut self, mem: &impl GuestMemory) -> bool {
        if !self.offered {
            return false;
        }
        let mut byte = [0];
        let cleared = mem.read(self.word(), &mut byte).is_ok() && byte[0] & FLAG == 0;
        if cleared {
            self.offered = false;
        }
        cleared
    }

    /// Before an entry: sets the flag when `allowed` (and PV EOI is on) and clears it when
    /// not; the guest's word is written only when that changes the flag.
    pub fn offer(&mut self, mem: &mut impl GuestMemory, allowed: bool) {
        let allowed = allowed && self.is_enabled();
        if allowed != self.offered && mem.write(self.word(), &[u8::from(allowed)]).is_ok() {
            self.offered = allowed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestRam;

    const WORD: u64 = 0x1000;

    fn flag(ram: &GuestRam) -> u8 {
        let mut b = [0];
        ram.read(WORD, &mut b).unwrap();
        b[0]
    }

    #[test]
    fn the_flag_is_offered_cleared_by_the_guest_and_taken_once() {
        let mut buf = alloc::vec![0u8; 0x2000];
        let mut ram = GuestRam::new(&mut buf);
        let mut eoi = PvEoi::default();
        eoi.offer(&mut ram, true);
        assert_eq!(flag(&ram), 0, "not registered: nothing written");
        eoi.write_msr(&mut ram, WORD | 1).unwrap();
        assert_eq!(eoi.msr(), WORD | 1);
        assert!(!eoi.take_eoi(&ram), "nothing offered yet");

        eoi.offer(&mut ram, true);
        assert_eq!(flag(&ram), FLAG);
        assert!(!eoi.take_eoi(&ram), "the guest has not ended its interrupt");
        assert_eq!(flag(&ram), FLAG, "an exit leaves the offer standing");
        // The guest's EOI: clear the bit instead of writing the register.
        ram.write(WORD, &[0]).unwrap();
        assert!(eoi.take_eoi(&ram));
        assert!(!eoi.take_eoi(&ram), "one EOI per clear");

        eoi.offer(&mut ram, true);
        eoi.offer(&mut ram, false);
        assert_eq!(flag(&ram), 0, "withdrawn when an EOI must exit");
        assert!(!eoi.take_eoi(&ram), "a withdrawn flag is no EOI");
    }

    #[test]
    fn disabling_withdraws_the_offer() {
        let mut buf = alloc::vec![0u8; 0x2000];
        let mut ram = GuestRam::new(&mut buf);
        let mut eoi = PvEoi::default();
        eoi.write_msr(&mut ram, WORD | 1).unwrap();
        eoi.offer(&mut ram, true);
        eoi.write_msr(&mut ram, 0).unwrap();
        assert_eq!(flag(&ram), 0);
        assert_eq!(eoi.msr(), 0);
        assert!(!eoi.is_enabled());
        eoi.offer(&mut ram, true);
        assert_eq!(flag(&ram), 0, "disabled: never offered");
    }

    #[test]
    fn bad_addresses_are_refused_and_change_nothing() {
        let mut buf = alloc::vec![0u8; 0x2000];
        let mut ram = GuestRam::new(&mut buf);
        let mut eoi = PvEoi::default();
        eoi.write_msr(&mut ram, WORD | 1).unwrap();
        for bad in [WORD | 2 | 1, WORD | 2, 0x2000 | 1, 0x1FFE | 1, u64::MAX] {
            assert_eq!(
                eoi.write_msr(&mut ram, bad),
                Err(InvalidAddress),
                "{bad:#x}"
            );
        }
        assert_eq!(eoi.msr(), WORD | 1);
        assert_eq!(
            eoi.write_msr(&mut ram, 0x4000_0000),
            Ok(()),
            "a disabled address outside RAM is kept, as KVM does"
        );
    }
}
