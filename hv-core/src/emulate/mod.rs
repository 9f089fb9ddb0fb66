//! The instruction emulator: what the core needs when the hardware gives no decode assist.
//! `walk` translates guest linear addresses through the guest's page tables, `decode` fetches
//! and decodes the instruction at CS:RIP (and measures it for exits without a next RIP), `mmio`
//! carries out a faulting device access against an `MmioBus`, and `tlb` lets a vCPU reuse its
//! recent walks after checking that the guest's page tables still give them.
//!
//! It is not a general x86 interpreter: only the memory-operand forms that device drivers use
//! are emulated, and errors say which exception (if any) the core should inject.

mod alu;
mod decode;
mod gpr;
mod mmio;
mod tlb;
pub mod walk;

#[cfg(test)]
mod testvm;

pub use decode::{
    bitness, fetch, fetch_cached, instruction_length, instruction_length_cached, MAX_INSN_LEN,
};
pub use mmio::{emulate_mmio, emulate_mmio_cached, MmioBus, Segments};
pub use tlb::Tlb;
pub use walk::{read_linear, translate, Access, WalkError};

use crate::memory::OutOfRam;
use core::fmt;
use iced_x86::Mnemonic;

/// Why an instruction could not be fetched or emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulError {
    /// The fetch or the data access faults in the guest's page tables: inject #PF with this
    /// error code and CR2 = `linear`.
    PageFault { linear: u64, error_code: u32 },
    /// A non-canonical linear address in long mode: inject #GP(0).
    NonCanonical,
    /// A paging-structure entry, the code or a RAM operand lies outside guest RAM.
    OutOfRam { gpa: u64 },
    /// The bytes at RIP do not decode in the current mode: inject #UD.
    InvalidInstruction,
    /// A valid instruction (or operand form) the emulator does not handle.
    Unsupported { mnemonic: Mnemonic },
    /// The instruction's memory operand translates to `translated`, not to the page of the
    /// faulting address `gpa` (the guest changed its page tables, or the exit was misread).
    AddressMismatch { gpa: u64, translated: u64 },
}

impl fmt::Display for EmulError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PageFault { linear, error_code } => {
                write!(f, "page fault at {linear:#x}, error code {error_code:#x}")
            }
            Self::NonCanonical => f.write_str("non-canonical address"),
            Self::OutOfRam { gpa } => write!(f, "guest-physical {gpa:#x} is outside guest RAM"),
            Self::InvalidInstruction => f.write_str("invalid instruction"),
            Self::Unsupported { mnemonic } => write!(f, "unsupported instruction {mnemonic:?}"),
            Self::AddressMismatch { gpa, translated } => write!(
                f,
                "memory operand translates to {translated:#x}, not the faulting page of {gpa:#x}"
            ),
        }
    }
}

impl From<WalkError> for EmulError {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::PageFault { linear, error_code } => Self::PageFault { linear, error_code },
            WalkError::OutOfRam(gpa) => Self::OutOfRam { gpa },
            WalkError::NonCanonical => Self::NonCanonical,
        }
    }
}

impl From<OutOfRam> for EmulError {
    fn from(e: OutOfRam) -> Self {
        Self::OutOfRam { gpa: e.gpa }
    }
}
