//! COM1 as a 16550A UART: registers, 16-byte receive FIFO, loopback and the interrupt
//! identification logic Linux's 8250 driver probes. Transmission is instantaneous (the byte
//! written to THR is handed back to the caller), so THR and the transmitter are always empty.
//! It is not a baud-rate model: the divisor latch is plain storage.

/// Register offsets from the base port (National Semiconductor PC16550D datasheet, table II).
mod reg {
    pub const RBR_THR_DLL: u8 = 0;
    pub const IER_DLM: u8 = 1;
    pub const IIR_FCR: u8 = 2;
    pub const LCR: u8 = 3;
    pub const MCR: u8 = 4;
    pub const LSR: u8 = 5;
    pub const MSR: u8 = 6;
    // 7: SCR, the scratch register (the remaining match arm).
}

const IER_ERBFI: u8 = 0x01;
const IER_ETBEI: u8 = 0x02;
const IER_ELSI: u8 = 0x04;
const IER_EDSSI: u8 = 0x08;
const IER_MASK: u8 = 0x0F;

const IIR_NO_INT: u8 = 0x01;
const IIR_MSR: u8 = 0x00;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_RLS: u8 = 0x06;
const IIR_TIMEOUT: u8 = 0x0C;
const IIR_FIFO_ENABLED: u8 = 0xC0;

const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;

const LCR_DLAB: u8 = 0x80;

const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;
const MCR_MASK: u8 = 0x1F;

const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;

const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;
/// Delta bits: DCTS, DDSR, TERI, DDCD.
const MSR_DELTAS: u8 = 0x0F;
const MSR_TERI: u8 = 0x04;

const FIFO_SIZE: usize = 16;

/// Fixed-capacity byte FIFO.
struct Fifo {
    buf: [u8; FIFO_SIZE],
    head: usize,
    len: usize,
}

impl Fifo {
    const fn new() -> Self {
        Self {
            buf: [0; FIFO_SIZE],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, byte: u8, capacity: usize) -> bool {
        if self.len >= capacity {
            return false;
        }
        self.buf[(self.head + self.len) % FIFO_SIZE] = byte;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.buf[self.head];
        self.head = (self.head + 1) % FIFO_SIZE;
        self.len -= 1;
        Some(byte)
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

pub struct Uart16550 {
    rx: Fifo,
    ier: u8,
    fcr: u8,
    lcr: u8,
    mcr: u8,
    /// Only the error bits (OE); DR, THRE and TEMT are derived.
    lsr_errors: u8,
    /// Modem status delta bits; the line bits are derived from MCR.
    msr_deltas: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    /// THRE interrupt latch: set when THR becomes empty with ETBEI on, or ETBEI turns on while
    /// THR is empty; cleared by reading IIR while it is the reported source, or writing THR.
    thre_pending: bool,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    pub const fn new() -> Self {
        Self {
            rx: Fifo::new(),
            ier: 0,
            fcr: 0,
            lcr: 0,
            mcr: 0,
            lsr_errors: 0,
            msr_deltas: 0,
            scr: 0,
            // 115200 baud.
            dll: 1,
            dlm: 0,
            thre_pending: false,
        }
    }

    pub fn read(&mut self, offset: u8) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset & 7 {
            reg::RBR_THR_DLL if dlab => self.dll,
            reg::RBR_THR_DLL => self.rx.pop().unwrap_or(0),
            reg::IER_DLM if dlab => self.dlm,
            reg::IER_DLM => self.ier,
            reg::IIR_FCR => self.read_iir(),
            reg::LCR => self.lcr,
            reg::MCR => self.mcr,
            reg::LSR => {
                let lsr = self.lsr();
                self.lsr_errors = 0;
                lsr
            }
            reg::MSR => {
                let msr = self.modem_lines() | self.msr_deltas;
                self.msr_deltas = 0;
                msr
            }
            _ => self.scr,
        }
    }

    pub fn write(&mut self, offset: u8, value: u8) -> Option<u8> {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset & 7 {
            reg::RBR_THR_DLL if dlab => self.dll = value,
            reg::RBR_THR_DLL => return self.transmit(value),
            reg::IER_DLM if dlab => self.dlm = value,
            reg::IER_DLM => self.write_ier(value),
            reg::IIR_FCR => self.write_fcr(value),
            reg::LCR => self.lcr = value,
            reg::MCR => self.write_mcr(value),
            // LSR and MSR are read-only (writes to them are factory-test only).
            reg::LSR | reg::MSR => {}
            _ => self.scr = value,
        }
        None
    }

    /// Queues a received byte; false when the receive buffer is full.
    pub fn push_input(&mut self, byte: u8) -> bool {
        self.rx.push(byte, self.rx_capacity())
    }

    /// The INTRPT output as a PC routes it: gated by OUT2.
    pub fn irq_level(&self) -> bool {
        self.mcr & MCR_OUT2 != 0 && self.pending_source().is_some()
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & FCR_ENABLE != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() {
            FIFO_SIZE
        } else {
            1
        }
    }

    /// Receiver FIFO trigger level from FCR bits 7:6.
    fn rx_trigger(&self) -> usize {
        [1, 4, 8, 14][usize::from(self.fcr >> 6)]
    }

    fn lsr(&self) -> u8 {
        let dr = if self.rx.len > 0 { LSR_DR } else { 0 };
        dr | self.lsr_errors | LSR_THRE | LSR_TEMT
    }

    /// CTS, DSR, RI, DCD. In loopback they follow RTS, DTR, OUT1, OUT2 (datasheet 8.6);
    /// otherwise the line looks like an attached, ready terminal.
    fn modem_lines(&self) -> u8 {
        if self.mcr & MCR_LOOP == 0 {
            return MSR_CTS | MSR_DSR | MSR_DCD;
        }
        let mut lines = 0;
        for (mcr_bit, msr_bit) in [
            (MCR_RTS, MSR_CTS),
            (MCR_DTR, MSR_DSR),
            (MCR_OUT1, MSR_RI),
            (MCR_OUT2, MSR_DCD),
        ] {
            if self.mcr & mcr_bit != 0 {
                lines |= msr_bit;
            }
        }
        lines
    }

    /// Highest-priority pending interrupt (datasheet table IV), as its IIR code.
    fn pending_source(&self) -> Option<u8> {
        if self.ier & IER_ELSI != 0 && self.lsr_errors != 0 {
            Some(IIR_RLS)
        } else if self.ier & IER_ERBFI != 0 && self.rx.len > 0 {
            // Below the trigger level, data is reported through the character timeout.
            if self.fifo_enabled() && self.rx.len < self.rx_trigger() {
                Some(IIR_TIMEOUT)
            } else {
                Some(IIR_RDA)
            }
        } else if self.ier & IER_ETBEI != 0 && self.thre_pending {
            Some(IIR_THRE)
        } else if self.ier & IER_EDSSI != 0 && self.msr_deltas != 0 {
            Some(IIR_MSR)
        } else {
            None
        }
    }

    fn read_iir(&mut self) -> u8 {
        let fifo = if self.fifo_enabled() {
            IIR_FIFO_ENABLED
        } else {
            0
        };
        match self.pending_source() {
            Some(source) => {
                if source == IIR_THRE {
                    self.thre_pending = false;
                }
                fifo | source
            }
            None => fifo | IIR_NO_INT,
        }
    }

    fn transmit(&mut self, value: u8) -> Option<u8> {
        // The byte leaves at once, so THR is empty again right away and the THRE interrupt
        // (cleared by this write) is raised anew if enabled.
        self.thre_pending = self.ier & IER_ETBEI != 0;
        if self.mcr & MCR_LOOP != 0 {
            if !self.rx.push(value, self.rx_capacity()) {
                self.lsr_errors |= LSR_OE;
            }
            return None;
        }
        Some(value)
    }

    fn write_ier(&mut self, value: u8) {
        let value = value & IER_MASK;
        if value & IER_ETBEI != 0 && self.ier & IER_ETBEI == 0 {
            // Enabling ETBEI with THR empty raises the THRE interrupt.
            self.thre_pending = true;
        }
        self.ier = value;
    }

    fn write_fcr(&mut self, value: u8) {
        if (value ^ self.fcr) & FCR_ENABLE != 0 || value & FCR_CLEAR_RX != 0 {
            // Changing the FIFO enable resets both FIFOs (datasheet, FCR bit 0).
            self.rx.clear();
        }
        // Bits 1-2 self-clear; DMA mode (bit 3) has no effect here.
        self.fcr = value & 0xC1;
    }

    fn write_mcr(&mut self, value: u8) {
        let before = self.modem_lines();
        self.mcr = value & MCR_MASK;
        let after = self.modem_lines();
        let changed = before ^ after;
        let mut deltas = (changed >> 4) & !MSR_TERI & MSR_DELTAS;
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            deltas |= MSR_TERI;
        }
        self.msr_deltas |= deltas;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register dance of Linux's `autoconfig()` / `autoconfig_16550a()`.
    #[test]
    fn linux_8250_autoconfig_finds_16550a() {
        let mut u = Uart16550::new();
        // IER probe.
        u.write(1, 0);
        assert_eq!(u.read(1) & 0x0F, 0);
        u.write(1, 0x0F);
        assert_eq!(u.read(1) & 0x0F, 0x0F);
        u.write(1, 0);
        // Loopback MSR test.
        u.write(4, MCR_LOOP | 0x0A);
        assert_eq!(u.read(6) & 0xF0, 0x90);
        u.write(4, 0);
        // EFR (offset 2 under LCR 0xBF) is FCR here; then enable FIFOs and read IIR.
        u.write(3, 0xBF);
        u.write(2, 0);
        u.write(3, 0);
        u.write(2, FCR_ENABLE);
        assert_eq!(u.read(2) >> 6, 3);
        // No EFR behind DLAB: offset 2 still reads IIR, which is non-zero.
        u.write(3, 0x80);
        assert_ne!(u.read(2), 0);
        u.write(3, 0xBF);
        assert_ne!(u.read(2), 0);
        // Not a National SuperIO: EXCR1 (offset 2 under LCR 0xE0) does not mirror MCR LOOP.
        u.write(3, 0);
        let mcr = u.read(4);
        u.write(4, mcr ^ MCR_LOOP);
        u.write(3, 0xE0);
        let excr1 = u.read(2);
        u.write(3, 0);
        u.write(4, mcr);
        assert_eq!((excr1 ^ mcr) & MCR_LOOP, 0);
        // The divisor latch round-trips.
        u.write(3, LCR_DLAB);
        u.write(0, 0x01);
        u.write(1, 0x00);
        assert_eq!((u.read(0), u.read(1)), (0x01, 0x00));
    }

    #[test]
    fn transmits_written_byte_and_reports_idle_line() {
        let mut u = Uart16550::new();
        assert_eq!(u.write(0, b'A'), Some(b'A'));
        assert_eq!(u.read(5), LSR_THRE | LSR_TEMT);
        assert_eq!(u.read(2), IIR_NO_INT);
    }

    #[test]
    fn dlab_switches_to_divisor_latch() {
        let mut u = Uart16550::new();
        u.write(3, 0x83);
        assert_eq!(u.write(0, 0x0C), None);
        u.write(1, 0x00);
        assert_eq!(u.read(0), 0x0C);
        assert_eq!(u.read(1), 0x00);
        u.write(3, 0x03);
        assert_eq!(u.read(1), 0, "IER untouched by DLM write");
        assert_eq!(u.read(3), 0x03);
    }

    #[test]
    fn scratch_register_stores() {
        let mut u = Uart16550::new();
        u.write(7, 0xA5);
        assert_eq!(u.read(7), 0xA5);
    }

    #[test]
    fn ier_keeps_only_low_nibble() {
        let mut u = Uart16550::new();
        u.write(1, 0xFF);
        assert_eq!(u.read(1), 0x0F);
        u.write(1, 0x40);
        assert_eq!(u.read(1), 0, "UUE bit must not stick (XScale probe)");
    }

    #[test]
    fn fifo_enable_reported_in_iir() {
        let mut u = Uart16550::new();
        u.write(2, 0x01);
        assert_eq!(u.read(2) >> 6, 3, "Linux reads IIR>>6 == 3 as 16550A");
        u.write(2, 0x00);
        assert_eq!(u.read(2) >> 6, 0);
    }

    #[test]
    fn loopback_maps_modem_lines() {
        let mut u = Uart16550::new();
        u.write(4, MCR_LOOP | MCR_OUT2 | MCR_RTS);
        assert_eq!(u.read(6) & 0xF0, 0x90, "the 8250 loopback test");
        u.write(4, MCR_LOOP | MCR_DTR | MCR_OUT1);
        assert_eq!(u.read(6) & 0xF0, MSR_DSR | MSR_RI);
    }

    #[test]
    fn modem_status_deltas_and_interrupt() {
        let mut u = Uart16550::new();
        u.write(4, MCR_LOOP | MCR_OUT1);
        u.read(6);
        u.write(1, IER_EDSSI);
        u.write(4, MCR_LOOP | MCR_OUT2 | MCR_RTS);
        assert_eq!(u.read(2), IIR_MSR);
        assert!(u.irq_level());
        let msr = u.read(6);
        assert_eq!(msr & MSR_DELTAS, 0x01 | MSR_TERI | 0x08);
        assert_eq!(u.read(6) & MSR_DELTAS, 0, "reading MSR clears deltas");
        assert!(!u.irq_level());
    }

    #[test]
    fn loopback_returns_transmitted_bytes_to_receiver() {
        let mut u = Uart16550::new();
        u.write(2, FCR_ENABLE);
        u.write(4, MCR_LOOP);
        for i in 0..20u8 {
            assert_eq!(u.write(0, i), None);
        }
        let mut n = 0;
        while u.read(5) & LSR_DR != 0 {
            assert_eq!(u.read(0), n);
            n += 1;
        }
        assert_eq!(n, 16, "size_fifo() must count 16 bytes, not 64");
    }

    #[test]
    fn overrun_sets_oe_and_line_status_interrupt() {
        let mut u = Uart16550::new();
        u.write(4, MCR_LOOP | MCR_OUT2);
        u.write(1, IER_ELSI);
        u.write(0, 1);
        u.write(0, 2);
        assert_eq!(u.read(2), IIR_RLS);
        assert_eq!(u.read(5) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(u.read(5) & LSR_OE, 0, "reading LSR clears OE");
        assert_eq!(u.read(2), IIR_NO_INT);
    }

    #[test]
    fn receive_fifo_and_push_input_limit() {
        let mut u = Uart16550::new();
        assert!(u.push_input(1));
        assert!(!u.push_input(2), "non-FIFO mode holds one byte");
        u.write(2, FCR_ENABLE);
        for i in 0..16 {
            assert!(u.push_input(i));
        }
        assert!(!u.push_input(99));
        assert_eq!(u.read(0), 0);
        u.write(2, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(u.read(5) & LSR_DR, 0);
    }

    #[test]
    fn receive_interrupt_uses_trigger_level() {
        let mut u = Uart16550::new();
        u.write(4, MCR_OUT2);
        u.write(2, FCR_ENABLE | 0x40);
        u.write(1, IER_ERBFI);
        assert!(!u.irq_level());
        u.push_input(b'x');
        assert_eq!(u.read(2), IIR_FIFO_ENABLED | IIR_TIMEOUT);
        for _ in 0..3 {
            u.push_input(b'y');
        }
        assert_eq!(u.read(2), IIR_FIFO_ENABLED | IIR_RDA);
        assert!(u.irq_level());
        while u.read(5) & LSR_DR != 0 {
            u.read(0);
        }
        assert!(!u.irq_level());
    }

    #[test]
    fn thre_interrupt_semantics() {
        let mut u = Uart16550::new();
        u.write(4, MCR_OUT2);
        u.write(1, IER_ETBEI);
        assert!(u.irq_level(), "enabling ETBEI with THR empty raises THRE");
        assert_eq!(u.read(2), IIR_THRE);
        assert!(!u.irq_level(), "reading IIR clears THRE");
        assert_eq!(u.read(2), IIR_NO_INT);
        u.write(0, b'z');
        assert!(u.irq_level(), "THR empties again after the write");
        // Linux's UART_BUG_THRE test: re-enabling ETBEI must re-raise THRE.
        u.read(2);
        u.write(1, 0);
        u.write(1, IER_ETBEI);
        assert_eq!(u.read(2), IIR_THRE);
    }

    #[test]
    fn irq_requires_out2() {
        let mut u = Uart16550::new();
        u.write(1, IER_ERBFI);
        u.push_input(1);
        assert!(!u.irq_level());
        u.write(4, MCR_OUT2);
        assert!(u.irq_level());
    }

    #[test]
    fn lsr_error_does_not_interrupt_when_disabled() {
        let mut u = Uart16550::new();
        u.write(4, MCR_LOOP | MCR_OUT2);
        u.write(0, 1);
        u.write(0, 2);
        assert_eq!(u.read(2), IIR_NO_INT);
        assert_eq!(u.read(1), 0);
    }
}
