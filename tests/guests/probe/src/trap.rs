//! Exception handling of the probe: an IDT whose 256 gates all lead to one recording handler, and
//! `guarded!`, which runs one instruction that may fault and reports the fault instead of dying.
//! Not here: what the checks expect (see `checks`).
//!
//! Scheme: before the instruction, the guarded block stores the address just after it in
//! `RESUME_RIP`; the handler records vector, error code, faulting RIP and CR2, and if a resume
//! address is armed it rewrites the saved RIP to it, disarms it and returns. A fault with nothing
//! armed is a bug in the probe or the monitor: it is reported as a FAIL and the guest powers off.

use core::arch::{asm, global_asm};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// `TRAP_VECTOR` value meaning "no exception since the last `arm`".
const NO_TRAP: u64 = u64::MAX;

/// Code segment selector of the probe's GDT (see `boot`).
const CODE_SELECTOR: u64 = 0x10;

/// Where the handler resumes after an exception; 0 when nothing is armed.
pub static RESUME_RIP: AtomicU64 = AtomicU64::new(0);
static TRAP_VECTOR: AtomicU64 = AtomicU64::new(NO_TRAP);
static TRAP_ERROR: AtomicU64 = AtomicU64::new(0);
static TRAP_RIP: AtomicU64 = AtomicU64::new(0);
static TRAP_CR2: AtomicU64 = AtomicU64::new(0);

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
    movq 8(%rsp), %rax
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

/// Fills the IDT with the stubs and loads it.
pub fn install() {
    // SAFETY: the probe is single-threaded with interrupts off, so nothing else touches the IDT;
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
macro_rules! guarded {
    ($insn:literal, $($operands:tt)*) => {{
        $crate::trap::arm();
        core::arch::asm!(
            "lea {resume_at}, [rip + 2f]",
            "mov qword ptr [rip + {resume}], {resume_at}",
            $insn,
            "2:",
            "mov qword ptr [rip + {resume}], 0",
            resume = sym $crate::trap::RESUME_RIP,
            resume_at = out(reg) _,
            $($operands)*
        );
        $crate::trap::taken()
    }};
}
pub(crate) use guarded;

/// Called by the handler for an exception nothing armed: reports it and powers off.
extern "C" fn unexpected() -> ! {
    let trap = Trap {
        vector: TRAP_VECTOR.load(Ordering::SeqCst) as u8,
        error: TRAP_ERROR.load(Ordering::SeqCst),
        cr2: TRAP_CR2.load(Ordering::SeqCst),
    };
    let rip = TRAP_RIP.load(Ordering::SeqCst);
    crate::report::fail("trap", format_args!("unexpected {trap} at rip {rip:#x}"));
    crate::power_off()
}
