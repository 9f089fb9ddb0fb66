//! The virtual devices of a new domain from its config: a virtio-blk per `disk` (backed by a
//! boot module, guest writes kept in memory, or by a host disk or partition for `phy:`), a
//! virtio-net per `vif` (MAC from `mac=` or xl's
//! default rule), and a virtio-console (`hvc0`). They are made before the domain's RAM is taken,
//! so a config naming a missing module fails early, and plugged into its platform after.
//!
//! It is not the switch between the NICs (`devices::switch`, driven by the scheduler) and not
//! the host disk driver (`crate::phy`).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::bare::bootinfo::BootInfo;
use crate::bare::cpu;
use devices::platform::Platform;
use devices::virtio::blk::{Blk, BlockStore, Overlay};
use devices::virtio::console::Console;
use devices::virtio::net::{default_mac, Net};
use devices::virtio::Device;
use hv_core::config::{DiskTarget, VmConfig};

/// Makes the devices `vm` asks for; `at` is `FILE` for errors.
pub fn devices(boot: &BootInfo, at: &str, vm: &VmConfig) -> Result<Vec<Device>, String> {
    let mut out = Vec::new();
    for disk in &vm.disks {
        let store: Box<dyn BlockStore> = match &disk.target {
            DiskTarget::Module(name) => {
                let module = boot
                    .modules()
                    .find(|m| m.name == name.as_str())
                    .ok_or_else(|| {
                        format!("{at}: disk module '{name}' was not given to the monitor")
                    })?;
                Box::new(Overlay::new(module.data, disk.read_only))
            }
            DiskTarget::Phy(dev) => Box::new(
                crate::phy::open(dev, &vm.name, disk.read_only)
                    .map_err(|e| format!("{at}: disk 'phy:{dev}' ({}): {e}", disk.vdev))?,
            ),
        };
        out.push(Device::Blk(Blk::new(store, &disk.vdev)));
    }
    for (i, vif) in vm.vifs.iter().enumerate() {
        let mac = vif
            .mac
            .unwrap_or_else(|| default_mac(random_bytes(i as u64)));
        out.push(Device::Net(Net::new(mac)));
    }
    out.push(Device::Console(Console));
    if out.len() > usize::from(devices::layout::PCI_SLOTS) {
        return Err(format!(
            "{at}: {} disks and NICs; at most {} fit",
            out.len() - 1,
            devices::layout::PCI_SLOTS - 1
        ));
    }
    Ok(out)
}

/// Plugs `devs` into `platform` and logs the NICs' MACs.
pub fn plug(platform: &mut Platform, name: &str, devs: Vec<Device>) {
    for dev in devs {
        if let Device::Net(n) = &dev {
            let m = n.mac();
            log::info!(
                "domain {name}: vif {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5]
            );
        }
        // `devices` checked that they all fit.
        let _ = platform.add_virtio(dev);
    }
}

/// Three bytes that differ between NICs and boots: the TSC and the NIC's index through
/// splitmix64 (the monitor has no better entropy source it can count on).
fn random_bytes(salt: u64) -> [u8; 3] {
    let mut z = cpu::rdtsc().wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let b = z.to_le_bytes();
    [b[0], b[1], b[2]]
}
