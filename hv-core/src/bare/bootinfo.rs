//! What the boot loader handed over, read from its multiboot1 (QEMU `-kernel`) or multiboot2
//! (GRUB) information with the `multiboot` and `multiboot2` crates: the monitor's command line,
//! usable RAM (into the frame allocator, minus everything the boot occupies) and the modules.

use crate::bare::entry::{MULTIBOOT1_MAGIC, MULTIBOOT2_MAGIC};
use hv_core::frames::FrameAllocator;
use hv_core::modules::{module_name, Module};

pub const MAX_MODULES: usize = 32;

pub struct BootInfo {
    pub loader: &'static str,
    pub cmdline: &'static str,
    pub frames: FrameAllocator,
    pub modules: [Option<Module<'static>>; MAX_MODULES],
    /// Where the loader's copy of the ACPI RSDP is (multiboot2's RSDP tags, which UEFI boots
    /// need: there is no BIOS area to search).
    pub rsdp: Option<u64>,
}

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Identity mapping: physical addresses are pointers.
struct Identity;

impl multiboot::information::MemoryManagement for Identity {
    unsafe fn paddr_to_slice(&self, addr: u64, length: usize) -> Option<&'static [u8]> {
        // SAFETY: the loader's structures are identity-mapped and outlive the monitor's use.
        Some(unsafe { core::slice::from_raw_parts(addr as *const u8, length) })
    }

    unsafe fn allocate(&mut self, _length: usize) -> Option<(u64, &mut [u8])> {
        None
    }

    unsafe fn deallocate(&mut self, _addr: u64) {}
}

fn bytes(start: u64, end: u64) -> &'static [u8] {
    // SAFETY: module ranges come from the boot loader and lie in identity-mapped RAM that the
    // frame allocator never hands out.
    unsafe { core::slice::from_raw_parts(start as *const u8, end.saturating_sub(start) as usize) }
}

/// A string inside the boot loader's structures, which stay in place for the monitor's lifetime.
fn persistent(s: &str) -> &'static str {
    // SAFETY: the bytes live in identity-mapped memory the frame allocator never hands out
    // (`reserve_boot`), so they outlive every borrow of the parser that found them.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(s.as_ptr(), s.len())) }
}

impl BootInfo {
    fn new(loader: &'static str) -> Self {
        Self {
            loader,
            cmdline: "",
            frames: FrameAllocator::new(),
            modules: [None; MAX_MODULES],
            rsdp: None,
        }
    }

    fn add_module(&mut self, start: u64, end: u64, cmdline: &'static str) {
        if let Some(slot) = self.modules.iter_mut().find(|m| m.is_none()) {
            *slot = Some(Module {
                name: module_name(cmdline),
                data: bytes(start, end),
            });
        }
    }

    pub fn modules(&self) -> impl Iterator<Item = Module<'static>> + '_ {
        self.modules.iter().flatten().copied()
    }

    /// Keeps the monitor image, the boot information, the modules and the first MiB out of the
    /// frame allocator.
    fn reserve_boot(&mut self, info: u64, info_len: u64) {
        // SAFETY: linker-defined symbols; only their addresses are taken.
        let (start, end) = unsafe {
            (
                &__image_start as *const u8 as u64,
                &__image_end as *const u8 as u64,
            )
        };
        self.frames.reserve(0, 0x10_0000);
        self.frames.reserve(start, end);
        self.frames.reserve(info, info + info_len);
        let spans: [(u64, u64); MAX_MODULES] = core::array::from_fn(|i| match self.modules[i] {
            Some(m) => (
                m.data.as_ptr() as u64,
                m.data.as_ptr() as u64 + m.data.len() as u64,
            ),
            None => (0, 0),
        });
        for (s, e) in spans {
            if e > s {
                self.frames.reserve(s, e);
            }
        }
    }
}

/// Reads the boot information; `None` when the magic names no loader we know.
pub fn parse(magic: u32, info: u32) -> Option<BootInfo> {
    match magic {
        MULTIBOOT1_MAGIC => Some(parse_mb1(u64::from(info))),
        MULTIBOOT2_MAGIC => parse_mb2(u64::from(info)),
        _ => None,
    }
}

fn parse_mb1(info: u64) -> BootInfo {
    let mut boot = BootInfo::new("multiboot");
    let mut mm = Identity;
    // SAFETY: EBX held the multiboot1 information address (magic checked by the caller).
    let Some(mb) = (unsafe { multiboot::information::Multiboot::from_ptr(info, &mut mm) }) else {
        return boot;
    };
    boot.cmdline = persistent(mb.command_line().unwrap_or(""));
    if let Some(regions) = mb.memory_regions() {
        for r in regions {
            if r.memory_type() == multiboot::information::MemoryType::Available {
                boot.frames
                    .add(r.base_address(), r.base_address() + r.length());
            }
        }
    }
    if let Some(mods) = mb.modules() {
        for m in mods {
            boot.add_module(m.start, m.end, persistent(m.string.unwrap_or("")));
        }
    }
    boot.reserve_boot(info, 4096);
    boot
}

fn parse_mb2(info: u64) -> Option<BootInfo> {
    let mut boot = BootInfo::new("multiboot2");
    // SAFETY: EBX held the multiboot2 information address (magic checked by the caller).
    let mb = unsafe {
        multiboot2::BootInformation::load(info as *const multiboot2::BootInformationHeader)
    }
    .ok()?;
    boot.cmdline = persistent(
        mb.command_line_tag()
            .and_then(|t| t.cmdline().ok())
            .unwrap_or(""),
    );
    if let Some(map) = mb.memory_map_tag() {
        for a in map.memory_areas() {
            if a.typ() == multiboot2::MemoryAreaType::Available {
                boot.frames.add(a.start_address(), a.end_address());
            }
        }
    }
    for m in mb.module_tags() {
        let cmdline = persistent(m.cmdline().unwrap_or(""));
        boot.add_module(
            u64::from(m.start_address()),
            u64::from(m.end_address()),
            cmdline,
        );
    }
    // The RSDP follows the tag's 8-byte header (Multiboot2 §3.6.15-16); the boot information
    // stays reserved, so the copy stays readable.
    let v2 = mb.rsdp_v2_tag().map(|t| t as *const _ as u64 + 8);
    let v1 = mb.rsdp_v1_tag().map(|t| t as *const _ as u64 + 8);
    boot.rsdp = v2.or(v1);
    let len = mb.total_size() as u64;
    boot.reserve_boot(info, len);
    Some(boot)
}
