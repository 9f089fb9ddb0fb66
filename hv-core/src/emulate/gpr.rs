//! General-purpose register operands as the decoder names them (AL … R15), read from and
//! written to `vcpu::Regs` with the partial-register rules of Intel SDM Vol. 1 §3.4.1.1: 8- and
//! 16-bit writes merge into the old value, 32-bit writes zero-extend to 64 bits, and AH/CH/DH/BH
//! are bits 15:8 of RAX/RCX/RDX/RBX.
//!
//! Not segment, control or vector registers: those map to `None`.

use iced_x86::Register;
use vcpu::Regs;

/// One general-purpose register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gpr {
    /// Architectural number, RAX = 0 … R15 = 15.
    pub index: usize,
    /// Operand width in bytes: 1, 2, 4 or 8.
    pub width: u8,
    /// AH, CH, DH or BH.
    pub high: bool,
}

impl Gpr {
    /// The register the decoder names, or `None` for anything that is not a GPR.
    pub fn of(reg: Register) -> Option<Self> {
        // iced numbers the GPRs in blocks of 16 per width (8-bit: AL…BL, AH…BH, SPL…DIL,
        // R8L…R15L), each block in architectural order.
        let n = reg as u32;
        let block = |first: Register, width| {
            let i = n.checked_sub(first as u32).filter(|i| *i < 16)?;
            Some(Self {
                index: i as usize,
                width,
                high: false,
            })
        };
        if let Some(g) = block(Register::RAX, 8)
            .or_else(|| block(Register::EAX, 4))
            .or_else(|| block(Register::AX, 2))
        {
            return Some(g);
        }
        let i = n.checked_sub(Register::AL as u32).filter(|i| *i < 20)? as usize;
        Some(match i {
            0..=3 => Self {
                index: i,
                width: 1,
                high: false,
            },
            4..=7 => Self {
                index: i - 4,
                width: 1,
                high: true,
            },
            _ => Self {
                index: i - 4,
                width: 1,
                high: false,
            },
        })
    }

    /// The register's current value, zero-extended.
    pub fn read(self, regs: &Regs) -> u64 {
        let full = regs.gpr[self.index & 15];
        if self.high {
            (full >> 8) & 0xff
        } else {
            full & mask(self.width)
        }
    }

    /// Stores `value` (truncated to the register width) with partial-register semantics.
    pub fn write(self, regs: &mut Regs, value: u64) {
        let slot = &mut regs.gpr[self.index & 15];
        *slot = match (self.width, self.high) {
            (_, true) => (*slot & !0xff00) | ((value & 0xff) << 8),
            (4, _) => value & 0xffff_ffff,
            (8, _) => value,
            (w, _) => (*slot & !mask(w)) | (value & mask(w)),
        };
    }
}

/// All-ones over `size` bytes (1, 2, 4 or 8).
pub fn mask(size: u8) -> u64 {
    match size {
        8.. => u64::MAX,
        s => (1u64 << (u32::from(s) * 8)) - 1,
    }
}

/// `value` (of `size` bytes) sign-extended to 64 bits.
pub fn sign_extend(value: u64, size: u8) -> u64 {
    let unused = 64 - u32::from(size.clamp(1, 8)) * 8;
    (((value << unused) as i64) >> unused) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_width_and_the_high_bytes() {
        let g = |r| Gpr::of(r).unwrap();
        assert_eq!(
            g(Register::RAX),
            Gpr {
                index: 0,
                width: 8,
                high: false
            }
        );
        assert_eq!(
            g(Register::R15),
            Gpr {
                index: 15,
                width: 8,
                high: false
            }
        );
        assert_eq!(
            g(Register::R9D),
            Gpr {
                index: 9,
                width: 4,
                high: false
            }
        );
        assert_eq!(
            g(Register::DI),
            Gpr {
                index: 7,
                width: 2,
                high: false
            }
        );
        assert_eq!(
            g(Register::BL),
            Gpr {
                index: 3,
                width: 1,
                high: false
            }
        );
        assert_eq!(
            g(Register::BH),
            Gpr {
                index: 3,
                width: 1,
                high: true
            }
        );
        assert_eq!(
            g(Register::SPL),
            Gpr {
                index: 4,
                width: 1,
                high: false
            }
        );
        assert_eq!(
            g(Register::R15L),
            Gpr {
                index: 15,
                width: 1,
                high: false
            }
        );
        assert_eq!(Gpr::of(Register::ES), None);
        assert_eq!(Gpr::of(Register::RIP), None);
        assert_eq!(Gpr::of(Register::None), None);
        assert_eq!(Gpr::of(Register::CR0), None);
    }

    #[test]
    fn partial_writes_merge_or_zero_extend() {
        let mut regs = Regs::default();
        regs.gpr[1] = 0x1122_3344_5566_7788;
        let w = |r| Gpr::of(r).unwrap();
        w(Register::CH).write(&mut regs, 0xab);
        assert_eq!(regs.gpr[1], 0x1122_3344_5566_ab88);
        assert_eq!(w(Register::CH).read(&regs), 0xab);
        w(Register::CL).write(&mut regs, 0x1ff);
        assert_eq!(regs.gpr[1], 0x1122_3344_5566_abff);
        w(Register::CX).write(&mut regs, 0xbeef);
        assert_eq!(regs.gpr[1], 0x1122_3344_5566_beef);
        w(Register::ECX).write(&mut regs, 0xdead_beef);
        assert_eq!(regs.gpr[1], 0xdead_beef);
        assert_eq!(w(Register::CX).read(&regs), 0xbeef);
    }

    #[test]
    fn sign_extension_by_size() {
        assert_eq!(sign_extend(0x80, 1), 0xffff_ffff_ffff_ff80);
        assert_eq!(sign_extend(0x7fff, 2), 0x7fff);
        assert_eq!(sign_extend(0x8000_0000, 4), 0xffff_ffff_8000_0000);
        assert_eq!(mask(2), 0xffff);
        assert_eq!(mask(8), u64::MAX);
    }
}
