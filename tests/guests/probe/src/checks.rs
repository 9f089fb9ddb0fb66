//! The checks the probe runs, one function per `PROBE:` line, each stating what the monitor must
//! do and why. Not here: how faults are caught (`trap`) or printed (`report`).

use core::arch::x86_64::{__cpuid, CpuidResult};
use core::fmt;

use crate::report;
use rt::insn::{self, Completion, Outcome, Width};
use rt::trap::{Trap, GP, UD};

/// An MSR index no CPU implements: outside the ranges Intel (0x0-0x1FFF, 0xC000_0000-0xC000_1FFF)
/// and AMD (also 0xC001_0000-0xC001_1FFF) define, and below the hypervisor-synthetic ranges
/// (Hyper-V and Xen at 0x4000_0000, KVM at 0x4B56_4D00). RDMSR and WRMSR of an unimplemented MSR
/// raise #GP(0) (Intel SDM Vol. 2B, RDMSR/WRMSR "Protected Mode Exceptions").
const UNKNOWN_MSR: u32 = 0x2FFF;

/// COM2's base port: the monitor emulates only COM1, so nothing claims it. Unclaimed ports read
/// as all ones, as on a PC bus with nothing driving the data lines.
const UNCLAIMED_PORT: u16 = 0x2F8;

/// Guest-physical addresses in neither RAM (the probe's VM has 64 MiB) nor any device: the
/// middle of the 32-bit address space and the PCI hole below the I/O APIC. The loader's identity
/// map covers them, so accesses reach the monitor's nested page tables.
const HOLES: [u64; 2] = [0x8000_0000, 0xF000_0000];

/// A hypercall number no hypervisor ABI uses (Xen's are below 64, KVM's below 16).
const UNKNOWN_HYPERCALL: u64 = 0x7FFF_0000;

/// What leaf 0x4000_0000 returns in EBX, ECX, EDX under the monitor.
const HYPERVISOR_SIGNATURE: &[u8; 12] = b"hvmonitor\0\0\0";

/// The page VMRUN is pointed at; VMRUN must fault before reading it.
#[repr(C, align(4096))]
struct Page([u8; 4096]);
static VMCB: Page = Page([0; 4096]);

/// The setup header's magic "HdrS" at offset 0x202 of boot_params (Linux boot protocol,
/// Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header"; boot_params embeds the header
/// at 0x1F1).
const BOOT_PARAMS_MAGIC_OFFSET: u64 = 0x202;
const SETUP_HEADER_MAGIC: u64 = 0x5372_6448;

/// Runs every check in order.
pub fn run(boot_params: u64) {
    boot_params_header(boot_params);
    wrmsr_unknown();
    rdmsr_unknown();
    port_unclaimed();
    mmio_hole_read();
    mmio_hole_write();
    vmrun();
    vmmcall();
    cpuid_hypervisor();
    report::pass(
        "still-alive",
        format_args!("guest kept running after every check"),
    );
}

/// The loader passes boot_params in RSI with the kernel's setup header copied in.
fn boot_params_header(boot_params: u64) {
    const NAME: &str = "boot-params";
    if boot_params == 0 {
        report::fail(NAME, format_args!("RSI is 0"));
        return;
    }
    // SAFETY: boot_params is RAM the loader handed over; reading it has no side effect.
    let magic =
        Outcome(unsafe { insn::read(boot_params + BOOT_PARAMS_MAGIC_OFFSET, Width::Dword) });
    report::verdict(
        NAME,
        matches!(magic.0, Ok(SETUP_HEADER_MAGIC)),
        format_args!("RSI {boot_params:#x}, header magic {magic}"),
    );
}

fn wrmsr_unknown() {
    // SAFETY: the MSR does not exist; the write faults or is dropped.
    let outcome = Completion(unsafe { insn::wrmsr(UNKNOWN_MSR, 0) });
    report::verdict(
        "wrmsr-unknown",
        is_gp0(outcome.0),
        format_args!("wrmsr {UNKNOWN_MSR:#x} {outcome}"),
    );
}

fn rdmsr_unknown() {
    // SAFETY: the MSR does not exist; the read faults or returns a value.
    let outcome = Outcome(unsafe { insn::rdmsr(UNKNOWN_MSR) });
    report::verdict(
        "rdmsr-unknown",
        is_gp0(outcome.0.map(drop)),
        format_args!("rdmsr {UNKNOWN_MSR:#x} gave {outcome}"),
    );
}

fn is_gp0(outcome: Result<(), Trap>) -> bool {
    matches!(
        outcome,
        Err(Trap {
            vector: GP,
            error: 0,
            ..
        })
    )
}

fn port_unclaimed() {
    let widths = [Width::Byte, Width::Word, Width::Dword];
    // SAFETY: nothing is behind the port, so reading it has no effect.
    let [byte, word, dword] =
        widths.map(|width| Outcome(unsafe { insn::port_in(UNCLAIMED_PORT, width) }));
    let passed = widths
        .iter()
        .zip([&byte, &word, &dword])
        .all(|(width, outcome)| outcome.0 == Ok(width.ones()));
    report::verdict(
        "port-unclaimed",
        passed,
        format_args!("in {UNCLAIMED_PORT:#x} of 1/2/4 bytes gave {byte}/{word}/{dword}"),
    );
}

/// The first access in `HOLES` x `Width::ALL` whose read does not give all ones.
fn first_hole_not_all_ones() -> Option<(u64, Width, Outcome)> {
    HOLES
        .iter()
        .flat_map(|&address| Width::ALL.map(|width| (address, width)))
        .find_map(|(address, width)| {
            // SAFETY: nothing is mapped at the address, so reading it has no effect.
            let outcome = unsafe { insn::read(address, width) };
            (outcome != Ok(width.ones())).then_some((address, width, Outcome(outcome)))
        })
}

fn mmio_hole_read() {
    const NAME: &str = "mmio-hole-read";
    match first_hole_not_all_ones() {
        None => report::pass(
            NAME,
            format_args!(
                "1/2/4/8-byte reads of {:#x} and {:#x} gave all ones",
                HOLES[0], HOLES[1]
            ),
        ),
        Some((address, width, outcome)) => report::fail(
            NAME,
            format_args!("{}-byte read of {address:#x} gave {outcome}", width.bytes()),
        ),
    }
}

fn mmio_hole_write() {
    const NAME: &str = "mmio-hole-write";
    for address in HOLES {
        for width in Width::ALL {
            // SAFETY: nothing is mapped at the address; the write must be dropped.
            if let Err(trap) = unsafe { insn::write(address, width, 0) } {
                report::fail(
                    NAME,
                    format_args!("{}-byte write of {address:#x} raised {trap}", width.bytes()),
                );
                return;
            }
        }
    }
    match first_hole_not_all_ones() {
        None => report::pass(
            NAME,
            format_args!(
                "zeros written to {:#x} and {:#x} read back as all ones",
                HOLES[0], HOLES[1]
            ),
        ),
        Some((address, width, outcome)) => report::fail(
            NAME,
            format_args!(
                "after writing zeros, {}-byte read of {address:#x} gave {outcome}",
                width.bytes()
            ),
        ),
    }
}

/// A guest without EFER.SVME (the monitor never lets it set it) gets #UD from VMRUN (AMD APM
/// Vol. 3, VMRUN "Exceptions"); on Intel VMRUN is an undefined opcode anyway.
fn vmrun() {
    let vmcb = &raw const VMCB as u64;
    // SAFETY: VMRUN is expected to fault; were it to run, VMCB is a zeroed page the probe owns.
    let outcome = Completion(unsafe { insn::vmrun(vmcb) });
    let passed = matches!(outcome.0, Err(Trap { vector: UD, .. }));
    report::verdict(
        "vmrun",
        passed,
        format_args!("vmrun rax={vmcb:#x} {outcome}"),
    );
}

/// Informational: the monitor may inject #UD or return an error in RAX; either is fine.
fn vmmcall() {
    // SAFETY: an unknown hypercall has no effect besides its result.
    let outcome = Outcome(unsafe { insn::vmmcall(UNKNOWN_HYPERCALL) });
    let described = match outcome.0 {
        Ok(_) => "returned rax=",
        Err(_) => "raised ",
    };
    report::pass(
        "vmmcall",
        format_args!("vmmcall rax={UNKNOWN_HYPERCALL:#x} {described}{outcome}"),
    );
}

/// The monitor announces itself (CPUID.1:ECX bit 31 and leaf 0x4000_0000, the convention Xen,
/// KVM and Hyper-V share) and hides VMX (CPUID.1:ECX bit 5) and SVM (CPUID.8000_0001:ECX bit 2).
fn cpuid_hypervisor() {
    let leaf1 = __cpuid(1);
    let max_extended = __cpuid(0x8000_0000).eax;
    let extended_ecx = if max_extended >= 0x8000_0001 {
        __cpuid(0x8000_0001).ecx
    } else {
        0
    };
    let signature = Signature::of(__cpuid(0x4000_0000));
    let hypervisor = leaf1.ecx & (1 << 31) != 0;
    let vmx = leaf1.ecx & (1 << 5) != 0;
    let svm = extended_ecx & (1 << 2) != 0;
    report::verdict(
        "cpuid-hypervisor",
        hypervisor && &signature.0 == HYPERVISOR_SIGNATURE && !vmx && !svm,
        format_args!(
            "hypervisor bit {}, signature {signature}, VMX {}, SVM {}",
            set_or_clear(hypervisor),
            set_or_clear(vmx),
            set_or_clear(svm)
        ),
    );
}

fn set_or_clear(bit: bool) -> &'static str {
    if bit {
        "set"
    } else {
        "clear"
    }
}

/// The 12-byte vendor signature of leaf 0x4000_0000 (EBX, ECX, EDX).
struct Signature([u8; 12]);

impl Signature {
    fn of(leaf: CpuidResult) -> Self {
        let mut bytes = [0; 12];
        for (chunk, register) in bytes
            .chunks_exact_mut(4)
            .zip([leaf.ebx, leaf.ecx, leaf.edx])
        {
            chunk.copy_from_slice(&register.to_le_bytes());
        }
        Signature(bytes)
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &byte in &self.0 {
            write!(f, "{}", core::ascii::escape_default(byte))?;
        }
        f.write_str("\"")
    }
}
