//! The canary: fills its RAM with a pattern, then prints `CANARY n tick` each time n, the count
//! of 10 ms periods of its own TSC since it started, changes. While it is not scheduled its TSC
//! runs on, so the n it prints next jumps: the tests read starvation from the jumps. The final
//! `tick` tells a whole line from one the monitor's own log line cut in two.

use crate::cpu;

/// RAM from here on is filled; below are the loader's structures and this image.
const FILL_FROM: u64 = 4 << 20;
const PERIOD_MS: u64 = 10;

/// The value the canary keeps at guest-physical `gpa` (8-aligned) of its RAM. The attacker
/// must never read it at any address of its own.
pub fn pattern(gpa: u64) -> u64 {
    0x4341_4E41_5259_0000 ^ gpa.rotate_left(17)
}

pub fn run(boot_params: u64) -> ! {
    let mut filled = 0;
    cpu::for_each_ram(boot_params, |r| {
        let mut gpa = (r.start.max(FILL_FROM) + 7) & !7;
        while gpa + 8 <= r.end && gpa < 1 << 32 {
            // SAFETY: RAM the loader reported, above everything the canary uses, identity-mapped.
            unsafe { core::ptr::write_volatile(gpa as *mut u64, pattern(gpa)) };
            gpa += 8;
            filled += 8;
        }
    });
    rt::serial::line(format_args!("CANARY filled {} KiB", filled >> 10));
    let period = PERIOD_MS * cpu::tsc_per_ms();
    let start = cpu::rdtsc();
    let mut last = 0;
    loop {
        let n = (cpu::rdtsc() - start) / period;
        if n != last {
            last = n;
            rt::serial::line(format_args!("CANARY {n} tick"));
        }
        core::hint::spin_loop();
    }
}
