//! Exception handling of the test guests: an IDT whose 256 gates all lead to one recording
//! handler, and `guarded!`, which runs one instruction that may fault and reports the fault
//! instead of dying. Not here: what a guest expects of its instructions.
//!
//! Scheme: before the instruction, the guarded block stores the address just after it in
//! `RESUME_RIP`; the handler records vector, error code, faulting RIP and CR2, and if a resume
//! address is armed it rewrites the saved RIP to it, disarms it and returns. A fault with nothing
//! armed is a bug in the guest or the monitor: it goes to the guest's `on_unexpected`.
//!
//! With `count_interrupts(true)`, NMIs (vector 2) and vectors 32..=255 are interrupts instead:
//! the handler counts them per vector, signals EOI to the xAPIC for vectors from 32 on, and
//! returns to the interrupted instruction, armed or not.

use core::arch::{asm, global_asm};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// `TRAP_VECTOR` value meaning "no exception since the last `arm`".
const NO_TRAP: u64 = u64::MAX;

use crate::boot::CODE_SELECTOR;

/// Vector of the non-maskable interrupt.
pub const NMI: u8 = 2;
/// The xAPIC's EOI register (Intel SDM Vol. 3A 11.8.5), at the default APIC base.
const XAPIC_EOI: u64 = 0xFEE0_00B0;

/// Where the handler resumes after an exception; 0 when nothing is armed.
pub static RESUME_RIP: AtomicU64 = AtomicU64::new(0);
static TRAP_VECTOR: AtomicU64 = AtomicU64::new(NO_TRAP);
static TRAP_ERROR: AtomicU64 = AtomicU64::new(0);
static TRAP_RIP: AtomicU64 = AtomicU64::new(0);
static TRAP_CR2: AtomicU64 = AtomicU64::new(0);
/// Non-zero while interrupts are counted rather than treated as exceptions.
static COUNTING: AtomicU64 = AtomicU64::new(0);
/// Interrupts taken per vector while counting.
static INTERRUPTS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
/// What an exception with nothing armed calls (a `fn(Trap, u64) -> !`, as an address).
static ON_UNEXPECTED: AtomicU64 = AtomicU64::new(0);

/// Exception vectors that push an error code (Intel SDM Vol. 3A 6.15, Table 6-1): bit N set for
/// vector N. Vectors from 32 on are interrupts and never do.
const ERROR_CODE_VECTORS: u32 = 1 << 8
    | 1 << 10
    | 1 << 11
    | 1 << 12
    | 1 << 13
    | 1 << 14
    | 1 << 17
    | 1 << 21
    | 1 << 29
    | 1 << 30;

// One stub per vector: pushes a zero where the CPU pushes no error code, then the vector, and
// joins the common handler. `trap_stub_table` lists the stubs' addresses in vector order.
global_asm!(
    r#"
    .section .rodata.trap_stub_table, "a"
    .balign 8
trap_stub_table:
    .section .text.trap, "ax"
    .set vector, 0
    .rept 256
1:
    .if vector < 32
    .if (({error_vectors} >> vector) & 1) == 0
    pushq $0
    .endif
    .else
    pushq $0
    .endif
    pushq $vector
    jmp trap_common
    .section .rodata.trap_stub_table, "a"
    .quad 1b
    .section .text.trap, "ax"
    .set vector, vector + 1
    .endr

trap_common:
    pushq %rax
    cmpq $0, {counting}(%rip)
    je 3f
    movq 8(%rsp), %rax
    cmpq $2, %rax
    je 4f
    cmpq $32, %rax
    jb 3f
    pushq %rdx
    movabsq ${eoi}, %rdx
    movl $0, (%rdx)
    popq %rdx
4:  shlq $3, %rax
    addq ${interrupts}, %rax
    lock incq (%rax)
    popq %rax
    addq $16, %rsp
    iretq
3:  movq 8(%rsp), %rax
    movq %rax, {vector}(%rip)
    movq 16(%rsp), %rax
    movq %rax, {error}(%rip)
    movq 24(%rsp), %rax
    movq %rax, {rip}(%rip)
    movq %cr2, %rax
    movq %rax, {cr2}(%rip)
    movq {resume}(%rip), %rax
    testq %rax, %rax
    jz 2f
    movq %rax, 24(%rsp)
    movq $0, {resume}(%rip)
    popq %rax
    addq $16, %rsp
    iretq
2:  call {unexpected}
    "#,
    error_vectors = const ERROR_CODE_VECTORS,
    vector = sym TRAP_VECTOR,
    error = sym TRAP_ERROR,
    rip = sym TRAP_RIP,
    cr2 = sym TRAP_CR2,
    resume = sym RESUME_RIP,
    unexpected = sym unexpected,
    counting = sym COUNTING,
    interrupts = sym INTERRUPTS,
    eoi = const XAPIC_EOI,
    options(att_syntax)
);

extern "C" {
    /// Entry addresses of the 256 stubs above, in vector order.
    static trap_stub_table: [u64; 256];
}

/// A 64-bit IDT gate (Intel SDM Vol. 3A 6.14.1, Figure 6-8).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Gate([u64; 2]);

impl Gate {
    /// A present, DPL 0 interrupt gate (type 0xE, so IF is cleared on entry) to `handler`.
    const fn interrupt(handler: u64) -> Self {
        let low = (handler & 0xFFFF)
            | CODE_SELECTOR << 16
            | 0x8E << 40
            | ((handler >> 16) & 0xFFFF) << 48;
        Gate([low, handler >> 32])
    }
}

/// Operand of LIDT (Intel SDM Vol. 3A 6.10).
#[repr(C, packed)]
struct DescriptorTablePointer {
    limit: u16,
    base: u64,
}

static mut IDT: [Gate; 256] = [Gate([0; 2]); 256];

/// Fills the IDT with the stubs and loads it; an exception with nothing armed calls
/// `on_unexpected` with the exception and the RIP it was raised at.
pub fn install(on_unexpected: fn(Trap, u64) -> !) {
    ON_UNEXPECTED.store(on_unexpected as usize as u64, Ordering::SeqCst);
    // SAFETY: the guest is single-threaded with interrupts off, so nothing else touches the IDT;
    // `trap_stub_table` is fully initialised data emitted by the assembly above.
    unsafe {
        let idt = &raw mut IDT;
        let stubs = &raw const trap_stub_table;
        for vector in 0..256 {
            (*idt)[vector] = Gate::interrupt((*stubs)[vector]);
        }
        let pointer = DescriptorTablePointer {
            limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
            base: idt as u64,
        };
        asm!("lidt [{}]", in(reg) &raw const pointer, options(readonly, nostack, preserves_flags));
    }
}

/// An exception taken by a guarded instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Trap {
    pub vector: u8,
    /// The error code the CPU pushed; 0 for vectors without one.
    pub error: u64,
    /// CR2 at the time of the exception; meaningful for #PF only.
    pub cr2: u64,
}

/// Vector of an invalid opcode.
pub const UD: u8 = 6;
/// Vector of a general-protection fault.
pub const GP: u8 = 13;
/// Vector of a page fault.
pub const PF: u8 = 14;

/// Intel's mnemonics of the architectural exception vectors 0..=21 (SDM Vol. 3A Table 6-1).
const MNEMONICS: [&str; 22] = [
    "#DE",
    "#DB",
    "NMI",
    "#BP",
    "#OF",
    "#BR",
    "#UD",
    "#NM",
    "#DF",
    "CSO",
    "#TS",
    "#NP",
    "#SS",
    "#GP",
    "#PF",
    "vector 15",
    "#MF",
    "#AC",
    "#MC",
    "#XM",
    "#VE",
    "#CP",
];

impl Trap {
    fn has_error_code(self) -> bool {
        self.vector < 32 && ERROR_CODE_VECTORS & (1 << self.vector) != 0
    }
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match MNEMONICS.get(usize::from(self.vector)) {
            Some(mnemonic) => f.write_str(mnemonic)?,
            None => write!(f, "vector {}", self.vector)?,
        }
        if self.has_error_code() {
            write!(f, "({:#x})", self.error)?;
        }
        if self.vector == PF {
            write!(f, " at {:#x}", self.cr2)?;
        }
        Ok(())
    }
}

/// Forgets any exception recorded so far; `guarded!` calls it before its instruction.
pub fn arm() {
    TRAP_VECTOR.store(NO_TRAP, Ordering::SeqCst);
}

/// The exception taken since the last `arm`, if any.
pub fn taken() -> Result<(), Trap> {
    match TRAP_VECTOR.swap(NO_TRAP, Ordering::SeqCst) {
        NO_TRAP => Ok(()),
        vector => Err(Trap {
            vector: vector as u8,
            error: TRAP_ERROR.load(Ordering::SeqCst),
            cr2: TRAP_CR2.load(Ordering::SeqCst),
        }),
    }
}

/// Runs the assembly `$insn` (one instruction, or a few where only the last may fault) with the
/// given asm! operands, resuming after it if it faults. Evaluates to `Result<(), Trap>`. Must be
/// used inside `unsafe`: the caller vouches for the instruction like for any `asm!`.
#[macro_export]
macro_rules! guarded {
    ($($insn:literal),+ ; $($operands:tt)*) => {{
        $crate::trap::arm();
        core::arch::asm!(
            "lea {resume_at}, [rip + 2f]",
            "mov qword ptr [rip + {resume}], {resume_at}",
            $($insn),+,
            "2:",
            "mov qword ptr [rip + {resume}], 0",
            resume = sym $crate::trap::RESUME_RIP,
            resume_at = out(reg) _,
            $($operands)*
        );
        $crate::trap::taken()
    }};
    ($insn:literal, $($operands:tt)*) => {
        $crate::guarded!($insn; $($operands)*)
    };
    ($insn:literal) => {
        $crate::guarded!($insn;)
    };
}

/// Counts NMIs and vectors 32..=255 as interrupts (see the module comment) while `on`.
pub fn count_interrupts(on: bool) {
    COUNTING.store(u64::from(on), Ordering::SeqCst);
}

/// Interrupts taken at `vector` while counting.
pub fn interrupts(vector: u8) -> u64 {
    INTERRUPTS[usize::from(vector)].load(Ordering::SeqCst)
}

/// Interrupts taken at any of the vectors in `range` while counting.
pub fn interrupts_in(range: core::ops::RangeInclusive<u8>) -> u64 {
    range.map(interrupts).sum()
}

/// Called by the handler for an exception nothing armed: hands it to the guest's handler.
extern "C" fn unexpected() -> ! {
    let trap = Trap {
        vector: TRAP_VECTOR.load(Ordering::SeqCst) as u8,
        error: TRAP_ERROR.load(Ordering::SeqCst),
        cr2: TRAP_CR2.load(Ordering::SeqCst),
    };
    let rip = TRAP_RIP.load(Ordering::SeqCst);
    let handler = ON_UNEXPECTED.load(Ordering::SeqCst);
    if handler == 0 {
        crate::power_off()
    }
    // SAFETY: `install` stored a `fn(Trap, u64) -> !` here, and nothing else writes it.
    let handler: fn(Trap, u64) -> ! = unsafe { core::mem::transmute(handler as usize) };
    handler(trap, rip)
}
