//! One split virtqueue from the driver's side (virtio 1.2, 2.7), laid out in a block of the
//! monitor's memory that the device reaches by DMA. The driver picks the descriptors of each
//! chain (a block driver with one request in flight always uses 0.., a NIC one per receive
//! buffer) and must not offer one the device still holds.
//!
//! It is not the device side (`devices::virtio::queue`) and does no interrupts: the avail
//! ring asks for none and completions are polled.

use core::sync::atomic::{fence, Ordering};

use super::Bus;

/// The largest queue laid out here.
pub const MAX_SIZE: u16 = 16;
/// Offsets of the rings in the queue's memory (2.7: 16-, 2- and 4-byte alignment).
const DESC: u64 = 0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;
/// Bytes of memory the rings take.
pub const BYTES: u64 = 0x300;

const DESC_BYTES: u64 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
/// 2.7.7: the driver wants no interrupts.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// A buffer of a chain: `len` bytes at physical `pa`, written by the device if `writable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub pa: u64,
    pub len: u32,
    pub writable: bool,
}

/// The queue at physical address `base` (`BYTES` long, 16-byte aligned).
pub struct SplitQueue {
    base: u64,
    size: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl SplitQueue {
    /// Clears the rings of a queue of `size` entries (a power of two up to `MAX_SIZE`); the
    /// device must not be using them yet.
    pub fn new(bus: &mut dyn Bus, base: u64, size: u16) -> Self {
        bus.dma_write(base, &[0; BYTES as usize]);
        bus.dma_write(base + AVAIL, &AVAIL_F_NO_INTERRUPT.to_le_bytes());
        Self {
            base,
            size: size.clamp(1, MAX_SIZE),
            avail_idx: 0,
            used_seen: 0,
        }
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn desc_pa(&self) -> u64 {
        self.base + DESC
    }

    pub fn avail_pa(&self) -> u64 {
        self.base + AVAIL
    }

    pub fn used_pa(&self) -> u64 {
        self.base + USED
    }

    /// Writes `chain` as descriptors `first`, `first + 1`, ... (those within the queue) and
    /// makes it available.
    pub fn offer(&mut self, bus: &mut dyn Bus, first: u16, chain: &[Buffer]) {
        let room = usize::from(self.size.saturating_sub(first));
        let chain = &chain[..chain.len().min(room)];
        for (i, b) in chain.iter().enumerate() {
            let index = first + i as u16;
            let last = i + 1 == chain.len();
            let flags = if last { 0 } else { F_NEXT } | if b.writable { F_WRITE } else { 0 };
            let mut raw = [0u8; DESC_BYTES as usize];
            raw[0..8].copy_from_slice(&b.pa.to_le_bytes());
            raw[8..12].copy_from_slice(&b.len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&(index + 1).to_le_bytes());
            bus.dma_write(self.base + DESC + DESC_BYTES * u64::from(index), &raw);
        }
        let slot = u64::from(self.avail_idx % self.size);
        bus.dma_write(self.base + AVAIL + 4 + 2 * slot, &first.to_le_bytes());
        // 2.7.13.2: the ring entry before the index that publishes it.
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        bus.dma_write(self.base + AVAIL + 2, &self.avail_idx.to_le_bytes());
        // 2.7.13.4: the index before the notification that follows.
        fence(Ordering::SeqCst);
    }

    /// The next chain the device returned: its head descriptor and the bytes the device wrote.
    pub fn take_used(&mut self, bus: &mut dyn Bus) -> Option<(u16, u32)> {
        let mut idx = [0u8; 2];
        bus.dma_read(self.base + USED + 2, &mut idx);
        if u16::from_le_bytes(idx) == self.used_seen {
            return None;
        }
        // The element is read only after the index that published it.
        fence(Ordering::SeqCst);
        let slot = u64::from(self.used_seen % self.size);
        let mut elem = [0u8; 8];
        bus.dma_read(self.base + USED + 4 + 8 * slot, &mut elem);
        self.used_seen = self.used_seen.wrapping_add(1);
        let id = u32::from_le_bytes([elem[0], elem[1], elem[2], elem[3]]);
        let len = u32::from_le_bytes([elem[4], elem[5], elem[6], elem[7]]);
        Some((u16::try_from(id).unwrap_or(u16::MAX), len))
    }
}
