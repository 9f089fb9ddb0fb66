//! A polled driver for a host virtio-blk device on the modern PCI transport: the
//! initialization sequence (virtio 1.2, 3.1.1), feature negotiation (VIRTIO_F_VERSION_1, and
//! VIRTIO_BLK_F_FLUSH when offered), one request queue, and synchronous read, write and flush
//! requests (5.2.6) through a bounce buffer in the monitor's memory.
//!
//! It is not interrupt-driven and keeps one request in flight; a request the device does not
//! complete within the timeout leaves the driver refusing all further I/O, since the device
//! may still own the queue.

use devices::virtio::blk::{IoError, SECTOR};

use super::partition::Disk;
use super::transport::{Regs, Transport};
use super::virtqueue::{self, Buffer, SplitQueue};
use super::Bus;

/// VIRTIO_BLK_F_FLUSH (5.2.3).
const F_FLUSH: u64 = 1 << 9;

const REQ_IN: u32 = 0;
const REQ_OUT: u32 = 1;
const REQ_FLUSH: u32 = 4;
const STATUS_OK: u8 = 0;

/// Entries in the request queue: a request takes at most three descriptors.
const QUEUE_SIZE: u16 = 4;
/// The driver's DMA memory: the queue, a request header, its status byte and a data buffer.
const HEADER: u64 = virtqueue::BYTES;
const STATUS: u64 = HEADER + 16;
const DATA: u64 = 0x1000;
const DATA_BYTES: u64 = 0x1000;
/// Bytes of DMA memory a driver needs (page-aligned, physically contiguous).
pub const DMA_BYTES: u64 = DATA + DATA_BYTES;

/// An initialized host virtio-blk device.
pub struct HostBlk<B> {
    bus: B,
    transport: Transport,
    notify: u64,
    dma: u64,
    queue: SplitQueue,
    sectors: u64,
    flush: bool,
    timeout: u64,
    broken: bool,
}

impl<B: Bus> HostBlk<B> {
    /// Resets and initializes the device (3.1.1), with its queue and buffers in the
    /// `DMA_BYTES` at physical `dma`. `timeout` is in `Bus::now` ticks.
    pub fn init(mut bus: B, regs: Regs, dma: u64, timeout: u64) -> Result<Self, &'static str> {
        let transport = Transport::new(regs);
        let features = transport.start(&mut bus, F_FLUSH, timeout)?;
        let queue = SplitQueue::new(&mut bus, dma, QUEUE_SIZE);
        let notify = transport.queue(&mut bus, 0, &queue)?;
        transport.ready(&mut bus);
        let sectors = transport.read_config(&mut bus, |bus, device| {
            u64::from(bus.read32(device)) | u64::from(bus.read32(device + 4)) << 32
        });
        Ok(Self {
            bus,
            transport,
            notify,
            dma,
            queue,
            sectors,
            flush: features & F_FLUSH != 0,
            timeout,
            broken: false,
        })
    }

    /// Whether flushes reach the device (without VIRTIO_BLK_F_FLUSH it has no volatile cache
    /// to flush, 5.2.6.2).
    pub fn has_flush(&self) -> bool {
        self.flush
    }

    /// One request: header, optional data buffer (`len` bytes of the bounce buffer, written
    /// by the device when `device_writes`), status byte.
    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        len: u32,
        device_writes: bool,
    ) -> Result<(), IoError> {
        if self.broken {
            return Err(IoError);
        }
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        self.bus.dma_write(self.dma + HEADER, &header);
        self.bus.dma_write(self.dma + STATUS, &[0xFF]);
        let head = Buffer {
            pa: self.dma + HEADER,
            len: 16,
            writable: false,
        };
        let data = Buffer {
            pa: self.dma + DATA,
            len,
            writable: device_writes,
        };
        let status = Buffer {
            pa: self.dma + STATUS,
            len: 1,
            writable: true,
        };
        if len == 0 {
            self.queue.offer(&mut self.bus, 0, &[head, status]);
        } else {
            self.queue.offer(&mut self.bus, 0, &[head, data, status]);
        }
        self.bus.write16(self.notify, 0);
        let start = self.bus.now();
        while self.queue.take_used(&mut self.bus).is_none() {
            if self.bus.now().wrapping_sub(start) > self.timeout {
                self.broken = true;
                self.transport.fail(&mut self.bus);
                return Err(IoError);
            }
            core::hint::spin_loop();
        }
        let mut status = [0xFF];
        self.bus.dma_read(self.dma + STATUS, &mut status);
        if status[0] == STATUS_OK {
            Ok(())
        } else {
            Err(IoError)
        }
    }

    /// Checks a transfer of `len` bytes at `sector`: whole sectors within the disk.
    fn check(&self, sector: u64, len: usize) -> Result<(), IoError> {
        let count = (len as u64) / SECTOR;
        match sector.checked_add(count) {
            Some(end) if end <= self.sectors && (len as u64).is_multiple_of(SECTOR) => Ok(()),
            _ => Err(IoError),
        }
    }
}

impl<B: Bus> Disk for HostBlk<B> {
    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.check(sector, buf.len())?;
        for (i, chunk) in buf.chunks_mut(DATA_BYTES as usize).enumerate() {
            let at = sector + i as u64 * (DATA_BYTES / SECTOR);
            self.request(REQ_IN, at, chunk.len() as u32, true)?;
            self.bus.dma_read(self.dma + DATA, chunk);
        }
        Ok(())
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), IoError> {
        self.check(sector, data.len())?;
        for (i, chunk) in data.chunks(DATA_BYTES as usize).enumerate() {
            let at = sector + i as u64 * (DATA_BYTES / SECTOR);
            self.bus.dma_write(self.dma + DATA, chunk);
            self.request(REQ_OUT, at, chunk.len() as u32, false)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        if self.flush {
            self.request(REQ_FLUSH, 0, 0, false)
        } else {
            Ok(())
        }
    }
}
