//! The MC146818 real-time clock and its 128 bytes of CMOS RAM at ports 0x70 (index) and
//! 0x71 (data). The clock runs from `epoch_secs` plus the guest TSC, shifted by whatever time
//! the guest sets; registers A-D, BCD/binary and 12/24-hour formats, the update-in-progress
//! window and the update, alarm and periodic interrupt flags follow the Motorola MC146818A
//! datasheet. The memory-size bytes are filled in the layout SeaBIOS and Linux read.
//! It is not a battery: nothing persists across VM restarts.

const REG_SECONDS: u8 = 0x00;
const REG_SECONDS_ALARM: u8 = 0x01;
const REG_MINUTES: u8 = 0x02;
const REG_MINUTES_ALARM: u8 = 0x03;
const REG_HOURS: u8 = 0x04;
const REG_HOURS_ALARM: u8 = 0x05;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY_OF_MONTH: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0A;
const REG_B: u8 = 0x0B;
const REG_C: u8 = 0x0C;
const REG_D: u8 = 0x0D;
/// Century byte (the FADT's CENTURY field points here).
const REG_CENTURY: u8 = 0x32;

const A_UIP: u8 = 0x80;
const A_RATE: u8 = 0x0F;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_FLAGS: u8 = 0x70;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;
/// Alarm "don't care" code (datasheet: any value 0xC0-0xFF).
const ALARM_ANY: u8 = 0xC0;
const HOUR_PM: u8 = 0x80;

/// The time-of-day registers that the guest can freeze (SET) and rewrite.
const TIME_REGS: [u8; 8] = [
    REG_SECONDS,
    REG_MINUTES,
    REG_HOURS,
    REG_DAY_OF_WEEK,
    REG_DAY_OF_MONTH,
    REG_MONTH,
    REG_YEAR,
    REG_CENTURY,
];

/// UIP is set this long before each update (datasheet: 244 us, with a 32.768 kHz time base).
const UIP_MICROS: u64 = 244;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A calendar time, all fields binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: u32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// 1 = Sunday.
    weekday: u8,
}

impl DateTime {
    fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4) % 7 + 1) as u8,
        }
    }

    fn to_unix(self) -> u64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + u64::from(self.hour) * 3600
            + u64::from(self.minute) * 60
            + u64::from(self.second)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian, in 400-year eras.
fn civil_from_days(days: u64) -> (u32, u8, u8) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year as u32, month, day)
}

/// Inverse of `civil_from_days`; dates before 1970 saturate to day 0.
fn days_from_civil(year: u32, month: u8, day: u8) -> u64 {
    let year = u64::from(year).saturating_sub(u64::from(month <= 2));
    let era = year / 400;
    let yoe = year % 400;
    let m = u64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + u64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0xF)
}

pub struct Rtc {
    tsc_hz: u64,
    epoch_secs: u64,
    /// Seconds the guest moved the clock by.
    offset: i64,
    index: u8,
    cmos: [u8; 128],
    /// Register C interrupt flags (PF, AF, UF).
    flags: u8,
    /// Whole seconds of guest time (now / tsc_hz) already checked for UF and AF.
    last_second: u64,
    /// Periodic-interrupt periods already checked for PF.
    last_period: u64,
}

impl Rtc {
    pub fn new(ram_bytes: u64, epoch_secs: u64, tsc_hz: u64) -> Self {
        let mut rtc = Self {
            tsc_hz: tsc_hz.max(1),
            epoch_secs,
            offset: 0,
            index: 0,
            cmos: [0; 128],
            flags: 0,
            last_second: 0,
            last_period: 0,
        };
        // Divider on (32.768 kHz), 1024 Hz periodic rate; 24-hour BCD; battery good.
        rtc.cmos[usize::from(REG_A)] = 0x26;
        rtc.cmos[usize::from(REG_B)] = B_24H;
        rtc.cmos[usize::from(REG_D)] = D_VRT;
        rtc.fill_memory_size(ram_bytes);
        rtc
    }

    /// Whether `port` belongs to the RTC.
    pub fn claims(port: u16) -> bool {
        matches!(port, 0x70 | 0x71)
    }

    /// The memory-size bytes as the IBM PC/AT BIOS and SeaBIOS (`src/fw/paravirt.c`) lay them
    /// out. Guest RAM is contiguous from address 0; the part beyond 4 GiB is reported above it.
    fn fill_memory_size(&mut self, ram_bytes: u64) {
        let below_4g = ram_bytes.min(4 * GIB);
        let above_4g = ram_bytes - below_4g;
        let base_kib: u64 = 640;
        let ext_kib = (below_4g.saturating_sub(MIB) / KIB).min(0xFFFF);
        let above_16m = (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF);
        let high = (above_4g / (64 * KIB)).min(0xFF_FFFF);
        for (reg, value, bytes) in [
            (0x15, base_kib, 2),
            (0x17, ext_kib, 2),
            (0x30, ext_kib, 2),
            (0x34, above_16m, 2),
            (0x5B, high, 3),
        ] {
            for i in 0..bytes {
                self.cmos[reg + i] = (value >> (8 * i)) as u8;
            }
        }
        // SeaBIOS reads the CPU count minus one here.
        self.cmos[0x5F] = 0;
    }

    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        match port {
            0x71 => self.read_register(now),
            // The index port is write-only on the PC; reads float.
            _ => 0xFF,
        }
    }

    pub fn write(&mut self, port: u16, value: u8, now: u64) {
        match port {
            // Bit 7 is the chipset's NMI mask, not part of the index.
            0x70 => self.index = value & 0x7F,
            0x71 => self.write_register(value, now),
            _ => {}
        }
    }

    /// Brings the interrupt flags up to `now`.
    pub fn poll(&mut self, now: u64) {
        if self.register_b() & B_SET == 0 {
            let second = now / self.tsc_hz;
            if second > self.last_second {
                self.last_second = second;
                self.flags |= C_UF;
                if self.alarm_matches(now) {
                    self.flags |= C_AF;
                }
            }
        }
        if let Some(hz) = self.periodic_hz() {
            let period = self.period_index(now, hz);
            if period > self.last_period {
                self.last_period = period;
                self.flags |= C_PF;
            }
        }
    }

    /// The IRQ 8 line: an enabled flag in register C is set.
    pub fn irq_level(&self) -> bool {
        self.flags & self.register_b() & C_FLAGS != 0
    }

    /// TSC time at which an enabled interrupt flag may next be set.
    pub fn next_event(&self) -> Option<u64> {
        let b = self.register_b();
        self.next_flag(b & (B_UIE | B_AIE) != 0, b & B_PIE != 0)
    }

    /// TSC time at which `poll` may next set any flag, enabled or not: until then it changes
    /// nothing.
    pub fn next_change(&self) -> Option<u64> {
        self.next_flag(true, true)
    }

    /// The next update-ended (with the alarm check) and periodic flag times, of those asked.
    fn next_flag(&self, update: bool, periodic: bool) -> Option<u64> {
        let update = (update && self.register_b() & B_SET == 0)
            .then(|| (self.last_second + 1).saturating_mul(self.tsc_hz));
        let periodic = self
            .periodic_hz()
            .filter(|_| periodic)
            .map(|hz| self.period_start(self.last_period.saturating_add(1), hz));
        match (update, periodic) {
            (Some(u), Some(p)) => Some(u.min(p)),
            (u, p) => u.or(p),
        }
    }

    fn register_b(&self) -> u8 {
        self.cmos[usize::from(REG_B)]
    }

    /// Periodic interrupt rate from register A's rate select (datasheet table 5).
    fn periodic_hz(&self) -> Option<u64> {
        match self.cmos[usize::from(REG_A)] & A_RATE {
            0 => None,
            1 => Some(256),
            2 => Some(128),
            rate => Some(65_536 >> rate),
        }
    }

    fn period_index(&self, now: u64, hz: u64) -> u64 {
        (u128::from(now) * u128::from(hz) / u128::from(self.tsc_hz)) as u64
    }

    fn period_start(&self, index: u64, hz: u64) -> u64 {
        let t = (u128::from(index) * u128::from(self.tsc_hz)).div_ceil(u128::from(hz));
        u64::try_from(t).unwrap_or(u64::MAX)
    }

    fn unix_time(&self, now: u64) -> u64 {
        let secs =
            i128::from(self.epoch_secs) + i128::from(self.offset) + i128::from(now / self.tsc_hz);
        u64::try_from(secs.max(0)).unwrap_or(u64::MAX)
    }

    fn encode(&self, value: u8) -> u8 {
        if self.register_b() & B_BINARY != 0 {
            value
        } else {
            to_bcd(value)
        }
    }

    fn decode(&self, value: u8) -> u8 {
        if self.register_b() & B_BINARY != 0 {
            value
        } else {
            from_bcd(value)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.register_b() & B_24H != 0 {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { HOUR_PM } else { 0 };
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | pm
    }

    fn decode_hour(&self, value: u8) -> u8 {
        if self.register_b() & B_24H != 0 {
            return self.decode(value);
        }
        let pm = if value & HOUR_PM != 0 { 12 } else { 0 };
        self.decode(value & !HOUR_PM) % 12 + pm
    }

    /// The clock's current value of time register `reg`.
    fn clock_register(&self, reg: u8, now: u64) -> u8 {
        let t = DateTime::from_unix(self.unix_time(now));
        match reg {
            REG_SECONDS => self.encode(t.second),
            REG_MINUTES => self.encode(t.minute),
            REG_HOURS => self.encode_hour(t.hour),
            REG_DAY_OF_WEEK => self.encode(t.weekday),
            REG_DAY_OF_MONTH => self.encode(t.day),
            REG_MONTH => self.encode(t.month),
            REG_YEAR => self.encode((t.year % 100) as u8),
            _ => self.encode((t.year / 100 % 100) as u8),
        }
    }

    fn alarm_matches(&self, now: u64) -> bool {
        [
            (REG_SECONDS_ALARM, REG_SECONDS),
            (REG_MINUTES_ALARM, REG_MINUTES),
            (REG_HOURS_ALARM, REG_HOURS),
        ]
        .iter()
        .all(|&(alarm, reg)| {
            let a = self.cmos[usize::from(alarm)];
            a & ALARM_ANY == ALARM_ANY || a == self.clock_register(reg, now)
        })
    }

    /// UIP: set during the last 244 us before each once-a-second update.
    fn update_in_progress(&self, now: u64) -> bool {
        let window = (u128::from(self.tsc_hz) * u128::from(UIP_MICROS) / 1_000_000) as u64;
        self.register_b() & B_SET == 0 && now % self.tsc_hz >= self.tsc_hz - window
    }

    fn read_register(&mut self, now: u64) -> u8 {
        let reg = self.index;
        let set = self.register_b() & B_SET != 0;
        match reg {
            r if TIME_REGS.contains(&r) && !set => self.clock_register(r, now),
            REG_A => {
                let uip = if self.update_in_progress(now) {
                    A_UIP
                } else {
                    0
                };
                (self.cmos[usize::from(REG_A)] & !A_UIP) | uip
            }
            REG_C => {
                self.poll(now);
                let irqf = if self.irq_level() { C_IRQF } else { 0 };
                let value = self.flags | irqf;
                self.flags = 0;
                value
            }
            REG_D => D_VRT,
            r => self.cmos[usize::from(r & 0x7F)],
        }
    }

    fn write_register(&mut self, value: u8, now: u64) {
        let reg = self.index;
        match reg {
            REG_A => {
                self.cmos[usize::from(REG_A)] = value & !A_UIP;
                if let Some(hz) = self.periodic_hz() {
                    self.last_period = self.period_index(now, hz);
                }
            }
            REG_B => self.write_register_b(value, now),
            REG_C | REG_D => {}
            r if TIME_REGS.contains(&r) => {
                if self.register_b() & B_SET != 0 {
                    self.cmos[usize::from(r)] = value;
                } else {
                    // A write while the clock runs sets that one field.
                    self.freeze(now);
                    self.cmos[usize::from(r)] = value;
                    self.commit(now);
                }
            }
            r => self.cmos[usize::from(r & 0x7F)] = value,
        }
    }

    fn write_register_b(&mut self, value: u8, now: u64) {
        let was_set = self.register_b() & B_SET != 0;
        // Setting SET clears UIE (datasheet, register B bit 4).
        let value = if value & B_SET != 0 {
            value & !B_UIE
        } else {
            value
        };
        match (was_set, value & B_SET != 0) {
            (false, true) => {
                self.freeze(now);
                self.cmos[usize::from(REG_B)] = value;
            }
            (true, false) => {
                self.cmos[usize::from(REG_B)] = value;
                self.commit(now);
            }
            _ => self.cmos[usize::from(REG_B)] = value,
        }
    }

    /// Copies the running clock into the time registers.
    fn freeze(&mut self, now: u64) {
        for reg in TIME_REGS {
            self.cmos[usize::from(reg)] = self.clock_register(reg, now);
        }
    }

    /// Restarts the clock from the time registers; an impossible date leaves it unchanged.
    fn commit(&mut self, now: u64) {
        let r = |reg: u8| self.decode(self.cmos[usize::from(reg)]);
        let t = DateTime {
            year: u32::from(r(REG_CENTURY)) * 100 + u32::from(r(REG_YEAR)),
            month: r(REG_MONTH),
            day: r(REG_DAY_OF_MONTH),
            hour: self.decode_hour(self.cmos[usize::from(REG_HOURS)]),
            minute: r(REG_MINUTES),
            second: r(REG_SECONDS),
            weekday: 1,
        };
        let valid = (1..=12).contains(&t.month)
            && (1..=31).contains(&t.day)
            && t.hour < 24
            && t.minute < 60
            && t.second < 60;
        if !valid {
            return;
        }
        let running = i128::from(self.epoch_secs) + i128::from(now / self.tsc_hz);
        let offset = i128::from(t.to_unix()) - running;
        self.offset = i64::try_from(offset).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1_000_000;
    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const EPOCH: u64 = 1_709_251_198;

    fn rd(rtc: &mut Rtc, reg: u8, now: u64) -> u8 {
        rtc.write(0x70, reg, now);
        rtc.read(0x71, now)
    }

    fn wr(rtc: &mut Rtc, reg: u8, value: u8, now: u64) {
        rtc.write(0x70, reg, now);
        rtc.write(0x71, value, now);
    }

    #[test]
    fn calendar_round_trip() {
        for secs in [0, 951_782_400, EPOCH, 4_102_444_800, 253_402_300_799] {
            assert_eq!(DateTime::from_unix(secs).to_unix(), secs);
        }
        let t = DateTime::from_unix(EPOCH);
        assert_eq!((t.year, t.month, t.day), (2024, 2, 29));
        assert_eq!((t.hour, t.minute, t.second, t.weekday), (23, 59, 58, 5));
    }

    #[test]
    fn bcd_24h_time_advances_with_tsc() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        assert_eq!(rd(&mut rtc, REG_SECONDS, 0), 0x58);
        assert_eq!(rd(&mut rtc, REG_HOURS, 0), 0x23);
        assert_eq!(rd(&mut rtc, REG_DAY_OF_MONTH, 0), 0x29);
        assert_eq!(rd(&mut rtc, REG_MONTH, 0), 0x02);
        assert_eq!(rd(&mut rtc, REG_YEAR, 0), 0x24);
        assert_eq!(rd(&mut rtc, REG_CENTURY, 0), 0x20);
        let later = 3 * HZ;
        assert_eq!(rd(&mut rtc, REG_SECONDS, later), 0x01);
        assert_eq!(rd(&mut rtc, REG_DAY_OF_MONTH, later), 0x01);
        assert_eq!(rd(&mut rtc, REG_MONTH, later), 0x03);
        assert_eq!(rd(&mut rtc, REG_DAY_OF_WEEK, later), 0x06);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        wr(&mut rtc, REG_B, B_BINARY, 0);
        assert_eq!(rd(&mut rtc, REG_HOURS, 0), 11 | HOUR_PM);
        assert_eq!(rd(&mut rtc, REG_SECONDS, 0), 58);
        assert_eq!(rd(&mut rtc, REG_HOURS, 3 * HZ), 12, "midnight is 12 AM");
        wr(&mut rtc, REG_B, 0, 0);
        assert_eq!(rd(&mut rtc, REG_HOURS, 0), 0x11 | HOUR_PM);
    }

    #[test]
    fn nmi_bit_of_index_is_ignored() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        assert_eq!(rd(&mut rtc, 0x80 | REG_YEAR, 0), 0x24);
        wr(&mut rtc, 0x80 | 0x40, 0x5A, 0);
        assert_eq!(rd(&mut rtc, 0x40, 0), 0x5A);
    }

    #[test]
    fn uip_set_in_last_244us_of_second() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        assert_eq!(rd(&mut rtc, REG_A, 0) & A_UIP, 0);
        assert_eq!(rd(&mut rtc, REG_A, HZ - 245) & A_UIP, 0);
        assert_ne!(rd(&mut rtc, REG_A, HZ - 244) & A_UIP, 0);
        assert_eq!(rd(&mut rtc, REG_A, HZ) & A_UIP, 0);
        assert_eq!(rd(&mut rtc, REG_A, 0) & 0x7F, 0x26);
        assert_eq!(rd(&mut rtc, REG_D, 0), D_VRT);
    }

    #[test]
    fn set_time_linux_style() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        let now = 10 * HZ;
        wr(&mut rtc, REG_B, B_SET | B_24H, now);
        for (reg, v) in [
            (REG_SECONDS, 0x30),
            (REG_MINUTES, 0x15),
            (REG_HOURS, 0x08),
            (REG_DAY_OF_MONTH, 0x04),
            (REG_MONTH, 0x07),
            (REG_YEAR, 0x99),
            (REG_CENTURY, 0x19),
        ] {
            wr(&mut rtc, reg, v, now);
        }
        assert_eq!(
            rd(&mut rtc, REG_SECONDS, now + 5 * HZ),
            0x30,
            "frozen while SET"
        );
        assert_eq!(rd(&mut rtc, REG_A, now + HZ - 1) & A_UIP, 0);
        wr(&mut rtc, REG_B, B_24H, now + 5 * HZ);
        assert_eq!(rd(&mut rtc, REG_SECONDS, now + 5 * HZ), 0x30);
        assert_eq!(rd(&mut rtc, REG_SECONDS, now + 7 * HZ), 0x32);
        assert_eq!(rd(&mut rtc, REG_YEAR, now + 7 * HZ), 0x99);
        assert_eq!(rd(&mut rtc, REG_CENTURY, now + 7 * HZ), 0x19);
        assert_eq!(
            rd(&mut rtc, REG_DAY_OF_WEEK, now + 7 * HZ),
            0x01,
            "a Sunday"
        );
    }

    #[test]
    fn single_field_write_while_running() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        wr(&mut rtc, REG_MINUTES, 0x10, 0);
        assert_eq!(rd(&mut rtc, REG_MINUTES, 0), 0x10);
        assert_eq!(rd(&mut rtc, REG_HOURS, 0), 0x23);
    }

    #[test]
    fn year_zero_saturates_to_epoch() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        wr(&mut rtc, REG_B, B_SET | B_24H, 0);
        for reg in [REG_YEAR, REG_CENTURY] {
            wr(&mut rtc, reg, 0, 0);
        }
        wr(&mut rtc, REG_MONTH, 1, 0);
        wr(&mut rtc, REG_B, B_24H, 0);
        assert_eq!(rd(&mut rtc, REG_YEAR, 0), 0x70);
        assert_eq!(rd(&mut rtc, REG_CENTURY, 0), 0x19);
    }

    #[test]
    fn invalid_date_is_ignored() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        wr(&mut rtc, REG_MONTH, 0x13, 0);
        assert_eq!(rd(&mut rtc, REG_MONTH, 0), 0x02);
    }

    #[test]
    fn memory_size_bytes() {
        let rtc = Rtc::new(6 * GIB, 0, HZ);
        let c = &rtc.cmos;
        assert_eq!(u16::from_le_bytes([c[0x15], c[0x16]]), 640);
        assert_eq!(u16::from_le_bytes([c[0x17], c[0x18]]), 0xFFFF);
        assert_eq!(u16::from_le_bytes([c[0x30], c[0x31]]), 0xFFFF);
        assert_eq!(u16::from_le_bytes([c[0x34], c[0x35]]), 0xFF00);
        assert_eq!(u32::from_le_bytes([c[0x5B], c[0x5C], c[0x5D], 0]), 0x8000);
        let small = Rtc::new(32 * MIB, 0, HZ);
        let c = &small.cmos;
        assert_eq!(u16::from_le_bytes([c[0x30], c[0x31]]), 31 * 1024);
        assert_eq!(u16::from_le_bytes([c[0x34], c[0x35]]), 256);
        assert_eq!(c[0x5B] | c[0x5C] | c[0x5D], 0);
    }

    #[test]
    fn update_interrupt_and_register_c() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        wr(&mut rtc, REG_A, 0x20, 0); // no periodic flag
        wr(&mut rtc, REG_B, B_24H | B_UIE, 0);
        rtc.poll(HZ / 2);
        assert!(!rtc.irq_level());
        assert_eq!(rtc.next_event(), Some(HZ));
        rtc.poll(HZ);
        assert!(rtc.irq_level());
        assert_eq!(rd(&mut rtc, REG_C, HZ), C_IRQF | C_UF);
        assert!(!rtc.irq_level());
        assert_eq!(rd(&mut rtc, REG_C, HZ), 0);
        assert_eq!(rtc.next_event(), Some(2 * HZ));
    }

    #[test]
    fn alarm_interrupt() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        wr(&mut rtc, REG_SECONDS_ALARM, 0x00, 0);
        wr(&mut rtc, REG_MINUTES_ALARM, ALARM_ANY, 0);
        wr(&mut rtc, REG_HOURS_ALARM, ALARM_ANY, 0);
        wr(&mut rtc, REG_B, B_24H | B_AIE, 0);
        rtc.poll(HZ);
        assert!(!rtc.irq_level(), "23:59:59 does not match :00");
        rtc.poll(2 * HZ);
        assert!(rtc.irq_level());
        assert_eq!(rd(&mut rtc, REG_C, 2 * HZ) & C_AF, C_AF);
    }

    #[test]
    fn periodic_interrupt() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        wr(&mut rtc, REG_A, 0x2F, 0); // 2 Hz
        wr(&mut rtc, REG_B, B_24H | B_PIE, 0);
        assert_eq!(rtc.next_event(), Some(HZ / 2));
        rtc.poll(HZ / 2 - 1);
        assert!(!rtc.irq_level());
        rtc.poll(HZ / 2);
        assert!(rtc.irq_level());
        assert_eq!(rd(&mut rtc, REG_C, HZ / 2) & C_PF, C_PF);
        wr(&mut rtc, REG_A, 0x20, HZ);
        assert_eq!(rtc.next_event(), None, "rate 0 disables");
    }

    #[test]
    fn flags_without_enables_do_not_interrupt() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        rtc.poll(5 * HZ);
        assert!(!rtc.irq_level());
        assert_eq!(rd(&mut rtc, REG_C, 5 * HZ), C_UF | C_PF);
    }

    #[test]
    fn flags_change_only_at_next_change() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        wr(&mut rtc, REG_A, 0x2F, 0); // 2 Hz periodic flag, its interrupt off
        assert_eq!(rtc.next_event(), None, "no interrupt enabled");
        assert_eq!(rtc.next_change(), Some(HZ / 2));
        rtc.poll(HZ / 2 - 1);
        assert_eq!(rtc.flags, 0, "nothing before next_change");
        rtc.poll(HZ / 2);
        assert_eq!(rtc.flags, C_PF);
        assert_eq!(
            rtc.next_change(),
            Some(HZ),
            "the update and the next period"
        );
        wr(&mut rtc, REG_B, B_24H | B_SET, HZ);
        wr(&mut rtc, REG_A, 0x20, HZ);
        assert_eq!(
            rtc.next_change(),
            None,
            "SET stops updates, rate 0 the periodic flag"
        );
    }

    #[test]
    fn cmos_storage_and_read_only_registers() {
        let mut rtc = Rtc::new(0, EPOCH, HZ);
        wr(&mut rtc, 0x7F, 0x12, 0);
        assert_eq!(rd(&mut rtc, 0x7F, 0), 0x12);
        wr(&mut rtc, REG_D, 0, 0);
        assert_eq!(rd(&mut rtc, REG_D, 0), D_VRT);
        assert_eq!(rtc.read(0x70, 0), 0xFF);
    }
}
