//! Guest-physical memory as the loaders, the instruction emulator and the devices see it: the
//! `GuestMemory` trait (defined in `devices::mem`, so that device models can walk virtqueues,
//! and re-exported here), and `GuestRam`, the RAM of one VM as a contiguous host buffer mapped
//! at guest-physical address 0.
//!
//! It is not the nested page tables (crate `ept`) and not the host frame allocator.

pub use devices::mem::{GuestMemory, OutOfRam};

/// One VM's RAM: `len` bytes at guest-physical address 0, backed by one host buffer.
pub struct GuestRam<'a> {
    mem: &'a mut [u8],
}

impl<'a> GuestRam<'a> {
    pub fn new(mem: &'a mut [u8]) -> Self {
        Self { mem }
    }

    pub fn size(&self) -> u64 {
        self.mem.len() as u64
    }

    #[inline]
    fn range(&self, gpa: u64, len: usize) -> Result<core::ops::Range<usize>, OutOfRam> {
        let start = usize::try_from(gpa).map_err(|_| OutOfRam { gpa })?;
        match start.checked_add(len) {
            Some(end) if end <= self.mem.len() => Ok(start..end),
            _ => Err(OutOfRam { gpa }),
        }
    }

    /// The `N` bytes at `gpa`.
    #[inline]
    fn array<const N: usize>(&self, gpa: u64) -> Result<[u8; N], OutOfRam> {
        let r = self.range(gpa, N)?;
        self.mem[r].try_into().map_err(|_| OutOfRam { gpa })
    }
}

impl GuestMemory for GuestRam<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        let r = self.range(gpa, buf.len())?;
        buf.copy_from_slice(&self.mem[r]);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam> {
        let r = self.range(gpa, data.len())?;
        self.mem[r].copy_from_slice(data);
        Ok(())
    }

    // Page walks read entries this way: one load each, without a call to copy bytes.
    #[inline]
    fn read_u64(&self, gpa: u64) -> Result<u64, OutOfRam> {
        self.array(gpa).map(u64::from_le_bytes)
    }

    #[inline]
    fn read_u32(&self, gpa: u64) -> Result<u32, OutOfRam> {
        self.array(gpa).map(u32::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written_and_rejects_the_edge() {
        let mut buf = [0u8; 64];
        let mut ram = GuestRam::new(&mut buf);
        ram.write_u64(8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(ram.read_u64(8).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(ram.read_u32(12).unwrap(), 0x1122_3344);
        assert_eq!(ram.read_u64(57), Err(OutOfRam { gpa: 57 }));
        assert_eq!(ram.read_u32(61), Err(OutOfRam { gpa: 61 }));
        assert_eq!(ram.write(60, &[0; 8]), Err(OutOfRam { gpa: 60 }));
        assert_eq!(ram.read_u64(u64::MAX), Err(OutOfRam { gpa: u64::MAX }));
    }
}
