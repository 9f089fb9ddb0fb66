//! Guest-physical memory as devices see it: a trait for reading and writing by guest-physical
//! address. Virtqueues are walked through it, so device models stay host-testable over a fake.
//!
//! It is not the RAM itself (`hv_core::memory::GuestRam` implements the trait) and not the
//! nested page tables.

/// A guest-physical access fell outside guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRam {
    pub gpa: u64,
}

/// Byte-level access to guest-physical memory.
pub trait GuestMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam>;
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam>;

    fn read_u64(&self, gpa: u64) -> Result<u64, OutOfRam> {
        let mut b = [0; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write_u64(&mut self, gpa: u64, value: u64) -> Result<(), OutOfRam> {
        self.write(gpa, &value.to_le_bytes())
    }

    fn read_u16(&self, gpa: u64) -> Result<u16, OutOfRam> {
        let mut b = [0; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn read_u32(&self, gpa: u64) -> Result<u32, OutOfRam> {
        let mut b = [0; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}
