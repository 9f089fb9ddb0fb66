//! A writer for the "newc" (SVR4, no CRC) cpio format that the Linux kernel unpacks as an
//! initramfs (Documentation/driver-api/early-userspace/buffer-format.rst). Entries are
//! written in the order given; the writer does not create parent directories.
//! Not a reader, and not the CRC variant ("070702").

use crate::error::{bail, Result};

const MAGIC: &[u8; 6] = b"070701";
/// Six bytes of magic and thirteen 8-digit hex fields.
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// An archive being written in memory. Every entry is owned by root with mtime 0, so the
/// same inputs give the same bytes.
pub struct Writer {
    out: Vec<u8>,
    next_ino: u32,
}

/// The fields of one entry that vary.
struct Entry<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            out: Vec::new(),
            next_ino: 1,
        }
    }

    /// A directory, e.g. `dir("bin", 0o755)`.
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<()> {
        self.entry(Entry {
            name,
            mode: S_IFDIR | perm,
            nlink: 2,
            rdev: (0, 0),
            data: &[],
        })
    }

    /// A regular file with the given contents.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(Entry {
            name,
            mode: S_IFREG | perm,
            nlink: 1,
            rdev: (0, 0),
            data,
        })
    }

    /// A symbolic link; its data is the target path.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        self.entry(Entry {
            name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            rdev: (0, 0),
            data: target.as_bytes(),
        })
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(Entry {
            name,
            mode: S_IFCHR | perm,
            nlink: 1,
            rdev: (major, minor),
            data: &[],
        })
    }

    /// Appends the TRAILER!!! entry and returns the archive.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.next_ino = 0;
        self.entry(Entry {
            name: TRAILER,
            mode: 0,
            nlink: 1,
            rdev: (0, 0),
            data: &[],
        })?;
        Ok(self.out)
    }

    fn entry(&mut self, e: Entry) -> Result<()> {
        if e.name.is_empty() || e.name.contains('\0') {
            bail!("invalid cpio entry name {:?}", e.name);
        }
        let (Ok(namesize), Ok(filesize)) =
            (u32::try_from(e.name.len() + 1), u32::try_from(e.data.len()))
        else {
            bail!("cpio entry {} is too large", e.name);
        };
        self.out
            .reserve(HEADER_LEN + e.name.len() + e.data.len() + 8);
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino, e.mode, 0, 0, e.nlink, 0, filesize, 0, 0, e.rdev.0, e.rdev.1, namesize, 0,
        ];
        self.out.extend_from_slice(MAGIC);
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(e.name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(e.data);
        self.pad();
        Ok(())
    }

    /// Header plus name, and data, each end on a 4-byte boundary; the archive starts at 0,
    /// so padding the whole output is the same thing.
    fn pad(&mut self) {
        let len = self.out.len().next_multiple_of(4);
        self.out.resize(len, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one header at `at`: (fields, name, data, offset of the next header).
    fn read(archive: &[u8], at: usize) -> ([u32; 13], String, Vec<u8>, usize) {
        assert_eq!(&archive[at..at + 6], MAGIC);
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            let hex = std::str::from_utf8(&archive[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
            *f = u32::from_str_radix(hex, 16).unwrap();
        }
        let namesize = fields[11] as usize;
        let name_at = at + HEADER_LEN;
        assert_eq!(archive[name_at + namesize - 1], 0, "name is NUL-terminated");
        let name = std::str::from_utf8(&archive[name_at..name_at + namesize - 1]).unwrap();
        let data_at = (name_at + namesize).next_multiple_of(4);
        assert!(archive[name_at + namesize..data_at].iter().all(|&b| b == 0));
        let data = archive[data_at..data_at + fields[6] as usize].to_vec();
        let next = (data_at + data.len()).next_multiple_of(4);
        (fields, name.to_string(), data, next)
    }

    #[test]
    fn header_fields_and_alignment() {
        let mut w = Writer::new();
        w.dir("bin", 0o755).unwrap();
        w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        w.symlink("bin/sh", "/bin/busybox").unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        let archive = w.finish().unwrap();
        assert_eq!(archive.len() % 4, 0);

        let (f, name, data, next) = read(&archive, 0);
        assert_eq!(
            (name.as_str(), f[0], f[1], f[4], f[6]),
            ("bin", 1, 0o040755, 2, 0)
        );
        assert_eq!(next, (HEADER_LEN + 4).next_multiple_of(4));

        let (f, name, data2, next2) = read(&archive, next);
        assert_eq!((name.as_str(), f[0], f[1], f[6]), ("init", 2, 0o100755, 10));
        assert_eq!(data2, b"#!/bin/sh\n");
        assert!(data.is_empty());
        assert_eq!(next2 % 4, 0);

        let (f, name, data, next3) = read(&archive, next2);
        assert_eq!((name.as_str(), f[1]), ("bin/sh", 0o120777));
        assert_eq!(data, b"/bin/busybox");

        let (f, name, _, next4) = read(&archive, next3);
        assert_eq!(
            (name.as_str(), f[1], f[9], f[10]),
            ("dev/console", 0o020600, 5, 1)
        );

        let (f, name, data, end) = read(&archive, next4);
        assert_eq!(name, TRAILER);
        assert_eq!((f[0], f[1], f[6]), (0, 0, 0));
        assert!(data.is_empty());
        assert_eq!(end, archive.len());
    }

    #[test]
    fn owner_and_mtime_are_zero() {
        let mut w = Writer::new();
        w.file("a", 0o644, b"x").unwrap();
        let archive = w.finish().unwrap();
        let (f, ..) = read(&archive, 0);
        assert_eq!((f[2], f[3], f[5], f[12]), (0, 0, 0, 0));
    }

    #[test]
    fn bad_names_are_errors() {
        let mut w = Writer::new();
        assert!(w.file("", 0o644, b"").is_err());
        assert!(w.file("a\0b", 0o644, b"").is_err());
    }
}
