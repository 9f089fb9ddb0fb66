//! Instructions the test guests execute, each guarded (see `trap`): they return the exception
//! they raised instead of taking the guest down. Not here: what a guest expects of them.

use core::fmt;

use crate::guarded;
use crate::trap::Trap;

/// Size of a memory access.
#[derive(Clone, Copy)]
pub enum Width {
    Byte,
    Word,
    Dword,
    Qword,
}

impl Width {
    pub const ALL: [Width; 4] = [Width::Byte, Width::Word, Width::Dword, Width::Qword];

    pub fn bytes(self) -> u32 {
        match self {
            Width::Byte => 1,
            Width::Word => 2,
            Width::Dword => 4,
            Width::Qword => 8,
        }
    }

    /// The value with every bit of this width set.
    pub fn ones(self) -> u64 {
        u64::MAX >> (64 - 8 * self.bytes())
    }
}

/// What an instruction produced: a value, or the exception it raised.
pub struct Outcome(pub Result<u64, Trap>);

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(value) => write!(f, "{value:#x}"),
            Err(trap) => write!(f, "{trap}"),
        }
    }
}

/// What an instruction without a result did: completed, or raised an exception.
pub struct Completion(pub Result<(), Trap>);

impl fmt::Display for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(()) => f.write_str("completed"),
            Err(trap) => write!(f, "raised {trap}"),
        }
    }
}

/// RDMSR.
///
/// # Safety
/// Reading the MSR must have no side effect on memory safety.
pub unsafe fn rdmsr(msr: u32) -> Result<u64, Trap> {
    let (low, high): (u32, u32);
    // SAFETY: RDMSR touches no memory; the caller vouches for the MSR.
    unsafe { guarded!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high) }
        .map(|()| u64::from(high) << 32 | u64::from(low))
}

/// WRMSR.
///
/// # Safety
/// Writing the MSR must have no side effect on memory safety.
pub unsafe fn wrmsr(msr: u32, value: u64) -> Result<(), Trap> {
    // SAFETY: WRMSR touches no memory; the caller vouches for the MSR.
    unsafe {
        guarded!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32
        )
    }
}

/// IN of one byte, word or doubleword (IN has no 64-bit form).
///
/// # Safety
/// Reading the port must have no side effect on memory safety.
pub unsafe fn port_in(port: u16, width: Width) -> Result<u64, Trap> {
    let value: u32;
    // SAFETY: IN writes only its destination register; the caller vouches for the port.
    unsafe {
        match width {
            Width::Byte => guarded!("in al, dx", in("dx") port, inout("eax") 0u32 => value),
            Width::Word => guarded!("in ax, dx", in("dx") port, inout("eax") 0u32 => value),
            Width::Dword | Width::Qword => {
                guarded!("in eax, dx", in("dx") port, inout("eax") 0u32 => value)
            }
        }
    }
    .map(|()| u64::from(value))
}

/// A load of `width` bytes from the (identity-mapped) address `address`, with a plain MOV.
///
/// # Safety
/// The address must be mapped to nothing that a read disturbs.
pub unsafe fn read(address: u64, width: Width) -> Result<u64, Trap> {
    let value: u64;
    // SAFETY: a load changes only its destination register; the caller vouches for the address.
    unsafe {
        match width {
            Width::Byte => guarded!("mov al, byte ptr [{a}]", a = in(reg) address, inout("rax") 0u64 => value),
            Width::Word => guarded!("mov ax, word ptr [{a}]", a = in(reg) address, inout("rax") 0u64 => value),
            Width::Dword => guarded!("mov eax, dword ptr [{a}]", a = in(reg) address, inout("rax") 0u64 => value),
            Width::Qword => guarded!("mov rax, qword ptr [{a}]", a = in(reg) address, out("rax") value),
        }
    }
    .map(|()| value & width.ones())
}

/// A store of the low `width` bytes of `value` to the (identity-mapped) address `address`.
///
/// # Safety
/// The address must be mapped to nothing the guest's memory safety depends on.
pub unsafe fn write(address: u64, width: Width, value: u64) -> Result<(), Trap> {
    // SAFETY: the caller vouches that the store hits no memory the guest uses.
    unsafe {
        match width {
            Width::Byte => guarded!("mov byte ptr [{a}], al", a = in(reg) address, in("rax") value),
            Width::Word => guarded!("mov word ptr [{a}], ax", a = in(reg) address, in("rax") value),
            Width::Dword => {
                guarded!("mov dword ptr [{a}], eax", a = in(reg) address, in("rax") value)
            }
            Width::Qword => {
                guarded!("mov qword ptr [{a}], rax", a = in(reg) address, in("rax") value)
            }
        }
    }
}

/// VMRUN (AMD APM Vol. 3, "VMRUN": 0F 01 D8) with RAX = `vmcb`.
///
/// # Safety
/// Should VMRUN actually run, `vmcb` must be a VMCB; the checks expect it to fault instead.
pub unsafe fn vmrun(vmcb: u64) -> Result<(), Trap> {
    // SAFETY: with EFER.SVME clear VMRUN raises #UD and has no effect; the caller vouches for RAX.
    unsafe { guarded!(".byte 0x0f, 0x01, 0xd8", in("rax") vmcb) }
}

/// VMMCALL (AMD APM Vol. 3, "VMMCALL": 0F 01 D9) with RAX = `call`; returns RAX afterwards.
/// Hypercall ABIs pass arguments in RDI, RSI, RDX, R10, R8 and may clobber RCX and R11, so all
/// of those are treated as clobbered.
///
/// # Safety
/// The hypercall must have no effect on the guest's memory.
pub unsafe fn vmmcall(call: u64) -> Result<u64, Trap> {
    let result: u64;
    // SAFETY: the caller vouches for the hypercall; every register an ABI may touch is clobbered.
    unsafe {
        guarded!(
            ".byte 0x0f, 0x01, 0xd9",
            inout("rax") call => result,
            out("rdi") _,
            out("rsi") _,
            out("rdx") _,
            out("r10") _,
            out("r8") _,
            out("rcx") _,
            out("r11") _
        )
    }
    .map(|()| result)
}
