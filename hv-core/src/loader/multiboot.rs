//! Loads a Multiboot (version 1) kernel as the Multiboot Specification 0.6.96 describes: the
//! header in the first 8 KiB (§3.1), the kernel loaded from its ELF program headers or, when
//! header flag 16 is set, from the a.out kludge address fields (§3.1.3), boot modules after it,
//! and the boot information (§3.3: memory sizes, command line, modules, memory map, loader
//! name) at `%ebx` with `%eax = 0x2BADB002`, entered in 32-bit flat protected mode with paging
//! off (§3.2).
//!
//! It is not a Multiboot2 loader and sets no video mode. The layout in guest memory is
//! `boot32`'s; ACPI tables are at 0xE0000 for a guest that scans for the RSDP.

use alloc::vec::Vec;

use super::acpi;
use super::boot32::{
    check_ram_size, memory_map, place_modules, write_gdt, BootModule, Entry32, InfoArea, LoadError,
    MemoryRange,
};
use super::elf::{load_segments, ElfImage, Segment};
use super::linux::{ACPI_ADDR, HIGH_MEMORY, LOW_RAM_END};
use crate::memory::GuestMemory;

pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// What the kernel finds in EAX (§3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header lies 4-byte aligned within the first 8192 bytes of the image (§3.1.1).
const SEARCH_LEN: usize = 8192;

/// Header flags (§3.1.2).
pub mod header_flags {
    pub const PAGE_ALIGN: u32 = 1 << 0;
    pub const MEMORY_INFO: u32 = 1 << 1;
    pub const VIDEO_MODE: u32 = 1 << 2;
    pub const AOUT_KLUDGE: u32 = 1 << 16;
    /// Bits 0..15 are requirements a loader must refuse when it cannot meet them.
    pub const REQUIRED_MASK: u32 = 0xFFFF;
    pub const SUPPORTED: u32 = PAGE_ALIGN | MEMORY_INFO;
}

/// Boot information flags (§3.3).
pub mod info_flags {
    pub const MEMORY: u32 = 1 << 0;
    pub const CMDLINE: u32 = 1 << 2;
    pub const MODS: u32 = 1 << 3;
    pub const MMAP: u32 = 1 << 6;
    pub const LOADER_NAME: u32 = 1 << 9;
}

/// Bytes of `multiboot_info` up to and including the framebuffer fields (§3.3).
pub const INFO_LEN: usize = 116;
pub const MODULE_ENTRY_LEN: usize = 16;
/// An mmap entry: `size` (20, not counting itself), `base_addr`, `length`, `type`.
pub const MMAP_ENTRY_LEN: usize = 24;
const LOADER_NAME: &str = "hv";

/// The a.out kludge fields (§3.1.3), all physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AoutAddresses {
    pub header_addr: u32,
    pub load_addr: u32,
    /// 0: to the end of the file.
    pub load_end_addr: u32,
    /// 0: no bss.
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

/// A multiboot header found in an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Offset of the magic in the image.
    pub offset: usize,
    pub flags: u32,
    /// Present when flag 16 is set.
    pub aout: Option<AoutAddresses>,
}

impl Header {
    /// The first valid header (magic, checksum) in the first 8 KiB of `image`.
    pub fn find(image: &[u8]) -> Result<Self, LoadError> {
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?))
        };
        let search = image.len().min(SEARCH_LEN);
        for offset in (0..search.saturating_sub(11)).step_by(4) {
            let (Some(magic), Some(flags), Some(sum)) =
                (word(offset), word(offset + 4), word(offset + 8))
            else {
                break;
            };
            if magic != HEADER_MAGIC || magic.wrapping_add(flags).wrapping_add(sum) != 0 {
                continue;
            }
            let aout = if flags & header_flags::AOUT_KLUDGE != 0 {
                let f =
                    |i: usize| word(offset + 12 + 4 * i).ok_or(LoadError::BadMultibootAddresses);
                Some(AoutAddresses {
                    header_addr: f(0)?,
                    load_addr: f(1)?,
                    load_end_addr: f(2)?,
                    bss_end_addr: f(3)?,
                    entry_addr: f(4)?,
                })
            } else {
                None
            };
            return Ok(Self {
                offset,
                flags,
                aout,
            });
        }
        Err(LoadError::NoMultibootHeader)
    }
}

/// The one segment the a.out kludge describes and its entry point (§3.1.3): the file from
/// `offset - (header_addr - load_addr)` is loaded at `load_addr` up to `load_end_addr` (or the
/// file's end), then zeros up to `bss_end_addr`.
fn aout_segment<'a>(
    image: &'a [u8],
    offset: usize,
    a: &AoutAddresses,
) -> Result<(Segment<'a>, u32), LoadError> {
    let bad = LoadError::BadMultibootAddresses;
    let before_header = a.header_addr.checked_sub(a.load_addr).ok_or(bad)? as usize;
    let start = offset.checked_sub(before_header).ok_or(bad)?;
    let file_len = if a.load_end_addr == 0 {
        image.len() - start
    } else {
        a.load_end_addr.checked_sub(a.load_addr).ok_or(bad)? as usize
    };
    let data = image
        .get(start..start.checked_add(file_len).ok_or(bad)?)
        .ok_or(bad)?;
    let load_end = u64::from(a.load_addr) + file_len as u64;
    let mem_end = match a.bss_end_addr {
        0 => load_end,
        end if u64::from(end) >= load_end => u64::from(end),
        _ => return Err(bad),
    };
    let memsz = mem_end.checked_sub(u64::from(a.load_addr)).ok_or(bad)?;
    let segment = Segment {
        paddr: u64::from(a.load_addr),
        vaddr: u64::from(a.load_addr),
        memsz,
        data,
    };
    Ok((segment, a.entry_addr))
}

/// The physical entry point of an ELF kernel: `e_entry` translated through the segment whose
/// virtual range holds it (as GRUB does for kernels linked high), else taken as is.
fn elf_entry(elf: &ElfImage<'_>) -> Result<u32, LoadError> {
    let entry = elf
        .segments
        .iter()
        .find(|s| s.vaddr <= elf.entry && elf.entry - s.vaddr < s.memsz)
        .map_or(elf.entry, |s| s.paddr + (elf.entry - s.vaddr));
    u32::try_from(entry).map_err(|_| LoadError::EntryAbove4GiB { entry })
}

/// Loads the multiboot kernel `kernel` (its bytes and its command line, which by convention
/// starts with its name) and `modules` into `mem`, whose first `ram_size` bytes are RAM, with
/// ACPI tables for `vcpus` processors; returns the entry state.
pub fn load_multiboot(
    mem: &mut impl GuestMemory,
    ram_size: u64,
    kernel: BootModule<'_>,
    modules: &[BootModule<'_>],
    vcpus: u32,
) -> Result<Entry32, LoadError> {
    check_ram_size(ram_size)?;
    let header = Header::find(kernel.data)?;
    let unsupported = header.flags & header_flags::REQUIRED_MASK & !header_flags::SUPPORTED;
    if unsupported != 0 {
        return Err(LoadError::UnsupportedMultibootFlags {
            flags: header.flags,
        });
    }
    let (segments, entry) = match &header.aout {
        Some(a) => {
            let (segment, entry) = aout_segment(kernel.data, header.offset, a)?;
            (Vec::from([segment]), entry)
        }
        None => {
            let elf = ElfImage::parse(kernel.data)?;
            let entry = elf_entry(&elf)?;
            (elf.segments, entry)
        }
    };
    load_segments(mem, &segments, HIGH_MEMORY..ram_size)?;
    let kernel_end = segments.iter().map(|s| s.range().end).max().unwrap_or(0);
    let module_addrs = place_modules(mem, kernel_end, ram_size, modules)?;
    write_gdt(mem)?;
    acpi::build_acpi(mem, ACPI_ADDR, vcpus)?;

    let mut area = InfoArea::new();
    let info_addr = area.alloc(INFO_LEN, 8)?;
    let cmdline = area.put_str(mem, kernel.cmdline)?;
    let loader_name = area.put_str(mem, LOADER_NAME)?;
    let mods = write_modules(mem, &mut area, modules, &module_addrs)?;
    let map = memory_map(ram_size);
    let mmap = area.alloc(map.len() * MMAP_ENTRY_LEN, 8)?;
    for (i, r) in map.iter().enumerate() {
        mem.write(mmap + (i * MMAP_ENTRY_LEN) as u64, &mmap_entry(r))?;
    }
    let info = Info {
        mem_lower_kib: (LOW_RAM_END >> 10) as u32,
        mem_upper_kib: (ram_size.saturating_sub(HIGH_MEMORY) >> 10) as u32,
        cmdline: cmdline as u32,
        mods_count: modules.len() as u32,
        mods_addr: mods as u32,
        mmap_length: (map.len() * MMAP_ENTRY_LEN) as u32,
        mmap_addr: mmap as u32,
        boot_loader_name: loader_name as u32,
    };
    mem.write(info_addr, &info.to_bytes())?;
    Ok(Entry32 {
        eip: entry,
        eax: BOOTLOADER_MAGIC,
        ebx: info_addr as u32,
    })
}

/// The module list: start, end (exclusive) and command line of each module.
fn write_modules(
    mem: &mut impl GuestMemory,
    area: &mut InfoArea,
    modules: &[BootModule<'_>],
    addrs: &[u64],
) -> Result<u64, LoadError> {
    let list = area.alloc(modules.len() * MODULE_ENTRY_LEN, 4)?;
    for (i, (m, &start)) in modules.iter().zip(addrs).enumerate() {
        let string = area.put_str(mem, m.cmdline)?;
        let end = start + m.data.len() as u64;
        let mut e = [0u8; MODULE_ENTRY_LEN];
        e[0..4].copy_from_slice(&(start as u32).to_le_bytes());
        e[4..8].copy_from_slice(&(end as u32).to_le_bytes());
        e[8..12].copy_from_slice(&(string as u32).to_le_bytes());
        mem.write(list + (i * MODULE_ENTRY_LEN) as u64, &e)?;
    }
    Ok(list)
}

fn mmap_entry(r: &MemoryRange) -> [u8; MMAP_ENTRY_LEN] {
    let mut e = [0u8; MMAP_ENTRY_LEN];
    e[0..4].copy_from_slice(&((MMAP_ENTRY_LEN - 4) as u32).to_le_bytes());
    e[4..12].copy_from_slice(&r.addr.to_le_bytes());
    e[12..20].copy_from_slice(&r.len.to_le_bytes());
    e[20..24].copy_from_slice(&r.kind.to_le_bytes());
    e
}

/// The fields of `multiboot_info` this loader fills in; every address below 4 GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    pub mem_lower_kib: u32,
    pub mem_upper_kib: u32,
    pub cmdline: u32,
    pub mods_count: u32,
    pub mods_addr: u32,
    pub mmap_length: u32,
    pub mmap_addr: u32,
    pub boot_loader_name: u32,
}

impl Info {
    pub const FLAGS: u32 = info_flags::MEMORY
        | info_flags::CMDLINE
        | info_flags::MODS
        | info_flags::MMAP
        | info_flags::LOADER_NAME;

    /// The structure as the guest reads it; the fields not listed stay 0.
    pub fn to_bytes(&self) -> [u8; INFO_LEN] {
        let mut b = [0u8; INFO_LEN];
        let fields = [
            (0, Self::FLAGS),
            (4, self.mem_lower_kib),
            (8, self.mem_upper_kib),
            (16, self.cmdline),
            (20, self.mods_count),
            (24, self.mods_addr),
            (44, self.mmap_length),
            (48, self.mmap_addr),
            (64, self.boot_loader_name),
        ];
        for (at, v) in fields {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::elf::testelf::{build, load};
    use crate::loader::elf::ElfError;
    use crate::loader::testbuf::{cstr, u32_at, u64_at};
    use crate::memory::GuestRam;
    use alloc::vec;

    const RAM: u64 = 16 << 20;

    fn header(flags: u32, aout: [u32; 5]) -> Vec<u8> {
        let mut h = Vec::new();
        for w in [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags),
        ] {
            h.extend_from_slice(&w.to_le_bytes());
        }
        if flags & header_flags::AOUT_KLUDGE != 0 {
            for w in aout {
                h.extend_from_slice(&w.to_le_bytes());
            }
        }
        h
    }

    /// A flat a.out-kludge kernel loaded at 1 MiB: 0x40 bytes of code, the header at 0x40,
    /// 0x100 bytes in the file, bss to 1 MiB + 0x2000, entry at 1 MiB + 0x10.
    fn aout_kernel() -> Vec<u8> {
        let mut k = vec![0x90u8; 0x40];
        let base = 0x10_0000;
        k.extend(header(
            0x0001_0003,
            [base + 0x40, base, 0, base + 0x2000, base + 0x10],
        ));
        k.resize(0x100, 0xCC);
        k
    }

    fn run(
        image: &[u8],
        cmdline: &str,
        modules: &[BootModule<'_>],
    ) -> (Vec<u8>, Result<Entry32, LoadError>) {
        let mut buf = vec![0xEEu8; RAM as usize];
        let kernel = BootModule {
            data: image,
            cmdline,
        };
        let r = load_multiboot(&mut GuestRam::new(&mut buf), RAM, kernel, modules, 1);
        (buf, r)
    }

    #[test]
    fn header_scan_finds_valid_headers_only() {
        let mut img = vec![0u8; 0x30];
        // A magic with a wrong checksum first, then a valid header.
        img[4..8].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        img.extend(header(3, [0; 5]));
        let h = Header::find(&img).unwrap();
        assert_eq!((h.offset, h.flags, h.aout), (0x30, 3, None));
        // Not 4-byte aligned: not found.
        let mut odd = vec![0u8; 2];
        odd.extend(header(3, [0; 5]));
        assert_eq!(Header::find(&odd), Err(LoadError::NoMultibootHeader));
        // Beyond the first 8 KiB: not found.
        let mut far = vec![0u8; 8192];
        far.extend(header(3, [0; 5]));
        assert_eq!(Header::find(&far), Err(LoadError::NoMultibootHeader));
        // Truncated in the middle of the header or of the kludge fields.
        let full = header(0x1_0000, [1, 2, 3, 4, 5]);
        assert_eq!(Header::find(&full[..8]), Err(LoadError::NoMultibootHeader));
        assert_eq!(
            Header::find(&full[..20]),
            Err(LoadError::BadMultibootAddresses)
        );
        let h = Header::find(&full).unwrap();
        assert_eq!(
            h.aout,
            Some(AoutAddresses {
                header_addr: 1,
                load_addr: 2,
                load_end_addr: 3,
                bss_end_addr: 4,
                entry_addr: 5
            })
        );
        assert_eq!(Header::find(&[]), Err(LoadError::NoMultibootHeader));
    }

    #[test]
    fn aout_kernel_is_loaded_and_entered_per_spec() {
        let img = aout_kernel();
        let m1 = b"module one".to_vec();
        let m2 = vec![7u8; 0x1001];
        let modules = [
            BootModule {
                data: &m1,
                cmdline: "one.bin arg=1",
            },
            BootModule {
                data: &m2,
                cmdline: "two.bin",
            },
        ];
        let (buf, r) = run(&img, "mbtest.bin hello=world", &modules);
        let e = r.unwrap();
        assert_eq!((e.eip, e.eax), (0x10_0010, 0x2BAD_B002));
        assert_eq!(&buf[0x10_0000..0x10_0100], &img[..]);
        assert!(
            buf[0x10_0100..0x10_2000].iter().all(|&b| b == 0),
            "bss zeroed"
        );
        let info = u64::from(e.ebx);
        assert_eq!(u32_at(&buf, info), Info::FLAGS);
        assert_eq!(Info::FLAGS, 0x24D);
        assert_eq!(u32_at(&buf, info + 4), 639);
        assert_eq!(u32_at(&buf, info + 8), (RAM as u32 - 0x10_0000) / 1024);
        assert_eq!(
            cstr(&buf, u64::from(u32_at(&buf, info + 16))),
            "mbtest.bin hello=world"
        );
        assert_eq!(cstr(&buf, u64::from(u32_at(&buf, info + 64))), "hv");
        // Modules: page-aligned after the bss, in order, end exclusive.
        assert_eq!(u32_at(&buf, info + 20), 2);
        let mods = u64::from(u32_at(&buf, info + 24));
        let entry = |i: u64| {
            let at = mods + 16 * i;
            (
                u32_at(&buf, at),
                u32_at(&buf, at + 4),
                cstr(&buf, u64::from(u32_at(&buf, at + 8))),
            )
        };
        assert_eq!(entry(0), (0x10_2000, 0x10_200A, "one.bin arg=1"));
        assert_eq!(entry(1), (0x10_3000, 0x10_4001, "two.bin"));
        assert_eq!(&buf[0x10_2000..0x10_200A], b"module one");
        // The memory map: size fields of 20, the Linux layout.
        assert_eq!(u32_at(&buf, info + 44), 4 * 24);
        let mmap = u64::from(u32_at(&buf, info + 48));
        let region = |i: u64| {
            let at = mmap + 24 * i;
            (
                u32_at(&buf, at),
                u64_at(&buf, at + 4),
                u64_at(&buf, at + 12),
                u32_at(&buf, at + 20),
            )
        };
        assert_eq!(region(0), (20, 0, 0x9FC00, 1));
        assert_eq!(region(3), (20, 0x10_0000, RAM - 0x10_0000, 1));
        assert_eq!(&buf[0xE0000..0xE0008], b"RSD PTR ");
    }

    #[test]
    fn elf_kernels_use_physical_addresses_and_translate_the_entry() {
        let mut body = header(0x3, [0; 5]);
        body.resize(0x40, 0xF4);
        // Linked at 0xC0100000, loaded at 1 MiB, entry = vaddr + 0x20.
        let mut f = build(
            false,
            0xC010_0020,
            &[load(0x1000, 0x10_0000, 0x40, 0x80)],
            &body,
        );
        // Give the segment its high virtual address (p_vaddr of the first ELF32 phdr).
        f[52 + 8..52 + 12].copy_from_slice(&0xC010_0000u32.to_le_bytes());
        let (buf, r) = run(&f, "k", &[]);
        let e = r.unwrap();
        assert_eq!(e.eip, 0x10_0020);
        assert_eq!(&buf[0x10_0000..0x10_0040], &body[..]);
        assert!(buf[0x10_0040..0x10_0080].iter().all(|&b| b == 0));
        assert_eq!(u32_at(&buf, u64::from(e.ebx) + 20), 0, "no modules");
    }

    #[test]
    fn hostile_headers_and_layouts_are_errors() {
        let (_, r) = run(&vec![0u8; 0x3000], "", &[]);
        assert_eq!(r, Err(LoadError::NoMultibootHeader));
        // Video mode and undefined required bits are refused.
        for flags in [0x4, 0x8000] {
            let (_, r) = run(&header(flags, [0; 5]), "", &[]);
            assert_eq!(r, Err(LoadError::UnsupportedMultibootFlags { flags }));
        }
        let base = 0x10_0000;
        let kludge = |fields: [u32; 5]| {
            let mut k = vec![0u8; 0x40];
            k.extend(header(0x1_0000, fields));
            k
        };
        for (what, fields) in [
            ("load after header", [base, base + 0x100, 0, 0, base]),
            ("load before the file", [base + 0x1000, base, 0, 0, base]),
            (
                "load_end before load",
                [base + 0x40, base, base - 1, 0, base],
            ),
            (
                "load_end past the file",
                [base + 0x40, base, base + 0x1000, 0, base],
            ),
            (
                "bss_end before load",
                [base + 0x40, base, 0, base - 1, base],
            ),
            (
                "bss_end inside the file",
                [base + 0x40, base, 0, base + 0x10, base],
            ),
        ] {
            let (_, r) = run(&kludge(fields), "", &[]);
            assert_eq!(r, Err(LoadError::BadMultibootAddresses), "{what}");
        }
        // Loaded below 1 MiB (over the boot information) or past the end of RAM.
        let (_, r) = run(&kludge([0x8040, 0x8000, 0, 0, 0x8000]), "", &[]);
        assert!(matches!(
            r,
            Err(LoadError::Elf(ElfError::SegmentOutsideRam { .. }))
        ));
        let top = RAM as u32 - 0x20;
        let (_, r) = run(&kludge([top + 0x40, top, 0, 0, top]), "", &[]);
        assert!(matches!(
            r,
            Err(LoadError::Elf(ElfError::SegmentOutsideRam { .. }))
        ));
        // A header in an ELF without the kludge whose ELF is corrupt.
        let mut bad_elf = b"\x7fELF".to_vec();
        bad_elf.extend(header(0x3, [0; 5]));
        let (_, r) = run(&bad_elf, "", &[]);
        assert!(matches!(r, Err(LoadError::Elf(_))));
        // A module that does not fit.
        let big = vec![0u8; RAM as usize];
        let (_, r) = run(
            &aout_kernel(),
            "",
            &[BootModule {
                data: &big,
                cmdline: "big",
            }],
        );
        assert_eq!(r, Err(LoadError::ModulesDoNotFit { ram_size: RAM }));
    }

    #[test]
    fn info_bytes_put_each_field_at_its_offset() {
        let b = Info {
            mem_lower_kib: 1,
            mem_upper_kib: 2,
            cmdline: 3,
            mods_count: 4,
            mods_addr: 5,
            mmap_length: 6,
            mmap_addr: 7,
            boot_loader_name: 8,
        }
        .to_bytes();
        let at = |o: u64| u32_at(&b, o);
        assert_eq!(
            [at(4), at(8), at(16), at(20), at(24), at(44), at(48), at(64)],
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(at(12), 0, "no boot device");
        assert_eq!(at(0), 0x24D);
    }
}
