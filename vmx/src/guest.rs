//! The guest-state area (SDM Vol. 3C §25.4): the fields a vCPU starts with, built from
//! `vcpu::StartState` so that VM entry's checks (§27.3.1) pass, and the snapshot of guest state
//! read back at every exit, from which the exit loop's views (control state, segment bases,
//! interruptibility) are answered without touching the VMCS.

use vcpu::{ControlState, Segments, StartState};
use x86::vmx::vmcs::guest;

use crate::cr::hardware_cr0;
use crate::features::{fix, Features};

/// Access rights in the VMCS format (SDM Vol. 3C Table 25-2): the descriptor's type, S, DPL,
/// P in bits 7:0, AVL, L, D/B, G in bits 15:12, and "unusable" in bit 16.
pub mod access {
    pub const LONG: u32 = 1 << 13;
    pub const DB: u32 = 1 << 14;
    pub const GRANULARITY: u32 = 1 << 15;
    pub const UNUSABLE: u32 = 1 << 16;
    /// Present, DPL 0, code, execute/read, accessed.
    pub const CODE: u32 = 0x9B;
    /// Present, DPL 0, data, read/write, accessed.
    pub const DATA: u32 = 0x93;
    /// Present, busy 32/64-bit TSS.
    pub const BUSY_TSS: u32 = 0x8B;
    /// LDT type, as an unusable LDTR carries it.
    pub const LDT: u32 = 0x82;
}

pub const CR4_VMXE: u64 = 1 << 13;
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
const DR7_INIT: u64 = 0x400;
/// The VMCS link pointer when VMCS shadowing is unused (SDM Vol. 3C §25.4.2).
const NO_LINK: u64 = u64::MAX;

/// The CR0 and CR4 host-owned bits: the guest reads the shadow and writes to them exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrOwnership {
    pub cr0_mask: u64,
    pub cr0_shadow: u64,
    pub cr4_mask: u64,
    pub cr4_shadow: u64,
}

impl CrOwnership {
    /// The host owns the bits VMX fixes (CR0.NE; CR4.VMXE and any other FIXED0 bit) and the
    /// CR0 caching bits (`cr::CR0_CACHE_BITS`); the guest sees them as it set them in its start
    /// state.
    pub fn new(features: &Features, start: &StartState) -> Self {
        Self {
            cr0_mask: features.cr0_guest_fixed() | crate::cr::CR0_CACHE_BITS,
            cr0_shadow: start.cr0,
            cr4_mask: features.cr4_fixed.0,
            cr4_shadow: start.cr4,
        }
    }

    pub fn visible_cr0(&self, cr0: u64) -> u64 {
        (cr0 & !self.cr0_mask) | (self.cr0_shadow & self.cr0_mask)
    }

    pub fn visible_cr4(&self, cr4: u64) -> u64 {
        (cr4 & !self.cr4_mask) | (self.cr4_shadow & self.cr4_mask)
    }
}

/// The guest-state and shadow fields of a fresh vCPU, as (encoding, value) pairs.
pub fn start_fields(features: &Features, start: &StartState) -> [(u32, u64); 44] {
    use access::*;
    let code = if start.long_mode {
        CODE | LONG | GRANULARITY
    } else {
        CODE | DB | GRANULARITY
    };
    let data = DATA | DB | GRANULARITY;
    let cs = u64::from(start.code_selector);
    let ds = u64::from(start.data_selector);
    let own = CrOwnership::new(features, start);
    let cr0_fixed = (features.cr0_guest_fixed(), features.cr0_fixed.1);
    let regs = &start.regs;
    [
        (guest::CS_SELECTOR, cs),
        (guest::CS_BASE, 0),
        (guest::CS_LIMIT, 0xFFFF_FFFF),
        (guest::CS_ACCESS_RIGHTS, u64::from(code)),
        (guest::SS_SELECTOR, ds),
        (guest::SS_BASE, 0),
        (guest::SS_LIMIT, 0xFFFF_FFFF),
        (guest::SS_ACCESS_RIGHTS, u64::from(data)),
        (guest::DS_SELECTOR, ds),
        (guest::DS_BASE, 0),
        (guest::DS_LIMIT, 0xFFFF_FFFF),
        (guest::DS_ACCESS_RIGHTS, u64::from(data)),
        (guest::ES_SELECTOR, ds),
        (guest::ES_BASE, 0),
        (guest::ES_LIMIT, 0xFFFF_FFFF),
        (guest::ES_ACCESS_RIGHTS, u64::from(data)),
        (guest::FS_SELECTOR, ds),
        (guest::FS_BASE, 0),
        (guest::FS_LIMIT, 0xFFFF_FFFF),
        (guest::FS_ACCESS_RIGHTS, u64::from(data)),
        (guest::GS_SELECTOR, ds),
        (guest::GS_BASE, 0),
        (guest::GS_LIMIT, 0xFFFF_FFFF),
        (guest::GS_ACCESS_RIGHTS, u64::from(data)),
        (guest::LDTR_SELECTOR, 0),
        (guest::LDTR_ACCESS_RIGHTS, u64::from(UNUSABLE | LDT)),
        // The boot protocols leave TR undefined; VM entry wants a busy TSS.
        (guest::TR_SELECTOR, 0),
        (guest::TR_BASE, 0),
        (guest::TR_LIMIT, 0x67),
        (guest::TR_ACCESS_RIGHTS, u64::from(BUSY_TSS)),
        (guest::GDTR_BASE, start.gdt_base),
        (guest::GDTR_LIMIT, u64::from(start.gdt_limit)),
        (guest::IDTR_LIMIT, 0),
        (guest::CR0, hardware_cr0(start.cr0, cr0_fixed)),
        (guest::CR3, start.cr3),
        (guest::CR4, fix(start.cr4, features.cr4_fixed)),
        (x86::vmx::vmcs::control::CR0_GUEST_HOST_MASK, own.cr0_mask),
        (x86::vmx::vmcs::control::CR0_READ_SHADOW, own.cr0_shadow),
        (x86::vmx::vmcs::control::CR4_GUEST_HOST_MASK, own.cr4_mask),
        (x86::vmx::vmcs::control::CR4_READ_SHADOW, own.cr4_shadow),
        (guest::IA32_EFER_FULL, start.efer),
        (guest::IA32_PAT_FULL, DEFAULT_PAT),
        (guest::RFLAGS, regs.rflags | 2),
        (guest::RIP, regs.rip),
    ]
}

/// The guest-state fields of a vCPU that INIT and STARTUP with `vector` put in real mode
/// (`vcpu::sipi`); CR0 and CR4 within the fixed bits `(cr0_fixed, cr4_fixed)`, which an
/// unrestricted guest relaxes for PE and PG. VM entry takes real-mode segments with these
/// attributes and a busy TSS in TR (SDM Vol. 3C §27.3.1.2).
pub fn sipi_fields(vector: u8, cr0_fixed: (u64, u64), cr4_fixed: (u64, u64)) -> [(u32, u64); 38] {
    use access::*;
    use vcpu::sipi;
    let (cs, cs_base) = sipi::code_segment(vector);
    let limit = u64::from(sipi::LIMIT);
    let data = u64::from(DATA);
    [
        (guest::CS_SELECTOR, u64::from(cs)),
        (guest::CS_BASE, cs_base),
        (guest::CS_LIMIT, limit),
        (guest::CS_ACCESS_RIGHTS, u64::from(CODE)),
        (guest::SS_SELECTOR, 0),
        (guest::SS_BASE, 0),
        (guest::SS_LIMIT, limit),
        (guest::SS_ACCESS_RIGHTS, data),
        (guest::DS_SELECTOR, 0),
        (guest::DS_BASE, 0),
        (guest::DS_LIMIT, limit),
        (guest::DS_ACCESS_RIGHTS, data),
        (guest::ES_SELECTOR, 0),
        (guest::ES_BASE, 0),
        (guest::ES_LIMIT, limit),
        (guest::ES_ACCESS_RIGHTS, data),
        (guest::FS_SELECTOR, 0),
        (guest::FS_BASE, 0),
        (guest::FS_LIMIT, limit),
        (guest::FS_ACCESS_RIGHTS, data),
        (guest::GS_SELECTOR, 0),
        (guest::GS_BASE, 0),
        (guest::GS_LIMIT, limit),
        (guest::GS_ACCESS_RIGHTS, data),
        (guest::TR_LIMIT, limit),
        (guest::GDTR_BASE, 0),
        (guest::GDTR_LIMIT, limit),
        (guest::IDTR_BASE, 0),
        (guest::IDTR_LIMIT, limit),
        (guest::CR0, hardware_cr0(sipi::CR0, cr0_fixed)),
        (x86::vmx::vmcs::control::CR0_READ_SHADOW, sipi::CR0),
        (guest::CR3, 0),
        (guest::CR4, fix(0, cr4_fixed)),
        (x86::vmx::vmcs::control::CR4_READ_SHADOW, 0),
        (guest::IA32_EFER_FULL, 0),
        (guest::RFLAGS, sipi::RFLAGS),
        (guest::RIP, 0),
        (guest::DR7, sipi::DR7),
    ]
}

/// The value `list` gives field `f`, 0 when it does not set it.
pub fn field_value(list: &[(u32, u64)], f: u32) -> u64 {
    list.iter().find(|(k, _)| *k == f).map_or(0, |&(_, v)| v)
}

/// Fields every fresh vCPU gets whatever its start state (zero where not listed).
pub fn fixed_fields(rsp: u64) -> [(u32, u64); 13] {
    [
        (guest::RSP, rsp),
        (guest::IDTR_BASE, 0),
        (guest::LDTR_BASE, 0),
        (guest::LDTR_LIMIT, 0),
        (guest::DR7, DR7_INIT),
        (guest::IA32_DEBUGCTL_FULL, 0),
        (guest::IA32_SYSENTER_CS, 0),
        (guest::IA32_SYSENTER_ESP, 0),
        (guest::IA32_SYSENTER_EIP, 0),
        (guest::PENDING_DBG_EXCEPTIONS, 0),
        (guest::ACTIVITY_STATE, 0),
        (guest::INTERRUPTIBILITY_STATE, 0),
        (guest::LINK_PTR_FULL, NO_LINK),
    ]
}

/// Guest state read back at an exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs_access: u32,
    pub cs_base: u64,
    pub segments: Segments,
    /// Guest interruptibility state (SDM Vol. 3C Table 25-3), `blocking` bits.
    pub interruptibility: u32,
}

/// Guest interruptibility-state bits (SDM Vol. 3C Table 25-3).
pub mod blocking {
    pub const STI: u32 = 1 << 0;
    pub const MOV_SS: u32 = 1 << 1;
    /// With "virtual NMIs": virtual-NMI blocking, from an NMI's delivery until the guest's
    /// next IRET (SDM Vol. 3C §26.3).
    pub const NMI: u32 = 1 << 3;
}

/// The guest fields a snapshot is made of, in `Snapshot::from_fields` order.
pub const SNAPSHOT_FIELDS: [u32; 12] = [
    guest::CR0,
    guest::CR3,
    guest::CR4,
    guest::IA32_EFER_FULL,
    guest::CS_ACCESS_RIGHTS,
    guest::CS_BASE,
    guest::ES_BASE,
    guest::SS_BASE,
    guest::DS_BASE,
    guest::FS_BASE,
    guest::GS_BASE,
    guest::INTERRUPTIBILITY_STATE,
];

impl Snapshot {
    pub fn from_fields(f: [u64; 12]) -> Self {
        Self {
            cr0: f[0],
            cr3: f[1],
            cr4: f[2],
            efer: f[3],
            cs_access: f[4] as u32,
            cs_base: f[5],
            segments: Segments {
                es_base: f[6],
                ss_base: f[7],
                ds_base: f[8],
                fs_base: f[9],
                gs_base: f[10],
            },
            interruptibility: f[11] as u32,
        }
    }

    /// The state as the guest sees it (the host-owned CR bits through their shadows).
    pub fn control_state(&self, own: &CrOwnership) -> ControlState {
        ControlState {
            cr0: own.visible_cr0(self.cr0),
            cr3: self.cr3,
            cr4: own.visible_cr4(self.cr4),
            efer: self.efer,
            cs_long: self.cs_access & access::LONG != 0,
            cs_db: self.cs_access & access::DB != 0,
            cs_base: self.cs_base,
            // DPL of SS is the CPL; the flat start state has CS and SS at the same level.
            cpl: ((self.cs_access >> 5) & 3) as u8,
        }
    }

    /// No STI or MOV-SS interrupt shadow.
    pub fn unshadowed(&self) -> bool {
        self.interruptibility & (blocking::STI | blocking::MOV_SS) == 0
    }

    /// Nothing holds an NMI back: no virtual-NMI blocking and no MOV-SS shadow, unless the
    /// core `skipped` the exiting instruction (ending its shadow). An STI shadow does not
    /// count: the NMI-window exit does not wait for it (SDM Vol. 3C §26.2), and the entry
    /// that injects the NMI clears it (`event::entry_interruptibility`).
    pub fn nmi_unblocked(&self, skipped: bool) -> bool {
        let mov_ss = self.interruptibility & blocking::MOV_SS != 0 && !skipped;
        self.interruptibility & blocking::NMI == 0 && !mov_ss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::skylake_caps;

    pub fn start() -> StartState {
        StartState {
            regs: vcpu::Regs {
                rip: 0x10_0200,
                rflags: 2,
                ..Default::default()
            },
            cr0: 0x8001_0033,
            cr3: 0x9000,
            cr4: 0x20,
            efer: 0x500,
            gdt_base: 0x500,
            gdt_limit: 0x1F,
            code_selector: 0x10,
            data_selector: 0x18,
            long_mode: true,
        }
    }

    #[test]
    fn start_state_is_a_flat_long_mode_guest_within_the_fixed_bits() {
        let f = Features::from_caps(&skylake_caps()).unwrap();
        let s = start_fields(&f, &start());
        assert_eq!(field_value(&s, guest::CS_ACCESS_RIGHTS), 0xA09B);
        assert_eq!(field_value(&s, guest::DS_ACCESS_RIGHTS), 0xC093);
        assert_eq!(field_value(&s, guest::TR_ACCESS_RIGHTS), 0x8B);
        assert_eq!(field_value(&s, guest::LDTR_ACCESS_RIGHTS), 0x1_0082);
        assert_eq!(field_value(&s, guest::CR4), 0x20 | CR4_VMXE);
        assert_eq!(
            field_value(&s, x86::vmx::vmcs::control::CR4_READ_SHADOW),
            0x20
        );
        assert_eq!(field_value(&s, guest::CR0), 0x8001_0033);
        assert_eq!(field_value(&s, guest::GDTR_LIMIT), 0x1F);
        let mut s32 = start();
        s32.long_mode = false;
        let s = start_fields(&f, &s32);
        assert_eq!(field_value(&s, guest::CS_ACCESS_RIGHTS), 0xC09B);
        let fixed = fixed_fields(0x8000);
        assert_eq!(field_value(&fixed, guest::LINK_PTR_FULL), u64::MAX);
        assert_eq!(field_value(&fixed, guest::DR7), 0x400);
    }

    #[test]
    fn startup_state_is_real_mode_at_the_vector() {
        let f = Features::from_caps(&skylake_caps()).unwrap();
        let s = sipi_fields(0x9A, (f.cr0_guest_fixed(), f.cr0_fixed.1), f.cr4_fixed);
        assert_eq!(field_value(&s, guest::CS_SELECTOR), 0x9A00);
        assert_eq!(field_value(&s, guest::CS_BASE), 0x9_A000);
        assert_eq!(
            field_value(&s, guest::CS_ACCESS_RIGHTS),
            0x9B,
            "16-bit code"
        );
        assert_eq!(field_value(&s, guest::SS_LIMIT), 0xFFFF);
        assert_eq!(field_value(&s, guest::RIP), 0);
        let cr0 = field_value(&s, guest::CR0);
        assert_eq!(cr0 & 0x8000_0001, 0, "no protection, no paging");
        assert_eq!(
            field_value(&s, x86::vmx::vmcs::control::CR0_READ_SHADOW),
            0x6000_0010
        );
        assert_eq!(field_value(&s, guest::CR4), CR4_VMXE);
        assert_eq!(field_value(&s, guest::IA32_EFER_FULL), 0);
    }

    #[test]
    fn the_guest_sees_its_own_cr_bits_through_the_shadows() {
        let f = Features::from_caps(&skylake_caps()).unwrap();
        let own = CrOwnership::new(&f, &start());
        let mut fields = [0u64; 12];
        fields[2] = 0x20 | CR4_VMXE;
        fields[0] = 0x8001_0033;
        fields[4] = 0xA09B;
        fields[11] = 1;
        let snap = Snapshot::from_fields(fields);
        let c = snap.control_state(&own);
        assert_eq!(c.cr4, 0x20, "VMXE is hidden");
        assert_eq!(c.cr0, 0x8001_0033);
        assert!(c.cs_long && !c.cs_db);
        assert_eq!(c.cpl, 0);
        assert!(!snap.unshadowed(), "STI blocking");
    }

    #[test]
    fn nmi_blocking_is_virtual_nmi_blocking_and_the_mov_ss_shadow() {
        let snap = |interruptibility| Snapshot {
            interruptibility,
            ..Snapshot::default()
        };
        assert!(snap(0).nmi_unblocked(false));
        assert!(snap(blocking::STI).nmi_unblocked(false));
        assert!(!snap(blocking::MOV_SS).nmi_unblocked(false));
        assert!(
            snap(blocking::MOV_SS).nmi_unblocked(true),
            "the instruction after MOV SS was skipped"
        );
        assert!(!snap(blocking::NMI).nmi_unblocked(true), "no IRET yet");
    }
}
