//! One guest's guest-physical address space: a 4-level table mapping guest-physical to
//! host-physical pages in NPT or EPT format, with map, unmap, protect and translate.
//!
//! It is not the entry encoding (`entry`) and not TLB invalidation, which the caller owns.

use crate::entry::{self, kind, Kind};
use crate::{Error, Format, MemType, PageSize, Perms, TableMemory};

/// Guest-physical addresses must lie below this: four levels translate 48 bits.
pub const GPA_LIMIT: u64 = 1 << 48;

const PAGE: u64 = 0x1000;
const LEVELS: u32 = 4;
const ROOT_LEVEL: u32 = LEVELS - 1;

/// Limits that depend on the host processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest page `map` may use. 1 GiB pages need CPUID 8000_0001h EDX bit 26 on AMD and
    /// IA32_VMX_EPT_VPID_CAP bit 17 on Intel; 2 MiB pages need bit 16 of the latter.
    pub max_page_size: PageSize,
    /// Host MAXPHYADDR (CPUID 8000_0008h EAX bits 7:0); host-physical ranges must end at or
    /// below 2^host_phys_bits because higher entry bits are reserved. Values above 52 count
    /// as 52.
    pub host_phys_bits: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_page_size: PageSize::Size1GiB,
            host_phys_bits: 52,
        }
    }
}

/// Where a guest-physical address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub hpa: u64,
    pub perms: Perms,
    pub mem_type: MemType,
    pub page_size: PageSize,
}

/// A change applied to every page of a range.
#[derive(Clone, Copy)]
enum Edit {
    Unmap,
    Protect(Perms),
}

/// The tables of one guest. All calls must pass the same `TableMemory`.
#[derive(Debug)]
pub struct GuestPageTable {
    root: u64,
    format: Format,
    config: Config,
}

impl GuestPageTable {
    /// An empty address space with 1 GiB pages allowed and a 52-bit host address width.
    pub fn new(format: Format, mem: &mut impl TableMemory) -> Result<Self, Error> {
        Self::with_config(format, Config::default(), mem)
    }

    pub fn with_config(
        format: Format,
        config: Config,
        mem: &mut impl TableMemory,
    ) -> Result<Self, Error> {
        let root = alloc_table(mem)?;
        Ok(Self {
            root,
            format,
            config,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Host-physical address of the PML4: the nCR3 value for NPT (write-back walks, PWT and
    /// PCD clear).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The EPT pointer (SDM vol. 3C §25.6.11): write-back paging-structure accesses (needs
    /// IA32_VMX_EPT_VPID_CAP bit 14), a 4-level walk, and accessed/dirty flags if asked for
    /// (needs bit 21). `None` for NPT tables.
    pub fn eptp(&self, accessed_dirty: bool) -> Option<u64> {
        const WRITE_BACK: u64 = MemType::WriteBack as u64;
        const WALK_LENGTH_MINUS_ONE: u64 = (LEVELS as u64 - 1) << 3;
        const ACCESSED_DIRTY: u64 = 1 << 6;
        match self.format {
            Format::Ept => Some(
                self.root
                    | WRITE_BACK
                    | WALK_LENGTH_MINUS_ONE
                    | if accessed_dirty { ACCESSED_DIRTY } else { 0 },
            ),
            Format::Npt => None,
        }
    }

    /// Maps `[gpa, gpa + len)` to `[hpa, hpa + len)`, replacing what was there. Uses the
    /// largest pages that `gpa`, `hpa` and the remaining length allow. `mt` is exact on EPT;
    /// on NPT only uncacheable and write-through change the host type (see crate docs).
    pub fn map(
        &mut self,
        mem: &mut impl TableMemory,
        gpa: u64,
        hpa: u64,
        len: u64,
        perms: Perms,
        mt: MemType,
    ) -> Result<(), Error> {
        check_gpa_range(gpa, len)?;
        self.check_hpa_range(hpa, len)?;
        self.format.check(perms)?;
        let mut done = 0;
        while done < len {
            let (g, h) = (gpa + done, hpa + done);
            let size = self.page_size_for(g, h, len - done);
            let leaf = self.format.leaf_entry(size.level(), h, perms, mt);
            self.set_leaf(mem, g, size.level(), leaf)?;
            done += size.bytes();
        }
        Ok(())
    }

    /// Removes every mapping in `[gpa, gpa + len)`. A large page only partly inside the range
    /// is split and keeps its mapping outside it; tables wholly inside are freed. A table
    /// emptied by smaller unmaps stays until a covering unmap or map, or `free`.
    pub fn unmap(&mut self, mem: &mut impl TableMemory, gpa: u64, len: u64) -> Result<(), Error> {
        let end = check_gpa_range(gpa, len)?;
        self.edit(mem, gpa, end, Edit::Unmap)
    }

    /// Gives every mapped page in `[gpa, gpa + len)` the rights `perms`, splitting large pages
    /// that reach outside the range. Unmapped holes stay unmapped. `Perms::NONE` keeps the
    /// translation (see `translate`) but lets the guest reach nothing.
    pub fn protect(
        &mut self,
        mem: &mut impl TableMemory,
        gpa: u64,
        len: u64,
        perms: Perms,
    ) -> Result<(), Error> {
        let end = check_gpa_range(gpa, len)?;
        self.format.check(perms)?;
        self.edit(mem, gpa, end, Edit::Protect(perms))
    }

    /// Where `gpa` leads, or `None` if it is unmapped. A page protected to `Perms::NONE`
    /// still translates, with no rights.
    pub fn translate(&self, mem: &impl TableMemory, gpa: u64) -> Option<Translation> {
        if gpa >= GPA_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in (0..LEVELS).rev() {
            let e = mem.table(table)[index(gpa, level)];
            match kind(e) {
                Kind::Empty => return None,
                Kind::Table => table = entry::table_addr(e),
                Kind::Leaf => {
                    let page_size = PageSize::at_level(level)?;
                    return Some(Translation {
                        hpa: entry::leaf_addr(e, level) + (gpa & (page_size.bytes() - 1)),
                        perms: self.format.perms(e),
                        mem_type: self.format.mem_type(e),
                        page_size,
                    });
                }
            }
        }
        None
    }

    /// Returns every table frame to `mem`. The guest must no longer run on these tables.
    pub fn free(self, mem: &mut impl TableMemory) {
        free_tree(mem, self.root, ROOT_LEVEL);
    }

    fn check_hpa_range(&self, hpa: u64, len: u64) -> Result<(), Error> {
        if hpa & (PAGE - 1) != 0 {
            return Err(Error::MisalignedHpa(hpa));
        }
        let end = hpa.checked_add(len).ok_or(Error::Overflow)?;
        if end > 1 << self.config.host_phys_bits.min(52) {
            return Err(Error::HpaTooLarge(end));
        }
        Ok(())
    }

    /// The largest allowed page that starts at both `gpa` and `hpa` and fits in `remaining`.
    fn page_size_for(&self, gpa: u64, hpa: u64, remaining: u64) -> PageSize {
        [PageSize::Size1GiB, PageSize::Size2MiB]
            .into_iter()
            .find(|s| {
                *s <= self.config.max_page_size
                    && (gpa | hpa) & (s.bytes() - 1) == 0
                    && remaining >= s.bytes()
            })
            .unwrap_or(PageSize::Size4KiB)
    }

    /// Installs `leaf` for `gpa` at `level`, creating or splitting tables above it and
    /// freeing any table it replaces.
    fn set_leaf(
        &self,
        mem: &mut impl TableMemory,
        gpa: u64,
        level: u32,
        leaf: u64,
    ) -> Result<(), Error> {
        let mut table = self.root;
        for above in (level + 1..LEVELS).rev() {
            table = self.child_table(mem, table, gpa, above)?;
        }
        let old = core::mem::replace(&mut mem.table_mut(table)[index(gpa, level)], leaf);
        if level > 0 && kind(old) == Kind::Table {
            free_tree(mem, entry::table_addr(old), level - 1);
        }
        Ok(())
    }

    /// The table below the entry for `gpa` in `table` (at `level`), allocating it if the
    /// entry is empty and splitting the page if it is a leaf. A split table is filled before
    /// it replaces the leaf, so the translation never changes on the way.
    fn child_table(
        &self,
        mem: &mut impl TableMemory,
        table: u64,
        gpa: u64,
        level: u32,
    ) -> Result<u64, Error> {
        let i = index(gpa, level);
        let e = mem.table(table)[i];
        if kind(e) == Kind::Table {
            return Ok(entry::table_addr(e));
        }
        let child = alloc_table(mem)?;
        if kind(e) == Kind::Leaf {
            for (j, slot) in (0..).zip(mem.table_mut(child).iter_mut()) {
                *slot = entry::split_child(e, level, j);
            }
        }
        mem.table_mut(table)[i] = self.format.table_entry(child);
        Ok(child)
    }

    fn edit(
        &self,
        mem: &mut impl TableMemory,
        gpa: u64,
        end: u64,
        edit: Edit,
    ) -> Result<(), Error> {
        let mut at = gpa;
        while at < end {
            at = self.edit_at(mem, at, end, edit)?;
        }
        Ok(())
    }

    /// Applies `edit` to the largest entry that starts at `at` and ends by `end`, skipping
    /// an unmapped stretch whole; returns where the next entry begins.
    fn edit_at(
        &self,
        mem: &mut impl TableMemory,
        at: u64,
        end: u64,
        edit: Edit,
    ) -> Result<u64, Error> {
        let mut table = self.root;
        for level in (0..LEVELS).rev() {
            let span = 1u64 << (12 + 9 * level);
            let next = (at & !(span - 1)) + span;
            let whole = at & (span - 1) == 0 && end >= next;
            let i = index(at, level);
            let e = mem.table(table)[i];
            match (kind(e), edit) {
                (Kind::Empty, _) => return Ok(next),
                (Kind::Leaf, Edit::Unmap) if whole => {
                    mem.table_mut(table)[i] = 0;
                    return Ok(next);
                }
                // A page that already has the rights needs no split.
                (Kind::Leaf, Edit::Protect(perms))
                    if whole || self.format.with_perms(e, perms) == e =>
                {
                    mem.table_mut(table)[i] = self.format.with_perms(e, perms);
                    return Ok(next);
                }
                (Kind::Table, Edit::Unmap) if whole && level > 0 => {
                    mem.table_mut(table)[i] = 0;
                    free_tree(mem, entry::table_addr(e), level - 1);
                    return Ok(next);
                }
                _ => table = self.child_table(mem, table, at, level)?,
            }
        }
        // Level-0 entries are never tables and always whole, so the walk returned above;
        // stepping one page keeps progress guaranteed all the same.
        Ok(at + PAGE)
    }
}

/// Checks a guest-physical range and returns its end.
fn check_gpa_range(gpa: u64, len: u64) -> Result<u64, Error> {
    if gpa & (PAGE - 1) != 0 {
        return Err(Error::MisalignedGpa(gpa));
    }
    if len & (PAGE - 1) != 0 {
        return Err(Error::MisalignedLen(len));
    }
    let end = gpa.checked_add(len).ok_or(Error::Overflow)?;
    if end > GPA_LIMIT {
        return Err(Error::GpaTooLarge(end));
    }
    Ok(end)
}

/// Index of the entry for `gpa` in a table at `level` (3 = PML4 ... 0 = PT).
fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> (12 + 9 * level)) & 0x1ff) as usize
}

fn alloc_table(mem: &mut impl TableMemory) -> Result<u64, Error> {
    let pa = mem.alloc_table().ok_or(Error::OutOfTableMemory)?;
    if pa & (PAGE - 1) != 0 {
        return Err(Error::MisalignedTableFrame(pa));
    }
    *mem.table_mut(pa) = [0; 512];
    Ok(pa)
}

/// Frees the table at `pa` (at `level`) and every table below it.
fn free_tree(mem: &mut impl TableMemory, pa: u64, level: u32) {
    if level > 0 {
        for i in 0..512 {
            let e = mem.table(pa)[i];
            if kind(e) == Kind::Table {
                free_tree(mem, entry::table_addr(e), level - 1);
            }
        }
    }
    mem.free_table(pa);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_memory::TestMemory;
    extern crate std;
    use std::vec::Vec;

    const KIB4: u64 = 0x1000;
    const MIB2: u64 = 0x20_0000;
    const GIB: u64 = 0x4000_0000;
    const BOTH: [Format; 2] = [Format::Npt, Format::Ept];

    fn new_table(format: Format) -> (TestMemory, GuestPageTable) {
        let mut mem = TestMemory::new();
        let gpt = GuestPageTable::new(format, &mut mem).unwrap();
        (mem, gpt)
    }

    fn page_size(mem: &TestMemory, gpt: &GuestPageTable, gpa: u64) -> Option<PageSize> {
        gpt.translate(mem, gpa).map(|t| t.page_size)
    }

    /// The raw entries met on the walk to `gpa`, root first, ending at the leaf or hole.
    fn walk(mem: &TestMemory, gpt: &GuestPageTable, gpa: u64) -> Vec<u64> {
        let mut entries = Vec::new();
        let mut table = gpt.root();
        for level in (0..LEVELS).rev() {
            let e = mem.table(table)[index(gpa, level)];
            entries.push(e);
            if kind(e) != Kind::Table {
                break;
            }
            table = entry::table_addr(e);
        }
        entries
    }

    #[test]
    fn gib_aligned_range_uses_gib_pages() {
        for f in BOTH {
            let (mut mem, mut gpt) = new_table(f);
            gpt.map(
                &mut mem,
                2 * GIB,
                5 * GIB,
                2 * GIB,
                Perms::RWX,
                MemType::WriteBack,
            )
            .unwrap();
            assert_eq!(mem.live(), 2, "{f:?}: PML4 and PDPT only");
            for (gpa, hpa) in [
                (2 * GIB, 5 * GIB),
                (3 * GIB - KIB4, 6 * GIB - KIB4),
                (4 * GIB - 8, 7 * GIB - 8),
            ] {
                let t = gpt.translate(&mem, gpa).unwrap();
                assert_eq!(
                    (t.hpa, t.page_size, t.perms),
                    (hpa, PageSize::Size1GiB, Perms::RWX)
                );
            }
            assert_eq!(gpt.translate(&mem, 2 * GIB - 1), None);
            assert_eq!(gpt.translate(&mem, 4 * GIB), None);
        }
    }

    #[test]
    fn mib_aligned_range_uses_mib_pages() {
        for f in BOTH {
            let (mut mem, mut gpt) = new_table(f);
            gpt.map(
                &mut mem,
                MIB2,
                3 * MIB2,
                2 * MIB2,
                Perms::RW,
                MemType::WriteBack,
            )
            .unwrap();
            assert_eq!(mem.live(), 3, "{f:?}: PML4, PDPT, PD");
            assert_eq!(page_size(&mem, &gpt, MIB2), Some(PageSize::Size2MiB));
            assert_eq!(gpt.translate(&mem, 3 * MIB2 - 1).unwrap().hpa, 5 * MIB2 - 1);
            assert_eq!(gpt.translate(&mem, 3 * MIB2), None);
        }
    }

    #[test]
    fn unaligned_range_mixes_page_sizes() {
        for f in BOTH {
            let (mut mem, mut gpt) = new_table(f);
            // [4 KiB, 1 GiB + 4 KiB): 511 small pages, 511 2 MiB pages, one small page.
            gpt.map(
                &mut mem,
                KIB4,
                GIB + KIB4,
                GIB,
                Perms::RWX,
                MemType::WriteBack,
            )
            .unwrap();
            assert_eq!(mem.live(), 6, "{f:?}: PML4, PDPT, two PDs, two PTs");
            assert_eq!(page_size(&mem, &gpt, KIB4), Some(PageSize::Size4KiB));
            assert_eq!(page_size(&mem, &gpt, MIB2 - KIB4), Some(PageSize::Size4KiB));
            assert_eq!(page_size(&mem, &gpt, MIB2), Some(PageSize::Size2MiB));
            assert_eq!(page_size(&mem, &gpt, GIB - KIB4), Some(PageSize::Size2MiB));
            assert_eq!(page_size(&mem, &gpt, GIB), Some(PageSize::Size4KiB));
            assert_eq!(gpt.translate(&mem, 0), None);
            assert_eq!(gpt.translate(&mem, GIB + KIB4), None);
            assert_eq!(gpt.translate(&mem, GIB + 5).unwrap().hpa, 2 * GIB + 5);
        }
    }

    #[test]
    fn host_alignment_limits_page_size() {
        for f in BOTH {
            // Guest 2 MiB aligned, host only 4 KiB aligned: small pages only.
            let (mut mem, mut gpt) = new_table(f);
            gpt.map(&mut mem, 0, KIB4, 2 * MIB2, Perms::RWX, MemType::WriteBack)
                .unwrap();
            assert_eq!(mem.live(), 5, "{f:?}: PML4, PDPT, PD, two PTs");
            assert_eq!(page_size(&mem, &gpt, MIB2), Some(PageSize::Size4KiB));
            assert_eq!(
                gpt.translate(&mem, 2 * MIB2 - 1).unwrap().hpa,
                2 * MIB2 - 1 + KIB4
            );

            // Both 2 MiB aligned but not 1 GiB aligned together: 2 MiB pages for a whole GiB.
            let (mut mem, mut gpt) = new_table(f);
            gpt.map(&mut mem, GIB, MIB2, GIB, Perms::RWX, MemType::WriteBack)
                .unwrap();
            assert_eq!(mem.live(), 3);
            assert_eq!(page_size(&mem, &gpt, GIB), Some(PageSize::Size2MiB));
            assert_eq!(
                gpt.translate(&mem, 2 * GIB - 1).unwrap().hpa,
                GIB + MIB2 - 1
            );
        }
    }

    #[test]
    fn max_page_size_is_honoured() {
        let mut mem = TestMemory::new();
        let config = Config {
            max_page_size: PageSize::Size2MiB,
            ..Config::default()
        };
        let mut gpt = GuestPageTable::with_config(Format::Ept, config, &mut mem).unwrap();
        gpt.map(&mut mem, 0, 0, GIB, Perms::RWX, MemType::WriteBack)
            .unwrap();
        assert_eq!(mem.live(), 3);
        assert_eq!(page_size(&mem, &gpt, GIB - 1), Some(PageSize::Size2MiB));
    }

    #[test]
    fn npt_walk_has_exact_bits() {
        let (mut mem, mut gpt) = new_table(Format::Npt);
        gpt.map(&mut mem, GIB, 7 * GIB, GIB, Perms::RW, MemType::WriteBack)
            .unwrap();
        gpt.map(
            &mut mem,
            0x1000,
            0xabc_d000,
            KIB4,
            Perms::RWX,
            MemType::Uncacheable,
        )
        .unwrap();
        let gib = walk(&mem, &gpt, GIB + 0x1234);
        assert_eq!(gib.len(), 2);
        assert_eq!(gib[0] & 0xfff, 0x007, "PML4E: P|RW|US");
        assert_eq!(gib[0] & 1 << 63, 0);
        assert_eq!(
            gib[1],
            (7 * GIB) | 1 << 63 | 0x800 | 0x80 | 0x7,
            "1 GiB leaf: NX|PS|US|RW|P"
        );
        let small = walk(&mem, &gpt, 0x1000);
        assert_eq!(small.len(), 4);
        assert_eq!(small[0], gib[0], "same PML4 entry");
        assert_eq!(small[1] & 0x8000_0000_0000_0fff, 0x007, "PDPTE");
        assert_eq!(small[2] & 0x8000_0000_0000_0fff, 0x007, "PDE");
        assert_eq!(
            small[3],
            0xabc_d000 | 0x800 | 0x18 | 0x7,
            "PTE: PCD|PWT|US|RW|P"
        );
    }

    #[test]
    fn ept_walk_has_exact_bits() {
        let (mut mem, mut gpt) = new_table(Format::Ept);
        gpt.map(&mut mem, GIB, 7 * GIB, GIB, Perms::RWX, MemType::WriteBack)
            .unwrap();
        gpt.map(
            &mut mem,
            0,
            0xfee0_0000,
            MIB2,
            Perms::R,
            MemType::Uncacheable,
        )
        .unwrap();
        gpt.map(
            &mut mem,
            2 * MIB2,
            0x8000_1000,
            KIB4,
            Perms::RX,
            MemType::WriteCombining,
        )
        .unwrap();
        let gib = walk(&mem, &gpt, GIB);
        assert_eq!(gib[0] & 0xfff, 0x007, "PML4E: R|W|X, nothing else");
        assert_eq!(gib[1], (7 * GIB) | 0x800 | 0x80 | 6 << 3 | 0x7);
        let mib = walk(&mem, &gpt, 0);
        assert_eq!(mib.len(), 3);
        assert_eq!(mib[1] & 0xfff, 0x007, "PDPTE");
        assert_eq!(
            mib[2],
            0xfee0_0000 | 0x800 | 0x80 | 0x1,
            "2 MiB leaf: UC, read-only"
        );
        let small = walk(&mem, &gpt, 2 * MIB2);
        assert_eq!(small[2] & 0xfff, 0x007, "PDE");
        assert_eq!(small[3], 0x8000_1000 | 0x800 | 1 << 3 | 0x5, "PTE: WC, R|X");
        let t = gpt.translate(&mem, 2 * MIB2 + 0x10).unwrap();
        assert_eq!(t.mem_type, MemType::WriteCombining);
        assert_eq!(t.hpa, 0x8000_1010);
    }

    #[test]
    fn eptp_encodes_root_walk_length_and_accessed_dirty() {
        let (_, gpt) = new_table(Format::Ept);
        assert_eq!(gpt.root() & 0xfff, 0);
        assert_eq!(gpt.eptp(false), Some(gpt.root() | 0x1e));
        assert_eq!(gpt.eptp(true), Some(gpt.root() | 0x5e));
        let (_, npt) = new_table(Format::Npt);
        assert_eq!(npt.eptp(false), None);
        assert_eq!(npt.format(), Format::Npt);
    }

    #[test]
    fn translations_hold_at_page_boundaries() {
        for f in BOTH {
            let (mut mem, mut gpt) = new_table(f);
            let regions = [
                (0x0, 0x10_0000, 0xa_0000),
                (0xc_0000, 0x200_0000, 0x4_0000),
                (0x10_0000, 0x1_0010_0000, 3 * GIB),
            ];
            for (gpa, hpa, len) in regions {
                gpt.map(&mut mem, gpa, hpa, len, Perms::RWX, MemType::WriteBack)
                    .unwrap();
            }
            for (gpa, hpa, len) in regions {
                for off in [0, 1, KIB4 - 1, KIB4, MIB2 - 1, MIB2, len - KIB4, len - 1] {
                    if off < len {
                        assert_eq!(
                            gpt.translate(&mem, gpa + off).unwrap().hpa,
                            hpa + off,
                            "{f:?} {gpa:#x}+{off:#x}"
                        );
                    }
                }
            }
            assert_eq!(gpt.translate(&mem, 0xa_0000), None);
            assert_eq!(gpt.translate(&mem, 0xb_ffff), None);
            assert_eq!(gpt.translate(&mem, 0x10_0000 + 3 * GIB), None);
            assert_eq!(gpt.translate(&mem, GPA_LIMIT), None);
            assert_eq!(gpt.translate(&mem, u64::MAX), None);
        }
    }

    #[test]
    fn unmapping_a_page_splits_a_gib_page() {
        for f in BOTH {
            let (mut mem, mut gpt) = new_table(f);
            gpt.map(&mut mem, GIB, 3 * GIB, GIB, Perms::RX, MemType::Uncacheable)
                .unwrap();
            let hole = GIB + 0x1234_5000;
            gpt.unmap(&mut mem, hole, KIB4).unwrap();
            assert_eq!(mem.live(), 4, "{f:?}: split into a PD and one PT");
            assert_eq!(gpt.translate(&mem, hole), None);
            assert_eq!(gpt.translate(&mem, hole + KIB4 - 1), None);
            for gpa in [hole - KIB4, hole + KIB4, hole - 1, hole + KIB4 + 0xfff] {
                let t = gpt.translate(&mem, gpa).unwrap();
                assert_eq!(t.hpa, gpa + 2 * GIB);
                assert_eq!(t.perms, Perms::RX);
                assert_eq!(t.mem_type, MemType::Uncacheable);
                assert_eq!(t.page_size, PageSize::Size4KiB);
            }
            for gpa in [GIB, 2 * GIB - 1] {
                let t = gpt.translate(&mem, gpa).unwrap();
                assert_eq!(
                    (t.hpa, t.page_size, t.perms),
                    (gpa + 2 * GIB, PageSize::Size2MiB, Perms::RX)
                );
            }
            // The split leaves look exactly like leaves mapped directly at that size.
            let mut direct_mem = TestMemory::new();
            let mut direct = GuestPageTable::new(f, &mut direct_mem).unwrap();
            direct
                .map(
                    &mut direct_mem,
                    GIB,
                    3 * GIB,
                    MIB2,
                    Perms::RX,
                    MemType::Uncacheable,
                )
                .unwrap();
            direct
                .map(
                    &mut direct_mem,
                    hole + KIB4,
                    hole + KIB4 + 2 * GIB,
                    KIB4,
                    Perms::RX,
                    MemType::Uncacheable,
                )
                .unwrap();
            assert_eq!(walk(&mem, &gpt, GIB)[2], walk(&direct_mem, &direct, GIB)[2]);
            assert_eq!(
                walk(&mem, &gpt, hole + KIB4)[3],
                walk(&direct_mem, &direct, hole + KIB4)[3]
            );
            assert_eq!(walk(&mem, &gpt, hole)[3], 0);
        }
    }

    #[test]
    fn unmapping_whole_tables_frees_them() {
        for f in BOTH {
            let (mut mem, mut gpt) = new_table(f);
            gpt.map(&mut mem, 0, KIB4, 2 * MIB2, Perms::RWX, MemType::WriteBack)
                .unwrap();
            assert_eq!(mem.live(), 5);
            gpt.unmap(&mut mem, 0, MIB2).unwrap();
            assert_eq!(mem.live(), 4, "{f:?}: first PT freed");
            assert_eq!(gpt.translate(&mem, MIB2 - 1), None);
            assert_eq!(gpt.translate(&mem, MIB2).unwrap().hpa, MIB2 + KIB4);
            // Unmapping across holes and beyond the mapping is fine.
            gpt.unmap(&mut mem, 0, 512 * GIB).unwrap();
            assert_eq!(mem.live(), 1, "only the root is left");
            assert_eq!(gpt.translate(&mem, MIB2), None);
            gpt.free(&mut mem);
            assert_eq!(mem.live(), 0);
        }
    }

    #[test]
    fn remapping_replaces_and_frees_smaller_tables() {
        for f in BOTH {
            let (mut mem, mut gpt) = new_table(f);
            gpt.map(&mut mem, 0, KIB4, GIB, Perms::R, MemType::WriteBack)
                .unwrap();
            assert_eq!(mem.live(), 3 + 512);
            gpt.map(&mut mem, 0, 4 * GIB, GIB, Perms::RWX, MemType::WriteBack)
                .unwrap();
            assert_eq!(mem.live(), 2, "{f:?}: PD and PTs freed");
            let t = gpt.translate(&mem, 0x1234).unwrap();
            assert_eq!(
                (t.hpa, t.perms, t.page_size),
                (4 * GIB + 0x1234, Perms::RWX, PageSize::Size1GiB)
            );
            // Remapping one page inside a GiB page splits it and changes only that page.
            gpt.map(&mut mem, MIB2, 0x7000, KIB4, Perms::R, MemType::WriteBack)
                .unwrap();
            assert_eq!(gpt.translate(&mem, MIB2 + 8).unwrap().hpa, 0x7008);
            assert_eq!(
                gpt.translate(&mem, MIB2 + KIB4).unwrap().hpa,
                4 * GIB + MIB2 + KIB4
            );
            assert_eq!(gpt.translate(&mem, MIB2 + KIB4).unwrap().perms, Perms::RWX);
        }
    }

    #[test]
    fn protect_changes_rights_and_splits_only_when_needed() {
        for f in BOTH {
            let (mut mem, mut gpt) = new_table(f);
            gpt.map(&mut mem, 0, 0, GIB, Perms::RWX, MemType::WriteBack)
                .unwrap();
            gpt.protect(&mut mem, 0, GIB, Perms::RX).unwrap();
            assert_eq!(mem.live(), 2, "{f:?}: whole GiB page, no split");
            assert_eq!(gpt.translate(&mem, 0).unwrap().perms, Perms::RX);
            // Same rights inside a large page: nothing to split.
            gpt.protect(&mut mem, MIB2, KIB4, Perms::RX).unwrap();
            assert_eq!(mem.live(), 2);

            gpt.protect(&mut mem, MIB2 + KIB4, KIB4, Perms::R).unwrap();
            assert_eq!(mem.live(), 4);
            let t = gpt.translate(&mem, MIB2 + KIB4).unwrap();
            assert_eq!(
                (t.hpa, t.perms, t.page_size),
                (MIB2 + KIB4, Perms::R, PageSize::Size4KiB)
            );
            assert_eq!(gpt.translate(&mem, MIB2).unwrap().perms, Perms::RX);
            assert_eq!(
                gpt.translate(&mem, MIB2 + 2 * KIB4).unwrap().perms,
                Perms::RX
            );
            assert_eq!(gpt.translate(&mem, 0).unwrap().perms, Perms::RX);

            // No rights: the translation stays, the hardware sees a non-present entry.
            gpt.protect(&mut mem, MIB2 + KIB4, KIB4, Perms::NONE)
                .unwrap();
            let t = gpt.translate(&mem, MIB2 + KIB4).unwrap();
            assert_eq!((t.hpa, t.perms), (MIB2 + KIB4, Perms::NONE));
            // NPT: P (bit 0) clear; EPT: R, W and X (bits 2:0) clear.
            let present = match f {
                Format::Npt => 0x1,
                Format::Ept => 0x7,
            };
            assert_eq!(walk(&mem, &gpt, MIB2 + KIB4)[3] & present, 0);
            gpt.protect(&mut mem, MIB2 + KIB4, KIB4, Perms::RW).unwrap();
            assert_eq!(gpt.translate(&mem, MIB2 + KIB4).unwrap().perms, Perms::RW);
        }
    }

    #[test]
    fn protect_skips_holes() {
        let (mut mem, mut gpt) = new_table(Format::Ept);
        gpt.map(&mut mem, 0, 0, KIB4, Perms::RWX, MemType::WriteBack)
            .unwrap();
        gpt.map(&mut mem, 3 * GIB, 0, KIB4, Perms::RWX, MemType::WriteBack)
            .unwrap();
        gpt.protect(&mut mem, 0, 4 * GIB, Perms::R).unwrap();
        assert_eq!(gpt.translate(&mem, 0).unwrap().perms, Perms::R);
        assert_eq!(gpt.translate(&mem, 3 * GIB).unwrap().perms, Perms::R);
        assert_eq!(gpt.translate(&mem, KIB4), None);
        assert_eq!(gpt.translate(&mem, GIB), None);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let (mut mem, mut gpt) = new_table(Format::Npt);
        let wb = MemType::WriteBack;
        let mut map = |gpa, hpa, len, perms| gpt.map(&mut mem, gpa, hpa, len, perms, wb);
        assert_eq!(
            map(0x800, 0, KIB4, Perms::RW),
            Err(Error::MisalignedGpa(0x800))
        );
        assert_eq!(
            map(0, 0x10, KIB4, Perms::RW),
            Err(Error::MisalignedHpa(0x10))
        );
        assert_eq!(
            map(0, 0, 0x1001, Perms::RW),
            Err(Error::MisalignedLen(0x1001))
        );
        assert_eq!(map(!0xfff, 0, 2 * KIB4, Perms::RW), Err(Error::Overflow));
        assert_eq!(map(0, !0xfff, 2 * KIB4, Perms::RW), Err(Error::Overflow));
        assert_eq!(
            map(GPA_LIMIT - KIB4, 0, 2 * KIB4, Perms::RW),
            Err(Error::GpaTooLarge(GPA_LIMIT + KIB4))
        );
        assert_eq!(
            map(0, 1 << 52, KIB4, Perms::RW),
            Err(Error::HpaTooLarge((1 << 52) + KIB4))
        );
        assert_eq!(
            map(0, 0, KIB4, Perms::X),
            Err(Error::UnsupportedPerms(Perms::X))
        );
        assert_eq!(map(GPA_LIMIT - KIB4, 0, KIB4, Perms::RW), Ok(()));
        assert_eq!(map(KIB4, 0, 0, Perms::RW), Ok(()));
        assert_eq!(gpt.unmap(&mut mem, 1, KIB4), Err(Error::MisalignedGpa(1)));
        assert_eq!(gpt.unmap(&mut mem, 0, 1), Err(Error::MisalignedLen(1)));
        assert_eq!(gpt.unmap(&mut mem, !0xfff, KIB4 * 2), Err(Error::Overflow));
        assert_eq!(
            gpt.protect(&mut mem, GPA_LIMIT, KIB4, Perms::R),
            Err(Error::GpaTooLarge(GPA_LIMIT + KIB4))
        );
        assert_eq!(
            gpt.protect(&mut mem, 0, KIB4, Perms::new(false, true, false)),
            Err(Error::UnsupportedPerms(Perms::new(false, true, false)))
        );
        assert_eq!(gpt.translate(&mem, GPA_LIMIT - 1).unwrap().hpa, KIB4 - 1);
        assert_eq!(mem.live(), 4, "refused calls allocated nothing");
    }

    #[test]
    fn host_address_width_is_honoured() {
        let mut mem = TestMemory::new();
        let config = Config {
            host_phys_bits: 39,
            ..Config::default()
        };
        let mut gpt = GuestPageTable::with_config(Format::Ept, config, &mut mem).unwrap();
        assert_eq!(
            gpt.map(
                &mut mem,
                0,
                (1 << 39) - KIB4,
                KIB4,
                Perms::R,
                MemType::WriteBack
            ),
            Ok(())
        );
        assert_eq!(
            gpt.map(
                &mut mem,
                0,
                (1 << 39) - KIB4,
                2 * KIB4,
                Perms::R,
                MemType::WriteBack
            ),
            Err(Error::HpaTooLarge((1 << 39) + KIB4))
        );
    }

    #[test]
    fn running_out_of_table_memory_is_an_error() {
        let mut mem = TestMemory::with_budget(0);
        assert_eq!(
            GuestPageTable::new(Format::Ept, &mut mem).unwrap_err(),
            Error::OutOfTableMemory
        );

        for f in BOTH {
            let mut mem = TestMemory::with_budget(3);
            let mut gpt = GuestPageTable::new(f, &mut mem).unwrap();
            gpt.map(&mut mem, 0, 0, GIB, Perms::RWX, MemType::WriteBack)
                .unwrap();
            assert_eq!(
                gpt.map(&mut mem, 0x5000, 0x5000, KIB4, Perms::R, MemType::WriteBack),
                Err(Error::OutOfTableMemory)
            );
            // Splitting for unmap fails too, and the GiB page is still there in full.
            assert_eq!(
                gpt.unmap(&mut mem, 0x5000, KIB4),
                Err(Error::OutOfTableMemory)
            );
            assert_eq!(
                gpt.protect(&mut mem, 0x5000, KIB4, Perms::R),
                Err(Error::OutOfTableMemory)
            );
            for gpa in (0..GIB).step_by(MIB2 as usize) {
                let t = gpt.translate(&mem, gpa + 0x5000).unwrap();
                assert_eq!(t.hpa, gpa + 0x5000);
                assert_eq!(t.perms, Perms::RWX);
            }
        }
    }

    #[test]
    fn misaligned_table_frames_are_refused() {
        struct Crooked(TestMemory);
        impl TableMemory for Crooked {
            fn alloc_table(&mut self) -> Option<u64> {
                self.0.alloc_table().map(|pa| pa + 8)
            }
            fn free_table(&mut self, pa: u64) {
                self.0.free_table(pa)
            }
            fn table(&self, pa: u64) -> &[u64; 512] {
                self.0.table(pa)
            }
            fn table_mut(&mut self, pa: u64) -> &mut [u64; 512] {
                self.0.table_mut(pa)
            }
        }
        let mut mem = Crooked(TestMemory::new());
        let err = GuestPageTable::new(Format::Npt, &mut mem).unwrap_err();
        assert!(matches!(err, Error::MisalignedTableFrame(pa) if pa % KIB4 == 8));
    }

    #[test]
    fn errors_explain_themselves() {
        use std::string::ToString;
        assert_eq!(
            Error::MisalignedGpa(0x800).to_string(),
            "guest-physical address 0x800 is not 4 KiB aligned"
        );
        assert_eq!(
            Error::UnsupportedPerms(Perms::X).to_string(),
            "permissions --x cannot be expressed in this format"
        );
        assert_eq!(
            Error::OutOfTableMemory.to_string(),
            "out of page-table memory"
        );
    }
}
