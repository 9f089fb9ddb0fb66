//! Weighted fair sharing of one or more physical CPUs among domains, in the spirit of Xen's
//! credit scheduler (`xen/common/sched/credit.c`): every accounting period each active domain
//! earns credit in proportion to its weight, running spends credit at the rate of the time used,
//! and the runnable domain with the most credit runs next (ties in turn). A domain runs on at
//! most one CPU at a time (its vCPUs take turns within it), so it never earns more than one CPU's
//! worth of a period; what it cannot use goes to the others by weight. A `cap` limits a domain
//! to that percentage of one CPU per period. Blocked (halted) and paused domains are never picked
//! and earn nothing while they stay so; credit is bounded so that no domain hoards it.
//!
//! It also keeps each domain's waiting time, Xen's "runnable" runstate: the ticks it spent
//! runnable while other domains ran (or a cap held it back), which its guest sees as steal
//! time. A domain picked again after its own charge, before any pick gave the last free CPU to
//! another domain (with one CPU: before any other domain ran), waited for nothing but the
//! monitor's own work, which is no steal.
//!
//! Pure accounting on TSC ticks: it runs nothing, reads no clock and knows no CPU by name. The
//! monitor's scheduler loop asks it, once per free CPU, whom to run there and tells it what ran
//! and what blocked, and when.

use alloc::vec::Vec;

/// Longest slice, in milliseconds (Xen's credit scheduler uses 30 ms; ours is shorter so that
/// the console and the guests' timers stay responsive).
pub const SLICE_MS: u64 = 10;
/// Accounting period, in milliseconds (Xen: 30 ms).
pub const PERIOD_MS: u64 = 30;

/// What the caller should do next on a free CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Run domain `id` until TSC time `until` (or until it blocks), then charge it.
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
    /// Picked and not yet charged: it runs on some CPU.
    running: bool,
    /// Charged, and no pick has since given the last free CPU to another domain or found only
    /// capped domains: if picked now it waited for nothing.
    fresh: bool,
    /// While it is runnable and not running: since when (unknown before its first run).
    ready_since: Option<u64>,
    /// Ticks it spent runnable but not running.
    waited: u64,
    /// The CPUs it may run on (bit n is CPU n).
    affinity: u64,
}

impl Entry {
    fn runnable(&self) -> bool {
        !self.blocked && !self.paused
    }

    fn may_run_on(&self, cpu: usize) -> bool {
        cpu < 64 && self.affinity & (1 << cpu) != 0
    }

    fn stop_waiting(&mut self, now: u64) {
        if let Some(since) = self.ready_since.take() {
            self.waited = self.waited.saturating_add(now.saturating_sub(since));
        }
    }

    /// Blocks, pauses or wakes it at `now`, starting or ending its wait (a running domain
    /// starts waiting only when it is charged).
    fn set(&mut self, now: u64, change: impl FnOnce(&mut Self)) {
        let was = self.runnable();
        change(self);
        match (was, self.runnable()) {
            (true, false) => self.stop_waiting(now),
            (false, true) if !self.running => self.ready_since = Some(now),
            _ => {}
        }
    }
}

pub struct Sched {
    entries: Vec<Entry>,
    slice: u64,
    period: u64,
    period_start: u64,
    /// Physical CPUs shared.
    cpus: u32,
    /// Per CPU, the index after which ties are broken, so that equal domains take turns on
    /// it (a rotation shared by the CPUs would favour whichever domain follows the one another
    /// CPU keeps picking, such as one pinned there).
    last: Vec<usize>,
}

impl Sched {
    /// A scheduler for `cpus` (at least one) CPUs whose TSCs run at `tsc_hz`, starting its
    /// first period at `now`.
    pub fn new(tsc_hz: u64, now: u64, cpus: u32) -> Self {
        Self {
            entries: Vec::new(),
            slice: (tsc_hz * SLICE_MS / 1000).max(1),
            period: (tsc_hz * PERIOD_MS / 1000).max(1),
            period_start: now,
            cpus: cpus.max(1),
            last: alloc::vec![0; cpus.max(1) as usize],
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
            running: false,
            fresh: false,
            ready_since: None,
            waited: 0,
            affinity: u64::MAX,
        });
    }

    /// Pins domain `id` to the CPUs of `mask` (bit n is CPU n): other CPUs never pick it.
    /// Credit is earned as without pinning.
    pub fn set_affinity(&mut self, id: u32, mask: u64) {
        if let Some(e) = self.entry(id) {
            e.affinity = mask;
        }
    }

    /// Forgets domain `id`; if it is running, its coming charge is ignored.
    pub fn remove(&mut self, id: u32) {
        self.entries.retain(|e| e.id != id);
    }

    fn entry(&mut self, id: u32) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id == id)
    }

    /// A halted domain blocks until it has an interrupt to take; `now` is when. A running
    /// domain runs on to its slice's end and is charged.
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

    /// Records that domain `id` ran for `ticks`, until `now`, and left its CPU; still
    /// runnable, it waits from then.
    pub fn charge(&mut self, id: u32, ticks: u64, now: u64) {
        if let Some(e) = self.entry(id) {
            e.running = false;
            e.fresh = true;
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

    /// The most of a period domain `e` can use: one CPU's, or less under its cap.
    fn peak(&self, e: &Entry) -> u64 {
        self.budget(e.cap)
            .map_or(self.period, |b| b.min(self.period))
    }

    /// Whether `e`'s fair share at water level `(left, weight)` (`left` ticks for domains
    /// weighing `weight` in all) is at least its peak.
    fn saturated(&self, e: &Entry, (left, weight): (u64, u64)) -> bool {
        u128::from(self.peak(e)) * u128::from(weight) <= u128::from(left) * u128::from(e.weight)
    }

    /// Water-fills a period of all the CPUs among the domains `active` selects: a domain whose
    /// share by weight is more than its peak gets its peak, and the rest is shared again by
    /// weight among the others (Xen's `csched_acct` likewise hands the credit a domain cannot
    /// use, over its vCPUs or its cap, to the others). Returns the level: the ticks left for
    /// the unsaturated domains and their total weight.
    fn level(&self, active: impl Fn(&Entry) -> bool) -> (u64, u64) {
        let all = self.period * u64::from(self.cpus);
        let weight = self.entries.iter().filter(|e| active(e)).map(|e| e.weight);
        let mut level = (all, weight.sum());
        // Each round saturates more domains or ends; the level only rises.
        for _ in 0..=self.entries.len() {
            let mut next = (all, 0);
            for e in self.entries.iter().filter(|e| active(e)) {
                if self.saturated(e, level) {
                    next.0 = next.0.saturating_sub(self.peak(e));
                } else {
                    next.1 += e.weight;
                }
            }
            if next == level {
                break;
            }
            level = next;
        }
        level
    }

    /// Starts a new accounting period if the current one is over: active domains (runnable
    /// now, running, or ran during the period) earn the period's time of all CPUs, water-filled
    /// by weight.
    fn account(&mut self, now: u64) {
        let elapsed = now.wrapping_sub(self.period_start);
        // A `now` a little behind the period's start (another CPU read its clock before this
        // one started the period) is still in it.
        if elapsed < self.period || i64::try_from(elapsed).is_err() {
            return;
        }
        // Periods stay on their grid; after a long idle stretch one period's credit is all
        // anyone earns.
        self.period_start = self
            .period_start
            .wrapping_add(elapsed / self.period * self.period);
        let active = |e: &Entry| !e.paused && (!e.blocked || e.used > 0 || e.running);
        let level = self.level(active);
        let limit = i64::try_from(self.period).unwrap_or(i64::MAX);
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            let earned = if !active(e) {
                0
            } else if self.saturated(e, level) {
                self.peak(e)
            } else {
                let share = u128::from(level.0) * u128::from(e.weight) / u128::from(level.1);
                u64::try_from(share).unwrap_or(u64::MAX)
            };
            let e = &mut self.entries[i];
            e.credit = e
                .credit
                .saturating_add(i64::try_from(earned).unwrap_or(limit))
                .clamp(-limit, limit);
            e.used = 0;
        }
    }

    /// Chooses what runs next, at TSC time `now`, on CPU `cpu`, which has become free.
    pub fn pick(&mut self, now: u64, cpu: usize) -> Pick {
        self.account(now);
        let n = self.entries.len();
        let turn = cpu % self.last.len();
        let mut best: Option<usize> = None;
        for k in 1..=n {
            let i = (self.last[turn] + k) % n;
            let e = &self.entries[i];
            if !e.runnable() || e.running || self.over_cap(e) || !e.may_run_on(cpu) {
                continue;
            }
            if best.is_none_or(|b| e.credit > self.entries[b].credit) {
                best = Some(i);
            }
        }
        let period_end = self.period_start.wrapping_add(self.period);
        let Some(i) = best else {
            if self.entries.iter().any(|e| e.runnable() && !e.running) {
                // Caps hold them back: they wait.
                self.entries.iter_mut().for_each(|e| e.fresh = false);
            }
            return Pick::Idle {
                until: period_end.min(now.wrapping_add(self.slice)),
            };
        };
        self.last[turn] = i;
        let e = &mut self.entries[i];
        if e.fresh {
            e.ready_since = None;
        } else {
            e.stop_waiting(now);
        }
        e.running = true;
        let e = *e;
        if self.entries.iter().filter(|e| e.running).count() >= self.cpus as usize {
            // Every CPU is taken: whoever is left, or becomes runnable, waits for one.
            for other in self.entries.iter_mut().filter(|o| o.id != e.id) {
                other.fresh = false;
            }
        }
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

    /// Whether domain `id` was picked and not yet charged.
    fn running(s: &Sched, id: u32) -> bool {
        s.entries.iter().any(|e| e.id == id && e.running)
    }

    /// A 1 MHz TSC: a slice is 10_000 ticks, a period 30_000.
    const HZ: u64 = 1_000_000;

    /// Runs the scheduler for `ticks` on each of its CPUs with every runnable domain busy (it
    /// uses its whole slice), the monitor taking `gap` ticks between a slice's end and the
    /// next pick on that CPU. Events are taken in time order: the CPU free first picks next.
    fn run_cpus(s: &mut Sched, ticks: u64, gap: u64) {
        // From the current period on (a scheduler run before is past it).
        let start = s.period_start.max(1);
        let end = start + ticks;
        // Per CPU: when it is next free, and what runs on it (id, start, end of slice).
        let mut cpus = vec![(start, None::<(u32, u64, u64)>); s.cpus as usize];
        loop {
            let (c, &(now, _)) = cpus.iter().enumerate().min_by_key(|(_, c)| c.0).unwrap();
            if now >= end {
                break;
            }
            if let Some((id, from, until)) = cpus[c].1.take() {
                s.charge(id, until - from, until);
            }
            cpus[c] = match s.pick(now, c) {
                Pick::Run { id, until } => {
                    assert!(running(s, id));
                    let elsewhere = cpus.iter().any(|c| c.1.is_some_and(|r| r.0 == id));
                    assert!(!elsewhere, "{id} picked while it runs on another CPU");
                    (until + gap, Some((id, now, until)))
                }
                Pick::Idle { until } => (until.max(now + 1), None),
            };
        }
        // The slices under way end.
        for (id, from, until) in cpus.iter().filter_map(|c| c.1) {
            s.charge(id, until - from, until);
        }
    }

    /// Like `run_cpus` without a gap; returns how long each id ran.
    fn simulate(s: &mut Sched, ids: &[u32], ticks: u64) -> Vec<u64> {
        run_cpus(s, ticks, 0);
        ids.iter().map(|&id| s.cpu_time(id)).collect()
    }

    fn within(value: u64, expected: u64, tolerance_percent: u64) -> bool {
        value.abs_diff(expected) * 100 <= expected * tolerance_percent
    }

    #[test]
    fn equal_weights_share_equally() {
        let mut s = Sched::new(HZ, 1, 1);
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
        let mut s = Sched::new(HZ, 1, 1);
        s.add(1, 512, 0);
        s.add(2, 256, 0);
        s.add(3, 256, 0);
        let t = simulate(&mut s, &[1, 2, 3], 4 * HZ);
        assert!(within(t[0], 2 * HZ, 5), "{t:?}");
        assert!(within(t[1], HZ, 5) && within(t[2], HZ, 5), "{t:?}");
    }

    #[test]
    fn a_cap_limits_a_domain_even_with_the_cpu_free() {
        let mut s = Sched::new(HZ, 1, 1);
        s.add(1, 256, 25);
        let t = simulate(&mut s, &[1], 3 * HZ);
        assert!(within(t[0], 3 * HZ / 4, 3), "{t:?}");
        // Against a busy uncapped domain the capped one still gets no more than its cap.
        let mut s = Sched::new(HZ, 1, 1);
        s.add(1, 1024, 10);
        s.add(2, 256, 0);
        let t = simulate(&mut s, &[1, 2], 3 * HZ);
        assert!(within(t[0], 3 * HZ / 10, 5), "{t:?}");
        assert!(within(t[1], 3 * HZ * 9 / 10, 5), "{t:?}");
    }

    #[test]
    fn blocked_and_paused_domains_consume_nothing() {
        let mut s = Sched::new(HZ, 1, 1);
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
        let mut s = Sched::new(HZ, 1, 1);
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
        let mut s = Sched::new(HZ, 1, 1);
        s.add(1, 256, 0);
        s.add(2, 256, 0);
        s.set_paused(2, true, 1);
        // Back to back, with the monitor's work (5 ticks) between the slices.
        let mut now = 1;
        for _ in 0..5 {
            let Pick::Run { id: 1, until } = s.pick(now + 5, 0) else {
                panic!("1 does not run")
            };
            s.charge(1, until - now - 5, until);
            now = until;
        }
        assert_eq!(s.waited(1), 0);
        // Halted, then idle with nobody runnable, then woken.
        s.set_blocked(1, true, now);
        assert!(matches!(s.pick(now + 10, 0), Pick::Idle { .. }));
        s.set_blocked(1, false, now + 100);
        assert!(matches!(s.pick(now + 150, 0), Pick::Run { id: 1, .. }));
        s.charge(1, 50, now + 200);
        assert_eq!(s.waited(1), 0);
        // Woken while another domain runs: it waits from the wake-up to its pick.
        s.set_blocked(1, true, now + 200);
        s.set_paused(2, false, now + 200);
        assert!(matches!(s.pick(now + 210, 0), Pick::Run { id: 2, .. }));
        s.set_blocked(1, false, now + 300);
        s.charge(2, 790, now + 1_000);
        s.set_paused(2, true, now + 1_000);
        assert!(matches!(s.pick(now + 1_000, 0), Pick::Run { id: 1, .. }));
        assert_eq!(s.waited(1), 700);
        // Paused while waiting: the wait stops there and starts again when unpaused.
        s.charge(1, 10, now + 1_010);
        s.set_paused(1, true, now + 1_060);
        s.set_paused(2, false, now + 1_060);
        assert!(matches!(s.pick(now + 1_070, 0), Pick::Run { id: 2, .. }));
        s.set_paused(1, false, now + 5_000);
        s.charge(2, 4_030, now + 5_100);
        s.set_paused(2, true, now + 5_100);
        assert_eq!(s.waited(1), 700 + 50, "up to its last pick");
        assert!(matches!(s.pick(now + 5_100, 0), Pick::Run { id: 1, .. }));
        assert_eq!(s.waited(1), 700 + 50 + 100);
    }

    #[test]
    fn nothing_runnable_means_idle_until_the_next_period_at_most() {
        let mut s = Sched::new(HZ, 1, 1);
        assert!(matches!(s.pick(1, 0), Pick::Idle { until } if until <= 1 + s.slice));
        s.add(7, 256, 50);
        let Pick::Run { id: 7, until } = s.pick(1, 0) else {
            panic!("not run")
        };
        assert_eq!(
            until,
            1 + s.slice,
            "the slice is shorter than the cap's budget"
        );
        s.charge(7, 15_000, 16_001);
        assert_eq!(
            s.pick(16_001, 0),
            Pick::Idle { until: 26_001 },
            "one slice at most"
        );
        assert_eq!(
            s.pick(26_001, 0),
            Pick::Idle { until: 30_001 },
            "the next period"
        );
        assert!(matches!(s.pick(30_001, 0), Pick::Run { id: 7, .. }));
        s.remove(7);
        assert_eq!(s.cpu_time(7), 0);
        assert!(matches!(s.pick(30_002, 0), Pick::Idle { .. }));
    }

    #[test]
    fn two_cpus_share_among_three_domains() {
        let mut s = Sched::new(HZ, 1, 2);
        for id in 1..=3 {
            s.add(id, 256, 0);
        }
        let t = simulate(&mut s, &[1, 2, 3], 3 * HZ);
        for &x in &t {
            assert!(within(x, 2 * HZ, 2), "two thirds of a CPU each: {t:?}");
        }
    }

    #[test]
    fn a_domain_uses_at_most_one_cpu() {
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 256, 0);
        s.add(2, 256, 0);
        let t = simulate(&mut s, &[1, 2], 3 * HZ);
        for &x in &t {
            assert!(within(x, 3 * HZ, 1), "a full CPU each: {t:?}");
        }
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 256, 0);
        let t = simulate(&mut s, &[1], 3 * HZ);
        assert!(within(t[0], 3 * HZ, 1), "one CPU, not two: {t:?}");
    }

    #[test]
    fn what_a_heavy_domain_cannot_use_goes_to_the_others() {
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 1024, 0);
        s.add(2, 256, 0);
        s.add(3, 256, 0);
        let t = simulate(&mut s, &[1, 2, 3], 4 * HZ);
        assert!(within(t[0], 4 * HZ, 2), "{t:?}");
        assert!(within(t[1], 2 * HZ, 3) && within(t[2], 2 * HZ, 3), "{t:?}");
        // Water-filling: 1 earns one CPU's worth of each period, 2 and 3 half a CPU's each,
        // so that none of them piles up credit or debt.
        s.period_start = 1;
        for e in &mut s.entries {
            e.credit = 0;
        }
        s.account(1 + s.period);
        let credits: Vec<i64> = s.entries.iter().map(|e| e.credit).collect();
        let p = i64::try_from(s.period).unwrap();
        assert_eq!(credits, [p, p / 2, p / 2]);
    }

    #[test]
    fn weights_set_the_shares_on_two_cpus() {
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 512, 0);
        s.add(2, 256, 0);
        s.add(3, 256, 0);
        let t = simulate(&mut s, &[1, 2, 3], 4 * HZ);
        assert!(within(t[0], 4 * HZ, 2), "{t:?}");
        assert!(within(t[1], 2 * HZ, 3) && within(t[2], 2 * HZ, 3), "{t:?}");
        // Four domains: 1 earns 2/5 of the 2 CPUs, 4/5 of one, and gets it.
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 512, 0);
        for id in 2..=4 {
            s.add(id, 256, 0);
        }
        let t = simulate(&mut s, &[1, 2, 3, 4], 5 * HZ);
        assert!(within(t[0], 4 * HZ, 3), "{t:?}");
        for &x in &t[1..] {
            assert!(within(x, 2 * HZ, 3), "{t:?}");
        }
    }

    #[test]
    fn a_running_domain_is_never_picked_again() {
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 256, 0);
        assert!(matches!(s.pick(1, 0), Pick::Run { id: 1, .. }));
        assert!(running(&s, 1));
        assert!(matches!(s.pick(2, 0), Pick::Idle { .. }), "1 runs already");
        s.add(2, 256, 0);
        assert!(matches!(s.pick(3, 0), Pick::Run { id: 2, .. }));
        assert!(matches!(s.pick(4, 0), Pick::Idle { .. }), "both run");
        s.charge(1, 100, 101);
        assert!(!running(&s, 1) && running(&s, 2));
        assert!(matches!(s.pick(102, 0), Pick::Run { id: 1, .. }));
        // Blocked while it runs: it is charged at its slice's end and then not picked.
        s.set_blocked(2, true, 150);
        assert!(running(&s, 2));
        s.charge(2, 200, 203);
        assert!(matches!(s.pick(204, 0), Pick::Idle { .. }));
        assert_eq!(s.waited(2), 0);
        // Woken while it runs: it starts waiting when charged, not when woken.
        s.add(3, 256, 0);
        assert!(matches!(s.pick(260, 0), Pick::Run { id: 3, .. }));
        s.set_blocked(1, true, 300);
        s.set_blocked(1, false, 400);
        s.set_blocked(2, false, 500);
        s.charge(1, 598, 700);
        assert!(matches!(s.pick(800, 0), Pick::Run { id: 2, .. }));
        assert_eq!(s.waited(2), 300, "from its wake-up, both CPUs taken");
        s.charge(3, 740, 1_000);
        assert!(matches!(s.pick(1_000, 0), Pick::Run { id: 1, .. }));
        assert_eq!(
            s.waited(1),
            300,
            "from its charge, 2 having taken the last CPU"
        );
        // Picked again right after its own charge (ahead of 3, with more credit), it waited
        // for nothing.
        s.charge(1, 10, 1_010);
        assert!(matches!(s.pick(1_020, 0), Pick::Run { id: 1, .. }));
        assert_eq!(s.waited(1), 300);
        // Removed while it runs: its charge is ignored.
        s.remove(1);
        s.charge(1, 10, 910);
        assert!(!running(&s, 1) && s.cpu_time(1) == 0);
    }

    #[test]
    fn blocked_domains_consume_nothing_on_two_cpus() {
        let mut s = Sched::new(HZ, 1, 2);
        for id in 1..=3 {
            s.add(id, 256, 0);
        }
        s.set_blocked(3, true, 1);
        let t = simulate(&mut s, &[1, 2, 3], 2 * HZ);
        assert_eq!(t[2], 0);
        assert!(within(t[0], 2 * HZ, 1) && within(t[1], 2 * HZ, 1), "{t:?}");
    }

    #[test]
    fn caps_are_percent_of_one_cpu_on_two_cpus() {
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 256, 25);
        let t = simulate(&mut s, &[1], 3 * HZ);
        assert!(within(t[0], 3 * HZ / 4, 3), "{t:?}");
        // A heavy capped domain takes half a CPU, the two others share the other 1.5.
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 1024, 50);
        s.add(2, 256, 0);
        s.add(3, 256, 0);
        let t = simulate(&mut s, &[1, 2, 3], 4 * HZ);
        assert!(within(t[0], 2 * HZ, 3), "{t:?}");
        assert!(within(t[1], 3 * HZ, 3) && within(t[2], 3 * HZ, 3), "{t:?}");
        // A cap over 100 is still one CPU at most.
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 256, 150);
        let t = simulate(&mut s, &[1], 3 * HZ);
        assert!(within(t[0], 3 * HZ, 1), "{t:?}");
    }

    #[test]
    fn on_two_cpus_only_a_domain_left_without_a_cpu_waits() {
        // Two domains, two CPUs: neither ever waits, whatever the monitor's gaps.
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 256, 0);
        s.add(2, 256, 0);
        run_cpus(&mut s, 2 * HZ, 5);
        assert_eq!((s.waited(1), s.waited(2)), (0, 0));
        // Three: each runs two thirds of the time and waits the third.
        let mut s = Sched::new(HZ, 1, 2);
        for id in 1..=3 {
            s.add(id, 256, 0);
        }
        run_cpus(&mut s, 3 * HZ, 5);
        for id in 1..=3 {
            assert!(within(s.waited(id), HZ, 3), "{id}: {}", s.waited(id));
        }
    }

    #[test]
    fn pinned_domains_run_only_on_their_cpus() {
        let mut s = Sched::new(HZ, 1, 2);
        s.add(1, 256, 0);
        s.add(2, 256, 0);
        s.add(3, 256, 0);
        s.set_affinity(1, 0b10);
        s.set_affinity(2, 0b10);
        assert!(matches!(s.pick(1, 0), Pick::Run { id: 3, .. }));
        assert!(
            matches!(s.pick(2, 0), Pick::Idle { .. }),
            "1 and 2 are CPU 1's"
        );
        s.charge(3, 1, 2);
        let t = simulate(&mut s, &[1, 2, 3], 3 * HZ);
        // CPU 1 is shared by 1 and 2; 3 has CPU 0 to itself.
        assert!(
            within(t[0], 3 * HZ / 2, 5) && within(t[1], 3 * HZ / 2, 5),
            "{t:?}"
        );
        assert!(within(t[2], 3 * HZ, 2), "{t:?}");
    }
}
