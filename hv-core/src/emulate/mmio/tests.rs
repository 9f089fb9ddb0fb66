//! MMIO emulation tests against the mock VM: every supported form and size, addressing modes,
//! partial-register writes, flags, page-straddling fetches, errors, and a decode fuzz.

use super::*;
use crate::emulate::alu::{AF, CF, DF, OF, PF, SF, ZF};
use crate::emulate::testvm::*;
use crate::emulate::walk::{PF_FETCH, PF_PRESENT};
use crate::emulate::{instruction_length, MAX_INSN_LEN};
use vcpu::reg::{RAX, RBX, RCX, RDI, RSI, RSP};

const CODE: u64 = 0x40_0000;
const CODE_PA: u64 = 0x20_0000;
const MMIO_VA: u64 = 0x6000_0000;
const MMIO_GPA: u64 = 0xfee0_0000;
const DATA_VA: u64 = 0x5000_0000;
const DATA_PA: u64 = 0x30_0000;
const R8: usize = 8;
const R9: usize = 9;
const R12: usize = 12;
const R13: usize = 13;
const R14: usize = 14;
/// RFLAGS bit 1 is always set.
const FIXED: u64 = 2;

struct Vm {
    vm: TestVm,
    regs: Regs,
    ctrl: ControlState,
    segs: Segments,
    bus: MockBus,
    gpa: u64,
}

impl Vm {
    /// 64-bit mode: `code` at RIP, RBX pointing at the device page.
    fn long(code: &[u8]) -> Self {
        let mut vm = TestVm::new(4);
        vm.map(CODE, CODE_PA, 1, P);
        vm.map(MMIO_VA, MMIO_GPA, 1, P | RW | NX);
        vm.map(DATA_VA, DATA_PA, 1, P | RW | NX);
        vm.poke(CODE_PA, code);
        let ctrl = vm.long_mode();
        let mut regs = Regs {
            rip: CODE,
            rflags: FIXED,
            ..Default::default()
        };
        regs.gpr[RBX] = MMIO_VA;
        Self {
            vm,
            regs,
            ctrl,
            segs: Segments::default(),
            bus: MockBus::default(),
            gpa: MMIO_GPA,
        }
    }

    fn run(&mut self) -> Result<(), EmulError> {
        let mut ram = self.vm.ram();
        emulate_mmio(
            &mut self.regs,
            &self.ctrl,
            &self.segs,
            &mut ram,
            &mut self.bus,
            self.gpa,
        )
    }

    /// Runs to success and checks that RIP moved past `len` bytes.
    fn ok(&mut self, len: u64) -> &[BusOp] {
        let rip = self.regs.rip;
        self.run().unwrap();
        assert_eq!(self.regs.rip, rip + len);
        &self.bus.log
    }

    /// Runs to `err` and checks that nothing changed.
    fn fails(&mut self, err: EmulError) {
        let before = self.regs;
        assert_eq!(self.run(), Err(err));
        assert_eq!(self.regs, before);
        assert!(self.bus.log.is_empty(), "{:?}", self.bus.log);
    }
}

fn rd(off: u64, size: u8) -> BusOp {
    BusOp::Read {
        gpa: MMIO_GPA + off,
        size,
    }
}

fn wr(off: u64, size: u8, value: u64) -> BusOp {
    BusOp::Write {
        gpa: MMIO_GPA + off,
        size,
        value,
    }
}

const RAX_VAL: u64 = 0x1122_3344_5566_7788;

#[test]
fn mov_stores_every_size() {
    let cases: &[(&[u8], BusOp)] = &[
        (&[0x88, 0x03], wr(0, 1, 0x88)),
        (&[0x88, 0x23], wr(0, 1, 0x77)),       // AH
        (&[0x40, 0x88, 0x23], wr(0, 1, 0xa5)), // SPL with REX
        (&[0x66, 0x89, 0x03], wr(0, 2, 0x7788)),
        (&[0x89, 0x43, 0x10], wr(0x10, 4, 0x5566_7788)),
        (&[0x48, 0x89, 0x03], wr(0, 8, RAX_VAL)),
    ];
    for (code, op) in cases {
        let mut vm = Vm::long(code);
        vm.regs.gpr[RAX] = RAX_VAL;
        vm.regs.gpr[RSP] = 0xa5;
        assert_eq!(vm.ok(code.len() as u64), [*op], "{code:02x?}");
    }
}

#[test]
fn mov_loads_merge_or_zero_extend() {
    let cases: &[(&[u8], u8, usize, u64)] = &[
        (&[0x8a, 0x03], 1, RAX, 0x1122_3344_5566_77f8),
        (&[0x8a, 0x23], 1, RAX, 0x1122_3344_5566_f888), // AH
        (&[0x66, 0x8b, 0x03], 2, RAX, 0x1122_3344_5566_f7f8),
        (&[0x8b, 0x03], 4, RAX, 0xf5f6_f7f8),
        (&[0x48, 0x8b, 0x03], 8, RAX, 0xf1f2_f3f4_f5f6_f7f8),
        (&[0x4c, 0x8b, 0x0b], 8, R9, 0xf1f2_f3f4_f5f6_f7f8), // REX.R
    ];
    for (code, size, reg, expect) in cases {
        let mut vm = Vm::long(code);
        vm.regs.gpr[RAX] = RAX_VAL;
        vm.bus.read_value = 0xf1f2_f3f4_f5f6_f7f8;
        assert_eq!(vm.ok(code.len() as u64), [rd(0, *size)], "{code:02x?}");
        assert_eq!(vm.regs.gpr[*reg], *expect, "{code:02x?}");
        assert_eq!(vm.regs.rflags, FIXED, "MOV leaves flags alone");
    }
}

#[test]
fn sib_addressing_with_rex_x_and_rex_b() {
    // mov [r12 + r13*8 + 0x20], r14d
    let mut vm = Vm::long(&[0x47, 0x89, 0x74, 0xec, 0x20]);
    vm.regs.gpr[R12] = MMIO_VA;
    vm.regs.gpr[R13] = 2;
    vm.regs.gpr[R14] = 0xdead_beef_cafe_f00d;
    assert_eq!(vm.ok(5), [wr(0x30, 4, 0xcafe_f00d)]);

    // mov eax, [r12 + 0x40] (REX.B, SIB for the R12 base)
    let mut vm = Vm::long(&[0x41, 0x8b, 0x44, 0x24, 0x40]);
    vm.regs.gpr[R12] = MMIO_VA;
    assert_eq!(vm.ok(5), [rd(0x40, 4)]);
}

#[test]
fn rip_relative_operand() {
    let disp = (MMIO_VA + 8 - (CODE + 6)) as u32;
    let mut code = vec![0x8b, 0x05];
    code.extend_from_slice(&disp.to_le_bytes());
    let mut vm = Vm::long(&code);
    vm.regs.gpr[RBX] = 0;
    vm.bus.read_value = 0x1234;
    assert_eq!(vm.ok(6), [rd(8, 4)]);
    assert_eq!(vm.regs.gpr[RAX], 0x1234);
}

#[test]
fn moffs_forms_with_64_bit_addresses() {
    let addr = (MMIO_VA + 0x20).to_le_bytes();
    let with = |op: &[u8]| [op, &addr[..]].concat();
    let cases: Vec<(Vec<u8>, BusOp)> = vec![
        (with(&[0xa0]), rd(0x20, 1)),
        (with(&[0xa1]), rd(0x20, 4)),
        (with(&[0x48, 0xa1]), rd(0x20, 8)),
        (with(&[0xa2]), wr(0x20, 1, 0x88)),
        (with(&[0x66, 0xa3]), wr(0x20, 2, 0x7788)),
        (with(&[0x48, 0xa3]), wr(0x20, 8, RAX_VAL)),
    ];
    for (code, op) in cases {
        let mut vm = Vm::long(&code);
        vm.regs.gpr[RAX] = RAX_VAL;
        vm.bus.read_value = 0x99;
        assert_eq!(vm.ok(code.len() as u64), [op], "{code:02x?}");
        if matches!(op, BusOp::Read { size: 4 | 8, .. }) {
            assert_eq!(vm.regs.gpr[RAX], 0x99);
        }
    }
}

#[test]
fn mov_immediate_to_memory() {
    let cases: &[(&[u8], BusOp)] = &[
        (&[0xc6, 0x03, 0x5a], wr(0, 1, 0x5a)),
        (&[0x66, 0xc7, 0x03, 0x34, 0x12], wr(0, 2, 0x1234)),
        (
            &[0xc7, 0x43, 0x04, 0x78, 0x56, 0x34, 0x12],
            wr(4, 4, 0x1234_5678),
        ),
        (
            &[0x48, 0xc7, 0x03, 0x00, 0x00, 0x00, 0x80],
            wr(0, 8, 0xffff_ffff_8000_0000),
        ),
    ];
    for (code, op) in cases {
        let mut vm = Vm::long(code);
        assert_eq!(vm.ok(code.len() as u64), [*op], "{code:02x?}");
    }
}

#[test]
fn movzx_movsx_movsxd() {
    let cases: &[(&[u8], u8, usize, u64)] = &[
        (&[0x0f, 0xb6, 0x03], 1, RAX, 0x81),
        (&[0x66, 0x0f, 0xb6, 0x03], 1, RAX, 0xffff_ffff_ffff_0081),
        (&[0x0f, 0xb7, 0x0b], 2, RCX, 0x8281),
        (&[0x4c, 0x0f, 0xb6, 0x03], 1, R8, 0x81),
        (&[0x48, 0x0f, 0xbe, 0x03], 1, RAX, 0xffff_ffff_ffff_ff81),
        (&[0x0f, 0xbf, 0x03], 2, RAX, 0xffff_8281),
        (&[0x48, 0x63, 0x03], 4, RAX, 0xffff_ffff_8483_8281),
    ];
    for (code, size, reg, expect) in cases {
        let mut vm = Vm::long(code);
        vm.regs.gpr = [u64::MAX; 16];
        vm.regs.gpr[RBX] = MMIO_VA;
        vm.bus.read_value = 0x1234_8685_8483_8281;
        assert_eq!(vm.ok(code.len() as u64), [rd(0, *size)], "{code:02x?}");
        assert_eq!(vm.regs.gpr[*reg], *expect, "{code:02x?}");
    }
}

#[test]
fn movnti_stores() {
    let mut vm = Vm::long(&[0x0f, 0xc3, 0x03]);
    vm.regs.gpr[RAX] = RAX_VAL;
    assert_eq!(vm.ok(3), [wr(0, 4, 0x5566_7788)]);
    let mut vm = Vm::long(&[0x48, 0x0f, 0xc3, 0x03]);
    vm.regs.gpr[RAX] = RAX_VAL;
    assert_eq!(vm.ok(4), [wr(0, 8, RAX_VAL)]);
}

/// Runs `code` with RAX = `rax`, the device returning `mem`; returns the bus log, RAX and the
/// status flags.
fn alu(code: &[u8], rax: u64, mem: u64) -> (Vec<BusOp>, u64, u64) {
    let mut vm = Vm::long(code);
    vm.regs.gpr[RAX] = rax;
    vm.regs.rflags = FIXED | CF | OF | DF;
    vm.bus.read_value = mem;
    let log = vm.ok(code.len() as u64).to_vec();
    assert_eq!(
        vm.regs.rflags & (DF | FIXED),
        DF | FIXED,
        "non-status flags kept"
    );
    (log, vm.regs.gpr[RAX], vm.regs.rflags & alu::STATUS)
}

#[test]
fn alu_read_modify_write_and_flags() {
    // add [rbx], eax
    let (log, _, f) = alu(&[0x01, 0x03], 1, 0xffff_ffff);
    assert_eq!(log, [rd(0, 4), wr(0, 4, 0)]);
    assert_eq!(f, CF | ZF | PF | AF);
    // add byte [rbx], 1
    let (log, _, f) = alu(&[0x80, 0x03, 0x01], 0, 0x7f);
    assert_eq!(log, [rd(0, 1), wr(0, 1, 0x80)]);
    assert_eq!(f, OF | SF | AF);
    // sub [rbx], eax
    let (log, _, f) = alu(&[0x29, 0x03], 7, 5);
    assert_eq!(log, [rd(0, 4), wr(0, 4, 0xffff_fffe)]);
    assert_eq!(f, CF | SF | AF);
    // and dword [rbx], 0x0f (imm8 sign-extended)
    let (log, _, f) = alu(&[0x83, 0x23, 0x0f], 0, 0xf0);
    assert_eq!(log, [rd(0, 4), wr(0, 4, 0)]);
    assert_eq!(f, ZF | PF);
    // or [rbx], al
    let (log, _, f) = alu(&[0x08, 0x03], 0x80, 0x01);
    assert_eq!(log, [rd(0, 1), wr(0, 1, 0x81)]);
    assert_eq!(f, SF | PF);
    // xor qword [rbx], -1 (imm8 sign-extended to 64)
    let (log, _, f) = alu(&[0x48, 0x83, 0x33, 0xff], 0, 0x0f);
    assert_eq!(log, [rd(0, 8), wr(0, 8, !0x0f)]);
    assert_eq!(f, SF | PF);
}

#[test]
fn alu_into_register_zero_extends_32_bit_results() {
    // xor eax, [rbx]
    let (log, rax, f) = alu(&[0x33, 0x03], 0xffff_ffff_ffff_ffff, 0xffff_ffff);
    assert_eq!(log, [rd(0, 4)]);
    assert_eq!((rax, f), (0, ZF | PF));
    // add rax, [rbx]
    let (_, rax, f) = alu(&[0x48, 0x03, 0x03], 1, u64::MAX);
    assert_eq!((rax, f), (0, CF | ZF | PF | AF));
    // sub ax, [rbx] merges
    let (_, rax, _) = alu(&[0x66, 0x2b, 0x03], 0xaaaa_0000_0000_0005, 1);
    assert_eq!(rax, 0xaaaa_0000_0000_0004);
}

#[test]
fn cmp_sets_flags_without_writing() {
    // cmp dword [rbx], 0x80000000
    let (log, _, f) = alu(&[0x81, 0x3b, 0x00, 0x00, 0x00, 0x80], 0, 0x7fff_ffff);
    assert_eq!(log, [rd(0, 4)]);
    assert_eq!(f, CF | OF | SF | PF);
    // cmp eax, [rbx]: equal, RAX untouched
    let (log, rax, f) = alu(&[0x3b, 0x03], 0xaaaa_0000_0000_0003, 3);
    assert_eq!(log, [rd(0, 4)]);
    assert_eq!((rax, f), (0xaaaa_0000_0000_0003, ZF | PF));
    // cmp [rbx], al: 0x10 - 0x20
    let (_, _, f) = alu(&[0x38, 0x03], 0x20, 0x10);
    assert_eq!(f, CF | SF | PF);
}

#[test]
fn test_forms_set_flags_only() {
    let cases: &[(&[u8], u64, u64, u8, u64)] = &[
        (&[0x85, 0x03], 0x0f, 0xf0, 4, ZF | PF),
        (&[0x84, 0x03], 0x80, 0x80, 1, SF),
        (&[0x48, 0x85, 0x03], 1 << 63, u64::MAX, 8, SF | PF),
        (&[0xf6, 0x03, 0x01], 0, 0x03, 1, 0),
        (&[0x66, 0xf7, 0x03, 0x00, 0x80], 0, 0x8000, 2, SF | PF),
        (
            &[0xf7, 0x03, 0x00, 0x00, 0x00, 0x80],
            0,
            0x8000_0000,
            4,
            SF | PF,
        ),
    ];
    for (code, rax, mem, size, flags) in cases {
        let (log, _, f) = alu(code, *rax, *mem);
        assert_eq!(log, [rd(0, *size)], "{code:02x?}");
        assert_eq!(f, *flags, "{code:02x?}");
    }
}

#[test]
fn xchg_reads_then_writes() {
    let mut vm = Vm::long(&[0x87, 0x03]);
    vm.regs.gpr[RAX] = 0xffff_ffff_0000_2222;
    vm.bus.read_value = 0x1111;
    assert_eq!(vm.ok(2), [rd(0, 4), wr(0, 4, 0x2222)]);
    assert_eq!(vm.regs.gpr[RAX], 0x1111);

    let mut vm = Vm::long(&[0x86, 0x23]); // xchg [rbx], ah
    vm.regs.gpr[RAX] = 0x3344;
    vm.bus.read_value = 0x55;
    assert_eq!(vm.ok(2), [rd(0, 1), wr(0, 1, 0x33)]);
    assert_eq!(vm.regs.gpr[RAX], 0x5544);
}

#[test]
fn bt_register_and_immediate_offsets() {
    // bt [rbx], eax with eax = 35: dword at +4, bit 3.
    let mut vm = Vm::long(&[0x0f, 0xa3, 0x03]);
    vm.regs.gpr[RAX] = 35;
    vm.regs.rflags = FIXED | ZF;
    vm.bus.read_value = 1 << 3;
    assert_eq!(vm.ok(3), [rd(4, 4)]);
    assert_eq!(vm.regs.rflags, FIXED | ZF | CF);

    // eax = -1 selects bit 31 of the dword below RBX.
    let mut vm = Vm::long(&[0x0f, 0xa3, 0x03]);
    vm.regs.gpr[RBX] = MMIO_VA + 8;
    vm.regs.gpr[RAX] = 0xffff_ffff;
    vm.regs.rflags = FIXED | CF;
    assert_eq!(vm.ok(3), [rd(4, 4)]);
    assert_eq!(vm.regs.rflags, FIXED);

    // bt dword [rbx], 5 and bt qword [rbx], 0x45 (taken modulo 64).
    for (code, size) in [
        (&[0x0f, 0xba, 0x23, 0x05][..], 4),
        (&[0x48, 0x0f, 0xba, 0x23, 0x45], 8),
    ] {
        let mut vm = Vm::long(code);
        vm.bus.read_value = 1 << 5;
        assert_eq!(vm.ok(code.len() as u64), [rd(0, size)]);
        assert_eq!(vm.regs.rflags, FIXED | CF);
    }
}

#[test]
fn stos_stores_and_steps_rdi_both_ways() {
    let mut vm = Vm::long(&[0xab]);
    vm.regs.gpr[RAX] = RAX_VAL;
    vm.regs.gpr[RDI] = MMIO_VA + 8;
    assert_eq!(vm.ok(1), [wr(8, 4, 0x5566_7788)]);
    assert_eq!(vm.regs.gpr[RDI], MMIO_VA + 12);

    let mut vm = Vm::long(&[0x48, 0xab]);
    vm.regs.gpr[RAX] = RAX_VAL;
    vm.regs.gpr[RDI] = MMIO_VA + 8;
    vm.regs.rflags = FIXED | DF;
    assert_eq!(vm.ok(2), [wr(8, 8, RAX_VAL)]);
    assert_eq!(vm.regs.gpr[RDI], MMIO_VA);

    let mut vm = Vm::long(&[0xf3, 0xab]);
    vm.regs.gpr[RDI] = MMIO_VA;
    vm.fails(EmulError::Unsupported {
        mnemonic: Mnemonic::Stosd,
    });
}

#[test]
fn movs_between_ram_and_device() {
    let mut vm = Vm::long(&[0xa5]);
    vm.vm.poke(DATA_PA + 0x10, &0xcafe_babe_u32.to_le_bytes());
    vm.regs.gpr[RSI] = DATA_VA + 0x10;
    vm.regs.gpr[RDI] = MMIO_VA;
    assert_eq!(vm.ok(1), [wr(0, 4, 0xcafe_babe)]);
    assert_eq!(
        (vm.regs.gpr[RSI], vm.regs.gpr[RDI]),
        (DATA_VA + 0x14, MMIO_VA + 4)
    );

    let mut vm = Vm::long(&[0x66, 0xa5]);
    vm.regs.gpr[RSI] = MMIO_VA + 2;
    vm.regs.gpr[RDI] = DATA_VA;
    vm.bus.read_value = 0xbeef;
    assert_eq!(vm.ok(2), [rd(2, 2)]);
    assert_eq!(&vm.vm.ram[DATA_PA as usize..][..2], &[0xef, 0xbe]);

    let mut vm = Vm::long(&[0xa5]);
    vm.regs.gpr[RSI] = DATA_VA;
    vm.regs.gpr[RDI] = DATA_VA + 8;
    vm.fails(EmulError::AddressMismatch {
        gpa: MMIO_GPA,
        translated: DATA_PA,
    });

    let mut vm = Vm::long(&[0xf3, 0xa4]);
    vm.fails(EmulError::Unsupported {
        mnemonic: Mnemonic::Movsb,
    });
}

#[test]
fn fs_and_gs_bases_apply_in_64_bit_mode_but_ds_does_not() {
    let mut vm = Vm::long(&[0x64, 0x8b, 0x03]);
    vm.segs.fs_base = MMIO_VA;
    vm.regs.gpr[RBX] = 0x18;
    assert_eq!(vm.ok(3), [rd(0x18, 4)]);

    let mut vm = Vm::long(&[0x65, 0x89, 0x03]);
    vm.segs.gs_base = MMIO_VA - 0x1000;
    vm.regs.gpr[RBX] = 0x1020;
    assert_eq!(vm.ok(3), [wr(0x20, 4, 0)]);

    let mut vm = Vm::long(&[0x8b, 0x03]);
    vm.segs.ds_base = 0x1000;
    assert_eq!(vm.ok(2), [rd(0, 4)]);
}

#[test]
fn operand_on_another_page_is_a_mismatch() {
    let mut vm = Vm::long(&[0x8b, 0x03]);
    vm.regs.gpr[RBX] = DATA_VA;
    vm.fails(EmulError::AddressMismatch {
        gpa: MMIO_GPA,
        translated: DATA_PA,
    });
}

#[test]
fn unsupported_and_invalid_instructions() {
    let mut vm = Vm::long(&[0xff, 0x03]); // inc dword [rbx]
    vm.fails(EmulError::Unsupported {
        mnemonic: Mnemonic::Inc,
    });
    let mut vm = Vm::long(&[0x0f, 0x0b]); // ud2
    vm.fails(EmulError::Unsupported {
        mnemonic: Mnemonic::Ud2,
    });
    let mut vm = Vm::long(&[0x8c, 0x03]); // mov [rbx], es
    vm.fails(EmulError::Unsupported {
        mnemonic: Mnemonic::Mov,
    });
    let mut vm = Vm::long(&[0x06]); // push es: invalid in 64-bit mode
    vm.fails(EmulError::InvalidInstruction);
    // A dword at the last two bytes of the page crosses out of it.
    let mut vm = Vm::long(&[0x8b, 0x03]);
    vm.regs.gpr[RBX] = MMIO_VA + 0xffe;
    vm.fails(EmulError::Unsupported {
        mnemonic: Mnemonic::Mov,
    });
    assert!(!format!(
        "{}",
        EmulError::Unsupported {
            mnemonic: Mnemonic::Inc
        }
    )
    .is_empty());
}

#[test]
fn fetch_straddles_two_non_contiguous_pages() {
    let mut vm = Vm::long(&[]);
    vm.vm.map(0x41_0000, 0x22_0000, 1, P);
    vm.vm.map(0x41_1000, 0x21_0000, 1, P);
    vm.vm.poke(0x22_0ffe, &[0x89, 0x43]);
    vm.vm.poke(0x21_0000, &[0x10]);
    vm.regs.rip = 0x41_0ffe;
    vm.regs.gpr[RAX] = 7;
    assert_eq!(vm.ok(3), [wr(0x10, 4, 7)]);
    assert_eq!(vm.regs.rip, 0x41_1001);
}

#[test]
fn fetch_faults_carry_the_faulting_address() {
    let mut vm = Vm::long(&[]);
    vm.vm.map(0x43_0000, 0x23_0000, 1, P);
    vm.vm.poke(0x23_0ffe, &[0x89, 0x43]);
    // An instruction cut off by the unmapped next page faults on that page.
    vm.regs.rip = 0x43_0ffe;
    vm.fails(EmulError::PageFault {
        linear: 0x43_1000,
        error_code: PF_FETCH,
    });
    // One that fits does not need the next page.
    vm.vm.poke(0x23_0fff, &[0xf4]);
    vm.regs.rip = 0x43_0fff;
    assert_eq!(instruction_length(&vm.regs, &vm.ctrl, &vm.vm.ram()), Ok(1));
    // Code on a no-execute page.
    vm.regs.rip = DATA_VA;
    vm.fails(EmulError::PageFault {
        linear: DATA_VA,
        error_code: PF_PRESENT | PF_FETCH,
    });
    vm.regs.rip = 0x8000_0000_0000;
    vm.fails(EmulError::NonCanonical);
}

#[test]
fn instruction_length_fast_path_and_fallback() {
    let cases: &[(&[u8], u8)] = &[
        (&[0x0f, 0xa2], 2),
        (&[0x0f, 0x01, 0xd9], 3),
        (&[0xf4], 1),
        (&[0x2e, 0x0f, 0xa2], 3),
        (&[0x48, 0x89, 0x44, 0x24, 0x08], 5),
        (&[0x0f, 0x01, 0xd1], 3),
    ];
    for (code, len) in cases {
        let vm = Vm::long(code);
        let mut ram_vm = vm.vm;
        let got = instruction_length(&vm.regs, &vm.ctrl, &ram_vm.ram());
        assert_eq!(got, Ok(*len), "{code:02x?}");
    }
    let mut vm = Vm::long(&[0x06]);
    let got = instruction_length(&vm.regs, &vm.ctrl, &vm.vm.ram());
    assert_eq!(got, Err(EmulError::InvalidInstruction));
}

/// 32-bit protected mode with 32-bit paging: code in a 4 KiB page, the device in a 4 MiB page,
/// and a non-zero DS base.
#[test]
fn protected_mode_32_bit_paging() {
    let mut vm = Vm::long(&[]);
    vm.ctrl = ControlState {
        cr0: CR0_PE | CR0_WP | CR0_PG,
        cr3: 0x5000,
        cr4: CR4_PSE,
        cs_db: true,
        ..Default::default()
    };
    vm.vm.write32(0x5000 + 4, 0x6000 | (P | RW) as u32);
    vm.vm.write32(0x6000, CODE_PA as u32 | P as u32);
    vm.vm.write32(
        0x5000 + (0xfee0_0000 >> 22) * 4,
        0xfec0_0000 | (P | RW | PS) as u32,
    );
    vm.segs.ds_base = 0x1000;
    vm.regs.gpr[RBX] = 0xfee0_0000 - 0x1000;
    vm.regs.gpr[RAX] = RAX_VAL;
    let mut code = vec![0x89, 0x43, 0x10, 0x66, 0x89, 0x03, 0xa1];
    code.extend_from_slice(&0xfedf_f020_u32.to_le_bytes());
    vm.vm.poke(CODE_PA, &code);
    assert_eq!(vm.ok(3), [wr(0x10, 4, 0x5566_7788)]);
    assert_eq!(vm.ok(3)[1], wr(0, 2, 0x7788));
    vm.bus.read_value = 0x42;
    assert_eq!(vm.ok(5)[2], rd(0x20, 4));
    assert_eq!(vm.regs.gpr[RAX], 0x42);
}

#[test]
fn pae_paging_guest() {
    let mut vm = Vm::long(&[0x8b, 0x43, 0x04]);
    vm.ctrl = ControlState {
        cr0: CR0_PE | CR0_WP | CR0_PG,
        cr3: 0x5000,
        cr4: CR4_PAE,
        efer: EFER_NXE,
        cs_db: true,
        ..Default::default()
    };
    // Code at 0x40_0000: PDPTE 0 → PD 0x6000, PDE 2 → PT 0x7000, PTE 0. Device at 0xfee0_0000:
    // PDPTE 3 → PD 0x8000, PDE 0x1f7 a 2 MiB page.
    vm.vm.write64(0x5000, 0x6000 | P);
    vm.vm.write64(0x6000 + 2 * 8, 0x7000 | P | RW);
    vm.vm.write64(0x7000, CODE_PA | P);
    vm.vm.write64(0x5000 + 3 * 8, 0x8000 | P);
    vm.vm
        .write64(0x8000 + 0x1f7 * 8, 0xfee0_0000 | P | RW | PS | NX);
    vm.regs.gpr[RBX] = 0xfee0_0000;
    vm.bus.read_value = 0x77;
    assert_eq!(vm.ok(3), [rd(4, 4)]);
    assert_eq!(vm.regs.gpr[RAX], 0x77);
}

#[test]
fn real_mode_16_bit_addressing_wraps() {
    let mut vm = Vm::long(&[]);
    vm.ctrl = ControlState {
        cs_base: 0xf_0000,
        ..Default::default()
    };
    vm.segs.ds_base = 0xa_0000;
    vm.gpa = 0xa_0000;
    vm.vm.poke(0xf_0100, &[0x89, 0x00, 0x66, 0x89, 0x00]); // mov [bx+si], ax; mov [bx+si], eax
    vm.regs.rip = 0x100;
    vm.regs.gpr[RAX] = RAX_VAL;
    vm.regs.gpr[RBX] = 0xfff0;
    vm.regs.gpr[RSI] = 0x20;
    let log = vm.ok(2).to_vec();
    assert_eq!(
        log,
        [BusOp::Write {
            gpa: 0xa_0010,
            size: 2,
            value: 0x7788
        }]
    );
    let log = vm.ok(3).to_vec();
    assert_eq!(
        log[1],
        BusOp::Write {
            gpa: 0xa_0010,
            size: 4,
            value: 0x5566_7788
        }
    );
    assert_eq!(vm.regs.rip, 0x105);
}

/// A small deterministic generator for the fuzz test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut vm = Vm::long(&[]);
    let modes = [
        vm.ctrl,
        ControlState {
            cr0: CR0_PE,
            cs_db: true,
            ..Default::default()
        },
        ControlState::default(),
    ];
    let mut emulated = 0;
    for round in 0..20_000 {
        let mut code = [0u8; MAX_INSN_LEN];
        for b in code.iter_mut() {
            *b = rng.next() as u8;
        }
        // Bias towards the opcodes the emulator handles.
        if round % 2 == 0 {
            code[0] = [
                0x88, 0x89, 0x8a, 0x8b, 0x0f, 0xa1, 0xc7, 0x81, 0xf7, 0x87, 0xa5, 0x48,
            ][round % 12];
        }
        vm.vm.poke(CODE_PA, &code);
        vm.ctrl = modes[round % 3];
        vm.regs.rip = if round % 3 == 0 { CODE } else { CODE_PA };
        for g in vm.regs.gpr.iter_mut() {
            *g = match rng.next() % 3 {
                0 => MMIO_VA + (rng.next() & 0xfff),
                1 => rng.next() & 0xffff,
                _ => rng.next(),
            };
        }
        vm.regs.rflags = rng.next();
        vm.gpa = if round % 3 == 0 { MMIO_GPA } else { 0 };
        vm.bus.log.clear();
        let rip = vm.regs.rip;
        let len = instruction_length(&vm.regs, &vm.ctrl, &vm.vm.ram());
        if vm.run().is_ok() {
            emulated += 1;
            let len = u64::from(len.unwrap());
            assert!((1..=15).contains(&len));
            assert_eq!(vm.regs.rip & 0xffff, (rip + len) & 0xffff);
            let page = vm.gpa & !0xfff;
            for op in &vm.bus.log {
                let (BusOp::Read { gpa, .. } | BusOp::Write { gpa, .. }) = op;
                assert_eq!(gpa & !0xfff, page, "{code:02x?}");
            }
        }
    }
    assert!(
        emulated > 100,
        "only {emulated} random instructions reached the device"
    );
}
