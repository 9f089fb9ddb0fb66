//! The guest's command line: from boot_params (Linux boot protocol: `cmd_line_ptr` at offset
//! 0x228 of the zero page, Documentation/arch/x86/zero-page.rst) or from the multiboot
//! information (Multiboot Specification 0.6.96, section 3.3: `cmdline` at offset 16, valid when
//! bit 2 of `flags` is set). Both are physical addresses below 4 GiB, which the guest
//! identity-maps.

/// Offset of `cmd_line_ptr` in boot_params.
const CMD_LINE_PTR: u64 = 0x228;
/// Offset of `cmdline` in the multiboot information, and the `flags` bit that makes it valid.
const MULTIBOOT_CMDLINE: u64 = 16;
const MULTIBOOT_FLAG_CMDLINE: u32 = 1 << 2;
/// Longest command line read.
const MAX_LEN: usize = 1024;

/// The command line's bytes from boot_params, or an empty slice when there is none
/// (`boot_params` 0 included).
pub fn get(boot_params: u64) -> &'static [u8] {
    if boot_params == 0 {
        return &[];
    }
    // SAFETY: the loader hands over boot_params at this identity-mapped address.
    string(unsafe { core::ptr::read_volatile((boot_params + CMD_LINE_PTR) as *const u32) })
}

/// The command line's bytes from the multiboot information, or an empty slice when there is
/// none (`multiboot_info` 0 included).
pub fn from_multiboot(multiboot_info: u64) -> &'static [u8] {
    let read = |addr: u64| {
        // SAFETY: the loader hands over the multiboot information at this identity-mapped
        // address.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    };
    if multiboot_info == 0 || read(multiboot_info) & MULTIBOOT_FLAG_CMDLINE == 0 {
        return &[];
    }
    string(read(multiboot_info + MULTIBOOT_CMDLINE))
}

/// The NUL-terminated string at physical address `ptr`, at most `MAX_LEN` bytes; empty for 0.
fn string(ptr: u32) -> &'static [u8] {
    if ptr == 0 {
        return &[];
    }
    let base = ptr as usize as *const u8;
    let mut len = 0;
    // SAFETY: the command line is a NUL-terminated string in identity-mapped memory; at most
    // MAX_LEN bytes are read.
    unsafe {
        while len < MAX_LEN && core::ptr::read_volatile(base.add(len)) != 0 {
            len += 1;
        }
        core::slice::from_raw_parts(base, len)
    }
}

/// The command line's space-separated words.
pub fn words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    cmdline.split(|&b| b == b' ').filter(|w| !w.is_empty())
}

/// The value of the first `key=value` word, if any.
pub fn value<'a>(cmdline: &'a [u8], key: &str) -> Option<&'a [u8]> {
    words(cmdline).find_map(|w| {
        w.strip_prefix(key.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
    })
}

/// Whether `word` is one of the command line's words.
pub fn has_word(cmdline: &[u8], word: &str) -> bool {
    words(cmdline).any(|w| w == word.as_bytes())
}
