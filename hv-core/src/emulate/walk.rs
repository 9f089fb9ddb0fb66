//! Guest linear → guest-physical translation through the guest's own page tables, for the
//! instruction fetcher and the MMIO emulator: paging off, 32-bit, PAE, 4-level and 5-level
//! paging with the access-rights checks of Intel SDM Vol. 3A §4.6 and the page-fault error
//! code of §4.7.
//!
//! It is a software walker only: it never sets accessed/dirty bits, caches nothing (PAE PDPTEs
//! are read from CR3 on every walk; `tlb` caches walks, with the `Trail` of entries each walk
//! read to check them against), does not model SMAP or protection keys, and assumes a
//! MAXPHYADDR of 52 (an entry pointing past guest RAM gives `OutOfRam`). It is not the nested
//! page tables (crate `ept`).

use crate::memory::GuestMemory;
use vcpu::ControlState;

const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const CR4_SMEP: u64 = 1 << 20;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_PS: u64 = 1 << 7;
const PTE_XD: u64 = 1 << 63;
/// Physical-address bits 51:12 of a 64-bit paging-structure entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

pub const PAGE_SIZE: u64 = 0x1000;

/// Page-fault error code bits (SDM Vol. 3A §4.7, Figure 4-12).
pub const PF_PRESENT: u32 = 1 << 0;
pub const PF_WRITE: u32 = 1 << 1;
pub const PF_USER: u32 = 1 << 2;
pub const PF_RSVD: u32 = 1 << 3;
pub const PF_FETCH: u32 = 1 << 4;

/// The kind of access a translation is checked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    /// A user-mode access (CPL 3).
    pub user: bool,
    pub fetch: bool,
}

impl Access {
    pub fn read(cpl: u8) -> Self {
        Self {
            write: false,
            user: cpl == 3,
            fetch: false,
        }
    }

    pub fn write(cpl: u8) -> Self {
        Self {
            write: true,
            user: cpl == 3,
            fetch: false,
        }
    }

    pub fn fetch(cpl: u8) -> Self {
        Self {
            write: false,
            user: cpl == 3,
            fetch: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The access would raise #PF: CR2 = `linear`, with this error code.
    PageFault { linear: u64, error_code: u32 },
    /// A paging-structure entry or the data lies outside guest RAM.
    OutOfRam(u64),
    /// A non-canonical address in long mode: #GP(0) (or #SS for stack references).
    NonCanonical,
}

/// Translates `linear` for `access` under the paging mode `ctrl` selects.
pub fn translate(
    ctrl: &ControlState,
    mem: &impl GuestMemory,
    linear: u64,
    access: Access,
) -> Result<u64, WalkError> {
    translate_traced(ctrl, mem, linear, access).map(|(gpa, _)| gpa)
}

/// The most paging-structure entries one walk reads (5-level paging).
const MAX_LEVELS: usize = 5;

/// The paging-structure entries one walk read, in order: their guest-physical addresses and
/// the values seen there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trail {
    reads: [(u64, u64); MAX_LEVELS],
    len: u8,
    /// 4-byte entries (32-bit paging) rather than 8-byte ones.
    narrow: bool,
}

impl Trail {
    fn push(&mut self, gpa: u64, value: u64) {
        if let Some(slot) = self.reads.get_mut(usize::from(self.len)) {
            *slot = (gpa, value);
            self.len += 1;
        }
    }

    /// Whether every entry still holds the value the walk saw.
    pub fn holds(&self, mem: &impl GuestMemory) -> bool {
        let reads = self.reads.get(..usize::from(self.len)).unwrap_or(&[]);
        reads.iter().all(|&(gpa, seen)| {
            let now = if self.narrow {
                mem.read_u32(gpa).map(u64::from)
            } else {
                mem.read_u64(gpa)
            };
            now == Ok(seen)
        })
    }
}

/// `translate`, also returning the entries the walk read. The result is a function of the
/// paging controls in `ctrl` (CR0, CR3, CR4, EFER, CPL), `linear`, `access` and those entries.
pub fn translate_traced(
    ctrl: &ControlState,
    mem: &impl GuestMemory,
    linear: u64,
    access: Access,
) -> Result<(u64, Trail), WalkError> {
    if ctrl.cr0 & CR0_PG == 0 {
        // Without paging linear addresses are 32 bits and map one to one (SDM Vol. 3A §4.1.1).
        return Ok((linear & 0xffff_ffff, Trail::default()));
    }
    let (mut walker, gpa) = if ctrl.efer & EFER_LMA != 0 {
        let levels = if ctrl.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
        if !is_canonical(linear, levels) {
            return Err(WalkError::NonCanonical);
        }
        let mut w = Walker::new(ctrl, mem, linear, access);
        let gpa = w.walk64(ctrl.cr3 & ADDR_MASK, levels);
        (w, gpa)
    } else if ctrl.cr4 & CR4_PAE != 0 {
        let mut w = Walker::new(ctrl, mem, linear & 0xffff_ffff, access);
        let gpa = w.pae();
        (w, gpa)
    } else {
        let mut w = Walker::new(ctrl, mem, linear & 0xffff_ffff, access);
        w.trail.narrow = true;
        let gpa = w.legacy();
        (w, gpa)
    };
    gpa.map(|gpa| (gpa, core::mem::take(&mut walker.trail)))
}

/// True when bits 63 down to the top implemented bit (47 for 4-level, 56 for 5-level paging)
/// are all equal (SDM Vol. 1 §3.3.7.1).
pub fn is_canonical(linear: u64, levels: u32) -> bool {
    let unused = 64 - (12 + 9 * levels);
    ((linear << unused) as i64 >> unused) as u64 == linear
}

/// Reads `buf.len()` bytes at `linear`, translating each page separately.
pub fn read_linear(
    ctrl: &ControlState,
    mem: &impl GuestMemory,
    linear: u64,
    access: Access,
    buf: &mut [u8],
) -> Result<(), WalkError> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        let la = linear.wrapping_add(done as u64);
        let chunk = rest.len().min(page_remaining(la));
        let gpa = translate(ctrl, mem, la, access)?;
        mem.read(gpa, &mut rest[..chunk])
            .map_err(|e| WalkError::OutOfRam(e.gpa))?;
        done += chunk;
    }
    Ok(())
}

/// Writes `data` at `linear`, translating each page separately. All pages are translated
/// before the first byte is written, so a fault leaves guest memory untouched.
pub fn write_linear(
    ctrl: &ControlState,
    mem: &mut impl GuestMemory,
    linear: u64,
    data: &[u8],
) -> Result<(), WalkError> {
    let access = Access::write(ctrl.cpl);
    let first = data.len().min(page_remaining(linear));
    let gpa0 = translate(ctrl, mem, linear, access)?;
    let (head, tail) = data.split_at(first);
    let gpa1 = if tail.is_empty() {
        None
    } else {
        Some(translate(
            ctrl,
            mem,
            linear.wrapping_add(first as u64),
            access,
        )?)
    };
    mem.write(gpa0, head)
        .map_err(|e| WalkError::OutOfRam(e.gpa))?;
    if let Some(gpa1) = gpa1 {
        mem.write(gpa1, tail)
            .map_err(|e| WalkError::OutOfRam(e.gpa))?;
    }
    Ok(())
}

/// Bytes from `linear` to the end of its 4 KiB page.
pub fn page_remaining(linear: u64) -> usize {
    (PAGE_SIZE - (linear & (PAGE_SIZE - 1))) as usize
}

/// The access rights accumulated over the levels of one walk (SDM Vol. 3A §4.6.1).
#[derive(Clone, Copy)]
struct Rights {
    writable: bool,
    user: bool,
    no_exec: bool,
}

impl Rights {
    const ALL: Self = Self {
        writable: true,
        user: true,
        no_exec: false,
    };

    fn and(self, entry: u64, nxe: bool) -> Self {
        Self {
            writable: self.writable && entry & PTE_RW != 0,
            user: self.user && entry & PTE_US != 0,
            no_exec: self.no_exec || (nxe && entry & PTE_XD != 0),
        }
    }
}

struct Walker<'a, M> {
    ctrl: &'a ControlState,
    mem: &'a M,
    linear: u64,
    access: Access,
    nxe: bool,
    trail: Trail,
}

impl<'a, M: GuestMemory> Walker<'a, M> {
    fn new(ctrl: &'a ControlState, mem: &'a M, linear: u64, access: Access) -> Self {
        let pae = ctrl.cr4 & CR4_PAE != 0;
        let nxe = pae && ctrl.efer & EFER_NXE != 0;
        Self {
            ctrl,
            mem,
            linear,
            access,
            nxe,
            trail: Trail::default(),
        }
    }

    /// PAE paging (SDM Vol. 3A §4.4): four PDPTEs at CR3[31:5], then 2 levels of 64-bit entries.
    fn pae(&mut self) -> Result<u64, WalkError> {
        let pdpt = self.ctrl.cr3 & 0xffff_ffe0;
        let pdpte = self.entry64(pdpt + ((self.linear >> 30) & 3) * 8)?;
        if pdpte & PTE_P == 0 {
            return Err(self.fault(0));
        }
        // Bits 2:1, 8:5 and 63 of a PAE PDPTE are reserved (SDM Vol. 3A Table 4-8).
        if pdpte & (0x1e6 | PTE_XD) != 0 {
            return Err(self.fault(PF_PRESENT | PF_RSVD));
        }
        self.walk64(pdpte & ADDR_MASK, 2)
    }

    /// 32-bit paging (SDM Vol. 3A §4.3), with 4 MiB pages under CR4.PSE (PSE-36 high bits).
    fn legacy(&mut self) -> Result<u64, WalkError> {
        let la = self.linear;
        let pde = self.entry32((self.ctrl.cr3 & 0xffff_f000) + ((la >> 22) & 0x3ff) * 4)?;
        if pde & PTE_P == 0 {
            return Err(self.fault(0));
        }
        let rights = Rights::ALL.and(pde, false);
        if pde & PTE_PS != 0 && self.ctrl.cr4 & CR4_PSE != 0 {
            // Bit 21 of a 4 MiB PDE is reserved (SDM Vol. 3A Table 4-4).
            if pde & (1 << 21) != 0 {
                return Err(self.fault(PF_PRESENT | PF_RSVD));
            }
            self.check(rights)?;
            let high = ((pde >> 13) & 0xff) << 32;
            return Ok(high | (pde & 0xffc0_0000) | (la & 0x3f_ffff));
        }
        let pte = self.entry32((pde & 0xffff_f000) + ((la >> 12) & 0x3ff) * 4)?;
        if pte & PTE_P == 0 {
            return Err(self.fault(0));
        }
        self.check(rights.and(pte, false))?;
        Ok((pte & 0xffff_f000) | (la & 0xfff))
    }

    /// Walks `levels` (at least 1) levels of 512-entry tables from `table`, as 4-level and
    /// 5-level paging do (SDM Vol. 3A §4.5) and the last two PAE levels. Level 1 is the page
    /// table.
    fn walk64(&mut self, mut table: u64, levels: u32) -> Result<u64, WalkError> {
        let mut rights = Rights::ALL;
        let mut level = levels.max(1);
        loop {
            let shift = 12 + 9 * (level - 1);
            let entry = self.entry64(table + ((self.linear >> shift) & 0x1ff) * 8)?;
            if entry & PTE_P == 0 {
                return Err(self.fault(0));
            }
            let leaf = level == 1 || (entry & PTE_PS != 0 && level <= 3);
            if self.reserved(entry, level, leaf) {
                return Err(self.fault(PF_PRESENT | PF_RSVD));
            }
            rights = rights.and(entry, self.nxe);
            if leaf {
                self.check(rights)?;
                let offset = (1u64 << shift) - 1;
                return Ok((entry & ADDR_MASK & !offset) | (self.linear & offset));
            }
            table = entry & ADDR_MASK;
            level -= 1;
        }
    }

    /// Reserved bits of a 64-bit entry (SDM Vol. 3A Tables 4-15 to 4-20): XD without NXE, PS
    /// in a PML5E/PML4E, and the bits between 12 and the page size of a large-page entry.
    fn reserved(&self, entry: u64, level: u32, leaf: bool) -> bool {
        let xd = !self.nxe && entry & PTE_XD != 0;
        let ps = level >= 4 && entry & PTE_PS != 0;
        let large =
            leaf && level > 1 && entry & (((1u64 << (12 + 9 * (level - 1))) - 1) & !0x1fff) != 0;
        xd || ps || large
    }

    /// The access-rights rules of SDM Vol. 3A §4.6.1.
    fn check(&self, r: Rights) -> Result<(), WalkError> {
        let a = self.access;
        let wp = self.ctrl.cr0 & CR0_WP != 0;
        let smep = self.ctrl.cr4 & CR4_SMEP != 0;
        let denied = if a.user {
            !r.user || (a.write && !r.writable) || (a.fetch && r.no_exec)
        } else {
            (a.write && wp && !r.writable) || (a.fetch && (r.no_exec || (smep && r.user)))
        };
        if denied {
            Err(self.fault(PF_PRESENT))
        } else {
            Ok(())
        }
    }

    /// A #PF with `bits` plus the W/R, U/S and I/D bits this access sets (SDM Vol. 3A §4.7:
    /// I/D only when SMEP is on or NX is available).
    fn fault(&self, bits: u32) -> WalkError {
        let a = self.access;
        let smep = self.ctrl.cr4 & CR4_SMEP != 0;
        let mut error_code = bits;
        if a.write {
            error_code |= PF_WRITE;
        }
        if a.user {
            error_code |= PF_USER;
        }
        if a.fetch && (smep || self.nxe) {
            error_code |= PF_FETCH;
        }
        WalkError::PageFault {
            linear: self.linear,
            error_code,
        }
    }

    fn entry64(&mut self, gpa: u64) -> Result<u64, WalkError> {
        let entry = self
            .mem
            .read_u64(gpa)
            .map_err(|e| WalkError::OutOfRam(e.gpa))?;
        self.trail.push(gpa, entry);
        Ok(entry)
    }

    fn entry32(&mut self, gpa: u64) -> Result<u64, WalkError> {
        let entry = self
            .mem
            .read_u32(gpa)
            .map_err(|e| WalkError::OutOfRam(e.gpa))?;
        self.trail.push(gpa, entry.into());
        Ok(entry.into())
    }
}

#[cfg(test)]
mod tests;
