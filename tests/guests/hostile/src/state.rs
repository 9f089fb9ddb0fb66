//! Attacks on the vCPU's own state, each meant to end or freeze the attacker: triple fault,
//! shutdown through not-present gates, HLT and a spin with interrupts off, and the two reset
//! ports. None returns.

use core::arch::asm;

use crate::report;

/// An IDT with limit 0: the first exception cannot be delivered (#GP, then #DF, then
/// shutdown: Intel SDM Vol. 3A 6.15, "Interrupt 8—Double Fault Exception").
pub fn triple_fault(_: u64) {
    report::triple_fault()
}

/// A full-size IDT whose gates are all not present: #UD finds no gate (#NP), whose gate is
/// not present either (#DF), whose gate is not present: shutdown.
pub fn shutdown(_: u64) {
    static ABSENT: [u64; 512] = [0; 512];
    let pointer = [
        (512 * 8 - 1) as u16 as u64 | (&raw const ABSENT as u64) << 16,
        (&raw const ABSENT as u64) >> 48,
    ];
    // SAFETY: the guest gives up here on purpose.
    unsafe { asm!("lidt [{}]", "ud2", in(reg) pointer.as_ptr(), options(noreturn)) }
}

/// HLT with interrupts off: the vCPU never wakes, and must cost the host nothing.
pub fn halt_forever(_: u64) {
    loop {
        // SAFETY: the guest stops here on purpose.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// A spin with interrupts off: the host's timer must still take the CPU away.
pub fn spin_forever(_: u64) {
    // SAFETY: the guest spins here on purpose.
    unsafe { asm!("cli", "2:", "jmp 2b", options(noreturn)) }
}

/// The reset control register (0xCF9) with the reset bit (bit 2) and full reset (bit 1).
pub fn reset_cf9(_: u64) {
    // SAFETY: the guest asks for its own reset.
    unsafe { rt::port::outb(0xCF9, 0x06) };
    report::fail(format_args!("still running after a reset through 0xCF9"))
}

/// The keyboard controller's pulse-reset command (0xFE to port 0x64).
pub fn reset_kbc(_: u64) {
    // SAFETY: the guest asks for its own reset.
    unsafe { rt::port::outb(0x64, 0xFE) };
    report::fail(format_args!(
        "still running after a reset through the keyboard controller"
    ))
}
