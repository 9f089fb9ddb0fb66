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

/// The MSI-X capability's offset in configuration space.
fn msix_cap(dev: &VirtioPci) -> u8 {
    let mut at = dev.pci.read(reg::CAPABILITIES, 1) as u8;
    while dev.pci.read(at, 1) != u32::from(crate::msix::CAP_ID) {
        at = dev.pci.read(at + 1, 1) as u8;
        assert_ne!(at, 0, "no MSI-X capability");
    }
    at
}

/// Turns MSI-X on (with `control`'s Function Mask bit as given) and points entry `vector` at
/// the local APIC with `data`, unmasked.
fn msix_entry(dev: &mut VirtioPci, vector: u64, data: u32) {
    let at = u64::from(MSIX_TABLE) + 16 * vector;
    dev.write(at, 8, 0xFEE0_0000);
    dev.write(at + 8, 4, u64::from(data));
    dev.write(at + 12, 4, 0);
}

fn set_msix_control(dev: &mut VirtioPci, control: u16) {
    let cap = msix_cap(dev);
    dev.pci.write(cap + 2, 2, u32::from(control));
}

#[test]
fn msix_capability_points_into_the_bar() {
    let dev = blk_device();
    let cap = msix_cap(&dev);
    assert_eq!(
        dev.pci.read(cap + 2, 2),
        1,
        "a queue and the config: 2 vectors"
    );
    assert_eq!(dev.pci.read(cap + 4, 4), MSIX_TABLE, "BIR 0");
    assert_eq!(dev.pci.read(cap + 8, 4), MSIX_PBA, "BIR 0");
    let net = VirtioPci::new(Device::Net(net::Net::new([0; 6])), BAR, 17);
    assert_eq!(
        net.pci.read(msix_cap(&net) + 2, 2),
        2,
        "two queues and the config"
    );
}

#[test]
fn vector_registers_hold_only_vectors_the_table_has() {
    let mut dev = blk_device();
    for (field, select) in [
        (common::CONFIG_MSIX_VECTOR, false),
        (common::QUEUE_MSIX_VECTOR, true),
    ] {
        if select {
            dev.write(common::QUEUE_SELECT, 2, 0);
        }
        assert_eq!(dev.read(field, 2), u64::from(NO_VECTOR), "at reset");
        dev.write(field, 2, 1);
        assert_eq!(dev.read(field, 2), 1);
        dev.write(field, 2, 2);
        assert_eq!(
            dev.read(field, 2),
            u64::from(NO_VECTOR),
            "no vector 2: mapping failed"
        );
        dev.write(field, 2, 0);
        dev.write(field, 1, 1);
        assert_eq!(dev.read(field, 2), 0, "narrow writes are dropped");
        dev.write(field, 2, u64::from(NO_VECTOR));
        assert_eq!(dev.read(field, 2), u64::from(NO_VECTOR), "unmapped");
    }
    dev.write(common::QUEUE_SELECT, 2, 3);
    dev.write(common::QUEUE_MSIX_VECTOR, 2, 0);
    assert_eq!(
        dev.read(common::QUEUE_MSIX_VECTOR, 2),
        u64::from(NO_VECTOR),
        "no queue 3"
    );
    dev.write(common::CONFIG_MSIX_VECTOR, 2, 1);
    dev.write(common::DEVICE_STATUS, 1, 0);
    assert_eq!(
        dev.read(common::CONFIG_MSIX_VECTOR, 2),
        u64::from(NO_VECTOR),
        "reset"
    );
}

/// Blk with MSI-X on, queue 0 on vector 1 and the config on vector 0, a read of sector 1 offered.
fn blk_with_msix(d: &mut Driver) -> VirtioPci {
    let mut dev = blk_device();
    bring_up(&mut dev);
    dev.write(common::CONFIG_MSIX_VECTOR, 2, 0);
    dev.write(common::QUEUE_SELECT, 2, 0);
    dev.write(common::QUEUE_MSIX_VECTOR, 2, 1);
    msix_entry(&mut dev, 0, 0x40);
    msix_entry(&mut dev, 1, 0x41);
    set_msix_control(&mut dev, 0x8000);
    d.mem.write(0x8000, &0u32.to_le_bytes()).unwrap();
    d.mem.write_u64(0x8008, 1).unwrap();
    d.offer(
        0,
        &[(0x8000, 16, false), (0x9000, 512, true), (0xA000, 1, true)],
    );
    dev
}

#[test]
fn with_msix_a_used_queue_sends_its_vector_not_intx() {
    let mut d = Driver::new();
    let mut dev = blk_with_msix(&mut d);
    dev.write(NOTIFY, 2, 0);
    dev.service(&mut d.mem, &mut |_| {});
    assert_eq!(d.used_idx(), 1);
    assert!(!dev.irq_level(), "no INTx while MSI-X is enabled");
    let message = dev.take_message().expect("queue 0's vector");
    assert_eq!((message.address, message.data), (0xFEE0_0000, 0x41));
    assert_eq!(dev.take_message(), None);
    assert_eq!(dev.read(ISR, 1), 0, "the ISR's queue bit is for INTx");
}

#[test]
fn a_masked_vector_is_pending_in_the_pba_until_unmasked() {
    let mut d = Driver::new();
    let mut dev = blk_with_msix(&mut d);
    let control = u64::from(MSIX_TABLE) + 16 + 12;
    dev.write(control, 4, 1);
    dev.write(NOTIFY, 2, 0);
    dev.service(&mut d.mem, &mut |_| {});
    assert_eq!(dev.take_message(), None);
    assert_eq!(dev.read(u64::from(MSIX_PBA), 8), 0b10);
    // Function Mask then holds it after the vector is unmasked.
    set_msix_control(&mut dev, 0xC000);
    dev.write(control, 4, 0);
    assert_eq!(dev.take_message(), None);
    set_msix_control(&mut dev, 0x8000);
    assert_eq!(dev.take_message().map(|m| m.data), Some(0x41));
    assert_eq!(dev.read(u64::from(MSIX_PBA), 8), 0);
    // Writes to the PBA and malformed table accesses change nothing.
    dev.write(u64::from(MSIX_PBA), 8, u64::MAX);
    dev.write(u64::from(MSIX_TABLE) + 2, 4, u64::MAX);
    dev.write(u64::from(MSIX_TABLE) + 16, 2, u64::MAX);
    assert_eq!(dev.read(u64::from(MSIX_PBA), 8), 0);
    assert_eq!(dev.read(u64::from(MSIX_TABLE) + 16, 8), 0xFEE0_0000);
    assert_eq!(
        dev.read(u64::from(MSIX_TABLE) + 16, 2),
        0,
        "undefined: reads zero"
    );
}

#[test]
fn with_msix_a_device_error_sends_the_config_vector() {
    let mut d = Driver::new();
    let mut dev = blk_with_msix(&mut d);
    d.offer(1, &[(0x8000, 0, false)]);
    dev.write(NOTIFY, 2, 0);
    dev.service(&mut d.mem, &mut |_| {});
    assert!(dev.needs_reset());
    // The good request before it completed, but the error ends the pass: only the config
    // change is signalled.
    assert_eq!(dev.take_message().map(|m| m.data), Some(0x40));
    assert_eq!(dev.take_message(), None);
    assert_eq!(dev.read(ISR, 1), u64::from(ISR_CONFIG));
    assert!(!dev.irq_level());
    // With MSI-X off again the device falls back to INTx.
    set_msix_control(&mut dev, 0);
    dev.write(common::DEVICE_STATUS, 1, 0);
    bring_up(&mut dev);
    d.offer(2, &[(0x8000, 0, false)]);
    dev.write(NOTIFY, 2, 0);
    dev.service(&mut d.mem, &mut |_| {});
    assert!(dev.irq_level());
    assert_eq!(dev.take_message(), None);
}
