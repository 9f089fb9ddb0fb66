//! A reader for the ELF64 file header and program headers (System V gABI, "ELF Header" and
//! "Program Header"), enough to flatten a statically linked x86-64 executable and to tell a
//! static binary from a dynamic one. Not a section, symbol or relocation reader.

use crate::error::{bail, Result};

/// `p_type` of a loadable segment.
pub const PT_LOAD: u32 = 1;
/// `p_type` of the segment naming the dynamic loader.
pub const PT_INTERP: u32 = 3;

const EM_X86_64: u16 = 62;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A parsed little-endian x86-64 ELF64 file.
#[derive(Debug)]
pub struct Elf64<'a> {
    data: &'a [u8],
    pub entry: u64,
    pub program_headers: Vec<ProgramHeader>,
}

impl<'a> Elf64<'a> {
    /// Checks the identification and reads every program header, bounds-checked.
    pub fn parse(data: &'a [u8]) -> Result<Self> {
        if data.len() < EHDR_SIZE || data[..4] != *b"\x7fELF" {
            bail!("not an ELF file");
        }
        if data[4] != ELFCLASS64 || data[5] != ELFDATA2LSB {
            bail!("not a little-endian ELF64 file");
        }
        if u16_at(data, 0x12)? != EM_X86_64 {
            bail!("not an x86-64 ELF file");
        }
        let entry = u64_at(data, 0x18)?;
        let phoff = u64_at(data, 0x20)?;
        let phentsize = usize::from(u16_at(data, 0x36)?);
        let phnum = usize::from(u16_at(data, 0x38)?);
        if phnum > 0 && phentsize < PHDR_SIZE {
            bail!("program header entry size {phentsize} is below {PHDR_SIZE}");
        }
        let program_headers = (0..phnum)
            .map(|i| {
                let at = usize::try_from(phoff)
                    .ok()
                    .and_then(|off| off.checked_add(i.checked_mul(phentsize)?))
                    .ok_or_else(|| crate::error::Error::new("program header offset overflows"))?;
                read_phdr(data, at)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Elf64 {
            data,
            entry,
            program_headers,
        })
    }

    /// The bytes a segment carries in the file.
    pub fn file_bytes(&self, ph: &ProgramHeader) -> Result<&'a [u8]> {
        let start = usize::try_from(ph.offset).ok();
        let len = usize::try_from(ph.filesz).ok();
        match start
            .zip(len)
            .and_then(|(s, l)| self.data.get(s..s.checked_add(l)?))
        {
            Some(bytes) => Ok(bytes),
            None => bail!(
                "segment at file offset {:#x} (size {:#x}) runs past the end of the file",
                ph.offset,
                ph.filesz
            ),
        }
    }

    /// True if the file names a dynamic loader, i.e. cannot run without shared libraries.
    pub fn is_dynamic(&self) -> bool {
        self.program_headers.iter().any(|ph| ph.p_type == PT_INTERP)
    }
}

fn read_phdr(data: &[u8], at: usize) -> Result<ProgramHeader> {
    Ok(ProgramHeader {
        p_type: u32_at(data, at.saturating_add(0x00))?,
        offset: u64_at(data, at.saturating_add(0x08))?,
        paddr: u64_at(data, at.saturating_add(0x18))?,
        filesz: u64_at(data, at.saturating_add(0x20))?,
        memsz: u64_at(data, at.saturating_add(0x28))?,
    })
}

fn bytes_at<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N]> {
    match at.checked_add(N).and_then(|end| data.get(at..end)) {
        Some(b) => {
            let mut out = [0; N];
            out.copy_from_slice(b);
            Ok(out)
        }
        None => bail!("truncated ELF file (field at {at:#x})"),
    }
}

fn u16_at(data: &[u8], at: usize) -> Result<u16> {
    bytes_at(data, at).map(u16::from_le_bytes)
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    bytes_at(data, at).map(u32::from_le_bytes)
}

fn u64_at(data: &[u8], at: usize) -> Result<u64> {
    bytes_at(data, at).map(u64::from_le_bytes)
}

/// Builds small ELF64 executables for the tests of this crate.
#[cfg(test)]
pub mod build {
    use super::*;

    /// One segment of a test executable: its type, physical address, contents and memory size.
    pub struct Segment<'a> {
        pub p_type: u32,
        pub paddr: u64,
        pub data: &'a [u8],
        pub memsz: u64,
    }

    /// Lays out an ELF header, the program headers, then each segment's bytes in order.
    pub fn executable(entry: u64, segments: &[Segment]) -> Vec<u8> {
        let mut out = vec![0u8; EHDR_SIZE + PHDR_SIZE * segments.len()];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = ELFCLASS64;
        out[5] = ELFDATA2LSB;
        out[6] = 1;
        out[0x10..0x12].copy_from_slice(&2u16.to_le_bytes());
        out[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        out[0x18..0x20].copy_from_slice(&entry.to_le_bytes());
        out[0x20..0x28].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
        out[0x36..0x38].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        out[0x38..0x3a].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, seg) in segments.iter().enumerate() {
            let offset = out.len() as u64;
            let ph = EHDR_SIZE + i * PHDR_SIZE;
            out[ph..ph + 4].copy_from_slice(&seg.p_type.to_le_bytes());
            out[ph + 0x08..ph + 0x10].copy_from_slice(&offset.to_le_bytes());
            out[ph + 0x10..ph + 0x18].copy_from_slice(&seg.paddr.to_le_bytes());
            out[ph + 0x18..ph + 0x20].copy_from_slice(&seg.paddr.to_le_bytes());
            out[ph + 0x20..ph + 0x28].copy_from_slice(&(seg.data.len() as u64).to_le_bytes());
            out[ph + 0x28..ph + 0x30].copy_from_slice(&seg.memsz.to_le_bytes());
            out.extend_from_slice(seg.data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::{executable, Segment};
    use super::*;

    fn load(paddr: u64, data: &[u8], memsz: u64) -> Segment<'_> {
        Segment {
            p_type: PT_LOAD,
            paddr,
            data,
            memsz,
        }
    }

    #[test]
    fn reads_entry_and_program_headers() {
        let file = executable(0x100200, &[load(0x100000, b"abcd", 0x10)]);
        let elf = Elf64::parse(&file).unwrap();
        assert_eq!(elf.entry, 0x100200);
        assert_eq!(elf.program_headers.len(), 1);
        let ph = elf.program_headers[0];
        assert_eq!(
            (ph.p_type, ph.paddr, ph.filesz, ph.memsz),
            (PT_LOAD, 0x100000, 4, 0x10)
        );
        assert_eq!(elf.file_bytes(&ph).unwrap(), b"abcd");
        assert!(!elf.is_dynamic());
    }

    #[test]
    fn an_interpreter_segment_makes_it_dynamic() {
        let interp = Segment {
            p_type: PT_INTERP,
            paddr: 0,
            data: b"/lib/ld.so\0",
            memsz: 11,
        };
        let file = executable(0, &[interp]);
        assert!(Elf64::parse(&file).unwrap().is_dynamic());
    }

    #[test]
    fn rejects_foreign_and_truncated_files() {
        assert!(Elf64::parse(b"MZ\x90\0").is_err());
        let file = executable(0, &[load(0x100000, b"abcd", 4)]);
        let mut elf32 = file.clone();
        elf32[4] = 1;
        assert!(Elf64::parse(&elf32).is_err());
        let mut arm = file.clone();
        arm[0x12] = 183;
        assert!(Elf64::parse(&arm).is_err());
        assert!(Elf64::parse(&file[..EHDR_SIZE + 10]).is_err());
    }

    #[test]
    fn segment_past_end_of_file_is_an_error() {
        let file = executable(0, &[load(0x100000, b"abcd", 4)]);
        let elf = Elf64::parse(&file[..file.len() - 1]).unwrap();
        assert!(elf.file_bytes(&elf.program_headers[0]).is_err());
    }

    #[test]
    fn huge_program_header_offset_is_an_error() {
        let mut file = executable(0, &[load(0x100000, b"abcd", 4)]);
        file[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Elf64::parse(&file).is_err());
    }
}
