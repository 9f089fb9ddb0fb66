//! COM2, the 16550 UART at port 0x2F8, as the sink of the trace stream: transmit only, polled,
//! 16 bytes per poll of the line status (the transmit FIFO's depth). Not a console: nothing is
//! read, and nothing here knows the record format.

use super::cpu::{inb, outb};

const BASE: u16 = 0x2F8;
/// Scratch register: a UART that is present reads back what was written (16550 datasheet).
const SCR: u16 = BASE + 7;
/// Line status; bit 5 is "transmitter holding register (and FIFO) empty".
const LSR: u16 = BASE + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Depth of the 16550's transmit FIFO.
const FIFO_BYTES: usize = 16;

/// Programs COM2 for 115200 baud, 8N1, FIFOs on, no interrupts; false if no UART answers there.
pub fn init() -> bool {
    outb(SCR, 0x5A);
    if inb(SCR) != 0x5A {
        return false;
    }
    outb(BASE + 1, 0x00);
    outb(BASE + 3, 0x80);
    outb(BASE, 0x01);
    outb(BASE + 1, 0x00);
    outb(BASE + 3, 0x03);
    outb(BASE + 2, 0xC7);
    outb(BASE + 4, 0x03);
    true
}

/// Sends `bytes`, waiting for the transmit FIFO to drain before each 16-byte burst.
pub fn write(bytes: &[u8]) {
    for burst in bytes.chunks(FIFO_BYTES) {
        while inb(LSR) & LSR_THR_EMPTY == 0 {}
        for &b in burst {
            outb(BASE, b);
        }
    }
}
