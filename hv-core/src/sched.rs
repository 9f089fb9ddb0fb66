//! Weighted fair sharing of one physical CPU among domains, in the spirit of Xen's credit
//! scheduler (`xen/common/sched/credit.c`): every accounting period each active domain earns
//! credit in proportion to its weight, running spends credit at the rate of the time used, and
//! the runnable domain with the most credit runs next (ties in turn). A `cap` limits a domain to
//! that percentage of one CPU per period. Blocked (halted) and paused domains are never picked
//! and earn nothing while they stay so; credit is bounded so that no domain hoards it.
//!
//! It also keeps each domain's waiting time, Xen's "runnable" runstate: the ticks it spent
//! runnable while other domains ran (or a cap held it back), which its guest sees as steal
//! time. A domain that runs again right after itself, with nothing else runnable in between,
//! waited for nothing but the monitor's own work, which is no steal.
//!
//! Pure accounting on TSC ticks: it runs nothing and reads no clock. The monitor's scheduler
//! loop asks it whom to run and tells it what ran and what blocked, and when.

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
    /// While it is runnable and not running: since when (unknown before its first run).
    ready_since: Option<u64>,
    /// Ticks it spent runnable but not running.
    waited: u64,
}

impl Entry {
    fn runnable(&self) -> bool {
        !self.blocked && !self.paused
    }

    fn stop_waiting(&mut self, now: u64) {
        if let Some(since) = self.ready_since.take() {
            self.waited = self.waited.saturating_add(now.saturating_sub(since));
        }
    }

    /// Blocks, pauses or wakes it at `now`, starting or ending its wait.
    fn set(&mut self, now: u64, change: impl FnOnce(&mut Self)) {
        let was = self.runnable();
        change(self);
        match (was, self.runnable()) {
            (true, false) => self.stop_waiting(now),
            (false, true) => self.ready_since = Some(now),
            _ => {}
        }
    }
}

pub struct Sched {
    entries: Vec<Entry>,
    slice: u64,
    period: u64,
    period_start: u64,
    /// Index after which ties are broken, so that equal domains take turns.
    last: usize,
    /// The domain that ran last, while no other domain has run or been held back by its cap
    /// since.
    last_ran: Option<u32>,
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
            last_ran: None,
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
            ready_since: None,
            waited: 0,
        });
    }

    pub fn remove(&mut self, id: u32) {
        self.entries.retain(|e| e.id != id);
    }

    fn entry(&mut self, id: u32) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id == id)
    }

    /// A halted domain blocks until it has an interrupt to take; `now` is when.
    pub fn set_blocked(&mut self, id: u32, blocked: bool, now: u64) {
        if let Some(e) = self.entry(id) {
            e.set(now, |e| e.blocked = blocked);
        }
    }

    pub fn set_paused(&mut self, id: u32, paused: bool, now: u64) {
        if let Some(e) = self.entry(id) {
            e.set(now, |e| e.paused = paused);
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

    /// Ticks domain `id` has spent runnable but not running, up to its last pick.
    pub fn waited(&self, id: u32) -> u64 {
        self.entries
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.waited)
    }

    /// Records that domain `id` ran for `ticks`, until `now`; still runnable, it waits from then.
    pub fn charge(&mut self, id: u32, ticks: u64, now: u64) {
        self.last_ran = Some(id);
        if let Some(e) = self.entry(id) {
            if e.runnable() {
                e.ready_since = Some(now);
            }
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
            if self.entries.iter().any(Entry::runnable) {
                self.last_ran = None;
            }
            return Pick::Idle {
                until: period_end.min(now.wrapping_add(self.slice)),
            };
        };
        self.last = i;
        let again = self.last_ran == Some(self.entries[i].id);
        let e = &mut self.entries[i];
        if again {
            e.ready_since = None;
        } else {
            e.stop_waiting(now);
        }
        let e = *e;
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
                    s.charge(id, ran, until);
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
        s.set_blocked(2, true, 1);
        s.set_paused(3, true, 1);
        assert!(s.is_blocked(2) && s.is_paused(3) && !s.is_paused(2));
        let t = simulate(&mut s, &[1, 2, 3], 2 * HZ);
        assert_eq!((t[1], t[2]), (0, 0));
        assert!(within(t[0], 2 * HZ, 1), "{t:?}");
        // Once awake, the idle domain does not get to make up for the time it slept: it gets
        // at most one period of credit ahead and then shares equally.
        s.set_blocked(2, false, 2 * HZ);
        let before = s.cpu_time(1);
        let t = simulate(&mut s, &[1, 2], 2 * HZ);
        let (a, b) = (t[0] - before, t[1]);
        assert!(b.abs_diff(a) <= 2 * s.period, "{a} {b}");
    }

    #[test]
    fn waiting_is_the_time_runnable_while_another_domain_runs() {
        let mut s = Sched::new(HZ, 1);
        for id in 1..=3 {
            s.add(id, 256, 0);
        }
        s.set_blocked(3, true, 1);
        simulate(&mut s, &[1, 2], HZ);
        // Each ran half the time and waited the other half (but for its wait before its
        // first run, which is not known).
        for id in [1, 2] {
            assert!(within(s.waited(id), HZ / 2, 3), "{id}: {}", s.waited(id));
        }
        assert_eq!(s.waited(3), 0, "blocked is not waiting");
    }

    #[test]
    fn running_again_after_itself_or_after_idling_alone_is_no_wait() {
        let mut s = Sched::new(HZ, 1);
        s.add(1, 256, 0);
        s.add(2, 256, 0);
        s.set_paused(2, true, 1);
        // Back to back, with the monitor's work (5 ticks) between the slices.
        let mut now = 1;
        for _ in 0..5 {
            let Pick::Run { id: 1, until } = s.pick(now + 5) else {
                panic!("1 does not run")
            };
            s.charge(1, until - now - 5, until);
            now = until;
        }
        assert_eq!(s.waited(1), 0);
        // Halted, then idle with nobody runnable, then woken.
        s.set_blocked(1, true, now);
        assert!(matches!(s.pick(now + 10), Pick::Idle { .. }));
        s.set_blocked(1, false, now + 100);
        assert!(matches!(s.pick(now + 150), Pick::Run { id: 1, .. }));
        s.charge(1, 50, now + 200);
        assert_eq!(s.waited(1), 0);
        // Woken while another domain runs: it waits from the wake-up to its pick.
        s.set_blocked(1, true, now + 200);
        s.set_paused(2, false, now + 200);
        assert!(matches!(s.pick(now + 210), Pick::Run { id: 2, .. }));
        s.set_blocked(1, false, now + 300);
        s.charge(2, 790, now + 1_000);
        s.set_paused(2, true, now + 1_000);
        assert!(matches!(s.pick(now + 1_000), Pick::Run { id: 1, .. }));
        assert_eq!(s.waited(1), 700);
        // Paused while waiting: the wait stops there and starts again when unpaused.
        s.charge(1, 10, now + 1_010);
        s.set_paused(1, true, now + 1_060);
        s.set_paused(2, false, now + 1_060);
        assert!(matches!(s.pick(now + 1_070), Pick::Run { id: 2, .. }));
        s.set_paused(1, false, now + 5_000);
        s.charge(2, 4_030, now + 5_100);
        s.set_paused(2, true, now + 5_100);
        assert_eq!(s.waited(1), 700 + 50, "up to its last pick");
        assert!(matches!(s.pick(now + 5_100), Pick::Run { id: 1, .. }));
        assert_eq!(s.waited(1), 700 + 50 + 100);
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
        s.charge(7, 15_000, 16_001);
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
