//! Fuzzes the virtio PCI transport and the virtqueue walker (`devices::virtio::VirtioPci`
//! with a block, network or console device) over fuzzed guest memory: sequences of BAR and
//! PCI configuration reads and writes (the MSI-X table and capability too), queue set-ups,
//! received frames and `service` calls with the MSI-X messages they send.
//!
//! Invariants: no panic and no hang (malformed queues, descriptor loops, out-of-range
//! addresses and oversize chains must end in an error or a device reset); register reads
//! return no bits above the access size; the walker only touches guest memory through the
//! bounds-checked `GuestMemory`.
#![no_main]

use devices::mem::{GuestMemory, OutOfRam};
use devices::virtio::blk::{Blk, Overlay};
use devices::virtio::console::Console;
use devices::virtio::net::Net;
use devices::virtio::{Device, VirtioPci};
use hv_fuzz::Input;
use libfuzzer_sys::fuzz_target;

const RAM_LEN: usize = 64 << 10;
static DISK: [u8; 64 << 10] = [0x5a; 64 << 10];
const BAR: u32 = 0xE000_0000;
/// Common configuration fields (virtio 1.2, 4.1.4.3), the notification register, and the
/// MSI-X table's first entries and PBA (PCI 3.0, 6.8.2).
const OFFSETS: &[u64] = &[
    0x00, 0x04, 0x08, 0x0C, 0x10, 0x12, 0x14, 0x15, 0x16, 0x18, 0x1A, 0x1C, 0x1E, 0x20, 0x24, 0x28,
    0x30, 0x100, 0x200, 0x204, 0x214, 0x300,
    0x1000, 0x1008, 0x100C, 0x1010, 0x1018, 0x101C, 0x1800, 0x1804,
];

struct Ram(Vec<u8>);

impl GuestMemory for Ram {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        let src = usize::try_from(gpa)
            .ok()
            .and_then(|at| self.0.get(at..at.checked_add(buf.len())?))
            .ok_or(OutOfRam { gpa })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam> {
        let dst = usize::try_from(gpa)
            .ok()
            .and_then(|at| self.0.get_mut(at..at.checked_add(data.len())?))
            .ok_or(OutOfRam { gpa })?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

fn ones(size: u8) -> u64 {
    match size {
        1..=7 => (1 << (8 * u32::from(size))) - 1,
        _ => u64::MAX,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let device = match input.u8() % 3 {
        0 => Device::Blk(Blk::new(
            Box::new(Overlay::new(&DISK, input.bool())),
            "fuzz",
        )),
        1 => Device::Net(Net::new([0x52, 0x54, 0, 1, 2, 3])),
        _ => Device::Console(Console),
    };
    let mut dev = VirtioPci::new(device, BAR, 11);
    // Guest memory first (descriptor tables and rings), then the operations.
    let mut ram = Ram(vec![0; RAM_LEN]);
    let image_len = usize::from(input.u16());
    let image = input.bytes(image_len);
    ram.0[..image.len()].copy_from_slice(image);
    let ops = input.u8();
    let mut emitted = 0usize;
    for _ in 0..ops {
        match input.u8() % 8 {
            0 => {
                let (offset, size) = (offset(&mut input), input.pick(&[1, 2, 4, 8]));
                let v = dev.read(offset, size);
                assert_eq!(v & !ones(size), 0, "BAR {offset:#x}/{size} = {v:#x}");
            }
            1 => {
                let (offset, size) = (offset(&mut input), input.pick(&[1, 2, 4, 8]));
                dev.write(offset, size, input.u64());
            }
            2 => {
                let (offset, size) = (input.u8(), input.pick(&[1, 2, 4]));
                let v = u64::from(dev.pci.read(offset, size));
                assert_eq!(v & !ones(size), 0, "config {offset:#x}/{size}");
            }
            3 => {
                let (offset, size) = (input.u8(), input.pick(&[1, 2, 4]));
                dev.pci.write(offset, size, input.u32());
            }
            4 => set_up_queue(&mut dev, &mut input),
            5 => {
                if let Device::Net(n) = &mut dev.device {
                    let len = usize::from(input.u16() % 2048);
                    let _ = n.deliver(input.bytes(len));
                }
            }
            _ => {
                dev.service(&mut ram, &mut |bytes: &[u8]| emitted += bytes.len());
                // MSI-X messages: at most one per vector, each well-formed or dropped later.
                let mut sent = 0;
                while let Some(message) = dev.take_message() {
                    let _ = message.decode();
                    sent += 1;
                    assert!(sent <= 64, "a vector sent twice for one event");
                }
            }
        }
    }
    for _ in 0..4 {
        dev.write(0x300, 2, 0);
        dev.write(0x300, 2, 1);
        dev.service(&mut ram, &mut |bytes: &[u8]| emitted += bytes.len());
    }
    let _ = (
        dev.irq_level(),
        dev.needs_reset(),
        dev.needs_service(),
        dev.bar(),
    );
});

fn offset(input: &mut Input<'_>) -> u64 {
    let sel = input.u8();
    if sel < 0xF0 {
        input.pick(OFFSETS) + u64::from(sel % 4)
    } else {
        u64::from(input.u16())
    }
}

/// What a driver does to bring up queue `q` (virtio 1.2, 3.1.1): rings at fuzzed places in
/// the low 64 KiB, then FEATURES_OK and DRIVER_OK.
fn set_up_queue(dev: &mut VirtioPci, input: &mut Input<'_>) {
    let q = u64::from(input.u8() % 3);
    let at = |input: &mut Input<'_>| u64::from(input.u16()) & !0xF;
    dev.write(0x14, 1, 1 | 2);
    dev.write(0x08, 4, 1);
    dev.write(0x0C, 4, 1);
    dev.write(0x14, 1, 1 | 2 | 8);
    dev.write(0x16, 2, q);
    dev.write(0x18, 2, u64::from(input.u16() % 512));
    let (desc, driver, device) = (at(input), at(input), at(input));
    dev.write(0x20, 8, desc);
    dev.write(0x28, 8, driver);
    dev.write(0x30, 8, device);
    dev.write(0x1C, 2, 1);
    dev.write(0x14, 1, 1 | 2 | 8 | 4);
}
