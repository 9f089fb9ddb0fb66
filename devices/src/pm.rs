//! ACPI fixed hardware (PM1a event and control blocks, the PM timer) and the ways a guest asks
//! for power-off or reset: SLP_EN with `\_S5`'s SLP_TYP, the PIIX reset control register at
//! 0xCF9, and the i8042's pulse-reset command. Register layout per ACPI 6.5 section 4.8.
//! It is not a keyboard controller: the i8042 here only reports "nothing to read" and resets.

use crate::layout;

/// What the guest asked the machine to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerEvent {
    PowerOff,
    Reset,
}

/// ACPI PM timer frequency (ACPI 6.5 section 4.8.3.3).
pub const PM_TIMER_HZ: u64 = 3_579_545;

// PM1 status / enable bits (ACPI 6.5 tables 4.16 and 4.17).
const TMR_STS: u16 = 1 << 0;
const PWRBTN_STS: u16 = 1 << 8;
/// Status bits the guest may see set: TMR, BM, GBL, PWRBTN, SLPBTN, RTC, WAK.
const PM1_STS_MASK: u16 = 0x8731;
/// TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN.
const PM1_EN_MASK: u16 = 0x0721;

// PM1 control bits (ACPI 6.5 table 4.19).
const SCI_EN: u16 = 1 << 0;
/// BM_RLD and SLP_TYP are stored; GBL_RLS and SLP_EN are write-only.
const PM1_CNT_STORED: u16 = 0x1C02;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_EN: u16 = 1 << 13;

/// PIIX reset control register: bit 2 (RST_CPU) starts the reset.
const RCR_RST_CPU: u8 = 0x04;

const I8042_DATA: u16 = 0x60;
const I8042_COMMAND: u16 = 0x64;
/// Status: system flag, last write was a command, keyboard not inhibited; buffers empty.
const I8042_STATUS: u8 = 0x1C;
const I8042_PULSE_RESET: u8 = 0xFE;

pub struct Pm {
    tsc_hz: u64,
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    /// Bit-31 periods of the PM timer already reflected in TMR_STS.
    timer_epoch: u64,
    reset_control: u8,
}

impl Pm {
    pub fn new(tsc_hz: u64) -> Self {
        Self {
            tsc_hz: tsc_hz.max(1),
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: 0,
            timer_epoch: 0,
            reset_control: 0,
        }
    }

    pub fn claims(port: u16) -> bool {
        in_block(port, layout::PM1A_EVT_BLK, 4)
            || in_block(port, layout::PM1A_CNT_BLK, 2)
            || in_block(port, layout::PM_TMR_BLK, 4)
            || matches!(port, layout::RESET_PORT | I8042_DATA | I8042_COMMAND)
    }

    /// Reads `size` bytes (1, 2 or 4) starting at `port`, little-endian, byte by byte.
    pub fn read(&mut self, port: u16, size: u8, now: u64) -> u32 {
        self.update_timer_status(now);
        (0..u16::from(size.min(4))).fold(0, |acc, i| {
            acc | u32::from(self.read_byte(port.wrapping_add(i), now)) << (8 * i)
        })
    }

    /// Writes `size` bytes starting at `port`; returns the power event the write requested.
    pub fn write(&mut self, port: u16, size: u8, value: u32, now: u64) -> Option<PowerEvent> {
        self.update_timer_status(now);
        let mut event = None;
        for i in 0..u16::from(size.min(4)) {
            let byte = (value >> (8 * i)) as u8;
            event = event.or(self.write_byte(port.wrapping_add(i), byte, now));
        }
        event
    }

    pub fn press_power_button(&mut self) {
        self.pm1_sts |= PWRBTN_STS;
    }

    /// The SCI line (SCI_EN is hard-wired on: there is no SMI_CMD to leave legacy mode).
    pub fn sci_level(&self) -> bool {
        self.pm1_sts & self.pm1_en & (PWRBTN_STS | TMR_STS) != 0
    }

    /// Brings TMR_STS up to `now`.
    pub fn poll(&mut self, now: u64) {
        self.update_timer_status(now);
    }

    /// TSC time of the next TMR_STS event, when the guest enabled it.
    pub fn next_event(&self) -> Option<u64> {
        if self.pm1_en & TMR_STS == 0 {
            return None;
        }
        let tick = u128::from(self.timer_epoch + 1) << 31;
        let t = (tick * u128::from(self.tsc_hz)).div_ceil(u128::from(PM_TIMER_HZ));
        u64::try_from(t).ok()
    }

    fn timer_ticks(&self, now: u64) -> u64 {
        (u128::from(now) * u128::from(PM_TIMER_HZ) / u128::from(self.tsc_hz)) as u64
    }

    /// TMR_STS is set each time bit 31 of the 32-bit timer changes (ACPI 6.5 4.8.3.3).
    fn update_timer_status(&mut self, now: u64) {
        let epoch = self.timer_ticks(now) >> 31;
        if epoch > self.timer_epoch {
            self.timer_epoch = epoch;
            self.pm1_sts |= TMR_STS;
        }
    }

    fn read_byte(&mut self, port: u16, now: u64) -> u8 {
        let evt = layout::PM1A_EVT_BLK;
        match port {
            p if in_block(p, evt, 2) => byte_of(u32::from(self.pm1_sts), p - evt),
            p if in_block(p, evt + 2, 2) => byte_of(u32::from(self.pm1_en), p - evt - 2),
            p if in_block(p, layout::PM1A_CNT_BLK, 2) => {
                byte_of(u32::from(self.pm1_cnt | SCI_EN), p - layout::PM1A_CNT_BLK)
            }
            p if in_block(p, layout::PM_TMR_BLK, 4) => {
                byte_of(self.timer_ticks(now) as u32, p - layout::PM_TMR_BLK)
            }
            layout::RESET_PORT => self.reset_control,
            I8042_COMMAND => I8042_STATUS,
            I8042_DATA => 0,
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, port: u16, value: u8, now: u64) -> Option<PowerEvent> {
        let evt = layout::PM1A_EVT_BLK;
        match port {
            p if in_block(p, evt, 2) => {
                // Write 1 to clear.
                let bits = u16::from(value) << (8 * (p - evt));
                self.pm1_sts &= !(bits & PM1_STS_MASK);
                if bits & TMR_STS != 0 {
                    self.update_timer_status(now);
                }
            }
            p if in_block(p, evt + 2, 2) => {
                let shift = 8 * (p - evt - 2);
                let en = (self.pm1_en & !(0xFF << shift)) | u16::from(value) << shift;
                self.pm1_en = en & PM1_EN_MASK;
            }
            p if in_block(p, layout::PM1A_CNT_BLK, 2) => {
                return self.write_pm1_cnt_byte(p - layout::PM1A_CNT_BLK, value);
            }
            layout::RESET_PORT => {
                self.reset_control = value;
                if value & RCR_RST_CPU != 0 {
                    return Some(PowerEvent::Reset);
                }
            }
            I8042_COMMAND if value == I8042_PULSE_RESET => return Some(PowerEvent::Reset),
            _ => {}
        }
        None
    }

    fn write_pm1_cnt_byte(&mut self, index: u16, value: u8) -> Option<PowerEvent> {
        let shift = 8 * index;
        let written = u16::from(value) << shift;
        let byte_mask = 0xFF << shift;
        self.pm1_cnt = (self.pm1_cnt & !byte_mask) | (written & PM1_CNT_STORED);
        if written & SLP_EN == 0 {
            return None;
        }
        // Only \_S5 is offered; other sleep types are ignored (ACPI 6.5 section 7.4.2).
        let slp_typ = (self.pm1_cnt >> SLP_TYP_SHIFT) & 7;
        (slp_typ == u16::from(layout::S5_SLP_TYP)).then_some(PowerEvent::PowerOff)
    }
}

fn in_block(port: u16, base: u16, len: u16) -> bool {
    port.wrapping_sub(base) < len
}

fn byte_of(value: u32, index: u16) -> u8 {
    (value >> (8 * u32::from(index))) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 2_000_000_000;

    #[test]
    fn claims_ports() {
        assert!(Pm::claims(layout::PM1A_EVT_BLK + 3));
        assert!(Pm::claims(layout::PM1A_CNT_BLK + 1));
        assert!(!Pm::claims(layout::PM1A_CNT_BLK + 2));
        assert!(Pm::claims(layout::PM_TMR_BLK + 3));
        assert!(Pm::claims(0xCF9));
        assert!(Pm::claims(0x64));
        assert!(!Pm::claims(0xCF8));
    }

    #[test]
    fn s5_powers_off() {
        let mut pm = Pm::new(HZ);
        let cnt = u32::from(layout::S5_SLP_TYP) << 10 | u32::from(SLP_EN);
        assert_eq!(
            pm.write(layout::PM1A_CNT_BLK, 2, cnt, 0),
            Some(PowerEvent::PowerOff)
        );
    }

    #[test]
    fn s5_by_byte_write_of_high_byte() {
        let mut pm = Pm::new(HZ);
        let hi = (u32::from(layout::S5_SLP_TYP) << 2) | 0x20;
        assert_eq!(
            pm.write(layout::PM1A_CNT_BLK + 1, 1, hi, 0),
            Some(PowerEvent::PowerOff)
        );
    }

    #[test]
    fn other_sleep_types_ignored_and_slp_en_not_stored() {
        let mut pm = Pm::new(HZ);
        let cnt = 3 << 10 | u32::from(SLP_EN);
        assert_eq!(pm.write(layout::PM1A_CNT_BLK, 2, cnt, 0), None);
        assert_eq!(pm.read(layout::PM1A_CNT_BLK, 2, 0), 3 << 10 | 1);
        // SLP_TYP without SLP_EN does nothing either.
        assert_eq!(pm.write(layout::PM1A_CNT_BLK, 2, 5 << 10, 0), None);
    }

    #[test]
    fn sci_en_reads_as_set() {
        let mut pm = Pm::new(HZ);
        assert_eq!(pm.read(layout::PM1A_CNT_BLK, 2, 0) & 1, 1);
        pm.write(layout::PM1A_CNT_BLK, 2, 0, 0);
        assert_eq!(pm.read(layout::PM1A_CNT_BLK, 1, 0) & 1, 1);
    }

    #[test]
    fn power_button_sci_and_write_one_to_clear() {
        let mut pm = Pm::new(HZ);
        pm.press_power_button();
        assert!(!pm.sci_level(), "not enabled");
        pm.write(layout::PM1A_EVT_BLK + 2, 2, u32::from(PWRBTN_STS), 0);
        assert!(pm.sci_level());
        assert_eq!(
            pm.read(layout::PM1A_EVT_BLK, 4, 0),
            u32::from(PWRBTN_STS) | u32::from(PWRBTN_STS) << 16
        );
        pm.write(layout::PM1A_EVT_BLK, 2, 0, 0);
        assert!(pm.sci_level(), "writing 0 leaves status");
        pm.write(layout::PM1A_EVT_BLK + 1, 1, 0x01, 0);
        assert!(!pm.sci_level());
        assert_eq!(pm.read(layout::PM1A_EVT_BLK, 2, 0), 0);
    }

    #[test]
    fn pm_timer_follows_tsc() {
        let mut pm = Pm::new(HZ);
        assert_eq!(pm.read(layout::PM_TMR_BLK, 4, 0), 0);
        assert_eq!(pm.read(layout::PM_TMR_BLK, 4, HZ), PM_TIMER_HZ as u32);
        let lo = pm.read(layout::PM_TMR_BLK, 1, HZ);
        assert_eq!(u64::from(lo), PM_TIMER_HZ & 0xFF);
        // Wraps at 32 bits.
        let wrap = (u128::from(HZ) << 32).div_ceil(u128::from(PM_TIMER_HZ)) as u64;
        assert_eq!(pm.read(layout::PM_TMR_BLK, 4, wrap), 0);
    }

    #[test]
    fn timer_status_on_bit31_change() {
        let mut pm = Pm::new(HZ);
        pm.write(layout::PM1A_EVT_BLK + 2, 2, u32::from(TMR_STS), 0);
        let t = pm.next_event().expect("TMR_EN set");
        pm.poll(t - 1);
        assert!(!pm.sci_level());
        pm.poll(t);
        assert!(pm.sci_level());
        pm.write(layout::PM1A_EVT_BLK, 2, u32::from(TMR_STS), t);
        assert!(!pm.sci_level());
        assert!(pm.next_event().unwrap() > t);
    }

    #[test]
    fn reset_register() {
        let mut pm = Pm::new(HZ);
        assert_eq!(pm.write(0xCF9, 1, 0x02, 0), None);
        assert_eq!(pm.read(0xCF9, 1, 0), 0x02);
        assert_eq!(
            pm.write(0xCF9, 1, u32::from(layout::RESET_VALUE), 0),
            Some(PowerEvent::Reset)
        );
        assert_eq!(pm.write(0xCF9, 1, 0x0E, 0), Some(PowerEvent::Reset));
    }

    #[test]
    fn i8042() {
        let mut pm = Pm::new(HZ);
        assert_eq!(pm.read(0x64, 1, 0), 0x1C);
        assert_eq!(pm.read(0x60, 1, 0), 0);
        assert_eq!(pm.write(0x64, 1, 0xAA, 0), None);
        assert_eq!(pm.write(0x60, 1, 0xFE, 0), None);
        assert_eq!(pm.write(0x64, 1, 0xFE, 0), Some(PowerEvent::Reset));
    }

    #[test]
    fn enable_register_masks_reserved_bits() {
        let mut pm = Pm::new(HZ);
        pm.write(layout::PM1A_EVT_BLK + 2, 2, 0xFFFF, 0);
        assert_eq!(
            pm.read(layout::PM1A_EVT_BLK + 2, 2, 0),
            u32::from(PM1_EN_MASK)
        );
    }
}
