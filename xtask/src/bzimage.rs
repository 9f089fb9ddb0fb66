//! Wraps a statically linked ELF64 guest (the probe) into a bzImage a Linux boot loader can
//! load: a real-mode setup area carrying the setup header of the Linux x86 boot protocol
//! (Documentation/arch/x86/boot.rst, protocol 2.15), followed by the flattened protected-mode
//! image that the loader copies to 0x100000 and enters in 64-bit mode at 0x100200.
//! Not a real-mode kernel: entering the setup code in real mode just halts.

use crate::elf::{Elf64, PT_LOAD};
use crate::error::{bail, Result};

/// Where the boot protocol loads a non-relocatable protected-mode kernel.
pub const LOAD_ADDRESS: u64 = 0x10_0000;
/// The 64-bit entry point is 0x200 past the load address (boot.rst, "64-bit Boot Protocol").
pub const ENTRY_64: u64 = LOAD_ADDRESS + 0x200;

const SECTOR: usize = 512;
/// Sectors of setup code after the boot sector; the header fits in the first one.
const SETUP_SECTS: u8 = 1;
/// Largest flattened image accepted; guards against ELF files with absurd address gaps.
const MAX_IMAGE: u64 = 256 << 20;
const PAGE: u64 = 4096;

/// Setup header offsets within the bzImage (boot.rst, "The Real-Mode Kernel Header").
mod hdr {
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const SYSSIZE: usize = 0x1f4;
    pub const BOOT_FLAG: usize = 0x1fe;
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const MIN_ALIGNMENT: usize = 0x235;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    /// First byte after the 2.15 header (kernel_info_offset ends here).
    pub const END: usize = 0x26c;
}

const PROTOCOL_VERSION: u16 = 0x020f;
const LOADED_HIGH: u8 = 1 << 0;
const XLF_KERNEL_64: u16 = 1 << 0;
const KERNEL_ALIGNMENT: u32 = 0x20_0000;
/// log2 of the minimum alignment: 4 KiB.
const MIN_ALIGNMENT: u8 = 12;
const CMDLINE_SIZE: u32 = 2048;
const INITRD_ADDR_MAX: u32 = 0x7fff_ffff;

/// The protected-mode part of a bzImage: the bytes to copy to LOAD_ADDRESS and how much
/// memory they occupy once .bss is counted.
#[derive(Debug, PartialEq, Eq)]
pub struct FlatImage {
    pub bytes: Vec<u8>,
    pub mem_size: u64,
}

/// Turns an ELF64 executable whose 64-bit entry is ENTRY_64 into a bzImage.
pub fn wrap(elf_file: &[u8]) -> Result<Vec<u8>> {
    let elf = Elf64::parse(elf_file)?;
    if elf.entry != ENTRY_64 {
        bail!(
            "entry point is {:#x}, but the boot protocol enters a kernel loaded at {LOAD_ADDRESS:#x} at {ENTRY_64:#x}",
            elf.entry
        );
    }
    let mut image = flatten(&elf)?;
    image
        .bytes
        .resize(image.bytes.len().next_multiple_of(16), 0);
    let mut out = setup_area(&image)?;
    out.extend_from_slice(&image.bytes);
    Ok(out)
}

/// Copies every PT_LOAD segment to its place in one image starting at LOAD_ADDRESS;
/// the gaps between segments and the .bss of all but the last become zeros in the file.
pub fn flatten(elf: &Elf64) -> Result<FlatImage> {
    let mut loads: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.memsz > 0)
        .collect();
    if loads.is_empty() {
        bail!("no loadable segment");
    }
    loads.sort_by_key(|ph| ph.paddr);
    let mut bytes = Vec::new();
    let mut mem_end = LOAD_ADDRESS;
    for ph in loads {
        if ph.paddr < mem_end {
            bail!(
                "segment at {:#x} is below {LOAD_ADDRESS:#x} or overlaps the previous one (which ends at {mem_end:#x})",
                ph.paddr
            );
        }
        if ph.filesz > ph.memsz {
            bail!("segment at {:#x} has more file bytes than memory", ph.paddr);
        }
        let end = ph
            .paddr
            .checked_add(ph.memsz)
            .filter(|&e| e - LOAD_ADDRESS <= MAX_IMAGE);
        let Some(end) = end else {
            bail!(
                "segment at {:#x} ends beyond {MAX_IMAGE:#x} bytes of image",
                ph.paddr
            );
        };
        let data = elf.file_bytes(ph)?;
        if !data.is_empty() {
            // Both bounded by MAX_IMAGE above, so they fit in usize.
            let start = (ph.paddr - LOAD_ADDRESS) as usize;
            bytes.resize(start, 0);
            bytes.extend_from_slice(data);
        }
        mem_end = end;
    }
    Ok(FlatImage {
        bytes,
        mem_size: mem_end - LOAD_ADDRESS,
    })
}

/// The boot sector and setup sectors, with the setup header filled in.
fn setup_area(image: &FlatImage) -> Result<Vec<u8>> {
    let init_size = image.mem_size.next_multiple_of(PAGE);
    let (Ok(init_size), Ok(syssize)) = (
        u32::try_from(init_size),
        u32::try_from(image.bytes.len().div_ceil(16)),
    ) else {
        bail!("image too large for a bzImage header");
    };
    let mut setup = vec![0u8; (usize::from(SETUP_SECTS) + 1) * SECTOR];
    setup[hdr::SETUP_SECTS] = SETUP_SECTS;
    put(&mut setup, hdr::SYSSIZE, &syssize.to_le_bytes());
    put(&mut setup, hdr::BOOT_FLAG, &0xaa55u16.to_le_bytes());
    // A short jump over the header to code that halts: real-mode entry is not supported.
    put(&mut setup, hdr::JUMP, &[0xeb, JUMP_SKIP]);
    put(&mut setup, hdr::END, &HALT_LOOP);
    put(&mut setup, hdr::HEADER, b"HdrS");
    put(&mut setup, hdr::VERSION, &PROTOCOL_VERSION.to_le_bytes());
    setup[hdr::LOADFLAGS] = LOADED_HIGH;
    put(
        &mut setup,
        hdr::CODE32_START,
        &(LOAD_ADDRESS as u32).to_le_bytes(),
    );
    put(
        &mut setup,
        hdr::INITRD_ADDR_MAX,
        &INITRD_ADDR_MAX.to_le_bytes(),
    );
    put(
        &mut setup,
        hdr::KERNEL_ALIGNMENT,
        &KERNEL_ALIGNMENT.to_le_bytes(),
    );
    setup[hdr::RELOCATABLE_KERNEL] = 0;
    setup[hdr::MIN_ALIGNMENT] = MIN_ALIGNMENT;
    put(&mut setup, hdr::XLOADFLAGS, &XLF_KERNEL_64.to_le_bytes());
    put(&mut setup, hdr::CMDLINE_SIZE, &CMDLINE_SIZE.to_le_bytes());
    put(&mut setup, hdr::PREF_ADDRESS, &LOAD_ADDRESS.to_le_bytes());
    put(&mut setup, hdr::INIT_SIZE, &init_size.to_le_bytes());
    Ok(setup)
}

/// The rel8 of the jump at 0x200, counted from the byte after it (0x202) to hdr::END.
const JUMP_SKIP: u8 = (hdr::END - hdr::JUMP - 2) as u8;
/// `cli; hlt; jmp hlt`.
const HALT_LOOP: [u8; 4] = [0xfa, 0xf4, 0xeb, 0xfd];

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::build::{executable, Segment};

    fn load(paddr: u64, data: &[u8], memsz: u64) -> Segment<'_> {
        Segment {
            p_type: PT_LOAD,
            paddr,
            data,
            memsz,
        }
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// A text segment at 0x100000 with code at 0x200, a data segment after a gap, then .bss.
    fn probe_like() -> Vec<u8> {
        let mut text = vec![0x90u8; 0x300];
        text[0x200] = 0xf4;
        executable(
            ENTRY_64,
            &[
                load(0x100000, &text, 0x300),
                load(0x102000, b"DATA", 0x3000),
            ],
        )
    }

    #[test]
    fn setup_header_follows_the_boot_protocol() {
        let bz = wrap(&probe_like()).unwrap();
        assert_eq!(bz[hdr::SETUP_SECTS], 1);
        assert_eq!(u16_at(&bz, hdr::BOOT_FLAG), 0xaa55);
        assert_eq!(&bz[hdr::HEADER..hdr::HEADER + 4], b"HdrS");
        assert_eq!(u16_at(&bz, hdr::VERSION), 0x020f);
        assert_eq!(bz[hdr::LOADFLAGS] & LOADED_HIGH, LOADED_HIGH);
        assert_eq!(u32_at(&bz, hdr::CODE32_START), 0x100000);
        assert_eq!(u32_at(&bz, hdr::INITRD_ADDR_MAX), 0x7fff_ffff);
        assert_eq!(u32_at(&bz, hdr::KERNEL_ALIGNMENT), 0x200000);
        assert_eq!(bz[hdr::RELOCATABLE_KERNEL], 0);
        assert_eq!(u16_at(&bz, hdr::XLOADFLAGS) & XLF_KERNEL_64, XLF_KERNEL_64);
        assert_eq!(u32_at(&bz, hdr::CMDLINE_SIZE), 2048);
        assert_eq!(u64_at(&bz, hdr::PREF_ADDRESS), 0x100000);
        // .bss of the data segment ends at 0x105000.
        assert_eq!(u32_at(&bz, hdr::INIT_SIZE), 0x5000);
        // The jump at 0x200 lands on the halt loop just past the header.
        assert_eq!(bz[hdr::JUMP], 0xeb);
        assert_eq!(hdr::JUMP + 2 + usize::from(bz[hdr::JUMP + 1]), hdr::END);
        assert_eq!(bz[hdr::END..hdr::END + 4], HALT_LOOP);
    }

    #[test]
    fn payload_follows_the_setup_sectors_and_is_flattened() {
        let bz = wrap(&probe_like()).unwrap();
        let payload = &bz[2 * SECTOR..];
        // File bytes end at 0x102004, padded to 16: .bss is not in the file.
        assert_eq!(payload.len(), 0x2010);
        assert_eq!(u32_at(&bz, hdr::SYSSIZE) as usize * 16, payload.len());
        assert_eq!(payload[0x200], 0xf4);
        assert!(payload[0x300..0x2000].iter().all(|&b| b == 0));
        assert_eq!(&payload[0x2000..0x2004], b"DATA");
    }

    #[test]
    fn entry_must_be_at_0x100200() {
        let file = executable(0x100000, &[load(0x100000, b"code", 4)]);
        assert!(wrap(&file).is_err());
    }

    #[test]
    fn segments_below_1_mib_are_rejected() {
        let file = executable(
            ENTRY_64,
            &[load(0x1000, b"low", 3), load(0x100000, b"x", 1)],
        );
        assert!(wrap(&file).is_err());
    }

    #[test]
    fn overlapping_segments_are_rejected() {
        let file = executable(
            ENTRY_64,
            &[load(0x100000, b"aaaa", 0x1000), load(0x100800, b"b", 1)],
        );
        assert!(wrap(&file).is_err());
    }

    #[test]
    fn absurd_gaps_are_rejected() {
        let file = executable(
            ENTRY_64,
            &[load(0x100000, b"a", 1), load(0x1_0000_0000, b"b", 1)],
        );
        assert!(wrap(&file).is_err());
    }

    #[test]
    fn file_size_above_memory_size_is_rejected() {
        let file = executable(ENTRY_64, &[load(0x100000, b"abcdef", 2)]);
        assert!(wrap(&file).is_err());
    }

    #[test]
    fn segment_order_in_the_file_does_not_matter() {
        let file = executable(
            ENTRY_64,
            &[load(0x101000, b"second", 6), load(0x100000, b"first", 5)],
        );
        let elf = Elf64::parse(&file).unwrap();
        let flat = flatten(&elf).unwrap();
        assert_eq!(&flat.bytes[..5], b"first");
        assert_eq!(&flat.bytes[0x1000..], b"second");
        assert_eq!(flat.mem_size, 0x1006);
    }
}
