//! The integer ALU operations the MMIO emulator performs on memory operands (ADD, SUB/CMP,
//! AND/TEST, OR, XOR) with their arithmetic flags, per the instruction pages of Intel SDM
//! Vol. 2 and the flag definitions of Vol. 1 §3.4.3.1.
//!
//! Pure functions on values: no register file, no memory.

use super::gpr::mask;

pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const OF: u64 = 1 << 11;
/// The six status flags an ALU operation defines.
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
/// The direction flag, which string instructions follow.
pub const DF: u64 = 1 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    Add,
    Sub,
    And,
    Or,
    Xor,
}

/// `a op b` on `size`-byte operands: the truncated result and the new status flags.
/// AF after a logical operation is architecturally undefined; it is cleared here.
pub fn compute(op: AluOp, a: u64, b: u64, size: u8) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let sign = m ^ (m >> 1);
    let (r, cf, of) = match op {
        AluOp::Add => {
            let r = a.wrapping_add(b) & m;
            (
                r,
                u128::from(a) + u128::from(b) > u128::from(m),
                (a ^ r) & (b ^ r) & sign != 0,
            )
        }
        AluOp::Sub => {
            let r = a.wrapping_sub(b) & m;
            (r, a < b, (a ^ b) & (a ^ r) & sign != 0)
        }
        AluOp::And => (a & b, false, false),
        AluOp::Or => (a | b, false, false),
        AluOp::Xor => (a ^ b, false, false),
    };
    let arith = matches!(op, AluOp::Add | AluOp::Sub);
    let mut flags = 0;
    flags |= if cf { CF } else { 0 };
    flags |= if of { OF } else { 0 };
    flags |= if arith && (a ^ b ^ r) & 0x10 != 0 {
        AF
    } else {
        0
    };
    flags |= if (r as u8).count_ones() & 1 == 0 {
        PF
    } else {
        0
    };
    flags |= if r == 0 { ZF } else { 0 };
    flags |= if r & sign != 0 { SF } else { 0 };
    (r, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sets_carry_overflow_and_adjust() {
        assert_eq!(compute(AluOp::Add, 0x7f, 1, 1), (0x80, OF | SF | AF));
        assert_eq!(compute(AluOp::Add, 0xff, 1, 1), (0, CF | ZF | PF | AF));
        assert_eq!(compute(AluOp::Add, u64::MAX, 1, 8), (0, CF | ZF | PF | AF));
        assert_eq!(compute(AluOp::Add, 0x1_0000, 0x2_0000, 2), (0, ZF | PF));
        assert_eq!(
            compute(AluOp::Add, 0x7fff_ffff, 0x7fff_ffff, 4).1,
            OF | SF | AF
        );
    }

    #[test]
    fn sub_borrows_and_compares() {
        assert_eq!(compute(AluOp::Sub, 0, 1, 1), (0xff, CF | SF | AF | PF));
        assert_eq!(compute(AluOp::Sub, 5, 5, 4), (0, ZF | PF));
        assert_eq!(compute(AluOp::Sub, 0x8000, 1, 2), (0x7fff, OF | AF | PF));
        assert_eq!(compute(AluOp::Sub, 3, 2, 8), (1, 0));
    }

    #[test]
    fn logic_clears_carry_and_overflow() {
        assert_eq!(compute(AluOp::And, 0xf0, 0x0f, 1), (0, ZF | PF));
        assert_eq!(compute(AluOp::Or, 0x8000_0000, 1, 4), (0x8000_0001, SF));
        assert_eq!(compute(AluOp::Xor, 0b11, 0b01, 2), (0b10, 0));
    }
}
