//! KVM's steal time: the guest registers a `struct kvm_steal_time` through MSR_KVM_STEAL_TIME,
//! and the monitor keeps its `steal` field at the nanoseconds the vCPU spent runnable but not
//! running (waiting while another domain ran), which Linux accounts as the `steal` column of
//! /proc/stat and leaves out of its tasks' run time.
//!
//! Format: Linux `Documentation/virt/kvm/x86/msr.rst` (MSR_KVM_STEAL_TIME) and
//! `arch/x86/include/uapi/asm/kvm_para.h`: 64 bytes, `u64 steal` at 0, `u32 version` at 8
//! (odd while an update is under way), then flags, `preempted` and padding, which stay the
//! guest's. As in KVM (`arch/x86/kvm/x86.c`, `record_steal_time`) the monitor adds what was
//! stolen since its last update to the guest's `steal`, and a record outside RAM is accepted
//! but never written. It is not the accounting of waiting time, which is the scheduler's
//! (`sched::Sched::waited`).

use crate::memory::{GuestMemory, OutOfRam};

pub const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
/// CPUID 0x40000001 EAX bit KVM_FEATURE_STEAL_TIME.
pub const CPUID_FEATURE: u32 = 1 << 5;

const MSR_ENABLE: u64 = 1;
/// Bits 5:1 (KVM_STEAL_RESERVED_MASK): the record is 64-byte aligned.
const MSR_RESERVED: u64 = 0x3E;
const STEAL: u64 = 0;
const VERSION: u64 = 8;

/// The value sets reserved bits: the WRMSR raises #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedBits;

/// One vCPU's steal-time registration.
#[derive(Clone, Copy, Debug, Default)]
pub struct StealTime {
    msr: u64,
    /// Nanoseconds stolen in all, as last told by the scheduler.
    stolen_ns: u64,
    /// `stolen_ns` when the record was last brought up to date (or registered).
    reported_ns: u64,
}

impl StealTime {
    /// The last value written to the MSR.
    pub fn msr(&self) -> u64 {
        self.msr
    }

    /// WRMSR. The record starts counting from the registration.
    pub fn write_msr(&mut self, value: u64) -> Result<(), ReservedBits> {
        if value & MSR_RESERVED != 0 {
            return Err(ReservedBits);
        }
        self.msr = value;
        self.reported_ns = self.stolen_ns;
        Ok(())
    }

    /// Before the vCPU runs again: `stolen_ns` is all it has waited so far. Writes the guest's
    /// record only when that grew since the last update.
    pub fn update(&mut self, mem: &mut impl GuestMemory, stolen_ns: u64) {
        self.stolen_ns = stolen_ns;
        if self.msr & MSR_ENABLE == 0 || stolen_ns == self.reported_ns {
            return;
        }
        let gpa = self.msr & !(MSR_ENABLE | MSR_RESERVED);
        let _ = add_steal(mem, gpa, stolen_ns.wrapping_sub(self.reported_ns));
        self.reported_ns = stolen_ns;
    }
}

/// Adds `delta` to the record's `steal` under an odd version, then makes the version even (a
/// guest that reads an odd or changed version reads again). An odd version the guest left is
/// made even first, as KVM does.
fn add_steal(mem: &mut impl GuestMemory, gpa: u64, delta: u64) -> Result<(), OutOfRam> {
    let version = mem.read_u32(gpa + VERSION)?;
    let version = version.wrapping_add(version & 1).wrapping_add(1);
    mem.write(gpa + VERSION, &version.to_le_bytes())?;
    let steal = mem.read_u64(gpa + STEAL)?.wrapping_add(delta);
    mem.write_u64(gpa + STEAL, steal)?;
    mem.write(gpa + VERSION, &version.wrapping_add(1).to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestRam;

    const RECORD: u64 = 0x1040;

    fn record(ram: &GuestRam) -> (u64, u32) {
        (
            ram.read_u64(RECORD + STEAL).unwrap(),
            ram.read_u32(RECORD + VERSION).unwrap(),
        )
    }

    #[test]
    fn steal_accumulates_from_the_registration_under_even_versions() {
        let mut buf = alloc::vec![0u8; 0x2000];
        let mut ram = GuestRam::new(&mut buf);
        let mut st = StealTime::default();
        st.update(&mut ram, 500);
        assert_eq!(record(&ram), (0, 0), "not registered: nothing written");
        st.write_msr(RECORD | 1).unwrap();
        assert_eq!(st.msr(), RECORD | 1);
        st.update(&mut ram, 500);
        assert_eq!(
            record(&ram),
            (0, 0),
            "no wait since the registration: no write"
        );
        st.update(&mut ram, 1_500);
        assert_eq!(record(&ram), (1_000, 2));
        st.update(&mut ram, 4_000);
        assert_eq!(record(&ram), (3_500, 4));
        st.update(&mut ram, 4_000);
        assert_eq!(record(&ram), (3_500, 4), "unchanged: not rewritten");
        // An odd version the guest left is made even before the update.
        ram.write(RECORD + VERSION, &7u32.to_le_bytes()).unwrap();
        st.update(&mut ram, 4_100);
        assert_eq!(record(&ram), (3_600, 10));
        // Disabled: the record is left alone, and what is stolen meanwhile is not reported.
        st.write_msr(RECORD).unwrap();
        st.update(&mut ram, 9_000);
        assert_eq!(record(&ram), (3_600, 10));
        st.write_msr(RECORD | 1).unwrap();
        st.update(&mut ram, 9_250);
        assert_eq!(record(&ram), (3_850, 12));
    }

    #[test]
    fn reserved_bits_are_refused_and_a_record_outside_ram_is_never_written() {
        let mut buf = alloc::vec![0u8; 0x2000];
        let mut ram = GuestRam::new(&mut buf);
        let mut st = StealTime::default();
        for bad in [RECORD | 2 | 1, RECORD | 0x20, RECORD + 8] {
            assert_eq!(st.write_msr(bad), Err(ReservedBits), "{bad:#x}");
        }
        assert_eq!(st.msr(), 0);
        st.write_msr(0x8000_0000 | 1).unwrap();
        st.update(&mut ram, 1_000);
        assert!(buf.iter().all(|&b| b == 0));
    }
}
