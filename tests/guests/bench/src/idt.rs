//! The bench guest's interrupt table: #UD (which VMMCALL raises without a hypervisor) resumes
//! after the 3-byte VMMCALL and notes it, and `VECTOR` (the LAPIC timer and the self-IPI)
//! counts the interrupt and signals EOI. Every other vector is absent, so a stray one ends the
//! run with a triple fault rather than a wrong number.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use rt::boot::CODE_SELECTOR;

/// The vector of the LAPIC timer and of the self-IPI.
pub const VECTOR: u8 = 0x40;
const UD: usize = 6;

/// #UD exceptions taken.
pub static UD_TAKEN: AtomicU64 = AtomicU64::new(0);
/// Interrupts at `VECTOR` taken.
pub static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

// The handlers. VMMCALL is 0F 01 D9 (AMD APM Vol. 3): #UD resumes 3 bytes on. The interrupt
// handler writes the xAPIC EOI register at 0xFEE000B0 (Intel SDM Vol. 3A 11.8.5).
global_asm!(
    r#"
    .section .text.idt, "ax"
    .global bench_ud_handler
bench_ud_handler:
    addq $3, (%rsp)
    lock incq {ud}(%rip)
    iretq
    .global bench_irq_handler
bench_irq_handler:
    pushq %rax
    lock incq {irqs}(%rip)
    movabsq $0xFEE000B0, %rax
    movl $0, (%rax)
    popq %rax
    iretq
    "#,
    ud = sym UD_TAKEN,
    irqs = sym INTERRUPTS,
    options(att_syntax)
);

extern "C" {
    fn bench_ud_handler();
    fn bench_irq_handler();
}

/// A present, DPL 0 interrupt gate to `handler` (Intel SDM Vol. 3A 6.14.1).
const fn gate(handler: u64) -> [u64; 2] {
    let low =
        (handler & 0xFFFF) | CODE_SELECTOR << 16 | 0x8E << 40 | ((handler >> 16) & 0xFFFF) << 48;
    [low, handler >> 32]
}

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);

static mut IDT: Idt = Idt([[0; 2]; 256]);

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Fills in the two gates and loads the IDT.
pub fn install() {
    // SAFETY: single-threaded with interrupts off: nothing else touches the IDT.
    unsafe {
        let idt = &raw mut IDT;
        (*idt).0[UD] = gate(bench_ud_handler as *const () as u64);
        (*idt).0[usize::from(VECTOR)] = gate(bench_irq_handler as *const () as u64);
        let pointer = Pointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: idt as u64,
        };
        asm!("lidt [{}]", in(reg) &raw const pointer, options(readonly, nostack, preserves_flags));
    }
}

pub fn interrupts() -> u64 {
    INTERRUPTS.load(Ordering::SeqCst)
}

pub fn ud_taken() -> u64 {
    UD_TAKEN.load(Ordering::SeqCst)
}
