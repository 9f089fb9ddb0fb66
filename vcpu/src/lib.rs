//! The vendor-neutral vCPU interface: the register file, the exit enum every backend decodes
//! into, the events the core injects, and the `Vcpu` trait the one exit loop drives.
//!
//! It is what `hv-core` sees of a virtual CPU and what `svm` and `vmx` implement. It is not a
//! backend: nothing here touches hardware, and nothing vendor-specific lives here beyond the raw
//! exit code carried along for counting and tracing.
#![no_std]

/// General-purpose registers in the architectural encoding order (RAX = 0 … R15 = 15), plus RIP
/// and RFLAGS. Backends keep this copy authoritative between exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Regs {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
}

/// Architectural register numbers, as in ModRM/REX encodings.
pub mod reg {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
}

/// A port I/O access as the exit information describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    pub port: u16,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    pub write: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix present.
    pub rep: bool,
}

/// Why the guest stopped running, in vendor-neutral terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Cpuid,
    Hlt,
    Io(IoAccess),
    /// RDMSR; the index is in RCX.
    MsrRead,
    /// WRMSR; the index is in RCX, the value in EDX:EAX.
    MsrWrite,
    /// A guest-physical access that the nested/extended page tables do not map (MMIO or a hole).
    NestedPageFault {
        gpa: u64,
        write: bool,
        fetch: bool,
    },
    /// A physical interrupt arrived for the host.
    ExternalInterrupt,
    /// The guest can now take the interrupt the core asked a window for.
    InterruptWindow,
    /// The guest can now take the NMI the core asked a window for.
    NmiWindow,
    /// VMMCALL or VMCALL.
    Hypercall,
    /// A virtualization instruction (VMRUN, VMLOAD, VMXON, …) the guest may not use: #UD.
    VirtInstruction,
    /// XSETBV.
    Xsetbv,
    /// INVD or WBINVD.
    CacheFlush,
    /// Triple fault or shutdown condition: the VM is finished.
    Shutdown,
    /// An intercepted guest exception.
    Exception {
        vector: u8,
        error_code: Option<u32>,
    },
    /// The hardware refused to enter the guest (bad guest state).
    InvalidState,
    /// An exit the core does not model.
    Unknown,
}

/// One exit: the decoded reason, the raw vendor code (for counting and tracing), and the address
/// of the next instruction when the hardware reported it (nRIP save, VM-exit instruction length
/// or the I/O exit information). `None` means the core decodes the length itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    pub exit: Exit,
    pub raw: u32,
    pub next_rip: Option<u64>,
}

/// An event for the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A hardware exception, with its error code where the vector defines one.
    Exception {
        vector: u8,
        error_code: Option<u32>,
    },
    /// An external interrupt with the given vector.
    Interrupt(u8),
    Nmi,
}

/// Exception vectors the core injects.
pub mod vector {
    pub const UD: u8 = 6;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
}

/// The guest's paging and mode state, as an instruction decoder and a guest page walker need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CS.L (64-bit code segment) and CS.D/B (32-bit default operand size).
    pub cs_long: bool,
    pub cs_db: bool,
    pub cs_base: u64,
    pub cpl: u8,
}

/// MSRs every backend lets the guest read and write without an exit: the SYSCALL/SYSENTER
/// MSRs, the FS/GS bases and TSC_AUX. The backends keep the guest's copies (the VMCB save area
/// and VMLOAD/VMSAVE on SVM; guest-state fields or the live registers on VMX), and the monitor
/// itself never uses these registers.
pub const PASSTHROUGH_MSRS: [u32; 11] = [
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0xC000_0100, // FS_BASE
    0xC000_0101, // GS_BASE
    0xC000_0102, // KERNEL_GS_BASE
    0xC000_0103, // TSC_AUX
];

/// A value the register does not accept: the guest gets #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidValue;

/// Data-segment bases, for effective addresses in the instruction emulator (in 64-bit mode only
/// FS and GS are not zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segments {
    pub es_base: u64,
    pub ss_base: u64,
    pub ds_base: u64,
    pub fs_base: u64,
    pub gs_base: u64,
}

/// What the exit loop needs of a virtual CPU; `svm` and `vmx` implement it.
pub trait Vcpu {
    /// Enters the guest and returns when it exits.
    fn run(&mut self) -> ExitInfo;
    fn regs(&self) -> &Regs;
    fn regs_mut(&mut self) -> &mut Regs;
    fn control_state(&self) -> ControlState;
    fn segments(&self) -> Segments;
    /// Queues an event for the next entry. At most one event is pending at a time.
    fn inject(&mut self, event: Event);
    /// True when an external interrupt could be delivered at the next entry (RFLAGS.IF set, no
    /// interrupt shadow, no event already queued).
    fn interruptible(&self) -> bool;
    /// Asks for an `Exit::InterruptWindow` as soon as the guest can take an interrupt.
    fn request_interrupt_window(&mut self, on: bool);
    /// True when an NMI could be delivered at the next entry: the guest is not still handling
    /// the last one (no IRET since), no interrupt shadow, no event already queued.
    fn nmi_allowed(&self) -> bool;
    /// Asks for an exit as soon as the guest can take an NMI (`Exit::NmiWindow`, or any exit
    /// after which `nmi_allowed` holds, where the hardware has no NMI-window exit).
    fn request_nmi_window(&mut self, on: bool);
    /// MSRs whose state the hardware keeps in the VMCB/VMCS (EFER, PAT, SYSENTER_*, …):
    /// `None` when the backend does not hold this MSR.
    fn read_state_msr(&self, msr: u32) -> Option<u64>;
    /// `Err(InvalidValue)` means the value is invalid for that MSR (the core raises #GP);
    /// `Ok(false)` means the backend does not hold this MSR.
    fn write_state_msr(&mut self, msr: u32, value: u64) -> Result<bool, InvalidValue>;
    /// The symbolic name of a raw vendor exit code, for counters and traces.
    fn exit_name(&self, raw: u32) -> &'static str;
    /// Ends the next run by TSC time `deadline` (read at `now`) with a timer of the backend's
    /// own where it has one (the VMX-preemption timer); without one the host timer does it.
    fn set_deadline(&mut self, deadline: u64, now: u64);
    /// Puts the vCPU in the state an INIT and then a STARTUP IPI with `vector` leave an
    /// application processor in: see [`sipi`].
    fn start_up(&mut self, vector: u8);
    /// The vCPU stops running on this physical CPU for now: whatever of it is still live in
    /// the CPU (a current VMCS, guest MSRs, cached translations) goes back to memory or is
    /// marked stale, so that its next run may be on any CPU.
    fn release(&mut self);
}

/// The state after INIT and STARTUP (Intel SDM Vol. 3A 10.1.1 Table 10-1 "IA-32 and Intel 64
/// Processor States Following Power-up, Reset, or INIT", 11.6.1 and 10.4.4.1; AMD APM Vol. 2
/// 14.1.3): real mode with caches disabled, CS selector `vector << 8` and base `vector << 12`,
/// IP 0, the other segments at 0 with 64 KiB limits, GDTR and IDTR base 0 limit 0xFFFF, every
/// general register 0.
pub mod sipi {
    /// CR0.CD | CR0.NW | CR0.ET.
    pub const CR0: u64 = 0x6000_0010;
    pub const RFLAGS: u64 = 0x2;
    pub const DR6: u64 = 0xFFFF_0FF0;
    pub const DR7: u64 = 0x400;
    /// Limit of every segment and of the GDTR and IDTR.
    pub const LIMIT: u32 = 0xFFFF;

    /// The CS selector and base a STARTUP IPI with `vector` gives.
    pub const fn code_segment(vector: u8) -> (u16, u64) {
        ((vector as u16) << 8, (vector as u64) << 12)
    }
}

/// The state a vCPU starts in: flat segments from a GDT the loader wrote into guest memory,
/// paging and mode as the boot protocol requires (Linux 64-bit entry, PVH 32-bit entry, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartState {
    pub regs: Regs,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub code_selector: u16,
    pub data_selector: u16,
    /// CS is a 64-bit code segment; otherwise a flat 32-bit one.
    pub long_mode: bool,
}
