//! The monitor's run loop on its one CPU: domains share it by weighted fair credit
//! (`hv_core::sched`), each running for at most one slice ended by the host LAPIC timer; a halted
//! domain blocks until an interrupt is due for it, and when nothing may run the CPU sleeps until
//! the earliest device deadline. Between slices it serves the management console on the serial
//! line: the `hv> ` prompt and its commands, or the console of one guest (Ctrl-] returns to the
//! prompt). Every guest's console output is kept in a ring of its own and shown only while that
//! guest is attached. It also carries out the lifecycle: create, destroy, and what a config's
//! `on_poweroff`/`on_reboot`/`on_crash` say when a guest stops.
//!
//! It is not the accounting (`hv_core::sched`), the line discipline, the commands or the
//! tables (`hv_core::console`), or the building of a domain (`launch`).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::backend::Backend;
use crate::bare::bootinfo::BootInfo;
use crate::bare::cpu::{self, rdtsc};
use crate::bare::fpu::FpuState;
use crate::bare::serial::{self, CONSOLE};
use crate::bare::timer::HostTimer;
use crate::launch::{self, Guest, Known, Vm};
use crate::profile;
use devices::switch::Switch;
use hv_core::config::Action;
use hv_core::console::command::{self, Command, Target, HELP};
use hv_core::console::line::LineEditor;
use hv_core::console::ring::{Ring, GUEST_RING_BYTES};
use hv_core::console::table::{self, Row, ShutdownReason, State};
use hv_core::console::{ESCAPE, PROMPT};
use hv_core::domain::{Next, StopReason};
use hv_core::sched::{Pick, Sched};
use vcpu::Vcpu;

/// What attaching replays of a guest's recent output, in bytes.
const REPLAY_BYTES: usize = 2048;
const CTRL_C: u8 = 0x03;

/// One domain, live or preserved after it stopped.
struct Slot {
    guest: Guest,
    /// The ASIDs or VPIDs of its vCPUs, unique among the slots.
    tags: Vec<u32>,
    ring: Box<Ring<GUEST_RING_BYTES>>,
    input: InputQueue,
    /// TSC ticks it has run.
    cpu_ticks: u64,
    /// Set when it stopped and its config said `preserve`.
    stopped: Option<StopReason>,
    /// Each vCPU's FPU/SSE/AVX registers while another one runs.
    fpus: Vec<FpuState>,
}

impl Slot {
    fn id(&self) -> u32 {
        self.guest.vm.id
    }

    fn name(&self) -> &str {
        &self.guest.vm.name
    }
}

/// Who has the serial line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Prompt,
    /// Every key goes to this domain's console, and its output is shown.
    Attached(u32),
    /// `shutdown -w`: its output is shown until it stops.
    Waiting(u32),
    Top(TopState),
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct TopState {
    batch: bool,
    /// Frames still to print; `None` is until a key is pressed (or forever in batch mode).
    left: Option<u32>,
    delay: u64,
    next: u64,
}

pub struct Monitor {
    backend: Backend,
    boot: BootInfo,
    timer: HostTimer,
    known: Vec<Known>,
    slots: Vec<Slot>,
    sched: Sched,
    next_id: u32,
    mode: Mode,
    editor: LineEditor,
    /// The monitor's own memory (its heap), in bytes.
    own_bytes: u64,
    boot_tsc: u64,
    idle_ticks: u64,
    /// Ticks every domain ever created has run.
    guest_ticks: u64,
    /// The previous `top` sample: when, and each domain's ticks then.
    top_sample: (u64, Vec<(u32, u64)>),
    /// The in-monitor Ethernet switch between the domains' NICs.
    switch: Switch,
}

impl Monitor {
    pub fn new(
        backend: Backend,
        boot: BootInfo,
        timer: HostTimer,
        known: Vec<Known>,
        own_bytes: u64,
    ) -> Self {
        let now = rdtsc();
        Self {
            sched: Sched::new(timer.tsc_hz, now),
            backend,
            boot,
            timer,
            known,
            slots: Vec::new(),
            next_id: 1,
            mode: Mode::Prompt,
            editor: LineEditor::new(),
            own_bytes,
            boot_tsc: now,
            idle_ticks: 0,
            guest_ticks: 0,
            top_sample: (now, Vec::new()),
            switch: Switch::new(),
        }
    }
}

fn say(args: core::fmt::Arguments) {
    let _ = CONSOLE.lock().write_fmt(args);
}

macro_rules! say {
    ($($t:tt)*) => { say(format_args!($($t)*)) };
}

/// Starts the configs marked `autostart`, attaches the console to the first, and runs forever.
pub fn run(mut m: Monitor) -> ! {
    for i in 0..m.known.len() {
        if m.known[i].life.autostart {
            if let Some(id) = m.start(i) {
                if m.mode == Mode::Prompt {
                    m.mode = Mode::Attached(id);
                }
            }
        }
    }
    log::info!(
        "{} domain(s) started, heap {} KiB used; Ctrl-] gives the monitor prompt",
        m.slots.len(),
        crate::bare::heap::used() >> 10
    );
    if m.mode == Mode::Prompt {
        say!("{PROMPT}");
    }
    if let Some(uplink) = crate::uplink::probe(m.timer.tsc_hz) {
        m.switch.set_uplink(uplink);
    }
    loop {
        let now = rdtsc();
        m.poll_input(now);
        // Frames from the uplink come in even while every guest sleeps.
        m.switch
            .pump(&mut m.slots, |s| (s.guest.vm.id, &mut s.guest.vm.platform));
        m.refresh_top(now);
        m.wake(now);
        if m.slots.is_empty() && m.known.iter().all(|k| k.life.autostart) {
            log::info!("no domains left, halting");
            cpu::halt_forever();
        }
        match m.sched.pick(rdtsc()) {
            Pick::Run { id, until } => m.run_one(id, until),
            Pick::Idle { until } => m.sleep(until),
        }
    }
}

impl Monitor {
    fn find(&self, id: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.id() == id)
    }

    fn shows(&self, id: u32) -> bool {
        matches!(self.mode, Mode::Attached(a) | Mode::Waiting(a) if a == id)
    }

    /// Creates a domain from known config `index`; logs why not on failure.
    fn start(&mut self, index: usize) -> Option<u32> {
        let id = self.next_id;
        let known = &self.known[index];
        let tags: Vec<u32> = (1..)
            .filter(|t| self.slots.iter().all(|s| !s.tags.contains(t)))
            .take(known.vm.vcpus as usize)
            .collect();
        match launch::create(
            &self.backend,
            &mut self.boot,
            (known, index),
            (id, &tags),
            &self.timer,
        ) {
            Ok(guest) => {
                self.next_id += 1;
                self.sched.add(id, guest.life.cpu_weight, guest.life.cap);
                self.slots.push(Slot {
                    guest,
                    fpus: tags.iter().map(|_| FpuState::new()).collect(),
                    tags,
                    ring: Box::new(Ring::new()),
                    input: InputQueue::new(),
                    cpu_ticks: 0,
                    stopped: None,
                });
                if let Some(slot) = self.slots.last() {
                    self.switch.connect(id, &slot.guest.vm.platform);
                }
                Some(id)
            }
            Err(e) => {
                log::error!("{e}");
                None
            }
        }
    }

    /// Frees slot `i`.
    fn destroy(&mut self, i: usize) {
        let slot = self.slots.remove(i);
        self.sched.remove(slot.id());
        self.switch.detach_domain(slot.id());
        slot.guest.destroy(&mut self.boot.frames);
    }

    fn run_one(&mut self, id: u32, until: u64) {
        let Some(i) = self.find(id) else {
            self.sched.remove(id);
            return;
        };
        let show = self.shows(id);
        let s = &mut self.slots[i];
        s.guest.vm.account_steal(self.sched.waited(id));
        let start = rdtsc();
        let next = run_slice(
            &mut s.guest.vm,
            &mut s.fpus,
            &mut s.ring,
            show,
            &self.timer,
            until,
        );
        let end = rdtsc();
        let ran = end.wrapping_sub(start);
        s.cpu_ticks += ran;
        self.guest_ticks += ran;
        self.sched.charge(id, ran, end);
        // Frames the domain sent reach the other domains' NICs (and wake them).
        self.switch.pump(&mut self.slots, |s| {
            (s.guest.vm.id, &mut s.guest.vm.platform)
        });
        match next {
            Some(Next::Halt) => self.sched.set_blocked(id, true, end),
            Some(Next::Stop(reason)) => self.stopped(i, reason),
            _ => {}
        }
    }

    /// Carries out the config's action for the way domain `i` stopped.
    fn stopped(&mut self, i: usize, reason: StopReason) {
        let s = &mut self.slots[i];
        let show = self.mode == Mode::Attached(s.id()) || self.mode == Mode::Waiting(s.id());
        relay_console(&mut s.guest.vm, &mut s.ring, show);
        log::info!("domain {} (id {}): {reason}", s.name(), s.id());
        profile::dump(&s.guest.vm, &reason);
        let life = s.guest.life;
        let (id, config) = (s.id(), s.guest.config);
        let action = match reason {
            StopReason::PowerOff => life.on_poweroff,
            StopReason::Reset => life.on_reboot,
            StopReason::TripleFault { .. } | StopReason::Crashed(_) => life.on_crash,
        };
        self.sched.remove(id);
        match action {
            Action::Destroy => self.destroy(i),
            Action::Restart => {
                self.destroy(i);
                if let Some(new) = self.start(config) {
                    log::info!(
                        "domain {} restarted as id {new}",
                        self.known[config].vm.name
                    );
                }
            }
            Action::Preserve => self.slots[i].stopped = Some(reason),
        }
        if show {
            self.give_prompt();
        }
    }

    fn give_prompt(&mut self) {
        self.mode = Mode::Prompt;
        self.editor.clear();
        CONSOLE.lock().start_line();
        say!("{PROMPT}");
    }

    /// Moves queued console input into guests and unblocks the guests that have work.
    fn wake(&mut self, now: u64) {
        for s in &mut self.slots {
            if s.stopped.is_some() {
                continue;
            }
            let id = s.guest.vm.id;
            while let Some(b) = s.input.peek() {
                if !s.guest.vm.platform.push_console_input(b) {
                    break;
                }
                s.input.pop();
            }
            if self.sched.is_blocked(id) && s.guest.vm.has_work(now) {
                self.sched.set_blocked(id, false, now);
            }
        }
    }

    /// Sleeps until `until` or the earliest device deadline of a blocked domain.
    fn sleep(&mut self, until: u64) {
        let now = rdtsc();
        let wake = self
            .slots
            .iter()
            .filter(|s| s.stopped.is_none())
            .filter_map(|s| s.guest.vm.platform.next_deadline())
            .fold(until, u64::min);
        if wake > now {
            self.timer.arm(wake);
            cpu::wait_for_interrupt();
            self.idle_ticks += rdtsc().wrapping_sub(now);
        }
    }

    fn poll_input(&mut self, now: u64) {
        loop {
            let Some(b) = CONSOLE.lock().read_byte() else {
                return;
            };
            self.input_byte(b, now);
        }
    }

    fn input_byte(&mut self, b: u8, now: u64) {
        match self.mode {
            Mode::Attached(_) | Mode::Waiting(_) | Mode::Top(_) if b == ESCAPE => {
                self.give_prompt()
            }
            Mode::Attached(id) => {
                if let Some(i) = self.find(id) {
                    self.slots[i].input.push(b);
                }
            }
            Mode::Waiting(_) if b == CTRL_C => self.give_prompt(),
            Mode::Waiting(_) => {}
            Mode::Top(t) if !t.batch => self.give_prompt(),
            Mode::Top(_) => {}
            Mode::Prompt => {
                let line = self.editor.feed(b, &mut |e: &[u8]| {
                    let c = CONSOLE.lock();
                    for &x in e {
                        c.write_byte(x);
                    }
                });
                if let Some(line) = line {
                    self.execute(&line, now);
                    if self.mode == Mode::Prompt {
                        say!("{PROMPT}");
                    }
                }
            }
        }
    }

    /// The live domain `t` names, as a slot index; says why not.
    fn target(&self, t: &Target) -> Option<usize> {
        let i = self.slots.iter().position(|s| t.matches(s.id(), s.name()));
        if i.is_none() {
            say!("no such domain: {}\n", target_text(t));
        }
        i
    }

    fn execute(&mut self, line: &str, now: u64) {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(e) => return say!("{e}\n"),
        };
        match cmd {
            Command::Nothing => {}
            Command::Help => say!("{HELP}"),
            Command::List => self.list(),
            Command::Info => self.info(),
            Command::Trace(setting) => say!("{}\n", profile::set_trace(setting)),
            Command::Dmesg => {
                let log = serial::recent_log();
                let mut c = CONSOLE.lock();
                for chunk in log.split_inclusive(|&b| b == b'\n') {
                    let _ = c.write_str(&String::from_utf8_lossy(chunk));
                }
            }
            Command::Create { name, console } => self.create(&name, console),
            Command::Console(t) => {
                if let Some(i) = self.target(&t) {
                    self.attach(i);
                }
            }
            Command::Shutdown { target, wait } => self.shutdown(&target, wait),
            Command::Destroy(t) => {
                if let Some(i) = self.target(&t) {
                    let (name, id) = (String::from(self.slots[i].name()), self.slots[i].id());
                    self.destroy(i);
                    log::info!("domain {name} (id {id}): destroyed");
                }
            }
            Command::Pause(t) => self.set_paused(&t, true),
            Command::Unpause(t) => self.set_paused(&t, false),
            Command::Reboot(t) => {
                if let Some(i) = self.target(&t) {
                    let (name, id, config) = {
                        let s = &self.slots[i];
                        (String::from(s.name()), s.id(), s.guest.config)
                    };
                    self.destroy(i);
                    log::info!("domain {name} (id {id}): destroyed for reboot");
                    self.start(config);
                }
            }
            Command::Top {
                batch,
                iterations,
                delay_secs,
            } => {
                let t = TopState {
                    batch,
                    left: iterations,
                    delay: u64::from(delay_secs) * self.timer.tsc_hz,
                    next: now,
                };
                self.top_sample = (now, self.samples());
                self.mode = Mode::Top(t);
                self.refresh_top(now);
            }
        }
    }

    fn set_paused(&mut self, t: &Target, paused: bool) {
        if let Some(i) = self.target(t) {
            self.sched.set_paused(self.slots[i].id(), paused, rdtsc());
        }
    }

    fn create(&mut self, name: &str, console: bool) {
        let Some(index) = self.known.iter().position(|k| k.vm.name == name) else {
            let names: Vec<&str> = self.known.iter().map(|k| k.vm.name.as_str()).collect();
            return say!("no config named '{name}' (known: {})\n", names.join(", "));
        };
        if let Some(s) = self.slots.iter().find(|s| s.name() == name) {
            return say!("domain '{name}' already exists (id {})\n", s.id());
        }
        if let Some(id) = self.start(index) {
            if console {
                if let Some(i) = self.find(id) {
                    self.attach(i);
                }
            }
        }
    }

    fn attach(&mut self, i: usize) {
        let s = &self.slots[i];
        if s.stopped.is_some() {
            return say!("domain {} (id {}) is not running\n", s.name(), s.id());
        }
        {
            let c = CONSOLE.lock();
            s.ring.replay(REPLAY_BYTES, &mut |b| c.write_byte(b));
        }
        self.mode = Mode::Attached(s.id());
    }

    fn shutdown(&mut self, t: &Target, wait: bool) {
        let Some(i) = self.target(t) else { return };
        let s = &mut self.slots[i];
        if s.stopped.is_some() {
            return say!("domain {} (id {}) is not running\n", s.name(), s.id());
        }
        let id = s.id();
        s.guest.vm.platform.press_power_button();
        self.sched.set_blocked(id, false, rdtsc());
        if wait {
            say!("Waiting for 1 domains\n");
            self.mode = Mode::Waiting(id);
        }
    }

    fn ns(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * 1_000_000_000 / u128::from(self.timer.tsc_hz.max(1))) as u64
    }

    fn state(&self, s: &Slot) -> State {
        let id = s.id();
        let blocked = self.sched.is_blocked(id);
        let paused = self.sched.is_paused(id);
        State {
            running: s.stopped.is_none() && !blocked && !paused,
            blocked: s.stopped.is_none() && blocked,
            paused,
            shutdown: s.stopped.as_ref().map(|r| match r {
                StopReason::PowerOff => ShutdownReason::PowerOff,
                StopReason::Reset => ShutdownReason::Reboot,
                _ => ShutdownReason::Crash,
            }),
            dying: false,
        }
    }

    /// The monitor itself as a row: its heap, its one CPU, the time it spent neither idle nor
    /// in a guest.
    fn dom0_row(&self) -> Row<'static> {
        let elapsed = rdtsc().wrapping_sub(self.boot_tsc);
        let busy = elapsed.saturating_sub(self.idle_ticks + self.guest_ticks);
        Row {
            name: "Domain-0",
            id: 0,
            mem_kib: self.own_bytes >> 10,
            vcpus: 1,
            state: State {
                running: true,
                ..State::default()
            },
            cpu_ns: self.ns(busy),
        }
    }

    fn row<'a>(&self, s: &'a Slot) -> Row<'a> {
        Row {
            name: s.name(),
            id: s.id(),
            mem_kib: s.guest.memory_mib << 10,
            vcpus: s.tags.len() as u32,
            state: self.state(s),
            cpu_ns: self.ns(s.cpu_ticks),
        }
    }

    fn list(&self) {
        let mut out = String::new();
        let _ = writeln!(out, "{}", table::LIST_HEADER);
        let _ = table::list_row(&mut out, &self.dom0_row());
        out.push('\n');
        for s in &self.slots {
            let _ = table::list_row(&mut out, &self.row(s));
            out.push('\n');
        }
        say!("{out}");
    }

    fn info(&self) {
        let guests: u64 = self.slots.iter().map(|s| s.guest.memory_mib).sum();
        let free = self.boot.frames.free_bytes() >> 20;
        say!(
            "host                   : hv {}\n\
             virt_caps              : {}\n\
             nr_cpus                : 1\n\
             cpu_mhz                : {}\n\
             host_timer             : {}\n\
             total_memory           : {}\n\
             free_memory            : {free}\n\
             monitor_memory         : {}\n\
             domains                : {}\n\
             configs                : {}\n\
             hv_commandline         : {}\n",
            env!("CARGO_PKG_VERSION"),
            match self.backend {
                Backend::Svm(_) => "hvm svm npt",
                Backend::Vmx(_) => "hvm vmx ept",
            },
            self.timer.tsc_hz / 1_000_000,
            self.timer.mode(),
            free + guests + (self.own_bytes >> 20),
            self.own_bytes >> 20,
            self.slots.len(),
            self.known.len(),
            self.boot.cmdline,
        );
    }

    fn samples(&self) -> Vec<(u32, u64)> {
        self.slots.iter().map(|s| (s.id(), s.cpu_ticks)).collect()
    }

    /// Prints a `top` frame when one is due.
    fn refresh_top(&mut self, now: u64) {
        let Mode::Top(mut t) = self.mode else { return };
        if now < t.next {
            return;
        }
        let (then, ref before) = self.top_sample;
        let interval = self.ns(now.wrapping_sub(then));
        let total_kib = (self.boot.frames.free_bytes() + self.own_bytes) / 1024
            + self
                .slots
                .iter()
                .map(|s| s.guest.memory_mib << 10)
                .sum::<u64>();
        let mut out = String::new();
        if !t.batch {
            out.push_str("\x1b[H\x1b[2J");
            self.top_summary(&mut out, total_kib);
        }
        let _ = table::top_header(&mut out);
        out.push('\n');
        let dom0 = self.dom0_row();
        let _ = table::top_row(&mut out, &dom0, 0, total_kib);
        out.push('\n');
        for s in &self.slots {
            let prev = before
                .iter()
                .find(|(id, _)| *id == s.id())
                .map_or(s.cpu_ticks, |p| p.1);
            let pct = table::cpu_permille(self.ns(s.cpu_ticks.saturating_sub(prev)), interval);
            let _ = table::top_row(&mut out, &self.row(s), pct, total_kib);
            out.push('\n');
        }
        say!("{out}");
        self.top_sample = (now, self.samples());
        t.next = now + t.delay;
        t.left = t.left.map(|n| n.saturating_sub(1));
        if t.left == Some(0) {
            self.mode = Mode::Prompt;
            say!("{PROMPT}");
        } else {
            self.mode = Mode::Top(t);
        }
    }

    fn top_summary(&self, out: &mut String, total_kib: u64) {
        let count = |f: fn(&State) -> bool| self.slots.iter().filter(|s| f(&self.state(s))).count();
        let secs = self.ns(rdtsc().wrapping_sub(self.boot_tsc)) / 1_000_000_000;
        let free_kib = self.boot.frames.free_bytes() / 1024;
        let _ = write!(
            out,
            "xentop - {:02}:{:02}:{:02}   hv {}\n\
             {} domains: {} running, {} blocked, {} paused, {} crashed, {} dying, {} shutdown \n\
             Mem: {total_kib}k total, {}k used, {free_kib}k free    CPUs: 1 @ {}MHz\n",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            env!("CARGO_PKG_VERSION"),
            self.slots.len() + 1,
            count(|s| s.running) + 1,
            count(|s| s.blocked),
            count(|s| s.paused),
            count(|s| s.shutdown == Some(ShutdownReason::Crash)),
            0,
            count(|s| s.shutdown.is_some()),
            total_kib - free_kib,
            self.timer.tsc_hz / 1_000_000,
        );
    }
}

fn target_text(t: &Target) -> String {
    match t {
        Target::Id(id) => format!("{id}"),
        Target::Name(n) => n.clone(),
    }
}

/// How long one vCPU of a domain runs before its next runnable sibling gets a turn: the
/// siblings share their domain's slice on this one CPU, and a vCPU spinning on a lock a
/// descheduled sibling holds wastes at most this much.
const VCPU_TURN_MS: u64 = 1;

/// Runs `vm` until its slice ends, every vCPU of it halts, or it stops. Its vCPUs take turns;
/// an interrupt that wakes a halted sibling (an IPI, say) ends the current turn early.
fn run_slice(
    vm: &mut Vm,
    fpus: &mut [FpuState],
    ring: &mut Ring<GUEST_RING_BYTES>,
    show: bool,
    timer: &HostTimer,
    slice_end: u64,
) -> Option<Next> {
    if !vm.pick_vcpu(false) {
        return Some(Next::Halt);
    }
    let smp = vm.vcpu_count() > 1;
    let turn = timer.tsc_hz / 1000 * VCPU_TURN_MS;
    let mut turn_end = rdtsc().saturating_add(turn);
    fpus[vm.current_vcpu()].load();
    loop {
        let now = rdtsc();
        vm.prepare_entry(now);
        let deadline = vm
            .platform
            .next_deadline()
            .map_or(slice_end, |d| d.min(slice_end));
        let deadline = if smp {
            deadline.min(turn_end)
        } else {
            deadline
        };
        timer.arm(deadline);
        vm.vcpu.set_deadline(deadline, now);
        let exit = vm.vcpu.run();
        let now = rdtsc();
        let traced = profile::begin(vm, &exit, now);
        let next = vm.handle(exit, now);
        profile::end(vm, &traced, rdtsc());
        relay_console(vm, ring, show);
        let halted = match next {
            Next::Resume => false,
            Next::HostInterrupt => {
                cpu::interrupt_window();
                false
            }
            Next::Halt if smp => true,
            other => return Some(other),
        };
        // Checked after every exit: a guest whose own timer keeps the host timer short of the
        // slice's end must not keep the CPU past it.
        if now >= slice_end {
            return None;
        }
        if smp && (halted || now >= turn_end || vm.sibling_woken()) {
            if !vm.pick_vcpu(true) {
                return Some(Next::Halt);
            }
            fpus[vm.current_vcpu()].load();
            turn_end = now.saturating_add(turn);
        }
    }
}

/// Moves the guest's console output into its ring, and to the serial line when `show`.
fn relay_console(vm: &mut Vm, ring: &mut Ring<GUEST_RING_BYTES>, show: bool) {
    if let Some(first) = vm.platform.pop_console_output() {
        let c = CONSOLE.lock();
        let mut put = |b: u8| {
            ring.push(b);
            if show {
                c.write_byte(b);
            }
        };
        put(first);
        while let Some(b) = vm.platform.pop_console_output() {
            put(b);
        }
    }
}

/// Console input for one guest not yet taken by its UART, whose receive FIFO holds only 16
/// bytes.
struct InputQueue {
    buf: [u8; 1024],
    head: usize,
    len: usize,
}

impl InputQueue {
    fn new() -> Self {
        Self {
            buf: [0; 1024],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.len < self.buf.len() {
            self.buf[(self.head + self.len) % self.buf.len()] = byte;
            self.len += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        (self.len > 0).then(|| self.buf[self.head])
    }

    fn pop(&mut self) {
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
    }
}
