//! The few privileged instructions the monitor's own boot and console code uses on the host CPU:
//! port I/O, MSRs, the TSC, interrupts on and off, HLT.

use core::arch::asm;

pub fn outb(port: u16, value: u8) {
    // SAFETY: the monitor owns the host's ports; callers pass devices it drives.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects (CR4.TSD is clear in the monitor).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// # Safety
/// The MSR must exist on this CPU.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: per the caller.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// # Safety
/// The MSR must exist and accept `value`, and changing it must not break the monitor.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// Lets a pending host interrupt be taken, then closes the window again.
pub fn interrupt_window() {
    // SAFETY: the IDT handles every vector the host can receive.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// Sleeps until the next host interrupt and takes it.
pub fn wait_for_interrupt() {
    // SAFETY: as for `interrupt_window`; STI's shadow covers HLT, so no wake-up is lost.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: interrupts are off; HLT only waits.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    };
    value
}
