//! The monitor's run loop, one on each of its CPUs: domains share the CPUs by weighted fair
//! credit (`hv_core::sched`), a domain running on one CPU at a time for at most one slice, ended
//! by that CPU's host LAPIC timer; a halted domain blocks until an interrupt is due for it, and a
//! CPU with nothing to run sleeps until the earliest device deadline or until another CPU wakes
//! it. The monitor's state (`Monitor`) is shared under one lock, taken between slices only: a
//! CPU takes a domain's core (`Core`) out of it to run a slice without the lock, and puts it back
//! after. On the first CPU, between slices, it also serves the management console on the serial
//! line: the `hv> ` prompt and its commands, or the console of one guest (Ctrl-] returns to the
//! prompt). Every guest's console output is kept in a ring of its own and shown only while that
//! guest is attached. It also carries out the lifecycle: create, destroy, and what a config's
//! `on_poweroff`/`on_reboot`/`on_crash` say when a guest stops.
//!
//! It is not the accounting (`hv_core::sched`), the line discipline, the commands or the
//! tables (`hv_core::console`), the building of a domain (`launch`), or the bringing up of the
//! CPUs (`bare::smp`).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::backend::Backend;
use crate::bare::bootinfo::BootInfo;
use crate::bare::cpu::{self, rdtsc};
use crate::bare::fpu::FpuState;
use crate::bare::idt::WAKE_VECTOR;
use crate::bare::lapic;
use crate::bare::serial::{self, CONSOLE};
use crate::bare::smp::MAX_CPUS;
use crate::bare::timer::HostTimer;
use crate::launch::{self, Guest, Known, Vm};
use crate::profile;
use devices::switch::Switch;
use hv_core::config::{Action, Lifecycle};
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

/// The monitor's state, shared by its CPUs; `None` until the first CPU has set it up.
static MONITOR: spin::Mutex<Option<Monitor>> = spin::Mutex::new(None);
/// The domain whose console output goes to the serial line as it comes (0: none). Changed and
/// read under the console lock, so that attaching replays a guest's ring and then shows what
/// follows, with nothing lost or doubled in between.
static SHOWN: AtomicU32 = AtomicU32::new(0);
/// Per CPU: end the slice you are running now (another CPU needs the domain).
static KICK: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

type GuestRing = spin::Mutex<Ring<GUEST_RING_BYTES>>;

/// What a CPU needs to run a domain's slice, taken out of its slot meanwhile.
struct Core {
    guest: Guest,
    /// Each vCPU's FPU/SSE/AVX registers while it is not running.
    fpus: Vec<FpuState>,
    ring: Arc<GuestRing>,
}

/// One domain, live or preserved after it stopped.
struct Slot {
    id: u32,
    name: String,
    memory_mib: u64,
    /// The config it was created from (by index into the known configs).
    config: usize,
    life: Lifecycle,
    /// Its core, or the CPU running it (by index) while it is away.
    core: Result<Box<Core>, usize>,
    /// The ASIDs or VPIDs of its vCPUs, unique among the slots.
    tags: Vec<u32>,
    ring: Arc<GuestRing>,
    input: InputQueue,
    /// TSC ticks it has run.
    cpu_ticks: u64,
    /// Set when it stopped and its config said `preserve`.
    stopped: Option<StopReason>,
    /// The power button was pressed while a CPU ran it: pressed when it comes back.
    press_button: bool,
    /// The CPU it last ran on, and the CPUs it may run on.
    cpu: usize,
    affinity: u64,
    /// Its vCPUs as they were when it last came back from a CPU, and the current one then.
    vcpus: Vec<VcpuSeen>,
    current_vcpu: usize,
}

/// One vCPU as `vcpu-list` shows it.
#[derive(Clone, Copy, Default)]
struct VcpuSeen {
    online: bool,
    halted: bool,
    ran: u64,
}

impl Slot {
    fn id(&self) -> u32 {
        self.id
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn home(&mut self) -> Option<&mut Core> {
        self.core.as_mut().ok().map(|c| &mut **c)
    }

    /// Notes its vCPUs' state, from its core.
    fn see_vcpus(&mut self) {
        let Ok(core) = &self.core else { return };
        let vm = &core.guest.vm;
        self.current_vcpu = vm.current_vcpu();
        for (i, seen) in self.vcpus.iter_mut().enumerate() {
            let (online, halted) = vm.vcpu_status(i);
            let ran = vm.stats.vcpus().get(i).map_or(0, |s| s.ran());
            *seen = VcpuSeen {
                online,
                halted,
                ran,
            };
        }
    }
}

/// A domain taken out of the monitor's state to run one slice on a CPU.
struct Job {
    id: u32,
    core: Box<Core>,
    until: u64,
    /// Ticks it had waited in all, for its steal-time clock.
    waited: u64,
}

/// What came of a job.
struct Done {
    job: Job,
    next: Option<Next>,
    start: u64,
    end: u64,
}

/// One of the monitor's CPUs.
#[derive(Clone, Copy)]
pub struct CpuId {
    pub index: usize,
    pub apic_id: u8,
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
    /// Domains destroyed while a CPU ran them: freed when they come back.
    dying: Vec<(Slot, Option<usize>)>,
    sched: Sched,
    /// The CPUs running domains; the first is this one.
    cpus: Vec<CpuId>,
    /// The CPUs (by index) asleep with nothing to run.
    idle: u64,
    /// CPUs wake each other with IPIs; without them (`lapic::ipis_unsafe`) a sleeping CPU
    /// notices new work at its next timer (within a slice) and a kicked one at its next exit.
    ipis: bool,
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

// SAFETY: the monitor's state is only reached through `MONITOR`'s lock, and a domain's core,
// while taken out of it, only by the one CPU running it; nothing in it is tied to a CPU (each
// vCPU leaves its CPU with `release` at the end of its turn).
unsafe impl Send for Monitor {}

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
            sched: Sched::new(timer.tsc_hz, now, 1),
            backend,
            boot,
            timer,
            known,
            slots: Vec::new(),
            dying: Vec::new(),
            cpus: alloc::vec![CpuId {
                index: 0,
                apic_id: lapic::id(),
            }],
            idle: 0,
            ipis: !lapic::ipis_unsafe(),
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

/// Runs `f` on the monitor's state.
fn with_monitor<R>(f: impl FnOnce(&mut Monitor) -> R) -> R {
    let mut guard = MONITOR.lock();
    let m = guard
        .as_mut()
        .expect("the monitor's state is set before any CPU runs domains");
    f(m)
}

/// Brings up the other CPUs with `up` (which returns those ready to run domains), starts the
/// configs marked `autostart`, attaches the console to the first, and runs this CPU, the first,
/// forever.
pub fn run(mut m: Monitor, up: impl FnOnce(u64) -> Vec<CpuId>) -> ! {
    if let Some(uplink) = crate::uplink::probe(m.timer.tsc_hz) {
        m.switch.set_uplink(uplink);
    }
    let tsc_hz = m.timer.tsc_hz;
    *MONITOR.lock() = Some(m);
    let others = up(tsc_hz);
    with_monitor(|m| {
        m.cpus.extend(others);
        m.sched = Sched::new(tsc_hz, rdtsc(), m.cpus.len() as u32);
        log::info!(
            "running domains on {} CPU(s){}",
            m.cpus.len(),
            if m.ipis || m.cpus.len() == 1 {
                ""
            } else {
                ", without wake-up IPIs (QEMU TCG)"
            }
        );
        m.autostart();
    });
    GO.store(true, Ordering::Release);
    let first = CpuId {
        index: 0,
        apic_id: lapic::id(),
    };
    let timer = with_monitor(|m| m.timer.for_this_cpu());
    cpu_loop(first, &timer)
}

/// Set once every CPU is up and the scheduler knows them all.
static GO: AtomicBool = AtomicBool::new(false);

/// Enables hardware virtualization on this CPU, another than the first.
pub fn enable_this_cpu() -> bool {
    with_monitor(|m| m.backend.enable_other())
}

/// Runs this CPU, another than the first, once all are up.
pub fn run_other(cpu: CpuId) -> ! {
    let timer = with_monitor(|m| m.timer.for_this_cpu());
    while !GO.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    cpu_loop(cpu, &timer)
}

/// The CPU that owns the serial console.
const CONSOLE_CPU: usize = 0;

/// What a CPU does between slices, under the lock.
enum Step {
    Run(Job),
    Sleep(u64),
    Halt,
}

/// One CPU's loop: between slices, under the lock, the console (on the first CPU), the switch,
/// wake-ups and the choice of a domain; the slice itself without it.
fn cpu_loop(cpu: CpuId, timer: &HostTimer) -> ! {
    loop {
        let step = with_monitor(|m| m.next_step(cpu));
        match step {
            Step::Run(job) => {
                let done = run_job(job, cpu, timer);
                with_monitor(|m| m.finish(done));
            }
            Step::Sleep(until) => {
                let now = rdtsc();
                if until > now {
                    timer.arm(until);
                    cpu::wait_for_interrupt();
                }
                let slept = rdtsc().wrapping_sub(now);
                with_monitor(|m| {
                    m.idle &= !(1 << cpu.index);
                    m.idle_ticks += slept;
                });
            }
            Step::Halt => {
                if cpu.index == CONSOLE_CPU {
                    log::info!("no domains left, halting");
                }
                cpu::halt_forever()
            }
        }
    }
}

/// Runs one slice of a job's domain on this CPU.
fn run_job(mut job: Job, cpu: CpuId, timer: &HostTimer) -> Done {
    let core = &mut *job.core;
    core.guest.vm.account_steal(job.waited);
    let start = rdtsc();
    let next = run_slice(
        &mut core.guest.vm,
        &mut core.fpus,
        &core.ring,
        timer,
        job.until,
        &KICK[cpu.index],
    );
    Done {
        job,
        next,
        start,
        end: rdtsc(),
    }
}

impl Monitor {
    /// Starts the configs marked `autostart` and attaches the console to the first.
    fn autostart(&mut self) {
        for i in 0..self.known.len() {
            if self.known[i].life.autostart {
                if let Some(id) = self.start(i) {
                    if self.mode == Mode::Prompt {
                        self.set_mode(Mode::Attached(id));
                    }
                }
            }
        }
        log::info!(
            "{} domain(s) started, heap {} KiB used; Ctrl-] gives the monitor prompt",
            self.slots.len(),
            crate::bare::heap::used() >> 10
        );
        if self.mode == Mode::Prompt {
            say!("{PROMPT}");
        }
    }

    /// The CPUs running domains, as a mask of their numbers.
    fn cpu_mask(&self) -> u64 {
        self.cpus.iter().fold(0, |m, c| m | 1 << c.index)
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.id() == id)
    }

    /// Changes who has the serial line, and whose output it shows as it comes.
    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        let shown = match mode {
            Mode::Attached(id) | Mode::Waiting(id) => id,
            _ => 0,
        };
        let _c = CONSOLE.lock();
        SHOWN.store(shown, Ordering::Relaxed);
    }

    /// What CPU `cpu` does next.
    fn next_step(&mut self, cpu: CpuId) -> Step {
        let now = rdtsc();
        if cpu.index == CONSOLE_CPU {
            self.poll_input(now);
            self.refresh_top(now);
        }
        // Frames from the uplink come in even while every guest sleeps.
        self.pump();
        self.wake(now);
        if self.slots.is_empty()
            && self.dying.is_empty()
            && self.known.iter().all(|k| k.life.autostart)
        {
            return Step::Halt;
        }
        match self.sched.pick(rdtsc(), cpu.index) {
            Pick::Run { id, until } => match self.take(id, cpu, until) {
                Some(job) => Step::Run(job),
                None => Step::Sleep(now),
            },
            Pick::Idle { until } => {
                self.idle |= 1 << cpu.index;
                Step::Sleep(self.wake_time(until))
            }
        }
    }

    /// Takes domain `id`'s core out to run on `cpu` until `until`.
    fn take(&mut self, id: u32, cpu: CpuId, until: u64) -> Option<Job> {
        let Some(i) = self.find(id) else {
            self.sched.remove(id);
            return None;
        };
        let waited = self.sched.waited(id);
        let slot = &mut self.slots[i];
        if slot.core.is_err() {
            return None;
        }
        let core = core::mem::replace(&mut slot.core, Err(cpu.index)).ok()?;
        slot.cpu = cpu.index;
        KICK[cpu.index].store(false, Ordering::Relaxed);
        Some(Job {
            id,
            core,
            until,
            waited,
        })
    }

    /// Puts a job's domain back and carries out what came of its slice.
    fn finish(&mut self, done: Done) {
        let Done {
            job,
            next,
            start,
            end,
        } = done;
        let ran = end.wrapping_sub(start);
        self.guest_ticks += ran;
        self.sched.charge(job.id, ran, end);
        let Some(i) = self.find(job.id) else {
            return self.bury(job);
        };
        let s = &mut self.slots[i];
        s.core = Ok(job.core);
        s.cpu_ticks += ran;
        s.see_vcpus();
        if core::mem::take(&mut s.press_button) {
            self.press_button(i);
        }
        // Frames the domain sent reach the other domains' NICs (and wake them).
        self.pump();
        match next {
            Some(Next::Halt) => self.sched.set_blocked(job.id, true, end),
            Some(Next::Stop(reason)) => self.stopped(i, reason),
            _ => {}
        }
    }

    /// Frees a domain destroyed while its job ran, and restarts it if that was a reboot.
    fn bury(&mut self, job: Job) {
        let restart = match self.dying.iter().position(|(s, _)| s.id == job.id) {
            Some(d) => self.dying.remove(d).1,
            None => None,
        };
        job.core.guest.destroy(&mut self.boot.frames);
        if let Some(config) = restart {
            self.start(config);
        }
    }

    /// The domains whose cores are here, as the switch wants them.
    fn pump(&mut self) {
        self.switch.pump(&mut self.slots, |s| {
            let id = s.id;
            s.home().map(|c| (id, &mut c.guest.vm.platform))
        });
    }

    /// Wakes the CPUs asleep with nothing to run: a domain may have become runnable.
    fn wake_idle_cpus(&mut self) {
        if !self.ipis {
            return;
        }
        for c in &self.cpus {
            if self.idle & (1 << c.index) != 0 {
                lapic::send_fixed(c.apic_id, WAKE_VECTOR);
            }
        }
    }

    /// Creates a domain from known config `index`; logs why not on failure.
    fn start(&mut self, index: usize) -> Option<u32> {
        let id = self.next_id;
        let known = &self.known[index];
        let cpus = known.life.cpus & self.cpu_mask();
        if cpus == 0 {
            log::error!(
                "{}: 'cpus' names none of the monitor's {} CPU(s) (0-{})",
                known.file,
                self.cpus.len(),
                self.cpus.len() - 1
            );
            return None;
        }
        let tags: Vec<u32> = (1..)
            .filter(|t| self.slots.iter().all(|s| !s.tags.contains(t)))
            .filter(|t| self.dying.iter().all(|(s, _)| !s.tags.contains(t)))
            .take(known.vm.vcpus as usize)
            .collect();
        let vcpu_count = tags.len();
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
                self.sched.set_affinity(id, cpus);
                let ring = Arc::new(spin::Mutex::new(Ring::new()));
                self.switch.connect(id, &guest.vm.platform);
                let mut slot = Slot {
                    id,
                    name: guest.vm.name.clone(),
                    memory_mib: guest.memory_mib,
                    config: guest.config,
                    life: guest.life,
                    tags,
                    ring: ring.clone(),
                    input: InputQueue::new(),
                    cpu_ticks: 0,
                    stopped: None,
                    press_button: false,
                    core: Ok(Box::new(Core {
                        fpus: (0..vcpu_count).map(|_| FpuState::new()).collect(),
                        ring,
                        guest,
                    })),
                    cpu: 0,
                    affinity: cpus,
                    vcpus: alloc::vec![VcpuSeen::default(); vcpu_count],
                    current_vcpu: 0,
                };
                slot.see_vcpus();
                self.slots.push(slot);
                self.wake_idle_cpus();
                Some(id)
            }
            Err(e) => {
                log::error!("{e}");
                None
            }
        }
    }

    /// Frees slot `i`, then, for a reboot, starts its config again; when a CPU runs it, that CPU
    /// is asked to end its slice and both happen when the domain comes back.
    fn destroy(&mut self, i: usize, restart: bool) {
        let slot = self.slots.remove(i);
        let config = slot.config;
        self.sched.remove(slot.id());
        self.switch.detach_domain(slot.id());
        match slot.core {
            Ok(core) => {
                core.guest.destroy(&mut self.boot.frames);
                if restart {
                    self.start(config);
                }
            }
            Err(cpu) => {
                self.kick(cpu);
                self.dying.push((slot, restart.then_some(config)));
            }
        }
    }

    /// Asks CPU `index` to end the slice it runs.
    fn kick(&self, index: usize) {
        KICK[index].store(true, Ordering::Relaxed);
        if !self.ipis {
            return;
        }
        if let Some(c) = self.cpus.iter().find(|c| c.index == index) {
            lapic::send_fixed(c.apic_id, WAKE_VECTOR);
        }
    }

    /// Carries out the config's action for the way domain `i` stopped.
    fn stopped(&mut self, i: usize, reason: StopReason) {
        let s = &mut self.slots[i];
        let (id, config) = (s.id(), s.config);
        let Ok(core) = &mut s.core else { return };
        relay_console(&mut core.guest.vm, &core.ring);
        log::info!("domain {} (id {id}): {reason}", s.name);
        profile::dump(&core.guest.vm, &reason);
        let life = s.life;
        let show = self.mode == Mode::Attached(id) || self.mode == Mode::Waiting(id);
        let action = match reason {
            StopReason::PowerOff => life.on_poweroff,
            StopReason::Reset => life.on_reboot,
            StopReason::TripleFault { .. } | StopReason::Crashed(_) => life.on_crash,
        };
        self.sched.remove(id);
        match action {
            Action::Destroy => self.destroy(i, false),
            Action::Restart => {
                self.destroy(i, true);
                log::info!("domain {} restarting", self.known[config].vm.name);
            }
            Action::Preserve => self.slots[i].stopped = Some(reason),
        }
        if show {
            self.give_prompt();
        }
    }

    fn give_prompt(&mut self) {
        self.set_mode(Mode::Prompt);
        self.editor.clear();
        CONSOLE.lock().start_line();
        say!("{PROMPT}");
    }

    /// Moves queued console input into guests and unblocks the guests that have work.
    fn wake(&mut self, now: u64) {
        let mut woke = false;
        for s in &mut self.slots {
            if s.stopped.is_some() {
                continue;
            }
            let id = s.id;
            let Ok(core) = &mut s.core else { continue };
            while let Some(b) = s.input.peek() {
                if !core.guest.vm.platform.push_console_input(b) {
                    break;
                }
                s.input.pop();
            }
            if self.sched.is_blocked(id) && core.guest.vm.has_work(now) {
                self.sched.set_blocked(id, false, now);
                woke = true;
            }
        }
        if woke {
            self.wake_idle_cpus();
        }
    }

    /// When a CPU with nothing to run wakes: at `until`, or at the earliest device deadline of
    /// a blocked domain.
    fn wake_time(&self, until: u64) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.stopped.is_none())
            .filter_map(|s| s.core.as_ref().ok())
            .filter_map(|c| c.guest.vm.platform.next_deadline())
            .fold(until, u64::min)
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
                    self.destroy(i, false);
                    log::info!("domain {name} (id {id}): destroyed");
                }
            }
            Command::VcpuList(targets) => self.vcpu_list(&targets),
            Command::VcpuPin { target, cpus } => self.pin(&target, cpus),
            Command::Pause(t) => self.set_paused(&t, true),
            Command::Unpause(t) => self.set_paused(&t, false),
            Command::Reboot(t) => {
                if let Some(i) = self.target(&t) {
                    let (name, id) = (String::from(self.slots[i].name()), self.slots[i].id());
                    log::info!("domain {name} (id {id}): destroyed for reboot");
                    self.destroy(i, true);
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
                self.set_mode(Mode::Top(t));
                self.refresh_top(now);
            }
        }
    }

    fn set_paused(&mut self, t: &Target, paused: bool) {
        if let Some(i) = self.target(t) {
            self.sched.set_paused(self.slots[i].id(), paused, rdtsc());
            if !paused {
                self.wake_idle_cpus();
            }
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
        let id = s.id();
        {
            let c = CONSOLE.lock();
            s.ring.lock().replay(REPLAY_BYTES, &mut |b| c.write_byte(b));
            SHOWN.store(id, Ordering::Relaxed);
        }
        self.mode = Mode::Attached(id);
    }

    fn shutdown(&mut self, t: &Target, wait: bool) {
        let Some(i) = self.target(t) else { return };
        let s = &self.slots[i];
        if s.stopped.is_some() {
            return say!("domain {} (id {}) is not running\n", s.name(), s.id());
        }
        let id = s.id();
        self.press_button(i);
        if wait {
            say!("Waiting for 1 domains\n");
            self.set_mode(Mode::Waiting(id));
        }
    }

    /// Presses domain `i`'s power button: now when its core is here, otherwise when it comes
    /// back (its CPU is asked to end the slice).
    fn press_button(&mut self, i: usize) {
        let s = &mut self.slots[i];
        let id = s.id;
        match &mut s.core {
            Ok(core) => {
                core.guest.vm.platform.press_power_button();
                self.sched.set_blocked(id, false, rdtsc());
                self.wake_idle_cpus();
            }
            Err(cpu) => {
                s.press_button = true;
                let cpu = *cpu;
                self.kick(cpu);
            }
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

    /// The monitor itself as a row: its heap, its CPUs, the time they spent neither idle nor
    /// in a guest.
    fn dom0_row(&self) -> Row<'static> {
        let elapsed = rdtsc().wrapping_sub(self.boot_tsc) * self.cpus.len() as u64;
        let busy = elapsed.saturating_sub(self.idle_ticks + self.guest_ticks);
        Row {
            name: "Domain-0",
            id: 0,
            mem_kib: self.own_bytes >> 10,
            vcpus: self.cpus.len() as u32,
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
            mem_kib: s.memory_mib << 10,
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

    /// `vcpu-pin`: domain `t` runs only on `cpus` from now on; if a CPU outside them runs it,
    /// that CPU is asked to end its slice.
    fn pin(&mut self, t: &Target, cpus: u64) {
        let Some(i) = self.target(t) else { return };
        let mask = cpus & self.cpu_mask();
        if mask == 0 {
            return say!(
                "those CPUs are none of the monitor's {} (0-{})\n",
                self.cpus.len(),
                self.cpus.len() - 1
            );
        }
        let s = &mut self.slots[i];
        s.affinity = mask;
        self.sched.set_affinity(s.id, mask);
        if let Err(cpu) = s.core {
            if mask & (1 << cpu) == 0 {
                self.kick(cpu);
            }
        }
    }

    /// `vcpu-list`: every guest's vCPUs, or those of the domains named, in the order named.
    fn vcpu_list(&self, targets: &[Target]) {
        let mut out = String::new();
        let _ = writeln!(out, "{}", table::VCPU_LIST_HEADER);
        if targets.is_empty() {
            self.slots.iter().for_each(|s| self.vcpu_rows(&mut out, s));
        }
        for t in targets {
            match self.slots.iter().find(|s| t.matches(s.id, &s.name)) {
                Some(s) => self.vcpu_rows(&mut out, s),
                None => {
                    let _ = writeln!(out, "no such domain: {}", target_text(t));
                }
            }
        }
        say!("{out}");
    }

    /// A domain's vCPUs as they were when it last came back from a CPU; the current one runs
    /// while a CPU has the domain.
    fn vcpu_rows(&self, out: &mut String, s: &Slot) {
        let away = s.core.is_err();
        for (i, v) in s.vcpus.iter().enumerate() {
            let row = table::VcpuRow {
                name: &s.name,
                id: s.id,
                vcpu: i as u32,
                cpu: v.online.then_some(s.cpu as u32),
                running: away && i == s.current_vcpu,
                blocked: v.halted,
                time_ns: self.ns(v.ran),
                affinity: s.affinity,
                nr_cpus: self.cpus.len() as u32,
            };
            let _ = table::vcpu_row(out, &row);
            out.push('\n');
        }
    }

    fn info(&self) {
        let guests: u64 = self.slots.iter().map(|s| s.memory_mib).sum();
        let free = self.boot.frames.free_bytes() >> 20;
        say!(
            "host                   : hv {}\n\
             virt_caps              : {}\n\
             nr_cpus                : {}\n\
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
            self.cpus.len(),
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
            + self.slots.iter().map(|s| s.memory_mib << 10).sum::<u64>();
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
            self.set_mode(Mode::Prompt);
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
             Mem: {total_kib}k total, {}k used, {free_kib}k free    CPUs: {} @ {}MHz\n",
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
            self.cpus.len(),
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

/// Runs `vm` until its slice ends, every vCPU of it halts, it stops, or `kick` asks for the CPU.
/// Its vCPUs take turns; an interrupt that wakes a halted sibling (an IPI, say) ends the current
/// turn early. A vCPU that stops running, at the end of a turn or of the slice, has its FPU
/// state saved and is released, so that nothing of it stays behind on this CPU.
fn run_slice(
    vm: &mut Vm,
    fpus: &mut [FpuState],
    ring: &GuestRing,
    timer: &HostTimer,
    slice_end: u64,
    kick: &AtomicBool,
) -> Option<Next> {
    if !vm.pick_vcpu(false) {
        return Some(Next::Halt);
    }
    let smp = vm.vcpu_count() > 1;
    let turn = timer.tsc_hz / 1000 * VCPU_TURN_MS;
    let mut turn_start = rdtsc();
    let mut turn_end = turn_start.saturating_add(turn);
    fpus[vm.current_vcpu()].load();
    let next = loop {
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
        relay_console(vm, ring);
        let halted = match next {
            Next::Resume => false,
            Next::HostInterrupt => {
                cpu::interrupt_window();
                false
            }
            Next::Halt if smp => true,
            other => break Some(other),
        };
        // Checked after every exit: a guest whose own timer keeps the host timer short of the
        // slice's end must not keep the CPU past it.
        if now >= slice_end || kick.load(Ordering::Relaxed) {
            break None;
        }
        if smp && (halted || now >= turn_end || vm.sibling_woken()) {
            // A vCPU picked in place of the current one releases it (`Vm::pick_vcpu`).
            let before = vm.current_vcpu();
            if !vm.pick_vcpu(true) {
                break Some(Next::Halt);
            }
            if vm.current_vcpu() != before {
                fpus[before].save();
                fpus[vm.current_vcpu()].load();
                vm.stats
                    .vcpu_mut(before)
                    .add_run(now.saturating_sub(turn_start));
                turn_start = now;
            }
            turn_end = now.saturating_add(turn);
        }
    };
    let cur = vm.current_vcpu();
    fpus[cur].save();
    vm.vcpu.release();
    vm.stats
        .vcpu_mut(cur)
        .add_run(rdtsc().saturating_sub(turn_start));
    next
}

/// Moves the guest's console output into its ring, and to the serial line while it is shown.
fn relay_console(vm: &mut Vm, ring: &GuestRing) {
    if let Some(first) = vm.platform.pop_console_output() {
        let c = CONSOLE.lock();
        let show = SHOWN.load(Ordering::Relaxed) == vm.id;
        let mut ring = ring.lock();
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
