//! The VMCS and the VMX instructions that manage it (SDM Vol. 3C §25.1-25.2, §31.3): a 4 KiB
//! region tagged with the revision identifier, VMCLEAR, VMPTRLD, VMREAD, VMWRITE, INVEPT and
//! INVVPID, each checked for VMfailInvalid (CF) and VMfailValid (ZF, with the VM-instruction
//! error number of §31.4).
//!
//! The `x86` crate's wrappers read RFLAGS in a separate asm block, which leaves the compiler
//! free to clobber the flags in between; these capture CF and ZF in the same block. Field
//! encodings come from `x86::vmx::vmcs`. The layout of the region beyond its first two words
//! is the processor's and is never touched.

use alloc::boxed::Box;
use core::arch::asm;
use core::fmt;

use x86::vmx::vmcs::ro;

/// A VMXON region or a VMCS: revision identifier in bits 30:0 of the first word, the rest
/// owned by the processor (SDM Vol. 3C §25.2, §24.11.5).
#[repr(C, align(4096))]
pub struct Region([u32; 1024]);

static_assertions::const_assert_eq!(core::mem::size_of::<Region>(), 4096);

impl Region {
    pub fn new(revision: u32) -> Box<Self> {
        Box::new(Self::with_revision(revision))
    }

    pub fn with_revision(revision: u32) -> Self {
        let mut r = Self([0; 1024]);
        r.0[0] = revision & 0x7FFF_FFFF;
        r
    }

    pub fn revision(&self) -> u32 {
        self.0[0]
    }

    /// Physical address (identity mapping).
    pub fn pa(&self) -> u64 {
        self as *const Self as u64
    }
}

/// A VMX instruction's failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// No current VMCS, or the operand is invalid.
    Invalid,
    /// The VM-instruction error number.
    Valid(u32),
}

impl fmt::Display for VmFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid => f.write_str("VMfailInvalid"),
            Self::Valid(n) => write!(
                f,
                "VMfailValid, VM-instruction error {n}: {}",
                error_name(*n)
            ),
        }
    }
}

/// The meaning of a VM-instruction error number (SDM Vol. 3C §31.4, Table 31-1).
pub fn error_name(n: u32) -> &'static str {
    match n {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown error",
    }
}

/// Turns the flags an instruction left (`above` = CF and ZF clear, `carry` = CF) into its
/// result; VMfailValid reads the error from the current VMCS.
fn status(above: u8, carry: u8) -> Result<(), VmFail> {
    match (above, carry) {
        (1, _) => Ok(()),
        (_, 1) => Err(VmFail::Invalid),
        // SAFETY: VMfailValid means a current VMCS exists, so the read succeeds.
        _ => Err(VmFail::Valid(
            unsafe { read_raw(ro::VM_INSTRUCTION_ERROR) } as u32
        )),
    }
}

unsafe fn read_raw(field: u32) -> u64 {
    let value: u64;
    // SAFETY: the caller guarantees VMX operation with a current VMCS.
    unsafe {
        asm!("vmread {v}, {f}", f = in(reg) u64::from(field), v = out(reg) value, options(nostack))
    };
    value
}

/// VMXON of the region at `pa`.
///
/// # Safety
/// CR4.VMXE set, CR0/CR4 within the fixed bits, IA32_FEATURE_CONTROL permitting VMXON, and
/// `pa` a VMXON region kept for as long as VMX operation lasts.
pub unsafe fn vmxon(pa: u64) -> Result<(), VmFail> {
    let (above, carry): (u8, u8);
    // SAFETY: per the caller.
    unsafe {
        asm!("vmxon [{p}]", "seta {a}", "setc {c}", p = in(reg) &pa, a = out(reg_byte) above, c = out(reg_byte) carry, options(nostack))
    };
    status(above, carry)
}

/// VMCLEAR: the VMCS at `pa` is written back, made clear and not current.
///
/// # Safety
/// VMX operation; `pa` a VMCS region with the right revision.
pub unsafe fn clear(pa: u64) -> Result<(), VmFail> {
    let (above, carry): (u8, u8);
    // SAFETY: per the caller.
    unsafe {
        asm!("vmclear [{p}]", "seta {a}", "setc {c}", p = in(reg) &pa, a = out(reg_byte) above, c = out(reg_byte) carry, options(nostack))
    };
    status(above, carry)
}

/// VMPTRLD: the VMCS at `pa` becomes current.
///
/// # Safety
/// As for `clear`.
pub unsafe fn load(pa: u64) -> Result<(), VmFail> {
    let (above, carry): (u8, u8);
    // SAFETY: per the caller.
    unsafe {
        asm!("vmptrld [{p}]", "seta {a}", "setc {c}", p = in(reg) &pa, a = out(reg_byte) above, c = out(reg_byte) carry, options(nostack))
    };
    status(above, carry)
}

/// VMREAD of a field of the current VMCS.
///
/// # Safety
/// VMX operation with a current VMCS.
pub unsafe fn read(field: u32) -> Result<u64, VmFail> {
    let (value, above, carry): (u64, u8, u8);
    // SAFETY: per the caller.
    unsafe {
        asm!("vmread {v}, {f}", "seta {a}", "setc {c}", f = in(reg) u64::from(field), v = out(reg) value, a = out(reg_byte) above, c = out(reg_byte) carry, options(nostack))
    };
    status(above, carry).map(|()| value)
}

/// VMWRITE of a field of the current VMCS.
///
/// # Safety
/// VMX operation with a current VMCS; the value must be valid for the field as the monitor
/// uses it.
pub unsafe fn write(field: u32, value: u64) -> Result<(), VmFail> {
    let (above, carry): (u8, u8);
    // SAFETY: per the caller.
    unsafe {
        asm!("vmwrite {f}, {v}", "seta {a}", "setc {c}", f = in(reg) u64::from(field), v = in(reg) value, a = out(reg_byte) above, c = out(reg_byte) carry, options(nostack))
    };
    status(above, carry)
}

/// INVEPT and INVVPID types (SDM Vol. 3C §29.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvType {
    SingleContext = 1,
    AllContext = 2,
}

/// INVEPT: drops the guest-physical and combined mappings derived from `eptp` (or from every
/// EPTP with `AllContext`).
///
/// # Safety
/// VMX operation; the CPU supports INVEPT of that type.
pub unsafe fn invept(kind: InvType, eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let (above, carry): (u8, u8);
    // SAFETY: per the caller; the descriptor is a valid 128-bit operand.
    unsafe {
        asm!("invept {t}, [{d}]", "seta {a}", "setc {c}", t = in(reg) kind as u64, d = in(reg) &desc, a = out(reg_byte) above, c = out(reg_byte) carry, options(nostack))
    };
    status(above, carry)
}

/// INVVPID: drops the linear and combined mappings tagged with `vpid` (or every VPID but 0).
///
/// # Safety
/// VMX operation; the CPU supports INVVPID of that type; `vpid` is not 0.
pub unsafe fn invvpid(kind: InvType, vpid: u16) -> Result<(), VmFail> {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    let (above, carry): (u8, u8);
    // SAFETY: per the caller; the descriptor is a valid 128-bit operand.
    unsafe {
        asm!("invvpid {t}, [{d}]", "seta {a}", "setc {c}", t = in(reg) kind as u64, d = in(reg) &desc, a = out(reg_byte) above, c = out(reg_byte) carry, options(nostack))
    };
    status(above, carry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_carry_the_revision_and_are_page_aligned() {
        let r = Region::new(0x8000_0010);
        assert_eq!(
            r.revision(),
            0x10,
            "bit 31 is the shadow-VMCS indicator, kept clear"
        );
        assert_eq!(r.pa() % 4096, 0);
        assert!(r.0[1..].iter().all(|&w| w == 0));
    }

    #[test]
    fn flags_map_to_the_vmfail_kinds() {
        assert_eq!(status(1, 0), Ok(()));
        assert_eq!(status(0, 1), Err(VmFail::Invalid));
        assert_eq!(error_name(8), "VM entry with invalid host-state field(s)");
        assert_eq!(
            VmFail::Valid(7).to_string(),
            "VMfailValid, VM-instruction error 7: VM entry with invalid control field(s)"
        );
    }
}
