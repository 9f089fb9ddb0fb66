//! The multiboot test guest: a tiny kernel loaded by the Multiboot Specification 0.6.96 (a.out
//! kludge header) that prints on COM1 what its boot loader handed it (the magic in EAX, the
//! boot information's flags, memory sizes, command line, memory map and modules, one
//! `MBTEST:` line each), then `MBTEST: done`, and powers off. The integration tests read those
//! lines. It checks nothing itself. Boot (the multiboot entry), COM1 and power-off come from
//! `rt`.
#![no_std]
#![no_main]

mod info;

use core::panic::PanicInfo;

/// Prints one line on COM1.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        rt::serial::line(format_args!($($arg)*))
    };
}

rt::entry!(mbtest_main);

/// Called by the entry in long mode with the boot loader's EBX and EAX.
extern "C" fn mbtest_main(_boot_params: u64, multiboot_info: u64, multiboot_magic: u64) -> ! {
    info::report(multiboot_magic, multiboot_info);
    say!("MBTEST: done");
    rt::power_off()
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    say!("MBTEST: panic: {info}");
    rt::power_off()
}
