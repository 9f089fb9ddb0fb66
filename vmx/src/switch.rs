//! The world switch: save the host's callee-saved registers, point the VMCS's host RSP at the
//! current stack, load the guest's general-purpose registers, VMLAUNCH or VMRESUME, and on exit
//! (at `vmx_exit_landing`, the VMCS's host RIP) store them back. RSP, RIP and RFLAGS of the
//! guest live in the VMCS (SDM Vol. 3C §25.4.1); the host's RSP and RIP come from the
//! host-state area, every other register is ours to move.
//!
//! The host runs with RFLAGS.IF clear and acknowledge-interrupt-on-exit off, so a physical
//! interrupt that ends the guest's slice stays pending in the LAPIC until the exit handler
//! opens a window for it.

use core::arch::global_asm;

/// How the switch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A VM exit (possibly a VM-entry failure, which the exit reason says).
    Exited,
    /// VMLAUNCH/VMRESUME (or the VMWRITE of host RSP) failed with VMfailInvalid.
    FailInvalid,
    /// They failed with VMfailValid: the VM-instruction error field says why.
    FailValid,
}

extern "sysv64" {
    /// Runs the guest of the current VMCS until the next VM exit; `launched` selects VMRESUME.
    /// `gprs` holds RAX..R15; RSP is ignored (it lives in the VMCS). Returns 0 on a VM exit,
    /// 1 on VMfailInvalid, 2 on VMfailValid.
    fn vmx_world_switch(gprs: *mut [u64; 16], launched: u64) -> u64;
    /// The host RIP of every VMCS.
    fn vmx_exit_landing();
}

/// The address VM exits return to.
pub fn exit_landing() -> u64 {
    vmx_exit_landing as *const () as u64
}

/// Enters the guest.
///
/// # Safety
/// VMX root operation with a current VMCS whose host RIP is `exit_landing()` and whose
/// guest and host state VM entry accepts (or that fails cleanly); `launched` must match the
/// VMCS's launch state.
pub unsafe fn run(gprs: &mut [u64; 16], launched: bool) -> Outcome {
    // SAFETY: per the caller; `gprs` is a valid exclusive pointer.
    match unsafe { vmx_world_switch(gprs, u64::from(launched)) } {
        0 => Outcome::Exited,
        1 => Outcome::FailInvalid,
        _ => Outcome::FailValid,
    }
}

global_asm!(
    ".global vmx_world_switch",
    "vmx_world_switch:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    // HOST_RSP (encoding 0x6C14): the exit lands with the stack exactly as it is now.
    "mov rax, 0x6C14",
    "vmwrite rax, rsp",
    "jna 3f",
    // MOV leaves the flags alone: ZF still says whether to launch or resume.
    "test rsi, rsi",
    "mov rax, [rdi + 0*8]",
    "mov rcx, [rdi + 1*8]",
    "mov rdx, [rdi + 2*8]",
    "mov rbx, [rdi + 3*8]",
    "mov rbp, [rdi + 5*8]",
    "mov rsi, [rdi + 6*8]",
    "mov r8,  [rdi + 8*8]",
    "mov r9,  [rdi + 9*8]",
    "mov r10, [rdi + 10*8]",
    "mov r11, [rdi + 11*8]",
    "mov r12, [rdi + 12*8]",
    "mov r13, [rdi + 13*8]",
    "mov r14, [rdi + 14*8]",
    "mov r15, [rdi + 15*8]",
    "mov rdi, [rdi + 7*8]",
    "jnz 2f",
    "vmlaunch",
    "jmp 3f",
    "2:",
    "vmresume",
    // Only a failed VMWRITE/VMLAUNCH/VMRESUME gets here: CF = VMfailInvalid, ZF = VMfailValid.
    "3:",
    "pop rdi",
    "mov eax, 2",
    "jnc 4f",
    "mov eax, 1",
    "4:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".global vmx_exit_landing",
    "vmx_exit_landing:",
    "push rdi",
    "mov rdi, [rsp + 8]",
    "mov [rdi + 0*8], rax",
    "mov [rdi + 1*8], rcx",
    "mov [rdi + 2*8], rdx",
    "mov [rdi + 3*8], rbx",
    "mov [rdi + 5*8], rbp",
    "mov [rdi + 6*8], rsi",
    "mov [rdi + 8*8], r8",
    "mov [rdi + 9*8], r9",
    "mov [rdi + 10*8], r10",
    "mov [rdi + 11*8], r11",
    "mov [rdi + 12*8], r12",
    "mov [rdi + 13*8], r13",
    "mov [rdi + 14*8], r14",
    "mov [rdi + 15*8], r15",
    "pop rax",
    "mov [rdi + 7*8], rax",
    "pop rdi",
    "xor eax, eax",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
);
