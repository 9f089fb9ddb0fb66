//! The monitor's own serial line (COM1): the 16550 driver for its log, the console and the
//! guest console relay, and the `log` backend that writes `hv: ` lines to it and keeps them in
//! a ring for `dmesg`. A log line never starts in the middle of another line on the wire: if
//! the last byte sent was not a line end, the logger ends that line first.

use super::cpu::{inb, outb};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use hv_core::console::ring::Ring;
use spin::Mutex;

/// Bytes of recent log lines kept for `dmesg`.
const LOG_RING_BYTES: usize = 16 * 1024;

/// The last byte written to the line was a line feed (or nothing was written yet).
static AT_LINE_START: AtomicBool = AtomicBool::new(true);

pub struct Serial {
    base: u16,
}

impl Serial {
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    /// 115200 baud, 8N1, FIFOs on, no interrupts.
    pub fn init(&self) {
        let b = self.base;
        outb(b + 1, 0x00);
        outb(b + 3, 0x80);
        outb(b, 0x01);
        outb(b + 1, 0x00);
        outb(b + 3, 0x03);
        outb(b + 2, 0xC7);
        outb(b + 4, 0x03);
    }

    pub fn write_byte(&self, byte: u8) {
        while inb(self.base + 5) & 0x20 == 0 {}
        outb(self.base, byte);
        AT_LINE_START.store(byte == b'\n', Ordering::Relaxed);
    }

    /// Ends the current line unless the cursor is at the start of one.
    pub fn start_line(&self) {
        if !AT_LINE_START.load(Ordering::Relaxed) {
            self.write_byte(b'\r');
            self.write_byte(b'\n');
        }
    }

    pub fn read_byte(&self) -> Option<u8> {
        (inb(self.base + 5) & 1 != 0).then(|| inb(self.base))
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

pub static CONSOLE: Mutex<Serial> = Mutex::new(Serial::new(0x3F8));

/// The recent log, without the line's CRs.
static LOG_RING: Mutex<Ring<LOG_RING_BYTES>> = Mutex::new(Ring::new());

/// Writes to the serial line and the log ring at once.
struct Tee<'a> {
    serial: &'a mut Serial,
    ring: &'a mut Ring<LOG_RING_BYTES>,
}

impl Write for Tee<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            self.ring.push(b);
        }
        self.serial.write_str(s)
    }
}

/// The recent log lines, oldest first (a copy, so that printing it takes no log lock).
pub fn recent_log() -> alloc::vec::Vec<u8> {
    let mut v = alloc::vec::Vec::with_capacity(LOG_RING_BYTES);
    LOG_RING.lock().replay(LOG_RING_BYTES, &mut |b| v.push(b));
    v
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let severity = match record.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                _ => "",
            };
            let mut serial = CONSOLE.lock();
            let mut ring = LOG_RING.lock();
            serial.start_line();
            let mut tee = Tee {
                serial: &mut serial,
                ring: &mut ring,
            };
            let _ = writeln!(tee, "hv: {severity}{}", record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger at the level named on the command line (`loglvl=`).
pub fn init_log(level: log::LevelFilter) {
    CONSOLE.lock().init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
