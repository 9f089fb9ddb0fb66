//! Fuzzes the emulated PC (`devices::platform::Platform`) and through it every device's
//! register interface (COM1, the 8259A pair, the 8254 PIT and port 0x61, the CMOS RTC, the
//! ACPI PM block and reset port, the local APIC over MMIO and MSRs, the I/O APIC): sequences
//! of port, MMIO and MSR reads and writes, timer polls at increasing TSC times, interrupt
//! acknowledgements, console input and the power button, on one to four vCPUs (switching the
//! vCPU the accesses come from, and taking the INIT/STARTUP signals and NMIs IPIs leave).
//!
//! Invariants: no panic; reads return no bits above the access size; port accesses of a size
//! other than 1, 2 or 4 bytes read as all ones; an MMIO address is decoded for a write exactly
//! when it is for a read; after `poll(now)` no device asks to be polled at or before `now` (or
//! the exit loop would spin); `has_interrupt` is true exactly when `take_interrupt` yields a
//! vector.
#![no_main]

use devices::layout;
use devices::platform::{Platform, PlatformConfig};
use hv_fuzz::Input;
use libfuzzer_sys::fuzz_target;

/// The ports worth aiming at: each device's block (an offset is added).
const PORTS: &[u16] = &[
    layout::UART_BASE,
    0x20,
    0xA0,
    0x4D0,
    0x40,
    0x61,
    0x70,
    layout::PM1A_EVT_BLK,
    layout::PM1A_CNT_BLK,
    layout::PM_TMR_BLK,
    layout::RESET_PORT,
    0x60,
    0x64,
    0x80,
];
const MSRS: &[u32] = &[
    0x1B, 0x6E0, 0x800, 0x802, 0x803, 0x808, 0x80B, 0x80F, 0x830, 0x838,
];
const PORT_SIZES: &[u8] = &[1, 1, 1, 2, 4, 3, 0];
/// The latest TSC time used: 146 years at 1 GHz, so deadlines past it never saturate.
const MAX_NOW: u64 = 1 << 62;
const MMIO_SIZES: &[u8] = &[1, 2, 4, 4, 4, 8];

fn ones(size: u8) -> u64 {
    match size {
        1..=7 => (1 << (8 * u32::from(size))) - 1,
        _ => u64::MAX,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let cfg = PlatformConfig {
        // From the slowest TSC an emulator might report to the fastest hardware one.
        tsc_hz: 10_000_000 + u64::from(input.u32()) * 2,
        ram_bytes: u64::from(input.u32()) << 4,
        epoch_secs: u64::from(input.u32()) << 2,
        vcpus: 1 + u32::from(input.u8() % 4),
    };
    let mut p = Platform::new(&cfg);
    let mut now = u64::from(input.u16());
    while !input.is_empty() {
        let opb = input.u8() % 13;
        eprintln!("op {opb} now {now}");
        match opb {
            0 => {
                let (port, size) = (port(&mut input), input.pick(PORT_SIZES));
                let value = u64::from(p.io_read(port, size, now));
                if matches!(size, 1 | 2 | 4) {
                    assert_eq!(value & !ones(size), 0, "port {port:#x}/{size} = {value:#x}");
                } else {
                    assert_eq!(
                        value,
                        ones(size) & 0xFFFF_FFFF,
                        "bad size {size} was decoded"
                    );
                }
            }
            1 => {
                let (port, size) = (port(&mut input), input.pick(PORT_SIZES));
                p.io_write(port, size, input.u32(), now);
            }
            2 | 3 => {
                let (gpa, size) = (mmio_gpa(&mut input), input.pick(MMIO_SIZES));
                let read = p.mmio_read(gpa, size, now);
                if let Some(v) = read {
                    assert_eq!(v & !ones(size), 0, "MMIO {gpa:#x}/{size} = {v:#x}");
                }
                let write = p.mmio_write(gpa, size, input.u64(), now);
                assert_eq!(
                    read.is_some(),
                    write,
                    "MMIO {gpa:#x} decoded for one direction"
                );
            }
            4 => {
                let _ = p.msr_read(msr(&mut input), now);
            }
            5 => {
                let _ = p.msr_write(msr(&mut input), input.u64(), now);
            }
            6 | 7 => {
                now = now.saturating_add(step(&mut input, &p, now)).min(MAX_NOW);
                p.poll(now);
                eprintln!("poll {now} -> {:?}", p.next_deadline());
                if let Some(deadline) = p.next_deadline() {
                    assert!(
                        deadline > now,
                        "deadline {deadline} not after poll at {now}"
                    );
                }
            }
            8 => {
                for _ in 0..(input.u8() % 32) {
                    let pending = p.has_interrupt();
                    assert_eq!(pending, p.take_interrupt().is_some());
                    if !pending {
                        break;
                    }
                }
            }
            9 => {
                let _ = p.push_console_input(input.u8());
            }
            10 => while p.pop_console_output().is_some() {},
            11 => {
                p.select_vcpu(usize::from(input.u8() % 5));
                while let Some((vcpu, _)) = p.take_startup() {
                    assert!(vcpu < p.vcpus(), "a signal for vCPU {vcpu} of {}", p.vcpus());
                }
                let _ = p.take_nmi();
            }
            _ => {
                p.press_power_button();
                let _ = p.take_power_event();
            }
        }
    }
});

fn port(input: &mut Input<'_>) -> u16 {
    let sel = input.u8();
    if sel < 0xF0 {
        input.pick(PORTS).wrapping_add(u16::from(sel % 8))
    } else {
        input.u16()
    }
}

fn mmio_gpa(input: &mut Input<'_>) -> u64 {
    let base = match input.u8() % 8 {
        0 => return input.u64(),
        1..=4 => layout::LAPIC_BASE,
        _ => layout::IOAPIC_BASE,
    };
    // Mostly register-aligned offsets, sometimes anywhere in (or just past) the page.
    let off = u64::from(input.u16()) % 0x1008;
    base + if off & 1 == 0 { off & !0xF } else { off }
}

fn msr(input: &mut Input<'_>) -> u32 {
    match input.u8() % 4 {
        0 => input.u32(),
        1 => 0x800 + u32::from(input.u8()),
        _ => input.pick(MSRS),
    }
}

/// How far time moves: to the next deadline, a little, a lot, or anywhere.
fn step(input: &mut Input<'_>, p: &Platform, now: u64) -> u64 {
    match input.u8() % 4 {
        0 => p.next_deadline().map_or(1, |d| d.saturating_sub(now)),
        1 => u64::from(input.u16()),
        2 => u64::from(input.u32()) << 8,
        _ => input.u64(),
    }
}
