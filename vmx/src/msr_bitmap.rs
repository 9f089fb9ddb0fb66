//! The MSR bitmap (SDM Vol. 3C §25.6.9): one 4 KiB page of read and write bits for the low
//! (0..=0x1FFF) and high (0xC000_0000..=0xC000_1FFF) MSR ranges. Every MSR exits except the
//! same pass-through set as on SVM; MSRs outside both ranges always exit.
//!
//! Of the pass-through MSRs, FS_BASE, GS_BASE and SYSENTER_* are guest-state fields of the
//! VMCS; KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK and TSC_AUX are not, and stay live on the
//! CPU while a guest runs (`guest_msrs` swaps them when another vCPU's VMCS is loaded).

use alloc::boxed::Box;

#[repr(C, align(4096))]
pub struct MsrBitmap(pub [u8; 4096]);

pub use vcpu::PASSTHROUGH_MSRS;

const READ_LOW: usize = 0;
const READ_HIGH: usize = 0x400;
const WRITE_LOW: usize = 0x800;
const WRITE_HIGH: usize = 0xC00;

impl MsrBitmap {
    /// Intercepts every MSR but `PASSTHROUGH_MSRS`.
    pub fn standard() -> Box<Self> {
        let mut map = Box::new(Self([0xFF; 4096]));
        for msr in PASSTHROUGH_MSRS {
            map.set(msr, false, false);
        }
        map
    }

    /// Bit positions of `msr`'s read and write bits, or None outside the two ranges.
    pub fn bits_of(msr: u32) -> Option<(usize, usize)> {
        let (read, write, offset) = match msr {
            0..=0x1FFF => (READ_LOW, WRITE_LOW, msr),
            0xC000_0000..=0xC000_1FFF => (READ_HIGH, WRITE_HIGH, msr - 0xC000_0000),
            _ => return None,
        };
        let o = offset as usize;
        Some((read * 8 + o, write * 8 + o))
    }

    pub fn set(&mut self, msr: u32, read: bool, write: bool) {
        if let Some((r, w)) = Self::bits_of(msr) {
            for (b, on) in [(r, read), (w, write)] {
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
        match Self::bits_of(msr) {
            Some((r, w)) => {
                let b = if write { w } else { r };
                self.0[b / 8] & (1 << (b % 8)) != 0
            }
            None => true,
        }
    }

    pub fn pa(&self) -> u64 {
        self as *const Self as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_sdm_layout() {
        assert_eq!(MsrBitmap::bits_of(0), Some((0, 0x800 * 8)));
        assert_eq!(
            MsrBitmap::bits_of(0x1FFF),
            Some((0x1FFF, 0x800 * 8 + 0x1FFF))
        );
        assert_eq!(
            MsrBitmap::bits_of(0xC000_0080),
            Some((0x400 * 8 + 0x80, 0xC00 * 8 + 0x80))
        );
        assert_eq!(MsrBitmap::bits_of(0xC001_0000), None);
        assert_eq!(MsrBitmap::bits_of(0x2000), None);
    }

    #[test]
    fn standard_map_passes_only_the_listed_msrs() {
        let map = MsrBitmap::standard();
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
        // LSTAR's neighbours in the byte stay intercepted.
        assert!(map.intercepts(0xC000_0085, true));
    }
}
