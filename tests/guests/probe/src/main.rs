//! The probe: a tiny guest kernel that pokes at the edges of the virtual machine the monitor gives
//! it (unknown MSRs, unclaimed ports, unmapped guest-physical memory, SVM instructions, CPUID) and
//! prints one `PROBE:` line per check on COM1, then `PROBE: done`, then powers off. The
//! integration tests read those lines. It is not a general test framework: checks run once, in a
//! fixed order, and a FAIL does not stop the others.
#![no_std]
#![no_main]

mod boot;
mod checks;
mod insn;
mod port;
mod report;
mod serial;
mod trap;

use core::arch::asm;
use core::panic::PanicInfo;

/// ACPI PM1a control block of the monitor's virtual platform.
const PM1A_CONTROL: u16 = 0xB004;
/// SLP_TYP = 5 (S5, soft off) in bits 10..=12, with SLP_EN (bit 13) (ACPI 6.5, 4.8.3.2.1).
const SLEEP_S5: u16 = 5 << 10 | 1 << 13;

/// Called by `boot` on the probe's own stack with the loader's boot_params pointer (0 when booted
/// by multiboot).
extern "C" fn probe_main(boot_params: u64) -> ! {
    trap::install();
    checks::run(boot_params);
    serial::line(format_args!("PROBE: done"));
    power_off()
}

/// Enters S5 through the PM1a control register; halts forever if the platform ignores that.
fn power_off() -> ! {
    // SAFETY: writing PM1a control only asks the platform to power off.
    unsafe { port::outw(PM1A_CONTROL, SLEEP_S5) };
    loop {
        // SAFETY: interrupts are off, so HLT just stops the CPU.
        unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    report::fail("panic", format_args!("{info}"));
    power_off()
}
