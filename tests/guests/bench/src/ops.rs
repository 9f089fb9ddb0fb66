//! The operations whose exits are counted and timed: CPUID, an OUT to the POST port 0x80 (which
//! the monitor's platform claims and drops, as a PC does), a read of the xAPIC version register,
//! VMMCALL, a LAPIC timer interrupt and a self-IPI. Each is one round trip to the monitor when
//! the guest runs under it.

use core::arch::asm;

use crate::idt;
use crate::io;

/// The POST diagnostic port: claimed by the monitor's platform, writes are dropped.
pub const POST_PORT: u16 = 0x80;
/// xAPIC MMIO base (the reset value of IA32_APIC_BASE; the guest never moves it nor enables
/// x2APIC mode).
const LAPIC: usize = 0xFEE0_0000;
/// xAPIC registers (Intel SDM Vol. 3A Table 11-1).
const VERSION: usize = 0x30;
const SVR: usize = 0xF0;
const ICR_LOW: usize = 0x300;
const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_DIVIDE: usize = 0x3E0;
/// SVR bit 8: APIC software enable; low byte the spurious vector.
const SVR_ENABLE: u32 = 0x1FF;
/// Divide configuration 1011b: divide by 1.
const DIVIDE_BY_1: u32 = 0xB;
/// ICR destination shorthand "self" (bits 19:18 = 01), fixed delivery.
const ICR_SELF: u32 = 1 << 18;

pub fn cpuid() {
    // SAFETY: CPUID has no side effects; RBX, which LLVM reserves, is saved around it.
    unsafe {
        asm!(
            "mov {save}, rbx",
            "cpuid",
            "mov rbx, {save}",
            save = out(reg) _,
            inout("eax") 0 => _,
            inout("ecx") 0 => _,
            out("edx") _,
            options(nomem, nostack, preserves_flags)
        )
    }
}

pub fn out_post(value: u8) {
    // SAFETY: the POST port is a sink without side effects.
    unsafe { io::outb(POST_PORT, value) }
}

fn lapic_read(reg: usize) -> u32 {
    // SAFETY: the xAPIC page is identity-mapped device memory; reads have no side effects on
    // these registers.
    unsafe { core::ptr::read_volatile((LAPIC + reg) as *const u32) }
}

fn lapic_write(reg: usize, value: u32) {
    // SAFETY: as for `lapic_read`; the registers written only arm interrupts the IDT handles.
    unsafe { core::ptr::write_volatile((LAPIC + reg) as *mut u32, value) }
}

/// The LAPIC version register (one MMIO read).
pub fn lapic_version() -> u32 {
    lapic_read(VERSION)
}

/// VMMCALL with RAX = 0; false if it raised #UD (no hypervisor to call).
pub fn vmmcall() -> bool {
    let before = idt::ud_taken();
    // SAFETY: VMMCALL either exits to the monitor, which returns an error in RAX, or raises
    // #UD, whose handler resumes after it.
    unsafe { asm!("vmmcall", inout("rax") 0u64 => _, options(nostack)) };
    idt::ud_taken() == before
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects; LFENCE keeps it after the preceding operation.
    unsafe {
        asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Software-enables the LAPIC and points its timer at `idt::VECTOR`, one-shot, divide by 1.
pub fn lapic_setup() {
    lapic_write(SVR, SVR_ENABLE);
    lapic_write(TIMER_DIVIDE, DIVIDE_BY_1);
    lapic_write(LVT_TIMER, u32::from(idt::VECTOR));
}

/// TSC ticks an interrupt may take before the round trip counts as failed.
const INTERRUPT_TIMEOUT: u64 = 100_000_000;

/// Spins with interrupts on until the interrupt count passes `seen`; false on timeout. It does
/// not halt: under the monitor a pending interrupt is injected at the next entry, and the
/// monitor arms its own timer for the guest's LAPIC timer deadline, so spinning suffices.
fn wait_interrupt(seen: u64) -> bool {
    let start = rdtsc();
    while idt::interrupts() == seen {
        if rdtsc() - start > INTERRUPT_TIMEOUT {
            return false;
        }
        // SAFETY: the window between STI's shadow and CLI lets a pending interrupt in; the
        // handler only counts it.
        unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) };
    }
    true
}

/// Arms the timer for one tick and waits for its interrupt; false if it never came.
pub fn timer_round_trip() -> bool {
    let seen = idt::interrupts();
    lapic_write(TIMER_INITIAL, 1);
    wait_interrupt(seen)
}

/// Sends a fixed IPI to itself and waits for it; false if it never came.
pub fn self_ipi() -> bool {
    let seen = idt::interrupts();
    lapic_write(ICR_LOW, ICR_SELF | u32::from(idt::VECTOR));
    wait_interrupt(seen)
}
