//! The monitor's interrupt descriptor table: exceptions end in a panic report on the serial line
//! (vector, error code, RIP and every register); the host LAPIC timer vector only acknowledges
//! the interrupt and notes that the timer is no longer armed, since its job is to end a guest's
//! slice (the exit itself is the event); a host NMI is dismissed.

use core::arch::{asm, global_asm};

/// The host LAPIC timer's vector.
pub const TIMER_VECTOR: u8 = 0x20;
/// The vector one of the monitor's CPUs sends another to end its sleep (or its guest's run).
pub const WAKE_VECTOR: u8 = 0x21;
const NMI_VECTOR: usize = 2;

/// Saved by the common stub, lowest address first.
#[repr(C)]
pub struct Frame {
    pub gpr: [u64; 15],
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const GPR_NAMES: [&str; 15] = [
    "r15", "r14", "r13", "r12", "r11", "r10", "r9", "r8", "rbp", "rdi", "rsi", "rdx", "rcx", "rbx",
    "rax",
];

#[no_mangle]
extern "C" fn exception_report(frame: &Frame) -> ! {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    log::error!(
        "monitor exception {} error code {:#x} at rip {:#x} (cs {:#x}, rflags {:#x}, rsp {:#x}, cr2 {:#x})",
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        cr2
    );
    for (name, value) in GPR_NAMES.iter().zip(frame.gpr.iter()).rev() {
        log::error!("  {name} = {value:#018x}");
    }
    super::cpu::halt_forever()
}

#[repr(C, packed)]
struct IdtPointer {
    limit: u16,
    base: u64,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    flags: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        flags: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64) -> Self {
        Gate {
            offset_low: handler as u16,
            selector: 0x08,
            ist: 0,
            flags: 0x8E,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

static mut IDT: [Gate; 256] = [Gate::EMPTY; 256];

extern "C" {
    static exception_stubs: [u64; 32];
    fn timer_stub();
    fn wake_stub();
    fn spurious_stub();
}

/// Fills the IDT and loads it on this CPU, the first one.
pub fn init() {
    // SAFETY: called once, before interrupts are enabled and before other CPUs start; the
    // stubs are valid handlers.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (v, stub) in exception_stubs.iter().enumerate() {
            idt[v] = Gate::interrupt(*stub);
        }
        // Anything else is spurious (legacy PIC noise, stray vectors): dismissed without EOI.
        for gate in idt.iter_mut().skip(32) {
            *gate = Gate::interrupt(spurious_stub as *const () as u64);
        }
        idt[usize::from(TIMER_VECTOR)] = Gate::interrupt(timer_stub as *const () as u64);
        idt[usize::from(WAKE_VECTOR)] = Gate::interrupt(wake_stub as *const () as u64);
        // The monitor raises no NMIs; one from the platform (NMI button, chipset error) has
        // nothing to report to. On SVM one that arrives in a guest's slice exits and is taken
        // here after STGI (on VMX the exit consumes it, see vmx::exit).
        idt[NMI_VECTOR] = Gate::interrupt(spurious_stub as *const () as u64);
    }
    load();
}

/// Loads the IDT `init` filled on this CPU.
pub fn load() {
    let ptr = IdtPointer {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: core::ptr::addr_of!(IDT) as u64,
    };
    // SAFETY: the IDT is static and filled with valid gates by `init`.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack)) };
}

macro_rules! exception_stubs {
    ($($v:literal $err:literal),*) => {
        global_asm!(
            ".text",
            $(
                concat!("exc_stub_", $v, ":"),
                concat!(".if ", $err, " == 0"),
                "push 0",
                ".endif",
                concat!("push ", $v),
                "jmp exception_common",
            )*
            ".section .rodata",
            ".balign 8",
            ".global exception_stubs",
            "exception_stubs:",
            $(concat!(".quad exc_stub_", $v),)*
            ".text",
        );
    };
}

exception_stubs!(0 0, 1 0, 2 0, 3 0, 4 0, 5 0, 6 0, 7 0, 8 1, 9 0, 10 1, 11 1, 12 1, 13 1, 14 1,
    15 0, 16 0, 17 1, 18 0, 19 0, 20 0, 21 1, 22 0, 23 0, 24 0, 25 0, 26 0, 27 0, 28 0, 29 1,
    30 1, 31 0);

global_asm!(
    ".text",
    "exception_common:",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rdi, rsp",
    "and rsp, -16",
    "call exception_report",
    ".global timer_stub",
    "timer_stub:",
    // This CPU's timer is no longer armed (`timer::HOST_TIMER_ARMED`, indexed by the local
    // APIC ID); then EOI, as for a wake-up.
    "push rax",
    "push rdx",
    "mov eax, 0xFEE00020",
    "mov eax, dword ptr [rax]",
    "shr eax, 24",
    "lea rdx, [rip + HOST_TIMER_ARMED]",
    "mov qword ptr [rdx + rax * 8], 0",
    "pop rdx",
    "pop rax",
    ".global wake_stub",
    "wake_stub:",
    // EOI to the host local APIC (xAPIC MMIO, identity-mapped).
    "push rax",
    "mov eax, 0xFEE000B0",
    "mov dword ptr [rax], 0",
    "pop rax",
    "iretq",
    ".global spurious_stub",
    "spurious_stub:",
    "iretq",
);
