//! Decoding of #VMEXIT codes and their exit information (AMD APM Vol. 2, Appendix C "SVM
//! Intercept Exit Codes" and §15.10-15.25) into the vendor-neutral `vcpu::Exit`.
//!
//! Pure functions over the VMCB's exit fields; nothing here touches the hardware.

use vcpu::{Exit, ExitInfo, IoAccess};

pub const EXCEPTION_BASE: u64 = 0x40;
pub const INTR: u64 = 0x60;
pub const NMI: u64 = 0x61;
pub const SMI: u64 = 0x62;
pub const INIT: u64 = 0x63;
pub const VINTR: u64 = 0x64;
pub const CPUID: u64 = 0x72;
pub const IRET: u64 = 0x74;
pub const INVD: u64 = 0x76;
pub const HLT: u64 = 0x78;
pub const INVLPGA: u64 = 0x7A;
pub const IOIO: u64 = 0x7B;
pub const MSR: u64 = 0x7C;
pub const SHUTDOWN: u64 = 0x7F;
pub const VMRUN: u64 = 0x80;
pub const VMMCALL: u64 = 0x81;
pub const VMLOAD: u64 = 0x82;
pub const VMSAVE: u64 = 0x83;
pub const STGI: u64 = 0x84;
pub const CLGI: u64 = 0x85;
pub const SKINIT: u64 = 0x86;
pub const ICEBP: u64 = 0x88;
pub const WBINVD: u64 = 0x89;
pub const MONITOR: u64 = 0x8A;
pub const MWAIT: u64 = 0x8B;
pub const MWAIT_CONDITIONAL: u64 = 0x8C;
pub const XSETBV: u64 = 0x8D;
pub const NPF: u64 = 0x400;
pub const INVALID: u64 = u64::MAX;
const INVALID_32: u64 = 0xFFFF_FFFF;

/// The raw code as the counters and traces carry it (VMEXIT_INVALID becomes 0xFFFF_FFFF).
pub fn raw_code(code: u64) -> u32 {
    code as u32
}

/// Decodes one #VMEXIT. `next_rip` is the VMCB's nRIP field when the CPU has nRIP save.
pub fn decode(code: u64, info1: u64, info2: u64, next_rip: Option<u64>) -> ExitInfo {
    let (exit, next_rip) = match code {
        CPUID => (Exit::Cpuid, next_rip),
        HLT => (Exit::Hlt, next_rip),
        // For IOIO, EXITINFO2 holds the next RIP even without nRIP save (APM §15.10.2).
        IOIO => (Exit::Io(io_access(info1)), Some(info2)),
        MSR if info1 & 1 == 0 => (Exit::MsrRead, next_rip),
        MSR => (Exit::MsrWrite, next_rip),
        NPF => (
            // EXITINFO1 is a #PF-style error code: bit 1 write, bit 4 instruction fetch.
            Exit::NestedPageFault {
                gpa: info2,
                write: info1 & (1 << 1) != 0,
                fetch: info1 & (1 << 4) != 0,
            },
            None,
        ),
        INTR | SMI | INIT => (Exit::ExternalInterrupt, None),
        NMI => (Exit::ExternalInterrupt, None),
        VINTR => (Exit::InterruptWindow, None),
        VMMCALL => (Exit::Hypercall, next_rip),
        VMRUN | VMLOAD | VMSAVE | STGI | CLGI | SKINIT | INVLPGA | MONITOR | MWAIT
        | MWAIT_CONDITIONAL => (Exit::VirtInstruction, None),
        XSETBV => (Exit::Xsetbv, next_rip),
        INVD | WBINVD => (Exit::CacheFlush, next_rip),
        SHUTDOWN => (Exit::Shutdown, None),
        c if (EXCEPTION_BASE..EXCEPTION_BASE + 32).contains(&c) => {
            let vector = (c - EXCEPTION_BASE) as u8;
            let error_code = has_error_code(vector).then_some(info1 as u32);
            (Exit::Exception { vector, error_code }, None)
        }
        // VMEXIT_INVALID is -1; some implementations (QEMU) store it as a 32-bit -1.
        INVALID | INVALID_32 => (Exit::InvalidState, None),
        _ => (Exit::Unknown, None),
    };
    ExitInfo {
        exit,
        raw: raw_code(code),
        next_rip,
    }
}

fn io_access(info1: u64) -> IoAccess {
    let size = match (info1 >> 4) & 0b111 {
        0b001 => 1,
        0b010 => 2,
        _ => 4,
    };
    IoAccess {
        port: (info1 >> 16) as u16,
        size,
        write: info1 & 1 == 0,
        string: info1 & (1 << 2) != 0,
        rep: info1 & (1 << 3) != 0,
    }
}

/// Exceptions that push an error code (APM §8.2).
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// The APM's name for an exit code.
pub fn name(raw: u32) -> &'static str {
    match u64::from(raw) {
        c @ 0x00..=0x0F => CR_READ_NAMES[c as usize],
        c @ 0x10..=0x1F => CR_WRITE_NAMES[(c - 0x10) as usize],
        0x20..=0x2F => "DR_READ",
        0x30..=0x3F => "DR_WRITE",
        c @ 0x40..=0x5F => EXCP_NAMES[(c - 0x40) as usize],
        INTR => "INTR",
        NMI => "NMI",
        SMI => "SMI",
        INIT => "INIT",
        VINTR => "VINTR",
        0x65 => "CR0_SEL_WRITE",
        0x6E => "RDTSC",
        0x6F => "RDPMC",
        0x70 => "PUSHF",
        0x71 => "POPF",
        CPUID => "CPUID",
        0x73 => "RSM",
        IRET => "IRET",
        0x75 => "SWINT",
        INVD => "INVD",
        0x77 => "PAUSE",
        HLT => "HLT",
        0x79 => "INVLPG",
        INVLPGA => "INVLPGA",
        IOIO => "IOIO",
        MSR => "MSR",
        0x7D => "TASK_SWITCH",
        0x7E => "FERR_FREEZE",
        SHUTDOWN => "SHUTDOWN",
        VMRUN => "VMRUN",
        VMMCALL => "VMMCALL",
        VMLOAD => "VMLOAD",
        VMSAVE => "VMSAVE",
        STGI => "STGI",
        CLGI => "CLGI",
        SKINIT => "SKINIT",
        0x87 => "RDTSCP",
        ICEBP => "ICEBP",
        WBINVD => "WBINVD",
        MONITOR => "MONITOR",
        MWAIT => "MWAIT",
        MWAIT_CONDITIONAL => "MWAIT_CONDITIONAL",
        XSETBV => "XSETBV",
        NPF => "NPF",
        0xFFFF_FFFF => "INVALID",
        _ => "UNKNOWN",
    }
}

const CR_READ_NAMES: [&str; 16] = [
    "CR0_READ",
    "CR1_READ",
    "CR2_READ",
    "CR3_READ",
    "CR4_READ",
    "CR5_READ",
    "CR6_READ",
    "CR7_READ",
    "CR8_READ",
    "CR9_READ",
    "CR10_READ",
    "CR11_READ",
    "CR12_READ",
    "CR13_READ",
    "CR14_READ",
    "CR15_READ",
];
const CR_WRITE_NAMES: [&str; 16] = [
    "CR0_WRITE",
    "CR1_WRITE",
    "CR2_WRITE",
    "CR3_WRITE",
    "CR4_WRITE",
    "CR5_WRITE",
    "CR6_WRITE",
    "CR7_WRITE",
    "CR8_WRITE",
    "CR9_WRITE",
    "CR10_WRITE",
    "CR11_WRITE",
    "CR12_WRITE",
    "CR13_WRITE",
    "CR14_WRITE",
    "CR15_WRITE",
];
const EXCP_NAMES: [&str; 32] = [
    "EXCP_DE", "EXCP_DB", "EXCP_NMI", "EXCP_BP", "EXCP_OF", "EXCP_BR", "EXCP_UD", "EXCP_NM",
    "EXCP_DF", "EXCP_9", "EXCP_TS", "EXCP_NP", "EXCP_SS", "EXCP_GP", "EXCP_PF", "EXCP_15",
    "EXCP_MF", "EXCP_AC", "EXCP_MC", "EXCP_XF", "EXCP_20", "EXCP_CP", "EXCP_22", "EXCP_23",
    "EXCP_24", "EXCP_25", "EXCP_26", "EXCP_27", "EXCP_HV", "EXCP_VC", "EXCP_SX", "EXCP_31",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_exit_carries_port_size_direction_and_next_rip() {
        // OUT dx, al to 0x3F8: TYPE=0 (out), SZ8, port in 31:16.
        let info = decode(IOIO, (0x3F8 << 16) | (1 << 4), 0x1234, None);
        assert_eq!(
            info.exit,
            Exit::Io(IoAccess {
                port: 0x3F8,
                size: 1,
                write: true,
                string: false,
                rep: false
            })
        );
        assert_eq!(info.next_rip, Some(0x1234));
        // REP INSD from port 0x1F0.
        let info = decode(
            IOIO,
            (0x1F0 << 16) | (1 << 6) | (1 << 3) | (1 << 2) | 1,
            9,
            None,
        );
        assert_eq!(
            info.exit,
            Exit::Io(IoAccess {
                port: 0x1F0,
                size: 4,
                write: false,
                string: true,
                rep: true
            })
        );
    }

    #[test]
    fn msr_direction_comes_from_exitinfo1() {
        assert_eq!(decode(MSR, 0, 0, Some(7)).exit, Exit::MsrRead);
        let w = decode(MSR, 1, 0, None);
        assert_eq!(w.exit, Exit::MsrWrite);
        assert_eq!(w.next_rip, None);
    }

    #[test]
    fn npf_reports_gpa_and_access_kind() {
        let i = decode(NPF, (1 << 32) | (1 << 1) | 1, 0xFEC0_0010, Some(5));
        assert_eq!(
            i.exit,
            Exit::NestedPageFault {
                gpa: 0xFEC0_0010,
                write: true,
                fetch: false
            }
        );
        // nRIP is not meaningful for NPF: the core always decodes.
        assert_eq!(i.next_rip, None);
        let f = decode(NPF, 1 << 4, 0x8000_0000, None);
        assert!(matches!(f.exit, Exit::NestedPageFault { fetch: true, .. }));
    }

    #[test]
    fn exceptions_and_misc_codes() {
        assert_eq!(
            decode(EXCEPTION_BASE + 13, 0x18, 0, None).exit,
            Exit::Exception {
                vector: 13,
                error_code: Some(0x18)
            }
        );
        assert_eq!(
            decode(EXCEPTION_BASE + 6, 0, 0, None).exit,
            Exit::Exception {
                vector: 6,
                error_code: None
            }
        );
        assert_eq!(decode(VMRUN, 0, 0, None).exit, Exit::VirtInstruction);
        assert_eq!(decode(SHUTDOWN, 0, 0, None).exit, Exit::Shutdown);
        assert_eq!(decode(INVALID, 0, 0, None).exit, Exit::InvalidState);
        assert_eq!(decode(INVALID, 0, 0, None).raw, 0xFFFF_FFFF);
        assert_eq!(decode(0xFFFF_FFFF, 0, 0, None).exit, Exit::InvalidState);
        assert_eq!(decode(INVLPGA, 0, 0, None).exit, Exit::VirtInstruction);
        assert_eq!(decode(0x77, 0, 0, None).exit, Exit::Unknown);
    }

    #[test]
    fn names_follow_the_apm() {
        assert_eq!(name(0x72), "CPUID");
        assert_eq!(name(0x400), "NPF");
        assert_eq!(name(0x4E), "EXCP_PF");
        assert_eq!(name(0x13), "CR3_WRITE");
        assert_eq!(name(0xFFFF_FFFF), "INVALID");
        assert_eq!(name(0x1234), "UNKNOWN");
    }
}
