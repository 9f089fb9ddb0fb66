//! The virtual machine control block (AMD APM Vol. 2, Appendix B "Layout of VMCB"): the control
//! area the monitor programs and the state-save area the hardware loads and stores at VMRUN and
//! #VMEXIT. Offsets are checked at compile time against the APM tables.
//!
//! This is only the memory layout and the bit definitions; programming it is `vcpu.rs`.

use core::mem::offset_of;
use static_assertions::const_assert_eq;

/// A segment register in the save area (APM Table B-2): selector, packed attributes, limit, base.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Segment {
    pub selector: u16,
    /// Descriptor bits 40-47 in 7:0 and bits 52-55 (AVL, L, D/B, G) in 11:8.
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

impl Segment {
    pub const fn new(selector: u16, attrib: u16, limit: u32, base: u64) -> Self {
        Self {
            selector,
            attrib,
            limit,
            base,
        }
    }
}

/// Attribute bits of `Segment::attrib`.
pub mod attrib {
    pub const LONG: u16 = 1 << 9;
    pub const DB: u16 = 1 << 10;
    pub const PRESENT: u16 = 1 << 7;
}

/// The control area, offsets 0x000-0x3FF (APM Table B-1).
#[repr(C)]
pub struct Control {
    pub intercept_cr: u32,
    pub intercept_dr: u32,
    pub intercept_exceptions: u32,
    pub intercept_misc1: u32,
    pub intercept_misc2: u32,
    pub intercept_misc3: u32,
    _reserved_018: [u8; 0x24],
    pub pause_filter_threshold: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub guest_asid: u32,
    pub tlb_control: u8,
    _reserved_05d: [u8; 3],
    /// V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR.
    pub vintr: u64,
    /// Bit 0: the guest is in an interrupt shadow.
    pub interrupt_shadow: u64,
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    pub exit_int_info: u64,
    pub np_control: u64,
    pub avic_apic_bar: u64,
    pub ghcb_pa: u64,
    pub event_inj: u64,
    pub n_cr3: u64,
    pub lbr_virt: u64,
    pub clean_bits: u32,
    _reserved_0c4: u32,
    pub next_rip: u64,
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    _reserved_0e0: [u8; 0x320],
}

/// The state-save area, offsets 0x400-0xFFF (APM Table B-2, relative to 0x400).
#[repr(C)]
pub struct Save {
    pub es: Segment,
    pub cs: Segment,
    pub ss: Segment,
    pub ds: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub gdtr: Segment,
    pub ldtr: Segment,
    pub idtr: Segment,
    pub tr: Segment,
    _reserved_0a0: [u8; 0x2B],
    pub cpl: u8,
    _reserved_0cc: u32,
    pub efer: u64,
    _reserved_0d8: [u8; 0x70],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    _reserved_180: [u8; 0x58],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    _reserved_248: [u8; 0x20],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    _reserved_298: [u8; 0x968],
}

/// One VMCB: a 4 KiB-aligned page.
#[repr(C, align(4096))]
pub struct Vmcb {
    pub control: Control,
    pub save: Save,
}

const_assert_eq!(core::mem::size_of::<Vmcb>(), 4096);
const_assert_eq!(core::mem::size_of::<Control>(), 0x400);
const_assert_eq!(offset_of!(Control, pause_filter_threshold), 0x03C);
const_assert_eq!(offset_of!(Control, iopm_base_pa), 0x040);
const_assert_eq!(offset_of!(Control, msrpm_base_pa), 0x048);
const_assert_eq!(offset_of!(Control, tsc_offset), 0x050);
const_assert_eq!(offset_of!(Control, guest_asid), 0x058);
const_assert_eq!(offset_of!(Control, tlb_control), 0x05C);
const_assert_eq!(offset_of!(Control, vintr), 0x060);
const_assert_eq!(offset_of!(Control, interrupt_shadow), 0x068);
const_assert_eq!(offset_of!(Control, exit_code), 0x070);
const_assert_eq!(offset_of!(Control, exit_info1), 0x078);
const_assert_eq!(offset_of!(Control, exit_info2), 0x080);
const_assert_eq!(offset_of!(Control, exit_int_info), 0x088);
const_assert_eq!(offset_of!(Control, np_control), 0x090);
const_assert_eq!(offset_of!(Control, event_inj), 0x0A8);
const_assert_eq!(offset_of!(Control, n_cr3), 0x0B0);
const_assert_eq!(offset_of!(Control, clean_bits), 0x0C0);
const_assert_eq!(offset_of!(Control, next_rip), 0x0C8);
const_assert_eq!(offset_of!(Control, insn_len), 0x0D0);
const_assert_eq!(offset_of!(Save, tr), 0x090);
const_assert_eq!(offset_of!(Save, cpl), 0x0CB);
const_assert_eq!(offset_of!(Save, efer), 0x0D0);
const_assert_eq!(offset_of!(Save, cr4), 0x148);
const_assert_eq!(offset_of!(Save, rflags), 0x170);
const_assert_eq!(offset_of!(Save, rip), 0x178);
const_assert_eq!(offset_of!(Save, rsp), 0x1D8);
const_assert_eq!(offset_of!(Save, rax), 0x1F8);
const_assert_eq!(offset_of!(Save, star), 0x200);
const_assert_eq!(offset_of!(Save, cr2), 0x240);
const_assert_eq!(offset_of!(Save, g_pat), 0x268);
const_assert_eq!(offset_of!(Save, last_excp_to), 0x290);

/// Intercept bits of `intercept_misc1` (APM Table B-1, offset 0x00C).
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const VINTR: u32 = 1 << 4;
    pub const CPUID: u32 = 1 << 18;
    pub const IRET: u32 = 1 << 20;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of `intercept_misc2` (offset 0x010).
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const ICEBP: u32 = 1 << 8;
    pub const WBINVD: u32 = 1 << 9;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_CONDITIONAL: u32 = 1 << 12;
}

/// Bits of `vintr` (offset 0x060).
pub mod vintr {
    pub const V_IRQ: u64 = 1 << 8;
    pub const V_IGN_TPR: u64 = 1 << 20;
    pub const V_INTR_MASKING: u64 = 1 << 24;
}

/// EVENTINJ and EXITINTINFO format (APM §15.20).
pub mod event {
    pub const VALID: u64 = 1 << 31;
    pub const ERROR_VALID: u64 = 1 << 11;
    pub const TYPE_INTR: u64 = 0 << 8;
    pub const TYPE_NMI: u64 = 2 << 8;
    pub const TYPE_EXCEPTION: u64 = 3 << 8;
}

/// EFER bits the backend cares about.
pub mod efer {
    pub const SVME: u64 = 1 << 12;
}
