//! The host's wall clock, read once from the CMOS RTC at boot so guests' RTCs start at the
//! real date.

use super::cpu::{inb, outb};

fn cmos(reg: u8) -> u8 {
    outb(0x70, reg);
    inb(0x71)
}

fn from_bcd(v: u8, binary: bool) -> u64 {
    if binary {
        u64::from(v)
    } else {
        u64::from((v >> 4) * 10 + (v & 0xF))
    }
}

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// Seconds since the Unix epoch, per the host RTC (0 if it reads as nonsense).
pub fn rtc_epoch_secs() -> u64 {
    while cmos(0x0A) & 0x80 != 0 {}
    let b = cmos(0x0B);
    let binary = b & 0x04 != 0;
    let sec = from_bcd(cmos(0x00), binary);
    let min = from_bcd(cmos(0x02), binary);
    let raw_hour = cmos(0x04);
    let pm = b & 0x02 == 0 && raw_hour & 0x80 != 0;
    let hour = from_bcd(raw_hour & 0x7F, binary) % 12 + if pm { 12 } else { 0 };
    let hour = if b & 0x02 != 0 {
        from_bcd(raw_hour, binary)
    } else {
        hour
    };
    let day = from_bcd(cmos(0x07), binary);
    let month = from_bcd(cmos(0x08), binary);
    let year = from_bcd(cmos(0x09), binary) + 100 * from_bcd(cmos(0x32), binary).max(20);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return 0;
    }
    days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec
}
