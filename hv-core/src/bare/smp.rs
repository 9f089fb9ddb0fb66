//! Bringing up the other CPUs: their local APIC IDs from the ACPI MADT (the `acpi` crate), and
//! for each one the INIT-SIPI-SIPI sequence into a real-mode trampoline copied to a low page,
//! which enters long mode on the monitor's page tables and calls the monitor's entry for it on
//! a stack of its own (SDM Vol. 3A §9.4 "Multiple-Processor Initialization", §10.8.5 for the
//! switch to IA-32e mode). CPUs start one at a time: each reports whether its own set-up (IDT,
//! timer, hardware virtualization) worked before the next is sent its STARTUP.
//!
//! It is not what the CPUs do once up (`scheduler`), nor the guests' own INIT/SIPI.

use alloc::vec::Vec;
use core::arch::{asm, global_asm};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};

use super::cpu::rdtsc;
use super::lapic;

/// Where the trampoline runs: the STARTUP vector 7 starts a CPU at 0x7000 (below the 0x9000
/// QEMU's multiboot loader uses for the boot information; the monitor keeps no data below
/// 1 MiB).
const TRAMPOLINE: u64 = 0x7000;
const STARTUP_VECTOR: u8 = (TRAMPOLINE >> 12) as u8;
/// Each further CPU's stack.
const STACK_BYTES: usize = 256 << 10;
/// The monitor's CPUs, the first included, at most.
pub const MAX_CPUS: usize = 64;

const PENDING: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;

/// The index the CPU being started gets.
static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);
/// Each started CPU's index, by local APIC ID (the first CPU's is 0).
static INDEX_OF: [AtomicU8; 256] = [const { AtomicU8::new(0) }; 256];
/// How the set-up of the CPU being started went.
static STATUS: AtomicU8 = AtomicU8::new(PENDING);
/// What each started CPU runs, given its index: it sets the CPU up, says how that went with
/// `report`, and runs for good.
static mut ENTRY: Option<fn(usize) -> !> = None;

global_asm!(
    r#"
    .section .rodata
    .balign 16
    .global ap_trampoline_start
    .global ap_trampoline_end
    .global ap_trampoline_cr3
    .global ap_trampoline_stack
    .global ap_trampoline_entry
    .code16
ap_trampoline_start:
    jmp ap16
    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00CF9A000000FFFF
ap_gdt_ptr:
    .short 31
    .long 0x7000 + ap_gdt - ap_trampoline_start
    .balign 8
ap_trampoline_cr3:
    .quad 0
ap_trampoline_stack:
    .quad 0
ap_trampoline_entry:
    .quad 0
    .set AP_GDT_PTR, 0x7000 + ap_gdt_ptr - ap_trampoline_start
    .set AP_CR3, 0x7000 + ap_trampoline_cr3 - ap_trampoline_start
    .set AP_STACK, 0x7000 + ap_trampoline_stack - ap_trampoline_start
    .set AP_ENTRY, 0x7000 + ap_trampoline_entry - ap_trampoline_start
ap16:
    cli
    cld
    xor ax, ax
    mov ds, ax
    lgdt [AP_GDT_PTR]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    /* jmp far 0x18:ap32 (66 EA ptr16:32) */
    .byte 0x66, 0xEA
    .long 0x7000 + ap32 - ap_trampoline_start
    .short 0x18

    .code32
ap32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    mov eax, [AP_CR3]
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, (1 << 8) | (1 << 11)
    wrmsr
    /* PG, WP, NE, ET, PE: caches on (the CD and NW of reset cleared) */
    mov eax, 0x80010031
    mov cr0, eax
    .byte 0xEA
    .long 0x7000 + ap64 - ap_trampoline_start
    .short 0x08

    .code64
ap64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, [AP_STACK]
    mov rax, [AP_ENTRY]
    call rax
1:
    hlt
    jmp 1b
ap_trampoline_end:
    .text
"#
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_cr3: u8;
    static ap_trampoline_stack: u8;
    static ap_trampoline_entry: u8;
    static boot_gdt_ptr: u8;
}

/// Reads ACPI tables in place: the monitor identity-maps the first 4 GiB, where firmware
/// puts them.
#[derive(Clone, Copy)]
struct Identity;

impl AcpiHandler for Identity {
    unsafe fn map_physical_region<T>(
        &self,
        address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let pointer = NonNull::new(address as *mut T).unwrap_or(NonNull::dangling());
        // SAFETY: physical memory below 4 GiB is identity-mapped, so the virtual address is the
        // physical one; the caller (`acpi`) guarantees a `T` is there.
        unsafe { PhysicalMapping::new(address, pointer, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// The local APIC IDs of the usable CPUs the MADT lists (enabled, or online-capable), this one
/// first; just this one when there is no MADT or it cannot be read. The RSDP is at `rsdp` when
/// the boot loader gave it, otherwise found in the BIOS area.
pub fn cpus(rsdp: Option<u64>) -> Vec<u8> {
    let me = lapic::id();
    let mut ids = alloc::vec![me];
    let tables = match rsdp {
        // SAFETY: the loader's RSDP copy lies in the reserved, identity-mapped boot information.
        Some(at) => unsafe { AcpiTables::from_rsdp(Identity, at as usize) },
        // SAFETY: without the loader's copy the firmware is a BIOS; the search reads the EBDA
        // and the BIOS area, which are identity-mapped.
        None => unsafe { AcpiTables::search_for_rsdp_bios(Identity) },
    };
    let tables = match tables {
        Ok(t) => t,
        Err(e) => {
            log::warn!("no ACPI tables ({e:?}): running on the boot CPU only");
            return ids;
        }
    };
    let madt = match tables.find_table::<Madt>() {
        Ok(m) => m,
        Err(e) => {
            log::warn!("no MADT ({e:?}): running on the boot CPU only");
            return ids;
        }
    };
    for entry in madt.get().entries() {
        let id = match entry {
            MadtEntry::LocalApic(e) if { e.flags } & 0b11 != 0 => e.apic_id,
            MadtEntry::LocalX2Apic(e) if { e.flags } & 0b11 != 0 => match u8::try_from(e.x2apic_id)
            {
                Ok(id) => id,
                Err(_) => {
                    log::warn!("CPU with x2APIC ID {} left out (xAPIC only)", {
                        e.x2apic_id
                    });
                    continue;
                }
            },
            _ => continue,
        };
        if !ids.contains(&id) && ids.len() < MAX_CPUS {
            ids.push(id);
        }
    }
    ids
}

fn trampoline_offset(symbol: &u8) -> u64 {
    let start = core::ptr::addr_of!(ap_trampoline_start) as u64;
    symbol as *const u8 as u64 - start
}

/// Copies the trampoline to its page, with the monitor's CR3 and the entry point.
fn install_trampoline() {
    let (start, end) = (
        core::ptr::addr_of!(ap_trampoline_start),
        core::ptr::addr_of!(ap_trampoline_end),
    );
    let len = end as usize - start as usize;
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects. The trampoline page is below 1 MiB, which the
    // monitor reserves and identity-maps, and the code is shorter than a page.
    unsafe {
        asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len);
        let put = |symbol: &u8, value: u64| {
            ((TRAMPOLINE + trampoline_offset(symbol)) as *mut u64).write_volatile(value)
        };
        put(&ap_trampoline_cr3, cr3);
        put(&ap_trampoline_entry, cpu_entry as *const () as u64);
    }
}

/// Starts the CPUs `ids` lists after the first (this one), one at a time, each running `entry`
/// with its index in `ids`. Returns the indices of the CPUs that came up and reported ready;
/// the others are left halted and logged.
pub fn start_others(ids: &[u8], entry: fn(usize) -> !, tsc_hz: u64) -> Vec<usize> {
    let mut ready = Vec::new();
    if ids.len() < 2 {
        return ready;
    }
    // SAFETY: set before any other CPU runs and never changed after.
    unsafe { ENTRY = Some(entry) };
    install_trampoline();
    for (index, &id) in ids.iter().enumerate().skip(1) {
        let stack = alloc::vec![0u8; STACK_BYTES].leak();
        let top = (stack.as_ptr() as u64 + STACK_BYTES as u64) & !0xF;
        // SAFETY: the trampoline page holds the trampoline (installed above); no CPU reads its
        // stack slot until the STARTUP below.
        unsafe {
            ((TRAMPOLINE + trampoline_offset(&ap_trampoline_stack)) as *mut u64).write_volatile(top)
        };
        NEXT_INDEX.store(index, Ordering::SeqCst);
        INDEX_OF[usize::from(id)].store(index as u8, Ordering::Relaxed);
        STATUS.store(PENDING, Ordering::SeqCst);
        lapic::start_cpu(id, STARTUP_VECTOR, tsc_hz);
        let deadline = rdtsc().saturating_add(tsc_hz);
        let status = loop {
            let s = STATUS.load(Ordering::SeqCst);
            if s != PENDING || rdtsc() > deadline {
                break s;
            }
            core::hint::spin_loop();
        };
        match status {
            READY => ready.push(index),
            FAILED => log::error!("CPU {index} (APIC ID {id}) cannot run guests; left halted"),
            _ => log::error!("CPU {index} (APIC ID {id}) did not start; left out"),
        }
    }
    ready
}

/// Where the trampoline lands, on the new CPU's own stack.
extern "C" fn cpu_entry() -> ! {
    // SAFETY: the monitor's GDT has the same code and data selectors as the trampoline's.
    unsafe { asm!("lgdt [{}]", in(reg) core::ptr::addr_of!(boot_gdt_ptr), options(nostack)) };
    let index = NEXT_INDEX.load(Ordering::SeqCst);
    // SAFETY: ENTRY was set before this CPU was started.
    let Some(entry) = (unsafe { ENTRY }) else {
        super::cpu::halt_forever()
    };
    entry(index)
}

/// The index of the CPU this runs on, as `start_others` numbered them. It reads the local
/// APIC ID from the APIC, so it is for rare paths (tracing), not for every exit.
pub fn this_cpu() -> u32 {
    u32::from(INDEX_OF[usize::from(lapic::id())].load(Ordering::Relaxed))
}

/// Says whether this newly started CPU is set up to run domains; one that is not halts.
pub fn report(ready: bool) {
    STATUS.store(if ready { READY } else { FAILED }, Ordering::SeqCst);
    if !ready {
        super::cpu::halt_forever()
    }
}
