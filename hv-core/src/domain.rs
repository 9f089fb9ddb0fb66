//! A domain (VM) and the one exit loop: every exit of every backend arrives here as a
//! vendor-neutral `vcpu::Exit` and is handled once, the same way for SVM and VMX. CPUID goes
//! through the guest CPUID policy, MSRs through KVM's paravirtual MSRs, the APIC, the
//! backend's saved state and an allow-list, port I/O and MMIO to the platform devices, HLT
//! blocks until an interrupt is due, NMIs and then interrupts are injected when the vCPU can
//! take them and an NMI or interrupt window is requested when it cannot.
//!
//! A domain has one or more vCPUs. One is current: `vcpu` and the per-vCPU state next to it
//! (CPUID table, MSRs, kvmclock, PV EOI and steal-time registrations, walk cache) are its, and
//! the others wait in `parked` until `pick_vcpu` swaps one in. Application processors start
//! waiting for a STARTUP IPI, which the platform's local APICs pass here as INIT and STARTUP
//! signals.
//!
//! It is not the scheduler (which chooses the domain to run and sleeps the host) and it touches no
//! hardware: it is driven through the `Vcpu` trait, so it runs against a mock vCPU in tests.

use alloc::string::String;
use core::fmt;

use crate::cpuid::{guest_cpuid, CpuidPolicy, CpuidTable};
use crate::emulate::{self, MmioBus, Tlb};
use crate::memory::GuestRam;
use crate::msr::{self, MsrState};
use crate::pv_eoi::{self, PvEoi};
use crate::pvclock::{self, PvClock};
use crate::steal_time::{self, StealTime};
use alloc::vec::Vec;
use devices::platform::{Platform, Startup};
use devices::pm::PowerEvent;
use vcpu::{reg, Event, Exit, ExitInfo, IoAccess, Vcpu};

/// KVM's "no such hypercall" (`-KVM_ENOSYS`), what a KVM-compatible guest expects.
const HYPERCALL_ENOSYS: u64 = (-1000i64) as u64;
/// How many unmapped accesses a domain gets logged before the log goes quiet.
const UNMAPPED_LOG_LIMIT: u32 = 32;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;

/// Why a domain stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    PowerOff,
    Reset,
    TripleFault { rip: u64 },
    Crashed(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PowerOff => f.write_str("powered off"),
            Self::Reset => f.write_str("reset"),
            Self::TripleFault { rip } => write!(f, "triple fault at rip {rip:#x}"),
            Self::Crashed(why) => write!(f, "crashed: {why}"),
        }
    }
}

/// What the scheduler does after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Enter the guest again.
    Resume,
    /// The vCPU halted: run it again once `has_work` says so.
    Halt,
    /// A host interrupt ended the slice: let the host take it.
    HostInterrupt,
    Stop(StopReason),
}

/// Reads the host's CPUID; a parameter so that tests can fake the host.
pub type HostCpuid = fn(u32, u32) -> [u32; 4];

/// What makes a domain this machine rather than another: its number, name, CPUID and clock.
pub struct Identity {
    pub id: u32,
    pub name: String,
    pub cpuid: CpuidPolicy,
    pub host_cpuid: HostCpuid,
    pub clock: PvClock,
}

/// What a vCPU is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    Running,
    /// After HLT, until an interrupt is ready for it.
    Halted,
    /// An application processor before its STARTUP IPI, or any vCPU after INIT.
    WaitForSipi,
}

impl Activity {
    /// Whether the vCPU can run: it runs, or it halted and an interrupt or NMI is `ready` for
    /// it (which ends its halt).
    fn can_run(self, ready: bool) -> bool {
        self == Self::Running || (self == Self::Halted && ready)
    }
}

/// A vCPU that is not the current one, with its per-vCPU state.
struct Parked<V> {
    vcpu: V,
    cpuid_table: CpuidTable,
    msrs: MsrState,
    kvmclock_msrs: [u64; 2],
    pv_eoi: PvEoi,
    steal_time: StealTime,
    tlb: Tlb,
}

pub struct Domain<V: Vcpu> {
    pub id: u32,
    pub name: String,
    /// The current vCPU (number `cur`).
    pub vcpu: V,
    pub platform: Platform,
    pub ram: GuestRam<'static>,
    cpuid: CpuidPolicy,
    cpuid_table: CpuidTable,
    host_cpuid: HostCpuid,
    msrs: MsrState,
    clock: PvClock,
    /// The last values written to the kvmclock MSRs (system time, wall clock).
    kvmclock_msrs: [u64; 2],
    pv_eoi: PvEoi,
    steal_time: StealTime,
    unmapped_logged: u32,
    /// The vCPU's recent guest page walks, for the instruction fetches of exits without a next
    /// RIP and of MMIO emulation.
    tlb: Tlb,
    /// Exit counters by vCPU and raw exit code (recorded by the scheduler around `handle`).
    pub stats: crate::stats::DomainStats,
    /// The number of the current vCPU, whose state the fields above hold.
    cur: usize,
    /// The other vCPUs by number (`None` at `cur`).
    parked: Vec<Option<Parked<V>>>,
    /// What each vCPU does, by number.
    activity: Vec<Activity>,
}

impl<V: Vcpu> Domain<V> {
    /// A domain whose vCPU 0 (the bootstrap processor) starts running and whose other vCPUs
    /// wait for a STARTUP IPI; `vcpus` must not be empty, and the platform needs as many local
    /// APICs.
    pub fn new(
        identity: Identity,
        vcpus: Vec<V>,
        platform: Platform,
        ram: GuestRam<'static>,
    ) -> Self {
        let count = vcpus.len();
        let mut vcpus = vcpus.into_iter();
        let bsp = vcpus.next().expect("a domain has at least one vCPU");
        let table = |apic_id| CpuidTable::new(&identity.cpuid, apic_id, &identity.host_cpuid);
        let parked = core::iter::once(None)
            .chain(vcpus.zip(1u32..).map(|(vcpu, apic_id)| {
                Some(Parked {
                    vcpu,
                    cpuid_table: table(apic_id),
                    msrs: MsrState::default(),
                    kvmclock_msrs: [0; 2],
                    pv_eoi: PvEoi::default(),
                    steal_time: StealTime::default(),
                    tlb: Tlb::new(),
                })
            }))
            .collect();
        let mut activity = alloc::vec![Activity::WaitForSipi; count];
        activity[0] = Activity::Running;
        Self {
            id: identity.id,
            name: identity.name,
            vcpu: bsp,
            platform,
            ram,
            cpuid_table: table(0),
            cpuid: identity.cpuid,
            host_cpuid: identity.host_cpuid,
            msrs: MsrState::default(),
            clock: identity.clock,
            kvmclock_msrs: [0; 2],
            pv_eoi: PvEoi::default(),
            steal_time: StealTime::default(),
            unmapped_logged: 0,
            tlb: Tlb::new(),
            stats: crate::stats::DomainStats::new(count),
            cur: 0,
            parked,
            activity,
        }
    }

    /// The number of the current vCPU.
    pub fn current_vcpu(&self) -> usize {
        self.cur
    }

    pub fn vcpu_count(&self) -> usize {
        self.activity.len()
    }

    /// Whether vCPU `i` is online (not waiting for a STARTUP IPI), and whether it is halted.
    pub fn vcpu_status(&self, i: usize) -> (bool, bool) {
        match self.activity.get(i) {
            Some(Activity::Running) => (true, false),
            Some(Activity::Halted) => (true, true),
            _ => (false, false),
        }
    }

    /// Makes a vCPU that can run current: the current one while it runs (unless `rotate` asks
    /// for another), else the next in number order that runs or is halted with an interrupt
    /// ready (which ends its halt). False when no vCPU can run: the domain is blocked.
    pub fn pick_vcpu(&mut self, rotate: bool) -> bool {
        let n = self.activity.len();
        if !rotate && self.activity[self.cur] == Activity::Running {
            return true;
        }
        let ready = self.platform.wake_mask();
        let next = (1..=n)
            .map(|k| (self.cur + k) % n)
            .find(|&i| self.activity[i].can_run(ready & (1 << i) != 0));
        match next {
            Some(i) => {
                self.activity[i] = Activity::Running;
                self.switch_to(i);
                true
            }
            None => false,
        }
    }

    /// Whether a halted vCPU other than the current one has an interrupt or an NMI ready: it
    /// should run soon. (A running sibling takes its interrupts at its next turn.)
    #[inline]
    pub fn sibling_woken(&self) -> bool {
        let ready = self.platform.wake_mask() & !(1 << self.cur);
        ready != 0
            && self
                .activity
                .iter()
                .enumerate()
                .any(|(i, a)| *a == Activity::Halted && ready & (1 << i) != 0)
    }

    /// Swaps vCPU `i` and its state in for the current one, which leaves the physical CPU.
    fn switch_to(&mut self, i: usize) {
        if i == self.cur {
            return;
        }
        let Some(mut p) = self.parked.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.vcpu.release();
        core::mem::swap(&mut self.vcpu, &mut p.vcpu);
        core::mem::swap(&mut self.cpuid_table, &mut p.cpuid_table);
        core::mem::swap(&mut self.msrs, &mut p.msrs);
        core::mem::swap(&mut self.kvmclock_msrs, &mut p.kvmclock_msrs);
        core::mem::swap(&mut self.pv_eoi, &mut p.pv_eoi);
        core::mem::swap(&mut self.steal_time, &mut p.steal_time);
        core::mem::swap(&mut self.tlb, &mut p.tlb);
        self.parked[self.cur] = Some(p);
        self.cur = i;
        self.platform.select_vcpu(i);
    }

    /// Carries out the INIT and STARTUP IPIs the guest sent: INIT makes the target wait for a
    /// STARTUP, which starts it in real mode at the vector's page (SDM Vol. 3A 10.4.4.1, 11.6.1);
    /// a STARTUP to a vCPU that is not waiting for one is ignored.
    fn deliver_startups(&mut self) {
        while let Some((i, signal)) = self.platform.take_startup() {
            let Some(activity) = self.activity.get_mut(i) else {
                continue;
            };
            match signal {
                Startup::Init => *activity = Activity::WaitForSipi,
                Startup::Sipi(vector) if *activity == Activity::WaitForSipi => {
                    *activity = Activity::Running;
                    if let Some(Some(p)) = self.parked.get_mut(i) {
                        p.vcpu.start_up(vector);
                        p.tlb = Tlb::new();
                    }
                }
                Startup::Sipi(_) => {}
            }
        }
    }

    /// Serves virtio queues the guest notified, runs due device timers and queues an interrupt
    /// (or asks for an interrupt window). Called right before every entry; the platform skips
    /// the work when nothing can have changed since the last entry.
    pub fn prepare_entry(&mut self, now: u64) {
        self.platform.refresh(&mut self.ram, now);
        self.prepare_nmi();
        if !self.platform.has_interrupt() {
            self.vcpu.request_interrupt_window(false);
        } else if self.vcpu.interruptible() {
            if let Some(vector) = self.platform.take_interrupt() {
                self.vcpu.inject(Event::Interrupt(vector));
            }
            self.vcpu.request_interrupt_window(false);
        } else {
            self.vcpu.request_interrupt_window(true);
        }
        if self.pv_eoi.is_enabled() {
            let allowed = self.platform.eoi_may_skip_exit();
            self.pv_eoi.offer(&mut self.ram, allowed);
        }
    }

    /// Before each slice: `waited` is all the TSC ticks the vCPU has spent runnable but not
    /// running (its steal time); the guest's record is written only when that grew.
    pub fn account_steal(&mut self, waited: u64) {
        let stolen_ns = self.clock.ns(waited);
        self.steal_time.update(&mut self.ram, stolen_ns);
    }

    /// A pending NMI goes first: it outranks external interrupts (SDM Vol. 3A §7.9), and once
    /// it is queued `interruptible` is false, so an interrupt waits for its window. It waits
    /// for an NMI window while the guest is still handling the previous NMI.
    fn prepare_nmi(&mut self) {
        if !self.platform.has_nmi() {
            self.vcpu.request_nmi_window(false);
        } else if self.vcpu.nmi_allowed() {
            self.platform.take_nmi();
            self.vcpu.inject(Event::Nmi);
            self.vcpu.request_nmi_window(false);
        } else {
            self.vcpu.request_nmi_window(true);
        }
    }

    /// A blocked domain has work again when an interrupt or an NMI is ready for one of its
    /// halted vCPUs (frames delivered to its NICs are moved into its receive buffers first), or
    /// one of them runs (started by a STARTUP IPI).
    pub fn has_work(&mut self, now: u64) -> bool {
        self.platform.refresh(&mut self.ram, now);
        let ready = self.platform.wake_mask();
        self.activity
            .iter()
            .enumerate()
            .any(|(i, a)| a.can_run(ready & (1 << i) != 0))
    }

    /// Handles one exit of the current vCPU.
    pub fn handle(&mut self, info: ExitInfo, now: u64) -> Next {
        // An EOI the guest signalled through PV EOI is done before anything looks at the APIC.
        if self.pv_eoi.take_eoi(&self.ram) {
            self.platform.eoi();
        }
        let next = self.dispatch(info, now);
        if matches!(next, Next::Halt) {
            self.activity[self.cur] = Activity::Halted;
        }
        self.deliver_startups();
        next
    }

    fn dispatch(&mut self, info: ExitInfo, now: u64) -> Next {
        match info.exit {
            Exit::Cpuid => self.cpuid(info),
            Exit::Hlt => match self.skip(info) {
                Next::Resume => Next::Halt,
                other => other,
            },
            Exit::Io(io) => self.io(io, info, now),
            Exit::MsrRead => self.rdmsr(info, now),
            Exit::MsrWrite => self.wrmsr(info, now),
            Exit::NestedPageFault { gpa, fetch, .. } => self.mmio(gpa, fetch, now),
            Exit::ExternalInterrupt => Next::HostInterrupt,
            Exit::InterruptWindow | Exit::NmiWindow => Next::Resume,
            Exit::Hypercall => {
                self.vcpu.regs_mut().gpr[reg::RAX] = HYPERCALL_ENOSYS;
                self.skip(info)
            }
            Exit::CacheFlush => self.skip(info),
            Exit::VirtInstruction | Exit::Xsetbv => self.fault(vcpu::vector::UD, None),
            Exit::Exception { vector, error_code } => {
                self.vcpu.inject(Event::Exception { vector, error_code });
                Next::Resume
            }
            Exit::Shutdown => Next::Stop(StopReason::TripleFault {
                rip: self.vcpu.regs().rip,
            }),
            Exit::InvalidState => Next::Stop(StopReason::Crashed(String::from(
                "the hardware rejected the guest state",
            ))),
            Exit::Unknown => Next::Stop(StopReason::Crashed(alloc::format!(
                "unhandled exit {} ({:#x})",
                self.vcpu.exit_name(info.raw),
                info.raw
            ))),
        }
    }

    /// Advances RIP past the exiting instruction.
    fn skip(&mut self, info: ExitInfo) -> Next {
        let next = match info.next_rip {
            Some(rip) => rip,
            None => {
                let ctrl = self.vcpu.control_state();
                let regs = self.vcpu.regs();
                match emulate::instruction_length_cached(&mut self.tlb, regs, &ctrl, &self.ram) {
                    Ok(len) => self.vcpu.regs().rip.wrapping_add(u64::from(len)),
                    Err(e) => {
                        return Next::Stop(StopReason::Crashed(alloc::format!(
                            "cannot decode the instruction at rip {:#x}: {e}",
                            self.vcpu.regs().rip
                        )))
                    }
                }
            }
        };
        self.vcpu.regs_mut().rip = next;
        Next::Resume
    }

    fn fault(&mut self, vector: u8, error_code: Option<u32>) -> Next {
        self.vcpu.inject(Event::Exception { vector, error_code });
        Next::Resume
    }

    fn cpuid(&mut self, info: ExitInfo) -> Next {
        let regs = self.vcpu.regs();
        let (leaf, subleaf) = (regs.gpr[reg::RAX] as u32, regs.gpr[reg::RCX] as u32);
        let mut out = match self.cpuid_table.get(leaf, subleaf) {
            Some(out) => out,
            None => guest_cpuid(&self.cpuid, 0, leaf, subleaf, &self.host_cpuid),
        };
        // OSXSAVE and OSPKE mirror the guest's own CR4 (SDM Vol. 2A, CPUID leaf 1 ECX bit 27,
        // leaf 7 subleaf 0 ECX bit 4).
        let mirror = match (leaf, subleaf) {
            (1, _) => Some((CR4_OSXSAVE, 27)),
            (7, 0) => Some((CR4_PKE, 4)),
            _ => None,
        };
        if let Some((cr4_bit, bit)) = mirror {
            let on = self.vcpu.control_state().cr4 & cr4_bit != 0;
            out[2] = (out[2] & !(1 << bit)) | (u32::from(on) << bit);
        }
        let gpr = &mut self.vcpu.regs_mut().gpr;
        for (r, v) in [reg::RAX, reg::RBX, reg::RCX, reg::RDX]
            .into_iter()
            .zip(out)
        {
            gpr[r] = u64::from(v);
        }
        self.skip(info)
    }

    fn io(&mut self, io: IoAccess, info: ExitInfo, now: u64) -> Next {
        if io.string {
            return Next::Stop(StopReason::Crashed(alloc::format!(
                "string I/O to port {:#x} is not emulated",
                io.port
            )));
        }
        let mask = size_mask(io.size);
        if io.write {
            let value = self.vcpu.regs().gpr[reg::RAX] & mask;
            self.platform.io_write(io.port, io.size, value as u32, now);
            if let Some(stop) = self.power_event() {
                return stop;
            }
        } else {
            let value = u64::from(self.platform.io_read(io.port, io.size, now)) & mask;
            let rax = &mut self.vcpu.regs_mut().gpr[reg::RAX];
            // A 32-bit result zero-extends into RAX; 8- and 16-bit results merge.
            *rax = if io.size == 4 {
                value
            } else {
                (*rax & !mask) | value
            };
        }
        self.skip(info)
    }

    fn power_event(&mut self) -> Option<Next> {
        self.platform.take_power_event().map(|e| {
            Next::Stop(match e {
                PowerEvent::PowerOff => StopReason::PowerOff,
                PowerEvent::Reset => StopReason::Reset,
            })
        })
    }

    fn rdmsr(&mut self, info: ExitInfo, now: u64) -> Next {
        let index = self.vcpu.regs().gpr[reg::RCX] as u32;
        let value = match kvmclock_slot(index) {
            Some(slot) => Some(self.kvmclock_msrs[slot]),
            None => self
                .pv_msr_read(index)
                .or_else(|| self.other_msr_read(index, now)),
        };
        match value {
            Some(v) => {
                let gpr = &mut self.vcpu.regs_mut().gpr;
                gpr[reg::RAX] = v & 0xFFFF_FFFF;
                gpr[reg::RDX] = v >> 32;
                self.skip(info)
            }
            None => {
                log::debug!("domain {}: rdmsr {index:#x}: #GP", self.name);
                self.fault(vcpu::vector::GP, Some(0))
            }
        }
    }

    fn other_msr_read(&mut self, index: u32, now: u64) -> Option<u64> {
        match self.platform.msr_read(index, now) {
            Some(Ok(v)) => Some(v),
            Some(Err(())) => None,
            None => match self.vcpu.read_state_msr(index) {
                Some(v) => Some(v),
                None => match self.msrs.read(index, now) {
                    msr::Access::Value(v) => Some(v),
                    _ => None,
                },
            },
        }
    }

    fn wrmsr(&mut self, info: ExitInfo, now: u64) -> Next {
        let gpr = &self.vcpu.regs().gpr;
        let index = gpr[reg::RCX] as u32;
        let value = (gpr[reg::RDX] << 32) | (gpr[reg::RAX] & 0xFFFF_FFFF);
        let ok = match kvmclock_slot(index) {
            Some(slot) => self.kvmclock_write(slot, value, now),
            None => match self.pv_msr_write(index, value) {
                Some(ok) => ok,
                None => self.other_msr_write(index, value, now),
            },
        };
        if ok {
            self.skip(info)
        } else {
            log::debug!("domain {}: wrmsr {index:#x} <- {value:#x}: #GP", self.name);
            self.fault(vcpu::vector::GP, Some(0))
        }
    }

    /// Registers kvmclock structures; an address outside RAM is a #GP, as on KVM.
    fn kvmclock_write(&mut self, slot: usize, value: u64, now: u64) -> bool {
        let done = if slot == 0 {
            self.clock.register_system_time(&mut self.ram, value, now)
        } else {
            self.clock.write_wall_clock(&mut self.ram, value)
        };
        self.kvmclock_msrs[slot] = value;
        done.is_ok()
    }

    /// The PV EOI and steal-time MSRs read back what was last written.
    fn pv_msr_read(&self, index: u32) -> Option<u64> {
        match index {
            pv_eoi::MSR_KVM_PV_EOI_EN => Some(self.pv_eoi.msr()),
            steal_time::MSR_KVM_STEAL_TIME => Some(self.steal_time.msr()),
            _ => None,
        }
    }

    /// `None` when `index` is neither; `Some(false)` for a value that raises #GP.
    fn pv_msr_write(&mut self, index: u32, value: u64) -> Option<bool> {
        match index {
            pv_eoi::MSR_KVM_PV_EOI_EN => Some(self.pv_eoi.write_msr(&mut self.ram, value).is_ok()),
            steal_time::MSR_KVM_STEAL_TIME => Some(self.steal_time.write_msr(value).is_ok()),
            _ => None,
        }
    }

    fn other_msr_write(&mut self, index: u32, value: u64, now: u64) -> bool {
        match self.platform.msr_write(index, value, now) {
            Some(r) => r.is_ok(),
            None => match self.vcpu.write_state_msr(index, value) {
                Ok(true) => true,
                Err(vcpu::InvalidValue) => false,
                Ok(false) => self.msrs.write(index, value) == msr::Access::Done,
            },
        }
    }

    fn mmio(&mut self, gpa: u64, fetch: bool, now: u64) -> Next {
        if fetch {
            return Next::Stop(StopReason::Crashed(alloc::format!(
                "instruction fetch from guest-physical {gpa:#x}, which is not RAM"
            )));
        }
        let ctrl = self.vcpu.control_state();
        let mut bus = Bus {
            platform: &mut self.platform,
            now,
            id: self.id,
            name: &self.name,
            logged: &mut self.unmapped_logged,
        };
        let segs = self.vcpu.segments();
        let regs = self.vcpu.regs_mut();
        let tlb = &mut self.tlb;
        match emulate::emulate_mmio_cached(tlb, regs, &ctrl, &segs, &mut self.ram, &mut bus, gpa) {
            Ok(()) => self.power_event().unwrap_or(Next::Resume),
            Err(e) => Next::Stop(StopReason::Crashed(alloc::format!(
                "cannot emulate the access to guest-physical {gpa:#x}: {e}"
            ))),
        }
    }
}

/// Which kvmclock MSR `index` is: 0 system time, 1 wall clock (old and new numbers alike).
fn kvmclock_slot(index: u32) -> Option<usize> {
    match index {
        pvclock::MSR_KVM_SYSTEM_TIME | pvclock::MSR_KVM_SYSTEM_TIME_NEW => Some(0),
        pvclock::MSR_KVM_WALL_CLOCK | pvclock::MSR_KVM_WALL_CLOCK_NEW => Some(1),
        _ => None,
    }
}

fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// The platform's MMIO as the instruction emulator sees it; accesses that hit no device read
/// as all ones and are dropped, and are logged.
struct Bus<'a> {
    platform: &'a mut Platform,
    now: u64,
    id: u32,
    name: &'a str,
    logged: &'a mut u32,
}

impl Bus<'_> {
    fn log_unmapped(&mut self, what: fmt::Arguments) {
        if *self.logged < UNMAPPED_LOG_LIMIT {
            *self.logged += 1;
            log::info!("domain {} (id {}): {what}", self.name, self.id);
            if *self.logged == UNMAPPED_LOG_LIMIT {
                log::info!(
                    "domain {} (id {}): further unmapped accesses not logged",
                    self.name,
                    self.id
                );
            }
        }
    }
}

impl MmioBus for Bus<'_> {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        match self.platform.mmio_read(gpa, size, self.now) {
            Some(v) => v,
            None => {
                self.log_unmapped(format_args!(
                    "read of unmapped gpa {gpa:#x} (size {size}) returns all ones"
                ));
                size_mask(size)
            }
        }
    }

    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        if !self.platform.mmio_write(gpa, size, value, self.now) {
            self.log_unmapped(format_args!(
                "write to unmapped gpa {gpa:#x} (size {size}) dropped"
            ));
        }
    }
}

#[cfg(test)]
#[path = "domain_tests.rs"]
mod tests;
