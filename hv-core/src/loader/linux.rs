//! Loads a Linux bzImage for the 64-bit boot protocol (Documentation/arch/x86/boot.rst,
//! "64-bit Boot Protocol"): kernel, initrd, command line, zero page, ACPI tables, identity page
//! tables and a GDT in guest memory, and the register state the entry point expects.
//!
//! It does not run the real-mode setup code, the 32-bit entry or any firmware, and does not
//! program the vCPU: the backend loads `BootState` into it.
//!
//! Guest-physical layout:
//!
//! | range                 | contents                                                      |
//! |-----------------------|---------------------------------------------------------------|
//! | 0x500 .. 0x520        | GDT: null, null, 0x10 = 64-bit code, 0x18 = data              |
//! | 0x7000 .. 0x8000      | `struct boot_params` (the zero page)                          |
//! | 0x9000 .. 0xA000      | PML4 (entry 0 -> PDPT)                                        |
//! | 0xA000 .. 0xB000      | PDPT (entries 0..4 -> the page directories)                   |
//! | 0xB000 .. 0xF000      | 4 page directories: 0..4 GiB identity, 2 MiB pages, RW        |
//! | 0x20000 ..            | command line, NUL-terminated                                  |
//! | 0x9FC00 .. 0xA0000    | reserved (where a PC has its EBDA)                            |
//! | 0xE0000 .. 0x100000   | reserved: ACPI tables (RSDP at 0xE0000) and the BIOS area     |
//! | load .. +init_size    | protected-mode kernel at `pref_address` (else 1 MiB)          |
//! | top of RAM            | initrd, 4 KiB aligned, below `initrd_addr_max`                |
//!
//! RAM is one range at 0 and at most 3 GiB, so the 3..4 GiB MMIO hole (LAPIC, I/O APIC) never
//! overlaps it.

use core::fmt;
use core::ops::Range;

use super::acpi::{self, AcpiBuildError};
use super::boot32::memory_map;
use super::bzimage::{BzImage, BzImageError, CAN_USE_HEAP, SETUP_HEADER_START};
use crate::memory::{GuestMemory, OutOfRam};

pub const GDT_ADDR: u64 = 0x500;
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xA000;
/// First of the four page directories, one 4 KiB page each.
pub const PD_ADDR: u64 = 0xB000;
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const ACPI_ADDR: u64 = 0xE0000;
/// Conventional memory ends where a PC's EBDA starts.
pub const LOW_RAM_END: u64 = 0x9FC00;
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// Largest RAM size: the 3..4 GiB range is left to MMIO.
pub const MAX_RAM: u64 = 3 << 30;

/// `__BOOT_CS` and `__BOOT_DS`, which the 64-bit entry requires (boot.rst, 64-bit protocol).
pub const CODE_SELECTOR: u16 = 0x10;
pub const DATA_SELECTOR: u16 = 0x18;
/// Null, unused, code, data.
const GDT: [u64; 4] = [
    0,
    0,
    // Base 0, limit 4 GiB (G), present, DPL 0, execute/read, accessed, L = 1 (64-bit code).
    0x00AF_9B00_0000_FFFF,
    // Base 0, limit 4 GiB (G), present, DPL 0, read/write, accessed, D/B = 1.
    0x00CF_9300_0000_FFFF,
];

/// The 64-bit entry is 0x200 bytes into the protected-mode kernel (boot.rst, 64-bit protocol).
const ENTRY_64_OFFSET: u64 = 0x200;

/// boot_params offsets (Documentation/arch/x86/zero-page.rst and boot.rst).
mod zp {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0C0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0C4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0C8;
    pub const E820_ENTRIES: usize = 0x1E8;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21C;
    pub const HEAP_END_PTR: usize = 0x224;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const E820_TABLE: usize = 0x2D0;
    pub const SIZE: usize = 0x1000;
}

/// "Undefined" boot loader ID (boot.rst, `type_of_loader`).
const LOADER_UNDEFINED: u8 = 0xFF;
/// End of the setup heap minus 0x200, as boot loaders conventionally set it; the 64-bit entry
/// skips the real-mode code that would use it.
const HEAP_END_PTR: u16 = 0xFE00;
/// boot_params.acpi_rsdp_addr is honoured from protocol 2.14 on.
const RSDP_ADDR_PROTOCOL: u16 = 0x020E;

const PAGE: u64 = 0x1000;
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PDE_LARGE: u64 = 1 << 7;

/// Register state for the first instruction of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    pub rip: u64,
    /// Guest-physical address of `boot_params`.
    pub rsi: u64,
    pub cr3: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    /// CS; DS, ES, SS (and FS, GS) get `data_selector`. Both are flat, base 0.
    pub code_selector: u16,
    pub data_selector: u16,
}

impl BootState {
    /// PE | MP | ET | NE | WP | PG.
    pub const CR0: u64 = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
    /// PAE.
    pub const CR4: u64 = 1 << 5;
    /// LME | LMA.
    pub const EFER: u64 = (1 << 8) | (1 << 10);
    /// Interrupts disabled (boot.rst requires it); bit 1 is reserved and always set.
    pub const RFLAGS: u64 = 1 << 1;
}

/// Why a kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    Image(BzImageError),
    /// RAM above `MAX_RAM` would overlap the MMIO hole below 4 GiB.
    RamTooLarge {
        ram_size: u64,
    },
    /// The kernel needs RAM up to `needed` while it decompresses and initialises.
    RamTooSmall {
        ram_size: u64,
        needed: u64,
    },
    CmdlineTooLong {
        len: usize,
        max: usize,
    },
    CmdlineHasNul,
    /// No 4 KiB-aligned place for the initrd below `limit` outside the kernel.
    InitrdDoesNotFit {
        size: u64,
        limit: u64,
    },
    Acpi(AcpiBuildError),
    OutOfRam(OutOfRam),
}

impl From<BzImageError> for LoadError {
    fn from(e: BzImageError) -> Self {
        Self::Image(e)
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
            Self::Image(e) => write!(f, "{e}"),
            Self::RamTooLarge { ram_size } => write!(
                f,
                "guest RAM of {} MiB exceeds the supported {} MiB (3..4 GiB is the MMIO hole)",
                ram_size >> 20,
                MAX_RAM >> 20
            ),
            Self::RamTooSmall { ram_size, needed } => write!(
                f,
                "guest RAM of {ram_size:#x} bytes too small: the kernel needs up to {needed:#x}"
            ),
            Self::CmdlineTooLong { len, max } => {
                write!(f, "kernel command line of {len} bytes exceeds the kernel's {max}")
            }
            Self::CmdlineHasNul => write!(f, "kernel command line contains a NUL byte"),
            Self::InitrdDoesNotFit { size, limit } => write!(
                f,
                "initrd of {size} bytes does not fit in guest RAM below {limit:#x} beside the kernel"
            ),
            Self::Acpi(e) => write!(f, "{e}"),
            Self::OutOfRam(e) => write!(f, "guest-physical address {:#x} outside guest RAM", e.gpa),
        }
    }
}

/// Loads `kernel` (a bzImage), `initrd` and `cmdline` into `mem`, whose first `ram_size` bytes
/// are the guest's RAM, with ACPI tables for `vcpus` processors; returns the entry state.
pub fn load_linux(
    mem: &mut impl GuestMemory,
    ram_size: u64,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    vcpus: u32,
) -> Result<BootState, LoadError> {
    if ram_size > MAX_RAM {
        return Err(LoadError::RamTooLarge { ram_size });
    }
    let image = BzImage::parse(kernel)?;
    check_cmdline(cmdline, image.header.cmdline_size)?;
    let kernel_region = kernel_region(&image, ram_size)?;
    let initrd = initrd
        .map(|rd| place_initrd(rd.len() as u64, &image, ram_size, &kernel_region).map(|a| (a, rd)))
        .transpose()?;

    mem.write(kernel_region.start, image.payload)?;
    if let Some((addr, rd)) = initrd {
        mem.write(addr, rd)?;
    }
    mem.write(CMDLINE_ADDR, cmdline.as_bytes())?;
    mem.write(CMDLINE_ADDR + cmdline.len() as u64, &[0])?;
    write_gdt(mem)?;
    write_page_tables(mem)?;
    let rsdp = acpi::build_acpi(mem, ACPI_ADDR, vcpus)?;

    let mut zero_page = [0u8; zp::SIZE];
    fill_boot_params(&mut zero_page, &image, ram_size, rsdp);
    if let Some((addr, rd)) = initrd {
        let (size, page) = (rd.len() as u64, &mut zero_page);
        put_u64_split(page, zp::RAMDISK_IMAGE, zp::EXT_RAMDISK_IMAGE, addr);
        put_u64_split(page, zp::RAMDISK_SIZE, zp::EXT_RAMDISK_SIZE, size);
    }
    mem.write(BOOT_PARAMS_ADDR, &zero_page)?;

    Ok(BootState {
        rip: kernel_region.start + ENTRY_64_OFFSET,
        rsi: BOOT_PARAMS_ADDR,
        cr3: PML4_ADDR,
        gdt_base: GDT_ADDR,
        gdt_limit: (GDT.len() * 8 - 1) as u16,
        code_selector: CODE_SELECTOR,
        data_selector: DATA_SELECTOR,
    })
}

/// The command line must fit the kernel's `cmdline_size` and the space below the EBDA.
fn check_cmdline(cmdline: &str, cmdline_size: u32) -> Result<(), LoadError> {
    let room = (LOW_RAM_END - CMDLINE_ADDR - 1) as usize;
    let max = usize::try_from(cmdline_size).map_or(room, |m| m.min(room));
    if cmdline.len() > max {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(LoadError::CmdlineHasNul);
    }
    Ok(())
}

/// Where the kernel is loaded and the memory it claims. It goes at `pref_address` when that is
/// above 1 MiB and leaves room for `init_size`, otherwise at 1 MiB. The 64-bit entry then runs
/// the kernel from `max(align_up(load, kernel_alignment), pref_address)` (pref_address is
/// LOAD_PHYSICAL_ADDR) for `init_size` bytes (arch/x86/boot/compressed/head_64.S,
/// `startup_64`), so the region reaches that far.
fn kernel_region(image: &BzImage<'_>, ram_size: u64) -> Result<Range<u64>, LoadError> {
    let h = &image.header;
    let need = u64::from(h.init_size).max(image.payload.len() as u64);
    let fits = |addr: u64| addr.checked_add(need).is_some_and(|end| end <= ram_size);
    let load = if h.pref_address >= HIGH_MEMORY && fits(h.pref_address) {
        h.pref_address
    } else {
        HIGH_MEMORY
    };
    let align = u64::from(h.kernel_alignment).max(1);
    let run = if align.is_power_of_two() {
        (load + align - 1) & !(align - 1)
    } else {
        load
    };
    let needed = run.max(h.pref_address).saturating_add(need);
    if needed > ram_size {
        return Err(LoadError::RamTooSmall { ram_size, needed });
    }
    Ok(load..needed)
}

/// The highest 4 KiB-aligned address below `min(ram_size, initrd_addr_max + 1)` where `size`
/// bytes avoid the kernel's region; below the kernel if the top overlaps it; never below 1 MiB.
fn place_initrd(
    size: u64,
    image: &BzImage<'_>,
    ram_size: u64,
    kernel: &Range<u64>,
) -> Result<u64, LoadError> {
    let limit = ram_size.min(u64::from(image.header.initrd_addr_max) + 1);
    let below = |end: u64| end.checked_sub(size).map(|a| a & !(PAGE - 1));
    let overlaps = |a: u64| a < kernel.end && a + size > kernel.start;
    let addr = match below(limit) {
        Some(a) if overlaps(a) => below(kernel.start),
        other => other,
    };
    addr.filter(|&a| a >= HIGH_MEMORY)
        .ok_or(LoadError::InitrdDoesNotFit { size, limit })
}

fn write_gdt(mem: &mut impl GuestMemory) -> Result<(), OutOfRam> {
    for (i, desc) in GDT.iter().enumerate() {
        mem.write_u64(GDT_ADDR + 8 * i as u64, *desc)?;
    }
    Ok(())
}

/// Identity map of 0..4 GiB: PML4[0] -> PDPT, PDPT[0..4] -> four page directories of 2 MiB
/// pages (Intel SDM Vol. 3A, 4.5 "4-Level Paging").
fn write_page_tables(mem: &mut impl GuestMemory) -> Result<(), OutOfRam> {
    let table = PTE_PRESENT | PTE_WRITABLE;
    mem.write(PML4_ADDR, &[0; PAGE as usize])?;
    mem.write_u64(PML4_ADDR, PDPT_ADDR | table)?;
    mem.write(PDPT_ADDR, &[0; PAGE as usize])?;
    let mut pd = [0u8; PAGE as usize];
    for gib in 0..4u64 {
        let pd_addr = PD_ADDR + gib * PAGE;
        mem.write_u64(PDPT_ADDR + gib * 8, pd_addr | table)?;
        for (i, entry) in pd.chunks_exact_mut(8).enumerate() {
            let frame = (gib << 30) | ((i as u64) << 21);
            entry.copy_from_slice(&(frame | table | PDE_LARGE).to_le_bytes());
        }
        mem.write(pd_addr, &pd)?;
    }
    Ok(())
}

/// The zero page: the image's setup header, what the loader fills in, and the E820 map.
fn fill_boot_params(zero_page: &mut [u8; zp::SIZE], image: &BzImage<'_>, ram_size: u64, rsdp: u64) {
    let hdr = image.setup_header_bytes;
    zero_page[SETUP_HEADER_START..SETUP_HEADER_START + hdr.len()].copy_from_slice(hdr);
    zero_page[zp::TYPE_OF_LOADER] = LOADER_UNDEFINED;
    zero_page[zp::LOADFLAGS] |= CAN_USE_HEAP;
    put(zero_page, zp::HEAP_END_PTR, &HEAP_END_PTR.to_le_bytes());
    put_u64_split(
        zero_page,
        zp::CMD_LINE_PTR,
        zp::EXT_CMD_LINE_PTR,
        CMDLINE_ADDR,
    );
    if image.header.version >= RSDP_ADDR_PROTOCOL {
        put(zero_page, zp::ACPI_RSDP_ADDR, &rsdp.to_le_bytes());
    }
    let e820 = memory_map(ram_size);
    zero_page[zp::E820_ENTRIES] = e820.len() as u8;
    for (i, range) in e820.into_iter().enumerate() {
        let at = zp::E820_TABLE + 20 * i;
        put(zero_page, at, &range.addr.to_le_bytes());
        put(zero_page, at + 8, &range.len.to_le_bytes());
        put(zero_page, at + 16, &range.kind.to_le_bytes());
    }
}

fn put(zero_page: &mut [u8; zp::SIZE], at: usize, bytes: &[u8]) {
    zero_page[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A 64-bit value stored as a 32-bit field plus its `ext_` high half.
fn put_u64_split(zero_page: &mut [u8; zp::SIZE], low: usize, high: usize, value: u64) {
    put(zero_page, low, &(value as u32).to_le_bytes());
    put(zero_page, high, &((value >> 32) as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::bzimage::testimage;
    use crate::loader::testbuf::{u32_at, u64_at};
    use crate::memory::GuestRam;
    use alloc::vec;
    use alloc::vec::Vec;

    const RAM: u64 = 32 << 20;
    const PREF: u64 = 16 << 20;
    const INIT_SIZE: u32 = 4 << 20;

    fn kernel() -> Vec<u8> {
        testimage::build(0x3000, PREF, INIT_SIZE)
    }

    fn zp(field: usize) -> u64 {
        BOOT_PARAMS_ADDR + field as u64
    }

    fn load(
        ram_size: u64,
        kernel: &[u8],
        initrd: Option<&[u8]>,
        cmdline: &str,
    ) -> (Vec<u8>, Result<BootState, LoadError>) {
        let mut buf = vec![0u8; ram_size as usize];
        let r = load_linux(
            &mut GuestRam::new(&mut buf),
            ram_size,
            kernel,
            initrd,
            cmdline,
            2,
        );
        (buf, r)
    }

    #[test]
    fn boot_state_enters_64_bit_kernel_at_pref_address() {
        let (_, r) = load(RAM, &kernel(), None, "console=ttyS0");
        let s = r.unwrap();
        assert_eq!(s.rip, PREF + 0x200);
        assert_eq!(s.rsi, 0x7000);
        assert_eq!(s.cr3, 0x9000);
        assert_eq!((s.gdt_base, s.gdt_limit), (0x500, 31));
        assert_eq!((s.code_selector, s.data_selector), (0x10, 0x18));
        assert_eq!(BootState::CR0, 0x8001_0033);
        assert_eq!(BootState::CR4, 0x20);
        assert_eq!(BootState::EFER, 0x500);
    }

    #[test]
    fn kernel_payload_lands_at_the_load_address() {
        let img = kernel();
        let (buf, _) = load(RAM, &img, None, "");
        let payload = &img[testimage::SETUP_LEN..];
        assert_eq!(&buf[PREF as usize..][..payload.len()], payload);
    }

    #[test]
    fn falls_back_to_1_mib_when_pref_address_is_low() {
        let img = testimage::build(0x3000, 0x8000, INIT_SIZE);
        let (buf, r) = load(RAM, &img, None, "");
        assert_eq!(r.unwrap().rip, HIGH_MEMORY + 0x200);
        assert_eq!(buf[HIGH_MEMORY as usize + 1], 1);
    }

    #[test]
    fn boot_params_carry_header_loader_fields_and_cmdline() {
        let img = kernel();
        let (buf, r) = load(RAM, &img, None, "console=ttyS0 quiet");
        r.unwrap();
        // The setup header is copied from the image (here: setup_sects, magic, version).
        assert_eq!(buf[zp(0x1f1) as usize], testimage::SETUP_SECTS);
        assert_eq!(&buf[zp(0x202) as usize..][..4], b"HdrS");
        assert_eq!(u32_at(&buf, zp(0x260)), INIT_SIZE);
        assert_eq!(buf[zp(zp::TYPE_OF_LOADER) as usize], 0xFF);
        assert_eq!(buf[zp(zp::LOADFLAGS) as usize], 0x81);
        assert_eq!(u32_at(&buf, zp(zp::HEAP_END_PTR)) & 0xffff, 0xFE00);
        assert_eq!(u32_at(&buf, zp(zp::CMD_LINE_PTR)), 0x20000);
        assert_eq!(u32_at(&buf, zp(zp::EXT_CMD_LINE_PTR)), 0);
        assert_eq!(&buf[0x20000..0x20000 + 20], b"console=ttyS0 quiet\0");
        assert_eq!(u64_at(&buf, zp(zp::ACPI_RSDP_ADDR)), 0xE0000);
        assert_eq!(&buf[0xE0000..0xE0008], b"RSD PTR ");
        assert_eq!(u32_at(&buf, zp(zp::RAMDISK_IMAGE)), 0);
    }

    #[test]
    fn e820_map_describes_ram_and_holes() {
        let (buf, r) = load(RAM, &kernel(), None, "");
        r.unwrap();
        assert_eq!(buf[zp(zp::E820_ENTRIES) as usize], 4);
        let entry = |i: u64| {
            let at = zp(zp::E820_TABLE) + 20 * i;
            (
                u64_at(&buf, at),
                u64_at(&buf, at + 8),
                u32_at(&buf, at + 16),
            )
        };
        assert_eq!(entry(0), (0, 0x9FC00, 1));
        assert_eq!(entry(1), (0x9FC00, 0x400, 2));
        assert_eq!(entry(2), (0xE0000, 0x20000, 2));
        assert_eq!(entry(3), (0x100000, RAM - 0x100000, 1));
    }

    #[test]
    fn initrd_sits_page_aligned_at_the_top_of_ram() {
        let rd: Vec<u8> = (0..0x1234u32).map(|i| i as u8).collect();
        let (buf, r) = load(RAM, &kernel(), Some(&rd), "");
        r.unwrap();
        let addr = u64::from(u32_at(&buf, zp(zp::RAMDISK_IMAGE)));
        assert_eq!(addr, (RAM - 0x1234) & !0xfff);
        assert_eq!(u32_at(&buf, zp(zp::RAMDISK_SIZE)), 0x1234);
        assert_eq!(u32_at(&buf, zp(zp::EXT_RAMDISK_IMAGE)), 0);
        assert_eq!(&buf[addr as usize..][..rd.len()], &rd[..]);
    }

    #[test]
    fn initrd_respects_initrd_addr_max_and_avoids_the_kernel() {
        let mut img = kernel();
        // initrd_addr_max just above the kernel's region: the top spot would overlap it.
        let max = PREF + u64::from(INIT_SIZE) + 0x1000 - 1;
        testimage::put(&mut img, 0x22c, &(max as u32).to_le_bytes());
        let rd = vec![7u8; 0x3000];
        let (buf, r) = load(RAM, &img, Some(&rd), "");
        r.unwrap();
        let addr = u64::from(u32_at(&buf, zp(zp::RAMDISK_IMAGE)));
        assert_eq!(addr, PREF - 0x3000);
    }

    #[test]
    fn initrd_too_big_is_an_error() {
        let rd = vec![0u8; 20 << 20];
        let (_, r) = load(RAM, &kernel(), Some(&rd), "");
        assert_eq!(
            r,
            Err(LoadError::InitrdDoesNotFit {
                size: 20 << 20,
                limit: RAM
            })
        );
    }

    #[test]
    fn cmdline_limits_are_enforced() {
        let long = "x".repeat(2049);
        let (_, r) = load(RAM, &kernel(), None, &long);
        assert_eq!(
            r,
            Err(LoadError::CmdlineTooLong {
                len: 2049,
                max: 2048
            })
        );
        let (_, r) = load(RAM, &kernel(), None, &"x".repeat(2048));
        assert!(r.is_ok());
        let (_, r) = load(RAM, &kernel(), None, "a\0b");
        assert_eq!(r, Err(LoadError::CmdlineHasNul));
    }

    #[test]
    fn kernel_region_covers_where_the_kernel_moves_itself() {
        // pref_address too high for RAM: loaded at 1 MiB, but the kernel would run at 16 MiB.
        let img = testimage::build(0x3000, 64 << 20, INIT_SIZE);
        let (_, r) = load(RAM, &img, None, "");
        let needed = (64 << 20) + u64::from(INIT_SIZE);
        assert_eq!(
            r,
            Err(LoadError::RamTooSmall {
                ram_size: RAM,
                needed
            })
        );
        // Loaded at 1 MiB, it runs from 2 MiB (kernel_alignment): the initrd must stay clear.
        let img = testimage::build(0x3000, 0, INIT_SIZE);
        let top = 2 * (1 << 20) + u64::from(INIT_SIZE);
        let rd = vec![1u8; (RAM - top) as usize + 1];
        let (_, r) = load(RAM, &img, Some(&rd), "");
        assert!(matches!(r, Err(LoadError::InitrdDoesNotFit { .. })));
        let rd = vec![1u8; (RAM - top) as usize];
        let (buf, r) = load(RAM, &img, Some(&rd), "");
        r.unwrap();
        assert_eq!(u64::from(u32_at(&buf, zp(zp::RAMDISK_IMAGE))), top);
    }

    #[test]
    fn ram_size_is_checked() {
        let (_, r) = load(PREF + 0x1000, &kernel(), None, "");
        assert_eq!(
            r,
            Err(LoadError::RamTooSmall {
                ram_size: PREF + 0x1000,
                needed: PREF + u64::from(INIT_SIZE)
            })
        );
        let mut buf = vec![0u8; 0x1000];
        let r = load_linux(
            &mut GuestRam::new(&mut buf),
            4 << 30,
            &kernel(),
            None,
            "",
            1,
        );
        assert_eq!(r, Err(LoadError::RamTooLarge { ram_size: 4 << 30 }));
        assert!(alloc::format!("{}", r.unwrap_err()).contains("3072 MiB"));
    }

    #[test]
    fn corrupt_kernel_is_an_image_error() {
        let mut img = kernel();
        img[0x202] = 0;
        let (_, r) = load(RAM, &img, None, "");
        assert_eq!(r, Err(LoadError::Image(BzImageError::BadMagic)));
    }

    #[test]
    fn page_tables_identity_map_4_gib_with_2_mib_pages() {
        let (buf, r) = load(RAM, &kernel(), None, "");
        r.unwrap();
        assert_eq!(u64_at(&buf, 0x9000), 0xA000 | 3);
        assert_eq!(u64_at(&buf, 0x9008), 0);
        for gib in 0..4 {
            assert_eq!(u64_at(&buf, 0xA000 + 8 * gib), (0xB000 + 0x1000 * gib) | 3);
        }
        assert_eq!(u64_at(&buf, 0xA020), 0);
        assert_eq!(u64_at(&buf, 0xB000), 0x83);
        assert_eq!(u64_at(&buf, 0xB008), 0x20_0000 | 0x83);
        // The last 2 MiB page below 4 GiB, in the fourth directory.
        assert_eq!(u64_at(&buf, 0xEFF8), 0xFFE0_0000 | 0x83);
    }

    #[test]
    fn gdt_has_flat_64_bit_code_and_data() {
        let (buf, r) = load(RAM, &kernel(), None, "");
        r.unwrap();
        assert_eq!(u64_at(&buf, 0x500), 0);
        let code = u64_at(&buf, 0x510);
        let data = u64_at(&buf, 0x518);
        let bit = |d: u64, b: u32| (d >> b) & 1;
        // Code: present, S = 1, type execute/read, L = 1, D = 0 (SDM Vol. 3A, 3.4.5).
        assert_eq!((bit(code, 47), bit(code, 44), bit(code, 43)), (1, 1, 1));
        assert_eq!((bit(code, 53), bit(code, 54)), (1, 0));
        // Data: present, S = 1, not code, writable.
        assert_eq!(
            (bit(data, 47), bit(data, 44), bit(data, 43), bit(data, 41)),
            (1, 1, 0, 1)
        );
    }

    #[test]
    fn a_short_guest_buffer_gives_out_of_ram() {
        let mut buf = vec![0u8; 0x10_0000];
        let r = load_linux(&mut GuestRam::new(&mut buf), RAM, &kernel(), None, "", 1);
        assert!(matches!(r, Err(LoadError::OutOfRam(_))));
    }
}
