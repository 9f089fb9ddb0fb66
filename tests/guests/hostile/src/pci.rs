//! PCI configuration mechanism #1 (PCI Local Bus Specification 3.0, 3.2.2.3.2): CONFIG_ADDRESS
//! at 0xCF8, CONFIG_DATA at 0xCFC..=0xCFF, and finding the virtio console the monitor gives
//! every VM.

use rt::port;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
const ENABLE: u32 = 1 << 31;
/// virtio's PCI vendor and the modern console's device ID (virtio 1.2, 4.1.2).
const VIRTIO_VENDOR: u32 = 0x1AF4;
const VIRTIO_CONSOLE: u32 = 0x1043;
/// Command register bits: memory space, bus master.
pub const COMMAND_MEMORY: u32 = 1 << 1;
pub const COMMAND_MASTER: u32 = 1 << 2;

/// A function's configuration space on bus `bus`.
#[derive(Clone, Copy)]
pub struct Function {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Function {
    fn address(self, offset: u8) -> u32 {
        ENABLE
            | u32::from(self.bus) << 16
            | u32::from(self.device & 31) << 11
            | u32::from(self.function & 7) << 8
            | u32::from(offset & 0xFC)
    }

    pub fn read(self, offset: u8) -> u32 {
        // SAFETY: configuration reads have no side effects on the guest's memory.
        unsafe {
            port::outl(CONFIG_ADDRESS, self.address(offset));
            port::inl(CONFIG_DATA)
        }
    }

    pub fn write(self, offset: u8, value: u32) {
        // SAFETY: configuration writes change devices, not the guest's memory (a BAR moved over
        // RAM does not hide the RAM: the monitor maps RAM first).
        unsafe {
            port::outl(CONFIG_ADDRESS, self.address(offset));
            port::outl(CONFIG_DATA, value);
        }
    }
}

/// The virtio console on bus 0.
pub fn virtio_console() -> Option<Function> {
    (0..32)
        .map(|device| Function {
            bus: 0,
            device,
            function: 0,
        })
        .find(|f| {
            let id = f.read(0);
            id & 0xFFFF == VIRTIO_VENDOR && id >> 16 == VIRTIO_CONSOLE
        })
}
