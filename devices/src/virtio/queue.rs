//! The split virtqueue (virtio 1.2, 2.7) from the device side: takes descriptor chains off the
//! available ring, validates them before any byte moves, and returns them on the used ring.
//!
//! Everything in guest memory is hostile: a head or `next` index past the queue, a chain longer
//! than the queue (which is also how a loop shows), a readable descriptor after a writable one
//! (2.7.4.2), an indirect descriptor (not offered), a zero-length buffer, an address range that
//! wraps, or ring memory outside RAM is a `QueueError`; the transport then marks the device
//! DEVICE_NEEDS_RESET. It is not the transport and knows no device type.

use alloc::vec::Vec;
use core::fmt;

use crate::mem::{GuestMemory, OutOfRam};

/// The largest queue any device here offers.
pub const QUEUE_MAX: u16 = 256;

/// Descriptor flags (2.7.5).
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const DESC_BYTES: u64 = 16;
/// The driver asks for no interrupt (2.7.7, without VIRTIO_F_EVENT_IDX).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    OutOfRam {
        gpa: u64,
    },
    /// The driver made more buffers available than the queue holds.
    AvailOverrun {
        avail_idx: u16,
        last_seen: u16,
    },
    IndexOutOfRange {
        index: u16,
    },
    /// More descriptors than the queue size: an oversize chain or a loop.
    ChainTooLong,
    ReadableAfterWritable {
        index: u16,
    },
    Indirect {
        index: u16,
    },
    ZeroLength {
        index: u16,
    },
    AddressWraps {
        index: u16,
    },
}

impl From<OutOfRam> for QueueError {
    fn from(e: OutOfRam) -> Self {
        Self::OutOfRam { gpa: e.gpa }
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutOfRam { gpa } => write!(f, "guest-physical {gpa:#x} is outside RAM"),
            Self::AvailOverrun {
                avail_idx,
                last_seen,
            } => write!(f, "available index {avail_idx} runs ahead of {last_seen}"),
            Self::IndexOutOfRange { index } => write!(f, "descriptor index {index} out of range"),
            Self::ChainTooLong => write!(f, "descriptor chain longer than the queue (a loop?)"),
            Self::ReadableAfterWritable { index } => {
                write!(f, "descriptor {index}: readable after writable")
            }
            Self::Indirect { index } => write!(f, "descriptor {index}: indirect, not negotiated"),
            Self::ZeroLength { index } => write!(f, "descriptor {index}: zero length"),
            Self::AddressWraps { index } => write!(f, "descriptor {index}: address range wraps"),
        }
    }
}

/// One validated buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// A validated chain: readable buffers first, then writable ones.
#[derive(Clone, Copy, Debug)]
pub struct Chain<'a> {
    pub head: u16,
    pub descs: &'a [Desc],
}

impl Chain<'_> {
    fn total(&self, writable: bool) -> u64 {
        self.descs
            .iter()
            .filter(|d| d.writable == writable)
            .map(|d| u64::from(d.len))
            .sum()
    }

    pub fn readable_len(&self) -> u64 {
        self.total(false)
    }

    pub fn writable_len(&self) -> u64 {
        self.total(true)
    }

    /// Copies readable bytes from byte `offset` of the readable part into `buf`; returns how
    /// many there were.
    pub fn read(
        &self,
        mem: &dyn GuestMemory,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, QueueError> {
        let mut done = 0;
        self.each_piece(false, offset, buf.len(), |gpa, at, len| {
            mem.read(gpa, &mut buf[at..at + len])?;
            done = at + len;
            Ok(())
        })?;
        Ok(done)
    }

    /// Copies `data` into the writable part from its byte `offset`; returns how much fitted.
    pub fn write(
        &self,
        mem: &mut dyn GuestMemory,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, QueueError> {
        let mut done = 0;
        self.each_piece(true, offset, data.len(), |gpa, at, len| {
            mem.write(gpa, &data[at..at + len])?;
            done = at + len;
            Ok(())
        })?;
        Ok(done)
    }

    /// Calls `f(gpa, position, len)` for each piece of `len` bytes from `offset` of the
    /// readable or writable part.
    fn each_piece(
        &self,
        writable: bool,
        mut offset: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), OutOfRam>,
    ) -> Result<(), QueueError> {
        let mut at = 0;
        for d in self.descs.iter().filter(|d| d.writable == writable) {
            if at == len {
                break;
            }
            let dlen = u64::from(d.len);
            if offset >= dlen {
                offset -= dlen;
                continue;
            }
            let n = usize::try_from(dlen - offset).map_or(len - at, |n| n.min(len - at));
            f(d.addr + offset, at, n)?;
            at += n;
            offset = 0;
        }
        Ok(())
    }
}

/// One split virtqueue's registers (as the driver programmed them) and the device's indices.
pub struct Queue {
    max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    last_avail: u16,
    used_idx: u16,
    /// The chain being served; its capacity is `max_size`, so filling it never allocates.
    chain: Vec<Desc>,
}

impl Queue {
    pub fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc: 0,
            driver: 0,
            device: 0,
            last_avail: 0,
            used_idx: 0,
            chain: Vec::with_capacity(usize::from(max_size)),
        }
    }

    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// Sets the size the driver chose: a power of two no larger than the maximum (2.7).
    pub fn set_size(&mut self, size: u16) {
        if size.is_power_of_two() && size <= self.max_size {
            self.size = size;
        }
    }

    /// Back to the state after device reset; the chain buffer is kept.
    pub fn reset(&mut self) {
        self.size = self.max_size;
        self.ready = false;
        self.desc = 0;
        self.driver = 0;
        self.device = 0;
        self.last_avail = 0;
        self.used_idx = 0;
        self.chain.clear();
    }

    /// Takes the next available chain, validated; `None` when the driver offered none.
    pub fn pop(&mut self, mem: &dyn GuestMemory) -> Result<Option<Chain<'_>>, QueueError> {
        if !self.ready {
            return Ok(None);
        }
        let avail_idx = mem.read_u16(self.driver + 2)?;
        let pending = avail_idx.wrapping_sub(self.last_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(QueueError::AvailOverrun {
                avail_idx,
                last_seen: self.last_avail,
            });
        }
        let slot = u64::from(self.last_avail % self.size);
        let head = mem.read_u16(self.driver + 4 + 2 * slot)?;
        // A bad chain is consumed too: the device stops until reset anyway.
        self.last_avail = self.last_avail.wrapping_add(1);
        self.walk(mem, head)?;
        Ok(Some(Chain {
            head,
            descs: &self.chain,
        }))
    }

    /// Reads and checks the chain starting at `head` into `self.chain`.
    fn walk(&mut self, mem: &dyn GuestMemory, head: u16) -> Result<(), QueueError> {
        self.chain.clear();
        let mut index = head;
        let mut seen_writable = false;
        loop {
            if index >= self.size {
                return Err(QueueError::IndexOutOfRange { index });
            }
            if self.chain.len() == usize::from(self.size) {
                return Err(QueueError::ChainTooLong);
            }
            let mut raw = [0u8; DESC_BYTES as usize];
            mem.read(self.desc + DESC_BYTES * u64::from(index), &mut raw)?;
            let addr = u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
            let flags = u16::from_le_bytes([raw[12], raw[13]]);
            let next = u16::from_le_bytes([raw[14], raw[15]]);
            let writable = flags & DESC_F_WRITE != 0;
            if flags & DESC_F_INDIRECT != 0 {
                return Err(QueueError::Indirect { index });
            }
            if len == 0 {
                return Err(QueueError::ZeroLength { index });
            }
            if addr.checked_add(u64::from(len)).is_none() {
                return Err(QueueError::AddressWraps { index });
            }
            if seen_writable && !writable {
                return Err(QueueError::ReadableAfterWritable { index });
            }
            seen_writable |= writable;
            self.chain.push(Desc {
                addr,
                len,
                writable,
            });
            if flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            index = next;
        }
    }

    /// Returns chain `head` with `written` bytes written to it. Tells whether the driver wants
    /// an interrupt for it.
    pub fn push_used(
        &mut self,
        mem: &mut dyn GuestMemory,
        head: u16,
        written: u32,
    ) -> Result<bool, QueueError> {
        let slot = u64::from(self.used_idx % self.size);
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&written.to_le_bytes());
        mem.write(self.device + 4 + 8 * slot, &elem)?;
        self.used_idx = self.used_idx.wrapping_add(1);
        mem.write(self.device + 2, &self.used_idx.to_le_bytes())?;
        let flags = mem.read_u16(self.driver)?;
        Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Guest memory for tests: `len` bytes at 0.
    pub struct FakeMem(pub std::vec::Vec<u8>);

    impl GuestMemory for FakeMem {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
            let at = usize::try_from(gpa).map_err(|_| OutOfRam { gpa })?;
            let src = self
                .0
                .get(at..at.saturating_add(buf.len()))
                .ok_or(OutOfRam { gpa })?;
            buf.copy_from_slice(src);
            Ok(())
        }

        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam> {
            let at = usize::try_from(gpa).map_err(|_| OutOfRam { gpa })?;
            let dst = self
                .0
                .get_mut(at..at.saturating_add(data.len()))
                .ok_or(OutOfRam { gpa })?;
            dst.copy_from_slice(data);
            Ok(())
        }
    }

    pub const DESC: u64 = 0x1000;
    pub const AVAIL: u64 = 0x2000;
    pub const USED: u64 = 0x3000;
    pub const SIZE: u16 = 8;

    /// A driver's view of one queue in `FakeMem`.
    pub struct Driver {
        pub mem: FakeMem,
        avail_idx: u16,
    }

    impl Driver {
        pub fn new() -> Self {
            Self {
                mem: FakeMem(std::vec![0; 0x10_0000]),
                avail_idx: 0,
            }
        }

        pub fn queue(&self) -> Queue {
            let mut q = Queue::new(QUEUE_MAX);
            q.set_size(SIZE);
            q.desc = DESC;
            q.driver = AVAIL;
            q.device = USED;
            q.ready = true;
            q
        }

        pub fn set_desc(&mut self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let at = DESC + 16 * u64::from(index);
            self.mem.write_u64(at, addr).unwrap();
            self.mem.write(at + 8, &len.to_le_bytes()).unwrap();
            self.mem.write(at + 12, &flags.to_le_bytes()).unwrap();
            self.mem.write(at + 14, &next.to_le_bytes()).unwrap();
        }

        /// Chains `bufs` (address, length, writable) from descriptor `first` and offers it.
        pub fn offer(&mut self, first: u16, bufs: &[(u64, u32, bool)]) {
            for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
                let index = first + i as u16;
                let last = i + 1 == bufs.len();
                let flags =
                    if writable { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
                self.set_desc(index, addr, len, flags, index + 1);
            }
            self.offer_head(first);
        }

        pub fn offer_head(&mut self, head: u16) {
            let slot = u64::from(self.avail_idx % SIZE);
            self.mem
                .write(AVAIL + 4 + 2 * slot, &head.to_le_bytes())
                .unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.mem
                .write(AVAIL + 2, &self.avail_idx.to_le_bytes())
                .unwrap();
        }

        pub fn used_idx(&self) -> u16 {
            self.mem.read_u16(USED + 2).unwrap()
        }

        pub fn used(&self, slot: u16) -> (u32, u32) {
            let at = USED + 4 + 8 * u64::from(slot);
            (
                self.mem.read_u32(at).unwrap(),
                self.mem.read_u32(at + 4).unwrap(),
            )
        }
    }

    fn pop(d: &Driver, q: &mut Queue) -> Result<Option<(u16, std::vec::Vec<Desc>)>, QueueError> {
        q.pop(&d.mem).map(|c| c.map(|c| (c.head, c.descs.to_vec())))
    }

    #[test]
    fn good_chain_is_taken_and_returned() {
        let mut d = Driver::new();
        let mut q = d.queue();
        assert_eq!(pop(&d, &mut q), Ok(None));
        d.offer(
            2,
            &[(0x8000, 16, false), (0x9000, 512, true), (0xA000, 1, true)],
        );
        let (head, descs) = pop(&d, &mut q).unwrap().unwrap();
        assert_eq!(head, 2);
        assert_eq!(
            descs,
            [
                Desc {
                    addr: 0x8000,
                    len: 16,
                    writable: false
                },
                Desc {
                    addr: 0x9000,
                    len: 512,
                    writable: true
                },
                Desc {
                    addr: 0xA000,
                    len: 1,
                    writable: true
                },
            ]
        );
        assert_eq!(pop(&d, &mut q), Ok(None), "taken once");
        assert_eq!(q.push_used(&mut d.mem, head, 513), Ok(true));
        assert_eq!(d.used_idx(), 1);
        assert_eq!(d.used(0), (2, 513));
        d.mem
            .write(AVAIL, &AVAIL_F_NO_INTERRUPT.to_le_bytes())
            .unwrap();
        assert_eq!(q.push_used(&mut d.mem, head, 0), Ok(false));
    }

    #[test]
    fn chain_reads_and_writes_span_buffers() {
        let mut d = Driver::new();
        let mut q = d.queue();
        d.mem.write(0x8000, b"abc").unwrap();
        d.mem.write(0x8100, b"defgh").unwrap();
        d.offer(
            0,
            &[
                (0x8000, 3, false),
                (0x8100, 5, false),
                (0x9000, 2, true),
                (0x9100, 4, true),
            ],
        );
        let chain = q.pop(&d.mem).unwrap().unwrap();
        assert_eq!((chain.readable_len(), chain.writable_len()), (8, 6));
        let mut buf = [0u8; 6];
        assert_eq!(chain.read(&d.mem, 1, &mut buf), Ok(6));
        assert_eq!(&buf, b"bcdefg");
        assert_eq!(chain.read(&d.mem, 6, &mut buf), Ok(2), "short at the end");
        let descs = chain.descs.to_vec();
        let chain = Chain {
            head: 0,
            descs: &descs,
        };
        assert_eq!(chain.write(&mut d.mem, 1, b"WXYZ!!"), Ok(5));
        let mut out = [0u8; 4];
        d.mem.read(0x9100, &mut out).unwrap();
        assert_eq!(&out, b"XYZ!");
        assert_eq!(d.mem.read_u16(0x9000).unwrap().to_le_bytes()[1], b'W');
    }

    #[test]
    fn loops_are_chains_too_long() {
        let mut d = Driver::new();
        let mut q = d.queue();
        d.set_desc(0, 0x8000, 4, DESC_F_NEXT, 1);
        d.set_desc(1, 0x8000, 4, DESC_F_NEXT, 0);
        d.offer_head(0);
        assert_eq!(pop(&d, &mut q), Err(QueueError::ChainTooLong));
        let mut q = d.queue();
        d.set_desc(3, 0x8000, 4, DESC_F_NEXT, 3);
        d.offer_head(3);
        let _ = pop(&d, &mut q);
        assert_eq!(pop(&d, &mut q), Err(QueueError::ChainTooLong), "self loop");
    }

    #[test]
    fn oversize_chain_is_refused() {
        let mut d = Driver::new();
        let mut q = d.queue();
        let bufs = [(0x8000, 4, false); SIZE as usize];
        d.offer(0, &bufs);
        assert_eq!(pop(&d, &mut q).map(|c| c.map(|c| c.1.len())), Ok(Some(8)));
        // A chain reaching past the queue's last descriptor names an index out of range.
        let mut q = d.queue();
        d.offer(4, &[(0x8000, 4, false); 5]);
        let _ = pop(&d, &mut q);
        assert_eq!(
            pop(&d, &mut q),
            Err(QueueError::IndexOutOfRange { index: 8 })
        );
    }

    #[test]
    fn out_of_range_indices_and_memory() {
        let mut d = Driver::new();
        let mut q = d.queue();
        d.offer_head(SIZE);
        assert_eq!(
            pop(&d, &mut q),
            Err(QueueError::IndexOutOfRange { index: SIZE })
        );
        let mut d = Driver::new();
        let mut q = d.queue();
        d.offer_head(0);
        q.desc = 0x10_0000 - 8;
        assert_eq!(
            pop(&d, &mut q),
            Err(QueueError::OutOfRam { gpa: 0x10_0000 - 8 })
        );
        let mut d = Driver::new();
        let mut q = d.queue();
        d.offer(0, &[(u64::MAX - 1, 4, false)]);
        assert_eq!(pop(&d, &mut q), Err(QueueError::AddressWraps { index: 0 }));
        // A buffer outside RAM passes the walk and fails the copy.
        let mut q = d.queue();
        d.offer(0, &[(0x20_0000, 4, false)]);
        let _ = pop(&d, &mut q);
        let chain = q.pop(&d.mem).unwrap().unwrap();
        assert_eq!(
            chain.read(&d.mem, 0, &mut [0; 4]),
            Err(QueueError::OutOfRam { gpa: 0x20_0000 })
        );
    }

    #[test]
    fn avail_index_running_ahead_is_refused() {
        let mut d = Driver::new();
        let mut q = d.queue();
        d.mem.write(AVAIL + 2, &(SIZE + 1).to_le_bytes()).unwrap();
        assert_eq!(
            pop(&d, &mut q),
            Err(QueueError::AvailOverrun {
                avail_idx: SIZE + 1,
                last_seen: 0
            })
        );
    }

    #[test]
    fn zero_length_indirect_and_misordered_descriptors() {
        let mut d = Driver::new();
        let mut q = d.queue();
        d.offer(0, &[(0x8000, 0, false)]);
        assert_eq!(pop(&d, &mut q), Err(QueueError::ZeroLength { index: 0 }));
        let mut q = d.queue();
        d.set_desc(0, 0x8000, 16, DESC_F_INDIRECT, 0);
        d.offer_head(0);
        let _ = pop(&d, &mut q);
        assert_eq!(pop(&d, &mut q), Err(QueueError::Indirect { index: 0 }));
        let mut q = d.queue();
        d.offer(0, &[(0x8000, 4, true), (0x9000, 4, false)]);
        for _ in 0..2 {
            let _ = pop(&d, &mut q);
        }
        assert_eq!(
            pop(&d, &mut q),
            Err(QueueError::ReadableAfterWritable { index: 1 })
        );
    }

    #[test]
    fn sizes_must_be_powers_of_two_within_the_maximum() {
        let mut q = Queue::new(QUEUE_MAX);
        q.set_size(100);
        assert_eq!(q.size, QUEUE_MAX);
        q.set_size(512);
        assert_eq!(q.size, QUEUE_MAX);
        q.set_size(64);
        assert_eq!(q.size, 64);
        q.ready = true;
        q.reset();
        assert_eq!((q.size, q.ready), (QUEUE_MAX, false));
    }

    #[test]
    fn a_queue_not_ready_offers_nothing() {
        let mut d = Driver::new();
        let mut q = d.queue();
        q.ready = false;
        d.offer(0, &[(0x8000, 4, false)]);
        assert_eq!(pop(&d, &mut q), Ok(None));
    }
}
