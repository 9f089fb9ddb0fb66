//! COM1 output: bytes to the 16550's transmit register once it is empty. Not a driver: no
//! input, no interrupts, and the UART is used as the monitor configured it.

use core::arch::asm;
use core::fmt;

const COM1: u16 = 0x3F8;
const LSR: u16 = COM1 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Writes formatted text to COM1, `\n` as `\r\n`.
pub struct Com1;

impl Com1 {
    fn byte(b: u8) {
        while inb(LSR) & LSR_THR_EMPTY == 0 {}
        // SAFETY: writing the transmit register only sends a byte.
        unsafe { asm!("out dx, al", in("dx") COM1, in("al") b, options(nomem, nostack)) };
    }
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: reading the line status register has no side effect.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

impl fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Self::byte(b'\r');
            }
            Self::byte(b);
        }
        Ok(())
    }
}

/// Prints one line on COM1.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Com1, $($arg)*);
    }};
}
