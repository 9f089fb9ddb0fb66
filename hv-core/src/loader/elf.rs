//! An x86 ELF executable (ELF32 or ELF64, little-endian) as the PVH and multiboot loaders see
//! it: the entry point, the loadable segments by physical address, and the ELF notes
//! (System V gABI, "Program Header" and "Note Section"). Headers are read with the `elf` crate;
//! every offset, size and address is checked here, so a corrupt file gives an error.
//!
//! It is not a section, symbol or relocation reader, and it loads nothing but `PT_LOAD`
//! segments at their `p_paddr`.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use elf::abi::{EM_386, EM_X86_64, PT_LOAD, PT_NOTE};
use elf::endian::LittleEndian;
use elf::ElfBytes;

use crate::memory::{GuestMemory, OutOfRam};

/// Most program headers accepted; real kernels have a handful.
const MAX_SEGMENTS: usize = 64;

/// One `PT_LOAD` segment: `data` goes to `paddr`, then zeros up to `paddr + memsz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub paddr: u64,
    pub vaddr: u64,
    pub memsz: u64,
    pub data: &'a [u8],
}

impl Segment<'_> {
    pub fn range(&self) -> Range<u64> {
        // `parse` checks that the end does not overflow; saturate for segments built elsewhere.
        self.paddr..self.paddr.saturating_add(self.memsz)
    }
}

/// A parsed executable; segments sorted by physical address and not overlapping.
#[derive(Debug)]
pub struct ElfImage<'a> {
    pub entry: u64,
    pub segments: Vec<Segment<'a>>,
    /// The contents of each `PT_NOTE` segment with its alignment (4 or 8).
    notes: Vec<(&'a [u8], usize)>,
}

/// Why a file is not a loadable executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    NotElf,
    /// The `elf` crate rejected the file header or the program header table.
    Malformed {
        what: &'static str,
    },
    NotX86 {
        machine: u16,
    },
    TooManySegments {
        count: usize,
    },
    NoLoadableSegment,
    /// A segment's bytes lie beyond the end of the file.
    SegmentBeyondFile {
        index: usize,
    },
    FileSizeAboveMemSize {
        index: usize,
    },
    AddressOverflow {
        index: usize,
    },
    SegmentsOverlap {
        first: u64,
        second: u64,
    },
    /// A note whose sizes run past its segment, or a note segment with a bad alignment.
    MalformedNote {
        offset: usize,
    },
    /// A segment outside `allowed` (guest RAM above the loader's own area).
    SegmentOutsideRam {
        paddr: u64,
        end: u64,
        allowed: (u64, u64),
    },
    OutOfRam(OutOfRam),
}

impl From<OutOfRam> for ElfError {
    fn from(e: OutOfRam) -> Self {
        Self::OutOfRam(e)
    }
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotElf => write!(f, "not an ELF file"),
            Self::Malformed { what } => write!(f, "malformed ELF {what}"),
            Self::NotX86 { machine } => write!(f, "ELF machine {machine} is not x86"),
            Self::TooManySegments { count } => {
                write!(f, "{count} program headers (at most {MAX_SEGMENTS})")
            }
            Self::NoLoadableSegment => write!(f, "no loadable ELF segment"),
            Self::SegmentBeyondFile { index } => {
                write!(f, "ELF segment {index} extends beyond the end of the file")
            }
            Self::FileSizeAboveMemSize { index } => {
                write!(f, "ELF segment {index} has more file bytes than memory")
            }
            Self::AddressOverflow { index } => {
                write!(f, "ELF segment {index} wraps around the address space")
            }
            Self::SegmentsOverlap { first, second } => {
                write!(f, "ELF segments at {first:#x} and {second:#x} overlap")
            }
            Self::MalformedNote { offset } => {
                write!(f, "malformed ELF note at offset {offset:#x} of its segment")
            }
            Self::SegmentOutsideRam {
                paddr,
                end,
                allowed: (low, high),
            } => write!(
                f,
                "ELF segment {paddr:#x}..{end:#x} lies outside guest RAM {low:#x}..{high:#x}"
            ),
            Self::OutOfRam(e) => write!(f, "guest-physical address {:#x} outside guest RAM", e.gpa),
        }
    }
}

impl<'a> ElfImage<'a> {
    /// Reads the headers of `file` and checks every segment against the file and the others.
    pub fn parse(file: &'a [u8]) -> Result<Self, ElfError> {
        if file.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(ElfError::NotElf);
        }
        let elf =
            ElfBytes::<LittleEndian>::minimal_parse(file).map_err(|_| ElfError::Malformed {
                what: "file header",
            })?;
        if !matches!(elf.ehdr.e_machine, EM_386 | EM_X86_64) {
            return Err(ElfError::NotX86 {
                machine: elf.ehdr.e_machine,
            });
        }
        let table = elf.segments().ok_or(ElfError::NoLoadableSegment)?;
        if table.len() > MAX_SEGMENTS {
            return Err(ElfError::TooManySegments { count: table.len() });
        }
        let mut segments = Vec::new();
        let mut notes = Vec::new();
        for (index, ph) in table.iter().enumerate() {
            let data = file_bytes(file, ph.p_offset, ph.p_filesz)
                .ok_or(ElfError::SegmentBeyondFile { index })?;
            match ph.p_type {
                PT_LOAD if ph.p_memsz > 0 => {
                    if ph.p_filesz > ph.p_memsz {
                        return Err(ElfError::FileSizeAboveMemSize { index });
                    }
                    if ph.p_paddr.checked_add(ph.p_memsz).is_none() {
                        return Err(ElfError::AddressOverflow { index });
                    }
                    segments.push(Segment {
                        paddr: ph.p_paddr,
                        vaddr: ph.p_vaddr,
                        memsz: ph.p_memsz,
                        data,
                    });
                }
                PT_NOTE => notes.push((data, usize::try_from(ph.p_align).unwrap_or(0))),
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(ElfError::NoLoadableSegment);
        }
        segments.sort_by_key(|s| s.paddr);
        if let Some(w) = segments.windows(2).find(|w| w[0].range().end > w[1].paddr) {
            return Err(ElfError::SegmentsOverlap {
                first: w[0].paddr,
                second: w[1].paddr,
            });
        }
        Ok(Self {
            entry: elf.ehdr.e_entry,
            segments,
            notes,
        })
    }

    /// The descriptor of the first note named `owner` with type `n_type`; an error if a note
    /// segment is malformed before it is found.
    pub fn note(&self, owner: &[u8], n_type: u32) -> Result<Option<&'a [u8]>, ElfError> {
        for &(data, align) in &self.notes {
            let mut notes = Notes::new(data, align)?;
            while let Some(note) = notes.next_note()? {
                if note.owner == owner && note.n_type == n_type {
                    return Ok(Some(note.desc));
                }
            }
        }
        Ok(None)
    }

    /// The physical range from the first segment's start to the last one's end.
    pub fn extent(&self) -> Range<u64> {
        let start = self.segments.first().map_or(0, |s| s.paddr);
        let end = self.segments.last().map_or(0, |s| s.range().end);
        start..end
    }

    /// Copies every segment to guest memory (see `load_segments`).
    pub fn load(&self, mem: &mut impl GuestMemory, allowed: Range<u64>) -> Result<(), ElfError> {
        load_segments(mem, &self.segments, allowed)
    }
}

/// Copies `segments` to guest memory, zero-filling past their file bytes; each must lie within
/// `allowed`, checked before anything is written.
pub fn load_segments(
    mem: &mut impl GuestMemory,
    segments: &[Segment<'_>],
    allowed: Range<u64>,
) -> Result<(), ElfError> {
    for s in segments {
        let r = s.range();
        if r.start < allowed.start || r.end > allowed.end {
            return Err(ElfError::SegmentOutsideRam {
                paddr: r.start,
                end: r.end,
                allowed: (allowed.start, allowed.end),
            });
        }
    }
    for s in segments {
        mem.write(s.paddr, s.data)?;
        zero(mem, s.paddr + s.data.len() as u64, s.range().end)?;
    }
    Ok(())
}

/// Writes zeros to `start..end`, a page at a time.
pub fn zero(mem: &mut impl GuestMemory, start: u64, end: u64) -> Result<(), OutOfRam> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut at = start;
    while at < end {
        let n = (end - at).min(ZEROS.len() as u64);
        mem.write(at, &ZEROS[..n as usize])?;
        at += n;
    }
    Ok(())
}

/// `file[offset..offset + len]`, if it is all inside the file.
fn file_bytes(file: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let len = usize::try_from(len).ok()?;
    file.get(start..start.checked_add(len)?)
}

/// One note: `namesz`, `descsz`, `type` (32-bit words in both classes), the name and the
/// descriptor, each padded to the segment's alignment (gABI "Note Section").
struct Note<'a> {
    owner: &'a [u8],
    n_type: u32,
    desc: &'a [u8],
}

struct Notes<'a> {
    data: &'a [u8],
    align: usize,
    at: usize,
}

impl<'a> Notes<'a> {
    fn new(data: &'a [u8], align: usize) -> Result<Self, ElfError> {
        // Compilers emit 4-byte notes in ELF64 files too; treat an unset alignment (0, 1) as 4.
        let align = match align {
            0 | 1 | 4 => 4,
            8 => 8,
            _ => return Err(ElfError::MalformedNote { offset: 0 }),
        };
        Ok(Self { data, align, at: 0 })
    }

    fn next_note(&mut self) -> Result<Option<Note<'a>>, ElfError> {
        if self.at >= self.data.len() {
            return Ok(None);
        }
        let offset = self.at;
        let bad = ElfError::MalformedNote { offset };
        let word = |i: usize| -> Option<u32> {
            let b = self.data.get(offset + 4 * i..offset + 4 * i + 4)?;
            Some(u32::from_le_bytes(b.try_into().ok()?))
        };
        let (namesz, descsz, n_type) = match (word(0), word(1), word(2)) {
            (Some(n), Some(d), Some(t)) => (n as usize, d as usize, t),
            _ => return Err(bad),
        };
        let name_at = offset + 12;
        let desc_at = self.padded(name_at, namesz).ok_or(bad)?;
        let next = self.padded(desc_at, descsz).ok_or(bad)?;
        let name = self.data.get(name_at..name_at + namesz).ok_or(bad)?;
        let desc = self.data.get(desc_at..desc_at + descsz).ok_or(bad)?;
        // The padding after the last descriptor may be cut off by the segment's end.
        self.at = next;
        Ok(Some(Note {
            owner: name.strip_suffix(&[0]).unwrap_or(name),
            n_type,
            desc,
        }))
    }

    /// `at + len` rounded up to the alignment, if it does not overflow.
    fn padded(&self, at: usize, len: usize) -> Option<usize> {
        let end = at.checked_add(len)?;
        end.checked_next_multiple_of(self.align)
    }
}

#[cfg(test)]
pub(crate) mod testelf {
    //! Small ELF files built in memory for the loader tests.
    use alloc::vec::Vec;

    pub struct Phdr {
        pub p_type: u32,
        pub offset: u64,
        pub paddr: u64,
        pub filesz: u64,
        pub memsz: u64,
        pub align: u64,
    }

    /// A note with 4-byte padding.
    pub fn note(owner: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(owner.len() as u32 + 1).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&n_type.to_le_bytes());
        n.extend_from_slice(owner);
        n.push(0);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    /// An ELF64 (`class64`) or ELF32 x86 executable with the program headers `phdrs`, followed
    /// by `body` at file offset 0x1000.
    pub fn build(class64: bool, entry: u64, phdrs: &[Phdr], body: &[u8]) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 0x1000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = if class64 { 2 } else { 1 };
        f[5] = 1;
        f[6] = 1;
        let put = |f: &mut Vec<u8>, at: usize, b: &[u8]| f[at..at + b.len()].copy_from_slice(b);
        put(&mut f, 0x10, &2u16.to_le_bytes());
        put(&mut f, 0x14, &1u32.to_le_bytes());
        if class64 {
            put(&mut f, 0x12, &62u16.to_le_bytes());
            put(&mut f, 0x18, &entry.to_le_bytes());
            put(&mut f, 0x20, &64u64.to_le_bytes());
            put(&mut f, 0x34, &64u16.to_le_bytes());
            put(&mut f, 0x36, &56u16.to_le_bytes());
            put(&mut f, 0x38, &(phdrs.len() as u16).to_le_bytes());
            for (i, p) in phdrs.iter().enumerate() {
                let at = 64 + 56 * i;
                put(&mut f, at, &p.p_type.to_le_bytes());
                put(&mut f, at + 8, &p.offset.to_le_bytes());
                put(&mut f, at + 16, &p.paddr.to_le_bytes());
                put(&mut f, at + 24, &p.paddr.to_le_bytes());
                put(&mut f, at + 32, &p.filesz.to_le_bytes());
                put(&mut f, at + 40, &p.memsz.to_le_bytes());
                put(&mut f, at + 48, &p.align.to_le_bytes());
            }
        } else {
            put(&mut f, 0x12, &3u16.to_le_bytes());
            put(&mut f, 0x18, &(entry as u32).to_le_bytes());
            put(&mut f, 0x1C, &52u32.to_le_bytes());
            put(&mut f, 0x28, &52u16.to_le_bytes());
            put(&mut f, 0x2A, &32u16.to_le_bytes());
            put(&mut f, 0x2C, &(phdrs.len() as u16).to_le_bytes());
            for (i, p) in phdrs.iter().enumerate() {
                let at = 52 + 32 * i;
                put(&mut f, at, &p.p_type.to_le_bytes());
                put(&mut f, at + 4, &(p.offset as u32).to_le_bytes());
                put(&mut f, at + 8, &(p.paddr as u32).to_le_bytes());
                put(&mut f, at + 12, &(p.paddr as u32).to_le_bytes());
                put(&mut f, at + 16, &(p.filesz as u32).to_le_bytes());
                put(&mut f, at + 20, &(p.memsz as u32).to_le_bytes());
                put(&mut f, at + 28, &(p.align as u32).to_le_bytes());
            }
        }
        f.extend_from_slice(body);
        f
    }

    pub fn load(offset: u64, paddr: u64, filesz: u64, memsz: u64) -> Phdr {
        Phdr {
            p_type: 1,
            offset,
            paddr,
            filesz,
            memsz,
            align: 0x1000,
        }
    }

    pub fn notes(offset: u64, len: u64) -> Phdr {
        Phdr {
            p_type: 4,
            offset,
            paddr: 0,
            filesz: len,
            memsz: len,
            align: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testelf::{build, load, note, notes};
    use super::*;
    use crate::memory::GuestRam;
    use alloc::vec;

    fn two_segments() -> Vec<u8> {
        let mut body = vec![0xAAu8; 0x100];
        body.extend_from_slice(&[0xBB; 0x80]);
        let n = note(b"Xen", 18, &0x10_0040u32.to_le_bytes());
        let nlen = n.len() as u64;
        body.extend_from_slice(&n);
        build(
            true,
            0x10_0000,
            &[
                load(0x1100, 0x20_0000, 0x80, 0x1000),
                load(0x1000, 0x10_0000, 0x100, 0x100),
                notes(0x1180, nlen),
            ],
            &body,
        )
    }

    #[test]
    fn parses_segments_sorted_and_finds_notes() {
        let f = two_segments();
        let e = ElfImage::parse(&f).unwrap();
        assert_eq!(e.entry, 0x10_0000);
        assert_eq!(e.segments.len(), 2);
        assert_eq!(e.segments[0].range(), 0x10_0000..0x10_0100);
        assert_eq!(e.segments[1].range(), 0x20_0000..0x20_1000);
        assert_eq!(e.extent(), 0x10_0000..0x20_1000);
        assert_eq!(
            e.note(b"Xen", 18).unwrap(),
            Some(&0x10_0040u32.to_le_bytes()[..])
        );
        assert_eq!(e.note(b"Xen", 17).unwrap(), None);
        assert_eq!(e.note(b"GNU", 18).unwrap(), None);
    }

    #[test]
    fn elf32_files_are_read_too() {
        let f = build(false, 0x10_000C, &[load(0x1000, 0x10_0000, 4, 8)], b"abcd");
        let e = ElfImage::parse(&f).unwrap();
        assert_eq!(e.entry, 0x10_000C);
        assert_eq!(e.segments[0].data, b"abcd");
        assert_eq!(e.segments[0].memsz, 8);
    }

    #[test]
    fn load_copies_data_and_zeroes_the_rest() {
        let f = two_segments();
        let e = ElfImage::parse(&f).unwrap();
        let mut buf = vec![0x55u8; 0x30_0000];
        e.load(&mut GuestRam::new(&mut buf), 0x10_0000..0x30_0000)
            .unwrap();
        assert_eq!(buf[0x10_0000], 0xAA);
        assert_eq!(buf[0x10_00FF], 0xAA);
        assert_eq!(buf[0x10_0100], 0x55, "nothing written between segments");
        assert_eq!(buf[0x20_007F], 0xBB);
        assert!(buf[0x20_0080..0x20_1000].iter().all(|&b| b == 0));
        assert_eq!(buf[0x20_1000], 0x55);
    }

    #[test]
    fn segments_outside_the_allowed_range_are_refused() {
        let f = two_segments();
        let e = ElfImage::parse(&f).unwrap();
        let mut buf = vec![0u8; 0x30_0000];
        let r = e.load(&mut GuestRam::new(&mut buf), 0x10_0000..0x20_0800);
        assert_eq!(
            r,
            Err(ElfError::SegmentOutsideRam {
                paddr: 0x20_0000,
                end: 0x20_1000,
                allowed: (0x10_0000, 0x20_0800)
            })
        );
        let r = e.load(&mut GuestRam::new(&mut buf), 0x10_0080..0x30_0000);
        assert!(matches!(r, Err(ElfError::SegmentOutsideRam { .. })));
        assert!(buf.iter().all(|&b| b == 0), "nothing written on error");
    }

    #[test]
    fn hostile_files_give_errors() {
        assert_eq!(ElfImage::parse(b"").unwrap_err(), ElfError::NotElf);
        assert_eq!(ElfImage::parse(b"MZ\x90\0").unwrap_err(), ElfError::NotElf);
        let f = two_segments();
        // Truncated anywhere: never a panic, always an error.
        for len in [4, 20, 63, 64, 100, 0x1000, 0x1100, 0x1150] {
            assert!(ElfImage::parse(&f[..len]).is_err(), "truncated at {len}");
        }
        let mut wrong_machine = f.clone();
        wrong_machine[0x12] = 40;
        assert_eq!(
            ElfImage::parse(&wrong_machine).unwrap_err(),
            ElfError::NotX86 { machine: 40 }
        );
        let beyond = build(
            true,
            0,
            &[load(0x1000, 0x10_0000, 0x2000, 0x2000)],
            &[1; 16],
        );
        assert_eq!(
            ElfImage::parse(&beyond).unwrap_err(),
            ElfError::SegmentBeyondFile { index: 0 }
        );
        let huge_offset = build(true, 0, &[load(u64::MAX, 0x10_0000, 2, 2)], &[1; 16]);
        assert!(ElfImage::parse(&huge_offset).is_err());
        let filesz = build(true, 0, &[load(0x1000, 0x10_0000, 8, 4)], &[1; 16]);
        assert_eq!(
            ElfImage::parse(&filesz).unwrap_err(),
            ElfError::FileSizeAboveMemSize { index: 0 }
        );
        let wraps = build(true, 0, &[load(0x1000, u64::MAX - 8, 4, 16)], &[1; 16]);
        assert_eq!(
            ElfImage::parse(&wraps).unwrap_err(),
            ElfError::AddressOverflow { index: 0 }
        );
        let overlap = build(
            true,
            0,
            &[
                load(0x1000, 0x10_0000, 4, 0x1000),
                load(0x1000, 0x10_0800, 4, 0x10),
            ],
            &[1; 16],
        );
        assert_eq!(
            ElfImage::parse(&overlap).unwrap_err(),
            ElfError::SegmentsOverlap {
                first: 0x10_0000,
                second: 0x10_0800
            }
        );
        let none = build(true, 0, &[notes(0x1000, 0)], &[]);
        assert_eq!(
            ElfImage::parse(&none).unwrap_err(),
            ElfError::NoLoadableSegment
        );
    }

    #[test]
    fn notes_with_bad_sizes_are_errors() {
        let good = note(b"Xen", 18, &[1, 0, 0, 0]);
        for (what, patch_at, value) in [
            ("namesz past the end", 0, 0x1000u32),
            ("descsz past the end", 4, 0x1000),
            ("namesz overflowing", 0, u32::MAX),
            ("descsz overflowing", 4, u32::MAX - 2),
        ] {
            let mut n = good.clone();
            n[patch_at..patch_at + 4].copy_from_slice(&value.to_le_bytes());
            let nlen = n.len() as u64;
            let f = build(
                true,
                0,
                &[load(0x1000, 0x10_0000, 4, 4), notes(0x1000, nlen)],
                &n,
            );
            let e = ElfImage::parse(&f).unwrap();
            assert_eq!(
                e.note(b"Xen", 18),
                Err(ElfError::MalformedNote { offset: 0 }),
                "{what}"
            );
        }
        // A header cut short by the segment's end.
        let f = build(
            true,
            0,
            &[load(0x1000, 0x10_0000, 4, 4), notes(0x1000, 8)],
            &good,
        );
        let e = ElfImage::parse(&f).unwrap();
        assert!(e.note(b"Xen", 18).is_err());
        // An alignment other than 4 or 8.
        let mut bad_align = notes(0x1000, good.len() as u64);
        bad_align.align = 3;
        let f = build(true, 0, &[load(0x1000, 0x10_0000, 4, 4), bad_align], &good);
        assert!(ElfImage::parse(&f).unwrap().note(b"Xen", 18).is_err());
    }
}
