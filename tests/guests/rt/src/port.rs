//! Port I/O to devices the guests rely on (COM1, the ACPI PM1a control register, PCI
//! configuration). Not here: accesses that may fault, which go through `insn`.

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

/// Writes a 32-bit doubleword to an I/O port.
///
/// # Safety
/// The port must be one whose write has no effect on memory safety.
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: OUT touches no memory; the caller vouches for the device's side effects.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a 32-bit doubleword from an I/O port.
///
/// # Safety
/// The port must be one whose read has no effect on memory safety.
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: IN touches no memory; the caller vouches for the device's side effects.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    }
    value
}
