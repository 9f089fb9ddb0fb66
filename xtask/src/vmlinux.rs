//! The ELF `vmlinux` inside a bzImage, for booting the stock kernel by PVH: the protected-mode
//! payload (`payload_offset` and `payload_length` at 0x248 and 0x24c, counted from the end of
//! the setup sectors; Documentation/arch/x86/boot.rst, protocol 2.08+) is the compressed ELF,
//! decompressed with the `lz4` (legacy frames, as in Debian's cloud kernel) or `xz` tool and
//! cached as build/cache/vmlinux. Not a decompressor of its own, and not a kernel builder.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{bail, Context, Result};
use crate::process;

/// LZ4 legacy frame magic (lz4 `LEGACY_MAGICNUMBER`), as the payload starts with it.
const LZ4_LEGACY: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const XZ: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];

/// Returns `dest`, extracting the ELF from `bzimage` into it unless it is newer than the
/// bzImage already.
pub fn extract_cached(bzimage: &Path, dest: &Path) -> Result<PathBuf> {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(elf), Some(image)) = (modified(dest), modified(bzimage)) {
        if elf >= image {
            eprintln!("vmlinux: using cached {}", dest.display());
            return Ok(dest.to_path_buf());
        }
    }
    let image = fs::read(bzimage).context(|| format!("reading {}", bzimage.display()))?;
    let elf =
        extract(&image).context(|| format!("extracting the ELF from {}", bzimage.display()))?;
    process::write_atomically(dest, &elf)?;
    eprintln!("vmlinux: {} ({} bytes)", dest.display(), elf.len());
    Ok(dest.to_path_buf())
}

/// The decompressed ELF of a bzImage.
pub fn extract(image: &[u8]) -> Result<Vec<u8>> {
    let payload = payload(image)?;
    let tool = if payload.starts_with(&LZ4_LEGACY) {
        "lz4"
    } else if payload.starts_with(&XZ) {
        "xz"
    } else {
        bail!("payload is neither LZ4 (legacy frames) nor XZ");
    };
    let elf = decompress(tool, payload)?;
    if !elf.starts_with(b"\x7fELF") {
        bail!("the decompressed payload is not an ELF file");
    }
    Ok(elf)
}

/// The compressed payload: `payload_length` bytes at `payload_offset` past the setup sectors.
fn payload(image: &[u8]) -> Result<&[u8]> {
    if image.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        bail!("not a bzImage (no HdrS signature at 0x202)");
    }
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let (Some(offset), Some(length)) = (u32_at(0x248), u32_at(0x24c)) else {
        bail!("bzImage header too short for payload_offset");
    };
    let start = (setup_sects + 1) * 512 + offset;
    match image.get(start..start.saturating_add(length)) {
        Some(p) if length > 0 => Ok(p),
        _ => bail!("payload {offset:#x}+{length:#x} lies outside the bzImage"),
    }
}

/// Runs `TOOL -dc` on `input`. The kernel's LZ4 payload ends with its uncompressed size, which
/// `lz4` reports as trailing garbage (exit status 1) after writing everything, so the status is
/// not trusted: the caller checks the output instead.
fn decompress(tool: &str, input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context(|| format!("cannot run {tool} (install it, e.g. with .ci/install-deps)"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let output = std::thread::scope(|s| {
        // Feed the input while reading the output, so neither pipe fills up.
        s.spawn(move || stdin.write_all(input));
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    })
    .context(|| format!("reading the output of {tool}"))?;
    child.wait().context(|| format!("waiting for {tool}"))?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage(setup_sects: u8, payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; (usize::from(setup_sects.max(4)) + 1) * 512 + 0x10];
        img[0x1f1] = setup_sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24c].copy_from_slice(&0x10u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    #[test]
    fn payload_is_found_after_the_setup_sectors() {
        assert_eq!(payload(&bzimage(5, b"abc")).unwrap(), b"abc");
        // setup_sects 0 means 4.
        assert_eq!(payload(&bzimage(0, b"xyz")).unwrap(), b"xyz");
        let mut short = bzimage(5, b"abc");
        short.truncate(short.len() - 1);
        assert!(payload(&short).is_err());
        assert!(payload(&[0u8; 0x100]).is_err());
    }

    #[test]
    fn unknown_compression_is_refused() {
        let err = extract(&bzimage(5, b"gzip?")).unwrap_err();
        assert!(err.to_string().contains("neither LZ4"), "{err}");
    }

    #[test]
    fn lz4_legacy_payloads_decompress_despite_the_trailing_size() {
        let elf = b"\x7fELF and the rest of a kernel".repeat(50);
        let Ok(mut child) = Command::new("lz4")
            .args(["-l", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        else {
            eprintln!("lz4 not installed; skipped");
            return;
        };
        child.stdin.take().unwrap().write_all(&elf).unwrap();
        let mut compressed = child.wait_with_output().unwrap().stdout;
        // The kernel's build appends the uncompressed size after the frames.
        compressed.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        assert!(compressed.starts_with(&LZ4_LEGACY));
        assert_eq!(extract(&bzimage(5, &compressed)).unwrap(), elf);
    }
}
