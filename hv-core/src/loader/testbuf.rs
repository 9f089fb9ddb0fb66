//! Readers of little-endian values and C strings in a guest-memory image, for the loader tests.

pub fn u32_at(buf: &[u8], at: u64) -> u32 {
    u32::from_le_bytes(buf[at as usize..][..4].try_into().unwrap())
}

pub fn u64_at(buf: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(buf[at as usize..][..8].try_into().unwrap())
}

pub fn cstr(buf: &[u8], at: u64) -> &str {
    let s = &buf[at as usize..];
    core::str::from_utf8(&s[..s.iter().position(|&b| b == 0).unwrap()]).unwrap()
}
