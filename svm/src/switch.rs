//! The world switch: load the guest's general-purpose registers, VMLOAD/VMRUN/VMSAVE, store them
//! back. VMRUN itself saves and restores RAX, RSP, RIP, RFLAGS and the segment/control state
//! through the VMCB and the host save area (APM Vol. 2 §15.5); every other GPR is ours to move.
//!
//! The host runs with RFLAGS.IF clear, except across VMRUN, so a physical interrupt ends the
//! guest's slice (the INTR intercept) and stays pending until the exit handler opens a window
//! for it. The host never
//! touches FS, GS, TR, LDTR or the SYSCALL MSRs, so VMLOAD/VMSAVE of the guest's copies suffices.

use core::arch::global_asm;

extern "sysv64" {
    /// Runs the guest of the VMCB at `vmcb_pa` until the next #VMEXIT.
    /// `gprs` holds RAX..R15; RAX and RSP are ignored (they live in the VMCB).
    fn svm_world_switch(vmcb_pa: u64, gprs: *mut [u64; 16]);
}

/// Enters the guest.
///
/// # Safety
/// SVM must be enabled with a host save area, and `vmcb_pa` must be the physical address of a
/// valid VMCB whose guest state VMRUN accepts.
pub unsafe fn run(vmcb_pa: u64, gprs: &mut [u64; 16]) {
    // SAFETY: the caller guarantees the VMCB; `gprs` is a valid exclusive pointer.
    unsafe { svm_world_switch(vmcb_pa, gprs) }
}

global_asm!(
    ".global svm_world_switch",
    "svm_world_switch:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rsi",
    "mov rax, rdi",
    "mov rcx, [rsi + 1*8]",
    "mov rdx, [rsi + 2*8]",
    "mov rbx, [rsi + 3*8]",
    "mov rbp, [rsi + 5*8]",
    "mov rdi, [rsi + 7*8]",
    "mov r8,  [rsi + 8*8]",
    "mov r9,  [rsi + 9*8]",
    "mov r10, [rsi + 10*8]",
    "mov r11, [rsi + 11*8]",
    "mov r12, [rsi + 12*8]",
    "mov r13, [rsi + 13*8]",
    "mov r14, [rsi + 14*8]",
    "mov r15, [rsi + 15*8]",
    "mov rsi, [rsi + 6*8]",
    // With GIF clear, STI lets no interrupt in, but VMRUN saves RFLAGS.IF = 1 for the host: with
    // V_INTR_MASKING, physical interrupts are masked by the host's IF (APM Vol. 2 §15.21.1), so
    // without it the INTR intercept would never fire. After #VMEXIT, CLI before STGI keeps the
    // interrupt pending for the exit handler.
    "clgi",
    "sti",
    "vmload rax",
    "vmrun rax",
    "vmsave rax",
    "cli",
    "stgi",
    // RAX is the VMCB address again (restored from the host save area); free to use.
    "mov rax, [rsp]",
    "mov [rax + 1*8], rcx",
    "mov [rax + 2*8], rdx",
    "mov [rax + 3*8], rbx",
    "mov [rax + 5*8], rbp",
    "mov [rax + 6*8], rsi",
    "mov [rax + 7*8], rdi",
    "mov [rax + 8*8], r8",
    "mov [rax + 9*8], r9",
    "mov [rax + 10*8], r10",
    "mov [rax + 11*8], r11",
    "mov [rax + 12*8], r12",
    "mov [rax + 13*8], r13",
    "mov [rax + 14*8], r14",
    "mov [rax + 15*8], r15",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
);
