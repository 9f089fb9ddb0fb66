//! Host time: the TSC calibrated against the PIT at boot, and the host local APIC timer that
//! ends a guest's slice when a virtual device is due (TSC-deadline mode where the CPU has it,
//! one-shot count mode otherwise). The legacy PICs are remapped out of the exception range and
//! masked: the monitor takes no host interrupt but its own timer. The timer is programmed only
//! when the wanted deadline changes or the timer fired since it was armed, not on every entry.

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu::{inb, outb, rdmsr, rdtsc, wrmsr};
use super::idt::TIMER_VECTOR;
use raw_cpuid::cpuid;

const PIT_HZ: u64 = 1_193_182;
const LAPIC: u64 = 0xFEE0_0000;
const REG_SVR: u64 = 0xF0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_INITIAL_COUNT: u64 = 0x380;
const REG_CURRENT_COUNT: u64 = 0x390;
const REG_DIVIDE: u64 = 0x3E0;
const MSR_APIC_BASE: u32 = 0x1B;
const MSR_TSC_DEADLINE: u32 = 0x6E0;

/// The TSC deadline the timer is armed for, 0 when it is not: the timer interrupt's handler
/// (`idt::timer_stub`) clears it, so that `arm` programs the timer again once it fired. The host
/// takes interrupts only in `cpu::interrupt_window` and `cpu::wait_for_interrupt`, never between
/// programming the timer and recording it here.
#[no_mangle]
static HOST_TIMER_ARMED: AtomicU64 = AtomicU64::new(0);

pub struct HostTimer {
    pub tsc_hz: u64,
    /// LAPIC timer ticks per 2^32 TSC ticks, when not in TSC-deadline mode.
    lapic_per_tsc: Option<u64>,
}

fn lapic_write(reg: u64, value: u32) {
    // SAFETY: the LAPIC page is identity-mapped and this register exists.
    unsafe { core::ptr::write_volatile((LAPIC + reg) as *mut u32, value) };
}

fn lapic_read(reg: u64) -> u32 {
    // SAFETY: as for `lapic_write`.
    unsafe { core::ptr::read_volatile((LAPIC + reg) as *const u32) }
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
    pub fn init() -> Self {
        mask_legacy_pics();
        // 10 ms of PIT time.
        let ticks = 11_932u16;
        let tsc_hz = tsc_over_pit(ticks) * PIT_HZ / u64::from(ticks);
        // SAFETY: every CPU with SVM or VMX has a local APIC and APIC_BASE.
        let base = unsafe { rdmsr(MSR_APIC_BASE) };
        // SAFETY: enable the APIC in xAPIC mode at its default base.
        unsafe {
            wrmsr(
                MSR_APIC_BASE,
                (base & 0xFFF & !(1 << 10)) | LAPIC | (1 << 11),
            )
        };
        lapic_write(REG_SVR, 0x1FF);
        let deadline = cpuid!(1).ecx & (1 << 24) != 0;
        let lapic_per_tsc = if deadline {
            lapic_write(REG_LVT_TIMER, u32::from(TIMER_VECTOR) | (0b10 << 17));
            None
        } else {
            lapic_write(REG_DIVIDE, 0xB);
            lapic_write(REG_LVT_TIMER, u32::from(TIMER_VECTOR) | (1 << 16));
            lapic_write(REG_INITIAL_COUNT, u32::MAX);
            let tsc = tsc_over_pit(ticks);
            let elapsed = u64::from(u32::MAX - lapic_read(REG_CURRENT_COUNT));
            lapic_write(REG_INITIAL_COUNT, 0);
            lapic_write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
            Some((elapsed << 32) / tsc.max(1))
        };
        Self {
            tsc_hz,
            lapic_per_tsc,
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
        if HOST_TIMER_ARMED.load(Ordering::Relaxed) == deadline {
            return;
        }
        HOST_TIMER_ARMED.store(deadline, Ordering::Relaxed);
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
