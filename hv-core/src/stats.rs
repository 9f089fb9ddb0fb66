//! Exit counters, always on: per domain and per vCPU, by raw vendor exit code, the number of
//! exits and the TSC cycles the monitor spent handling them. Recording is two additions into a
//! fixed array (a compact code→slot map), with no allocation and no branch on the code beyond
//! the map itself.
//!
//! Not the trace (see `trace`): counters keep no order and no per-exit detail. Not the naming
//! of codes either: the vCPU's `exit_name` does that when the counters are printed.

use alloc::vec::Vec;
use core::fmt;

/// Raw codes below this have a slot of their own (SVM's codes up to XSETBV 0x8D; every VMX basic
/// exit reason).
const DIRECT: u32 = 0xA0;
/// SVM's nested page fault (VMEXIT_NPF, AMD APM Vol. 2 Appendix C).
const NPF: u32 = 0x400;
/// SVM's VMEXIT_INVALID as a 32-bit code (`svm::exit::raw_code`).
const INVALID: u32 = 0xFFFF_FFFF;
const NPF_SLOT: usize = DIRECT as usize;
const INVALID_SLOT: usize = NPF_SLOT + 1;
/// Every other code shares the last slot; `VcpuStats` remembers the latest such code.
const OTHER_SLOT: usize = INVALID_SLOT + 1;
const SLOTS: usize = OTHER_SLOT + 1;

/// Exits of one reason: how many, and the TSC cycles spent handling them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub count: u64,
    pub cycles: u64,
}

fn slot(raw: u32) -> usize {
    match raw {
        r if r < DIRECT => r as usize,
        NPF => NPF_SLOT,
        INVALID => INVALID_SLOT,
        _ => OTHER_SLOT,
    }
}

/// The counters of one vCPU.
#[derive(Clone)]
pub struct VcpuStats {
    slots: [Counter; SLOTS],
    /// The code counted in the shared slot most recently.
    other_raw: u32,
    /// TSC ticks the vCPU has run, its exits included.
    ran: u64,
}

impl Default for VcpuStats {
    fn default() -> Self {
        Self::new()
    }
}

impl VcpuStats {
    pub const fn new() -> Self {
        Self {
            slots: [Counter {
                count: 0,
                cycles: 0,
            }; SLOTS],
            other_raw: 0,
            ran: 0,
        }
    }

    /// Adds a turn of `ticks` on a CPU to the vCPU's run time.
    pub fn add_run(&mut self, ticks: u64) {
        self.ran = self.ran.saturating_add(ticks);
    }

    /// TSC ticks the vCPU has run.
    pub fn ran(&self) -> u64 {
        self.ran
    }

    /// Counts one exit with code `raw` that took `cycles` to handle.
    #[inline]
    pub fn record(&mut self, raw: u32, cycles: u64) {
        let s = slot(raw);
        if s == OTHER_SLOT {
            self.other_raw = raw;
        }
        let c = &mut self.slots[s];
        c.count += 1;
        c.cycles = c.cycles.wrapping_add(cycles);
    }

    /// The counter of code `raw` (codes without a slot of their own share one).
    pub fn get(&self, raw: u32) -> Counter {
        self.slots[slot(raw)]
    }

    /// All exits together.
    pub fn total(&self) -> Counter {
        self.slots.iter().fold(Counter::default(), |a, c| Counter {
            count: a.count + c.count,
            cycles: a.cycles.wrapping_add(c.cycles),
        })
    }

    /// The codes that occurred, most frequent first (ties by code), each with its counter.
    pub fn by_count(&self) -> Vec<(u32, Counter)> {
        let mut v: Vec<(u32, Counter)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, c)| c.count > 0)
            .map(|(s, c)| (self.raw_of(s), *c))
            .collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
        v
    }

    fn raw_of(&self, s: usize) -> u32 {
        match s {
            NPF_SLOT => NPF,
            INVALID_SLOT => INVALID,
            OTHER_SLOT => self.other_raw,
            s => s as u32,
        }
    }
}

/// The counters of one domain, one set per vCPU.
pub struct DomainStats {
    vcpus: Vec<VcpuStats>,
}

impl DomainStats {
    pub fn new(vcpus: usize) -> Self {
        Self {
            vcpus: (0..vcpus.max(1)).map(|_| VcpuStats::new()).collect(),
        }
    }

    /// The counters of vCPU `index`; out-of-range indices count on the last vCPU's.
    #[inline]
    pub fn vcpu_mut(&mut self, index: usize) -> &mut VcpuStats {
        let last = self.vcpus.len() - 1;
        &mut self.vcpus[index.min(last)]
    }

    pub fn vcpus(&self) -> &[VcpuStats] {
        &self.vcpus
    }
}

/// One vCPU's counters as the monitor prints them when a domain stops:
/// `REASON COUNT in CYCLES cycles, ...`, most frequent first, each reason by its vendor name.
pub struct Summary<'a> {
    pub stats: &'a VcpuStats,
    pub name: &'a dyn Fn(u32) -> &'static str,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.stats.total();
        write!(f, "total {} in {} cycles", total.count, total.cycles)?;
        for (raw, c) in self.stats.by_count() {
            write!(
                f,
                ", {} {} in {} cycles",
                (self.name)(raw),
                c.count,
                c.cycles
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn name(raw: u32) -> &'static str {
        match raw {
            0x72 => "CPUID",
            0x7B => "IOIO",
            0x400 => "NPF",
            _ => "OTHER",
        }
    }

    #[test]
    fn counts_and_cycles_accumulate_per_code() {
        let mut s = VcpuStats::new();
        for _ in 0..3 {
            s.record(0x72, 10);
        }
        s.record(0x7B, 5);
        s.record(0x400, 7);
        s.record(0x400, 1);
        assert_eq!(
            s.get(0x72),
            Counter {
                count: 3,
                cycles: 30
            }
        );
        assert_eq!(
            s.get(0x7B),
            Counter {
                count: 1,
                cycles: 5
            }
        );
        assert_eq!(
            s.get(0x400),
            Counter {
                count: 2,
                cycles: 8
            }
        );
        assert_eq!(s.get(0x78), Counter::default());
        assert_eq!(
            s.total(),
            Counter {
                count: 6,
                cycles: 43
            }
        );
    }

    #[test]
    fn rare_codes_share_a_slot_and_keep_their_latest_code() {
        let mut s = VcpuStats::new();
        s.record(0x1234, 1);
        s.record(0x5678, 2);
        s.record(0xFFFF_FFFF, 4);
        assert_eq!(
            s.get(0x1234),
            Counter {
                count: 2,
                cycles: 3
            }
        );
        assert_eq!(
            s.by_count(),
            [
                (
                    0x5678,
                    Counter {
                        count: 2,
                        cycles: 3
                    }
                ),
                (
                    0xFFFF_FFFF,
                    Counter {
                        count: 1,
                        cycles: 4
                    }
                )
            ]
        );
    }

    #[test]
    fn summary_lists_reasons_most_frequent_first() {
        let mut s = VcpuStats::new();
        s.record(0x7B, 2);
        s.record(0x72, 1);
        s.record(0x72, 1);
        let text = Summary {
            stats: &s,
            name: &name,
        }
        .to_string();
        assert_eq!(
            text,
            "total 3 in 4 cycles, CPUID 2 in 2 cycles, IOIO 1 in 2 cycles"
        );
    }

    #[test]
    fn domains_have_at_least_one_vcpu_and_clamp_indices() {
        let mut d = DomainStats::new(0);
        assert_eq!(d.vcpus().len(), 1);
        d.vcpu_mut(5).record(0x72, 1);
        assert_eq!(d.vcpus()[0].get(0x72).count, 1);
        let d = DomainStats::new(2);
        assert_eq!(d.vcpus().len(), 2);
    }
}
