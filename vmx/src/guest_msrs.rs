//! The guest state the VMCS does not switch: the pass-through MSRs (KERNEL_GS_BASE, STAR,
//! LSTAR, CSTAR, SFMASK and, with RDTSCP, TSC_AUX) and CR2, which VM exits do not save (SDM
//! Vol. 3C §28.3.1 lists what they save) and VM entries do not load. The host never
//! uses them (it takes no page faults), so the running guest's values stay live on the CPU
//! between entries; they are saved and reloaded only when a different vCPU's VMCS is made
//! current.

use core::arch::asm;

use crate::features::{rdmsr, wrmsr};

const SWITCHED: [u32; 6] = [
    0xC000_0102, // KERNEL_GS_BASE
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0xC000_0103, // TSC_AUX (last: only with RDTSCP)
];

/// One vCPU's copy, valid while another vCPU's values are on the CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestMsrs {
    values: [u64; 6],
    cr2: u64,
}

impl GuestMsrs {
    fn count(tsc_aux: bool) -> usize {
        if tsc_aux {
            SWITCHED.len()
        } else {
            SWITCHED.len() - 1
        }
    }

    /// Saves the CPU's values into this copy.
    ///
    /// # Safety
    /// The CPU must have TSC_AUX when `tsc_aux` is set.
    pub unsafe fn save(&mut self, tsc_aux: bool) {
        let n = Self::count(tsc_aux);
        for (v, msr) in self.values.iter_mut().zip(SWITCHED).take(n) {
            // SAFETY: these MSRs exist on every 64-bit CPU (TSC_AUX per the caller).
            *v = unsafe { rdmsr(msr) };
        }
        // SAFETY: reading CR2 at CPL 0 has no side effect.
        unsafe { asm!("mov {}, cr2", out(reg) self.cr2, options(nomem, nostack)) };
    }

    /// Loads this copy onto the CPU.
    ///
    /// # Safety
    /// As for `save`; the values must be ones the guest could write (canonical addresses).
    pub unsafe fn load(&self, tsc_aux: bool) {
        let n = Self::count(tsc_aux);
        for (v, msr) in self.values.iter().zip(SWITCHED).take(n) {
            // SAFETY: per the caller; the host does not use these MSRs.
            unsafe { wrmsr(msr, *v) };
        }
        // SAFETY: CR2 only reports page-fault addresses; the host takes no page faults.
        unsafe { asm!("mov cr2, {}", in(reg) self.cr2, options(nomem, nostack)) };
    }
}
