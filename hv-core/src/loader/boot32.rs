//! What the PVH and multiboot loaders share: entry in 32-bit flat protected mode with paging
//! off (their GDT and the register state), the guest's E820-style memory map (which the Linux
//! loader writes too), the low-memory area holding the boot information, boot modules
//! placed after the kernel, and their errors.
//!
//! It is neither boot protocol's information format (see `pvh` and `multiboot`) and does not
//! program the vCPU: `Entry32::start_state` is what the backend loads.
//!
//! Guest-physical layout of a 32-bit boot:
//!
//! | range                 | contents                                                  |
//! |-----------------------|-----------------------------------------------------------|
//! | 0x500 .. 0x520        | GDT: null, null, 0x10 = 32-bit code, 0x18 = data          |
//! | 0x1000 .. 0x9FC00     | boot information, command lines, module lists, memory map |
//! | 0x9FC00 .. 0xA0000    | reserved                                                  |
//! | 0xE0000 .. 0x100000   | reserved: ACPI tables (RSDP at 0xE0000)                   |
//! | kernel (>= 1 MiB)     | the kernel's segments at their physical addresses         |
//! | after the kernel      | modules, each page-aligned, in order                      |

use alloc::vec::Vec;
use core::fmt;

use vcpu::{reg, Regs, StartState};

use super::acpi::AcpiBuildError;
use super::elf::ElfError;
use super::linux::{ACPI_ADDR, HIGH_MEMORY, LOW_RAM_END, MAX_RAM};
use crate::memory::{GuestMemory, OutOfRam};

pub const GDT_ADDR: u64 = 0x500;
pub const CODE_SELECTOR: u16 = 0x10;
pub const DATA_SELECTOR: u16 = 0x18;
/// Null, unused, code, data.
const GDT: [u64; 4] = [
    0,
    0,
    // Base 0, limit 4 GiB (G), present, DPL 0, execute/read, accessed, D = 1 (32-bit code).
    0x00CF_9B00_0000_FFFF,
    // Base 0, limit 4 GiB (G), present, DPL 0, read/write, accessed, B = 1.
    0x00CF_9300_0000_FFFF,
];

/// Start of the boot information area; it ends at `LOW_RAM_END`.
pub const INFO_START: u64 = 0x1000;

const PAGE: u64 = 0x1000;

/// E820 / `hvm_memmap_table_entry` / multiboot memory types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// The register state at a 32-bit entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry32 {
    pub eip: u32,
    pub eax: u32,
    pub ebx: u32,
}

impl Entry32 {
    /// PE and ET only: paging, caches-disable and the rest clear (PVH ABI, Multiboot 0.6.96
    /// §3.2); ET is fixed to 1 on every processor since the i486.
    pub const CR0: u64 = (1 << 0) | (1 << 4);
    /// Interrupts disabled; bit 1 is reserved and always set.
    pub const RFLAGS: u64 = 1 << 1;

    /// The vCPU state: flat 32-bit CS and data segments from the GDT at `GDT_ADDR`, CR4 = 0,
    /// EFER = 0, paging off.
    pub fn start_state(&self) -> StartState {
        let mut regs = Regs {
            rip: u64::from(self.eip),
            rflags: Self::RFLAGS,
            ..Regs::default()
        };
        regs.gpr[reg::RAX] = u64::from(self.eax);
        regs.gpr[reg::RBX] = u64::from(self.ebx);
        StartState {
            regs,
            cr0: Self::CR0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            gdt_base: GDT_ADDR,
            gdt_limit: (GDT.len() * 8 - 1) as u16,
            code_selector: CODE_SELECTOR,
            data_selector: DATA_SELECTOR,
            long_mode: false,
        }
    }
}

pub fn write_gdt(mem: &mut impl GuestMemory) -> Result<(), OutOfRam> {
    for (i, desc) in GDT.iter().enumerate() {
        mem.write_u64(GDT_ADDR + 8 * i as u64, *desc)?;
    }
    Ok(())
}

/// One range of the guest's memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    pub addr: u64,
    pub len: u64,
    pub kind: u32,
}

/// RAM below the EBDA, the reserved EBDA, the reserved ACPI and BIOS area, RAM from 1 MiB.
pub fn memory_map(ram_size: u64) -> [MemoryRange; 4] {
    let range = |addr: u64, end: u64, kind| MemoryRange {
        addr,
        len: end.saturating_sub(addr),
        kind,
    };
    [
        range(0, LOW_RAM_END, E820_RAM),
        range(LOW_RAM_END, 0xA0000, E820_RESERVED),
        range(ACPI_ADDR, HIGH_MEMORY, E820_RESERVED),
        range(HIGH_MEMORY, ram_size, E820_RAM),
    ]
}

/// The boot information area: hands out aligned pieces of `INFO_START..LOW_RAM_END`.
pub struct InfoArea {
    next: u64,
}

impl InfoArea {
    pub fn new() -> Self {
        Self { next: INFO_START }
    }

    /// Room for `len` bytes aligned to `align` (a power of two).
    pub fn alloc(&mut self, len: usize, align: u64) -> Result<u64, LoadError> {
        let start = self.next.next_multiple_of(align);
        let end = start
            .checked_add(len as u64)
            .filter(|&end| end <= LOW_RAM_END)
            .ok_or(LoadError::BootInfoTooLarge)?;
        self.next = end;
        Ok(start)
    }

    /// Writes `text` NUL-terminated and returns its address.
    pub fn put_str(&mut self, mem: &mut impl GuestMemory, text: &str) -> Result<u64, LoadError> {
        if text.as_bytes().contains(&0) {
            return Err(LoadError::StringHasNul);
        }
        let at = self.alloc(text.len() + 1, 1)?;
        mem.write(at, text.as_bytes())?;
        mem.write(at + text.len() as u64, &[0])?;
        Ok(at)
    }
}

impl Default for InfoArea {
    fn default() -> Self {
        Self::new()
    }
}

/// A boot module: its bytes and its command line (the first word names it).
#[derive(Clone, Copy, Debug)]
pub struct BootModule<'a> {
    pub data: &'a [u8],
    pub cmdline: &'a str,
}

/// Copies `modules` in order, each page-aligned, from the first page at or after `after`; all
/// must end within `ram_size`. Returns their addresses.
pub fn place_modules(
    mem: &mut impl GuestMemory,
    after: u64,
    ram_size: u64,
    modules: &[BootModule<'_>],
) -> Result<Vec<u64>, LoadError> {
    let mut next = after;
    let mut addrs = Vec::with_capacity(modules.len());
    for m in modules {
        let size = m.data.len() as u64;
        let at = next.next_multiple_of(PAGE);
        let end = at
            .checked_add(size)
            .filter(|&end| end <= ram_size)
            .ok_or(LoadError::ModulesDoNotFit { ram_size })?;
        mem.write(at, m.data)?;
        addrs.push(at);
        next = end;
    }
    Ok(addrs)
}

/// RAM must leave the 3..4 GiB MMIO hole alone.
pub fn check_ram_size(ram_size: u64) -> Result<(), LoadError> {
    if ram_size > MAX_RAM {
        return Err(LoadError::RamTooLarge { ram_size });
    }
    Ok(())
}

/// Why a PVH or multiboot kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    Elf(ElfError),
    /// `type = "pvh"` for an ELF without `XEN_ELFNOTE_PHYS32_ENTRY`.
    NoPvhNote,
    /// The note's descriptor is not a 4- or 8-byte address below 4 GiB.
    BadPvhNote,
    /// No multiboot header in the first 8 KiB.
    NoMultibootHeader,
    /// Header flag bits 2..15 ask for something this loader does not provide.
    UnsupportedMultibootFlags {
        flags: u32,
    },
    /// The a.out kludge addresses are inconsistent with each other or the file.
    BadMultibootAddresses,
    /// An entry point at or above 4 GiB cannot be reached in 32-bit mode.
    EntryAbove4GiB {
        entry: u64,
    },
    RamTooLarge {
        ram_size: u64,
    },
    BootInfoTooLarge,
    StringHasNul,
    ModulesDoNotFit {
        ram_size: u64,
    },
    Acpi(AcpiBuildError),
    OutOfRam(OutOfRam),
}

impl From<ElfError> for LoadError {
    fn from(e: ElfError) -> Self {
        Self::Elf(e)
    }
}

impl From<AcpiBuildError> for LoadError {
    fn from(e: AcpiBuildError) -> Self {
        Self::Acpi(e)
    }
}

impl From<OutOfRam> for LoadError {
    fn from(e: OutOfRam) -> Self {
        Self::OutOfRam(e)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Elf(e) => write!(f, "{e}"),
            Self::NoPvhNote => write!(
                f,
                "not a PVH kernel: no XEN_ELFNOTE_PHYS32_ENTRY note (type 18, owner \"Xen\")"
            ),
            Self::BadPvhNote => write!(
                f,
                "XEN_ELFNOTE_PHYS32_ENTRY note is not a 32-bit physical address"
            ),
            Self::NoMultibootHeader => {
                write!(f, "no multiboot header (magic 0x1BADB002) in the first 8 KiB")
            }
            Self::UnsupportedMultibootFlags { flags } => write!(
                f,
                "multiboot header flags {flags:#x} ask for features this monitor lacks (video mode or unknown bits)"
            ),
            Self::BadMultibootAddresses => {
                write!(f, "multiboot header load addresses do not fit the file")
            }
            Self::EntryAbove4GiB { entry } => {
                write!(f, "entry point {entry:#x} is not reachable in 32-bit mode")
            }
            Self::RamTooLarge { ram_size } => write!(
                f,
                "guest RAM of {} MiB exceeds the supported {} MiB (3..4 GiB is the MMIO hole)",
                ram_size >> 20,
                MAX_RAM >> 20
            ),
            Self::BootInfoTooLarge => write!(
                f,
                "boot information (command lines, module list) exceeds {:#x}..{LOW_RAM_END:#x}",
                INFO_START
            ),
            Self::StringHasNul => write!(f, "a command line contains a NUL byte"),
            Self::ModulesDoNotFit { ram_size } => write!(
                f,
                "the modules do not fit in guest RAM ({ram_size:#x} bytes) after the kernel"
            ),
            Self::Acpi(e) => write!(f, "{e}"),
            Self::OutOfRam(e) => write!(f, "guest-physical address {:#x} outside guest RAM", e.gpa),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestRam;
    use alloc::vec;

    #[test]
    fn start_state_is_flat_32_bit_protected_mode_without_paging() {
        let s = Entry32 {
            eip: 0x10_0000,
            eax: 0x2BAD_B002,
            ebx: 0x1000,
        }
        .start_state();
        assert!(!s.long_mode);
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x11, 0, 0, 0));
        assert_eq!(s.regs.rip, 0x10_0000);
        assert_eq!(s.regs.gpr[reg::RAX], 0x2BAD_B002);
        assert_eq!(s.regs.gpr[reg::RBX], 0x1000);
        assert_eq!(s.regs.rflags, 2, "IF clear");
        assert_eq!((s.code_selector, s.data_selector), (0x10, 0x18));
        assert_eq!((s.gdt_base, s.gdt_limit), (0x500, 31));
    }

    #[test]
    fn gdt_code_is_32_bit_and_flat() {
        let mut buf = vec![0u8; 0x1000];
        write_gdt(&mut GuestRam::new(&mut buf)).unwrap();
        let desc = |i: usize| u64::from_le_bytes(buf[0x500 + 8 * i..][..8].try_into().unwrap());
        let bit = |d: u64, b: u32| (d >> b) & 1;
        let code = desc(2);
        // Present, code, D = 1, L = 0, G = 1, limit 0xFFFFF (SDM Vol. 3A, 3.4.5).
        assert_eq!(
            (bit(code, 47), bit(code, 43), bit(code, 54), bit(code, 53)),
            (1, 1, 1, 0)
        );
        assert_eq!(
            (code & 0xFFFF, (code >> 48) & 0xF, bit(code, 55)),
            (0xFFFF, 0xF, 1)
        );
        let data = desc(3);
        assert_eq!((bit(data, 47), bit(data, 43), bit(data, 41)), (1, 0, 1));
    }

    #[test]
    fn memory_map_matches_the_linux_layout() {
        let map = memory_map(64 << 20);
        let tuples: Vec<_> = map.iter().map(|r| (r.addr, r.len, r.kind)).collect();
        assert_eq!(
            tuples,
            [
                (0, 0x9FC00, 1),
                (0x9FC00, 0x400, 2),
                (0xE0000, 0x20000, 2),
                (0x10_0000, (64 << 20) - 0x10_0000, 1)
            ]
        );
    }

    #[test]
    fn info_area_aligns_and_stops_below_the_ebda() {
        let mut buf = vec![0u8; 0xA0000];
        let mut area = InfoArea::new();
        assert_eq!(area.alloc(3, 8).unwrap(), 0x1000);
        assert_eq!(area.alloc(8, 8).unwrap(), 0x1008);
        let s = area.put_str(&mut GuestRam::new(&mut buf), "abc").unwrap();
        assert_eq!(s, 0x1010);
        assert_eq!(&buf[0x1010..0x1014], b"abc\0");
        let r = area.put_str(&mut GuestRam::new(&mut buf), "a\0b");
        assert_eq!(r, Err(LoadError::StringHasNul));
        assert_eq!(area.alloc(0x10_0000, 1), Err(LoadError::BootInfoTooLarge));
        assert_eq!(area.alloc(usize::MAX, 1), Err(LoadError::BootInfoTooLarge));
    }

    #[test]
    fn modules_are_page_aligned_in_order_and_must_fit() {
        let mut buf = vec![0u8; 0x20_0000];
        let (a, b) = (vec![1u8; 0x1001], vec![2u8; 0x10]);
        let mods = [
            BootModule {
                data: &a,
                cmdline: "a",
            },
            BootModule {
                data: &b,
                cmdline: "b x",
            },
        ];
        let addrs =
            place_modules(&mut GuestRam::new(&mut buf), 0x10_0010, 0x20_0000, &mods).unwrap();
        assert_eq!(addrs, [0x10_1000, 0x10_3000]);
        assert_eq!(buf[0x10_2000], 1);
        assert_eq!(buf[0x10_3000], 2);
        let r = place_modules(&mut GuestRam::new(&mut buf), 0x1F_F000, 0x20_0000, &mods);
        assert_eq!(
            r,
            Err(LoadError::ModulesDoNotFit {
                ram_size: 0x20_0000
            })
        );
    }
}
