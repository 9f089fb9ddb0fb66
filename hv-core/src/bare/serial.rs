//! The monitor's own serial line (COM1): the 16550 driver for its log and the guest console
//! relay, and the `log` backend that writes `hv: ` lines to it.

use super::cpu::{inb, outb};
use core::fmt::Write;
use spin::Mutex;

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
            let _ = writeln!(CONSOLE.lock(), "hv: {severity}{}", record.args());
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
