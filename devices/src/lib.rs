//! Emulated platform devices: each a plain state machine over port, MMIO and MSR accesses, with
//! time passed in as the guest TSC value, unit-tested on the host. `Platform` wires them into
//! the PC a stock Linux expects. Nothing here touches hardware or knows which vendor runs it.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod ioapic;
pub mod lapic;
pub mod mem;
pub mod msix;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod platform;
pub mod pm;
pub mod rtc;
pub mod switch;
pub mod uart;
pub mod virtio;

/// Where the platform's devices live; the guest ACPI tables describe the same addresses.
pub mod layout {
    /// Local APIC MMIO page (xAPIC mode).
    pub const LAPIC_BASE: u64 = 0xFEE0_0000;
    /// I/O APIC MMIO window.
    pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
    /// The I/O APIC's ID in the MADT.
    pub const IOAPIC_ID: u8 = 1;
    /// I/O APIC input pins (GSIs 0..24).
    pub const IOAPIC_PINS: u8 = 24;
    /// COM1.
    pub const UART_BASE: u16 = 0x3F8;
    pub const UART_IRQ: u8 = 4;
    /// ACPI fixed hardware (PM1a event block: 4 bytes; PM1a control: 2 bytes; PM timer: 4 bytes).
    pub const PM1A_EVT_BLK: u16 = 0xB000;
    pub const PM1A_CNT_BLK: u16 = 0xB004;
    pub const PM_TMR_BLK: u16 = 0xB008;
    /// The SCI is ISA IRQ 9, level-triggered, active high.
    pub const SCI_IRQ: u8 = 9;
    /// SLP_TYP value of `\_S5` in the DSDT: writing it with SLP_EN to PM1a_CNT powers off.
    pub const S5_SLP_TYP: u8 = 5;
    /// The FADT reset register: port 0xCF9, value 0x06.
    pub const RESET_PORT: u16 = 0xCF9;
    pub const RESET_VALUE: u8 = 0x06;
    /// The PIT's IRQ 0 arrives at I/O APIC pin 2 (an interrupt source override in the MADT).
    pub const PIT_GSI: u8 = 2;
    /// LAPIC timer input clock, in Hz (1 ns per tick before the divider).
    pub const LAPIC_TIMER_HZ: u64 = 1_000_000_000;
    /// PCI configuration mechanism #1: CONFIG_ADDRESS at 0xCF8, CONFIG_DATA at 0xCFC..0xCFF.
    pub const PCI_CONFIG_ADDRESS: u16 = 0xCF8;
    pub const PCI_CONFIG_DATA: u16 = 0xCFC;
    /// The PCI hole: memory BARs are placed here, above guest RAM (at most 3 GiB) and below
    /// the I/O APIC. The DSDT's host bridge `_CRS` describes the same window.
    pub const PCI_MMIO_BASE: u64 = 0xC000_0000;
    pub const PCI_MMIO_END: u64 = 0xFEBF_FFFF;
    /// Each PCI device gets this much of the hole for its memory BAR, at
    /// `PCI_MMIO_BASE + slot * PCI_BAR_STRIDE`.
    pub const PCI_BAR_STRIDE: u64 = 0x1_0000;
    /// Bus 0 slots 1..=PCI_SLOTS hold devices (slot 0 is the host bridge).
    pub const PCI_SLOTS: u8 = 16;
    /// INTA# of slot `s` is I/O APIC pin `PCI_GSI_BASE + s % PCI_GSI_COUNT`, level-triggered,
    /// active low (the DSDT's `_PRT` says so).
    pub const PCI_GSI_BASE: u8 = 16;
    pub const PCI_GSI_COUNT: u8 = 8;
}
