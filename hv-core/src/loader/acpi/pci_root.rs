//! The DSDT's PCI host bridge, `\_SB.PCI0` (ACPI 6.5, 6.1 and 6.2 for `_HID`, `_CRS`, `_PRT`):
//! a `PNP0A03` root bridge decoding bus 0, the configuration ports, the I/O space around them and
//! the PCI hole of `devices::layout`, with a routing table wiring INTA# of each slot to its I/O
//! APIC pin. Linux enumerates PCI through this device; without it, an ACPI system gets no PCI.
//!
//! It is hand-assembled AML (20.2 "AML Grammar Definition"), not an AML compiler.

use alloc::vec::Vec;

use devices::layout;

/// Bytes of `aml()`; the table layout needs it at compile time.
pub const AML_LEN: usize = 325;

const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0A;
const DWORD_PREFIX: u8 = 0x0C;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const ZERO_OP: u8 = 0x00;
const EXT_OP_PREFIX: u8 = 0x5B;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';
const DUAL_NAME_PREFIX: u8 = 0x2E;
/// EISAID("PNP0A03"), the PCI host bridge, as the compressed 32-bit ID.
const PNP0A03: u32 = 0x030A_D041;

/// `\_SB.PCI0` with `_HID`, `_UID`, `_CRS` and `_PRT`.
pub fn aml() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[ROOT_CHAR, DUAL_NAME_PREFIX]);
    body.extend_from_slice(b"_SB_PCI0");
    name(&mut body, b"_HID", &dword(PNP0A03));
    name(&mut body, b"_UID", &[ZERO_OP]);
    name(&mut body, b"_CRS", &buffer(&resources()));
    name(&mut body, b"_PRT", &routing());
    let mut out = Vec::with_capacity(AML_LEN);
    out.extend_from_slice(&[EXT_OP_PREFIX, DEVICE_OP]);
    with_pkg_length(&mut out, &body);
    out
}

/// PkgLength (20.2.4): the length of itself and what follows, in one to three bytes.
fn with_pkg_length(out: &mut Vec<u8>, content: &[u8]) {
    let one = content.len() + 1;
    if one < 0x40 {
        out.push(one as u8);
    } else {
        let two = content.len() + 2;
        out.push(0x40 | (two & 0xF) as u8);
        out.push((two >> 4) as u8);
    }
    out.extend_from_slice(content);
}

fn name(out: &mut Vec<u8>, seg: &[u8; 4], value: &[u8]) {
    out.push(NAME_OP);
    out.extend_from_slice(seg);
    out.extend_from_slice(value);
}

fn dword(v: u32) -> [u8; 5] {
    let b = v.to_le_bytes();
    [DWORD_PREFIX, b[0], b[1], b[2], b[3]]
}

fn buffer(bytes: &[u8]) -> Vec<u8> {
    let mut content = alloc::vec![BYTE_PREFIX, bytes.len() as u8];
    content.extend_from_slice(bytes);
    let mut out = alloc::vec![BUFFER_OP];
    with_pkg_length(&mut out, &content);
    out
}

fn package(elements: u8, content: &[u8]) -> Vec<u8> {
    let mut inner = alloc::vec![elements];
    inner.extend_from_slice(content);
    let mut out = alloc::vec![PACKAGE_OP];
    with_pkg_length(&mut out, &inner);
    out
}

/// Resource types and flags of the address space descriptors (6.4.3.5): a producer whose
/// minimum and maximum are fixed; I/O decoding the whole range; memory read-write.
const RES_MEMORY: u8 = 0;
const RES_IO: u8 = 1;
const RES_BUS: u8 = 2;
const PRODUCER_FIXED: u8 = 0x0C;
const IO_ENTIRE_RANGE: u8 = 0x03;
const MEMORY_READ_WRITE: u8 = 0x01;

/// The bridge's `_CRS`: bus numbers 0-255, the configuration ports (consumed), I/O below and
/// above them, and the PCI hole.
fn resources() -> Vec<u8> {
    let mut r = Vec::new();
    word_space(&mut r, RES_BUS, 0, 0x00, 0xFF);
    // I/O port descriptor (6.4.2.5): 16-bit decode, 0xCF8..0xCFF.
    let cfg = layout::PCI_CONFIG_ADDRESS.to_le_bytes();
    r.extend_from_slice(&[0x47, 0x01, cfg[0], cfg[1], cfg[0], cfg[1], 0x01, 0x08]);
    word_space(
        &mut r,
        RES_IO,
        IO_ENTIRE_RANGE,
        0x0000,
        layout::PCI_CONFIG_ADDRESS - 1,
    );
    word_space(&mut r, RES_IO, IO_ENTIRE_RANGE, 0x0D00, 0xFFFF);
    // DWord Address Space Descriptor (6.4.3.5.2).
    let (min, max) = (layout::PCI_MMIO_BASE as u32, layout::PCI_MMIO_END as u32);
    r.extend_from_slice(&[
        0x87,
        0x17,
        0x00,
        RES_MEMORY,
        PRODUCER_FIXED,
        MEMORY_READ_WRITE,
    ]);
    for v in [0, min, max, 0, max - min + 1] {
        r.extend_from_slice(&v.to_le_bytes());
    }
    // End tag (6.4.2.9), checksum 0: "treated as if the checksum operation succeeded".
    r.extend_from_slice(&[0x79, 0x00]);
    r
}

/// Word Address Space Descriptor (6.4.3.5.3).
fn word_space(r: &mut Vec<u8>, kind: u8, type_flags: u8, min: u16, max: u16) {
    r.extend_from_slice(&[0x88, 0x0D, 0x00, kind, PRODUCER_FIXED, type_flags]);
    let len = u32::from(max) - u32::from(min) + 1;
    for v in [0, min, max, 0, len as u16] {
        r.extend_from_slice(&v.to_le_bytes());
    }
}

/// `_PRT` (6.2.13): for each device slot, INTA# (pin 0) to a global system interrupt (source
/// Zero, the GSI as source index). Such GSIs are level-triggered, active low.
fn routing() -> Vec<u8> {
    let mut entries = Vec::new();
    for slot in 1..=layout::PCI_SLOTS {
        let mut e = Vec::new();
        e.extend_from_slice(&dword(u32::from(slot) << 16 | 0xFFFF));
        e.extend_from_slice(&[ZERO_OP, ZERO_OP, BYTE_PREFIX, devices::pci::slot_gsi(slot)]);
        entries.extend_from_slice(&package(4, &e));
    }
    package(layout::PCI_SLOTS, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_matches_the_layout_constant() {
        assert_eq!(aml().len(), AML_LEN);
    }

    #[test]
    fn pkg_lengths_cover_what_follows() {
        let a = aml();
        assert_eq!(&a[..2], &[EXT_OP_PREFIX, DEVICE_OP]);
        let len = usize::from(a[2] & 0xF) | usize::from(a[3]) << 4;
        assert_eq!(a[2] >> 6, 1, "two-byte PkgLength");
        assert_eq!(2 + len, a.len());
        assert_eq!(
            &a[4..14],
            b"\\.\x5fSB_PCI0".map(|c| if c == b'.' { 0x2E } else { c })
        );
    }

    #[test]
    fn resources_describe_the_pci_hole() {
        let r = resources();
        assert_eq!(r.len(), 84);
        let mem = &r[r.len() - 28..r.len() - 2];
        assert_eq!(mem[0], 0x87);
        let field = |i: usize| u32::from_le_bytes(mem[6 + 4 * i..10 + 4 * i].try_into().unwrap());
        assert_eq!(field(1), 0xC000_0000);
        assert_eq!(field(2), 0xFEBF_FFFF);
        assert_eq!(field(4), 0xFEBF_FFFF - 0xC000_0000 + 1);
        assert_eq!(&r[r.len() - 2..], &[0x79, 0]);
    }

    #[test]
    fn routing_sends_slot_one_to_gsi_seventeen() {
        let prt = routing();
        let first = [
            PACKAGE_OP,
            11,
            4,
            DWORD_PREFIX,
            0xFF,
            0xFF,
            1,
            0,
            0,
            0,
            BYTE_PREFIX,
            17,
        ];
        assert_eq!(&prt[4..16], &first);
    }
}
