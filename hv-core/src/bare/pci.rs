//! The host side of the host-disk driver: PCI configuration mechanism #1 (ports 0xCF8/0xCFC,
//! bus 0 only), uncached mappings of device BARs in the monitor's identity map, and
//! `MappedBus`, the `hostdev::Bus` over those mappings and the driver's DMA memory.
//!
//! It is not the driver (`hv_core::hostdev`) and maps nothing but what a driver asks for.

use alloc::alloc::{alloc_zeroed, Layout};
use core::arch::asm;

use super::cpu::{inl, outl, rdtsc};
use hv_core::hostdev::pci::{self, ConfigSpace, Function, Window};
use hv_core::hostdev::transport::Regs;
use hv_core::hostdev::Bus;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// Bus 0's configuration space through ports 0xCF8/0xCFC.
pub struct PortConfig;

impl PortConfig {
    fn select(dev: u8, func: u8, reg: u8) {
        let address = 1 << 31
            | u32::from(dev & 0x1F) << 11
            | u32::from(func & 7) << 8
            | u32::from(reg & 0xFC);
        outl(CONFIG_ADDRESS, address);
    }
}

impl ConfigSpace for PortConfig {
    fn read32(&mut self, dev: u8, func: u8, reg: u8) -> u32 {
        Self::select(dev, func, reg);
        inl(CONFIG_DATA)
    }

    fn write32(&mut self, dev: u8, func: u8, reg: u8, value: u32) {
        Self::select(dev, func, reg);
        outl(CONFIG_DATA, value);
    }
}

/// Page-table entry bits (Intel SDM Vol. 3A, 4.5; AMD APM Vol. 2, 5.3).
const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
/// PWT and PCD with PAT bit 0 pick PAT entry 3, uncacheable in the power-on PAT (SDM 11.12.3).
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const LARGE: u64 = 1 << 7;
const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;
const LARGE_PAGE: u64 = 2 << 20;
/// Identity mappings must be canonical: physical addresses below 128 TiB.
const IDENTITY_TOP: u64 = 1 << 47;

/// Maps `[pa, pa + len)` uncached at the same virtual address, in 2 MiB pages, replacing
/// whatever the boot tables had there (the BARs lie in PCI holes, never in RAM the monitor
/// uses).
pub fn map_uncached(pa: u64, len: u64) -> Result<(), &'static str> {
    let end = pa
        .checked_add(len)
        .filter(|&e| e <= IDENTITY_TOP)
        .ok_or("a BAR above the 128 TiB the monitor can map")?;
    let mut page = pa & !(LARGE_PAGE - 1);
    let pml4 = read_cr3() & ADDRESS;
    while page < end {
        let pdpt = next_table(pml4, page >> 39)?;
        let pd = next_table(pdpt, page >> 30)?;
        let entry = page | PRESENT | WRITABLE | LARGE | WRITE_THROUGH | CACHE_DISABLE;
        // SAFETY: `pd` is a page directory of the live tables, identity-mapped below 4 GiB;
        // the entry maps device memory no Rust reference points into.
        unsafe {
            (pd as *mut u64)
                .add(((page >> 21) & 511) as usize)
                .write_volatile(entry)
        };
        page += LARGE_PAGE;
    }
    // SAFETY: reloading CR3 with its own value only flushes the TLB (no global pages are used).
    unsafe { asm!("mov cr3, {}", in(reg) read_cr3(), options(nostack)) };
    Ok(())
}

fn read_cr3() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    cr3
}

/// The table entry `index` (of its 9 bits) of `table` points to, made if absent.
fn next_table(table: u64, index: u64) -> Result<u64, &'static str> {
    // SAFETY: `table` is a paging structure of the live tables (the boot tables in the image or
    // a page from `alloc_zeroed` below), identity-mapped below 4 GiB.
    let slot = unsafe { (table as *mut u64).add((index & 511) as usize) };
    // SAFETY: as above.
    let entry = unsafe { slot.read_volatile() };
    if entry & PRESENT != 0 {
        if entry & LARGE != 0 {
            return Err("a 1 GiB page where a BAR must be mapped");
        }
        return Ok(entry & ADDRESS);
    }
    let frame = alloc_page().ok_or("no memory for page tables")?;
    // SAFETY: as above; the new table is zeroed, so it maps nothing yet.
    unsafe { slot.write_volatile(frame | PRESENT | WRITABLE) };
    Ok(frame)
}

/// A zeroed, page-aligned block of `bytes` from the heap, kept for good (identity-mapped, so
/// its address is physical).
pub fn alloc_page_block(bytes: u64) -> Option<u64> {
    let layout = Layout::from_size_align(usize::try_from(bytes).ok()?, 4096)
        .ok()
        .filter(|l| l.size() != 0)?;
    // SAFETY: the layout's size is non-zero.
    let p = unsafe { alloc_zeroed(layout) };
    (!p.is_null()).then_some(p as u64)
}

fn alloc_page() -> Option<u64> {
    alloc_page_block(4096)
}

/// Up to this many MMIO windows per device.
const WINDOWS: usize = 3;

/// MMIO by volatile access inside the windows a driver was given (mapped by `map_uncached`)
/// and DMA memory inside its block; anything else reads as all ones and is not written.
pub struct MappedBus {
    windows: [(u64, u64); WINDOWS],
    dma: (u64, u64),
}

impl MappedBus {
    /// `windows` as (address, length), each mapped uncached; `dma` a block from
    /// `alloc_page_block`.
    pub fn new(windows: [(u64, u64); WINDOWS], dma: (u64, u64)) -> Self {
        Self { windows, dma }
    }

    fn mmio(&self, pa: u64, size: u64) -> Option<u64> {
        self.windows
            .iter()
            .any(|&(at, len)| pa >= at && pa.saturating_add(size) <= at + len)
            .then_some(pa)
    }

    fn dma(&self, pa: u64, size: usize) -> Option<u64> {
        let (at, len) = self.dma;
        (pa >= at && pa.saturating_add(size as u64) <= at + len).then_some(pa)
    }
}

macro_rules! mmio_access {
    ($read:ident, $write:ident, $t:ty) => {
        fn $read(&mut self, pa: u64) -> $t {
            match self.mmio(pa, size_of::<$t>() as u64) {
                // SAFETY: inside a window of device registers mapped uncached at `pa`.
                Some(pa) => unsafe { (pa as *const $t).read_volatile() },
                None => <$t>::MAX,
            }
        }

        fn $write(&mut self, pa: u64, value: $t) {
            if let Some(pa) = self.mmio(pa, size_of::<$t>() as u64) {
                // SAFETY: as for the read.
                unsafe { (pa as *mut $t).write_volatile(value) };
            }
        }
    };
}

impl Bus for MappedBus {
    mmio_access!(read8, write8, u8);
    mmio_access!(read16, write16, u16);
    mmio_access!(read32, write32, u32);

    fn dma_read(&mut self, pa: u64, buf: &mut [u8]) {
        if let Some(pa) = self.dma(pa, buf.len()) {
            for (i, b) in buf.iter_mut().enumerate() {
                // SAFETY: inside the driver's DMA block, which the device also writes: volatile.
                *b = unsafe { (pa as *const u8).add(i).read_volatile() };
            }
        }
    }

    fn dma_write(&mut self, pa: u64, data: &[u8]) {
        if let Some(pa) = self.dma(pa, data.len()) {
            for (i, &b) in data.iter().enumerate() {
                // SAFETY: as for `dma_read`.
                unsafe { (pa as *mut u8).add(i).write_volatile(b) };
            }
        }
    }

    fn now(&mut self) -> u64 {
        rdtsc()
    }
}

/// A virtio function made ready for its driver: its structures located and mapped, memory
/// decoding and bus mastering on, and `dma_bytes` of DMA memory taken. Gives the bus over
/// them, the registers, and the DMA memory's address.
pub fn virtio_function(
    f: &Function,
    dma_bytes: u64,
) -> Result<(MappedBus, Regs, u64), &'static str> {
    let cs = &mut PortConfig;
    let caps = pci::virtio_caps(cs, f)?;
    pci::enable(cs, f);
    let mut window = |w: Window| -> Result<(u64, u64), &'static str> {
        let bar = pci::memory_bar(cs, f, w.bar)
            .filter(|&b| b != 0)
            .ok_or("a virtio structure in an unassigned or I/O BAR")?;
        let at = bar + u64::from(w.offset);
        map_uncached(at, u64::from(w.length))?;
        Ok((at, u64::from(w.length)))
    };
    let common = window(caps.common)?;
    let notify = window(caps.notify)?;
    let device = window(caps.device)?;
    let dma = alloc_page_block(dma_bytes).ok_or("no memory for the queues")?;
    let regs = Regs {
        common: common.0,
        notify: notify.0,
        notify_multiplier: caps.notify_multiplier,
        device: device.0,
    };
    let bus = MappedBus::new([common, notify, device], (dma, dma_bytes));
    Ok((bus, regs, dma))
}
