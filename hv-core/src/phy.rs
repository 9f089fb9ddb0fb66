//! The host disks behind `phy:` targets in the running monitor: the virtio-blk functions on
//! PCI bus 0, found and initialized at boot (`vda`, `vdb`, ... in slot order), and lent to
//! domains a disk or an MBR partition at a time. A domain's claim lasts as long as its
//! virtual disk: destroying the domain drops the disk and hands the range back.
//!
//! It is not the driver (`hv_core::hostdev`) and not the guest's device model.

use alloc::string::String;

use crate::bare::pci::{virtio_function, MappedBus, PortConfig};
use devices::virtio::blk::IoError;
use hv_core::hostdev::partition::{Disk, PartitionStore};
use hv_core::hostdev::pci::{self, Function};
use hv_core::hostdev::registry::{Claim, HostDisks};
use hv_core::hostdev::target::PhyTarget;
use hv_core::hostdev::virtio_blk::{HostBlk, DMA_BYTES};

/// How long a request may take before the driver gives the device up.
const TIMEOUT_SECONDS: u64 = 30;

static DISKS: spin::Mutex<HostDisks<HostBlk<MappedBus>>> = spin::Mutex::new(HostDisks::new());

/// Finds and initializes the host's virtio-blk disks and logs what each holds and where.
pub fn probe(tsc_hz: u64) {
    for f in pci::functions(&mut PortConfig)
        .iter()
        .filter(|f| f.is_virtio_blk())
    {
        match start(f, tsc_hz.saturating_mul(TIMEOUT_SECONDS)) {
            Ok((blk, registers)) => {
                let text = DISKS.lock().add(blk);
                log::info!(
                    "host disk {text}; PCI 00:{:02x}.{}, registers at {registers:#x}",
                    f.dev,
                    f.func
                );
            }
            Err(e) => log::warn!(
                "host virtio-blk at 00:{:02x}.{}: {e}; not used",
                f.dev,
                f.func
            ),
        }
    }
}

fn start(f: &Function, timeout: u64) -> Result<(HostBlk<MappedBus>, u64), &'static str> {
    let (bus, regs, dma) = virtio_function(f, DMA_BYTES)?;
    Ok((HostBlk::init(bus, regs, dma, timeout)?, regs.common))
}

/// A host disk as one domain's claim on it: I/O goes to the shared driver, and dropping it
/// releases the claim.
pub struct Lent {
    claim: Claim,
}

impl Lent {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut HostBlk<MappedBus>) -> Result<T, IoError>,
    ) -> Result<T, IoError> {
        f(DISKS
            .lock()
            .disk_mut(self.claim.target.disk)
            .ok_or(IoError)?)
    }
}

impl Disk for Lent {
    fn sectors(&self) -> u64 {
        self.with(|d| Ok(d.sectors())).unwrap_or(0)
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.with(|d| d.read(sector, buf))
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), IoError> {
        self.with(|d| d.write(sector, data))
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.with(|d| d.flush())
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        DISKS.lock().release(&self.claim);
    }
}

/// The store of a `phy:NAME` disk for domain `owner`.
pub fn open(name: &str, owner: &str, read_only: bool) -> Result<PartitionStore<Lent>, String> {
    let target = PhyTarget::parse(name)?;
    let claim = DISKS.lock().claim(target, owner)?;
    let (start, sectors) = (claim.start, claim.sectors);
    Ok(PartitionStore::new(
        Lent { claim },
        start,
        sectors,
        read_only,
    ))
}
