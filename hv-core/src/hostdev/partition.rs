//! A guest disk backed by a range of sectors of a host disk: the `BlockStore` the guest's
//! virtio-blk serves a `phy:` target from. Guest offsets are checked against the range, so a
//! request past the partition's end is an I/O error, never a touch of the next partition.
//!
//! It is not the host driver (`virtio_blk`): any `Disk` serves.

use devices::virtio::blk::{BlockStore, IoError, SECTOR};

/// A host disk in 512-byte sectors.
pub trait Disk {
    fn sectors(&self) -> u64;
    /// Reads whole sectors starting at `sector` into `buf`.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError>;
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), IoError>;
    /// Makes every completed write stable.
    fn flush(&mut self) -> Result<(), IoError>;
}

/// Sectors `[start, start + sectors)` of `disk`.
pub struct PartitionStore<D> {
    disk: D,
    start: u64,
    sectors: u64,
    read_only: bool,
}

impl<D: Disk> PartitionStore<D> {
    pub fn new(disk: D, start: u64, sectors: u64, read_only: bool) -> Self {
        Self {
            disk,
            start,
            sectors,
            read_only,
        }
    }

    /// The host sector of a transfer of `len` bytes at byte `offset`, if whole sectors inside.
    fn host_sector(&self, offset: u64, len: usize) -> Result<u64, IoError> {
        let len = len as u64;
        if !offset.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
            return Err(IoError);
        }
        let first = offset / SECTOR;
        match first.checked_add(len / SECTOR) {
            Some(end) if end <= self.sectors => Ok(self.start + first),
            _ => Err(IoError),
        }
    }
}

impl<D: Disk> BlockStore for PartitionStore<D> {
    fn capacity(&self) -> u64 {
        self.sectors * SECTOR
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let sector = self.host_sector(offset, buf.len())?;
        self.disk.read(sector, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        if self.read_only {
            return Err(IoError);
        }
        let sector = self.host_sector(offset, data.len())?;
        self.disk.write(sector, data)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.disk.flush()
    }
}
