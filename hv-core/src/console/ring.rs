//! A byte ring that keeps the most recent output of one guest's console, so that nothing is
//! lost while nobody is attached and attaching can replay what happened lately. It is written
//! a byte at a time on the exit path: fixed capacity, no allocation after creation.
//!
//! It is not the serial port and it does not decide what is shown.

/// The capacity of a guest's ring.
pub const GUEST_RING_BYTES: usize = 16 * 1024;

/// A ring of `N` bytes (`N` ≥ 1); `const` so that the monitor's log ring can be a static.
pub struct Ring<const N: usize> {
    buf: [u8; N],
    /// Where the next byte goes.
    head: usize,
    /// Bytes held (at most the capacity).
    len: usize,
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Ring<N> {
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            head: 0,
            len: 0,
        }
    }

    pub fn push(&mut self, byte: u8) {
        let Some(slot) = self.buf.get_mut(self.head) else {
            return;
        };
        *slot = byte;
        self.head = (self.head + 1) % self.buf.len();
        self.len = (self.len + 1).min(self.buf.len());
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `n`-th oldest byte held.
    fn at(&self, n: usize) -> u8 {
        let start = (self.head + self.buf.len() - self.len) % self.buf.len();
        self.buf[(start + n) % self.buf.len()]
    }

    /// Passes to `out` the last `max` bytes at most, starting at a line start when there is
    /// one in that span, so that a replay does not begin mid-line.
    pub fn replay(&self, max: usize, out: &mut impl FnMut(u8)) {
        let take = max.min(self.len);
        let first = self.len - take;
        let mut from = first;
        if first > 0 {
            if let Some(nl) = (first..self.len).find(|&n| self.at(n - 1) == b'\n') {
                from = nl;
            }
        }
        for n in from..self.len {
            out(self.at(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn replayed<const N: usize>(r: &Ring<N>, max: usize) -> Vec<u8> {
        let mut v = Vec::new();
        r.replay(max, &mut |b| v.push(b));
        v
    }

    #[test]
    fn keeps_the_latest_bytes() {
        let mut r = Ring::<8>::new();
        assert!(r.is_empty());
        for &b in b"abcdefghijk" {
            r.push(b);
        }
        assert_eq!(r.len(), 8);
        assert_eq!(replayed(&r, 100), b"defghijk");
        assert_eq!(replayed(&r, 3), b"ijk", "no line start in the span");
    }

    #[test]
    fn replay_starts_at_a_line_start() {
        let mut r = Ring::<64>::new();
        for &b in b"first line\nsecond line\nthird" {
            r.push(b);
        }
        assert_eq!(replayed(&r, 14), b"third");
        assert_eq!(replayed(&r, 20), b"second line\nthird");
        assert_eq!(replayed(&r, 64), b"first line\nsecond line\nthird");
        assert_eq!(replayed(&Ring::<0>::new(), 10), b"");
        let mut empty = Ring::<0>::new();
        empty.push(1);
        assert!(empty.is_empty(), "a zero-sized ring holds nothing");
    }
}
