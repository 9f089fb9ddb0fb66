//! Fuzzes the bzImage setup-header parser (`hv_core::loader::bzimage::BzImage::parse`).
//!
//! Invariants: no panic; an accepted image has a protocol of at least 2.12, a 64-bit entry,
//! LOADED_HIGH, a non-empty payload that is exactly the file after the setup sectors and holds
//! `syssize` paragraphs, and header bytes that are the file from 0x1f1 to at most 0x290.
#![no_main]

use hv_core::loader::bzimage::{
    BzImage, LOADED_HIGH, MIN_PROTOCOL, SETUP_HEADER_MAX_END, SETUP_HEADER_START, XLF_KERNEL_64,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let image = match BzImage::parse(data) {
        Ok(image) => image,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let h = &image.header;
    assert!(h.version >= MIN_PROTOCOL);
    assert!(h.loadflags & LOADED_HIGH != 0 && h.xloadflags & XLF_KERNEL_64 != 0);
    assert!(h.setup_sects != 0, "setup_sects 0 must read as 4");
    let setup_len = (usize::from(h.setup_sects) + 1) * 512;
    assert_eq!(image.payload, &data[setup_len..]);
    assert!(!image.payload.is_empty());
    assert!(u64::from(h.syssize) * 16 <= image.payload.len() as u64);
    let hdr = image.setup_header_bytes;
    assert!(SETUP_HEADER_START + hdr.len() <= SETUP_HEADER_MAX_END.min(data.len()));
    assert_eq!(
        hdr,
        &data[SETUP_HEADER_START..SETUP_HEADER_START + hdr.len()]
    );
});
