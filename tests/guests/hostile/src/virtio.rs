//! Malformed virtqueues on the virtio console every VM has (virtio 1.2, 2.7 "Split
//! Virtqueues"): a descriptor loop, a buffer outside guest memory, an oversize chain, rings
//! outside guest memory and a head index past the queue. Each time the device must set
//! DEVICE_NEEDS_RESET (2.1.1) without harming anything else; after a reset it must work again.

use rt::insn::{self, Width};

use crate::pci;
use crate::report::{check, note};

/// Device status bits (2.1).
const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
const NEEDS_RESET: u8 = 64;
/// Common configuration offsets (4.1.4.3) and the notify register, as the BAR lays them out.
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0C;
const STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_ENABLE: u64 = 0x1C;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
const NOTIFY: u64 = 0x300;
/// The console's transmit queue (5.3.2).
const TRANSMIT: u16 = 1;
const SIZE: u16 = 8;
const F_NEXT: u16 = 1;
const NOWHERE: u64 = 0xFFFF_FFFF_F000;

#[repr(C, align(4096))]
struct Rings {
    desc: [[u64; 2]; SIZE as usize],
    avail: [u16; 3 + SIZE as usize],
    used: [u32; 2 + 2 * SIZE as usize],
    data: [u8; 64],
}

static mut RINGS: Rings = Rings {
    desc: [[0; 2]; 8],
    avail: [0; 11],
    used: [0; 18],
    data: [b'x'; 64],
};

struct Bar(u64);

impl Bar {
    fn write(&self, offset: u64, width: Width, value: u64) {
        // SAFETY: device registers, no guest memory.
        let w = unsafe { insn::write(self.0 + offset, width, value) };
        check!(
            w.is_ok(),
            "virtio write {offset:#x} {}",
            insn::Completion(w)
        );
    }

    fn status(&self) -> u8 {
        // SAFETY: as above, for a read.
        match unsafe { insn::read(self.0 + STATUS, Width::Byte) } {
            Ok(v) => v as u8,
            Err(t) => crate::report::fail(format_args!("virtio status read raised {t}")),
        }
    }

    /// Resets the device and drives it to DRIVER_OK with the transmit queue at `desc`,
    /// `driver`, `device`.
    fn start(&self, desc: u64, driver: u64, device: u64) {
        self.write(STATUS, Width::Byte, 0);
        check!(self.status() == 0, "reset left status {:#x}", self.status());
        self.write(STATUS, Width::Byte, u64::from(ACKNOWLEDGE | DRIVER));
        self.write(DRIVER_FEATURE_SELECT, Width::Dword, 1);
        self.write(DRIVER_FEATURE, Width::Dword, 1); // VIRTIO_F_VERSION_1 (bit 32)
        self.write(
            STATUS,
            Width::Byte,
            u64::from(ACKNOWLEDGE | DRIVER | FEATURES_OK),
        );
        check!(self.status() & FEATURES_OK != 0, "FEATURES_OK refused");
        self.write(QUEUE_SELECT, Width::Word, u64::from(TRANSMIT));
        self.write(QUEUE_SIZE, Width::Word, u64::from(SIZE));
        self.write(QUEUE_DESC, Width::Qword, desc);
        self.write(QUEUE_DRIVER, Width::Qword, driver);
        self.write(QUEUE_DEVICE, Width::Qword, device);
        self.write(QUEUE_ENABLE, Width::Word, 1);
        self.write(
            STATUS,
            Width::Byte,
            u64::from(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK),
        );
    }

    /// Notifies the transmit queue and gives the device a few exits to serve it.
    fn kick(&self) {
        self.write(NOTIFY, Width::Word, u64::from(TRANSMIT));
        for _ in 0..4 {
            let _ = self.status();
        }
    }
}

/// Fills the rings: descriptors from `descs`, the available ring with `heads` and its index.
fn rings(descs: &[Desc], heads: &[u16], idx: u16) -> (u64, u64, u64) {
    // SAFETY: single-threaded; the device reads these only after the notify.
    unsafe {
        let r = &mut *(&raw mut RINGS);
        r.desc = [[0; 2]; SIZE as usize];
        for (d, &(addr, len, flags, next)) in r.desc.iter_mut().zip(descs) {
            *d = [
                addr,
                u64::from(len) | u64::from(flags) << 32 | u64::from(next) << 48,
            ];
        }
        r.avail = [0; 3 + SIZE as usize];
        for (slot, &h) in r.avail[2..].iter_mut().zip(heads) {
            *slot = h;
        }
        r.avail[1] = idx;
        r.used = [0; 2 + 2 * SIZE as usize];
        (
            &raw const r.desc as u64,
            &raw const r.avail as u64,
            &raw const r.used as u64,
        )
    }
}

/// A descriptor: address, length, flags, next.
type Desc = (u64, u32, u16, u16);
/// A malformed queue: what it is, its descriptors, the available heads and index, and whether
/// the rings themselves lie outside RAM.
type Case<'a> = (&'a str, &'a [Desc], &'a [u16], u16, bool);

pub fn malformed_queues(_: u64) {
    let Some(f) = pci::virtio_console() else {
        crate::report::fail(format_args!("no virtio console"))
    };
    f.write(4, f.read(4) | pci::COMMAND_MEMORY | pci::COMMAND_MASTER);
    let bar = Bar(u64::from(f.read(0x10) & !0xF));
    // SAFETY: the address of the guest's own buffer.
    let data = unsafe { &raw const RINGS.data as u64 };
    let cases: [Case; 6] = [
        (
            "descriptor loop",
            &[(data, 4, F_NEXT, 1), (data, 4, F_NEXT, 0)],
            &[0],
            1,
            false,
        ),
        (
            "buffer outside memory",
            &[(NOWHERE, 64, 0, 0)],
            &[0],
            1,
            false,
        ),
        ("oversize chain", &[(data, u32::MAX, 0, 0)], &[0], 1, false),
        (
            "head past the queue",
            &[(data, 4, 0, 0)],
            &[SIZE + 3],
            1,
            false,
        ),
        (
            "available index far ahead",
            &[(data, 4, 0, 0)],
            &[0],
            0x8000,
            false,
        ),
        ("rings outside memory", &[(data, 4, 0, 0)], &[0], 1, true),
    ];
    for (what, descs, heads, idx, away) in cases {
        let (desc, driver, device) = rings(descs, heads, idx);
        if away {
            bar.start(NOWHERE, NOWHERE + 0x100, NOWHERE + 0x200);
        } else {
            bar.start(desc, driver, device);
        }
        bar.kick();
        let status = bar.status();
        check!(
            status & NEEDS_RESET != 0,
            "{what}: status {status:#x} without NEEDS_RESET"
        );
    }
    // A well-formed buffer after a reset is served.
    let (desc, driver, device) = rings(&[(data, 4, 0, 0)], &[0], 1);
    bar.start(desc, driver, device);
    bar.kick();
    let status = bar.status();
    check!(
        status & NEEDS_RESET == 0,
        "a valid buffer after the reset: status {status:#x}"
    );
    // SAFETY: the device wrote the used ring; single-threaded.
    let used =
        unsafe { core::ptr::read_volatile(&raw const RINGS.used as *const u16).wrapping_add(0) };
    let used_idx =
        unsafe { core::ptr::read_volatile((&raw const RINGS.used as *const u16).add(1)) };
    check!(
        used_idx == 1,
        "the valid buffer was not used (used flags {used:#x}, idx {used_idx})"
    );
    note(format_args!(
        "6 malformed queues refused, the device works after a reset"
    ));
}
