//! Fetching the guest instruction at CS:RIP through the guest's page tables and decoding it
//! with iced-x86 in the CPU's current mode, plus the instruction-length query for exits that
//! report no next RIP (a byte-pattern fast path for the common exiting instructions, the full
//! decoder otherwise). The `_cached` forms translate RIP's page through a `Tlb`; the bytes are
//! read from guest memory every time, so code the guest rewrote is seen at once.
//!
//! It does not execute anything: `mmio` does that.

use super::tlb::Tlb;
use super::walk::{page_remaining, read_linear, Access, WalkError};
use super::EmulError;
use crate::memory::GuestMemory;
use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};
use vcpu::{ControlState, Regs};

/// The architectural maximum instruction length (SDM Vol. 2A §2.3.11).
pub const MAX_INSN_LEN: usize = 15;

const CR0_PE: u64 = 1 << 0;
const EFER_LMA: u64 = 1 << 10;

/// The code size of the current mode: 64 in 64-bit mode (EFER.LMA and CS.L), 32 when CS.D is
/// set in protected or compatibility mode, 16 otherwise (real mode is always 16-bit).
pub fn bitness(ctrl: &ControlState) -> u32 {
    if ctrl.cr0 & CR0_PE == 0 {
        16
    } else if ctrl.efer & EFER_LMA != 0 && ctrl.cs_long {
        64
    } else if ctrl.cs_db {
        32
    } else {
        16
    }
}

/// The instruction pointer truncated to the current code size.
pub fn ip_mask(bitness: u32) -> u64 {
    match bitness {
        64 => u64::MAX,
        32 => 0xffff_ffff,
        _ => 0xffff,
    }
}

/// The linear address of CS:RIP. CS.base is ignored in 64-bit mode (SDM Vol. 1 §3.4.2.1), and
/// outside it linear addresses wrap at 4 GiB.
pub fn code_linear(regs: &Regs, ctrl: &ControlState) -> u64 {
    match bitness(ctrl) {
        64 => regs.rip,
        b => ctrl.cs_base.wrapping_add(regs.rip & ip_mask(b)) & 0xffff_ffff,
    }
}

/// Up to 15 instruction bytes; fewer when the second page does not translate.
struct Fetched {
    bytes: [u8; MAX_INSN_LEN],
    len: usize,
    /// Why the bytes stop short of 15, if they do.
    tail_fault: Option<WalkError>,
}

impl Fetched {
    fn bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

/// The guest-physical address of the code at `linear`.
fn code_address(
    tlb: &mut Tlb,
    linear: u64,
    ctrl: &ControlState,
    mem: &impl GuestMemory,
) -> Result<u64, EmulError> {
    Ok(tlb.translate(ctrl, mem, linear, Access::fetch(ctrl.cpl))?)
}

/// The bytes from `linear`, at guest-physical `gpa`, to the end of its page: at most 15.
fn fetch_head(linear: u64, gpa: u64, mem: &impl GuestMemory) -> Result<Fetched, EmulError> {
    let mut bytes = [0; MAX_INSN_LEN];
    let len = page_remaining(linear).min(MAX_INSN_LEN);
    let head = bytes.get_mut(..len).unwrap_or(&mut []);
    mem.read(gpa, head)
        .map_err(|e| WalkError::OutOfRam(e.gpa))?;
    Ok(Fetched {
        bytes,
        len,
        tail_fault: None,
    })
}

/// Completes `fetched`, read from `linear`, to 15 bytes from the next page, or notes why it
/// cannot.
fn fetch_tail(fetched: &mut Fetched, linear: u64, ctrl: &ControlState, mem: &impl GuestMemory) {
    let first = fetched.len;
    let Some(tail) = fetched.bytes.get_mut(first..).filter(|t| !t.is_empty()) else {
        return;
    };
    let next = linear.wrapping_add(first as u64);
    match read_linear(ctrl, mem, next, Access::fetch(ctrl.cpl), tail) {
        Ok(()) => fetched.len = MAX_INSN_LEN,
        Err(fault) => fetched.tail_fault = Some(fault),
    }
}

/// Fetches and decodes the instruction at CS:RIP in the current mode. An instruction cut short
/// by a fault on its second page returns that fault; an undecodable one `InvalidInstruction`.
pub fn fetch(
    regs: &Regs,
    ctrl: &ControlState,
    mem: &impl GuestMemory,
) -> Result<Instruction, EmulError> {
    fetch_cached(&mut Tlb::new(), regs, ctrl, mem)
}

/// `fetch`, translating RIP's page through `tlb`.
pub fn fetch_cached(
    tlb: &mut Tlb,
    regs: &Regs,
    ctrl: &ControlState,
    mem: &impl GuestMemory,
) -> Result<Instruction, EmulError> {
    let linear = code_linear(regs, ctrl);
    let gpa = code_address(tlb, linear, ctrl, mem)?;
    let mut fetched = fetch_head(linear, gpa, mem)?;
    fetch_tail(&mut fetched, linear, ctrl, mem);
    decode(&fetched, regs, ctrl)
}

fn decode(fetched: &Fetched, regs: &Regs, ctrl: &ControlState) -> Result<Instruction, EmulError> {
    let bits = bitness(ctrl);
    let mut decoder = Decoder::try_with_ip(
        bits,
        fetched.bytes(),
        regs.rip & ip_mask(bits),
        DecoderOptions::NONE,
    )
    .map_err(|_| EmulError::InvalidInstruction)?;
    let instr = decoder.decode();
    if !instr.is_invalid() {
        return Ok(instr);
    }
    match (decoder.last_error(), fetched.tail_fault) {
        (DecoderError::NoMoreBytes, Some(fault)) => Err(fault.into()),
        _ => Err(EmulError::InvalidInstruction),
    }
}

/// The length of the instruction at CS:RIP, for exits that carry no next RIP.
pub fn instruction_length(
    regs: &Regs,
    ctrl: &ControlState,
    mem: &impl GuestMemory,
) -> Result<u8, EmulError> {
    instruction_length_cached(&mut Tlb::new(), regs, ctrl, mem)
}

/// `instruction_length`, translating RIP's page through `tlb`. The common exiting instructions
/// (at most 3 bytes) are recognised in the 8 bytes at RIP when its page has that many; only
/// the others are read in full, from the next page too.
pub fn instruction_length_cached(
    tlb: &mut Tlb,
    regs: &Regs,
    ctrl: &ControlState,
    mem: &impl GuestMemory,
) -> Result<u8, EmulError> {
    let linear = code_linear(regs, ctrl);
    let gpa = code_address(tlb, linear, ctrl, mem)?;
    if page_remaining(linear) >= 8 {
        let first = mem.read_u64(gpa).map(u64::to_le_bytes);
        if let Some(len) = first.ok().and_then(|b| fast_length(&b)) {
            return Ok(len);
        }
    }
    let mut fetched = fetch_head(linear, gpa, mem)?;
    if let Some(len) = fast_length(fetched.bytes()) {
        return Ok(len);
    }
    fetch_tail(&mut fetched, linear, ctrl, mem);
    match fast_length(fetched.bytes()) {
        Some(len) => Ok(len),
        None => decode(&fetched, regs, ctrl).map(|i| i.len() as u8),
    }
}

/// The length of the common intercepted instructions in their prefix-free encodings, whose
/// length does not depend on the mode: HLT; INVD, WBINVD, WRMSR, RDTSC, RDMSR, CPUID; and the
/// 0F 01 group: VMCALL, MONITOR, MWAIT, XSETBV, VMMCALL, RDTSCP.
fn fast_length(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [0xf4, ..] => Some(1),
        [0x0f, 0x08 | 0x09 | 0x30 | 0x31 | 0x32 | 0xa2, ..] => Some(2),
        [0x0f, 0x01, 0xc1 | 0xc8 | 0xc9 | 0xd1 | 0xd9 | 0xf9, ..] => Some(3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::Mnemonic;

    #[test]
    fn fast_path_agrees_with_the_decoder() {
        let cases: &[&[u8]] = &[
            &[0xf4],
            &[0x0f, 0x08],
            &[0x0f, 0x09],
            &[0x0f, 0x30],
            &[0x0f, 0x31],
            &[0x0f, 0x32],
            &[0x0f, 0xa2],
            &[0x0f, 0x01, 0xc1],
            &[0x0f, 0x01, 0xc8],
            &[0x0f, 0x01, 0xc9],
            &[0x0f, 0x01, 0xd1],
            &[0x0f, 0x01, 0xd9],
            &[0x0f, 0x01, 0xf9],
        ];
        for bytes in cases {
            for bits in [16, 32, 64] {
                let instr = Decoder::new(bits, bytes, DecoderOptions::NONE).decode();
                assert_ne!(instr.mnemonic(), Mnemonic::INVALID, "{bytes:02x?}");
                assert_eq!(fast_length(bytes), Some(instr.len() as u8), "{bytes:02x?}");
            }
        }
        assert_eq!(fast_length(&[0x2e, 0x0f, 0xa2]), None);
        assert_eq!(fast_length(&[0x0f, 0x01]), None);
        assert_eq!(fast_length(&[]), None);
    }

    #[test]
    fn cached_lengths_follow_rewritten_code_and_remapped_pages() {
        use crate::emulate::testvm::{TestVm, P};
        let mut vm = TestVm::new(4);
        let ctrl = vm.long_mode();
        let la = 0x40_0000;
        vm.map(la, 0x20_0000, 1, P);
        vm.map(la + 0x1000, 0x30_0000, 1, P);
        vm.poke(0x20_0000, &[0x0f, 0xa2]);
        vm.poke(0x30_0000, &[0xa2]);
        let mut regs = Regs {
            rip: la,
            ..Regs::default()
        };
        let mut tlb = Tlb::new();
        let mut length = |vm: &mut TestVm, regs: &Regs| {
            instruction_length_cached(&mut tlb, regs, &ctrl, &vm.ram())
        };
        assert_eq!(length(&mut vm, &regs), Ok(2), "CPUID");
        vm.poke(0x20_0000, &[0x2e, 0x0f, 0xa2]);
        assert_eq!(length(&mut vm, &regs), Ok(3), "rewritten with a prefix");
        vm.map(la, 0x30_0000, 1, P);
        // The page now starts A2: MOV moffs8, AL, with its 8-byte address.
        assert_eq!(length(&mut vm, &regs), Ok(9), "remapped");
        // CPUID across the page boundary: its second byte comes from the next page.
        vm.map(la, 0x20_0000, 1, P);
        vm.poke(0x20_0fff, &[0x0f]);
        regs.rip = la + 0xfff;
        assert_eq!(length(&mut vm, &regs), Ok(2), "split CPUID");
        assert_eq!(
            length(&mut vm, &regs),
            instruction_length(&regs, &ctrl, &vm.ram()),
            "the uncached walk agrees"
        );
    }

    #[test]
    fn bitness_follows_the_mode() {
        let mut c = ControlState {
            cs_db: true,
            ..Default::default()
        };
        assert_eq!(bitness(&c), 16, "real mode ignores CS.D");
        c.cr0 = CR0_PE;
        assert_eq!(bitness(&c), 32);
        c.cs_long = true;
        assert_eq!(bitness(&c), 32, "CS.L without EFER.LMA");
        c.efer = EFER_LMA;
        assert_eq!(bitness(&c), 64);
        c.cs_long = false;
        c.cs_db = false;
        assert_eq!(bitness(&c), 16);
    }
}
