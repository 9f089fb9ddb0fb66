//! Port I/O and COM1 output of the bench guest. Every IN and OUT it executes goes through here
//! and is counted, so that the guest can tell exactly how many port I/O exits it caused.
//! COM1 is written without polling its line status (the monitor's UART and QEMU's both accept
//! every byte at once), so that each byte printed is exactly one OUT. Not here: input.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

const COM1: u16 = 0x3F8;

/// IN and OUT instructions executed so far.
static PORT_IO: AtomicU64 = AtomicU64::new(0);

/// Port I/O instructions executed so far.
pub fn port_io_count() -> u64 {
    PORT_IO.load(Ordering::Relaxed)
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must be one whose write has no effect on memory safety.
pub unsafe fn outb(port: u16, value: u8) {
    PORT_IO.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the caller vouches for the port.
    unsafe { rt::port::outb(port, value) }
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// The port must be one whose write has no effect on memory safety.
pub unsafe fn outw(port: u16, value: u16) {
    PORT_IO.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the caller vouches for the port.
    unsafe { rt::port::outw(port, value) }
}

struct Com1;

impl fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // SAFETY: writing COM1's transmit register only sends the byte.
            unsafe { outb(COM1, b) }
        }
        Ok(())
    }
}

/// Prints one line (terminated by CR LF) on COM1.
pub fn line(args: fmt::Arguments<'_>) {
    use fmt::Write;
    // Com1::write_str cannot fail; a Display impl that fails only truncates the line.
    let _ = Com1.write_fmt(format_args!("{args}\r\n"));
}

/// Counts the bytes a line would take on COM1, without printing it.
pub fn line_len(args: fmt::Arguments<'_>) -> u64 {
    struct Count(u64);
    impl fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len() as u64;
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = fmt::Write::write_fmt(&mut c, format_args!("{args}\r\n"));
    c.0
}
