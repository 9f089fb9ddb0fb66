//! Plain CPU facts and state the guest reads or sets without expecting a fault: TSC, CPUID,
//! control registers, the interrupt flag, and the E820 map the loader wrote into boot_params.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, _rdtsc};

/// TSC frequency leaf of the hypervisor range (EAX in kHz), as the monitor reports it.
const TIMING_LEAF: u32 = 0x4000_0010;
/// boot_params: number of E820 entries (u8) and the table (20-byte entries) (Linux
/// Documentation/arch/x86/zero-page.rst).
const E820_ENTRIES: u64 = 0x1E8;
const E820_TABLE: u64 = 0x2D0;
const E820_MAX: usize = 128;
const E820_RAM: u32 = 1;

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { _rdtsc() }
}

/// CPUID leaf and subleaf as [EAX, EBX, ECX, EDX].
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = __cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Whether the CPU says it is Intel's (else the guest assumes AMD's instruction set).
pub fn is_intel() -> bool {
    let [_, ebx, ecx, edx] = cpuid(0, 0);
    [ebx, edx, ecx] == [0x756E_6547, 0x4965_6E69, 0x6C65_746E]
}

/// TSC ticks per millisecond (CPUID 0x4000_0010 EAX, in kHz).
pub fn tsc_per_ms() -> u64 {
    let max = cpuid(0x4000_0000, 0)[0];
    let khz = if max >= TIMING_LEAF {
        cpuid(TIMING_LEAF, 0)[0]
    } else {
        0
    };
    if khz == 0 {
        1_000_000
    } else {
        u64::from(khz)
    }
}

/// Spins until `ms` milliseconds of TSC time have passed.
pub fn delay_ms(ms: u64) {
    let end = rdtsc() + ms * tsc_per_ms();
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Physical-address width (CPUID 0x8000_0008 EAX[7:0]), 36 when the leaf is missing.
pub fn max_phys_bits() -> u32 {
    if cpuid(0x8000_0000, 0)[0] >= 0x8000_0008 {
        cpuid(0x8000_0008, 0)[0] & 0xFF
    } else {
        36
    }
}

macro_rules! control_register {
    ($read:ident, $reg:literal) => {
        pub fn $read() -> u64 {
            let value: u64;
            // SAFETY: reading a control register has no side effect.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) value, options(nomem, nostack)) };
            value
        }
    };
    ($read:ident, $write:ident, $reg:literal) => {
        control_register!($read, $reg);

        /// # Safety
        /// The value must keep the guest's paging and mode intact.
        pub unsafe fn $write(value: u64) {
            // SAFETY: the caller vouches for the value.
            unsafe { asm!(concat!("mov ", $reg, ", {}"), in(reg) value, options(nostack)) };
        }
    };
}
control_register!(cr0, "cr0");
control_register!(cr3, set_cr3, "cr3");
control_register!(cr4, set_cr4, "cr4");
control_register!(cr8, "cr8");

pub fn dr7() -> u64 {
    let value: u64;
    // SAFETY: reading DR7 has no side effect.
    unsafe { asm!("mov {}, dr7", out(reg) value, options(nomem, nostack)) };
    value
}

/// Takes maskable interrupts from here on.
pub fn sti() {
    // SAFETY: the IDT handles every vector.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

pub fn cli() {
    // SAFETY: masking interrupts is always safe.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// One RAM range of the E820 map.
#[derive(Clone, Copy)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

/// The RAM ranges the loader reported, by calling `each` for every one.
pub fn for_each_ram(boot_params: u64, mut each: impl FnMut(Range)) {
    // SAFETY: boot_params is identity-mapped RAM the loader filled in.
    let count = unsafe { core::ptr::read_volatile((boot_params + E820_ENTRIES) as *const u8) };
    for i in 0..usize::from(count).min(E820_MAX) {
        let entry = boot_params + E820_TABLE + 20 * i as u64;
        // SAFETY: the entry lies in boot_params' E820 table.
        let (start, size, kind) = unsafe {
            (
                core::ptr::read_unaligned(entry as *const u64),
                core::ptr::read_unaligned((entry + 8) as *const u64),
                core::ptr::read_unaligned((entry + 16) as *const u32),
            )
        };
        if kind == E820_RAM {
            each(Range {
                start,
                end: start.saturating_add(size),
            });
        }
    }
}

/// The end of the highest RAM range.
pub fn ram_top(boot_params: u64) -> u64 {
    let mut top = 0;
    for_each_ram(boot_params, |r| top = top.max(r.end));
    top
}
