//! The multiboot test guest: a tiny kernel loaded by the Multiboot Specification 0.6.96 (a.out
//! kludge header) that prints on COM1 what its boot loader handed it (the magic in EAX, the
//! boot information's flags, memory sizes, command line, memory map and modules, one
//! `MBTEST:` line each), then `MBTEST: done`, and powers off. The integration tests read those
//! lines. It checks nothing itself.
#![no_std]
#![no_main]

mod boot;
mod info;
mod serial;

use core::arch::asm;
use core::panic::PanicInfo;

/// ACPI PM1a control block of the monitor's virtual platform.
const PM1A_CONTROL: u16 = 0xB004;
/// SLP_TYP = 5 (S5, soft off) in bits 10..=12, with SLP_EN (bit 13) (ACPI 6.5, 4.8.3.2.1).
const SLEEP_S5: u16 = 5 << 10 | 1 << 13;

/// Called by `boot` in long mode with the boot loader's EAX and EBX.
extern "C" fn mbtest_main(magic: u32, info: u32) -> ! {
    info::report(magic, info);
    crate::say!("MBTEST: done");
    power_off()
}

fn power_off() -> ! {
    // SAFETY: writing PM1a control only asks the platform to power off.
    unsafe {
        asm!("out dx, ax", in("dx") PM1A_CONTROL, in("ax") SLEEP_S5, options(nomem, nostack));
    }
    loop {
        // SAFETY: interrupts are off, so HLT just stops the CPU.
        unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    crate::say!("MBTEST: panic: {info}");
    power_off()
}
