//! The host frame allocator: the firmware's usable RAM minus what the monitor image, the boot
//! information and the modules occupy, handed out as page-aligned contiguous blocks from the top
//! down (guest RAM wants large contiguous blocks; low memory stays for whatever needs it).
//!
//! It tracks free ranges only; freed blocks are not merged back (VMs' memory is freed whole
//! when they are destroyed, and `free` inserts the range again).

const MAX_RANGES: usize = 64;
const PAGE: u64 = 4096;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

pub struct FrameAllocator {
    free: [Range; MAX_RANGES],
    len: usize,
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAllocator {
    pub const fn new() -> Self {
        Self {
            free: [Range { start: 0, end: 0 }; MAX_RANGES],
            len: 0,
        }
    }

    pub fn ranges(&self) -> &[Range] {
        &self.free[..self.len]
    }

    pub fn free_bytes(&self) -> u64 {
        self.ranges().iter().map(|r| r.end - r.start).sum()
    }

    /// Adds usable RAM, shrunk to whole pages. Ranges beyond the table's capacity are dropped.
    pub fn add(&mut self, start: u64, end: u64) {
        let start = start.next_multiple_of(PAGE);
        let end = end & !(PAGE - 1);
        if start < end && self.len < MAX_RANGES {
            self.free[self.len] = Range { start, end };
            self.len += 1;
        }
    }

    /// Takes `[start, end)` out of the free ranges (the monitor image, modules, boot data).
    pub fn reserve(&mut self, start: u64, end: u64) {
        let start = start & !(PAGE - 1);
        let end = end.next_multiple_of(PAGE);
        let mut i = 0;
        while i < self.len {
            let r = self.free[i];
            if r.end <= start || r.start >= end {
                i += 1;
                continue;
            }
            let below = Range {
                start: r.start,
                end: start.max(r.start),
            };
            let above = Range {
                start: end.min(r.end),
                end: r.end,
            };
            self.remove(i);
            for part in [below, above] {
                if part.start < part.end {
                    self.add(part.start, part.end);
                }
            }
        }
    }

    fn remove(&mut self, i: usize) {
        self.free.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    /// `size` bytes aligned to `align` (a power of two ≥ 4 KiB), from the highest range that has
    /// room, below `limit`.
    pub fn alloc(&mut self, size: u64, align: u64, limit: u64) -> Option<u64> {
        let size = size.next_multiple_of(PAGE);
        let (i, base) = (0..self.len)
            .filter_map(|i| {
                let r = self.free[i];
                let top = r.end.min(limit).checked_sub(size)? & !(align - 1);
                (top >= r.start).then_some((i, top))
            })
            .max_by_key(|&(_, base)| base)?;
        let r = self.free[i];
        self.remove(i);
        self.add(r.start, base);
        self.add(base + size, r.end);
        Some(base)
    }

    /// Returns a block to the allocator.
    pub fn free(&mut self, start: u64, size: u64) {
        self.add(start, start + size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_splits_and_alloc_takes_from_the_top() {
        let mut f = FrameAllocator::new();
        f.add(0x1000, 0x9F000);
        f.add(0x10_0000, 0x8000_0000);
        f.reserve(0x10_0000, 0x30_0123);
        f.reserve(0x40_0000, 0x50_0000);
        assert_eq!(
            f.free_bytes(),
            0x9E000 + (0x40_0000 - 0x30_1000) + (0x8000_0000 - 0x50_0000)
        );
        let a = f.alloc(0x20_0000, 0x20_0000, u64::MAX).unwrap();
        assert_eq!(a, 0x7FE0_0000);
        let b = f.alloc(0x1000, 0x1000, 0x10_0000).unwrap();
        assert_eq!(b, 0x9E000, "limit keeps it below 1 MiB");
        assert!(f
            .ranges()
            .iter()
            .all(|r| r.end <= a || r.start >= a + 0x20_0000));
    }

    #[test]
    fn alloc_honours_alignment_and_fails_cleanly() {
        let mut f = FrameAllocator::new();
        f.add(0x1000, 0x50_0000);
        assert_eq!(f.alloc(0x20_0000, 0x20_0000, u64::MAX), Some(0x20_0000));
        // 0x1000..0x20_0000 and 0x40_0000..0x50_0000 remain: no aligned 2 MiB block.
        assert_eq!(f.alloc(0x20_0000, 0x20_0000, u64::MAX), None);
        assert_eq!(f.free_bytes(), 0x50_0000 - 0x1000 - 0x20_0000);
        f.free(0x20_0000, 0x20_0000);
        assert_eq!(f.free_bytes(), 0x50_0000 - 0x1000);
    }
}
