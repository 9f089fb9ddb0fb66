//! Decoding of VM exits (SDM Vol. 3C §28.2, Appendix C "VMX Basic Exit Reasons") into the
//! vendor-neutral `vcpu::Exit`: basic exit reasons, the exit qualifications of I/O
//! instructions, control-register accesses and EPT violations, and the SDM's names.
//!
//! Pure functions: the VMCS fields an exit needs are fetched through the `read` callback, so
//! only the fields a given exit uses are read.

use vcpu::{Exit, ExitInfo, IoAccess};
use x86::vmx::vmcs::ro;

pub const EXCEPTION_OR_NMI: u32 = 0;
pub const EXTERNAL_INTERRUPT: u32 = 1;
pub const TRIPLE_FAULT: u32 = 2;
pub const INIT: u32 = 3;
pub const SIPI: u32 = 4;
pub const IO_SMI: u32 = 5;
pub const OTHER_SMI: u32 = 6;
pub const INTERRUPT_WINDOW: u32 = 7;
pub const NMI_WINDOW: u32 = 8;
pub const CPUID: u32 = 10;
pub const GETSEC: u32 = 11;
pub const HLT: u32 = 12;
pub const INVD: u32 = 13;
pub const VMCALL: u32 = 18;
pub const VMCLEAR: u32 = 19;
pub const VMXON: u32 = 27;
pub const CR_ACCESS: u32 = 28;
pub const IO_INSTRUCTION: u32 = 30;
pub const RDMSR: u32 = 31;
pub const WRMSR: u32 = 32;
pub const ENTRY_FAIL_GUEST_STATE: u32 = 33;
pub const ENTRY_FAIL_MSR_LOADING: u32 = 34;
pub const MWAIT: u32 = 36;
pub const MONITOR: u32 = 39;
pub const ENTRY_FAIL_MACHINE_CHECK: u32 = 41;
pub const EPT_VIOLATION: u32 = 48;
pub const EPT_MISCONFIG: u32 = 49;
pub const INVEPT: u32 = 50;
/// The VMX-preemption timer counted down to zero (SDM Vol. 3C §26.5.1).
pub const PREEMPTION_TIMER: u32 = 52;
pub const INVVPID: u32 = 53;
pub const WBINVD: u32 = 54;
pub const XSETBV: u32 = 55;
pub const VMFUNC: u32 = 59;
/// Exit-reason bit 31: the VM entry failed (SDM Vol. 3C §26.8).
pub const ENTRY_FAILURE: u32 = 1 << 31;
/// The raw code for a VMLAUNCH/VMRESUME that failed outright (VMfail, no exit at all).
pub const VMFAIL: u32 = u32::MAX;

/// Reads a field of the current VMCS by its encoding.
pub type Read<'a> = &'a dyn Fn(u32) -> u64;

/// Decodes the exit with `reason` (the full exit-reason field) of a guest at `rip`.
pub fn decode(reason: u32, rip: u64, read: Read) -> ExitInfo {
    let basic = reason & 0xFFFF;
    let next = || Some(rip.wrapping_add(read(ro::VMEXIT_INSTRUCTION_LEN)));
    let (exit, next_rip) = if reason & ENTRY_FAILURE != 0 {
        (Exit::InvalidState, None)
    } else {
        match basic {
            EXCEPTION_OR_NMI => (
                exception(read(ro::VMEXIT_INTERRUPTION_INFO) as u32, read),
                None,
            ),
            // The preemption timer is the monitor's own slice backstop: like a host
            // interrupt, it sends the exit loop back to its scheduler.
            EXTERNAL_INTERRUPT | INIT | SIPI | IO_SMI | OTHER_SMI | PREEMPTION_TIMER => {
                (Exit::ExternalInterrupt, None)
            }
            TRIPLE_FAULT => (Exit::Shutdown, None),
            INTERRUPT_WINDOW => (Exit::InterruptWindow, None),
            NMI_WINDOW => (Exit::NmiWindow, None),
            CPUID => (Exit::Cpuid, next()),
            HLT => (Exit::Hlt, next()),
            INVD | WBINVD => (Exit::CacheFlush, next()),
            VMCALL => (Exit::Hypercall, next()),
            GETSEC | VMCLEAR..=VMXON | INVEPT | INVVPID | VMFUNC | MWAIT | MONITOR => {
                (Exit::VirtInstruction, None)
            }
            IO_INSTRUCTION => (Exit::Io(io_access(read(ro::EXIT_QUALIFICATION))), next()),
            RDMSR => (Exit::MsrRead, next()),
            WRMSR => (Exit::MsrWrite, next()),
            XSETBV => (Exit::Xsetbv, next()),
            EPT_VIOLATION => {
                let v = EptViolation::decode(read(ro::EXIT_QUALIFICATION));
                (
                    Exit::NestedPageFault {
                        gpa: read(ro::GUEST_PHYSICAL_ADDR_FULL),
                        write: v.write,
                        fetch: v.fetch,
                    },
                    None,
                )
            }
            _ => (Exit::Unknown, None),
        }
    };
    ExitInfo {
        exit,
        raw: reason,
        next_rip,
    }
}

/// Exit reason 0: an exception the exception bitmap intercepts, or a host NMI. With "NMI
/// exiting" the exit consumes the NMI (SDM Vol. 3C §26.3): nothing is left pending for the
/// host. The monitor raises no NMIs itself (no watchdog, no profiling counters), and one from
/// the platform (NMI button, chipset error) has no handler to go to, so it is dropped and the
/// exit ends the slice like a host interrupt.
fn exception(info: u32, read: Read) -> Exit {
    if (info >> 8) & 0x7 == crate::event::kind::NMI {
        return Exit::ExternalInterrupt;
    }
    let error_code = (info & crate::event::DELIVER_ERROR_CODE != 0)
        .then(|| read(ro::VMEXIT_INTERRUPTION_ERR_CODE) as u32);
    Exit::Exception {
        vector: info as u8,
        error_code,
    }
}

/// The I/O-instruction exit qualification (SDM Vol. 3C Table 28-5).
pub fn io_access(q: u64) -> IoAccess {
    IoAccess {
        port: (q >> 16) as u16,
        size: match q & 0x7 {
            0 => 1,
            1 => 2,
            _ => 4,
        },
        write: q & (1 << 3) == 0,
        string: q & (1 << 4) != 0,
        rep: q & (1 << 5) != 0,
    }
}

/// A control-register access exit qualification (SDM Vol. 3C Table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    MovToCr {
        cr: u8,
        gpr: u8,
    },
    MovFromCr {
        cr: u8,
        gpr: u8,
    },
    Clts,
    /// LMSW with its 16-bit source and whether it was a memory operand.
    Lmsw {
        source: u16,
        memory: bool,
    },
}

impl CrAccess {
    pub fn decode(q: u64) -> Self {
        let cr = (q & 0xF) as u8;
        let gpr = ((q >> 8) & 0xF) as u8;
        match (q >> 4) & 0x3 {
            0 => Self::MovToCr { cr, gpr },
            1 => Self::MovFromCr { cr, gpr },
            2 => Self::Clts,
            _ => Self::Lmsw {
                source: (q >> 16) as u16,
                memory: q & (1 << 6) != 0,
            },
        }
    }
}

/// An EPT-violation exit qualification (SDM Vol. 3C Table 28-7), the access bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    pub read: bool,
    pub write: bool,
    pub fetch: bool,
    /// The guest-linear-address field is valid.
    pub linear_valid: bool,
}

impl EptViolation {
    pub fn decode(q: u64) -> Self {
        Self {
            read: q & 1 != 0,
            write: q & (1 << 1) != 0,
            fetch: q & (1 << 2) != 0,
            linear_valid: q & (1 << 7) != 0,
        }
    }
}

/// The SDM's name for an exit reason (Appendix C); entry failures by their basic reason.
pub fn name(raw: u32) -> &'static str {
    if raw == VMFAIL {
        return "VMFAIL";
    }
    NAMES
        .get((raw & 0xFFFF) as usize)
        .copied()
        .unwrap_or("UNKNOWN")
}

const NAMES: [&str; 70] = [
    "EXCEPTION_OR_NMI",
    "EXTERNAL_INTERRUPT",
    "TRIPLE_FAULT",
    "INIT",
    "SIPI",
    "IO_SMI",
    "OTHER_SMI",
    "INTERRUPT_WINDOW",
    "NMI_WINDOW",
    "TASK_SWITCH",
    "CPUID",
    "GETSEC",
    "HLT",
    "INVD",
    "INVLPG",
    "RDPMC",
    "RDTSC",
    "RSM",
    "VMCALL",
    "VMCLEAR",
    "VMLAUNCH",
    "VMPTRLD",
    "VMPTRST",
    "VMREAD",
    "VMRESUME",
    "VMWRITE",
    "VMXOFF",
    "VMXON",
    "CR_ACCESS",
    "DR_ACCESS",
    "IO_INSTRUCTION",
    "RDMSR",
    "WRMSR",
    "ENTRY_FAIL_GUEST_STATE",
    "ENTRY_FAIL_MSR_LOADING",
    "UNKNOWN",
    "MWAIT",
    "MONITOR_TRAP_FLAG",
    "UNKNOWN",
    "MONITOR",
    "PAUSE",
    "ENTRY_FAIL_MACHINE_CHECK",
    "UNKNOWN",
    "TPR_BELOW_THRESHOLD",
    "APIC_ACCESS",
    "VIRTUALIZED_EOI",
    "GDTR_IDTR_ACCESS",
    "LDTR_TR_ACCESS",
    "EPT_VIOLATION",
    "EPT_MISCONFIG",
    "INVEPT",
    "RDTSCP",
    "PREEMPTION_TIMER",
    "INVVPID",
    "WBINVD",
    "XSETBV",
    "APIC_WRITE",
    "RDRAND",
    "INVPCID",
    "VMFUNC",
    "ENCLS",
    "RDSEED",
    "PML_FULL",
    "XSAVES",
    "XRSTORS",
    "UNKNOWN",
    "SPP",
    "UMWAIT",
    "TPAUSE",
    "LOADIWKEY",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(u32, u64)]) -> impl Fn(u32) -> u64 + '_ {
        move |f| {
            list.iter()
                .find(|(k, _)| *k == f)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("field {f:#x} read but not expected"))
        }
    }

    #[test]
    fn io_qualification() {
        // OUT dx, al to 0x3F8: size 0, direction out, DX operand.
        assert_eq!(
            io_access(0x3F8 << 16),
            IoAccess {
                port: 0x3F8,
                size: 1,
                write: true,
                string: false,
                rep: false
            }
        );
        // REP INSD from 0x1F0: size 3, in, string, rep.
        assert_eq!(
            io_access((0x1F0 << 16) | 0b11_1011),
            IoAccess {
                port: 0x1F0,
                size: 4,
                write: false,
                string: true,
                rep: true
            }
        );
        // IN ax, 0x71 (immediate operand, bit 6).
        let a = io_access((0x71 << 16) | (1 << 6) | (1 << 3) | 1);
        assert_eq!((a.port, a.size, a.write), (0x71, 2, false));
    }

    #[test]
    fn io_exit_advances_by_the_instruction_length() {
        let read = fields(&[
            (ro::EXIT_QUALIFICATION, 0x80 << 16),
            (ro::VMEXIT_INSTRUCTION_LEN, 2),
        ]);
        let i = decode(IO_INSTRUCTION, 0x1000, &read);
        assert!(matches!(
            i.exit,
            Exit::Io(IoAccess {
                port: 0x80,
                write: true,
                ..
            })
        ));
        assert_eq!(i.next_rip, Some(0x1002));
        assert_eq!(i.raw, 30);
    }

    #[test]
    fn cr_access_qualification() {
        // MOV CR0, RCX: CR 0, type 0 (to CR), GPR 1.
        assert_eq!(CrAccess::decode(0x100), CrAccess::MovToCr { cr: 0, gpr: 1 });
        // MOV R9, CR4.
        assert_eq!(
            CrAccess::decode(0x914),
            CrAccess::MovFromCr { cr: 4, gpr: 9 }
        );
        assert_eq!(CrAccess::decode(0x20), CrAccess::Clts);
        assert_eq!(
            CrAccess::decode((0x0011 << 16) | (1 << 6) | 0x30),
            CrAccess::Lmsw {
                source: 0x11,
                memory: true
            }
        );
    }

    #[test]
    fn ept_violation_gives_gpa_and_access() {
        let read = fields(&[
            (ro::EXIT_QUALIFICATION, 0x182),
            (ro::GUEST_PHYSICAL_ADDR_FULL, 0xFEE0_0300),
        ]);
        let i = decode(EPT_VIOLATION, 0x2000, &read);
        assert_eq!(
            i.exit,
            Exit::NestedPageFault {
                gpa: 0xFEE0_0300,
                write: true,
                fetch: false
            }
        );
        assert_eq!(i.next_rip, None);
        let v = EptViolation::decode(0x84);
        assert!(v.fetch && !v.write && !v.read && v.linear_valid);
    }

    #[test]
    fn instruction_exits_and_the_rest() {
        let read = fields(&[(ro::VMEXIT_INSTRUCTION_LEN, 3)]);
        assert_eq!(decode(VMCALL, 0x10, &read).exit, Exit::Hypercall);
        assert_eq!(decode(VMCALL, 0x10, &read).next_rip, Some(0x13));
        assert_eq!(decode(CPUID, 0, &read).exit, Exit::Cpuid);
        assert_eq!(decode(WBINVD, 0, &read).exit, Exit::CacheFlush);
        assert_eq!(decode(XSETBV, 0, &read).exit, Exit::Xsetbv);
        assert_eq!(decode(RDMSR, 0, &read).exit, Exit::MsrRead);
        assert_eq!(decode(WRMSR, 0, &read).exit, Exit::MsrWrite);
        let none = fields(&[]);
        assert_eq!(decode(VMXON, 0, &none).exit, Exit::VirtInstruction);
        assert_eq!(decode(INVEPT, 0, &none).exit, Exit::VirtInstruction);
        assert_eq!(decode(TRIPLE_FAULT, 0, &none).exit, Exit::Shutdown);
        assert_eq!(
            decode(EXTERNAL_INTERRUPT, 0, &none).exit,
            Exit::ExternalInterrupt
        );
        assert_eq!(
            decode(PREEMPTION_TIMER, 0, &none).exit,
            Exit::ExternalInterrupt
        );
        assert_eq!(decode(CR_ACCESS, 0, &none).exit, Exit::Unknown);
        assert_eq!(
            decode(INTERRUPT_WINDOW, 0, &none).exit,
            Exit::InterruptWindow
        );
        let nmi_window = decode(NMI_WINDOW, 0, &none);
        assert_eq!(
            (nmi_window.exit, nmi_window.next_rip),
            (Exit::NmiWindow, None)
        );
        assert_eq!(name(NMI_WINDOW), "NMI_WINDOW");
        assert_eq!(decode(EPT_MISCONFIG, 0, &none).exit, Exit::Unknown);
        let fail = decode(ENTRY_FAILURE | ENTRY_FAIL_GUEST_STATE, 0, &none);
        assert_eq!(fail.exit, Exit::InvalidState);
        assert_eq!(fail.raw, 0x8000_0021);
    }

    #[test]
    fn exception_exits_carry_vector_and_error_code() {
        let read = fields(&[
            (ro::VMEXIT_INTERRUPTION_INFO, 0x8000_0B0E),
            (ro::VMEXIT_INTERRUPTION_ERR_CODE, 4),
        ]);
        assert_eq!(
            decode(EXCEPTION_OR_NMI, 0, &read).exit,
            Exit::Exception {
                vector: 14,
                error_code: Some(4)
            }
        );
        // A host NMI (type 2, vector 2) is not the guest's: it ends the slice.
        let nmi = fields(&[(ro::VMEXIT_INTERRUPTION_INFO, 0x8000_0202)]);
        assert_eq!(
            decode(EXCEPTION_OR_NMI, 0, &nmi).exit,
            Exit::ExternalInterrupt
        );
    }

    #[test]
    fn names_follow_appendix_c() {
        assert_eq!(name(CPUID), "CPUID");
        assert_eq!(name(EPT_VIOLATION), "EPT_VIOLATION");
        assert_eq!(name(IO_INSTRUCTION), "IO_INSTRUCTION");
        assert_eq!(name(0x8000_0021), "ENTRY_FAIL_GUEST_STATE");
        assert_eq!(name(VMFAIL), "VMFAIL");
        assert_eq!(name(69), "LOADIWKEY");
        assert_eq!(name(1000), "UNKNOWN");
    }
}
