//! The host's local APIC in xAPIC mode at its default base (identity-mapped): its registers,
//! its ID, and the inter-processor interrupts the monitor sends between its own CPUs (a fixed
//! wake-up vector, and INIT and STARTUP to bring a CPU up; SDM Vol. 3A §11.6, §9.4.4.1).
//!
//! It is not the host timer (`timer`) nor the guests' emulated local APICs (`devices`).

use super::cpu::{rdmsr, rdtsc, wrmsr};

const BASE: u64 = 0xFEE0_0000;
const MSR_APIC_BASE: u32 = 0x1B;
const REG_ID: u64 = 0x20;
const REG_SVR: u64 = 0xF0;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
/// ICR delivery status: the previous IPI is still being sent.
const ICR_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;

pub fn write(reg: u64, value: u32) {
    // SAFETY: the LAPIC page is identity-mapped and `reg` is one of its registers.
    unsafe { core::ptr::write_volatile((BASE + reg) as *mut u32, value) };
}

pub fn read(reg: u64) -> u32 {
    // SAFETY: as for `write`.
    unsafe { core::ptr::read_volatile((BASE + reg) as *const u32) }
}

/// Enables this CPU's local APIC in xAPIC mode at the default base, spurious vector 0xFF.
pub fn enable() {
    // SAFETY: every CPU with SVM or VMX has a local APIC and APIC_BASE; this keeps the BSP flag
    // and enables xAPIC mode (not x2APIC) at the default base.
    unsafe {
        let base = rdmsr(MSR_APIC_BASE);
        wrmsr(
            MSR_APIC_BASE,
            (base & 0xFFF & !(1 << 10)) | BASE | (1 << 11),
        );
    }
    write(REG_SVR, 0x1FF);
}

/// This CPU's local APIC ID.
pub fn id() -> u8 {
    (read(REG_ID) >> 24) as u8
}

fn send(apic_id: u8, command: u32) {
    while read(REG_ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
    write(REG_ICR_HIGH, u32::from(apic_id) << 24);
    write(REG_ICR_LOW, command);
}

/// Whether the monitor runs on QEMU's TCG emulator (CPUID leaf 4000_0000h says "TCGTCGTCGTCG").
/// Its multi-threaded mode, with two vCPUs in SVM guests, now and then fails the first
/// instruction fetch after a #VMEXIT that an IPI from the other vCPU caused: a not-present page
/// fault on the monitor's intact identity map, then a triple fault (seen with QEMU 10.0 `-d int`
/// and the monitor's `xp`; one boot of three guests on two CPUs in five to ten, none in fifteen
/// without IPIs). There the CPUs do without wake-up IPIs (`scheduler`).
pub fn ipis_unsafe() -> bool {
    let hypervisor = raw_cpuid::cpuid!(1).ecx & (1 << 31) != 0;
    let leaf = raw_cpuid::cpuid!(0x4000_0000);
    hypervisor && [leaf.ebx, leaf.ecx, leaf.edx] == [0x5447_4354, 0x4354_4743, 0x4743_5447]
}

/// Sends a fixed interrupt with `vector` to the CPU whose local APIC ID is `apic_id`.
pub fn send_fixed(apic_id: u8, vector: u8) {
    send(apic_id, ICR_LEVEL_ASSERT | u32::from(vector));
}

fn wait_ticks(ticks: u64) {
    let end = rdtsc().saturating_add(ticks);
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// INIT, then two STARTUPs at page `vector` with the delays of the universal start-up
/// algorithm (SDM Vol. 3A §9.4.4.1: 10 ms after INIT, 200 µs between the STARTUPs).
pub fn start_cpu(apic_id: u8, vector: u8, tsc_hz: u64) {
    send(apic_id, ICR_INIT | ICR_LEVEL_ASSERT);
    wait_ticks(tsc_hz / 100);
    for _ in 0..2 {
        send(apic_id, ICR_STARTUP | ICR_LEVEL_ASSERT | u32::from(vector));
        wait_ticks(tsc_hz / 5000);
    }
}
