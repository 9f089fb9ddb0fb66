//! The host's PCI configuration space as far as the virtio driver needs it: the functions on
//! bus 0 (the only bus searched: QEMU's and most small machines' devices sit there; no bridges
//! are followed and no ECAM is used), memory BARs, and the virtio vendor capabilities that
//! locate a modern device's register blocks (virtio 1.2, 4.1.4).
//!
//! It is not the guest's PCI bus (`devices::pci`).

use alloc::vec::Vec;

/// Reads and writes of one bus-0 function's configuration space, by dword.
pub trait ConfigSpace {
    fn read32(&mut self, dev: u8, func: u8, reg: u8) -> u32;
    fn write32(&mut self, dev: u8, func: u8, reg: u8, value: u32);
}

pub const VIRTIO_VENDOR: u16 = 0x1AF4;
/// Modern (0x1040 + type) and transitional device IDs of virtio-blk and virtio-net (4.1.2.1).
const VIRTIO_BLK_MODERN: u16 = 0x1042;
const VIRTIO_BLK_TRANSITIONAL: u16 = 0x1001;
const VIRTIO_NET_MODERN: u16 = 0x1041;
const VIRTIO_NET_TRANSITIONAL: u16 = 0x1000;

const REG_ID: u8 = 0x00;
const REG_COMMAND: u8 = 0x04;
const REG_HEADER: u8 = 0x0C;
const REG_BAR0: u8 = 0x10;
const REG_CAPS: u8 = 0x34;
const STATUS_CAPS: u32 = 1 << 20;
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
const CAP_VENDOR: u8 = 0x09;
/// A capability list longer than this is a loop.
const MAX_CAPS: usize = 48;

/// Virtio structure types (4.1.4).
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_DEVICE: u8 = 4;

/// A function on bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub dev: u8,
    pub func: u8,
    pub vendor: u16,
    pub device: u16,
}

impl Function {
    pub fn is_virtio_blk(&self) -> bool {
        self.vendor == VIRTIO_VENDOR
            && matches!(self.device, VIRTIO_BLK_MODERN | VIRTIO_BLK_TRANSITIONAL)
    }

    pub fn is_virtio_net(&self) -> bool {
        self.vendor == VIRTIO_VENDOR
            && matches!(self.device, VIRTIO_NET_MODERN | VIRTIO_NET_TRANSITIONAL)
    }
}

/// Every function present on bus 0, in slot order.
pub fn functions(cs: &mut dyn ConfigSpace) -> Vec<Function> {
    let mut found = Vec::new();
    for dev in 0..32 {
        for func in 0..8 {
            let id = cs.read32(dev, func, REG_ID);
            let vendor = id as u16;
            if vendor == 0xFFFF {
                if func == 0 {
                    break;
                }
                continue;
            }
            found.push(Function {
                dev,
                func,
                vendor,
                device: (id >> 16) as u16,
            });
            let multi = cs.read32(dev, func, REG_HEADER) & (1 << 23) != 0;
            if func == 0 && !multi {
                break;
            }
        }
    }
    found
}

/// The address BAR `index` decodes, if it is a memory BAR (64-bit ones take two registers).
pub fn memory_bar(cs: &mut dyn ConfigSpace, f: &Function, index: u8) -> Option<u64> {
    if index > 5 {
        return None;
    }
    let low = cs.read32(f.dev, f.func, REG_BAR0 + 4 * index);
    if low & 1 != 0 {
        return None;
    }
    let base = u64::from(low & !0xF);
    match (low >> 1) & 3 {
        0 => Some(base),
        2 if index < 5 => {
            let high = cs.read32(f.dev, f.func, REG_BAR0 + 4 * (index + 1));
            Some(base | u64::from(high) << 32)
        }
        _ => None,
    }
}

/// Turns on memory decoding and bus mastering (the device reads and writes the queue).
pub fn enable(cs: &mut dyn ConfigSpace, f: &Function) {
    let command = cs.read32(f.dev, f.func, REG_COMMAND) & 0xFFFF;
    cs.write32(
        f.dev,
        f.func,
        REG_COMMAND,
        command | COMMAND_MEMORY | COMMAND_BUS_MASTER,
    );
}

/// Where a virtio structure lies: `length` bytes at `offset` into BAR `bar`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub bar: u8,
    pub offset: u32,
    pub length: u32,
}

/// The structures the driver uses (the ISR status is not: requests are polled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioCaps {
    pub common: Window,
    pub notify: Window,
    pub notify_multiplier: u32,
    pub device: Window,
}

/// Walks the capability list for the first virtio capability of each type (4.1.4: "the
/// driver SHOULD use the first instance of each virtio structure type it can support").
pub fn virtio_caps(cs: &mut dyn ConfigSpace, f: &Function) -> Result<VirtioCaps, &'static str> {
    if cs.read32(f.dev, f.func, REG_COMMAND) & STATUS_CAPS == 0 {
        return Err("no capability list");
    }
    let (mut common, mut notify, mut device) = (None, None, None);
    let mut at = cs.read32(f.dev, f.func, REG_CAPS) as u8 & !3;
    for _ in 0..MAX_CAPS {
        // A capability must lie in the device-specific part and leave room for its 20 bytes.
        if !(0x40..=0xEC).contains(&at) {
            break;
        }
        let head = cs.read32(f.dev, f.func, at);
        let next = (head >> 8) as u8 & !3;
        let cap_len = (head >> 16) as u8;
        let cfg_type = (head >> 24) as u8;
        if head as u8 == CAP_VENDOR && cap_len >= 16 {
            let bar = cs.read32(f.dev, f.func, at + 4) as u8;
            let window = Window {
                bar,
                offset: cs.read32(f.dev, f.func, at + 8),
                length: cs.read32(f.dev, f.func, at + 12),
            };
            let slot = match cfg_type {
                CFG_COMMON => Some(&mut common),
                CFG_NOTIFY if cap_len >= 20 => Some(&mut notify),
                CFG_DEVICE => Some(&mut device),
                _ => None,
            };
            if let Some(slot @ None) = slot.filter(|_| bar <= 5) {
                let multiplier = if cfg_type == CFG_NOTIFY {
                    cs.read32(f.dev, f.func, at + 16)
                } else {
                    0
                };
                *slot = Some((window, multiplier));
            }
        }
        at = next;
    }
    let (common, _) = common.ok_or("no virtio common configuration capability")?;
    let (notify, notify_multiplier) = notify.ok_or("no virtio notification capability")?;
    let (device, _) = device.ok_or("no virtio device configuration capability")?;
    Ok(VirtioCaps {
        common,
        notify,
        notify_multiplier,
        device,
    })
}
