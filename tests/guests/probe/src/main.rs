//! The probe: a tiny guest kernel that pokes at the edges of the virtual machine the monitor gives
//! it (unknown MSRs, unclaimed ports, unmapped guest-physical memory, SVM instructions, CPUID) and
//! prints one `PROBE:` line per check on COM1, then `PROBE: done`, then powers off. The
//! integration tests read those lines. It is not a general test framework: checks run once, in a
//! fixed order, and a FAIL does not stop the others. Boot, traps and COM1 come from `rt`.
#![no_std]
#![no_main]

mod checks;
mod report;

use core::panic::PanicInfo;

use rt::trap::Trap;

rt::entry!(probe_main);

/// Called by the entry on the probe's own stack with the loader's boot_params pointer (0 when
/// booted by multiboot).
extern "C" fn probe_main(boot_params: u64, _multiboot_info: u64, _multiboot_magic: u64) -> ! {
    rt::trap::install(unexpected);
    checks::run(boot_params);
    rt::serial::line(format_args!("PROBE: done"));
    rt::power_off()
}

/// An exception no check armed: reported as a FAIL, then the probe powers off.
fn unexpected(trap: Trap, rip: u64) -> ! {
    report::fail("trap", format_args!("unexpected {trap} at rip {rip:#x}"));
    rt::power_off()
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    report::fail("panic", format_args!("{info}"));
    rt::power_off()
}
