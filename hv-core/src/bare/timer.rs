//! Host time: the TSC calibrated against the PIT at boot, and each CPU's host local APIC timer
//! that ends a guest's slice when a virtual device is due (TSC-deadline mode where the CPU has
//! it, one-shot count mode otherwise). The legacy PICs are remapped out of the exception range
//! and masked: the monitor takes no host interrupt but its own timers and wake-ups. A timer is
//! programmed only when the wanted deadline changes or it fired since it was armed, not on
//! every entry.

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu::{inb, outb, rdtsc, wrmsr};
use super::idt::TIMER_VECTOR;
use super::lapic::{self, read as lapic_read, write as lapic_write};
use raw_cpuid::cpuid;

const PIT_HZ: u64 = 1_193_182;
const REG_LVT_TIMER: u64 = 0x320;
const REG_INITIAL_COUNT: u64 = 0x380;
const REG_CURRENT_COUNT: u64 = 0x390;
const REG_DIVIDE: u64 = 0x3E0;
const MSR_TSC_DEADLINE: u32 = 0x6E0;

/// Per local APIC ID, the TSC deadline that CPU's timer is armed for, 0 when it is not: the
/// timer interrupt's handler (`idt::timer_stub`) clears its CPU's entry, so that `arm` programs
/// the timer again once it fired. The host takes interrupts only in `cpu::interrupt_window` and
/// `cpu::wait_for_interrupt`, never between programming the timer and recording it here.
#[no_mangle]
static HOST_TIMER_ARMED: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// One CPU's timer.
pub struct HostTimer {
    pub tsc_hz: u64,
    /// LAPIC timer ticks per 2^32 TSC ticks, when not in TSC-deadline mode.
    lapic_per_tsc: Option<u64>,
    /// This CPU's entry of `HOST_TIMER_ARMED`.
    armed: &'static AtomicU64,
}

/// Counts TSC ticks over `count` PIT ticks of channel 2 in mode 0.
fn tsc_over_pit(count: u16) -> u64 {
    outb(0x61, (inb(0x61) & !0x02) | 0x01);
    outb(0x43, 0xB0);
    outb(0x42, count as u8);
    outb(0x42, (count >> 8) as u8);
    let start = rdtsc();
    while inb(0x61) & 0x20 == 0 {}
    rdtsc() - start
}

fn mask_legacy_pics() {
    for (cmd, data, base, cascade) in [(0x20, 0x21, 0xF0, 4), (0xA0, 0xA1, 0xF8, 2)] {
        outb(cmd, 0x11);
        outb(data, base);
        outb(data, cascade);
        outb(data, 0x01);
        outb(data, 0xFF);
    }
}

impl HostTimer {
    /// Calibrates the TSC and sets up the timer of the CPU it runs on, the first one.
    pub fn init() -> Self {
        mask_legacy_pics();
        // 10 ms of PIT time.
        let ticks = 11_932u16;
        let tsc_hz = tsc_over_pit(ticks) * PIT_HZ / u64::from(ticks);
        lapic::enable();
        let deadline = cpuid!(1).ecx & (1 << 24) != 0;
        let lapic_per_tsc = if deadline {
            None
        } else {
            lapic_write(REG_DIVIDE, 0xB);
            lapic_write(REG_LVT_TIMER, u32::from(TIMER_VECTOR) | (1 << 16));
            lapic_write(REG_INITIAL_COUNT, u32::MAX);
            let tsc = tsc_over_pit(ticks);
            let elapsed = u64::from(u32::MAX - lapic_read(REG_CURRENT_COUNT));
            lapic_write(REG_INITIAL_COUNT, 0);
            Some((elapsed << 32) / tsc.max(1))
        };
        let timer = Self {
            tsc_hz,
            lapic_per_tsc,
            armed: &HOST_TIMER_ARMED[usize::from(lapic::id())],
        };
        timer.set_mode();
        timer
    }

    /// The timer of the CPU this runs on, another one than `init`'s, with the same calibration.
    pub fn for_this_cpu(&self) -> Self {
        lapic::enable();
        let timer = Self {
            tsc_hz: self.tsc_hz,
            lapic_per_tsc: self.lapic_per_tsc,
            armed: &HOST_TIMER_ARMED[usize::from(lapic::id())],
        };
        timer.set_mode();
        timer
    }

    fn set_mode(&self) {
        match self.lapic_per_tsc {
            None => lapic_write(REG_LVT_TIMER, u32::from(TIMER_VECTOR) | (0b10 << 17)),
            Some(_) => {
                lapic_write(REG_DIVIDE, 0xB);
                lapic_write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
            }
        }
    }

    pub fn mode(&self) -> &'static str {
        if self.lapic_per_tsc.is_none() {
            "tsc-deadline"
        } else {
            "one-shot"
        }
    }

    /// Raises the timer interrupt at TSC time `deadline` (at once if it is past). Nothing to do
    /// when the timer is still armed for that deadline: an interrupt already due stays pending
    /// until the host takes it.
    pub fn arm(&self, deadline: u64) {
        let deadline = deadline.max(1);
        if self.armed.load(Ordering::Relaxed) == deadline {
            return;
        }
        self.armed.store(deadline, Ordering::Relaxed);
        match self.lapic_per_tsc {
            // SAFETY: TSC-deadline mode was selected because the CPU has the MSR.
            None => unsafe { wrmsr(MSR_TSC_DEADLINE, deadline) },
            Some(rate) => {
                let delta = deadline.saturating_sub(rdtsc());
                let count =
                    ((u128::from(delta) * u128::from(rate)) >> 32).clamp(1, u32::MAX.into());
                lapic_write(REG_INITIAL_COUNT, count as u32);
            }
        }
    }
}
