//! The I/O and MSR permission maps (AMD APM Vol. 2 §15.10.1 and §15.11): which port accesses and
//! which MSR reads and writes leave the guest. Every port is intercepted; every MSR is, except
//! those whose guest copy lives in the VMCB and moves with VMLOAD/VMSAVE.

use alloc::boxed::Box;

/// IOPM: one bit per port, 12 KiB (the last bits cover accesses that wrap past port 0xFFFF).
#[repr(C, align(4096))]
pub struct IoPermissionMap(pub [u8; 3 * 4096]);

/// MSRPM: two bits (read, write) per MSR in three 8K-MSR ranges, 8 KiB.
#[repr(C, align(4096))]
pub struct MsrPermissionMap(pub [u8; 2 * 4096]);

pub use vcpu::PASSTHROUGH_MSRS;

impl IoPermissionMap {
    pub fn intercept_all() -> Box<Self> {
        Box::new(Self([0xFF; 3 * 4096]))
    }
}

impl MsrPermissionMap {
    /// Intercepts every MSR but `PASSTHROUGH_MSRS`.
    pub fn standard() -> Box<Self> {
        let mut map = Box::new(Self([0xFF; 2 * 4096]));
        for msr in PASSTHROUGH_MSRS {
            map.set(msr, false, false);
        }
        map
    }

    /// Bit position of `msr`'s read-intercept bit, or None for MSRs outside the three ranges
    /// (those are always intercepted).
    pub fn bit_of(msr: u32) -> Option<usize> {
        let (base, offset) = match msr {
            0..=0x1FFF => (0x0000, msr),
            0xC000_0000..=0xC000_1FFF => (0x0800, msr - 0xC000_0000),
            0xC001_0000..=0xC001_1FFF => (0x1000, msr - 0xC001_0000),
            _ => return None,
        };
        Some(base * 8 + offset as usize * 2)
    }

    pub fn set(&mut self, msr: u32, read: bool, write: bool) {
        if let Some(bit) = Self::bit_of(msr) {
            for (b, on) in [(bit, read), (bit + 1, write)] {
                let mask = 1 << (b % 8);
                if on {
                    self.0[b / 8] |= mask;
                } else {
                    self.0[b / 8] &= !mask;
                }
            }
        }
    }

    pub fn intercepts(&self, msr: u32, write: bool) -> bool {
        match Self::bit_of(msr) {
            Some(bit) => {
                let b = bit + usize::from(write);
                self.0[b / 8] & (1 << (b % 8)) != 0
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_bits_follow_the_apm_ranges() {
        assert_eq!(MsrPermissionMap::bit_of(0), Some(0));
        assert_eq!(MsrPermissionMap::bit_of(0x1FFF), Some(0x3FFE));
        assert_eq!(
            MsrPermissionMap::bit_of(0xC000_0080),
            Some(0x800 * 8 + 0x100)
        );
        assert_eq!(MsrPermissionMap::bit_of(0xC001_0000), Some(0x1000 * 8));
        assert_eq!(MsrPermissionMap::bit_of(0x4000_0000), None);
    }

    #[test]
    fn standard_map_passes_only_vmcb_held_msrs() {
        let map = MsrPermissionMap::standard();
        for msr in PASSTHROUGH_MSRS {
            assert!(
                !map.intercepts(msr, false) && !map.intercepts(msr, true),
                "{msr:#x}"
            );
        }
        for msr in [
            0x10,
            0x1B,
            0x277,
            0x6E0,
            0x830,
            0xC000_0080,
            0xC001_0015,
            0x4000_0000,
        ] {
            assert!(
                map.intercepts(msr, false) && map.intercepts(msr, true),
                "{msr:#x}"
            );
        }
    }

    #[test]
    fn every_port_is_intercepted() {
        assert!(IoPermissionMap::intercept_all()
            .0
            .iter()
            .all(|&b| b == 0xFF));
    }
}
