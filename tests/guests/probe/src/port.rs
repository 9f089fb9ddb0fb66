//! Port I/O to devices the probe relies on (COM1, the ACPI PM1a control register). Not here:
//! reads of unclaimed ports, which may fault and go through `insn`.

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must be one whose write has no effect on memory safety.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: OUT touches no memory; the caller vouches for the device's side effects.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// The port must be one whose write has no effect on memory safety.
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: OUT touches no memory; the caller vouches for the device's side effects.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// The port must be one whose read has no effect on memory safety.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: IN touches no memory; the caller vouches for the device's side effects.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    }
    value
}
