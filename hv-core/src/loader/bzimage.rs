//! A bounds-checked parser of the Linux x86 bzImage setup header (Linux boot protocol,
//! Documentation/arch/x86/boot.rst, "The real-mode kernel header").
//!
//! It reads the fields a 64-bit loader needs and splits the file into the setup header and the
//! protected-mode payload. It does not load anything into guest memory (see `loader::linux`)
//! and does not run or understand the real-mode setup code.

use core::fmt;

/// Boot protocol 2.12 introduced `xloadflags` and the 64-bit entry contract we rely on.
pub const MIN_PROTOCOL: u16 = 0x020c;

/// Offsets in the image (boot.rst, "The real-mode kernel header").
pub const SETUP_HEADER_START: usize = 0x1f1;
const SETUP_SECTS: usize = 0x1f1;
const SYSSIZE: usize = 0x1f4;
const JUMP: usize = 0x200;
const HEADER_MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const INITRD_ADDR_MAX: usize = 0x22c;
const KERNEL_ALIGNMENT: usize = 0x230;
const RELOCATABLE_KERNEL: usize = 0x234;
const XLOADFLAGS: usize = 0x236;
const CMDLINE_SIZE: usize = 0x238;
const PREF_ADDRESS: usize = 0x258;
const INIT_SIZE: usize = 0x260;
/// The last field read (`init_size`, protocol 2.10+) ends here: a shorter image is corrupt.
const MIN_IMAGE_LEN: usize = INIT_SIZE + 4;
/// In `struct boot_params` the setup header must end before `edd_mbr_sig_buffer` at 0x290.
pub const SETUP_HEADER_MAX_END: usize = 0x290;

/// "HdrS", little-endian.
const MAGIC: u32 = 0x5372_6448;
const SECTOR: usize = 512;

/// `loadflags` bit 0: the protected-mode code is loaded at 0x100000 (a bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags` bit 7: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags` bit 0: the kernel has the legacy 64-bit entry point at load address + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;

/// Why an image was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BzImageError {
    /// The file ends before the setup header does.
    TooShort { len: usize },
    /// No "HdrS" at 0x202: not a Linux boot-protocol image.
    BadMagic,
    /// Boot protocol older than 2.12.
    ProtocolTooOld { version: u16 },
    /// `loadflags.LOADED_HIGH` is clear: a zImage, not a bzImage.
    NotLoadedHigh,
    /// `xloadflags.XLF_KERNEL_64` is clear: no 64-bit entry point.
    Not64BitCapable,
    /// The setup sectors (`setup_sects`) extend past the end of the file.
    SetupBeyondFile { setup_len: usize, file_len: usize },
    /// `syssize` claims more protected-mode code than the file holds.
    PayloadBeyondFile { claimed: u64, present: usize },
    /// The file holds no protected-mode code.
    EmptyPayload,
}

impl fmt::Display for BzImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => write!(
                f,
                "kernel image too short ({len} bytes, setup header needs {MIN_IMAGE_LEN})"
            ),
            Self::BadMagic => write!(f, "kernel image has no \"HdrS\" magic at 0x202"),
            Self::ProtocolTooOld { version } => write!(
                f,
                "kernel boot protocol {}.{} too old (need 2.12 or later)",
                version >> 8,
                version & 0xff
            ),
            Self::NotLoadedHigh => write!(f, "kernel image is not a bzImage (LOADED_HIGH clear)"),
            Self::Not64BitCapable => {
                write!(f, "kernel has no 64-bit entry point (XLF_KERNEL_64 clear)")
            }
            Self::SetupBeyondFile {
                setup_len,
                file_len,
            } => write!(
                f,
                "kernel setup area ({setup_len} bytes) extends past the file ({file_len} bytes)"
            ),
            Self::PayloadBeyondFile { claimed, present } => write!(
                f,
                "kernel payload claims {claimed} bytes (syssize) but the file holds {present}"
            ),
            Self::EmptyPayload => write!(f, "kernel image holds no protected-mode code"),
        }
    }
}

/// The setup-header fields a 64-bit loader uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Setup sectors after the boot sector (a stored 0 means 4).
    pub setup_sects: u8,
    /// Protected-mode code size in 16-byte paragraphs.
    pub syssize: u32,
    /// Boot protocol version, e.g. 0x020f for 2.15.
    pub version: u16,
    pub loadflags: u8,
    pub code32_start: u32,
    /// Highest address the initrd may occupy (inclusive).
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable_kernel: bool,
    pub xloadflags: u16,
    /// Maximum command line length, excluding the terminating NUL.
    pub cmdline_size: u32,
    /// Preferred load address of the protected-mode kernel.
    pub pref_address: u64,
    /// Memory the kernel needs from its load address while it decompresses and initialises.
    pub init_size: u32,
}

/// A parsed bzImage: the header fields plus the two parts of the file a loader copies.
#[derive(Clone, Copy, Debug)]
pub struct BzImage<'a> {
    pub header: SetupHeader,
    /// Bytes 0x1f1 up to the end of the header (0x202 + the byte at 0x201), to copy into
    /// `boot_params.hdr`.
    pub setup_header_bytes: &'a [u8],
    /// The protected-mode kernel: the file from `(setup_sects + 1) * 512` on.
    pub payload: &'a [u8],
}

impl<'a> BzImage<'a> {
    /// Validates `image` and extracts its setup header. Never panics, whatever the bytes.
    pub fn parse(image: &'a [u8]) -> Result<Self, BzImageError> {
        if image.len() < MIN_IMAGE_LEN {
            return Err(BzImageError::TooShort { len: image.len() });
        }
        let r = Reader(image);
        if r.u32(HEADER_MAGIC) != MAGIC {
            return Err(BzImageError::BadMagic);
        }
        let header = SetupHeader::read(&r);
        header.check()?;
        let setup_len = (usize::from(header.setup_sects) + 1) * SECTOR;
        let payload = image
            .get(setup_len..)
            .ok_or(BzImageError::SetupBeyondFile {
                setup_len,
                file_len: image.len(),
            })?;
        let claimed = u64::from(header.syssize) * 16;
        if claimed > payload.len() as u64 {
            return Err(BzImageError::PayloadBeyondFile {
                claimed,
                present: payload.len(),
            });
        }
        if payload.is_empty() {
            return Err(BzImageError::EmptyPayload);
        }
        // The byte at 0x201 is the offset of the short jump at 0x200: the header ends where the
        // jump lands (boot.rst, "Details of header fields", `jump`).
        let header_end = (JUMP + 2 + usize::from(r.u8(JUMP + 1)))
            .clamp(MIN_IMAGE_LEN, SETUP_HEADER_MAX_END)
            .min(image.len());
        Ok(Self {
            header,
            setup_header_bytes: &image[SETUP_HEADER_START..header_end],
            payload,
        })
    }
}

impl SetupHeader {
    fn read(r: &Reader<'_>) -> Self {
        let setup_sects = match r.u8(SETUP_SECTS) {
            0 => 4,
            n => n,
        };
        Self {
            setup_sects,
            syssize: r.u32(SYSSIZE),
            version: r.u16(VERSION),
            loadflags: r.u8(LOADFLAGS),
            code32_start: r.u32(CODE32_START),
            initrd_addr_max: r.u32(INITRD_ADDR_MAX),
            kernel_alignment: r.u32(KERNEL_ALIGNMENT),
            relocatable_kernel: r.u8(RELOCATABLE_KERNEL) != 0,
            xloadflags: r.u16(XLOADFLAGS),
            cmdline_size: r.u32(CMDLINE_SIZE),
            pref_address: r.u64(PREF_ADDRESS),
            init_size: r.u32(INIT_SIZE),
        }
    }

    fn check(&self) -> Result<(), BzImageError> {
        if self.version < MIN_PROTOCOL {
            return Err(BzImageError::ProtocolTooOld {
                version: self.version,
            });
        }
        if self.loadflags & LOADED_HIGH == 0 {
            return Err(BzImageError::NotLoadedHigh);
        }
        if self.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BzImageError::Not64BitCapable);
        }
        Ok(())
    }
}

/// Little-endian reads from an image already checked to be at least `MIN_IMAGE_LEN` long; every
/// offset passed in is a constant below that, and a short read yields zeroes rather than a panic.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0; N];
        if let Some(src) = self.0.get(at..at + N) {
            out.copy_from_slice(src);
        }
        out
    }

    fn u8(&self, at: usize) -> u8 {
        self.bytes::<1>(at)[0]
    }

    fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.bytes(at))
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes(at))
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes(at))
    }
}

/// Builds synthetic images for the loader's tests.
#[cfg(test)]
pub(crate) mod testimage {
    use alloc::vec;
    use alloc::vec::Vec;

    pub const SETUP_SECTS: u8 = 7; // 0x1000-byte setup area
    pub const SETUP_LEN: usize = (SETUP_SECTS as usize + 1) * 512;

    pub fn put(img: &mut [u8], at: usize, bytes: &[u8]) {
        img[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// A protocol 2.15 bzImage with `payload_len` bytes of protected-mode code (a byte pattern).
    pub fn build(payload_len: usize, pref_address: u64, init_size: u32) -> Vec<u8> {
        let mut img = vec![0u8; SETUP_LEN + payload_len];
        img[0x1f1] = SETUP_SECTS;
        put(&mut img, 0x1f4, &((payload_len / 16) as u32).to_le_bytes());
        put(&mut img, 0x1fe, &0xaa55u16.to_le_bytes());
        put(&mut img, 0x200, &[0xeb, 0x6a]); // jmp to 0x26c: header ends there (2.15)
        put(&mut img, 0x202, b"HdrS");
        put(&mut img, 0x206, &0x020fu16.to_le_bytes());
        img[0x211] = super::LOADED_HIGH;
        put(&mut img, 0x214, &0x10_0000u32.to_le_bytes());
        put(&mut img, 0x22c, &0x7fff_ffffu32.to_le_bytes());
        put(&mut img, 0x230, &0x20_0000u32.to_le_bytes());
        img[0x234] = 1;
        put(&mut img, 0x236, &0x0003u16.to_le_bytes());
        put(&mut img, 0x238, &2048u32.to_le_bytes());
        put(&mut img, 0x258, &pref_address.to_le_bytes());
        put(&mut img, 0x260, &init_size.to_le_bytes());
        for (i, b) in img[SETUP_LEN..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::testimage::{build, put, SETUP_LEN};
    use super::*;

    #[test]
    fn parses_the_fields_of_a_valid_image() {
        let img = build(0x2000, 0x100_0000, 0x40_0000);
        let bz = BzImage::parse(&img).unwrap();
        let h = bz.header;
        assert_eq!(h.setup_sects, 7);
        assert_eq!(h.syssize, 0x200);
        assert_eq!(h.version, 0x020f);
        assert_eq!(h.loadflags, LOADED_HIGH);
        assert_eq!(h.code32_start, 0x10_0000);
        assert_eq!(h.initrd_addr_max, 0x7fff_ffff);
        assert_eq!(h.kernel_alignment, 0x20_0000);
        assert!(h.relocatable_kernel);
        assert_eq!(h.xloadflags, 3);
        assert_eq!(h.cmdline_size, 2048);
        assert_eq!(h.pref_address, 0x100_0000);
        assert_eq!(h.init_size, 0x40_0000);
        assert_eq!(bz.setup_header_bytes.len(), 0x26c - 0x1f1);
        assert_eq!(bz.setup_header_bytes[0], 7);
        assert_eq!(bz.payload.len(), 0x2000);
        assert_eq!(bz.payload[..3], [0, 1, 2]);
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let mut img = build(0x2000, 0x100_0000, 0x40_0000);
        img[0x1f1] = 0;
        let bz = BzImage::parse(&img).unwrap();
        assert_eq!(bz.header.setup_sects, 4);
        assert_eq!(bz.payload.len(), img.len() - 5 * 512);
    }

    #[test]
    fn header_length_is_clamped_to_the_boot_params_slot() {
        let mut img = build(0x2000, 0x100_0000, 0x40_0000);
        img[0x201] = 0xff;
        let bz = BzImage::parse(&img).unwrap();
        assert_eq!(
            bz.setup_header_bytes.len(),
            SETUP_HEADER_MAX_END - SETUP_HEADER_START
        );
    }

    #[test]
    fn rejects_corrupt_images() {
        let good = build(0x2000, 0x100_0000, 0x40_0000);
        let err = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut img = good.clone();
            f(&mut img);
            BzImage::parse(&img).unwrap_err()
        };
        assert_eq!(
            err(&|i| i.truncate(0x200)),
            BzImageError::TooShort { len: 0x200 }
        );
        assert_eq!(err(&|i| i.clear()), BzImageError::TooShort { len: 0 });
        assert_eq!(err(&|i| i[0x202] = b'X'), BzImageError::BadMagic);
        assert_eq!(
            err(&|i| put(i, 0x206, &0x020bu16.to_le_bytes())),
            BzImageError::ProtocolTooOld { version: 0x020b }
        );
        assert_eq!(err(&|i| i[0x211] = 0), BzImageError::NotLoadedHigh);
        assert_eq!(err(&|i| i[0x236] = 2), BzImageError::Not64BitCapable);
        assert_eq!(
            err(&|i| i[0x1f1] = 0xff),
            BzImageError::SetupBeyondFile {
                setup_len: 256 * 512,
                file_len: SETUP_LEN + 0x2000
            }
        );
        assert_eq!(
            err(&|i| i.truncate(SETUP_LEN + 0x1000)),
            BzImageError::PayloadBeyondFile {
                claimed: 0x2000,
                present: 0x1000
            }
        );
        assert_eq!(
            err(&|i| {
                i.truncate(SETUP_LEN);
                put(i, 0x1f4, &0u32.to_le_bytes());
            }),
            BzImageError::EmptyPayload
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let img = build(0x100, 0x100_0000, 0x1000);
        for len in 0..img.len() {
            assert!(BzImage::parse(&img[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = alloc::format!("{}", BzImageError::ProtocolTooOld { version: 0x020b });
        assert_eq!(
            msg,
            "kernel boot protocol 2.11 too old (need 2.12 or later)"
        );
        let msg = alloc::format!("{}", BzImageError::BadMagic);
        assert!(msg.contains("HdrS"));
    }
}
