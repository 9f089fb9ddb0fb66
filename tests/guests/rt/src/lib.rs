//! Runtime shared by the bare-metal test guests (probe, hostile, bench, mbtest): the boot
//! entry points (`entry!`), an IDT that turns exceptions into values (`trap`, `guarded!`) and can
//! count interrupts, guarded instructions (`insn`), COM1 output, port I/O, the kernel command
//! line and ACPI power-off. It is not a kernel: no allocator, no scheduler, no paging of its own.
#![no_std]

pub mod boot;
pub mod cmdline;
pub mod insn;
pub mod port;
pub mod serial;
pub mod trap;

use core::arch::asm;

/// ACPI PM1a control block of the monitor's virtual platform.
const PM1A_CONTROL: u16 = 0xB004;
/// SLP_TYP = 5 (S5, soft off) in bits 10..=12, with SLP_EN (bit 13) (ACPI 6.5, 4.8.3.2.1).
const SLEEP_S5: u16 = 5 << 10 | 1 << 13;

/// Enters S5 through the PM1a control register; halts forever if the platform ignores that.
pub fn power_off() -> ! {
    // SAFETY: writing PM1a control only asks the platform to power off.
    unsafe { port::outw(PM1A_CONTROL, SLEEP_S5) };
    loop {
        // SAFETY: with interrupts off HLT just stops the CPU; with them on it waits for one.
        unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
    }
}
