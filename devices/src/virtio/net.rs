//! virtio-net (virtio 1.2, 5.1) with only VIRTIO_NET_F_MAC: Ethernet frames the guest transmits
//! wait in an outbox for the switch, frames the switch delivers wait in an inbox until the guest
//! has posted a receive buffer. Both are fixed rings of whole frames, allocated once; a full
//! ring drops the newest frame, as a congested link would.
//!
//! It is not the switch (`crate::switch`) and does no offloads: no checksum, GSO or merged
//! receive buffers are offered, so every frame is at most `MAX_FRAME` bytes.

use alloc::boxed::Box;

use super::queue::{Queue, QueueError};
use crate::mem::GuestMemory;

pub const DEVICE_ID: u16 = 1;
const F_MAC: u64 = 1 << 5;
pub const RECEIVE_QUEUE: usize = 0;
pub const TRANSMIT_QUEUE: usize = 1;
pub const QUEUES: usize = 2;
/// An Ethernet frame without FCS at MTU 1500, with room for one VLAN tag.
pub const MAX_FRAME: usize = 1518;
/// The smallest frame: two addresses and the EtherType.
const MIN_FRAME: usize = 14;
/// `struct virtio_net_hdr` with `num_buffers`, always present with VIRTIO_F_VERSION_1 (5.1.6).
const NET_HDR: usize = 12;
const RING_FRAMES: usize = 32;

pub type Mac = [u8; 6];

/// A fixed ring of frames.
pub struct FrameRing {
    frames: Box<[[u8; MAX_FRAME]]>,
    lens: [u16; RING_FRAMES],
    head: usize,
    len: usize,
}

impl FrameRing {
    pub fn new() -> Self {
        Self {
            frames: alloc::vec![[0u8; MAX_FRAME]; RING_FRAMES].into_boxed_slice(),
            lens: [0; RING_FRAMES],
            head: 0,
            len: 0,
        }
    }

    /// Queues a copy of `frame`; false (dropped) when full or not a frame.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        if self.len == RING_FRAMES || !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            return false;
        }
        let slot = (self.head + self.len) % RING_FRAMES;
        self.frames[slot][..frame.len()].copy_from_slice(frame);
        self.lens[slot] = frame.len() as u16;
        self.len += 1;
        true
    }

    pub fn front(&self) -> Option<&[u8]> {
        (self.len > 0).then(|| &self.frames[self.head][..usize::from(self.lens[self.head])])
    }

    pub fn drop_front(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % RING_FRAMES;
            self.len -= 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

impl Default for FrameRing {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Net {
    mac: Mac,
    inbox: FrameRing,
    outbox: FrameRing,
    /// Frames the guest sent that were not frames or found the outbox full.
    pub tx_dropped: u64,
}

impl Net {
    pub fn new(mac: Mac) -> Self {
        Self {
            mac,
            inbox: FrameRing::new(),
            outbox: FrameRing::new(),
            tx_dropped: 0,
        }
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    pub fn features(&self) -> u64 {
        F_MAC
    }

    /// Device configuration (5.1.4): the MAC, then `status` (not valid without
    /// VIRTIO_NET_F_STATUS: zero).
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| self.mac.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Queues a frame from the switch for the guest; false when dropped.
    pub fn deliver(&mut self, frame: &[u8]) -> bool {
        self.inbox.push(frame)
    }

    /// The oldest frame the guest sent, still queued; `pop_sent` removes it.
    pub fn sent(&self) -> Option<&[u8]> {
        self.outbox.front()
    }

    pub fn pop_sent(&mut self) {
        self.outbox.drop_front();
    }

    /// Whether delivered frames wait for receive buffers.
    pub fn has_pending(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// Device reset drops the frames in flight.
    pub fn reset(&mut self) {
        self.inbox.clear();
        self.outbox.clear();
    }

    /// Moves sent frames to the outbox and delivered frames into receive buffers; returns a
    /// bit per queue whose interrupt is due.
    pub fn service(
        &mut self,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<u32, QueueError> {
        let mut interrupts = 0;
        if let Some(tx) = queues.get_mut(TRANSMIT_QUEUE) {
            interrupts |= u32::from(self.transmit(tx, mem)?) << TRANSMIT_QUEUE;
        }
        if let Some(rx) = queues.get_mut(RECEIVE_QUEUE) {
            interrupts |= u32::from(self.receive(rx, mem)?) << RECEIVE_QUEUE;
        }
        Ok(interrupts)
    }

    fn transmit(&mut self, tx: &mut Queue, mem: &mut dyn GuestMemory) -> Result<bool, QueueError> {
        let mut interrupt = false;
        let mut frame = [0u8; MAX_FRAME];
        loop {
            let head = {
                let Some(chain) = tx.pop(mem)? else {
                    return Ok(interrupt);
                };
                let total = chain.readable_len();
                let len = total.saturating_sub(NET_HDR as u64);
                let ok = (MIN_FRAME as u64..=MAX_FRAME as u64).contains(&len) && {
                    let n = chain.read(mem, NET_HDR as u64, &mut frame[..len as usize])?;
                    self.outbox.push(&frame[..n])
                };
                if !ok {
                    self.tx_dropped += 1;
                }
                chain.head
            };
            interrupt |= tx.push_used(mem, head, 0)?;
        }
    }

    fn receive(&mut self, rx: &mut Queue, mem: &mut dyn GuestMemory) -> Result<bool, QueueError> {
        let mut interrupt = false;
        while let Some(frame) = self.inbox.front() {
            let (head, written) = {
                let Some(chain) = rx.pop(mem)? else {
                    return Ok(interrupt);
                };
                let mut hdr = [0u8; NET_HDR];
                hdr[10] = 1; // num_buffers
                let fits = chain.writable_len() >= (NET_HDR + frame.len()) as u64;
                let written = if fits {
                    chain.write(mem, 0, &hdr)?;
                    chain.write(mem, NET_HDR as u64, frame)?;
                    (NET_HDR + frame.len()) as u32
                } else {
                    0
                };
                (chain.head, written)
            };
            self.inbox.drop_front();
            interrupt |= rx.push_used(mem, head, written)?;
        }
        Ok(interrupt)
    }
}

/// The MAC xl gives a vif without `mac=`: 00:16:3e and three random bytes, the top bit of the
/// fourth byte cleared (`tools/libs/light/libxl_nic.c`).
pub fn default_mac(random: [u8; 3]) -> Mac {
    [0x00, 0x16, 0x3E, random[0] & 0x7F, random[1], random[2]]
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex, either case).
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue::tests::Driver;

    fn frame(len: usize, fill: u8) -> std::vec::Vec<u8> {
        std::vec![fill; len]
    }

    #[test]
    fn sent_frames_lose_their_header() {
        let mut net = Net::new([2, 0, 0, 0, 0, 1]);
        let mut d = Driver::new();
        let mut queues = [d.queue(), d.queue()];
        d.mem.write(0x8000, &[0; NET_HDR]).unwrap();
        d.mem.write(0x9000, &frame(60, 0xAB)).unwrap();
        d.offer(0, &[(0x8000, NET_HDR as u32, false), (0x9000, 60, false)]);
        // Queue 0 shares the fake rings; it has nothing new once queue 1 took the chain.
        assert_eq!(net.transmit(&mut queues[1], &mut d.mem), Ok(true));
        assert_eq!(net.sent(), Some(&frame(60, 0xAB)[..]));
        net.pop_sent();
        assert_eq!(net.sent(), None);
        d.offer(0, &[(0x8000, NET_HDR as u32 + 4, false)]);
        net.transmit(&mut queues[1], &mut d.mem).unwrap();
        assert_eq!((net.sent(), net.tx_dropped), (None, 1), "runt dropped");
    }

    #[test]
    fn delivered_frames_wait_for_buffers() {
        let mut net = Net::new([2, 0, 0, 0, 0, 1]);
        let mut d = Driver::new();
        let mut rx = d.queue();
        assert!(net.deliver(&frame(100, 0x5A)));
        assert!(!net.deliver(&frame(MAX_FRAME + 1, 0)));
        assert_eq!(net.receive(&mut rx, &mut d.mem), Ok(false), "no buffer yet");
        assert!(net.has_pending());
        d.offer(0, &[(0x9000, 1526, true)]);
        assert_eq!(net.receive(&mut rx, &mut d.mem), Ok(true));
        assert!(!net.has_pending());
        assert_eq!(d.used(0), (0, 112));
        assert_eq!(d.mem.read_u16(0x9000 + 10).unwrap(), 1, "num_buffers");
        let mut got = [0u8; 100];
        d.mem.read(0x9000 + NET_HDR as u64, &mut got).unwrap();
        assert!(got.iter().all(|&b| b == 0x5A));
        // A buffer too small takes the frame away with nothing written.
        net.deliver(&frame(100, 1));
        d.offer(1, &[(0x9000, 50, true)]);
        net.receive(&mut rx, &mut d.mem).unwrap();
        assert_eq!(d.used(1), (1, 0));
    }

    #[test]
    fn the_inbox_drops_when_full() {
        let mut net = Net::new([0; 6]);
        for _ in 0..RING_FRAMES {
            assert!(net.deliver(&frame(64, 0)));
        }
        assert!(!net.deliver(&frame(64, 0)));
    }

    #[test]
    fn macs() {
        let mac = default_mac([0xFF, 0x12, 0x34]);
        assert_eq!(mac, [0x00, 0x16, 0x3E, 0x7F, 0x12, 0x34]);
        assert_eq!(
            parse_mac("00:16:3E:74:3d:76"),
            Some([0, 0x16, 0x3E, 0x74, 0x3D, 0x76])
        );
        for bad in [
            "00:16:3e:74:3d",
            "00:16:3e:74:3d:76:00",
            "0:16:3e:74:3d:76",
            "zz:16:3e:74:3d:76",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        let net = Net::new(mac);
        let mut cfg = [0u8; 8];
        net.read_config(0, &mut cfg);
        assert_eq!(&cfg[..6], &mac);
        assert_eq!(&cfg[6..], &[0, 0]);
    }
}
