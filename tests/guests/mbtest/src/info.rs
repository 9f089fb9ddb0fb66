//! Reads the multiboot information structure (Multiboot Specification 0.6.96, §3.3) at the
//! address the loader gave and prints each part as one `MBTEST:` line. Only the parts whose
//! flag is set are read; strings and the memory map are bounded so a bad structure cannot
//! run the guest off into the weeds.

use crate::say;

const FLAG_MEMORY: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;
const FLAG_LOADER_NAME: u32 = 1 << 9;
const MAX_STRING: usize = 256;
const MAX_ENTRIES: u32 = 32;

fn u32_at(addr: u64) -> u32 {
    // SAFETY: the first 4 GiB are identity-mapped and the loader put the structure there.
    unsafe { core::ptr::read_unaligned(addr as *const u32) }
}

fn u64_at(addr: u64) -> u64 {
    // SAFETY: as in `u32_at`.
    unsafe { core::ptr::read_unaligned(addr as *const u64) }
}

/// The NUL-terminated string at `addr`, at most `MAX_STRING` bytes.
fn string(addr: u32) -> &'static str {
    // SAFETY: as in `u32_at`; the slice stays inside the identity-mapped 4 GiB.
    let bytes = unsafe { core::slice::from_raw_parts(addr as usize as *const u8, MAX_STRING) };
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(MAX_STRING);
    core::str::from_utf8(&bytes[..len]).unwrap_or("<not UTF-8>")
}

/// Prints the magic and the information at `info`, both as the loader left them in EAX and EBX.
pub fn report(magic: u64, info: u64) {
    say!("MBTEST: magic {magic:#x}");
    let flags = u32_at(info);
    say!("MBTEST: flags {flags:#x}");
    if flags & FLAG_MEMORY != 0 {
        say!(
            "MBTEST: mem_lower {} KiB, mem_upper {} KiB",
            u32_at(info + 4),
            u32_at(info + 8)
        );
    }
    if flags & FLAG_CMDLINE != 0 {
        say!("MBTEST: cmdline '{}'", string(u32_at(info + 16)));
    }
    if flags & FLAG_LOADER_NAME != 0 {
        say!("MBTEST: loader '{}'", string(u32_at(info + 64)));
    }
    if flags & FLAG_MMAP != 0 {
        mmap(u64::from(u32_at(info + 48)), u32_at(info + 44));
    }
    if flags & FLAG_MODS != 0 {
        modules(u64::from(u32_at(info + 24)), u32_at(info + 20));
    }
}

/// Each entry: `size` (not counting itself), `base_addr`, `length`, `type`.
fn mmap(addr: u64, length: u32) {
    let end = addr + u64::from(length);
    let mut at = addr;
    let mut count = 0;
    while at < end && count < MAX_ENTRIES {
        let size = u32_at(at);
        say!(
            "MBTEST: mmap base {:#x} length {:#x} type {}",
            u64_at(at + 4),
            u64_at(at + 12),
            u32_at(at + 20)
        );
        at += u64::from(size) + 4;
        count += 1;
    }
}

/// Each module: start, end, string; its first 8 bytes in hex.
fn modules(addr: u64, count: u32) {
    for i in 0..count.min(MAX_ENTRIES) {
        let entry = addr + 16 * u64::from(i);
        let (start, end) = (u32_at(entry), u32_at(entry + 4));
        let first = u64_at(u64::from(start)).to_le_bytes();
        say!(
            "MBTEST: module {i} '{}' at {start:#x} size {} first {:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            string(u32_at(entry + 8)),
            end.wrapping_sub(start),
            first[0], first[1], first[2], first[3], first[4], first[5], first[6], first[7]
        );
    }
}
