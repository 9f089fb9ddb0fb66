//! Instruction attacks: the virtualization instructions of both vendors, hypercalls with random
//! numbers and arguments, RDMSR/WRMSR across the MSR index space, CPUID across leaves and
//! subleaves, XSETBV with invalid values, control and debug registers with reserved bits, and
//! the cache-control instructions. Each result is checked against the architecture of a CPU
//! without VMX or SVM (the monitor hides both).

use rt::guarded;
use rt::insn::{self, Completion, Outcome};
use rt::trap::{Trap, GP, UD};

use crate::cpu;
use crate::report::{check, note};
use crate::rng::Rng;

/// KVM's "no such hypercall" (-KVM_ENOSYS), what the monitor answers.
const HYPERCALL_ENOSYS: u64 = (-1000i64) as u64;

#[repr(C, align(4096))]
struct Page([u8; 4096]);
/// A zeroed page the VMX and SVM instructions are pointed at (they must fault before use).
static mut REGION: Page = Page([0; 4096]);

fn region() -> u64 {
    &raw mut REGION as u64
}

fn is_ud(r: Result<(), Trap>) -> bool {
    matches!(r, Err(Trap { vector: UD, .. }))
}

fn is_gp0(r: Result<(), Trap>) -> bool {
    matches!(
        r,
        Err(Trap {
            vector: GP,
            error: 0,
            ..
        })
    )
}

/// Runs one instruction (with RAX, RCX and RDX set to the region and 0) and gives its outcome.
macro_rules! attempt {
    ($insn:literal) => {{
        let r = region();
        // SAFETY: the instruction is expected to raise #UD; every operand points at the
        // guest's own zeroed page and every register it may write is clobbered.
        unsafe {
            guarded!($insn, inout("rax") r => _, inout("rcx") 0u64 => _, inout("rdx") 0u64 => _,
                out("rdi") _, out("rsi") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _)
        }
    }};
}

pub fn virtualization_instructions(_: u64) {
    // SVM (AMD APM Vol. 3): #UD with EFER.SVME clear, which the monitor never lets a guest set;
    // STGI and SKINIT also without the SKINIT CPUID bit, which it hides.
    let skinit = cpu::cpuid(0x8000_0001, 0)[2] & (1 << 12) != 0;
    check!(!skinit, "CPUID shows SKINIT");
    let svm: [(&str, Result<(), Trap>); 7] = [
        ("vmrun", attempt!("vmrun rax")),
        ("vmload", attempt!("vmload rax")),
        ("vmsave", attempt!("vmsave rax")),
        ("stgi", attempt!("stgi")),
        ("clgi", attempt!("clgi")),
        ("skinit", attempt!("skinit eax")),
        ("invlpga", attempt!("invlpga rax, ecx")),
    ];
    // VMX (Intel SDM Vol. 3C 31): #UD outside VMX operation, which needs CR4.VMXE, which the
    // monitor never lets a guest set (VMX is hidden).
    let vmx: [(&str, Result<(), Trap>); 11] = [
        ("vmxon", attempt!("vmxon qword ptr [rax]")),
        ("vmxoff", attempt!("vmxoff")),
        ("vmlaunch", attempt!("vmlaunch")),
        ("vmresume", attempt!("vmresume")),
        ("vmptrld", attempt!("vmptrld qword ptr [rax]")),
        ("vmptrst", attempt!("vmptrst qword ptr [rax]")),
        ("vmclear", attempt!("vmclear qword ptr [rax]")),
        ("vmread", attempt!("vmread rcx, rdx")),
        ("vmwrite", attempt!("vmwrite rdx, rcx")),
        ("invept", attempt!("invept rcx, xmmword ptr [rax]")),
        ("invvpid", attempt!("invvpid rcx, xmmword ptr [rax]")),
    ];
    let intel = cpu::is_intel();
    for (name, got) in svm.iter().chain(&vmx) {
        // QEMU's TCG decodes the memory forms of 0F C7 /6 and /7 (VMXON, VMPTRLD, VMCLEAR,
        // VMPTRST) as no-ops on its AMD CPU instead of raising #UD: no exit reaches the
        // monitor. Accepted there as long as they really did nothing.
        let tcg_no_op = name.starts_with("vmpt") || *name == "vmxon" || *name == "vmclear";
        // SAFETY: single-threaded read of the guest's own page.
        let untouched = unsafe { (*&raw const REGION).0.iter().all(|&b| b == 0) };
        let accepted = is_ud(*got) || (!intel && tcg_no_op && got.is_ok() && untouched);
        check!(accepted, "{name} {}, not #UD", Completion(*got));
    }
    // The vendor's hypercall instruction is the monitor's: an unknown number returns ENOSYS.
    // The other vendor's is an undefined opcode on this CPU.
    let (own, other) = if intel {
        (
            hypercall_vmcall(0x7FFF_0000, [0; 6]),
            hypercall_vmmcall(0x7FFF_0000, [0; 6]),
        )
    } else {
        (
            hypercall_vmmcall(0x7FFF_0000, [0; 6]),
            hypercall_vmcall(0x7FFF_0000, [0; 6]),
        )
    };
    check!(
        own.map(|r| r.rax) == Ok(HYPERCALL_ENOSYS),
        "the vendor's hypercall gave {}",
        Outcome(own.map(|r| r.rax))
    );
    check!(
        is_ud(other.map(drop)),
        "the other vendor's hypercall {}",
        Outcome(other.map(|r| r.rax))
    );
    note(format_args!(
        "18 instructions raised #UD, hypercalls answered"
    ));
}

/// What a hypercall left in the registers the test reads back.
#[derive(Clone, Copy)]
struct Regs {
    rax: u64,
    rbx: u64,
    rbp: u64,
    r12: u64,
}

/// The arguments go in RBX, RCX, RDX, RSI, RDI, R8 (KVM's and Xen's registers together);
/// RBX, RBP and R12 must survive. RBX and RBP cannot be asm! operands, so they are swapped in
/// and out around the instruction, and a fault resumes between the swaps (`rt::trap`'s scheme
/// by hand: `guarded!` resumes after its last instruction).
macro_rules! hypercall {
    ($name:ident, $insn:literal) => {
        fn $name(nr: u64, a: [u64; 6]) -> Result<Regs, Trap> {
            let (mut rax, mut rbx, mut rbp, mut r12) = (nr, a[0], a[1] ^ 0x5A5A, a[2] ^ 0xA5A5);
            rt::trap::arm();
            // SAFETY: a hypercall has no effect on the guest's memory; every register a
            // hypercall ABI may write is an output; RBX and RBP are restored on every path.
            unsafe {
                core::arch::asm!(
                    "lea {resume_at}, [rip + 2f]",
                    "mov qword ptr [rip + {resume}], {resume_at}",
                    "xchg rbx, {b}",
                    "xchg rbp, {p}",
                    $insn,
                    "2:",
                    "mov qword ptr [rip + {resume}], 0",
                    "xchg rbp, {p}",
                    "xchg rbx, {b}",
                    resume = sym rt::trap::RESUME_RIP,
                    resume_at = out(reg) _,
                    b = inout(reg) rbx,
                    p = inout(reg) rbp,
                    inout("rax") rax,
                    inout("r12") r12,
                    inout("rcx") a[1] => _,
                    inout("rdx") a[2] => _,
                    inout("rsi") a[3] => _,
                    inout("rdi") a[4] => _,
                    inout("r8") a[5] => _,
                    out("r9") _,
                    out("r10") _,
                    out("r11") _,
                )
            };
            rt::trap::taken().map(|()| Regs { rax, rbx, rbp, r12 })
        }
    };
}
hypercall!(hypercall_vmcall, "vmcall");
hypercall!(hypercall_vmmcall, "vmmcall");

pub fn random_hypercalls(_: u64) {
    let call = if cpu::is_intel() {
        hypercall_vmcall
    } else {
        hypercall_vmmcall
    };
    let mut rng = Rng::new(0x4879_7065);
    for i in 0..3000u64 {
        let nr = match i % 3 {
            0 => i / 3 % 64,
            1 => rng.next() & 0xFFFF_FFFF,
            _ => rng.next(),
        };
        let a = [
            rng.next(),
            rng.next(),
            rng.next(),
            rng.next(),
            rng.next(),
            rng.next(),
        ];
        match call(nr, a) {
            Ok(r) => check!(
                r.rbx == a[0] && r.rbp == a[1] ^ 0x5A5A && r.r12 == a[2] ^ 0xA5A5,
                "hypercall {nr:#x} changed RBX, RBP or R12"
            ),
            Err(t) => check!(t.vector == UD, "hypercall {nr:#x} raised {t}"),
        }
    }
    note(format_args!("3000 hypercalls"));
}

/// MSRs that may be written although they do not read: the write-only command MSRs
/// IA32_PRED_CMD (0x49) and IA32_FLUSH_CMD (0x10B).
const WRITE_ONLY: [u32; 2] = [0x49, 0x10B];
/// MSRs not written back: the TSC and its adjustment (the canary is a separate VM, but the
/// attacker's own delays need a steady TSC).
const NOT_WRITTEN: [u32; 2] = [0x10, 0x3B];

/// One MSR: a readable one is written back its own value (which must not change anything it
/// depends on); an unreadable one must refuse writes of 0 and of a random value with #GP(0).
fn msr_attack(msr: u32, rng: &mut Rng) -> bool {
    // SAFETY: reading an MSR changes no memory.
    match unsafe { insn::rdmsr(msr) } {
        Ok(value) => {
            if !NOT_WRITTEN.contains(&msr) {
                // SAFETY: the value read is written back; either it is taken or #GP.
                let w = unsafe { insn::wrmsr(msr, value) };
                check!(
                    w.is_ok() || is_gp0(w),
                    "wrmsr {msr:#x} <- {value:#x} {}",
                    Completion(w)
                );
            }
            true
        }
        Err(t) => {
            check!(
                t.vector == GP && t.error == 0,
                "rdmsr {msr:#x} raised {t}, not #GP(0)"
            );
            if !WRITE_ONLY.contains(&msr) {
                for value in [0, rng.next()] {
                    // SAFETY: the MSR does not exist for this guest; the write must fault.
                    let w = unsafe { insn::wrmsr(msr, value) };
                    check!(
                        is_gp0(w),
                        "wrmsr {msr:#x} <- {value:#x} of an unreadable MSR {}",
                        Completion(w)
                    );
                }
            }
            false
        }
    }
}

pub fn msr_sweep(_: u64) {
    let mut rng = Rng::new(0x4D53_5200);
    let mut readable = 0;
    let mut tried = 0;
    let dense = [
        0..0x2000u32,
        0x4000_0000..0x4000_0200,
        0x4B56_4D00..0x4B56_4D10,
        0xC000_0000..0xC000_2000,
        0xC001_0000..0xC001_2000,
    ];
    for range in dense {
        for msr in range {
            readable += u32::from(msr_attack(msr, &mut rng));
            tried += 1;
        }
    }
    for _ in 0..4096 {
        let msr = rng.next() as u32;
        readable += u32::from(msr_attack(msr, &mut rng));
        tried += 1;
    }
    note(format_args!("{tried} MSRs, {readable} readable"));
}

pub fn cpuid_sweep(_: u64) {
    let mut rng = Rng::new(0x4350_5549);
    let mut n = 0;
    let mut same = |leaf: u32, sub: u32| {
        let a = cpu::cpuid(leaf, sub);
        let b = cpu::cpuid(leaf, sub);
        check!(a == b, "cpuid {leaf:#x}.{sub:#x} changed between two reads");
        n += 1;
    };
    for leaf in 0..0x40 {
        for sub in 0..64 {
            same(leaf, sub);
        }
    }
    for base in [
        0x4000_0000u32,
        0x8000_0000,
        0xC000_0000,
        0x8FFF_FF00,
        0xFFFF_FF00,
    ] {
        for leaf in base..base + 0x100 {
            same(leaf, 0);
            same(leaf, rng.next() as u32);
        }
    }
    for _ in 0..4096 {
        same(rng.next() as u32, rng.next() as u32);
    }
    let leaf1 = cpu::cpuid(1, 0);
    check!(leaf1[2] & (1 << 31) != 0, "no hypervisor bit");
    check!(leaf1[2] & (1 << 5) == 0, "VMX shown");
    check!(cpu::cpuid(0x8000_0001, 0)[2] & (1 << 2) == 0, "SVM shown");
    note(format_args!("{n} CPUID leaves"));
}

fn xsetbv(xcr: u32, value: u64) -> Result<(), Trap> {
    // SAFETY: invalid values fault; the valid one is the current XCR0.
    unsafe {
        guarded!("xsetbv", in("ecx") xcr, in("eax") value as u32, in("edx") (value >> 32) as u32)
    }
}

fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV reads XCR0; CR4.OSXSAVE is set when this runs.
    unsafe { core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi) };
    u64::from(hi) << 32 | u64::from(lo)
}

/// XSETBV: #UD while CR4.OSXSAVE is clear; with it, #GP(0) for an unknown XCR, XCR0 without
/// x87, AVX without SSE, or a bit the CPU does not support (Intel SDM Vol. 2C, XSETBV).
pub fn xsetbv_invalid(_: u64) {
    const OSXSAVE: u64 = 1 << 18;
    let cr4 = cpu::cr4();
    // SAFETY: clearing OSXSAVE only disables XSAVE, which the guest does not use.
    unsafe { cpu::set_cr4(cr4 & !OSXSAVE) };
    let got = xsetbv(0, 1);
    check!(
        is_ud(got),
        "xsetbv with CR4.OSXSAVE clear {}",
        Completion(got)
    );
    if cpu::cpuid(1, 0)[2] & (1 << 26) == 0 {
        note(format_args!("no XSAVE: only the #UD case applies"));
        return;
    }
    // SAFETY: XSAVE is supported, so OSXSAVE may be set.
    unsafe { cpu::set_cr4(cr4 | OSXSAVE) };
    let xcr0 = xgetbv0();
    let d = cpu::cpuid(0xD, 0);
    let supported = u64::from(d[3]) << 32 | u64::from(d[0]);
    let unsupported = !supported & !(1 << 63);
    let mut cases = [
        (0u32, 0u64),
        (0, 2),
        (0, 0b101),
        (1 << 31, 1),
        (0xFFFF_FFFF, 1),
        (0, 1 << 63),
        (0, 0),
    ];
    if unsupported != 0 {
        cases[6] = (0, 1 | (1 << unsupported.trailing_zeros()));
    }
    for (xcr, value) in cases {
        let got = xsetbv(xcr, value);
        check!(
            is_gp0(got),
            "xsetbv xcr {xcr:#x} <- {value:#x} {}, not #GP(0)",
            Completion(got)
        );
        check!(xgetbv0() == xcr0, "XCR0 changed by a faulting xsetbv");
    }
    let got = xsetbv(0, xcr0);
    check!(
        got.is_ok(),
        "xsetbv of the current XCR0 {xcr0:#x} {}",
        Completion(got)
    );
    note(format_args!("XCR0 {xcr0:#x} kept"));
}

/// A guarded MOV to one register.
type MovTo = fn(u64) -> Result<(), Trap>;

macro_rules! mov_to {
    ($name:ident, $insn:literal) => {
        fn $name(value: u64) -> Result<(), Trap> {
            // SAFETY: every value written is invalid and faults, leaving the register as it was.
            unsafe { guarded!($insn, v = in(reg) value) }
        }
    };
}
mov_to!(mov_cr0, "mov cr0, {v}");
mov_to!(mov_cr3, "mov cr3, {v}");
mov_to!(mov_cr4, "mov cr4, {v}");
mov_to!(mov_cr8, "mov cr8, {v}");
mov_to!(mov_dr6, "mov dr6, {v}");
mov_to!(mov_dr7, "mov dr7, {v}");

/// MOV to CR0/CR3/CR4/CR8/DR6/DR7 and WRMSR to EFER with reserved or forbidden bits: #GP(0),
/// register unchanged (Intel SDM Vol. 3A 2.5 and Vol. 2B "MOV—Move to/from Control Registers";
/// AMD APM Vol. 2 3.1).
pub fn reserved_bits(_: u64) {
    let (cr0, cr3, cr4, cr8, dr7) = (cpu::cr0(), cpu::cr3(), cpu::cr4(), cpu::cr8(), cpu::dr7());
    let bits = cpu::max_phys_bits();
    let cases: [(&str, MovTo, u64); 13] = [
        ("cr0 bit 32", mov_cr0, cr0 | 1 << 32),
        ("cr0 without PE", mov_cr0, cr0 & !1),
        ("cr0 without PG in long mode", mov_cr0, cr0 & !(1 << 31)),
        ("cr0 NW without CD", mov_cr0, (cr0 | 1 << 29) & !(1 << 30)),
        ("cr3 above MAXPHYADDR", mov_cr3, cr3 | 1 << bits.min(62)),
        ("cr4 bit 63", mov_cr4, cr4 | 1 << 63),
        ("cr4 bit 31", mov_cr4, cr4 | 1 << 31),
        ("cr4 without PAE in long mode", mov_cr4, cr4 & !(1 << 5)),
        ("cr4 VMXE with VMX hidden", mov_cr4, cr4 | 1 << 13),
        ("cr8 above 15", mov_cr8, 16),
        ("cr8 bit 63", mov_cr8, 1 << 63),
        ("dr6 bit 32", mov_dr6, 1 << 32),
        ("dr7 bit 32", mov_dr7, 1 << 32),
    ];
    // On SVM the monitor intercepts no CR or DR write: the CPU checks them itself, and QEMU's
    // TCG does not (it takes the bits, and the next VMRUN fails on the invalid state). So these
    // run on VMX, where CR0 and CR4 writes exit to the monitor; EFER goes through it on both.
    if cpu::is_intel() {
        for (what, mov, value) in cases {
            let got = mov(value);
            check!(
                is_gp0(got),
                "{what} ({value:#x}) {}, not #GP(0)",
                Completion(got)
            );
        }
        check!(
            (cpu::cr0(), cpu::cr3(), cpu::cr4(), cpu::cr8(), cpu::dr7())
                == (cr0, cr3, cr4, cr8, dr7),
            "a faulting write changed a register"
        );
    }
    const EFER: u32 = 0xC000_0080;
    // SAFETY: reading EFER changes nothing.
    let efer = unsafe { insn::rdmsr(EFER) };
    let Ok(efer) = efer else {
        crate::report::fail(format_args!("rdmsr EFER {}", Outcome(efer)))
    };
    for (what, value) in [
        ("SVME with SVM hidden", efer | 1 << 12),
        ("bit 63", efer | 1 << 63),
        ("LME off while paging", efer & !(1 << 8)),
    ] {
        // SAFETY: each value is invalid and faults.
        let got = unsafe { insn::wrmsr(EFER, value) };
        check!(
            is_gp0(got),
            "efer {what} ({value:#x}) {}, not #GP(0)",
            Completion(got)
        );
    }
    // SAFETY: as above.
    let now = unsafe { insn::rdmsr(EFER) };
    check!(now == Ok(efer), "EFER changed to {}", Outcome(now));
    note(format_args!("reserved-bit writes refused"));
}

/// INVD and WBINVD complete (the monitor may skip INVD's discard, which the architecture
/// allows: caches hold nothing the guest cannot write back), and memory stays intact.
pub fn cache_control(_: u64) {
    static mut DATA: [u64; 512] = [0; 512];
    let data = &raw mut DATA;
    for round in 0..200u64 {
        // SAFETY: the guest's own static; single-threaded.
        unsafe {
            (*data)
                .iter_mut()
                .enumerate()
                .for_each(|(i, d)| *d = round ^ i as u64)
        };
        // SAFETY: WBINVD writes back and invalidates caches; no memory is lost.
        let w = unsafe { guarded!("wbinvd") };
        check!(w.is_ok(), "wbinvd {}", Completion(w));
        // SAFETY: as above; a discard could only lose what WBINVD just wrote back.
        let i = unsafe { guarded!("wbinvd", "invd";) };
        check!(i.is_ok(), "invd {}", Completion(i));
        // SAFETY: as above.
        let intact = unsafe {
            (*data)
                .iter()
                .enumerate()
                .all(|(i, &d)| d == round ^ i as u64)
        };
        check!(intact, "memory changed across INVD in round {round}");
    }
    note(format_args!("200 rounds of WBINVD and INVD"));
}
