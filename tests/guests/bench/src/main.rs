//! The bench guest: a tiny guest kernel that issues known numbers of exits, or times them.
//!
//! Count mode (the default): exactly 1000 CPUID, 500 OUT to the POST port 0x80 and 200 reads of
//! the xAPIC version register, then it prints what it did and powers off:
//!
//! ```text
//! BENCH: mode count
//! BENCH: cpuid 1000
//! BENCH: out 500 port 0x80
//! BENCH: lapic-read 200 version 0x...
//! BENCH: port-io N
//! ```
//!
//! Its boot uses no CPUID and touches no MMIO, so under the monitor those exits are exactly
//! these numbers; `port-io` is every IN and OUT the guest executed, its own printing (one OUT a
//! byte) and the power-off write included.
//!
//! Bench mode (`bench` on its command line): for each operation, `ROUNDS` timed round trips
//! after a warm-up, printed as `BENCH: cycles OP N` (TSC ticks per round trip; under QEMU's
//! `-icount shift=0` one tick is one guest-visible instruction), or `BENCH: cycles OP n/a`
//! when the operation is unavailable (VMMCALL without a hypervisor). Then `BENCH: done`.
//!
//! It boots by the Linux 64-bit protocol (under the monitor) or by multiboot1 (QEMU `-kernel`).
#![no_std]
#![no_main]

mod idt;
mod io;
mod ops;

use core::arch::asm;
use core::panic::PanicInfo;

/// ACPI PM1a control block of the monitor's virtual platform.
const PM1A_CONTROL: u16 = 0xB004;
/// SLP_TYP = 5 (S5, soft off) in bits 10..=12, with SLP_EN (bit 13) (ACPI 6.5, 4.8.3.2.1).
const SLEEP_S5: u16 = 5 << 10 | 1 << 13;
/// QEMU's isa-debug-exit-free way off on a bare PC: the PIIX4 PM1a control at 0x604.
const QEMU_PM1A_CONTROL: u16 = 0x604;
const QEMU_SLEEP_S5: u16 = 1 << 13;

const CPUIDS: u32 = 1000;
const OUTS: u32 = 500;
const LAPIC_READS: u32 = 200;
/// Timed round trips per operation in bench mode, and untimed ones before them.
const ROUNDS: u64 = 100;
const WARM_UP: u64 = 10;

rt::entry!(bench_main);

/// Called by the entry on the guest's own stack.
extern "C" fn bench_main(boot_params: u64, multiboot_info: u64, _multiboot_magic: u64) -> ! {
    idt::install();
    let line = match boot_params {
        0 => rt::cmdline::from_multiboot(multiboot_info),
        _ => rt::cmdline::get(boot_params),
    };
    if rt::cmdline::has_word(line, "bench") {
        bench();
    } else {
        count();
    }
}

fn count() -> ! {
    for _ in 0..CPUIDS {
        ops::cpuid();
    }
    for i in 0..OUTS {
        ops::out_post(i as u8);
    }
    let mut version = 0;
    for _ in 0..LAPIC_READS {
        version = ops::lapic_version();
    }
    io::line(format_args!("BENCH: mode count"));
    io::line(format_args!("BENCH: cpuid {CPUIDS}"));
    io::line(format_args!("BENCH: out {OUTS} port {:#x}", ops::POST_PORT));
    io::line(format_args!(
        "BENCH: lapic-read {LAPIC_READS} version {version:#x}"
    ));
    // The total includes this line's own bytes and the power-off write: find the fixed point.
    let so_far = io::port_io_count();
    let mut total = so_far;
    loop {
        let next = so_far + io::line_len(format_args!("BENCH: port-io {total}")) + 1;
        if next == total {
            break;
        }
        total = next;
    }
    io::line(format_args!("BENCH: port-io {total}"));
    power_off()
}

/// Cycles per round trip of `op`, averaged over `ROUNDS`.
fn time(mut op: impl FnMut()) -> u64 {
    for _ in 0..WARM_UP {
        op();
    }
    let start = ops::rdtsc();
    for _ in 0..ROUNDS {
        op();
    }
    (ops::rdtsc() - start) / ROUNDS
}

/// `time` of an operation that may fail: `None` if any round trip failed.
fn time_fallible(mut op: impl FnMut() -> bool) -> Option<u64> {
    let mut ok = op();
    let cycles = time(|| ok &= op());
    ok.then_some(cycles)
}

fn report(name: &str, cycles: Option<u64>) {
    match cycles {
        Some(c) => io::line(format_args!("BENCH: cycles {name} {c}")),
        None => io::line(format_args!("BENCH: cycles {name} n/a")),
    }
}

fn bench() -> ! {
    io::line(format_args!("BENCH: mode bench"));
    report("empty", Some(time(|| {})));
    report("cpuid", Some(time(ops::cpuid)));
    let hypercall = ops::vmmcall().then(|| {
        time(|| {
            ops::vmmcall();
        })
    });
    report("hypercall", hypercall);
    report("port-out", Some(time(|| ops::out_post(0))));
    report(
        "lapic-read",
        Some(time(|| {
            ops::lapic_version();
        })),
    );
    ops::lapic_setup();
    report("lapic-timer", time_fallible(ops::timer_round_trip));
    report("self-ipi", time_fallible(ops::self_ipi));
    io::line(format_args!("BENCH: done"));
    power_off()
}

/// Enters S5 through the monitor's PM1a control register, then QEMU's (bare QEMU boots);
/// halts forever if neither platform powers off.
fn power_off() -> ! {
    // SAFETY: writing a PM1a control register only asks the platform to power off.
    unsafe { io::outw(PM1A_CONTROL, SLEEP_S5) };
    // SAFETY: as above, for QEMU's PIIX4 power management block.
    unsafe { io::outw(QEMU_PM1A_CONTROL, QEMU_SLEEP_S5) };
    loop {
        // SAFETY: interrupts are off, so HLT just stops the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack, preserves_flags)) };
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    io::line(format_args!("BENCH: panic: {info}"));
    power_off()
}
