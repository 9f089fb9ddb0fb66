//! The guest's command line: from boot_params (Linux boot protocol, `cmd_line_ptr` at offset
//! 0x228 of the zero page, Documentation/arch/x86/zero-page.rst) or from the multiboot
//! information (Multiboot Specification 0.6.96 §3.3: `cmdline` at offset 16, valid when flags
//! bit 2 is set). Both are physical addresses below 4 GiB, which the guest identity-maps.

/// Longest command line read.
const MAX_LEN: usize = 1024;

/// The command line's bytes, or an empty slice when there is none.
pub fn get(boot_params: u64, multiboot_info: u64) -> &'static [u8] {
    // SAFETY: the loader hands over valid structures at these identity-mapped addresses.
    let ptr = unsafe {
        if boot_params != 0 {
            core::ptr::read_volatile((boot_params + 0x228) as *const u32)
        } else if multiboot_info != 0
            && core::ptr::read_volatile(multiboot_info as *const u32) & (1 << 2) != 0
        {
            core::ptr::read_volatile((multiboot_info + 16) as *const u32)
        } else {
            0
        }
    };
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

/// Whether `word` is one of the command line's space-separated words.
pub fn has_word(cmdline: &[u8], word: &str) -> bool {
    cmdline.split(|&b| b == b' ').any(|w| w == word.as_bytes())
}
