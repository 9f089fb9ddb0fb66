//! Fuzzes the Linux loader (`hv_core::loader::linux::load_linux`) with arbitrary kernel images,
//! command lines, initrd sizes, RAM sizes and vCPU counts, loading into a `GuestRam`.
//!
//! Invariants: no panic; on success the kernel payload, the command line and the initrd read
//! back intact from guest RAM (so nothing written later overlapped them), the kernel region and
//! the initrd lie inside RAM, the initrd is page-aligned above 1 MiB, below `initrd_addr_max`
//! and outside the region the kernel claims, and the zero page points at all of them.
#![no_main]

use std::cell::RefCell;

use hv_core::loader::bzimage::BzImage;
use hv_core::loader::linux::{load_linux, BOOT_PARAMS_ADDR, CMDLINE_ADDR, HIGH_MEMORY, PML4_ADDR};
use hv_core::memory::{GuestMemory, GuestRam};
use hv_fuzz::Input;
use libfuzzer_sys::fuzz_target;

/// Largest RAM the target builds: big enough for real layouts, small enough to stay fast.
const MAX_FUZZ_RAM: usize = 16 << 20;
const PAGE: u64 = 0x1000;
/// The 64-bit entry point lies 0x200 bytes into the kernel (boot.rst, 64-bit boot protocol).
const ENTRY_64_OFFSET: u64 = 0x200;

thread_local! {
    /// Reused between runs: the checks only read back bytes the loader wrote in this run.
    static RAM: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_FUZZ_RAM]);
    static INITRD: Vec<u8> = (0..MAX_FUZZ_RAM / 8).map(|i| (i % 253) as u8).collect();
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let units = u64::from(input.u16() % 4096) + 1;
    let flags = input.u8();
    let vcpus = u32::from(input.u16() % 300);
    let cmdline_len = usize::from(input.u16() % 4096);
    let initrd_len = input.u32() as usize % (MAX_FUZZ_RAM / 8);
    let cmdline = String::from_utf8_lossy(input.bytes(cmdline_len)).into_owned();
    let kernel = input.rest();
    let ram_size = if flags & 4 != 0 {
        4 << 30
    } else {
        units * PAGE
    };
    // A buffer shorter than `ram_size` must give OutOfRam errors, never a panic.
    let buf_len = if flags & 2 != 0 {
        ram_size / 2
    } else {
        ram_size
    };
    let buf_len = (buf_len as usize).min(MAX_FUZZ_RAM);
    RAM.with_borrow_mut(|ram| {
        INITRD.with(|initrd| {
            let initrd = (flags & 1 != 0).then(|| &initrd[..initrd_len]);
            let mut mem = GuestRam::new(&mut ram[..buf_len]);
            let result = load_linux(&mut mem, ram_size, kernel, initrd, &cmdline, vcpus);
            match result {
                Ok(state) => {
                    assert_eq!((state.rsi, state.cr3), (BOOT_PARAMS_ADDR, PML4_ADDR));
                    check_loaded(&mem, ram_size, kernel, initrd, &cmdline, state.rip);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        })
    });
});

fn read(mem: &GuestRam<'_>, gpa: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    mem.read(gpa, &mut buf).expect("loaded data lies in RAM");
    buf
}

fn u32_at(mem: &GuestRam<'_>, gpa: u64) -> u64 {
    let b = read(mem, gpa, 4);
    u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn check_loaded(
    mem: &GuestRam<'_>,
    ram_size: u64,
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    rip: u64,
) {
    let image = BzImage::parse(kernel).expect("a loaded kernel parses");
    let h = image.header;
    let load = rip - ENTRY_64_OFFSET;
    let claimed = u64::from(h.init_size).max(image.payload.len() as u64);
    assert!(
        load >= HIGH_MEMORY && load + claimed <= ram_size,
        "kernel at {load:#x}"
    );
    assert!(
        read(mem, load, image.payload.len()) == image.payload,
        "payload overwritten"
    );
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    assert_eq!(
        read(mem, CMDLINE_ADDR, line.len()),
        line,
        "command line overwritten"
    );
    assert_eq!(u32_at(mem, BOOT_PARAMS_ADDR + 0x228), CMDLINE_ADDR);
    let Some(rd) = initrd else { return };
    let addr = u32_at(mem, BOOT_PARAMS_ADDR + 0x218) | u32_at(mem, BOOT_PARAMS_ADDR + 0xC0) << 32;
    let size = u32_at(mem, BOOT_PARAMS_ADDR + 0x21C) | u32_at(mem, BOOT_PARAMS_ADDR + 0xC4) << 32;
    assert_eq!(size, rd.len() as u64);
    assert!(
        addr >= HIGH_MEMORY && addr.is_multiple_of(PAGE),
        "initrd at {addr:#x}"
    );
    let limit = ram_size.min(u64::from(h.initrd_addr_max) + 1);
    assert!(
        addr + size <= limit,
        "initrd {addr:#x}+{size:#x} above {limit:#x}"
    );
    assert!(
        addr + size <= load || addr >= load + claimed,
        "initrd {addr:#x}+{size:#x} overlaps the kernel at {load:#x}+{claimed:#x}"
    );
    assert!(read(mem, addr, rd.len()) == rd, "initrd overwritten");
}
