//! MMIO instruction emulation: after a nested page fault on a device page, the instruction at
//! CS:RIP is fetched and decoded, its memory operand is checked against the faulting page, the
//! access goes to the device bus, and registers, RFLAGS and RIP are updated as the CPU would.
//!
//! Supported: MOV (88/89/8A/8B, C6/C7, A0–A3 incl. 64-bit moffs), MOVNTI, MOVZX, MOVSX,
//! MOVSXD, ADD/SUB/AND/OR/XOR/CMP and TEST with a memory operand, XCHG reg,m, BT m,reg/imm,
//! and STOS/MOVS without REP. Everything else, and any access that leaves the faulting page,
//! is `EmulError::Unsupported`. Segment limits and types are not checked.

use super::alu::{self, AluOp};
use super::decode::{bitness, fetch_cached, ip_mask};
use super::gpr::{mask, sign_extend, Gpr};
use super::tlb::Tlb;
use super::walk::{page_remaining, Access, PAGE_SIZE};
use super::EmulError;
use crate::memory::GuestMemory;
use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind, Register};
use vcpu::{reg, ControlState, Regs};

/// The device side of an emulated access. `size` is 1, 2, 4 or 8 bytes; reads return the value
/// in the low `size` bytes (higher bytes are ignored).
pub trait MmioBus {
    fn read(&mut self, gpa: u64, size: u8) -> u64;
    fn write(&mut self, gpa: u64, size: u8, value: u64);
}

pub use vcpu::Segments;

/// Emulates the instruction at CS:RIP, which faulted on guest-physical address `gpa`, and
/// advances RIP past it. On error nothing has been changed: no register, no device access.
pub fn emulate_mmio(
    regs: &mut Regs,
    ctrl: &ControlState,
    segs: &Segments,
    mem: &mut impl GuestMemory,
    bus: &mut impl MmioBus,
    gpa: u64,
) -> Result<(), EmulError> {
    emulate_mmio_cached(&mut Tlb::new(), regs, ctrl, segs, mem, bus, gpa)
}

/// `emulate_mmio`, translating the code and the operands through `tlb`.
pub fn emulate_mmio_cached(
    tlb: &mut Tlb,
    regs: &mut Regs,
    ctrl: &ControlState,
    segs: &Segments,
    mem: &mut impl GuestMemory,
    bus: &mut impl MmioBus,
    gpa: u64,
) -> Result<(), EmulError> {
    let instr = fetch_cached(tlb, regs, ctrl, mem)?;
    let bits = bitness(ctrl);
    let mut machine = Machine {
        tlb,
        regs,
        ctrl,
        segs,
        mem,
        bus,
        gpa,
        bits,
    };
    machine.execute(&instr)?;
    let rip = machine.regs.rip.wrapping_add(instr.len() as u64);
    machine.regs.rip = rip & ip_mask(bits);
    Ok(())
}

/// A decoded operand in the forms the handlers accept.
#[derive(Clone, Copy, Debug)]
enum Operand {
    Reg(Gpr),
    Mem,
    Imm(u64),
}

/// Where one memory access of the instruction lands.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// On the faulting device page.
    Bus(u64),
    /// In ordinary guest memory (the other side of a MOVS).
    Ram(u64),
}

struct Machine<'a, M, B> {
    tlb: &'a mut Tlb,
    regs: &'a mut Regs,
    ctrl: &'a ControlState,
    segs: &'a Segments,
    mem: &'a mut M,
    bus: &'a mut B,
    gpa: u64,
    bits: u32,
}

impl<M: GuestMemory, B: MmioBus> Machine<'_, M, B> {
    fn execute(&mut self, instr: &Instruction) -> Result<(), EmulError> {
        use Mnemonic as Mn;
        match instr.mnemonic() {
            Mn::Mov | Mn::Movnti => self.mov(instr),
            Mn::Movzx => self.load_extended(instr, false),
            Mn::Movsx | Mn::Movsxd => self.load_extended(instr, true),
            Mn::Add => self.alu(instr, AluOp::Add, true),
            Mn::Sub => self.alu(instr, AluOp::Sub, true),
            Mn::And => self.alu(instr, AluOp::And, true),
            Mn::Or => self.alu(instr, AluOp::Or, true),
            Mn::Xor => self.alu(instr, AluOp::Xor, true),
            Mn::Cmp => self.alu(instr, AluOp::Sub, false),
            Mn::Test => self.alu(instr, AluOp::And, false),
            Mn::Xchg => self.xchg(instr),
            Mn::Bt => self.bt(instr),
            Mn::Stosb | Mn::Stosw | Mn::Stosd | Mn::Stosq => self.stos(instr),
            Mn::Movsb | Mn::Movsw | Mn::Movsd | Mn::Movsq => self.movs(instr),
            _ => Err(unsupported(instr)),
        }
    }

    fn mov(&mut self, instr: &Instruction) -> Result<(), EmulError> {
        let size = access_size(instr)?;
        match (operand(instr, 0)?, operand(instr, 1)?) {
            (Operand::Reg(dst), Operand::Mem) if dst.width == size => {
                let gpa = self.mmio_operand(instr, 1, size, false)?;
                let value = self.bus_read(gpa, size);
                dst.write(self.regs, value);
            }
            (Operand::Mem, Operand::Reg(src)) if src.width == size => {
                let gpa = self.mmio_operand(instr, 0, size, true)?;
                self.bus.write(gpa, size, src.read(self.regs));
            }
            (Operand::Mem, Operand::Imm(value)) => {
                let gpa = self.mmio_operand(instr, 0, size, true)?;
                self.bus.write(gpa, size, value & mask(size));
            }
            _ => return Err(unsupported(instr)),
        }
        Ok(())
    }

    /// MOVZX, MOVSX, MOVSXD: a narrower load, zero- or sign-extended into the register.
    fn load_extended(&mut self, instr: &Instruction, signed: bool) -> Result<(), EmulError> {
        let size = access_size(instr)?;
        let (Operand::Reg(dst), Operand::Mem) = (operand(instr, 0)?, operand(instr, 1)?) else {
            return Err(unsupported(instr));
        };
        if dst.width < size {
            return Err(unsupported(instr));
        }
        let gpa = self.mmio_operand(instr, 1, size, false)?;
        let value = self.bus_read(gpa, size);
        dst.write(
            self.regs,
            if signed {
                sign_extend(value, size)
            } else {
                value
            },
        );
        Ok(())
    }

    /// A two-operand ALU instruction; `store` is false for CMP and TEST, which set flags only.
    fn alu(&mut self, instr: &Instruction, op: AluOp, store: bool) -> Result<(), EmulError> {
        match (operand(instr, 0)?, operand(instr, 1)?) {
            (Operand::Mem, Operand::Reg(src)) => {
                let b = src.read(self.regs);
                self.alu_into_memory(instr, op, store, b)
            }
            (Operand::Mem, Operand::Imm(b)) => self.alu_into_memory(instr, op, store, b),
            (Operand::Reg(dst), Operand::Mem) => self.alu_into_register(instr, op, store, dst),
            _ => Err(unsupported(instr)),
        }
    }

    /// `op m, b`: read, compute, and for a storing operation write back (read-modify-write).
    fn alu_into_memory(
        &mut self,
        instr: &Instruction,
        op: AluOp,
        store: bool,
        b: u64,
    ) -> Result<(), EmulError> {
        let size = access_size(instr)?;
        let gpa = self.mmio_operand(instr, 0, size, store)?;
        let a = self.bus_read(gpa, size);
        let (result, flags) = alu::compute(op, a, b, size);
        if store {
            self.bus.write(gpa, size, result);
        }
        self.set_status_flags(flags);
        Ok(())
    }

    /// `op reg, m`.
    fn alu_into_register(
        &mut self,
        instr: &Instruction,
        op: AluOp,
        store: bool,
        dst: Gpr,
    ) -> Result<(), EmulError> {
        let size = access_size(instr)?;
        let gpa = self.mmio_operand(instr, 1, size, false)?;
        let b = self.bus_read(gpa, size);
        let (result, flags) = alu::compute(op, dst.read(self.regs), b, size);
        if store {
            dst.write(self.regs, result);
        }
        self.set_status_flags(flags);
        Ok(())
    }

    /// XCHG with memory: the old value is read, then the register's value written.
    fn xchg(&mut self, instr: &Instruction) -> Result<(), EmulError> {
        let size = access_size(instr)?;
        let (mem_index, reg) = match (operand(instr, 0)?, operand(instr, 1)?) {
            (Operand::Mem, Operand::Reg(r)) => (0, r),
            (Operand::Reg(r), Operand::Mem) => (1, r),
            _ => return Err(unsupported(instr)),
        };
        let gpa = self.mmio_operand(instr, mem_index, size, true)?;
        let old = self.bus_read(gpa, size);
        self.bus.write(gpa, size, reg.read(self.regs));
        reg.write(self.regs, old);
        Ok(())
    }

    /// BT m, reg/imm: CF = the selected bit. A register bit offset is signed and may select a
    /// bit outside the addressed operand (SDM Vol. 2A "BT"); an immediate is taken modulo the
    /// operand width. The other flags are left as they were.
    fn bt(&mut self, instr: &Instruction) -> Result<(), EmulError> {
        let size = access_size(instr)?;
        let bits = i64::from(size) * 8;
        let (displacement, bit) = match (operand(instr, 0)?, operand(instr, 1)?) {
            (Operand::Mem, Operand::Reg(r)) => {
                let offset = sign_extend(r.read(self.regs), r.width) as i64;
                let words = offset.div_euclid(bits);
                (
                    words.wrapping_mul(i64::from(size)) as u64,
                    offset.rem_euclid(bits) as u64,
                )
            }
            (Operand::Mem, Operand::Imm(v)) => (0, v % bits as u64),
            _ => return Err(unsupported(instr)),
        };
        let linear = self.wrap(self.linear(instr, 0)?.wrapping_add(displacement));
        let gpa = self.mmio(instr, linear, size, false)?;
        let cf = (self.bus_read(gpa, size) >> bit) & 1;
        self.regs.rflags = (self.regs.rflags & !alu::CF) | cf;
        Ok(())
    }

    /// STOS without REP: [ES:rDI] = AL/AX/EAX/RAX, then rDI steps by the size.
    fn stos(&mut self, instr: &Instruction) -> Result<(), EmulError> {
        let size = string_size(instr)?;
        let (Some(di), Operand::Reg(src)) = (string_index(instr.op_kind(0)), operand(instr, 1)?)
        else {
            return Err(unsupported(instr));
        };
        let gpa = self.mmio(instr, self.linear(instr, 0)?, size, true)?;
        self.bus.write(gpa, size, src.read(self.regs));
        self.step(di, size);
        Ok(())
    }

    /// MOVS without REP: [ES:rDI] = [seg:rSI]; one side is the device, the other may be RAM.
    fn movs(&mut self, instr: &Instruction) -> Result<(), EmulError> {
        let size = string_size(instr)?;
        let (Some(di), Some(si)) = (
            string_index(instr.op_kind(0)),
            string_index(instr.op_kind(1)),
        ) else {
            return Err(unsupported(instr));
        };
        let src = self.place(instr, self.linear(instr, 1)?, size, false)?;
        let dst = self.place(instr, self.linear(instr, 0)?, size, true)?;
        match (src, dst) {
            (Place::Ram(translated), Place::Ram(_)) => {
                return Err(EmulError::AddressMismatch {
                    gpa: self.gpa,
                    translated,
                });
            }
            // Prove the RAM destination exists before the device sees the read.
            (_, Place::Ram(to)) => {
                self.ram_read(to, size)?;
            }
            _ => {}
        }
        let value = match src {
            Place::Bus(from) => self.bus_read(from, size),
            Place::Ram(from) => self.ram_read(from, size)?,
        };
        match dst {
            Place::Bus(to) => self.bus.write(to, size, value),
            Place::Ram(to) => self.ram_write(to, size, value)?,
        }
        self.step(si, size);
        self.step(di, size);
        Ok(())
    }

    /// The linear address of memory operand `index`, from the decoded base, index, scale,
    /// displacement (RIP-relative already resolved by the decoder) and segment base.
    fn linear(&self, instr: &Instruction, index: u32) -> Result<u64, EmulError> {
        let la = instr
            .virtual_address(index, 0, |r, _, _| self.value_of(r))
            .ok_or_else(|| unsupported(instr))?;
        Ok(self.wrap(la))
    }

    /// A register's value or a segment register's base, for address computation.
    fn value_of(&self, r: Register) -> Option<u64> {
        let flat = self.bits == 64;
        match r {
            Register::FS => Some(self.segs.fs_base),
            Register::GS => Some(self.segs.gs_base),
            Register::ES | Register::CS | Register::SS | Register::DS if flat => Some(0),
            Register::ES => Some(self.segs.es_base),
            Register::CS => Some(self.ctrl.cs_base),
            Register::SS => Some(self.segs.ss_base),
            Register::DS => Some(self.segs.ds_base),
            r => Gpr::of(r).map(|g| g.read(self.regs)),
        }
    }

    /// Linear addresses outside 64-bit mode are 32 bits wide.
    fn wrap(&self, linear: u64) -> u64 {
        if self.bits == 64 {
            linear
        } else {
            linear & 0xffff_ffff
        }
    }

    /// Translates memory operand `index`, which must be on the faulting page.
    fn mmio_operand(
        &mut self,
        instr: &Instruction,
        index: u32,
        size: u8,
        write: bool,
    ) -> Result<u64, EmulError> {
        let linear = self.linear(instr, index)?;
        self.mmio(instr, linear, size, write)
    }

    /// Translates `linear`, which must be on the faulting page.
    fn mmio(
        &mut self,
        instr: &Instruction,
        linear: u64,
        size: u8,
        write: bool,
    ) -> Result<u64, EmulError> {
        match self.place(instr, linear, size, write)? {
            Place::Bus(gpa) => Ok(gpa),
            Place::Ram(translated) => Err(EmulError::AddressMismatch {
                gpa: self.gpa,
                translated,
            }),
        }
    }

    /// Translates a `size`-byte access at `linear`; one that crosses its page is unsupported.
    fn place(
        &mut self,
        instr: &Instruction,
        linear: u64,
        size: u8,
        write: bool,
    ) -> Result<Place, EmulError> {
        if page_remaining(linear) < usize::from(size) {
            return Err(unsupported(instr));
        }
        let access = Access {
            write,
            user: self.ctrl.cpl == 3,
            fetch: false,
        };
        let gpa = self.tlb.translate(self.ctrl, &*self.mem, linear, access)?;
        let frame = !(PAGE_SIZE - 1);
        Ok(if gpa & frame == self.gpa & frame {
            Place::Bus(gpa)
        } else {
            Place::Ram(gpa)
        })
    }

    fn bus_read(&mut self, gpa: u64, size: u8) -> u64 {
        self.bus.read(gpa, size) & mask(size)
    }

    fn ram_read(&self, gpa: u64, size: u8) -> Result<u64, EmulError> {
        let mut b = [0; 8];
        let buf = b
            .get_mut(..usize::from(size))
            .ok_or(EmulError::InvalidInstruction)?;
        self.mem.read(gpa, buf)?;
        Ok(u64::from_le_bytes(b))
    }

    fn ram_write(&mut self, gpa: u64, size: u8, value: u64) -> Result<(), EmulError> {
        let b = value.to_le_bytes();
        let data = b
            .get(..usize::from(size))
            .ok_or(EmulError::InvalidInstruction)?;
        self.mem.write(gpa, data)?;
        Ok(())
    }

    fn set_status_flags(&mut self, flags: u64) {
        self.regs.rflags = (self.regs.rflags & !alu::STATUS) | flags;
    }

    /// Moves a string index register by `size` bytes, backwards when RFLAGS.DF is set.
    fn step(&mut self, index: Gpr, size: u8) {
        let delta = match self.regs.rflags & alu::DF {
            0 => u64::from(size),
            _ => u64::from(size).wrapping_neg(),
        };
        index.write(self.regs, index.read(self.regs).wrapping_add(delta));
    }
}

/// Operand `i` as a GPR, the memory operand or an immediate; anything else is unsupported.
fn operand(instr: &Instruction, i: u32) -> Result<Operand, EmulError> {
    if i >= instr.op_count() {
        return Err(unsupported(instr));
    }
    let op = match instr.op_kind(i) {
        OpKind::Register => Gpr::of(instr.op_register(i)).map(Operand::Reg),
        OpKind::Memory => Some(Operand::Mem),
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => instr.try_immediate(i).ok().map(Operand::Imm),
        _ => None,
    };
    op.ok_or_else(|| unsupported(instr))
}

/// The width of the memory access in bytes, for the integer sizes the handlers support.
fn access_size(instr: &Instruction) -> Result<u8, EmulError> {
    match instr.memory_size() {
        MemorySize::UInt8 | MemorySize::Int8 => Ok(1),
        MemorySize::UInt16 | MemorySize::Int16 => Ok(2),
        MemorySize::UInt32 | MemorySize::Int32 => Ok(4),
        MemorySize::UInt64 | MemorySize::Int64 => Ok(8),
        _ => Err(unsupported(instr)),
    }
}

/// The element size of a string instruction, which must not repeat.
fn string_size(instr: &Instruction) -> Result<u8, EmulError> {
    if instr.has_rep_prefix() || instr.has_repne_prefix() {
        return Err(unsupported(instr));
    }
    access_size(instr)
}

/// The index register (rSI or rDI, at the address size) of a string memory operand.
fn string_index(kind: OpKind) -> Option<Gpr> {
    let (index, width) = match kind {
        OpKind::MemorySegSI => (reg::RSI, 2),
        OpKind::MemorySegESI => (reg::RSI, 4),
        OpKind::MemorySegRSI => (reg::RSI, 8),
        OpKind::MemoryESDI => (reg::RDI, 2),
        OpKind::MemoryESEDI => (reg::RDI, 4),
        OpKind::MemoryESRDI => (reg::RDI, 8),
        _ => return None,
    };
    Some(Gpr {
        index,
        width,
        high: false,
    })
}

fn unsupported(instr: &Instruction) -> EmulError {
    EmulError::Unsupported {
        mnemonic: instr.mnemonic(),
    }
}

#[cfg(test)]
mod tests;
