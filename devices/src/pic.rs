//! The PC's cascaded pair of 8259A programmable interrupt controllers (master at 0x20/0x21,
//! slave at 0xA0/0xA1 on master IRQ 2) with the PIIX edge/level control registers at
//! 0x4D0/0x4D1. Modelled after the Intel 8259A datasheet: ICW1-4, OCW1-3, rotation, auto-EOI,
//! special mask and poll mode. It is not an interrupt router: callers drive the IRQ lines.

/// Master IRQ the slave's INT output is wired to.
const CASCADE_IRQ: u8 = 2;
/// IRQs whose ELCR bit is fixed at edge: 0, 1, 2 on the master, 8 and 13 on the slave.
const ELCR_MASK: [u8; 2] = [0xF8, 0xDE];

/// One 8259A.
#[derive(Default)]
struct Pic {
    /// Interrupt request register.
    irr: u8,
    /// In-service register.
    isr: u8,
    /// Interrupt mask register (OCW1).
    imr: u8,
    /// Current input line levels, for edge detection.
    lines: u8,
    /// Level-triggered inputs (ELCR).
    elcr: u8,
    /// IRQ number with the highest priority (changed by rotation).
    lowest_priority_plus_one: u8,
    vector_base: u8,
    /// Next ICW expected after ICW1: 0 = none (OCW mode), 2, 3 or 4.
    next_icw: u8,
    icw4_needed: bool,
    single: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    special_mask: bool,
    read_isr: bool,
    poll: bool,
}

impl Pic {
    fn set_line(&mut self, irq: u8, level: bool) {
        let mask = 1u8 << (irq & 7);
        if level {
            // 8259A: edge mode latches a low-to-high transition; level mode follows the line.
            if self.elcr & mask != 0 || self.lines & mask == 0 {
                self.irr |= mask;
            }
            self.lines |= mask;
        } else {
            self.lines &= !mask;
            if self.elcr & mask != 0 {
                self.irr &= !mask;
            }
        }
    }

    /// Priority (0 = highest) of the highest-priority bit set in `mask`, or 8 for none.
    fn priority(&self, mask: u8) -> u8 {
        (0..8)
            .find(|p| mask & (1 << ((p + self.lowest_priority_plus_one) & 7)) != 0)
            .unwrap_or(8)
    }

    /// The IRQ this chip would present on INT now, if any.
    fn pending_irq(&self) -> Option<u8> {
        let requested = self.priority(self.irr & !self.imr);
        if requested == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested {
            // SFNM: a further slave interrupt may nest over the one in service.
            in_service &= !(1 << CASCADE_IRQ);
        }
        (requested < self.priority(in_service))
            .then_some((requested + self.lowest_priority_plus_one) & 7)
    }

    /// INTA for `irq`: IRR to ISR (or auto-EOI).
    fn acknowledge(&mut self, irq: u8) {
        let mask = 1u8 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.lowest_priority_plus_one = (irq + 1) & 7;
            }
        } else {
            self.isr |= mask;
        }
        if self.elcr & mask == 0 {
            self.irr &= !mask;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            self.icw1(value);
        } else if value & 0x08 != 0 {
            self.ocw3(value);
        } else {
            self.ocw2(value);
        }
    }

    fn icw1(&mut self, value: u8) {
        // Initialization clears IMR and ISR, resets rotation and special mask, selects IRR,
        // and resets the edge-sense latches (datasheet "Initialization Command Words").
        self.imr = 0;
        self.isr = 0;
        self.irr = self.lines & self.elcr;
        self.lowest_priority_plus_one = 0;
        self.special_mask = false;
        self.read_isr = false;
        self.poll = false;
        self.auto_eoi = false;
        self.rotate_on_auto_eoi = false;
        self.special_fully_nested = false;
        self.icw4_needed = value & 0x01 != 0;
        self.single = value & 0x02 != 0;
        self.next_icw = 2;
    }

    fn ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            // Clear / set rotate in automatic EOI mode.
            0 => self.rotate_on_auto_eoi = false,
            4 => self.rotate_on_auto_eoi = true,
            // Non-specific EOI, optionally rotating.
            cmd @ (1 | 5) => {
                let p = self.priority(self.isr);
                if p != 8 {
                    let irq = (p + self.lowest_priority_plus_one) & 7;
                    self.isr &= !(1 << irq);
                    if cmd == 5 {
                        self.lowest_priority_plus_one = (irq + 1) & 7;
                    }
                }
            }
            3 => self.isr &= !(1 << level),
            7 => {
                self.isr &= !(1 << level);
                self.lowest_priority_plus_one = (level + 1) & 7;
            }
            6 => self.lowest_priority_plus_one = (level + 1) & 7,
            _ => {}
        }
    }

    fn ocw3(&mut self, value: u8) {
        if value & 0x04 != 0 {
            self.poll = true;
        }
        if value & 0x02 != 0 {
            self.read_isr = value & 0x01 != 0;
        }
        if value & 0x40 != 0 {
            self.special_mask = value & 0x20 != 0;
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.next_icw {
            2 => {
                self.vector_base = value & 0xF8;
                self.next_icw = if !self.single {
                    3
                } else if self.icw4_needed {
                    4
                } else {
                    0
                };
            }
            // ICW3 (cascade wiring) is fixed by the board.
            3 => self.next_icw = if self.icw4_needed { 4 } else { 0 },
            4 => {
                self.auto_eoi = value & 0x02 != 0;
                self.special_fully_nested = value & 0x10 != 0;
                self.next_icw = 0;
            }
            _ => self.imr = value,
        }
    }

    /// Poll command read: acknowledges like INTA and returns 0x80 | irq, or 0.
    fn poll_read(&mut self) -> u8 {
        self.poll = false;
        match self.pending_irq() {
            Some(irq) => {
                self.acknowledge(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    fn read(&mut self, data_port: bool) -> u8 {
        if self.poll {
            self.poll_read()
        } else if data_port {
            self.imr
        } else if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }
}

/// Master and slave 8259A with ELCR.
pub struct PicPair {
    chips: [Pic; 2],
}

impl Default for PicPair {
    fn default() -> Self {
        Self::new()
    }
}

impl PicPair {
    pub fn new() -> Self {
        Self {
            chips: [Pic::default(), Pic::default()],
        }
    }

    /// Whether `port` belongs to the pair.
    pub fn claims(port: u16) -> bool {
        matches!(port, 0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1)
    }

    pub fn read(&mut self, port: u16) -> u8 {
        let value = match port {
            0x20 | 0x21 => self.chips[0].read(port & 1 != 0),
            0xA0 | 0xA1 => self.chips[1].read(port & 1 != 0),
            0x4D0 => self.chips[0].elcr,
            0x4D1 => self.chips[1].elcr,
            _ => 0xFF,
        };
        self.update_cascade();
        value
    }

    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            0x20 => self.chips[0].write_command(value),
            0x21 => self.chips[0].write_data(value),
            0xA0 => self.chips[1].write_command(value),
            0xA1 => self.chips[1].write_data(value),
            0x4D0 | 0x4D1 => {
                let i = usize::from(port & 1);
                self.chips[i].elcr = value & ELCR_MASK[i];
            }
            _ => {}
        }
        self.update_cascade();
    }

    /// Drives ISA IRQ line `irq` (0..15); out-of-range lines are ignored.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        if irq < 16 {
            self.chips[usize::from(irq >> 3)].set_line(irq & 7, level);
            self.update_cascade();
        }
    }

    /// The master's INT output.
    pub fn interrupt_pending(&self) -> bool {
        self.chips[0].pending_irq().is_some()
    }

    /// INTA cycle: the vector of the highest-priority request, or the spurious IRQ 7 (IRQ 15
    /// for the slave) vector when the request went away (datasheet: "default IR7").
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.chips[0].pending_irq() {
            Some(CASCADE_IRQ) => {
                self.chips[0].acknowledge(CASCADE_IRQ);
                let slave = &mut self.chips[1];
                match slave.pending_irq() {
                    Some(irq) => {
                        slave.acknowledge(irq);
                        slave.vector_base | irq
                    }
                    None => slave.vector_base | 7,
                }
            }
            Some(irq) => {
                self.chips[0].acknowledge(irq);
                self.chips[0].vector_base | irq
            }
            None => self.chips[0].vector_base | 7,
        };
        self.update_cascade();
        vector
    }

    /// The slave's INT output is wired as a level to master IRQ 2.
    fn update_cascade(&mut self) {
        let slave_int = self.chips[1].pending_irq().is_some();
        let master = &mut self.chips[0];
        let mask = 1 << CASCADE_IRQ;
        master.lines = (master.lines & !mask) | if slave_int { mask } else { 0 };
        master.irr = (master.irr & !mask) | if slave_int { mask } else { 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's init_8259A: edge-triggered, vectors 0x30 and 0x38, 8086 mode, normal EOI.
    fn linux_init(auto_eoi: bool) -> PicPair {
        let mut p = PicPair::new();
        let icw4 = if auto_eoi { 0x03 } else { 0x01 };
        p.write(0x21, 0xFF);
        p.write(0xA1, 0xFF);
        p.write(0x20, 0x11);
        p.write(0x21, 0x30);
        p.write(0x21, 0x04);
        p.write(0x21, icw4);
        p.write(0xA0, 0x11);
        p.write(0xA1, 0x38);
        p.write(0xA1, 0x02);
        p.write(0xA1, 0x01);
        p.write(0x21, 0x00);
        p.write(0xA1, 0x00);
        p
    }

    #[test]
    fn probe_reads_back_mask() {
        let mut p = PicPair::new();
        p.write(0x21, 0xFF);
        assert_eq!(p.read(0x21), 0xFF);
        p.write(0xA1, 0x5A);
        assert_eq!(p.read(0xA1), 0x5A);
    }

    #[test]
    fn icw1_clears_mask_and_sets_vector_base() {
        let mut p = linux_init(false);
        assert_eq!(p.read(0x21), 0);
        p.set_irq(1, true);
        assert!(p.interrupt_pending());
        assert_eq!(p.acknowledge(), 0x31);
        assert!(!p.interrupt_pending());
    }

    #[test]
    fn edge_needs_a_new_rising_edge() {
        let mut p = linux_init(false);
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), 0x30);
        p.write(0x20, 0x20);
        p.set_irq(0, true);
        assert!(!p.interrupt_pending(), "line held high: no new edge");
        p.set_irq(0, false);
        p.set_irq(0, true);
        assert!(p.interrupt_pending());
    }

    #[test]
    fn level_mode_follows_line_and_rerequests_after_eoi() {
        let mut p = linux_init(false);
        p.write(0x4D1, 0x02);
        assert_eq!(p.read(0x4D1), 0x02);
        p.set_irq(9, true);
        assert_eq!(p.acknowledge(), 0x39);
        assert!(!p.interrupt_pending(), "in service blocks");
        p.write(0xA0, 0x20);
        p.write(0x20, 0x20);
        assert!(p.interrupt_pending(), "level still high");
        p.set_irq(9, false);
        assert!(!p.interrupt_pending());
    }

    #[test]
    fn elcr_fixed_edge_bits() {
        let mut p = PicPair::new();
        p.write(0x4D0, 0xFF);
        p.write(0x4D1, 0xFF);
        assert_eq!(p.read(0x4D0), 0xF8);
        assert_eq!(p.read(0x4D1), 0xDE);
    }

    #[test]
    fn priority_and_nesting() {
        let mut p = linux_init(false);
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), 0x34);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x33, "higher priority nests");
        p.set_irq(5, true);
        assert!(!p.interrupt_pending(), "lower priority waits");
        p.write(0x20, 0x60 | 3);
        p.write(0x20, 0x20);
        assert_eq!(p.acknowledge(), 0x35);
    }

    #[test]
    fn read_irr_and_isr_via_ocw3() {
        let mut p = linux_init(false);
        p.write(0x21, 0xFF);
        p.set_irq(6, true);
        assert_eq!(p.read(0x20), 0x40);
        p.write(0x21, 0x00);
        p.acknowledge();
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0x20), 0x40);
        p.write(0x20, 0x0A);
        assert_eq!(p.read(0x20), 0x00);
    }

    #[test]
    fn cascade_through_irq2() {
        let mut p = linux_init(false);
        p.set_irq(12, true);
        assert!(p.interrupt_pending());
        assert_eq!(p.acknowledge(), 0x3C);
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0x20), 0x04);
        p.write(0xA0, 0x0B);
        assert_eq!(p.read(0xA0), 0x10);
        p.write(0xA0, 0x20);
        p.write(0x20, 0x20);
        assert_eq!(p.read(0x20), 0);
    }

    #[test]
    fn masked_slave_does_not_raise_master() {
        let mut p = linux_init(false);
        p.write(0xA1, 0xFF);
        p.set_irq(8, true);
        assert!(!p.interrupt_pending());
        p.write(0xA1, 0x00);
        assert!(p.interrupt_pending());
    }

    #[test]
    fn spurious_vectors() {
        let mut p = linux_init(false);
        assert_eq!(p.acknowledge(), 0x37);
        p.write(0x4D1, 0x02);
        p.set_irq(9, true);
        assert!(p.interrupt_pending());
        p.set_irq(9, false);
        assert_eq!(p.acknowledge(), 0x37, "request gone before INTA");
    }

    #[test]
    fn auto_eoi_leaves_isr_clear() {
        let mut p = linux_init(true);
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), 0x30);
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0x20), 0);
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), 0x31);
    }

    #[test]
    fn masked_irq_stays_in_irr() {
        let mut p = linux_init(false);
        p.write(0x21, 0x01);
        p.set_irq(0, true);
        assert!(!p.interrupt_pending());
        p.write(0x21, 0x00);
        assert_eq!(p.acknowledge(), 0x30);
    }

    #[test]
    fn rotation_changes_priority() {
        let mut p = linux_init(false);
        p.set_irq(0, true);
        p.acknowledge();
        p.write(0x20, 0xA0);
        p.set_irq(0, false);
        p.set_irq(0, true);
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), 0x31, "IRQ0 now lowest priority");
    }

    #[test]
    fn poll_mode_acknowledges() {
        let mut p = linux_init(false);
        p.set_irq(5, true);
        p.write(0x20, 0x0C);
        assert_eq!(p.read(0x20), 0x85);
        p.write(0x20, 0x0C);
        assert_eq!(p.read(0x20), 0x00);
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0x20), 0x20);
    }

    #[test]
    fn special_mask_mode_allows_lower_priority() {
        let mut p = linux_init(false);
        p.set_irq(3, true);
        p.acknowledge();
        p.write(0x21, 0x08);
        p.write(0x20, 0x68);
        p.set_irq(5, true);
        assert_eq!(p.acknowledge(), 0x35);
    }

    #[test]
    fn out_of_range_irq_ignored() {
        let mut p = linux_init(false);
        p.set_irq(200, true);
        assert!(!p.interrupt_pending());
    }
}
