//! The switch's uplink in the running monitor: the first virtio-net function on the host's PCI
//! bus 0, driven by `hv_core::hostdev::virtio_net`. Frames the switch sends to port
//! `devices::switch::UPLINK` leave through it, and what it receives enters the switch there.
//!
//! It is not a bridge to anything beyond that NIC and does no IP of its own.

use alloc::boxed::Box;

use crate::bare::pci::{virtio_function, PortConfig};
use devices::switch::Uplink;
use hv_core::hostdev::pci;
use hv_core::hostdev::virtio_net::{HostNet, DMA_BYTES};

/// How long the NIC may take to accept a frame before the driver gives it up.
const TIMEOUT_SECONDS: u64 = 5;

/// The host NIC as an uplink, if there is one that starts; logs what it found.
pub fn probe(tsc_hz: u64) -> Option<Box<dyn Uplink>> {
    let f = pci::functions(&mut PortConfig)
        .into_iter()
        .find(|f| f.is_virtio_net())?;
    let started = virtio_function(&f, DMA_BYTES).and_then(|(bus, regs, dma)| {
        HostNet::init(bus, regs, dma, tsc_hz.saturating_mul(TIMEOUT_SECONDS))
    });
    match started {
        Ok(net) => {
            let mac = net.mac().unwrap_or_default();
            log::info!(
                "uplink: host NIC at PCI 00:{:02x}.{}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                f.dev,
                f.func,
                mac[0],
                mac[1],
                mac[2],
                mac[3],
                mac[4],
                mac[5]
            );
            Some(Box::new(net))
        }
        Err(e) => {
            log::warn!(
                "host virtio-net at 00:{:02x}.{}: {e}; no uplink",
                f.dev,
                f.func
            );
            None
        }
    }
}
