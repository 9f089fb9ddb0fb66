//! The KVM paravirtual clock (kvmclock): the guest registers a `pvclock_vcpu_time_info` page and
//! a wall-clock structure through KVM's MSRs, and reads time as `system_time + scale(TSC -
//! tsc_timestamp)` without exits. It also tells the guest the TSC frequency, which spares it a
//! PIT calibration that cannot work when every port access is an exit.
//!
//! Formats: Linux `arch/x86/include/asm/pvclock-abi.h` and `Documentation/virt/kvm/x86/msr.rst`.
//! The guest TSC is the host TSC and it is stable, so the structure is written once, when the
//! guest registers it.

use crate::memory::{GuestMemory, OutOfRam};

pub const MSR_KVM_WALL_CLOCK: u32 = 0x11;
pub const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

/// CPUID 0x40000001 EAX bits: KVM_FEATURE_CLOCKSOURCE, KVM_FEATURE_CLOCKSOURCE2,
/// KVM_FEATURE_CLOCKSOURCE_STABLE_BIT.
pub const CPUID_FEATURES: u32 = (1 << 0) | (1 << 3) | (1 << 24);

/// PVCLOCK_TSC_STABLE_BIT: the TSC is synchronised and constant across vCPUs.
const FLAG_TSC_STABLE: u8 = 1 << 0;
const NSEC_PER_SEC: u64 = 1_000_000_000;

/// Converts TSC ticks to nanoseconds as `((delta << shift) * mul) >> 32` (negative shift:
/// shift right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub mul: u32,
    pub shift: i8,
}

impl Scale {
    /// KVM's `kvm_get_time_scale(NSEC_PER_SEC, tsc_hz)`.
    pub fn for_tsc_hz(tsc_hz: u64) -> Self {
        let mut scaled = NSEC_PER_SEC;
        let mut base = tsc_hz.max(1);
        let mut shift: i8 = 0;
        while base > scaled * 2 || base >> 32 != 0 {
            base >>= 1;
            shift -= 1;
        }
        let mut base32 = base as u32;
        while u64::from(base32) <= scaled || scaled >> 32 != 0 {
            if scaled >> 32 != 0 || base32 & 0x8000_0000 != 0 {
                scaled >>= 1;
            } else {
                base32 <<= 1;
            }
            shift += 1;
        }
        Self {
            mul: ((scaled << 32) / u64::from(base32)) as u32,
            shift,
        }
    }

    /// Nanoseconds in `delta` TSC ticks (Linux `pvclock_scale_delta`).
    pub fn ns(self, delta: u64) -> u64 {
        let d = if self.shift < 0 {
            delta >> -self.shift
        } else {
            delta << self.shift
        };
        ((u128::from(d) * u128::from(self.mul)) >> 32) as u64
    }
}

/// One domain's clock: when it started, by the TSC and by the wall clock.
#[derive(Clone, Copy, Debug)]
pub struct PvClock {
    scale: Scale,
    start_tsc: u64,
    start_epoch_secs: u64,
}

impl PvClock {
    pub fn new(tsc_hz: u64, start_tsc: u64, start_epoch_secs: u64) -> Self {
        Self {
            scale: Scale::for_tsc_hz(tsc_hz),
            start_tsc,
            start_epoch_secs,
        }
    }

    /// Nanoseconds in `ticks` TSC ticks, at the scale the guest's kvmclock uses.
    pub fn ns(&self, ticks: u64) -> u64 {
        self.scale.ns(ticks)
    }

    /// The guest wrote a system-time MSR: bit 0 enables, the rest is the structure's address.
    pub fn register_system_time(
        &self,
        mem: &mut impl GuestMemory,
        value: u64,
        now: u64,
    ) -> Result<(), OutOfRam> {
        if value & 1 == 0 {
            return Ok(());
        }
        let gpa = value & !1;
        let mut version = [0; 4];
        mem.read(gpa, &mut version)?;
        let mut info = [0u8; 32];
        let next = u32::from_le_bytes(version).wrapping_add(2) & !1;
        info[0..4].copy_from_slice(&next.to_le_bytes());
        info[8..16].copy_from_slice(&now.to_le_bytes());
        info[16..24].copy_from_slice(
            &self
                .scale
                .ns(now.saturating_sub(self.start_tsc))
                .to_le_bytes(),
        );
        info[24..28].copy_from_slice(&self.scale.mul.to_le_bytes());
        info[28] = self.scale.shift as u8;
        info[29] = FLAG_TSC_STABLE;
        mem.write(gpa, &info)
    }

    /// The guest wrote a wall-clock MSR: the wall time at which its system time was zero.
    pub fn write_wall_clock(&self, mem: &mut impl GuestMemory, gpa: u64) -> Result<(), OutOfRam> {
        let mut version = [0; 4];
        mem.read(gpa, &mut version)?;
        let mut wc = [0u8; 12];
        let next = u32::from_le_bytes(version).wrapping_add(2) & !1;
        wc[0..4].copy_from_slice(&next.to_le_bytes());
        wc[4..8].copy_from_slice(&(self.start_epoch_secs as u32).to_le_bytes());
        mem.write(gpa, &wc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestRam;

    #[test]
    fn scale_converts_ticks_to_nanoseconds() {
        for hz in [
            1_000_000_000u64,
            2_604_646_000,
            3_000_000_000,
            100_000_000,
            1_193_182,
        ] {
            let s = Scale::for_tsc_hz(hz);
            let one_second = s.ns(hz);
            assert!(
                one_second.abs_diff(NSEC_PER_SEC) < 2,
                "{hz} Hz: {one_second}"
            );
            assert!(s.ns(hz * 3600).abs_diff(3600 * NSEC_PER_SEC) < 3600 * 2);
        }
        // KVM's value for a 1 GHz TSC: mul 2^31, shift 1.
        assert_eq!(
            Scale::for_tsc_hz(1_000_000_000),
            Scale {
                mul: 1 << 31,
                shift: 1
            }
        );
    }

    #[test]
    fn registration_writes_the_abi_layout() {
        let mut buf = alloc::vec![0u8; 0x2000];
        let mut ram = GuestRam::new(&mut buf);
        let clock = PvClock::new(2_000_000_000, 1_000, 1_700_000_000);
        clock
            .register_system_time(&mut ram, 0x1000 | 1, 2_000_001_000)
            .unwrap();
        let mut info = [0u8; 32];
        ram.read(0x1000, &mut info).unwrap();
        assert_eq!(
            u32::from_le_bytes(info[0..4].try_into().unwrap()) % 2,
            0,
            "even version"
        );
        assert_eq!(
            u64::from_le_bytes(info[8..16].try_into().unwrap()),
            2_000_001_000
        );
        let system_time = u64::from_le_bytes(info[16..24].try_into().unwrap());
        assert!(system_time.abs_diff(NSEC_PER_SEC) < 2, "{system_time}");
        assert_eq!(info[29], FLAG_TSC_STABLE);
        clock.write_wall_clock(&mut ram, 0x1800).unwrap();
        let mut wc = [0u8; 12];
        ram.read(0x1800, &mut wc).unwrap();
        assert_eq!(
            u32::from_le_bytes(wc[4..8].try_into().unwrap()),
            1_700_000_000
        );
        assert!(
            clock.register_system_time(&mut ram, 0x1FF0 | 1, 0).is_err(),
            "past RAM"
        );
        assert_eq!(
            clock.register_system_time(&mut ram, 0x1000, 0),
            Ok(()),
            "disabled"
        );
    }
}
