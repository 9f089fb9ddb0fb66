//! Drivers for the host's own virtio PCI devices (modern virtio 1.x transport, polled): a
//! virtio-blk for `phy:` targets, with the MBR partition table on it, the `phy:` names (`vda`,
//! `vda1`) and who holds which partition; and a virtio-net, the switch's uplink. Everything
//! here talks to the machine through two small traits, `pci::ConfigSpace` and `Bus`, so it
//! unit-tests on the host against a fake device; the port and MMIO accessors that implement
//! them live in the monitor binary.
//!
//! It is not the guests' virtio devices (`devices::virtio`): `partition::PartitionStore` is the
//! `BlockStore` the guest's virtio-blk reads and writes through.

pub mod mbr;
pub mod partition;
pub mod pci;
pub mod registry;
pub mod target;
pub mod transport;
pub mod virtio_blk;
pub mod virtio_net;
pub mod virtqueue;

#[cfg(test)]
mod tests;

/// The machine as the driver sees it: the device's registers (MMIO, by physical address) and
/// the memory the device reads and writes by DMA (by physical address), plus a clock for
/// timeouts.
pub trait Bus {
    fn read8(&mut self, pa: u64) -> u8;
    fn read16(&mut self, pa: u64) -> u16;
    fn read32(&mut self, pa: u64) -> u32;
    fn write8(&mut self, pa: u64, value: u8);
    fn write16(&mut self, pa: u64, value: u16);
    fn write32(&mut self, pa: u64, value: u32);
    fn dma_read(&mut self, pa: u64, buf: &mut [u8]);
    fn dma_write(&mut self, pa: u64, data: &[u8]);
    /// A monotonic tick count; `virtio_blk::HostBlk` gives up on a request after its timeout
    /// in these ticks.
    fn now(&mut self) -> u64;
}
