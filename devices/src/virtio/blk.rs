//! virtio-blk (virtio 1.2, 5.2): read, write, flush and get-id requests served from a
//! `BlockStore`, and `Overlay`, the store for a disk given as a boot module: reads come from
//! the module's bytes, writes go to 4 KiB blocks allocated on first write and kept for the
//! VM's lifetime (the module itself is never changed).
//!
//! It is not the transport (`super::VirtioPci`) and not a host disk driver.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;

use super::queue::{Chain, Queue, QueueError};
use crate::mem::GuestMemory;

pub const DEVICE_ID: u16 = 2;
/// Feature bits (5.2.3).
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

pub const SECTOR: u64 = 512;
const REQ_IN: u32 = 0;
const REQ_OUT: u32 = 1;
const REQ_FLUSH: u32 = 4;
const REQ_GET_ID: u32 = 8;
const STATUS_OK: u8 = 0;
const STATUS_IOERR: u8 = 1;
const STATUS_UNSUPP: u8 = 2;
const HEADER_BYTES: u64 = 16;
/// GET_ID answers with up to 20 bytes (5.2.6).
const ID_BYTES: usize = 20;
/// Data moves through a stack buffer of this size.
const CHUNK: usize = 4096;

/// The store could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoError;

/// What a virtual disk reads from and writes to, in bytes from its start.
pub trait BlockStore {
    /// Capacity in bytes (a multiple of `SECTOR`).
    fn capacity(&self) -> u64;
    fn read_only(&self) -> bool;
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError>;
    fn flush(&mut self) -> Result<(), IoError>;
}

const BLOCK: u64 = 4096;

/// A module image with the guest's writes kept in memory on top of it.
pub struct Overlay {
    base: &'static [u8],
    blocks: BTreeMap<u64, Box<[u8; BLOCK as usize]>>,
    read_only: bool,
}

impl Overlay {
    pub fn new(base: &'static [u8], read_only: bool) -> Self {
        Self {
            base,
            blocks: BTreeMap::new(),
            read_only,
        }
    }

    /// The pieces of `[offset, offset + len)` within one block each: (block, offset in it,
    /// position in the request, length).
    fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
        let mut at = 0usize;
        core::iter::from_fn(move || {
            if at == len {
                return None;
            }
            let pos = offset + at as u64;
            let in_block = (pos % BLOCK) as usize;
            let n = (BLOCK as usize - in_block).min(len - at);
            let piece = (pos / BLOCK, in_block, at, n);
            at += n;
            Some(piece)
        })
    }

    /// Block `block` as the module has it, zero past its end.
    fn base_block(&self, block: u64) -> Box<[u8; BLOCK as usize]> {
        let mut b = Box::new([0u8; BLOCK as usize]);
        let start = usize::try_from(block * BLOCK).unwrap_or(usize::MAX);
        if let Some(src) = self.base.get(start..) {
            let n = src.len().min(BLOCK as usize);
            b[..n].copy_from_slice(&src[..n]);
        }
        b
    }

    fn in_range(&self, offset: u64, len: usize) -> Result<(), IoError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.capacity() => Ok(()),
            _ => Err(IoError),
        }
    }
}

impl BlockStore for Overlay {
    fn capacity(&self) -> u64 {
        (self.base.len() as u64).next_multiple_of(SECTOR)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.in_range(offset, buf.len())?;
        for (block, in_block, at, n) in Self::pieces(offset, buf.len()) {
            let dst = &mut buf[at..at + n];
            match self.blocks.get(&block) {
                Some(b) => dst.copy_from_slice(&b[in_block..in_block + n]),
                None => {
                    let start = (block * BLOCK) as usize + in_block;
                    let src = self.base.get(start..).unwrap_or(&[]);
                    let have = src.len().min(n);
                    dst[..have].copy_from_slice(&src[..have]);
                    dst[have..].fill(0);
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        if self.read_only {
            return Err(IoError);
        }
        self.in_range(offset, data.len())?;
        for (block, in_block, at, n) in Self::pieces(offset, data.len()) {
            if !self.blocks.contains_key(&block) {
                let copy = self.base_block(block);
                self.blocks.insert(block, copy);
            }
            if let Some(b) = self.blocks.get_mut(&block) {
                b[in_block..in_block + n].copy_from_slice(&data[at..at + n]);
            }
        }
        Ok(())
    }

    /// Writes live in memory only: nothing to make stable.
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}

/// A virtio-blk device over a store, with the serial number GET_ID reports.
pub struct Blk {
    store: Box<dyn BlockStore>,
    id: [u8; ID_BYTES],
}

impl Blk {
    pub fn new(store: Box<dyn BlockStore>, serial: &str) -> Self {
        let mut id = [0u8; ID_BYTES];
        let n = serial.len().min(ID_BYTES);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        Self { store, id }
    }

    pub fn features(&self) -> u64 {
        F_FLUSH | if self.store.read_only() { F_RO } else { 0 }
    }

    /// Device configuration (5.2.4): `capacity` in 512-byte sectors, the rest zero.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let capacity = (self.store.capacity() / SECTOR).to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| capacity.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Serves every request on the request queue; tells whether an interrupt is due.
    pub fn service(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let mut interrupt = false;
        loop {
            let (head, written) = {
                let Some(chain) = queue.pop(mem)? else {
                    return Ok(interrupt);
                };
                (chain.head, self.request(&chain, mem)?)
            };
            interrupt |= queue.push_used(mem, head, written)?;
        }
    }

    /// One request: header, data, status byte (5.2.6). Returns the bytes written to the chain.
    fn request(&mut self, chain: &Chain, mem: &mut dyn GuestMemory) -> Result<u32, QueueError> {
        let mut header = [0u8; HEADER_BYTES as usize];
        let writable = chain.writable_len();
        if chain.read(mem, 0, &mut header)? < header.len() || writable == 0 {
            // No room for a status: nothing can be reported, the chain goes back untouched.
            return Ok(0);
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let data_in = writable - 1;
        let (status, data_written) = match kind {
            REQ_IN => self.read_in(chain, mem, sector, data_in)?,
            REQ_OUT => self.write_out(chain, mem, sector)?,
            REQ_FLUSH => (status_of(self.store.flush()), 0),
            REQ_GET_ID => {
                let n = chain.write(mem, 0, &self.id[..(data_in as usize).min(ID_BYTES)])?;
                (STATUS_OK, n as u64)
            }
            _ => (STATUS_UNSUPP, 0),
        };
        chain.write(mem, data_in, &[status])?;
        Ok(u32::try_from(data_written + 1).unwrap_or(u32::MAX))
    }

    fn read_in(
        &mut self,
        chain: &Chain,
        mem: &mut dyn GuestMemory,
        sector: u64,
        len: u64,
    ) -> Result<(u8, u64), QueueError> {
        let Some(start) = self.check(sector, len) else {
            return Ok((STATUS_IOERR, 0));
        };
        let mut buf = [0u8; CHUNK];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            if self.store.read(start + done, &mut buf[..n]).is_err() {
                return Ok((STATUS_IOERR, done));
            }
            chain.write(mem, done, &buf[..n])?;
            done += n as u64;
        }
        Ok((STATUS_OK, len))
    }

    fn write_out(
        &mut self,
        chain: &Chain,
        mem: &mut dyn GuestMemory,
        sector: u64,
    ) -> Result<(u8, u64), QueueError> {
        let len = chain.readable_len() - HEADER_BYTES;
        let Some(start) = self.check(sector, len) else {
            return Ok((STATUS_IOERR, 0));
        };
        if self.store.read_only() {
            return Ok((STATUS_IOERR, 0));
        }
        let mut buf = [0u8; CHUNK];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            chain.read(mem, HEADER_BYTES + done, &mut buf[..n])?;
            if self.store.write(start + done, &buf[..n]).is_err() {
                return Ok((STATUS_IOERR, 0));
            }
            done += n as u64;
        }
        Ok((STATUS_OK, 0))
    }

    /// The byte offset of a transfer of `len` bytes at `sector`, if whole sectors on the disk.
    fn check(&self, sector: u64, len: u64) -> Option<u64> {
        let start = sector.checked_mul(SECTOR)?;
        let end = start.checked_add(len)?;
        (len.is_multiple_of(SECTOR) && end <= self.store.capacity()).then_some(start)
    }
}

fn status_of(r: Result<(), IoError>) -> u8 {
    if r.is_ok() {
        STATUS_OK
    } else {
        STATUS_IOERR
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue::tests::Driver;

    const HDR: u64 = 0x8000;
    const DATA: u64 = 0x9000;
    const STATUS: u64 = 0xA000;

    fn disk(bytes: usize) -> Blk {
        let base: &'static [u8] =
            std::boxed::Box::leak((0..bytes).map(|i| (i / 512) as u8).collect());
        Blk::new(Box::new(Overlay::new(base, false)), "hvdisk0")
    }

    fn header(d: &mut Driver, kind: u32, sector: u64) {
        d.mem.write(HDR, &kind.to_le_bytes()).unwrap();
        d.mem.write_u64(HDR + 8, sector).unwrap();
    }

    fn status(d: &Driver) -> u8 {
        let mut b = [0];
        d.mem.read(STATUS, &mut b).unwrap();
        b[0]
    }

    #[test]
    fn capacity_in_sectors_rounds_up() {
        let blk = disk(1000);
        let mut cap = [0u8; 8];
        blk.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 2);
        let mut tail = [0xFFu8; 4];
        blk.read_config(6, &mut tail);
        assert_eq!(tail, [0; 4]);
        assert_eq!(blk.features() & F_RO, 0);
    }

    #[test]
    fn reads_then_writes_then_reads_back() {
        let mut blk = disk(8192);
        let mut d = Driver::new();
        let mut q = d.queue();
        header(&mut d, REQ_IN, 3);
        d.offer(
            0,
            &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)],
        );
        assert_eq!(blk.service(&mut q, &mut d.mem), Ok(true));
        assert_eq!(status(&d), STATUS_OK);
        assert_eq!(d.used(0), (0, 1025));
        let mut got = [0u8; 1024];
        d.mem.read(DATA, &mut got).unwrap();
        assert!(got[..512].iter().all(|&b| b == 3) && got[512..].iter().all(|&b| b == 4));

        d.mem.write(DATA, &[0xEE; 512]).unwrap();
        header(&mut d, REQ_OUT, 15);
        d.offer(
            3,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        assert_eq!(blk.service(&mut q, &mut d.mem), Ok(true));
        assert_eq!((status(&d), d.used(1)), (STATUS_OK, (3, 1)));

        d.mem.write(DATA, &[0; 1024]).unwrap();
        header(&mut d, REQ_IN, 14);
        d.offer(
            0,
            &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)],
        );
        blk.service(&mut q, &mut d.mem).unwrap();
        d.mem.read(DATA, &mut got).unwrap();
        assert!(got[..512].iter().all(|&b| b == 14), "unwritten sector");
        assert!(got[512..].iter().all(|&b| b == 0xEE), "written sector");
    }

    #[test]
    fn out_of_range_and_unknown_requests_report_status() {
        let mut blk = disk(4096);
        let mut d = Driver::new();
        let mut q = d.queue();
        header(&mut d, REQ_IN, 7);
        d.offer(
            0,
            &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)],
        );
        blk.service(&mut q, &mut d.mem).unwrap();
        assert_eq!(status(&d), STATUS_IOERR, "past the end");
        header(&mut d, REQ_IN, u64::MAX);
        d.offer(0, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        blk.service(&mut q, &mut d.mem).unwrap();
        assert_eq!(status(&d), STATUS_IOERR, "sector overflows");
        header(&mut d, REQ_IN, 0);
        d.offer(0, &[(HDR, 16, false), (DATA, 100, true), (STATUS, 1, true)]);
        blk.service(&mut q, &mut d.mem).unwrap();
        assert_eq!(status(&d), STATUS_IOERR, "not whole sectors");
        header(&mut d, 99, 0);
        d.offer(0, &[(HDR, 16, false), (STATUS, 1, true)]);
        blk.service(&mut q, &mut d.mem).unwrap();
        assert_eq!(status(&d), STATUS_UNSUPP);
        header(&mut d, REQ_FLUSH, 0);
        d.offer(0, &[(HDR, 16, false), (STATUS, 1, true)]);
        blk.service(&mut q, &mut d.mem).unwrap();
        assert_eq!(status(&d), STATUS_OK);
    }

    #[test]
    fn get_id_and_read_only_disks() {
        let base: &'static [u8] = &[0; 512];
        let mut blk = Blk::new(Box::new(Overlay::new(base, true)), "serial-1");
        assert_ne!(blk.features() & F_RO, 0);
        let mut d = Driver::new();
        let mut q = d.queue();
        header(&mut d, REQ_GET_ID, 0);
        d.offer(0, &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
        blk.service(&mut q, &mut d.mem).unwrap();
        let mut id = [0u8; 20];
        d.mem.read(DATA, &mut id).unwrap();
        assert_eq!(&id[..9], b"serial-1\0");
        header(&mut d, REQ_OUT, 0);
        d.offer(
            0,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        blk.service(&mut q, &mut d.mem).unwrap();
        assert_eq!(status(&d), STATUS_IOERR);
    }

    #[test]
    fn malformed_chains_are_queue_errors_not_panics() {
        let mut blk = disk(4096);
        let mut d = Driver::new();
        let mut q = d.queue();
        header(&mut d, REQ_IN, 0);
        d.offer(
            0,
            &[
                (HDR, 16, false),
                (0x4000_0000, 512, true),
                (STATUS, 1, true),
            ],
        );
        assert_eq!(
            blk.service(&mut q, &mut d.mem),
            Err(QueueError::OutOfRam { gpa: 0x4000_0000 })
        );
        // A chain without a writable status byte is returned untouched.
        d.offer(0, &[(HDR, 16, false)]);
        assert_eq!(blk.service(&mut q, &mut d.mem), Ok(true));
    }

    #[test]
    fn overlay_writes_straddle_blocks_and_leave_the_base_alone() {
        let base: &'static [u8] = std::boxed::Box::leak(std::vec![7u8; 3 * 4096].into());
        let mut o = Overlay::new(base, false);
        o.write(4000, &[1; 200]).unwrap();
        let mut got = [0u8; 300];
        o.read(3950, &mut got).unwrap();
        assert!(got[..50].iter().all(|&b| b == 7));
        assert!(got[50..250].iter().all(|&b| b == 1));
        assert!(got[250..].iter().all(|&b| b == 7));
        assert!(base.iter().all(|&b| b == 7));
        assert_eq!(o.blocks.len(), 2);
        assert_eq!(o.write(3 * 4096 - 1, &[0; 2]), Err(IoError));
    }
}
