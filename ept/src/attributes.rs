//! What a mapping grants and how it is cached: access rights, memory type and page size,
//! independent of the entry format that encodes them.

use core::fmt;

/// Access rights of a guest-physical page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perms {
    pub const NONE: Self = Self::new(false, false, false);
    pub const R: Self = Self::new(true, false, false);
    pub const RW: Self = Self::new(true, true, false);
    pub const RX: Self = Self::new(true, false, true);
    pub const RWX: Self = Self::new(true, true, true);
    /// Execute-only: EPT only, and only where IA32_VMX_EPT_VPID_CAP bit 0 allows it.
    pub const X: Self = Self::new(false, false, true);

    pub const fn new(read: bool, write: bool, exec: bool) -> Self {
        Self { read, write, exec }
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |on: bool, c: char| if on { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            flag(self.read, 'r'),
            flag(self.write, 'w'),
            flag(self.exec, 'x')
        )
    }
}

/// Memory type of a leaf, numbered as in the PAT and MTRRs (Intel SDM vol. 3A §12.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MemType {
    Uncacheable = 0,
    WriteCombining = 1,
    WriteThrough = 4,
    WriteProtected = 5,
    WriteBack = 6,
}

impl MemType {
    /// The type with this encoding; `None` for the reserved values 2, 3 and 7.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        match bits {
            0 => Some(Self::Uncacheable),
            1 => Some(Self::WriteCombining),
            4 => Some(Self::WriteThrough),
            5 => Some(Self::WriteProtected),
            6 => Some(Self::WriteBack),
            _ => None,
        }
    }
}

/// Size of the page a leaf maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageSize {
    Size4KiB,
    Size2MiB,
    Size1GiB,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        1 << (12 + 9 * self.level())
    }

    /// Level of the table whose entries map pages of this size (0 = PT, 1 = PD, 2 = PDPT).
    pub(crate) const fn level(self) -> u32 {
        match self {
            Self::Size4KiB => 0,
            Self::Size2MiB => 1,
            Self::Size1GiB => 2,
        }
    }

    /// The size mapped by a leaf at `level`; `None` for the PML4, which has no leaves.
    pub(crate) const fn at_level(level: u32) -> Option<Self> {
        match level {
            0 => Some(Self::Size4KiB),
            1 => Some(Self::Size2MiB),
            2 => Some(Self::Size1GiB),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn page_sizes_and_levels_agree() {
        assert_eq!(PageSize::Size4KiB.bytes(), 0x1000);
        assert_eq!(PageSize::Size2MiB.bytes(), 0x20_0000);
        assert_eq!(PageSize::Size1GiB.bytes(), 0x4000_0000);
        for size in [PageSize::Size4KiB, PageSize::Size2MiB, PageSize::Size1GiB] {
            assert_eq!(PageSize::at_level(size.level()), Some(size));
        }
        assert_eq!(PageSize::at_level(3), None);
    }

    #[test]
    fn memory_type_encodings_round_trip_and_reserved_values_are_rejected() {
        for mt in [
            MemType::Uncacheable,
            MemType::WriteCombining,
            MemType::WriteThrough,
            MemType::WriteProtected,
            MemType::WriteBack,
        ] {
            assert_eq!(MemType::from_bits(mt as u64), Some(mt));
        }
        for reserved in [2, 3, 7, 8] {
            assert_eq!(MemType::from_bits(reserved), None);
        }
    }

    #[test]
    fn perms_display_as_rwx_flags() {
        assert_eq!(Perms::RWX.to_string(), "rwx");
        assert_eq!(Perms::RX.to_string(), "r-x");
        assert_eq!(Perms::NONE.to_string(), "---");
    }
}
