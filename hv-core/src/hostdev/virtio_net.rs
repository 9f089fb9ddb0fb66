//! A polled driver for a host virtio-net device on the modern PCI transport (virtio 1.2, 5.1):
//! a receive queue kept full of buffers and a transmit queue with one frame in flight, with
//! the MAC the device reports. It is the switch's uplink (`devices::switch::Uplink`).
//!
//! It negotiates no offloads (no checksum, no segmentation, no mergeable buffers), so every
//! frame travels whole behind a zeroed 12-byte `virtio_net_hdr` (5.1.6).

use devices::switch::Uplink;
use devices::virtio::net::MAX_FRAME;

use super::transport::{Regs, Transport};
use super::virtqueue::{self, Buffer, SplitQueue};
use super::Bus;

/// VIRTIO_NET_F_MAC (5.1.3).
const F_MAC: u64 = 1 << 5;
/// `virtio_net_hdr` with VIRTIO_F_VERSION_1 (5.1.6).
const HEADER: usize = 12;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const RX_BUFFERS: u16 = virtqueue::MAX_SIZE;
const TX_SIZE: u16 = 2;
const BUFFER_BYTES: u64 = 2048;
/// The driver's DMA memory: both queues, the transmit buffer, then the receive buffers.
const TX_RINGS: u64 = virtqueue::BYTES;
const TX_BUFFER: u64 = 0x800;
const RX_BUFFER0: u64 = 0x1000;
/// Bytes of DMA memory a driver needs (page-aligned, physically contiguous).
pub const DMA_BYTES: u64 = RX_BUFFER0 + BUFFER_BYTES * RX_BUFFERS as u64;

/// An initialized host virtio-net device.
pub struct HostNet<B> {
    bus: B,
    transport: Transport,
    dma: u64,
    rx: SplitQueue,
    tx: SplitQueue,
    rx_notify: u64,
    tx_notify: u64,
    mac: Option<[u8; 6]>,
    timeout: u64,
    broken: bool,
}

impl<B: Bus> HostNet<B> {
    /// Resets and initializes the device (3.1.1) with its queues and buffers in the
    /// `DMA_BYTES` at physical `dma`, and offers it every receive buffer. `timeout` (in
    /// `Bus::now` ticks) bounds a transmission.
    pub fn init(mut bus: B, regs: Regs, dma: u64, timeout: u64) -> Result<Self, &'static str> {
        let transport = Transport::new(regs);
        let features = transport.start(&mut bus, F_MAC, timeout)?;
        let rx = SplitQueue::new(&mut bus, dma, RX_BUFFERS);
        let tx = SplitQueue::new(&mut bus, dma + TX_RINGS, TX_SIZE);
        let rx_notify = transport.queue(&mut bus, RX_QUEUE, &rx)?;
        let tx_notify = transport.queue(&mut bus, TX_QUEUE, &tx)?;
        let mac = (features & F_MAC != 0).then(|| {
            transport.read_config(&mut bus, |bus, device| {
                core::array::from_fn(|i| bus.read8(device + i as u64))
            })
        });
        transport.ready(&mut bus);
        let mut net = Self {
            bus,
            transport,
            dma,
            rx,
            tx,
            rx_notify,
            tx_notify,
            mac,
            timeout,
            broken: false,
        };
        for i in 0..RX_BUFFERS {
            net.offer_rx(i);
        }
        net.bus.write16(net.rx_notify, RX_QUEUE);
        Ok(net)
    }

    /// The MAC the device reports, if it offers one.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    fn rx_buffer(&self, index: u16) -> u64 {
        self.dma + RX_BUFFER0 + BUFFER_BYTES * u64::from(index)
    }

    fn offer_rx(&mut self, index: u16) {
        let buffer = Buffer {
            pa: self.rx_buffer(index),
            len: BUFFER_BYTES as u32,
            writable: true,
        };
        self.rx.offer(&mut self.bus, index, &[buffer]);
    }
}

impl<B: Bus> Uplink for HostNet<B> {
    /// Sends `frame` and waits until the device has taken it; a frame too long, or a device
    /// that does not answer within the timeout (which stops all further sending), drops it.
    fn send(&mut self, frame: &[u8]) {
        if self.broken || frame.len() > MAX_FRAME {
            return;
        }
        let at = self.dma + TX_BUFFER;
        self.bus.dma_write(at, &[0; HEADER]);
        self.bus.dma_write(at + HEADER as u64, frame);
        let buffer = Buffer {
            pa: at,
            len: (HEADER + frame.len()) as u32,
            writable: false,
        };
        self.tx.offer(&mut self.bus, 0, &[buffer]);
        self.bus.write16(self.tx_notify, TX_QUEUE);
        let start = self.bus.now();
        while self.tx.take_used(&mut self.bus).is_none() {
            if self.bus.now().wrapping_sub(start) > self.timeout {
                self.broken = true;
                self.transport.fail(&mut self.bus);
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// The next received frame, copied into `buf` (cut to its length), and its buffer offered
    /// again. A used entry naming no buffer of ours is skipped.
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let (id, written) = self.rx.take_used(&mut self.bus)?;
            if id >= RX_BUFFERS {
                continue;
            }
            let len = (written as usize)
                .min(BUFFER_BYTES as usize)
                .saturating_sub(HEADER)
                .min(buf.len());
            let at = self.rx_buffer(id) + HEADER as u64;
            self.bus.dma_read(at, &mut buf[..len]);
            self.offer_rx(id);
            self.bus.write16(self.rx_notify, RX_QUEUE);
            return Some(len);
        }
    }
}
