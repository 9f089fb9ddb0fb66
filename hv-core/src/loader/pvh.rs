//! Loads an ELF kernel by the PVH boot ABI (Xen `docs/misc/pvh.pandoc`,
//! `xen/include/public/arch-x86/hvm/start_info.h`): the segments go to their physical
//! addresses, the entry point is the `XEN_ELFNOTE_PHYS32_ENTRY` note (type 18, owner "Xen",
//! `xen/include/public/elfnote.h`), and `%ebx` points at a version 1 `hvm_start_info` with the
//! command line, the modules (the ramdisk first), the memory map and the RSDP.
//!
//! It is not a Xen PV loader (no start_info page, no hypercall page) and relocates nothing.
//! The layout in guest memory is `boot32`'s.

use alloc::vec::Vec;

use super::acpi;
use super::boot32::{
    check_ram_size, memory_map, place_modules, write_gdt, BootModule, Entry32, InfoArea, LoadError,
};
use super::elf::ElfImage;
use super::linux::{ACPI_ADDR, HIGH_MEMORY};
use crate::memory::GuestMemory;

/// The note that marks a PVH kernel and holds its 32-bit entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
pub const XEN_NOTE_OWNER: &[u8] = b"Xen";

/// "xEn3" with the high bit of 'E' set.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
pub const START_INFO_VERSION: u32 = 1;
pub const START_INFO_LEN: usize = 56;
pub const MODLIST_ENTRY_LEN: usize = 32;
pub const MEMMAP_ENTRY_LEN: usize = 24;

/// `struct hvm_start_info`, version 1; every address guest-physical, 0 for "absent".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartInfo {
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
}

impl StartInfo {
    /// The structure as the guest reads it (little-endian, `flags` and `reserved` 0).
    pub fn to_bytes(&self) -> [u8; START_INFO_LEN] {
        let mut b = [0u8; START_INFO_LEN];
        b[0..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&START_INFO_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.nr_modules.to_le_bytes());
        b[16..24].copy_from_slice(&self.modlist_paddr.to_le_bytes());
        b[24..32].copy_from_slice(&self.cmdline_paddr.to_le_bytes());
        b[32..40].copy_from_slice(&self.rsdp_paddr.to_le_bytes());
        b[40..48].copy_from_slice(&self.memmap_paddr.to_le_bytes());
        b[48..52].copy_from_slice(&self.memmap_entries.to_le_bytes());
        b
    }
}

/// The PVH entry point of `elf`: the note's 4- or 8-byte value, which must be below 4 GiB.
pub fn pvh_entry(elf: &ElfImage<'_>) -> Result<u32, LoadError> {
    let desc = elf
        .note(XEN_NOTE_OWNER, XEN_ELFNOTE_PHYS32_ENTRY)?
        .ok_or(LoadError::NoPvhNote)?;
    let value = match desc.len() {
        4 => desc.try_into().map(|b| u64::from(u32::from_le_bytes(b))),
        8 => desc.try_into().map(u64::from_le_bytes),
        _ => return Err(LoadError::BadPvhNote),
    };
    value
        .ok()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(LoadError::BadPvhNote)
}

/// Loads the PVH kernel `kernel` (an ELF file) with `modules` (the ramdisk first, if any) and
/// `cmdline` into `mem`, whose first `ram_size` bytes are RAM, with ACPI tables for `vcpus`
/// processors; returns the entry state.
pub fn load_pvh(
    mem: &mut impl GuestMemory,
    ram_size: u64,
    kernel: &[u8],
    modules: &[BootModule<'_>],
    cmdline: &str,
    vcpus: u32,
) -> Result<Entry32, LoadError> {
    check_ram_size(ram_size)?;
    let elf = ElfImage::parse(kernel)?;
    let entry = pvh_entry(&elf)?;
    elf.load(mem, HIGH_MEMORY..ram_size)?;
    let module_addrs = place_modules(mem, elf.extent().end, ram_size, modules)?;
    write_gdt(mem)?;
    let rsdp = acpi::build_acpi(mem, ACPI_ADDR, vcpus)?;

    let mut area = InfoArea::new();
    let start_info = area.alloc(START_INFO_LEN, 8)?;
    let cmdline_paddr = area.put_str(mem, cmdline)?;
    let modlist_paddr = write_modlist(mem, &mut area, modules, &module_addrs)?;
    let map = memory_map(ram_size);
    let memmap_paddr = area.alloc(map.len() * MEMMAP_ENTRY_LEN, 8)?;
    for (i, r) in map.iter().enumerate() {
        let mut e = [0u8; MEMMAP_ENTRY_LEN];
        e[0..8].copy_from_slice(&r.addr.to_le_bytes());
        e[8..16].copy_from_slice(&r.len.to_le_bytes());
        e[16..20].copy_from_slice(&r.kind.to_le_bytes());
        mem.write(memmap_paddr + (i * MEMMAP_ENTRY_LEN) as u64, &e)?;
    }
    let info = StartInfo {
        nr_modules: modules.len() as u32,
        modlist_paddr,
        cmdline_paddr,
        rsdp_paddr: rsdp,
        memmap_paddr,
        memmap_entries: map.len() as u32,
    };
    mem.write(start_info, &info.to_bytes())?;
    Ok(Entry32 {
        eip: entry,
        eax: 0,
        ebx: start_info as u32,
    })
}

/// `hvm_modlist_entry` array: address, size and command line of each module; 0 when there are
/// none.
fn write_modlist(
    mem: &mut impl GuestMemory,
    area: &mut InfoArea,
    modules: &[BootModule<'_>],
    addrs: &[u64],
) -> Result<u64, LoadError> {
    if modules.is_empty() {
        return Ok(0);
    }
    let cmdlines = modules
        .iter()
        .map(|m| area.put_str(mem, m.cmdline))
        .collect::<Result<Vec<_>, _>>()?;
    let list = area.alloc(modules.len() * MODLIST_ENTRY_LEN, 8)?;
    for (i, ((m, addr), cmdline)) in modules.iter().zip(addrs).zip(cmdlines).enumerate() {
        let mut e = [0u8; MODLIST_ENTRY_LEN];
        e[0..8].copy_from_slice(&addr.to_le_bytes());
        e[8..16].copy_from_slice(&(m.data.len() as u64).to_le_bytes());
        e[16..24].copy_from_slice(&cmdline.to_le_bytes());
        mem.write(list + (i * MODLIST_ENTRY_LEN) as u64, &e)?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::elf::testelf::{build, load, note, notes};
    use crate::loader::elf::ElfError;
    use crate::loader::testbuf::{cstr, u32_at, u64_at};
    use crate::memory::GuestRam;
    use alloc::vec;

    const RAM: u64 = 16 << 20;

    /// A PVH kernel: 0x20 bytes of code at 2 MiB (memsz 0x3000), entry 2 MiB + 0x10 in a note
    /// of `desc`.
    fn kernel_with(desc: &[u8]) -> Vec<u8> {
        let mut body = vec![0xC3u8; 0x20];
        let n = note(b"Xen", 18, desc);
        body.extend_from_slice(&n);
        build(
            true,
            0xFFFF_FFFF_8120_0000,
            &[
                load(0x1000, 0x20_0000, 0x20, 0x3000),
                notes(0x1020, n.len() as u64),
            ],
            &body,
        )
    }

    fn kernel() -> Vec<u8> {
        kernel_with(&0x20_0010u64.to_le_bytes())
    }

    fn run(kernel: &[u8], modules: &[BootModule<'_>]) -> (Vec<u8>, Result<Entry32, LoadError>) {
        let mut buf = vec![0u8; RAM as usize];
        let r = load_pvh(
            &mut GuestRam::new(&mut buf),
            RAM,
            kernel,
            modules,
            "console=ttyS0",
            2,
        );
        (buf, r)
    }

    #[test]
    fn start_info_bytes_follow_the_abi() {
        let b = StartInfo {
            nr_modules: 2,
            modlist_paddr: 0x1111,
            cmdline_paddr: 0x2222,
            rsdp_paddr: 0xE0000,
            memmap_paddr: 0x3333,
            memmap_entries: 4,
        }
        .to_bytes();
        assert_eq!(u32_at(&b, 0), 0x336e_c578);
        assert_eq!(&b[0..4], &[0x78, 0xc5, 0x6e, 0x33]);
        assert_eq!(u32_at(&b, 4), 1);
        assert_eq!(u32_at(&b, 8), 0, "flags");
        assert_eq!(u32_at(&b, 12), 2);
        assert_eq!(u64_at(&b, 16), 0x1111);
        assert_eq!(u64_at(&b, 24), 0x2222);
        assert_eq!(u64_at(&b, 32), 0xE0000);
        assert_eq!(u64_at(&b, 40), 0x3333);
        assert_eq!(u32_at(&b, 48), 4);
        assert_eq!(u32_at(&b, 52), 0, "reserved");
    }

    #[test]
    fn enters_at_the_note_with_ebx_at_start_info() {
        let rd = vec![0x5Au8; 0x1800];
        let modules = [BootModule {
            data: &rd,
            cmdline: "initramfs.cpio",
        }];
        let (buf, r) = run(&kernel(), &modules);
        let e = r.unwrap();
        assert_eq!(e.eip, 0x20_0010);
        let si = u64::from(e.ebx);
        assert_eq!(u32_at(&buf, si), START_INFO_MAGIC);
        assert_eq!(u32_at(&buf, si + 4), 1);
        assert_eq!(cstr(&buf, u64_at(&buf, si + 24)), "console=ttyS0");
        assert_eq!(u64_at(&buf, si + 32), 0xE0000);
        assert_eq!(&buf[0xE0000..0xE0008], b"RSD PTR ");
        // The kernel is at its physical address, its .bss zeroed.
        assert_eq!(buf[0x20_0000], 0xC3);
        assert_eq!(buf[0x20_0020], 0);
        // Module 0 is the ramdisk, page-aligned after the kernel's memory.
        assert_eq!(u32_at(&buf, si + 12), 1);
        let ml = u64_at(&buf, si + 16);
        assert_eq!(u64_at(&buf, ml), 0x20_3000);
        assert_eq!(u64_at(&buf, ml + 8), 0x1800);
        assert_eq!(cstr(&buf, u64_at(&buf, ml + 16)), "initramfs.cpio");
        assert_eq!(&buf[0x20_3000..0x20_4800], &rd[..]);
        // The memory map.
        let mm = u64_at(&buf, si + 40);
        assert_eq!(u32_at(&buf, si + 48), 4);
        let entry = |i: u64| {
            let at = mm + 24 * i;
            (
                u64_at(&buf, at),
                u64_at(&buf, at + 8),
                u32_at(&buf, at + 16),
            )
        };
        assert_eq!(entry(0), (0, 0x9FC00, 1));
        assert_eq!(entry(1), (0x9FC00, 0x400, 2));
        assert_eq!(entry(2), (0xE0000, 0x20000, 2));
        assert_eq!(entry(3), (0x10_0000, RAM - 0x10_0000, 1));
        // Everything the guest is pointed at lies in the low boot information area.
        for p in [si, ml, mm] {
            assert!((0x1000..0x9FC00).contains(&p), "{p:#x}");
        }
    }

    #[test]
    fn no_modules_means_a_null_list() {
        let (buf, r) = run(&kernel(), &[]);
        let si = u64::from(r.unwrap().ebx);
        assert_eq!(u32_at(&buf, si + 12), 0);
        assert_eq!(u64_at(&buf, si + 16), 0);
    }

    #[test]
    fn a_4_byte_note_works_and_bad_notes_are_errors() {
        let (_, r) = run(&kernel_with(&0x20_0004u32.to_le_bytes()), &[]);
        assert_eq!(r.unwrap().eip, 0x20_0004);
        let (_, r) = run(&kernel_with(&(1u64 << 32).to_le_bytes()), &[]);
        assert_eq!(r, Err(LoadError::BadPvhNote));
        let (_, r) = run(&kernel_with(&[1, 2]), &[]);
        assert_eq!(r, Err(LoadError::BadPvhNote));
    }

    #[test]
    fn a_kernel_without_the_note_is_refused_clearly() {
        let f = build(true, 0x20_0000, &[load(0x1000, 0x20_0000, 4, 4)], &[0; 4]);
        let (_, r) = run(&f, &[]);
        assert_eq!(r, Err(LoadError::NoPvhNote));
        let msg = alloc::format!("{}", r.unwrap_err());
        assert!(
            msg.contains("not a PVH kernel") && msg.contains("PHYS32_ENTRY"),
            "{msg}"
        );
        let (_, r) = run(b"MZ not an elf", &[]);
        assert_eq!(r, Err(LoadError::Elf(ElfError::NotElf)));
    }

    #[test]
    fn segments_must_lie_in_ram_above_1_mib() {
        let mut body = vec![0u8; 4];
        let n = note(b"Xen", 18, &0x8000u32.to_le_bytes());
        body.extend_from_slice(&n);
        let low = build(
            true,
            0,
            &[load(0x1000, 0x8000, 4, 4), notes(0x1004, n.len() as u64)],
            &body,
        );
        let (_, r) = run(&low, &[]);
        assert!(matches!(
            r,
            Err(LoadError::Elf(ElfError::SegmentOutsideRam {
                paddr: 0x8000,
                ..
            }))
        ));
        let high = build(
            true,
            0,
            &[load(0x1000, RAM - 2, 4, 4), notes(0x1004, n.len() as u64)],
            &body,
        );
        let (_, r) = run(&high, &[]);
        assert!(matches!(
            r,
            Err(LoadError::Elf(ElfError::SegmentOutsideRam { .. }))
        ));
    }

    #[test]
    fn oversized_modules_and_ram_are_refused() {
        let big = vec![0u8; RAM as usize];
        let modules = [BootModule {
            data: &big,
            cmdline: "big",
        }];
        let (_, r) = run(&kernel(), &modules);
        assert_eq!(r, Err(LoadError::ModulesDoNotFit { ram_size: RAM }));
        let mut buf = vec![0u8; 0x1000];
        let r = load_pvh(&mut GuestRam::new(&mut buf), 4 << 30, &kernel(), &[], "", 1);
        assert_eq!(r, Err(LoadError::RamTooLarge { ram_size: 4 << 30 }));
    }
}
