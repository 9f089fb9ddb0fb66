//! Output on COM1, the 16550 UART at port 0x3F8: what a guest prints is what the
//! tests read. Not here: input, interrupts or line settings (the guests only transmit, by polling).

use core::fmt;

use crate::port;

const COM1: u16 = 0x3F8;
/// Line status register; bit 5 is "transmitter holding register empty" (16550 datasheet).
const LSR: u16 = COM1 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Polls of LSR before sending anyway, so that a UART that never reports ready cannot hang us.
const READY_POLLS: u32 = 1 << 16;

/// The COM1 transmitter.
pub struct Com1;

impl Com1 {
    fn send(&mut self, byte: u8) {
        for _ in 0..READY_POLLS {
            // SAFETY: reading COM1's line status register has no side effect.
            if unsafe { port::inb(LSR) } & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        // SAFETY: writing COM1's transmit register only sends the byte.
        unsafe { port::outb(COM1, byte) }
    }
}

impl fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|byte| self.send(byte));
        Ok(())
    }
}

/// Prints one line (terminated by CR LF) on COM1.
pub fn line(args: fmt::Arguments<'_>) {
    use fmt::Write;
    // Com1::write_str cannot fail; a Display impl that fails only truncates the line.
    let _ = Com1.write_fmt(format_args!("{args}\r\n"));
}
