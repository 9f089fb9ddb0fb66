//! The bit layout of one paging-structure entry in each format: encoding rights, memory type
//! and addresses into a raw `u64` and reading them back.
//!
//! It is not the walk over the tables (`guest_page_table`). The layout is described in the
//! crate documentation.

use crate::{Error, MemType, Perms};
use bit_field::BitField;

/// Which hardware walks the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// AMD nested page tables: long-mode page-table entries, root in the VMCB's nCR3.
    Npt,
    /// Intel extended page tables, root in the VMCS's EPT pointer.
    Ept,
}

/// Bits 51:12: address of the next table or of the page.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bit 7 of a PDPT or PD entry: the entry maps a 1 GiB or 2 MiB page (PS in NPT, SDM Table
/// 29-2 / 29-4 in EPT).
pub(crate) const LARGE: u64 = 1 << 7;
/// Bit 11: ignored by the processor in every entry of both formats; this crate marks leaves
/// with it so a leaf without access rights keeps its address.
pub(crate) const LEAF: u64 = 1 << 11;

/// Long-mode page-table bits used by NPT (AMD APM vol. 2 §5.4.1).
mod npt {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const PWT: u64 = 1 << 3;
    pub const PCD: u64 = 1 << 4;
    pub const NO_EXEC: u64 = 1 << 63;
}

/// EPT bits (Intel SDM vol. 3C §29.3.2).
mod ept {
    use core::ops::Range;
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const EXEC: u64 = 1 << 2;
    pub const MEM_TYPE: Range<usize> = 3..6;
}

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Empty,
    Table,
    Leaf,
}

pub(crate) fn kind(e: u64) -> Kind {
    if e & LEAF != 0 {
        Kind::Leaf
    } else if e != 0 {
        Kind::Table
    } else {
        Kind::Empty
    }
}

/// Address of the table a non-leaf entry points to.
pub(crate) fn table_addr(e: u64) -> u64 {
    e & ADDR_MASK
}

/// Address of the page a leaf at `level` maps.
pub(crate) fn leaf_addr(e: u64, level: u32) -> u64 {
    e & ADDR_MASK & !((1u64 << (12 + 9 * level)) - 1)
}

/// Entry `i` of the table that replaces leaf `e` at `level` (1 or 2): the same rights, memory
/// type and accessed/dirty state over one 512th of the page.
pub(crate) fn split_child(e: u64, level: u32, i: u64) -> u64 {
    let child_level = level - 1;
    let attrs = e & !ADDR_MASK & !LARGE;
    let large = if child_level > 0 { LARGE } else { 0 };
    attrs | large | (leaf_addr(e, level) + (i << (12 + 9 * child_level)))
}

impl Format {
    /// Whether this format can express `perms`: hardware treats write without read as a
    /// misconfiguration on EPT (SDM §29.3.3.1), and NPT has no right without "present".
    pub(crate) fn check(self, perms: Perms) -> Result<(), Error> {
        let ok = match self {
            Self::Npt => perms.read || !(perms.write || perms.exec),
            Self::Ept => perms.read || !perms.write,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::UnsupportedPerms(perms))
        }
    }

    /// A non-leaf entry pointing at the table at `pa`, granting everything so the leaf
    /// alone decides. NPT needs U/S at every level: nested walks are user accesses (APM
    /// vol. 2 §15.25.5).
    pub(crate) fn table_entry(self, pa: u64) -> u64 {
        pa | match self {
            Self::Npt => npt::PRESENT | npt::WRITE | npt::USER,
            Self::Ept => ept::READ | ept::WRITE | ept::EXEC,
        }
    }

    /// A leaf at `level` mapping `hpa`; `perms` must have passed `check`.
    pub(crate) fn leaf_entry(self, level: u32, hpa: u64, perms: Perms, mt: MemType) -> u64 {
        let large = if level > 0 { LARGE } else { 0 };
        let format_bits = match self {
            Self::Npt => npt::USER | npt_cache_bits(mt),
            Self::Ept => (mt as u64) << ept::MEM_TYPE.start,
        };
        self.with_perms(hpa | LEAF | large | format_bits, perms)
    }

    /// Leaf `e` with its rights replaced by `perms`, everything else kept.
    pub(crate) fn with_perms(self, e: u64, perms: Perms) -> u64 {
        match self {
            Self::Npt => {
                let mut e = e & !(npt::PRESENT | npt::WRITE | npt::NO_EXEC);
                if perms.read {
                    e |= npt::PRESENT;
                }
                if perms.write {
                    e |= npt::WRITE;
                }
                if !perms.exec {
                    e |= npt::NO_EXEC;
                }
                e
            }
            Self::Ept => {
                let mut e = e & !(ept::READ | ept::WRITE | ept::EXEC);
                e.set_bit(0, perms.read);
                e.set_bit(1, perms.write);
                e.set_bit(2, perms.exec);
                e
            }
        }
    }

    /// The rights leaf `e` grants.
    pub(crate) fn perms(self, e: u64) -> Perms {
        match self {
            Self::Npt => {
                let present = e & npt::PRESENT != 0;
                Perms::new(
                    present,
                    present && e & npt::WRITE != 0,
                    present && e & npt::NO_EXEC == 0,
                )
            }
            Self::Ept => Perms::new(e.get_bit(0), e.get_bit(1), e.get_bit(2)),
        }
    }

    /// The memory type leaf `e` asks for.
    pub(crate) fn mem_type(self, e: u64) -> MemType {
        match self {
            Self::Npt if e & npt::PCD != 0 => MemType::Uncacheable,
            Self::Npt if e & npt::PWT != 0 => MemType::WriteThrough,
            Self::Npt => MemType::WriteBack,
            // Only valid types are ever written; a reserved value reads as the safe choice.
            Self::Ept => {
                MemType::from_bits(e.get_bits(ept::MEM_TYPE)).unwrap_or(MemType::Uncacheable)
            }
        }
    }
}

/// NPT cache bits selecting `mt` through the power-on host PAT (entry 3 = UC, entry 1 = WT).
/// Write-back leaves the choice to the guest PAT, which is how WC and WP reach the guest
/// (AMD APM vol. 2 §15.25.8).
fn npt_cache_bits(mt: MemType) -> u64 {
    match mt {
        MemType::Uncacheable => npt::PCD | npt::PWT,
        MemType::WriteThrough => npt::PWT,
        MemType::WriteCombining | MemType::WriteProtected | MemType::WriteBack => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HPA: u64 = 0x0000_0123_4000_0000;

    #[test]
    fn npt_entries_have_exact_bits() {
        let f = Format::Npt;
        assert_eq!(f.table_entry(0x5000), 0x5007);
        // 4 KiB RWX write-back: P|RW|US plus the software leaf mark, NX clear.
        assert_eq!(
            f.leaf_entry(0, HPA, Perms::RWX, MemType::WriteBack),
            HPA | 0x807
        );
        // 2 MiB read-only, no exec, uncacheable: P|US|PWT|PCD|PS, NX.
        assert_eq!(
            f.leaf_entry(1, HPA, Perms::R, MemType::Uncacheable),
            HPA | 1 << 63 | 0x800 | 0x80 | 0x18 | 0x5
        );
        // 1 GiB RW write-through: P|RW|US|PWT|PS, NX.
        assert_eq!(
            f.leaf_entry(2, HPA, Perms::RW, MemType::WriteThrough),
            HPA | 1 << 63 | 0x800 | 0x80 | 0x8 | 0x7
        );
        // WC leaves the host type write-back: no cache bits at all.
        assert_eq!(
            f.leaf_entry(0, HPA, Perms::RX, MemType::WriteCombining),
            HPA | 0x805
        );
        // No rights: not present, but the address and the leaf mark stay.
        assert_eq!(
            f.leaf_entry(0, HPA, Perms::NONE, MemType::WriteBack),
            HPA | 1 << 63 | 0x804
        );
    }

    #[test]
    fn ept_entries_have_exact_bits() {
        let f = Format::Ept;
        assert_eq!(f.table_entry(0x5000), 0x5007);
        assert_eq!(
            f.leaf_entry(0, HPA, Perms::RWX, MemType::WriteBack),
            HPA | 0x800 | 6 << 3 | 0x7
        );
        assert_eq!(
            f.leaf_entry(1, HPA, Perms::RX, MemType::WriteCombining),
            HPA | 0x880 | 1 << 3 | 0x5
        );
        assert_eq!(
            f.leaf_entry(2, HPA, Perms::R, MemType::Uncacheable),
            HPA | 0x880 | 0x1
        );
        assert_eq!(
            f.leaf_entry(0, HPA, Perms::X, MemType::WriteProtected),
            HPA | 0x800 | 5 << 3 | 0x4
        );
        assert_eq!(
            f.leaf_entry(0, HPA, Perms::RW, MemType::WriteThrough),
            HPA | 0x800 | 4 << 3 | 0x3
        );
        // Ignore-PAT (bit 6) is never set.
        assert_eq!(
            f.leaf_entry(2, HPA, Perms::RWX, MemType::WriteBack) & 1 << 6,
            0
        );
    }

    #[test]
    fn rights_and_memory_type_read_back() {
        let all = [Perms::NONE, Perms::R, Perms::RW, Perms::RX, Perms::RWX];
        for f in [Format::Npt, Format::Ept] {
            for p in all {
                let e = f.leaf_entry(1, HPA, p, MemType::Uncacheable);
                assert_eq!(f.perms(e), p, "{f:?} {p}");
                assert_eq!(f.mem_type(e), MemType::Uncacheable);
                assert_eq!(kind(e), Kind::Leaf);
                assert_eq!(leaf_addr(e, 1), HPA);
                for q in all {
                    assert_eq!(f.perms(f.with_perms(e, q)), q);
                    assert_eq!(f.with_perms(f.with_perms(e, q), p), e);
                }
            }
        }
        assert_eq!(
            Format::Ept.perms(Format::Ept.leaf_entry(0, HPA, Perms::X, MemType::WriteBack)),
            Perms::X
        );
        let wt = Format::Npt.leaf_entry(0, HPA, Perms::R, MemType::WriteThrough);
        assert_eq!(Format::Npt.mem_type(wt), MemType::WriteThrough);
        for mt in [
            MemType::WriteCombining,
            MemType::WriteProtected,
            MemType::WriteThrough,
            MemType::WriteBack,
        ] {
            assert_eq!(
                Format::Ept.mem_type(Format::Ept.leaf_entry(0, HPA, Perms::R, mt)),
                mt
            );
        }
    }

    #[test]
    fn unexpressible_rights_are_refused() {
        let write_only = Perms::new(false, true, false);
        let write_exec = Perms::new(false, true, true);
        assert_eq!(
            Format::Npt.check(Perms::X),
            Err(Error::UnsupportedPerms(Perms::X))
        );
        assert_eq!(
            Format::Npt.check(write_only),
            Err(Error::UnsupportedPerms(write_only))
        );
        assert_eq!(
            Format::Ept.check(write_only),
            Err(Error::UnsupportedPerms(write_only))
        );
        assert_eq!(
            Format::Ept.check(write_exec),
            Err(Error::UnsupportedPerms(write_exec))
        );
        assert_eq!(Format::Ept.check(Perms::X), Ok(()));
        for f in [Format::Npt, Format::Ept] {
            for p in [Perms::NONE, Perms::R, Perms::RW, Perms::RX, Perms::RWX] {
                assert_eq!(f.check(p), Ok(()));
            }
        }
    }

    #[test]
    fn splitting_keeps_attributes_and_steps_the_address() {
        for f in [Format::Npt, Format::Ept] {
            let gib = f.leaf_entry(2, HPA, Perms::RX, MemType::Uncacheable) | 1 << 5 | 1 << 8;
            let child = split_child(gib, 2, 3);
            assert_eq!(child, gib + 3 * 0x20_0000, "{f:?}");
            assert_eq!(child & LARGE, LARGE);
            let mib = f.leaf_entry(1, HPA + 0x20_0000, Perms::RW, MemType::WriteBack);
            let page = split_child(mib, 1, 511);
            assert_eq!(page & LARGE, 0);
            assert_eq!(leaf_addr(page, 0), HPA + 0x20_0000 + 511 * 0x1000);
            assert_eq!(f.perms(page), Perms::RW);
            assert_eq!(
                page & !0x000f_ffff_ffff_f000,
                mib & !0x000f_ffff_ffff_f000 & !LARGE
            );
        }
    }

    #[test]
    fn entry_kinds() {
        assert_eq!(kind(0), Kind::Empty);
        assert_eq!(kind(Format::Npt.table_entry(0x3000)), Kind::Table);
        assert_eq!(kind(Format::Ept.table_entry(0x3000) | 1 << 8), Kind::Table);
        assert_eq!(table_addr(Format::Ept.table_entry(0x3000) | 1 << 8), 0x3000);
    }
}
