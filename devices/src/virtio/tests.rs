//! The modern transport driven as Linux's virtio_pci_modern does, over fake guest memory.

use super::*;
use crate::pci::reg;
use crate::virtio::blk::{Blk, Overlay};
use crate::virtio::queue::tests::{Driver, AVAIL, DESC, SIZE, USED};

const BAR: u32 = 0xC001_0000;

fn blk_device() -> VirtioPci {
    let disk: &'static [u8] = std::boxed::Box::leak(std::vec![0x11u8; 4096].into());
    let blk = Blk::new(alloc::boxed::Box::new(Overlay::new(disk, false)), "d0");
    VirtioPci::new(Device::Blk(blk), BAR, 17)
}

/// Finds the vendor capability of `cfg_type`: (bar, offset, length).
fn find_cap(dev: &VirtioPci, cfg_type: u8) -> Option<(u8, u32, u32)> {
    let mut at = dev.pci.read(reg::CAPABILITIES, 1) as u8;
    while at != 0 {
        if dev.pci.read(at, 1) == u32::from(CAP_VENDOR)
            && dev.pci.read(at + 3, 1) == u32::from(cfg_type)
        {
            return Some((
                dev.pci.read(at + 4, 1) as u8,
                dev.pci.read(at + 8, 4),
                dev.pci.read(at + 12, 4),
            ));
        }
        at = dev.pci.read(at + 1, 1) as u8;
    }
    None
}

/// Negotiates VERSION_1 and sets up queue 0 on `d`'s rings, then DRIVER_OK.
fn bring_up(dev: &mut VirtioPci) {
    dev.write(common::DEVICE_STATUS, 1, 1 | 2);
    dev.write(common::DEVICE_FEATURE_SELECT, 4, 1);
    assert_eq!(dev.read(common::DEVICE_FEATURE, 4), 1, "VERSION_1");
    dev.write(common::DRIVER_FEATURE_SELECT, 4, 1);
    dev.write(common::DRIVER_FEATURE, 4, 1);
    dev.write(common::DEVICE_STATUS, 1, 1 | 2 | 8);
    assert_eq!(dev.read(common::DEVICE_STATUS, 1), 1 | 2 | 8);
    dev.write(common::QUEUE_SELECT, 2, 0);
    assert_eq!(dev.read(common::QUEUE_SIZE, 2), u64::from(QUEUE_MAX));
    dev.write(common::QUEUE_SIZE, 2, u64::from(SIZE));
    dev.write(common::QUEUE_DESC, 4, DESC);
    dev.write(common::QUEUE_DESC + 4, 4, 0);
    dev.write(common::QUEUE_DRIVER, 8, AVAIL);
    dev.write(common::QUEUE_DEVICE, 4, USED);
    dev.write(common::QUEUE_ENABLE, 2, 1);
    dev.write(common::DEVICE_STATUS, 1, 1 | 2 | 8 | 4);
}

#[test]
fn pci_identity_and_capabilities() {
    let dev = blk_device();
    assert_eq!(dev.pci.read(0, 4), 0x1042_1AF4);
    assert_eq!(dev.pci.read(reg::REVISION, 1), 1);
    assert_eq!(dev.pci.read(reg::INTERRUPT_LINE, 2), 0x0111);
    assert_eq!(find_cap(&dev, CFG_COMMON), Some((0, 0, COMMON_LEN)));
    assert_eq!(find_cap(&dev, CFG_ISR), Some((0, 0x100, ISR_LEN)));
    assert_eq!(find_cap(&dev, CFG_DEVICE), Some((0, 0x200, DEVICE_LEN)));
    assert_eq!(find_cap(&dev, CFG_NOTIFY), Some((0, 0x300, NOTIFY_LEN)));
    assert_eq!(dev.bar(), None, "memory decoding off at reset");
}

#[test]
fn features_must_include_version_1_and_be_offered() {
    let mut dev = blk_device();
    dev.write(common::DRIVER_FEATURE_SELECT, 4, 0);
    dev.write(common::DRIVER_FEATURE, 4, 1 << 9);
    dev.write(common::DEVICE_STATUS, 1, 1 | 2 | 8);
    assert_eq!(
        dev.read(common::DEVICE_STATUS, 1),
        3,
        "no VERSION_1: FEATURES_OK refused"
    );
    dev.write(common::DRIVER_FEATURE_SELECT, 4, 1);
    dev.write(common::DRIVER_FEATURE, 4, 1 | 2);
    dev.write(common::DEVICE_STATUS, 1, 1 | 2 | 8);
    assert_eq!(dev.read(common::DEVICE_STATUS, 1), 3, "feature not offered");
    dev.write(common::DRIVER_FEATURE, 4, 1);
    dev.write(common::DEVICE_STATUS, 1, 1 | 2 | 8);
    assert_eq!(dev.read(common::DEVICE_STATUS, 1), 11);
    dev.write(common::DRIVER_FEATURE_SELECT, 4, 0);
    assert_eq!(dev.read(common::DRIVER_FEATURE, 4), 1 << 9);
}

#[test]
fn device_config_and_narrow_common_reads() {
    let mut dev = blk_device();
    assert_eq!(dev.read(DEVICE, 8), 8, "capacity in sectors");
    assert_eq!(dev.read(DEVICE + 1, 1), 0);
    assert_eq!(dev.read(common::NUM_QUEUES, 2), 1);
    assert_eq!(dev.read(common::CONFIG_MSIX_VECTOR, 2), 0xFFFF);
    dev.write(common::QUEUE_DESC, 8, 0x1122_3344_5566_7788);
    assert_eq!(dev.read(common::QUEUE_DESC + 4, 4), 0x1122_3344);
    dev.write(common::QUEUE_SELECT, 2, 5);
    assert_eq!(dev.read(common::QUEUE_SIZE, 2), 0, "no such queue");
    dev.write(common::QUEUE_ENABLE, 2, 1);
    assert_eq!(dev.read(0x800, 4), 0, "outside every structure");
}

#[test]
fn notification_is_served_with_memory_and_raises_intx() {
    let mut dev = blk_device();
    let mut d = Driver::new();
    bring_up(&mut dev);
    // A read of sector 1.
    d.mem.write(0x8000, &0u32.to_le_bytes()).unwrap();
    d.mem.write_u64(0x8008, 1).unwrap();
    d.offer(
        0,
        &[(0x8000, 16, false), (0x9000, 512, true), (0xA000, 1, true)],
    );
    dev.service(&mut d.mem, &mut |_| {});
    assert_eq!(d.used_idx(), 0, "nothing before the notification");
    dev.write(NOTIFY, 2, 0);
    assert!(dev.needs_service());
    dev.service(&mut d.mem, &mut |_| {});
    assert_eq!(d.used_idx(), 1);
    assert!(dev.irq_level());
    assert_ne!(dev.pci.status() & crate::pci::STATUS_INTERRUPT, 0);
    dev.pci.write(
        reg::COMMAND,
        2,
        u64::from(crate::pci::COMMAND_INTX_DISABLE) as u32,
    );
    assert!(!dev.irq_level(), "INTx disabled");
    dev.pci.write(reg::COMMAND, 2, 0);
    assert_eq!(dev.read(ISR, 1), u64::from(ISR_QUEUE));
    assert!(!dev.irq_level(), "reading the ISR acknowledges");
    assert_eq!(dev.read(ISR, 1), 0);
}

#[test]
fn malformed_descriptors_need_reset_and_reset_recovers() {
    let mut dev = blk_device();
    let mut d = Driver::new();
    bring_up(&mut dev);
    d.offer(0, &[(0x8000, 0, false)]);
    dev.write(NOTIFY, 2, 0);
    dev.service(&mut d.mem, &mut |_| {});
    assert!(dev.needs_reset());
    assert_ne!(
        dev.read(common::DEVICE_STATUS, 1) as u8 & STATUS_NEEDS_RESET,
        0
    );
    assert_eq!(dev.read(ISR, 1), u64::from(ISR_CONFIG));
    // Stopped: further notifications are not served.
    dev.write(NOTIFY, 2, 0);
    assert!(!dev.needs_service());
    dev.write(common::DEVICE_STATUS, 1, 0);
    assert_eq!(dev.read(common::DEVICE_STATUS, 1), 0);
    assert_eq!(dev.read(common::QUEUE_ENABLE, 2), 0);
    assert!(!dev.needs_reset());
}

#[test]
fn notifications_for_missing_queues_are_ignored() {
    let mut dev = blk_device();
    bring_up(&mut dev);
    dev.write(NOTIFY, 2, 7);
    dev.write(NOTIFY, 2, 0xFFFF);
    assert!(!dev.needs_service());
}
