//! Fuzzes the 32-bit-entry kernel loaders and what they parse: the ELF reader
//! (`ElfImage::parse`, `note`, `extent`), the PVH note and loader (`pvh_entry`, `load_pvh`) and
//! the Multiboot header scanner and loader (`Header::find`, `load_multiboot`), loading into a
//! `GuestRam`.
//!
//! Invariants: no panic; parsed segments are sorted, disjoint, no longer in the file than in
//! memory, and their bytes are the file's; a found Multiboot header is 4-byte aligned in the
//! first 8 KiB with a valid magic and checksum; after a successful load every segment reads
//! back from RAM above 1 MiB as its file bytes followed by zeros.
#![no_main]

use std::cell::RefCell;

use hv_core::loader::boot32::BootModule;
use hv_core::loader::elf::ElfImage;
use hv_core::loader::multiboot::{load_multiboot, Header, HEADER_MAGIC};
use hv_core::loader::pvh::{load_pvh, pvh_entry};
use hv_core::memory::{GuestMemory, GuestRam};
use hv_fuzz::Input;
use libfuzzer_sys::fuzz_target;

const MAX_FUZZ_RAM: usize = 16 << 20;
const HIGH_MEMORY: u64 = 0x10_0000;
const SEARCH_LEN: usize = 8192;

thread_local! {
    static RAM: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_FUZZ_RAM]);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let which = input.u8();
    let ram_size = (u64::from(input.u16() % 4096) + 1) << 12;
    let vcpus = u32::from(input.u8()) + 1;
    let module_len = usize::from(input.u16());
    let module = input.bytes(module_len);
    let image = input.rest();
    let modules = [BootModule {
        data: module,
        cmdline: "initrd",
    }];
    let modules = &modules[..usize::from(which >> 7)];
    if let Ok(elf) = ElfImage::parse(image) {
        check_elf(&elf, image);
        let _ = pvh_entry(&elf);
    }
    match Header::find(image) {
        Ok(h) => {
            assert!(h.offset.is_multiple_of(4) && h.offset + 12 <= image.len().min(SEARCH_LEN));
            let word = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
            assert_eq!(word(h.offset), HEADER_MAGIC);
            assert_eq!(
                word(h.offset)
                    .wrapping_add(h.flags)
                    .wrapping_add(word(h.offset + 8)),
                0
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    RAM.with_borrow_mut(|ram| {
        let mut mem = GuestRam::new(&mut ram[..ram_size as usize]);
        let result = if which & 1 == 0 {
            load_pvh(&mut mem, ram_size, image, modules, "console=hvc0", vcpus)
        } else {
            let kernel = BootModule {
                data: image,
                cmdline: "kernel console=ttyS0",
            };
            load_multiboot(&mut mem, ram_size, kernel, modules, vcpus)
        };
        match result {
            // A multiboot a.out-kludge image has no ELF segments to compare.
            Ok(_) => {
                if let Ok(elf) = ElfImage::parse(image) {
                    if which & 1 == 0 || Header::find(image).is_ok_and(|h| h.aout.is_none()) {
                        check_loaded(&mem, &elf, ram_size);
                    }
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
});

fn check_elf(elf: &ElfImage<'_>, file: &[u8]) {
    let range = file.as_ptr_range();
    for s in &elf.segments {
        assert!(s.data.len() as u64 <= s.memsz);
        let inside = s.data.is_empty()
            || (range.start <= s.data.as_ptr() && s.data.as_ptr_range().end <= range.end);
        assert!(inside, "segment data outside the file");
    }
    for w in elf.segments.windows(2) {
        assert!(w[0].range().end <= w[1].paddr, "segments overlap");
    }
    let extent = elf.extent();
    assert!(extent.start <= extent.end);
}

fn check_loaded(mem: &GuestRam<'_>, elf: &ElfImage<'_>, ram_size: u64) {
    for s in &elf.segments {
        let r = s.range();
        assert!(
            r.start >= HIGH_MEMORY && r.end <= ram_size,
            "segment {r:x?} outside RAM"
        );
        let mut buf = vec![0; s.data.len()];
        mem.read(s.paddr, &mut buf).expect("segment in RAM");
        assert!(buf == s.data, "segment at {:#x} overwritten", s.paddr);
        let zeros = (s.memsz - s.data.len() as u64).min(4096) as usize;
        let mut buf = vec![0xff; zeros];
        mem.read(s.paddr + s.data.len() as u64, &mut buf)
            .expect("bss in RAM");
        assert!(
            buf.iter().all(|&b| b == 0),
            "bss at {:#x} not zero",
            s.paddr
        );
    }
}
