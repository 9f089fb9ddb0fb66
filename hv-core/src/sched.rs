//! Weighted fair sharing of one physical CPU among domains, in the spirit of Xen's credit
//! scheduler (`xen/common/sched/credit.c`): every accounting period each active domain earns
//! credit in proportion to its weight, running spends credit at the rate of the time used, and
//! the runnable domain with the most credit runs next (ties in turn). A `cap` limits a domain to
//! that percentage of one CPU per period. Blocked (halted) and paused domains are never picked
//! and earn nothing while they stay so; credit is bounded so that no domain hoards it.
//!
//! Pure accounting on TSC ticks: it runs nothing and reads no clock. The monitor's scheduler
//! loop asks it whom to run and tells it what ran and what blocked.

use alloc::vec::Vec;

/// Longest slice, in milliseconds (Xen's credit scheduler uses 30 ms; ours is shorter so that
/// the console and the guests' timers stay responsive).
pub const SLICE_MS: u64 = 10;
/// Accounting period, in milliseconds (Xen: 30 ms).
pub const PERIOD_MS: u64 = 30;

/// What the caller should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Run domain `id` until TSC time `until` (or until it blocks).
    Run { id: u32, until: u64 },
    /// Nothing may run now; sleep until `until` at the latest (a capped domain may run then).
    Idle { until: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u32,
    weight: u64,
    /// Percent of one CPU; 0 is no limit.
    cap: u64,
    credit: i64,
    /// Ticks run in the current period.
    used: u64,
    /// Ticks run since the domain was added.
    cpu_time: u64,
    blocked: bool,
    paused: bool,
}

impl Entry {
    fn runnable(&self) -> bool {
        !self.blocked && !self.paused
    }
}

pub struct Sched {
    entries: Vec<Entry>,
    slice: u64,
    period: u64,
    period_start: u64,
    /// Index after which ties are broken, so that equal domains take turns.
    last: usize,
}

impl Sched {
    /// A scheduler for a CPU whose TSC runs at `tsc_hz`, starting its first period at `now`.
    pub fn new(tsc_hz: u64, now: u64) -> Self {
        Self {
            entries: Vec::new(),
            slice: (tsc_hz * SLICE_MS / 1000).max(1),
            period: (tsc_hz * PERIOD_MS / 1000).max(1),
            period_start: now,
            last: 0,
        }
    }

    /// Adds domain `id`, runnable, with `weight` (0 counts as 1) and `cap` percent (0 = none).
    pub fn add(&mut self, id: u32, weight: u32, cap: u32) {
        self.remove(id);
        self.entries.push(Entry {
            id,
            weight: u64::from(weight.max(1)),
            cap: u64::from(cap),
            credit: 0,
            used: 0,
            cpu_time: 0,
            blocked: false,
            paused: false,
        });
    }

    pub fn remove(&mut self, id: u32) {
        self.entries.retain(|e| e.id != id);
    }

    fn entry(&mut self, id: u32) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id == id)
    }

    /// A halted domain blocks until it has an interrupt to take.
    pub fn set_blocked(&mut self, id: u32, blocked: bool) {
        if let Some(e) = self.entry(id) {
            e.blocked = blocked;
        }
    }

    pub fn set_paused(&mut self, id: u32, paused: bool) {
        if let Some(e) = self.entry(id) {
            e.paused = paused;
        }
    }

    pub fn is_blocked(&self, id: u32) -> bool {
        self.entries.iter().any(|e| e.id == id && e.blocked)
    }

    pub fn is_paused(&self, id: u32) -> bool {
        self.entries.iter().any(|e| e.id == id && e.paused)
    }

    /// TSC ticks domain `id` has run.
    pub fn cpu_time(&self, id: u32) -> u64 {
        self.entries
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.cpu_time)
    }

    /// Records that domain `id` ran for `ticks`.
    pub fn charge(&mut self, id: u32, ticks: u64) {
        if let Some(e) = self.entry(id) {
            e.used = e.used.saturating_add(ticks);
            e.cpu_time = e.cpu_time.saturating_add(ticks);
            e.credit = e
                .credit
                .saturating_sub(i64::try_from(ticks).unwrap_or(i64::MAX));
        }
    }

    /// Ticks of one period a domain with `cap` percent may use.
    fn budget(&self, cap: u64) -> Option<u64> {
        (cap > 0).then(|| self.period * cap / 100)
    }

    fn over_cap(&self, e: &Entry) -> bool {
        self.budget(e.cap).is_some_and(|b| e.used >= b)
    }

    /// Starts a new accounting period if the current one is over: active domains (runnable
    /// now, or ran during the period) earn the period's time in proportion to their weights.
    fn account(&mut self, now: u64) {
        if now.wrapping_sub(self.period_start) < self.period {
            return;
        }
        // Periods stay on their grid; after a long idle stretch one period's credit is all
        // anyone earns.
        let elapsed = now.wrapping_sub(self.period_start);
        self.period_start = self
            .period_start
            .wrapping_add(elapsed / self.period * self.period);
        let active = |e: &Entry| !e.paused && (!e.blocked || e.used > 0);
        let total: u64 = self
            .entries
            .iter()
            .filter(|e| active(e))
            .map(|e| e.weight)
            .sum();
        let limit = i64::try_from(self.period).unwrap_or(i64::MAX);
        let period = self.period;
        for e in &mut self.entries {
            if active(e) && total > 0 {
                let earned = i64::try_from(period * e.weight / total).unwrap_or(limit);
                e.credit = e.credit.saturating_add(earned);
            }
            e.credit = e.credit.clamp(-limit, limit);
            e.used = 0;
        }
    }

    /// Chooses what runs next at TSC time `now`.
    pub fn pick(&mut self, now: u64) -> Pick {
        self.account(now);
        let n = self.entries.len();
        let mut best: Option<usize> = None;
        for k in 1..=n {
            let i = (self.last + k) % n;
            let e = &self.entries[i];
            if !e.runnable() || self.over_cap(e) {
                continue;
            }
            if best.is_none_or(|b| e.credit > self.entries[b].credit) {
                best = Some(i);
            }
        }
        let period_end = self.period_start.wrapping_add(self.period);
        let Some(i) = best else {
            return Pick::Idle {
                until: period_end.min(now.wrapping_add(self.slice)),
            };
        };
        self.last = i;
        let e = self.entries[i];
        let mut until = now.wrapping_add(self.slice);
        if let Some(b) = self.budget(e.cap) {
            until = until.min(now.wrapping_add(b - e.used));
        }
        Pick::Run { id: e.id, until }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 MHz TSC: a slice is 10_000 ticks, a period 30_000.
    const HZ: u64 = 1_000_000;

    /// Runs the scheduler for `ticks` with every runnable domain busy (it uses its whole
    /// slice), and returns how long each id ran.
    fn simulate(s: &mut Sched, ids: &[u32], ticks: u64) -> Vec<u64> {
        let mut now = 1;
        let end = now + ticks;
        while now < end {
            match s.pick(now) {
                Pick::Run { id, until } => {
                    let ran = until - now;
                    s.charge(id, ran);
                    now = until;
                }
                Pick::Idle { until } => now = until.max(now + 1),
            }
        }
        ids.iter().map(|&id| s.cpu_time(id)).collect()
    }

    fn within(value: u64, expected: u64, tolerance_percent: u64) -> bool {
        value.abs_diff(expected) * 100 <= expected * tolerance_percent
    }

    #[test]
    fn equal_weights_share_equally() {
        let mut s = Sched::new(HZ, 1);
        for id in 1..=3 {
            s.add(id, 256, 0);
        }
        let t = simulate(&mut s, &[1, 2, 3], 3 * HZ);
        for &x in &t {
            assert!(within(x, HZ, 2), "{t:?}");
        }
    }

    #[test]
    fn weights_set_the_shares() {
        let mut s = Sched::new(HZ, 1);
        s.add(1, 512, 0);
        s.add(2, 256, 0);
        s.add(3, 256, 0);
        let t = simulate(&mut s, &[1, 2, 3], 4 * HZ);
        assert!(within(t[0], 2 * HZ, 5), "{t:?}");
        assert!(within(t[1], HZ, 5) && within(t[2], HZ, 5), "{t:?}");
    }

    #[test]
    fn a_cap_limits_a_domain_even_with_the_cpu_free() {
        let mut s = Sched::new(HZ, 1);
        s.add(1, 256, 25);
        let t = simulate(&mut s, &[1], 3 * HZ);
        assert!(within(t[0], 3 * HZ / 4, 3), "{t:?}");
        // Against a busy uncapped domain the capped one still gets no more than its cap.
        let mut s = Sched::new(HZ, 1);
        s.add(1, 1024, 10);
        s.add(2, 256, 0);
        let t = simulate(&mut s, &[1, 2], 3 * HZ);
        assert!(within(t[0], 3 * HZ / 10, 5), "{t:?}");
        assert!(within(t[1], 3 * HZ * 9 / 10, 5), "{t:?}");
    }

    #[test]
    fn blocked_and_paused_domains_consume_nothing() {
        let mut s = Sched::new(HZ, 1);
        s.add(1, 256, 0);
        s.add(2, 256, 0);
        s.add(3, 256, 0);
        s.set_blocked(2, true);
        s.set_paused(3, true);
        assert!(s.is_blocked(2) && s.is_paused(3) && !s.is_paused(2));
        let t = simulate(&mut s, &[1, 2, 3], 2 * HZ);
        assert_eq!((t[1], t[2]), (0, 0));
        assert!(within(t[0], 2 * HZ, 1), "{t:?}");
        // Once awake, the idle domain does not get to make up for the time it slept: it gets
        // at most one period of credit ahead and then shares equally.
        s.set_blocked(2, false);
        let before = s.cpu_time(1);
        let t = simulate(&mut s, &[1, 2], 2 * HZ);
        let (a, b) = (t[0] - before, t[1]);
        assert!(b.abs_diff(a) <= 2 * s.period, "{a} {b}");
    }

    #[test]
    fn nothing_runnable_means_idle_until_the_next_period_at_most() {
        let mut s = Sched::new(HZ, 1);
        assert!(matches!(s.pick(1), Pick::Idle { until } if until <= 1 + s.slice));
        s.add(7, 256, 50);
        let Pick::Run { id: 7, until } = s.pick(1) else {
            panic!("not run")
        };
        assert_eq!(
            until,
            1 + s.slice,
            "the slice is shorter than the cap's budget"
        );
        s.charge(7, 15_000);
        assert_eq!(
            s.pick(16_001),
            Pick::Idle { until: 26_001 },
            "one slice at most"
        );
        assert_eq!(
            s.pick(26_001),
            Pick::Idle { until: 30_001 },
            "the next period"
        );
        assert!(matches!(s.pick(30_001), Pick::Run { id: 7, .. }));
        s.remove(7);
        assert_eq!(s.cpu_time(7), 0);
        assert!(matches!(s.pick(30_002), Pick::Idle { .. }));
    }
}
