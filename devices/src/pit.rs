//! The 8254 programmable interval timer (ports 0x40-0x43) and the PC's port 0x61 (channel 2
//! gate, speaker enable, channel 2 OUT, refresh toggle). Counts are computed from the guest
//! TSC and the start of counting with 128-bit arithmetic, so they never drift: what Linux's TSC
//! calibration measures is exactly `tsc_hz`. Modes 0, 2 and 3 follow the Intel 8254 datasheet;
//! modes 1, 4 and 5 are modelled on their OUT waveform. It is not a speaker.

/// The PIT input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

const PORT61_GATE2: u8 = 0x01;
const PORT61_SPEAKER: u8 = 0x02;
/// Parity / channel check disable bits: stored and read back.
const PORT61_STORED: u8 = 0x0C;
const PORT61_REFRESH: u8 = 0x10;
const PORT61_OUT2: u8 = 0x20;

/// Read/write access mode of a counter (control word bits 5:4).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Lsb,
    Msb,
    LsbMsb,
}

impl Access {
    fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::LsbMsb,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Access::Lsb => 1,
            Access::Msb => 2,
            Access::LsbMsb => 3,
        }
    }
}

/// One counter.
struct Channel {
    mode: u8,
    access: Access,
    bcd: bool,
    gate: bool,
    /// Initial count, 1..=65536 (a written 0 means the maximum).
    reload: u32,
    /// A count has been written since the last control word.
    loaded: bool,
    /// TSC time counting began (shifted forward by time spent paused).
    start: Option<u64>,
    /// Gate low in mode 0/4: counting suspended since this TSC time.
    paused_at: Option<u64>,
    /// Rising edges of OUT already reported by `poll`.
    edges_seen: u64,
    /// Latched count, with how many bytes of it remain to read.
    latch: Option<u16>,
    latch_msb_next: bool,
    status_latch: Option<u8>,
    /// Next read byte of a LsbMsb count is the MSB.
    read_msb_next: bool,
    /// First byte of a LsbMsb count write, awaiting the second.
    write_lsb: Option<u8>,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Self {
            mode: 0,
            access: Access::LsbMsb,
            bcd: false,
            gate,
            reload: 0x1_0000,
            loaded: false,
            start: None,
            paused_at: None,
            edges_seen: 0,
            latch: None,
            latch_msb_next: false,
            status_latch: None,
            read_msb_next: false,
            write_lsb: None,
        }
    }

    /// Counter input clocks seen since counting began.
    fn ticks(&self, now: u64, tsc_hz: u64) -> Option<u64> {
        let start = self.start?;
        let end = self.paused_at.unwrap_or(now);
        let elapsed = u128::from(end.saturating_sub(start));
        Some((elapsed * u128::from(PIT_HZ) / u128::from(tsc_hz)) as u64)
    }

    fn modulus(&self) -> u32 {
        if self.bcd {
            10_000
        } else {
            0x1_0000
        }
    }

    /// Counting element value after `d` clocks (datasheet "Mode Definitions").
    fn count_at(&self, d: u64) -> u32 {
        let reload = u64::from(self.reload);
        let m = u64::from(self.modulus());
        let count = match self.mode {
            2 => reload - d % reload,
            // Mode 3 decrements by two, twice per period.
            3 => reload - (2 * (d % reload)) % reload,
            // One-shot modes count down and wrap around.
            _ => (reload + m - d % m) % m,
        };
        (count % m) as u32
    }

    fn out_at(&self, d: u64) -> bool {
        let reload = u64::from(self.reload);
        match self.mode {
            0 | 1 => d >= reload,
            2 => d % reload != reload - 1 || reload == 1,
            3 => d % reload < reload.div_ceil(2),
            _ => d != reload,
        }
    }

    /// Rising edges of OUT in the first `d` clocks.
    fn edges_at(&self, d: u64) -> u64 {
        let reload = u64::from(self.reload);
        match self.mode {
            0 | 1 => u64::from(d >= reload),
            2 | 3 => d / reload,
            _ => u64::from(d > reload),
        }
    }

    /// Clock count at which rising edge number `n` (1-based) happens.
    fn edge_tick(&self, n: u64) -> Option<u64> {
        let reload = u64::from(self.reload);
        match (self.mode, n) {
            (2 | 3, _) => n.checked_mul(reload),
            (0 | 1, 1) => Some(reload),
            (4 | 5, 1) => Some(reload + 1),
            _ => None,
        }
    }

    fn count(&self, now: u64, tsc_hz: u64) -> u16 {
        let count = match self.ticks(now, tsc_hz) {
            Some(d) => self.count_at(d),
            None => self.reload,
        };
        let count = (count % self.modulus()) as u16;
        if self.bcd {
            to_bcd(count)
        } else {
            count
        }
    }

    fn out(&self, now: u64, tsc_hz: u64) -> bool {
        match self.ticks(now, tsc_hz) {
            Some(d) => self.out_at(d),
            // Before counting, OUT is low only in mode 0 (datasheet: "OUT goes low on the
            // control word") and mode 1 stays high until triggered.
            None => self.mode != 0,
        }
    }

    fn status(&self, now: u64, tsc_hz: u64) -> u8 {
        let out = if self.out(now, tsc_hz) { 0x80 } else { 0 };
        let null_count = if self.loaded { 0 } else { 0x40 };
        out | null_count | (self.access.bits() << 4) | (self.mode << 1) | u8::from(self.bcd)
    }

    fn begin(&mut self, now: u64) {
        self.start = Some(now);
        self.paused_at = None;
        self.edges_seen = 0;
    }

    fn stop(&mut self) {
        self.start = None;
        self.paused_at = None;
        self.edges_seen = 0;
    }

    fn set_control(&mut self, mode: u8, access: u8, bcd: bool) {
        // Modes 6 and 7 are aliases of 2 and 3.
        self.mode = if mode >= 6 { mode - 4 } else { mode };
        self.access = Access::from_bits(access);
        self.bcd = bcd;
        self.loaded = false;
        self.write_lsb = None;
        self.read_msb_next = false;
        self.stop();
    }

    fn load(&mut self, value: u16, now: u64) {
        let value = if self.bcd { from_bcd(value) } else { value };
        self.reload = if value == 0 {
            self.modulus()
        } else {
            u32::from(value)
        };
        self.loaded = true;
        match self.mode {
            0 | 4 => {
                self.begin(now);
                if !self.gate {
                    self.paused_at = Some(now);
                }
            }
            // Hardware-triggered modes wait for a gate rising edge; channels 0 and 1 have
            // their gate tied high, so they start at once.
            _ if self.gate => self.begin(now),
            _ => self.stop(),
        }
    }

    fn write(&mut self, value: u8, now: u64) {
        match self.access {
            Access::Lsb => self.load(u16::from(value), now),
            Access::Msb => self.load(u16::from(value) << 8, now),
            Access::LsbMsb => match self.write_lsb.take() {
                Some(lsb) => self.load(u16::from_le_bytes([lsb, value]), now),
                None => {
                    self.write_lsb = Some(value);
                    if self.mode == 0 {
                        // Writing the first byte stops the count in mode 0 (OUT stays low).
                        self.stop();
                    }
                }
            },
        }
    }

    fn latch_count(&mut self, now: u64, tsc_hz: u64) {
        if self.latch.is_none() {
            self.latch = Some(self.count(now, tsc_hz));
            self.latch_msb_next = self.access == Access::Msb;
        }
    }

    fn read(&mut self, now: u64, tsc_hz: u64) -> u8 {
        if let Some(status) = self.status_latch.take() {
            return status;
        }
        if let Some(latched) = self.latch {
            let [lsb, msb] = latched.to_le_bytes();
            if self.latch_msb_next {
                self.latch = None;
                return msb;
            }
            if self.access == Access::LsbMsb {
                self.latch_msb_next = true;
            } else {
                self.latch = None;
            }
            return lsb;
        }
        let [lsb, msb] = self.count(now, tsc_hz).to_le_bytes();
        match self.access {
            Access::Lsb => lsb,
            Access::Msb => msb,
            Access::LsbMsb => {
                self.read_msb_next = !self.read_msb_next;
                if self.read_msb_next {
                    lsb
                } else {
                    msb
                }
            }
        }
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        let rising = gate && !self.gate;
        self.gate = gate;
        match self.mode {
            0 | 4 => match (gate, self.paused_at) {
                (true, Some(paused)) => {
                    if let Some(start) = self.start.as_mut() {
                        *start += now.saturating_sub(paused);
                    }
                    self.paused_at = None;
                }
                (false, None) if self.start.is_some() => self.paused_at = Some(now),
                _ => {}
            },
            // Modes 1 and 5 (re)trigger on a rising edge; 2 and 3 stop while low and reload
            // on the rising edge.
            _ if rising && self.loaded => self.begin(now),
            2 | 3 if !gate => self.stop(),
            _ => {}
        }
    }
}

fn to_bcd(v: u16) -> u16 {
    ((v / 1000 % 10) << 12) | ((v / 100 % 10) << 8) | ((v / 10 % 10) << 4) | (v % 10)
}

fn from_bcd(v: u16) -> u16 {
    // Invalid BCD digits are taken at face value, as the counter would.
    (v >> 12 & 0xF) * 1000 + (v >> 8 & 0xF) * 100 + (v >> 4 & 0xF) * 10 + (v & 0xF)
}

pub struct Pit {
    tsc_hz: u64,
    channels: [Channel; 3],
    speaker: bool,
    port61_stored: u8,
    refresh: bool,
}

impl Pit {
    pub fn new(tsc_hz: u64) -> Self {
        Self {
            tsc_hz: tsc_hz.max(1),
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            speaker: false,
            port61_stored: 0,
            refresh: false,
        }
    }

    /// Whether `port` belongs to the PIT (0x40-0x43 and 0x61).
    pub fn claims(port: u16) -> bool {
        matches!(port, 0x40..=0x43 | 0x61)
    }

    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        let tsc_hz = self.tsc_hz;
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].read(now, tsc_hz),
            // The control word register is write-only.
            _ => 0xFF,
        }
    }

    pub fn write(&mut self, port: u16, value: u8, now: u64) {
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].write(value, now),
            0x43 => self.write_control(value, now),
            _ => {}
        }
    }

    fn write_control(&mut self, value: u8, now: u64) {
        let tsc_hz = self.tsc_hz;
        let select = value >> 6;
        if select == 3 {
            self.read_back(value, now);
            return;
        }
        let ch = &mut self.channels[usize::from(select)];
        match (value >> 4) & 3 {
            0 => ch.latch_count(now, tsc_hz),
            access => ch.set_control((value >> 1) & 7, access, value & 1 != 0),
        }
    }

    /// Read-back command (8254 datasheet): bit 5 clear latches counts, bit 4 clear latches
    /// status, bits 3:1 select counters 2:0.
    fn read_back(&mut self, value: u8, now: u64) {
        let tsc_hz = self.tsc_hz;
        for (i, ch) in self.channels.iter_mut().enumerate() {
            if value & (2 << i) == 0 {
                continue;
            }
            if value & 0x10 == 0 && ch.status_latch.is_none() {
                ch.status_latch = Some(ch.status(now, tsc_hz));
            }
            if value & 0x20 == 0 {
                ch.latch_count(now, tsc_hz);
            }
        }
    }

    pub fn read_port61(&mut self, now: u64) -> u8 {
        // The refresh request bit toggles every 15 us on real boards; toggling on every read
        // guarantees pollers see it change.
        self.refresh = !self.refresh;
        let ch2 = &self.channels[2];
        let mut value = self.port61_stored;
        if ch2.gate {
            value |= PORT61_GATE2;
        }
        if self.speaker {
            value |= PORT61_SPEAKER;
        }
        if self.refresh {
            value |= PORT61_REFRESH;
        }
        if ch2.out(now, self.tsc_hz) {
            value |= PORT61_OUT2;
        }
        value
    }

    pub fn write_port61(&mut self, value: u8, now: u64) {
        self.speaker = value & PORT61_SPEAKER != 0;
        self.port61_stored = value & PORT61_STORED;
        self.channels[2].set_gate(value & PORT61_GATE2 != 0, now);
    }

    /// True when channel 0's OUT rose at least once since the last call.
    pub fn poll(&mut self, now: u64) -> bool {
        let tsc_hz = self.tsc_hz;
        let ch = &mut self.channels[0];
        let Some(d) = ch.ticks(now, tsc_hz) else {
            return false;
        };
        let edges = ch.edges_at(d);
        let rose = edges > ch.edges_seen;
        ch.edges_seen = edges;
        rose
    }

    /// TSC time of channel 0's next rising edge of OUT not yet reported by `poll`.
    pub fn next_event(&self) -> Option<u64> {
        let ch = &self.channels[0];
        let start = ch.start?;
        if ch.paused_at.is_some() {
            return None;
        }
        let tick = ch.edge_tick(ch.edges_seen + 1)?;
        // First TSC value whose tick count reaches `tick`: ceil(tick * tsc_hz / PIT_HZ).
        let offset = (u128::from(tick) * u128::from(self.tsc_hz)).div_ceil(u128::from(PIT_HZ));
        u64::try_from(offset).ok()?.checked_add(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2.4 GHz-ish TSC that is not a multiple of the PIT clock.
    const TSC_HZ: u64 = 2_399_987_123;

    fn tsc_for_ticks(ticks: u64) -> u64 {
        (u128::from(ticks) * u128::from(TSC_HZ)).div_ceil(u128::from(PIT_HZ)) as u64
    }

    fn read_count(p: &mut Pit, port: u16, now: u64) -> u16 {
        let lo = p.read(port, now);
        let hi = p.read(port, now);
        u16::from_le_bytes([lo, hi])
    }

    #[test]
    fn mode0_counts_down_and_raises_out() {
        let mut p = Pit::new(TSC_HZ);
        p.write(0x43, 0x30, 0);
        p.write(0x40, 0x00, 0);
        p.write(0x40, 0x10, 1000);
        assert_eq!(read_count(&mut p, 0x40, 1000), 0x1000);
        assert_eq!(
            read_count(&mut p, 0x40, 1000 + tsc_for_ticks(0x100)),
            0x0F00
        );
        assert!(!p.poll(1000 + tsc_for_ticks(0xFFF)));
        assert_eq!(p.next_event(), Some(1000 + tsc_for_ticks(0x1000)));
        assert!(p.poll(1000 + tsc_for_ticks(0x1000)));
        assert!(!p.poll(1000 + tsc_for_ticks(0x5000)), "one-shot");
        assert_eq!(p.next_event(), None);
        assert_eq!(
            read_count(&mut p, 0x40, 1000 + tsc_for_ticks(0x1001)),
            0xFFFF,
            "wraps after terminal count"
        );
    }

    #[test]
    fn mode2_periodic_edges_without_drift() {
        let mut p = Pit::new(TSC_HZ);
        p.write(0x43, 0x34, 0);
        p.write(0x40, 0x9C, 0);
        p.write(0x40, 0x2E, 0); // 11932: ~100 Hz
        let mut edges = 0;
        let mut now = 0;
        for _ in 0..1000 {
            now = p.next_event().expect("periodic");
            assert!(!p.poll(now - 1) || now == 0);
            assert!(p.poll(now));
            edges += 1;
        }
        assert_eq!(edges, 1000);
        assert_eq!(now, tsc_for_ticks(11932 * 1000));
    }

    #[test]
    fn poll_coalesces_missed_edges() {
        let mut p = Pit::new(TSC_HZ);
        p.write(0x43, 0x36, 0);
        p.write(0x40, 100, 0);
        p.write(0x40, 0, 0);
        assert!(p.poll(tsc_for_ticks(1000)));
        assert!(!p.poll(tsc_for_ticks(1000)));
        assert_eq!(p.next_event(), Some(tsc_for_ticks(1100)));
    }

    #[test]
    fn mode3_square_wave_on_channel2_out() {
        let mut p = Pit::new(TSC_HZ);
        p.write_port61(PORT61_GATE2, 0);
        p.write(0x43, 0xB6, 0);
        p.write(0x42, 10, 0);
        p.write(0x42, 0, 0);
        assert_ne!(p.read_port61(tsc_for_ticks(2)) & PORT61_OUT2, 0);
        assert_eq!(p.read_port61(tsc_for_ticks(7)) & PORT61_OUT2, 0);
        assert_ne!(p.read_port61(tsc_for_ticks(12)) & PORT61_OUT2, 0);
        assert_eq!(read_count(&mut p, 0x42, tsc_for_ticks(2)), 6);
    }

    #[test]
    fn linux_tsc_calibration_sequence() {
        // pit_calibrate_tsc(): gate on, speaker off, mode 0 on channel 2, poll OUT (bit 5).
        let mut p = Pit::new(TSC_HZ);
        let latch = (PIT_HZ / (1000 / 10)) as u16; // 10 ms
        let v = p.read_port61(0);
        p.write_port61((v & !PORT61_SPEAKER) | PORT61_GATE2, 0);
        let t0 = 5_000;
        p.write(0x43, 0xB0, t0);
        p.write(0x42, latch as u8, t0);
        p.write(0x42, (latch >> 8) as u8, t0);
        let mut now = t0;
        while p.read_port61(now) & PORT61_OUT2 == 0 {
            now += 997;
        }
        let measured = now - t0;
        let expected = tsc_for_ticks(u64::from(latch));
        assert!(measured >= expected && measured < expected + 997);
    }

    #[test]
    fn quick_calibration_msb_reads_track_time() {
        let mut p = Pit::new(TSC_HZ);
        p.write_port61(PORT61_GATE2, 0);
        p.write(0x43, 0xB0, 0);
        p.write(0x42, 0xFF, 0);
        p.write(0x42, 0xFF, 0);
        for k in [1u64, 17, 200] {
            let now = tsc_for_ticks(k * 256);
            let _lsb = p.read(0x42, now);
            let msb = p.read(0x42, now);
            assert_eq!(u64::from(msb), 0xFF - k);
        }
    }

    #[test]
    fn gate_low_pauses_mode0() {
        let mut p = Pit::new(TSC_HZ);
        p.write(0x43, 0xB0, 0);
        p.write(0x42, 0x00, 0);
        p.write(0x42, 0x01, 0); // gate low: waits
        assert_eq!(read_count(&mut p, 0x42, 777_777), 0x100);
        let t = 1_000_000;
        p.write_port61(PORT61_GATE2, t);
        assert_eq!(read_count(&mut p, 0x42, t + tsc_for_ticks(10)), 0xF6);
        p.write_port61(0, t + tsc_for_ticks(10));
        assert_eq!(read_count(&mut p, 0x42, t + tsc_for_ticks(500)), 0xF6);
        assert_eq!(p.read_port61(t + tsc_for_ticks(500)) & PORT61_OUT2, 0);
    }

    #[test]
    fn counter_latch_freezes_value() {
        let mut p = Pit::new(TSC_HZ);
        p.write(0x43, 0x34, 0);
        p.write(0x40, 0x00, 0);
        p.write(0x40, 0x00, 0);
        p.write(0x43, 0x00, tsc_for_ticks(100));
        p.write(0x43, 0x00, tsc_for_ticks(200)); // second latch ignored until read
        assert_eq!(read_count(&mut p, 0x40, tsc_for_ticks(300)), 0xFFFF - 99);
        assert_eq!(read_count(&mut p, 0x40, tsc_for_ticks(300)), 0xFFFF - 299);
    }

    #[test]
    fn lsb_only_and_msb_only_access() {
        let mut p = Pit::new(TSC_HZ);
        p.write(0x43, 0x10, 0); // ch0 LSB, mode 0
        p.write(0x40, 0x80, 0);
        assert_eq!(p.read(0x40, tsc_for_ticks(16)), 0x70);
        assert_eq!(p.read(0x40, tsc_for_ticks(16)), 0x70);
        p.write(0x43, 0x24, 0); // ch0 MSB, mode 2
        p.write(0x40, 0x02, 0);
        assert_eq!(p.read(0x40, tsc_for_ticks(256)), 0x01);
    }

    #[test]
    fn read_back_status_and_count() {
        let mut p = Pit::new(TSC_HZ);
        p.write(0x43, 0x34, 0);
        assert_eq!(
            p.read_back_status(0),
            0x80 | 0x40 | 0x34,
            "null count before load"
        );
        p.write(0x40, 0x10, 0);
        p.write(0x40, 0x00, 0);
        p.write(0x43, 0xC2, tsc_for_ticks(3)); // latch count and status of ch0
        assert_eq!(p.read(0x40, tsc_for_ticks(9)), 0x80 | 0x34);
        assert_eq!(read_count(&mut p, 0x40, tsc_for_ticks(9)), 13);
    }

    impl Pit {
        fn read_back_status(&mut self, now: u64) -> u8 {
            self.write(0x43, 0xE2, now);
            self.read(0x40, now)
        }
    }

    #[test]
    fn bcd_counting() {
        let mut p = Pit::new(TSC_HZ);
        p.write(0x43, 0x31, 0);
        p.write(0x40, 0x00, 0);
        p.write(0x40, 0x10, 0); // BCD 1000
        assert_eq!(read_count(&mut p, 0x40, tsc_for_ticks(1)), 0x0999);
        assert_eq!(p.next_event(), Some(tsc_for_ticks(1000)));
    }

    #[test]
    fn port61_bits() {
        let mut p = Pit::new(TSC_HZ);
        p.write_port61(0x03 | 0x0C, 0);
        let a = p.read_port61(0);
        let b = p.read_port61(0);
        assert_eq!(a & 0x0F, 0x0F);
        assert_ne!(a & PORT61_REFRESH, b & PORT61_REFRESH, "refresh toggles");
        assert_eq!(p.read(0x43, 0), 0xFF);
    }

    #[test]
    fn first_byte_stops_mode0_count() {
        let mut p = Pit::new(TSC_HZ);
        p.write(0x43, 0x30, 0);
        p.write(0x40, 5, 0);
        p.write(0x40, 0, 0);
        p.write(0x40, 7, 1);
        assert!(!p.poll(tsc_for_ticks(100)));
        assert_eq!(p.next_event(), None);
    }

    #[test]
    fn zero_tsc_hz_does_not_divide_by_zero() {
        let mut p = Pit::new(0);
        p.write(0x43, 0x34, 0);
        p.write(0x40, 2, 0);
        p.write(0x40, 0, 0);
        assert!(p.poll(10));
    }
}
