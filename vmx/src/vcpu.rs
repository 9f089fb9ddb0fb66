//! One VMX virtual CPU: its VMCS programmed with the monitor's controls, host state, EPT and
//! VPID, the guest's start state, event injection with interrupt-window exits, NMI injection
//! with virtual NMIs and NMI-window exits (SDM Vol. 3C §26.3, §27.7.6), re-injection of
//! events cut short by an exit (IDT-vectoring information, SDM Vol. 3C §28.2.4), and the
//! `vcpu::Vcpu` implementation the exit loop drives. The exits the exit loop need not see are
//! handled here: XSETBV, and the CR0/CR4 writes the guest/host masks make exit (`cr`). Every
//! entry arms the VMX-preemption timer, where offered, for the deadline the exit loop set (at
//! most `SLICE_BACKSTOP_MS` away), so a run ends on time even when the host's timer interrupt
//! does not reach the CPU in VMX non-root operation (as under Bochs).
//!
//! The guest state the exit loop asks about is read once per exit into a snapshot, and what it
//! changes is written back right before the next entry, so the trait's methods never depend on
//! which VMCS is current. Each entry makes this vCPU's VMCS current first (VMPTRLD only when
//! another one was), swapping the MSRs the VMCS does not switch (`guest_msrs`).

use alloc::boxed::Box;

use vcpu::{reg, ControlState, Event, Exit, ExitInfo, InvalidValue, Regs, Segments, StartState};
use x86::vmx::vmcs::control::{
    EntryControls, PinbasedControls, PrimaryControls, SecondaryControls,
};
use x86::vmx::vmcs::{control, guest, host, ro};

use crate::cr;
use crate::event::{self, Injection};
use crate::exit::{self, CrAccess};
use crate::features::{ept_cap, Features};
use crate::guest::{self as gs, CrOwnership, Snapshot, SNAPSHOT_FIELDS};
use crate::guest_msrs::GuestMsrs;
use crate::host::HostState;
use crate::msr_bitmap::MsrBitmap;
use crate::switch::{self, Outcome};
use crate::vmcs::{self, InvType, Region, VmFail};

const MSR_EFER: u32 = 0xC000_0080;
const MSR_PAT: u32 = 0x277;
/// EFER bits an Intel guest may set: SCE, LME, LMA (written by hardware), NXE.
const EFER_GUEST_BITS: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11);
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;
const RFLAGS_IF: u64 = 1 << 9;
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
/// The longest a guest runs before the preemption timer exits, in milliseconds.
const SLICE_BACKSTOP_MS: u64 = 10;
/// The TSC rate assumed until `Shared::set_tsc_hz` gives the calibrated one: a low one, so
/// the backstop holds on slow TSCs too (Bochs' runs at its instruction rate, not at the
/// frequency CPUID leaf 16h reports); on a fast TSC the guest merely exits more often.
const ASSUMED_TSC_HZ: u64 = 100_000_000;

/// What every vCPU on this CPU shares: the capabilities, the host state and the MSR bitmap.
pub struct Shared {
    features: Features,
    host: HostState,
    msr_bitmap: Box<MsrBitmap>,
    xcr0_supported: u64,
    /// The VMX-preemption timer value every entry starts from, when the timer is offered.
    preemption_timer: Option<u32>,
}

impl Shared {
    pub fn new(features: Features, host: HostState) -> Self {
        Self {
            features,
            host,
            msr_bitmap: MsrBitmap::standard(),
            xcr0_supported: crate::xcr0::supported(),
            preemption_timer: features
                .controls
                .has_pin(PinbasedControls::VMX_PREEMPTION_TIMER)
                .then_some(features.preemption_timer_shift)
                .flatten()
                .map(|shift| preemption_timer_value(shift, ASSUMED_TSC_HZ)),
        }
    }

    /// Sizes the preemption-timer backstop for the calibrated TSC rate; vCPUs created
    /// afterwards use it.
    pub fn set_tsc_hz(&mut self, tsc_hz: u64) {
        if let Some(shift) = self.features.preemption_timer_shift {
            if self.preemption_timer.is_some() {
                self.preemption_timer = Some(preemption_timer_value(shift, tsc_hz));
            }
        }
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The host state every VMCS holds, the same on every CPU (`host::enable_other`).
    pub fn host(&self) -> &HostState {
        &self.host
    }
}

/// The VMCS and the saved pass-through MSRs, boxed so that the VMCS keeps its physical address
/// while the owning `VmxVcpu` moves.
#[repr(C)]
struct Hw {
    vmcs: Region,
    msrs: GuestMsrs,
}

pub struct VmxVcpu {
    hw: Box<Hw>,
    regs: Regs,
    snapshot: Snapshot,
    own: CrOwnership,
    /// RIP at the last exit: once the core moves RIP on, the STI/MOV-SS shadow is over.
    exit_rip: u64,
    primary: u32,
    primary_dirty: bool,
    /// "Virtual NMIs" is on: the CPU tracks the guest's NMI blocking, so NMIs can be injected.
    /// Without it an IRET would not unblock NMIs (SDM Vol. 3C §26.3) and none are injected.
    virtual_nmis: bool,
    /// "NMI-window exiting" may be set.
    nmi_window: bool,
    efer_dirty: bool,
    pat: u64,
    pat_dirty: bool,
    pending: Option<Injection>,
    launched: bool,
    /// The VMCS is current on the CPU running this vCPU, with the guest's pass-through MSRs
    /// live there; false after `release`, which VMCLEARs it so that it may move to another CPU
    /// (SDM Vol. 3C §25.11.1: a VMCS is active on one logical processor at a time).
    current: bool,
    /// A STARTUP IPI's vector whose guest state is still to be written into the VMCS, at the
    /// next entry (the VMCS is not current while the vCPU is parked).
    sipi: Option<u8>,
    /// How to drop the translations tagged with this vCPU's EPTP and VPID, whenever its VMCS
    /// becomes current on a CPU: that CPU may still cache them from an earlier run there.
    flush: Flush,
    tsc_aux: bool,
    /// The guest's XCR0 and the bits the CPU supports (0 without XSAVE).
    xcr0: u64,
    xcr0_supported: u64,
    /// The VMCS could not be programmed: every run reports `InvalidState`.
    broken: Option<VmFail>,
    /// What MOV to CR0/CR4 may load, for the writes that exit.
    cr_rules: cr::Rules,
    /// How to drop this vCPU's linear translations after an emulated CR write: VPID-tagged
    /// ones survive VM entries (SDM Vol. 3C §29.1).
    invvpid: Option<(InvType, u16)>,
    /// The VMX-preemption timer, when offered: it ends each run at the deadline the exit loop
    /// sets, within the backstop.
    timer: Option<PreemptionTimer>,
}

/// The VMX-preemption timer of one vCPU (SDM Vol. 3C §26.5.1): it counts down every 2^`shift`
/// TSC ticks from the value VM entry finds in the VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PreemptionTimer {
    shift: u8,
    /// The most a run lasts, as a timer value.
    backstop: u32,
    /// The value in the VMCS.
    written: u32,
    /// The value the next entry needs.
    wanted: u32,
}

impl PreemptionTimer {
    /// The value that ends a run starting at `now` at TSC time `deadline`: at least 1 (a 0
    /// exits before the guest runs an instruction), at most the backstop.
    fn value_for(&self, deadline: u64, now: u64) -> u32 {
        let ticks = deadline.saturating_sub(now) >> self.shift;
        ticks.clamp(1, u64::from(self.backstop)) as u32
    }
}

type Fields<'a> = &'a [(u32, u64)];

/// The INVEPT and INVVPID a vCPU needs on a CPU it (re)starts on.
#[derive(Clone, Copy, Debug)]
struct Flush {
    invept: Option<InvType>,
    eptp: u64,
    invvpid: Option<(InvType, u16)>,
}

impl VmxVcpu {
    /// A vCPU of domain `id` (its VPID; ≥ 1) whose EPT pointer is `eptp`.
    pub fn new(shared: &Shared, id: u32, eptp: u64, start: &StartState) -> Self {
        let f = &shared.features;
        let mut v = Self {
            hw: Box::new(Hw {
                vmcs: Region::with_revision(f.revision),
                msrs: GuestMsrs::default(),
            }),
            regs: start.regs,
            snapshot: Snapshot {
                cr0: start.cr0,
                cr3: start.cr3,
                cr4: start.cr4,
                efer: start.efer,
                cs_access: 0,
                cs_base: 0,
                segments: Segments::default(),
                interruptibility: 0,
            },
            own: CrOwnership::new(f, start),
            exit_rip: start.regs.rip,
            primary: f.controls.primary,
            primary_dirty: false,
            virtual_nmis: f.controls.has_pin(PinbasedControls::VIRTUAL_NMIS),
            nmi_window: f.controls.nmi_window,
            efer_dirty: false,
            pat: DEFAULT_PAT,
            pat_dirty: false,
            pending: None,
            launched: false,
            current: false,
            sipi: None,
            flush: Flush {
                invept: None,
                eptp,
                invvpid: None,
            },
            tsc_aux: f.controls.has_secondary(SecondaryControls::ENABLE_RDTSCP),
            xcr0: 1,
            xcr0_supported: shared.xcr0_supported,
            broken: None,
            cr_rules: cr::Rules {
                cr0_fixed: (f.cr0_guest_fixed(), f.cr0_fixed.1),
                cr4_fixed: f.cr4_fixed,
            },
            invvpid: None,
            timer: shared.preemption_timer.zip(f.preemption_timer_shift).map(
                |(backstop, shift)| PreemptionTimer {
                    shift,
                    backstop,
                    written: backstop,
                    wanted: backstop,
                },
            ),
        };
        v.snapshot.cs_access = gs::access::CODE
            | gs::access::GRANULARITY
            | if start.long_mode {
                gs::access::LONG
            } else {
                gs::access::DB
            };
        let vpid = ((id.wrapping_sub(1) % 0xFFFF) + 1) as u16;
        v.invvpid = invvpid_kind(f).filter(|_| f.vpid()).map(|k| (k, vpid));
        v.flush.invvpid = v.invvpid;
        v.flush.invept = f
            .ept_cap(ept_cap::INVEPT)
            .then(|| inv_kind(f, ept_cap::INVEPT_SINGLE, ept_cap::INVEPT_ALL))
            .flatten();
        let result = v.program(shared, vpid, eptp, start);
        if let Err(e) = result {
            log::error!("vmx: cannot program the VMCS of vCPU {id}: {e}");
            v.broken = Some(e);
        }
        // Created on whichever CPU ran `create`; it may first run on another one.
        vcpu::Vcpu::release(&mut v);
        v
    }

    fn program(
        &mut self,
        shared: &Shared,
        vpid: u16,
        eptp: u64,
        start: &StartState,
    ) -> Result<(), VmFail> {
        let f = &shared.features;
        // SAFETY: VMX is on (Shared exists only after host::enable) and the region is ours.
        unsafe { vmcs::clear(self.hw.vmcs.pa())? };
        self.make_current()?;
        let h = &shared.host;
        let entry = f.controls.entry
            | if start.long_mode {
                EntryControls::IA32E_MODE_GUEST.bits()
            } else {
                0
            };
        let controls: Fields = &[
            (control::PINBASED_EXEC_CONTROLS, u64::from(f.controls.pin)),
            (
                control::PRIMARY_PROCBASED_EXEC_CONTROLS,
                u64::from(self.primary),
            ),
            (
                control::SECONDARY_PROCBASED_EXEC_CONTROLS,
                u64::from(f.controls.secondary),
            ),
            (control::VMEXIT_CONTROLS, u64::from(f.controls.exit)),
            (control::VMENTRY_CONTROLS, u64::from(entry)),
            (control::EXCEPTION_BITMAP, 0),
            (control::PAGE_FAULT_ERR_CODE_MASK, 0),
            (control::PAGE_FAULT_ERR_CODE_MATCH, 0),
            (control::CR3_TARGET_COUNT, 0),
            (control::VMEXIT_MSR_STORE_COUNT, 0),
            (control::VMEXIT_MSR_LOAD_COUNT, 0),
            (control::VMENTRY_MSR_LOAD_COUNT, 0),
            (control::VMENTRY_INTERRUPTION_INFO_FIELD, 0),
            (control::TSC_OFFSET_FULL, 0),
            (control::MSR_BITMAPS_ADDR_FULL, shared.msr_bitmap.pa()),
            (control::EPTP_FULL, eptp),
        ];
        let host_fields: Fields = &[
            (host::CR0, h.cr0),
            (host::CR3, h.cr3),
            (host::CR4, h.cr4),
            (host::CS_SELECTOR, u64::from(h.cs)),
            (host::SS_SELECTOR, u64::from(h.ss)),
            (host::DS_SELECTOR, u64::from(h.ds)),
            (host::ES_SELECTOR, u64::from(h.es)),
            (host::FS_SELECTOR, 0),
            (host::GS_SELECTOR, 0),
            (host::TR_SELECTOR, u64::from(h.tr)),
            (host::FS_BASE, 0),
            (host::GS_BASE, 0),
            (host::TR_BASE, h.tr_base),
            (host::GDTR_BASE, h.gdtr_base),
            (host::IDTR_BASE, h.idtr_base),
            (host::IA32_SYSENTER_CS, 0),
            (host::IA32_SYSENTER_ESP, 0),
            (host::IA32_SYSENTER_EIP, 0),
            (host::IA32_EFER_FULL, h.efer),
            (host::IA32_PAT_FULL, h.pat),
            (host::RIP, switch::exit_landing()),
        ];
        let rsp = start.regs.gpr[reg::RSP];
        for list in [
            controls,
            host_fields,
            &gs::start_fields(f, start)[..],
            &gs::fixed_fields(rsp)[..],
        ] {
            write_all(list)?;
        }
        if f.vpid() {
            write_all(&[(control::VPID, u64::from(vpid))])?;
        }
        if let Some(ticks) = shared.preemption_timer {
            // Without "save VMX-preemption timer value" the field keeps this value and every
            // entry starts the countdown from it afresh (SDM Vol. 3C §26.7.4).
            write_all(&[(guest::VMX_PREEMPTION_TIMER_VALUE, u64::from(ticks))])?;
        }
        if f.controls
            .has_secondary(SecondaryControls::ENABLE_XSAVES_XRSTORS)
        {
            write_all(&[(control::XSS_EXITING_BITMAP_FULL, 0)])?;
        }
        Ok(())
    }

    /// Makes this vCPU's VMCS current on this CPU with its pass-through MSRs and XCR0, and drops
    /// whatever translations of it the CPU may hold from an earlier run here (another domain
    /// may have used the same tables' frames or VPID number since).
    fn make_current(&mut self) -> Result<(), VmFail> {
        if self.current {
            return Ok(());
        }
        // SAFETY: no vCPU's guest MSRs are live on this CPU (the last one released them); the
        // MSR load touches MSRs the host does not use, and TSC_AUX only with RDTSCP enabled,
        // which implies the MSR exists.
        unsafe {
            self.hw.msrs.load(self.tsc_aux);
            if self.xcr0_supported != 0 {
                // SAFETY: host::enable set CR4.OSXSAVE; the value passed `xcr0::valid`.
                crate::xcr0::load(self.xcr0);
            }
            vmcs::load(self.hw.vmcs.pa())?;
        }
        self.current = true;
        self.flush.run()
    }

    /// The guest state of a STARTUP IPI that `start_up` left for the VMCS.
    fn load_pending_sipi(&mut self) -> Result<(), VmFail> {
        let Some(vector) = self.sipi.take() else {
            return Ok(());
        };
        let (cr0_fixed, cr4_fixed) = (self.cr_rules.cr0_fixed, self.cr_rules.cr4_fixed);
        write_all(&gs::sipi_fields(vector, cr0_fixed, cr4_fixed))?;
        let entry =
            read(control::VMENTRY_CONTROLS) & !u64::from(EntryControls::IA32E_MODE_GUEST.bits());
        write_all(&[
            (control::VMENTRY_CONTROLS, entry),
            (control::VMENTRY_INTERRUPTION_INFO_FIELD, 0),
            (guest::INTERRUPTIBILITY_STATE, 0),
            (guest::ACTIVITY_STATE, 0),
        ])?;
        self.flush_linear(u64::MAX, u64::MAX)
    }

    /// Writes what the exit loop changed since the last exit.
    fn prepare_entry(&mut self) -> Result<(), VmFail> {
        self.make_current()?;
        self.load_pending_sipi()?;
        let mut fields = [(0u32, 0u64); 11];
        let mut n = 0;
        let mut push = |f: u32, v: u64| {
            fields[n] = (f, v);
            n += 1;
        };
        push(guest::RIP, self.regs.rip);
        push(guest::RSP, self.regs.gpr[reg::RSP]);
        push(guest::RFLAGS, self.regs.rflags);
        let mut interruptibility = self.snapshot.interruptibility;
        if self.regs.rip != self.exit_rip {
            // The core skipped the instruction: its STI/MOV-SS shadow ends with it.
            interruptibility &= !(gs::blocking::STI | gs::blocking::MOV_SS);
        }
        if let Some(inj) = self.pending {
            interruptibility = event::entry_interruptibility(inj.info, interruptibility);
        }
        if interruptibility != self.snapshot.interruptibility {
            self.snapshot.interruptibility = interruptibility;
            push(guest::INTERRUPTIBILITY_STATE, u64::from(interruptibility));
        }
        if self.primary_dirty {
            push(
                control::PRIMARY_PROCBASED_EXEC_CONTROLS,
                u64::from(self.primary),
            );
        }
        if self.efer_dirty {
            push(guest::IA32_EFER_FULL, self.snapshot.efer);
        }
        if self.pat_dirty {
            push(guest::IA32_PAT_FULL, self.pat);
        }
        if let Some(t) = self.timer.as_mut().filter(|t| t.wanted != t.written) {
            t.written = t.wanted;
            push(guest::VMX_PREEMPTION_TIMER_VALUE, u64::from(t.wanted));
        }
        if let Some(inj) = self.pending {
            let inj = inj.for_mode(self.snapshot.cr0 & CR0_PE != 0);
            push(
                control::VMENTRY_INTERRUPTION_INFO_FIELD,
                u64::from(inj.info),
            );
            push(
                control::VMENTRY_EXCEPTION_ERR_CODE,
                u64::from(inj.error_code),
            );
            push(
                control::VMENTRY_INSTRUCTION_LEN,
                u64::from(inj.instruction_len),
            );
        }
        write_all(&fields[..n])?;
        self.primary_dirty = false;
        self.efer_dirty = false;
        self.pat_dirty = false;
        self.pending = None;
        Ok(())
    }

    /// Reads the guest state and the exit after a VM exit.
    fn read_exit(&mut self) -> ExitInfo {
        let reason = read(ro::EXIT_REASON) as u32;
        self.regs.rip = read(guest::RIP);
        self.regs.gpr[reg::RSP] = read(guest::RSP);
        self.regs.rflags = read(guest::RFLAGS);
        self.exit_rip = self.regs.rip;
        self.snapshot = Snapshot::from_fields(SNAPSHOT_FIELDS.map(read));
        let idt = read(ro::IDT_VECTORING_INFO) as u32;
        if idt & crate::event::VALID != 0 {
            self.pending = Injection::requeue(
                idt,
                read(ro::IDT_VECTORING_ERR_CODE) as u32,
                read(ro::VMEXIT_INSTRUCTION_LEN) as u32,
            );
        }
        let info = exit::decode(reason, self.regs.rip, &read);
        if info.exit == Exit::InvalidState {
            log::error!(
                "vmx: VM entry failed: {} ({reason:#x}), qualification {:#x}, rip {:#x}",
                exit::name(reason),
                read(ro::EXIT_QUALIFICATION),
                self.regs.rip
            );
        } else {
            self.launched = true;
        }
        info
    }
}

fn read(field: u32) -> u64 {
    // SAFETY: called between an exit and the next entry, with this vCPU's VMCS current; the
    // fields read exist on every CPU with the controls `Features` requires. A failed read
    // gives 0, which decodes as a harmless value.
    unsafe { vmcs::read(field) }.unwrap_or(0)
}

fn write_all(fields: Fields) -> Result<(), VmFail> {
    for &(f, v) in fields {
        // SAFETY: this vCPU's VMCS is current; the values follow the SDM's field rules.
        unsafe { vmcs::write(f, v)? };
    }
    Ok(())
}

/// The narrowest INVEPT or INVVPID type the CPU offers among `single` and `all`.
fn inv_kind(f: &Features, single: u64, all: u64) -> Option<InvType> {
    if f.ept_cap(single) {
        Some(InvType::SingleContext)
    } else if f.ept_cap(all) {
        Some(InvType::AllContext)
    } else {
        None
    }
}

fn invvpid_kind(f: &Features) -> Option<InvType> {
    f.ept_cap(ept_cap::INVVPID)
        .then(|| inv_kind(f, ept_cap::INVVPID_SINGLE, ept_cap::INVVPID_ALL))
        .flatten()
}

impl Flush {
    fn run(&self) -> Result<(), VmFail> {
        if let Some(k) = self.invept {
            // SAFETY: VMX root operation; the CPU supports INVEPT of this type.
            unsafe { vmcs::invept(k, self.eptp)? };
        }
        if let Some((k, vpid)) = self.invvpid {
            // SAFETY: as above; `vpid` is not 0.
            unsafe { vmcs::invvpid(k, vpid)? };
        }
        Ok(())
    }
}

/// The preemption-timer value that lasts `SLICE_BACKSTOP_MS` on a TSC of `tsc_hz` when the
/// timer counts every 2^`shift` TSC ticks (SDM Vol. 3C §26.5.1); at least 1, since 0 exits
/// before the guest runs an instruction.
fn preemption_timer_value(shift: u8, tsc_hz: u64) -> u32 {
    let ticks = tsc_hz.saturating_mul(SLICE_BACKSTOP_MS) / 1000;
    (ticks >> shift.min(63)).clamp(1, u64::from(u32::MAX)) as u32
}

/// A PAT value is valid when every entry is a defined memory type (SDM Vol. 3A §13.12.2).
fn valid_pat(value: u64) -> bool {
    value
        .to_le_bytes()
        .iter()
        .all(|t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// The new guest EFER after a WRMSR of `value`, or `InvalidValue` (#GP) for reserved bits or
/// a change of LME while paging is on (SDM Vol. 3A §10.8.5). LMA stays the hardware's.
fn new_efer(current: u64, cr0: u64, value: u64) -> Result<u64, InvalidValue> {
    if value & !EFER_GUEST_BITS != 0 {
        return Err(InvalidValue);
    }
    if cr0 & CR0_PG != 0 && (value ^ current) & EFER_LME != 0 {
        return Err(InvalidValue);
    }
    Ok((value & !EFER_LMA) | (current & EFER_LMA))
}

fn vmfail_exit() -> ExitInfo {
    ExitInfo {
        exit: Exit::InvalidState,
        raw: exit::VMFAIL,
        next_rip: None,
    }
}

impl VmxVcpu {
    /// Carries out the guest's XSETBV (`info` is its exit): the value is loaded, or the guest
    /// gets #GP(0) for CPL > 0, an XCR other than 0 or an invalid value.
    fn xsetbv(&mut self, info: &ExitInfo) {
        let g = &self.regs.gpr;
        let value = (g[reg::RDX] << 32) | (g[reg::RAX] & 0xFFFF_FFFF);
        let cpl = self.snapshot.control_state(&self.own).cpl;
        match info.next_rip {
            Some(next)
                if cpl == 0
                    && g[reg::RCX] as u32 == 0
                    && crate::xcr0::valid(value, self.xcr0_supported) =>
            {
                // SAFETY: host::enable set CR4.OSXSAVE (the supported mask is not 0 when
                // `valid` passes), and the value is valid.
                unsafe { crate::xcr0::load(value) };
                self.xcr0 = value;
                self.regs.rip = next;
            }
            _ => {
                self.pending = Some(Injection::of(Event::Exception {
                    vector: vcpu::vector::GP,
                    error_code: Some(0),
                }))
            }
        }
    }

    /// Carries out the guest's CR0/CR4 write that exited (a bit the monitor owns through the
    /// guest/host masks): the shadow takes the guest's value, the register the value with the
    /// VMX fixed bits, EFER.LMA and "IA-32e mode guest" follow CR0.PG, or the guest gets
    /// #GP(0). False for the accesses the backend does not emulate (CR3, CR8).
    fn cr_access(&mut self) -> bool {
        let g = self.guest_view();
        let gpr = |n: u8| self.regs.gpr.get(usize::from(n)).copied().unwrap_or(0);
        let (is_cr0, result) = match CrAccess::decode(read(ro::EXIT_QUALIFICATION)) {
            CrAccess::MovToCr { cr: 0, gpr: n } => (true, self.cr_rules.cr0(&g, gpr(n))),
            CrAccess::MovToCr { cr: 4, gpr: n } => (false, self.cr_rules.cr4(&g, gpr(n))),
            CrAccess::Clts => (true, self.cr_rules.clts(&g)),
            CrAccess::Lmsw { source, .. } => (true, self.cr_rules.lmsw(&g, source)),
            _ => return false,
        };
        let Ok(update) = result else {
            self.pending = Some(Injection::of(Event::Exception {
                vector: vcpu::vector::GP,
                error_code: Some(0),
            }));
            return true;
        };
        let next = self.regs.rip.wrapping_add(read(ro::VMEXIT_INSTRUCTION_LEN));
        let applied = if is_cr0 {
            self.load_cr0(&g, &update)
        } else {
            self.load_cr4(&g, &update)
        };
        match applied {
            Ok(()) => self.regs.rip = next,
            Err(e) => {
                log::error!("vmx: cannot load the guest's control register: {e}");
                self.broken = Some(e);
            }
        }
        true
    }

    /// The control registers and EFER as the guest sees them.
    fn guest_view(&self) -> cr::Guest {
        let c = self.snapshot.control_state(&self.own);
        cr::Guest {
            cr0: c.cr0,
            cr3: c.cr3,
            cr4: c.cr4,
            efer: c.efer,
            cs_long: c.cs_long,
        }
    }

    fn load_cr0(&mut self, old: &cr::Guest, u: &cr::Update) -> Result<(), VmFail> {
        write_all(&[
            (guest::CR0, u.hardware),
            (control::CR0_READ_SHADOW, u.shadow),
        ])?;
        self.own.cr0_shadow = u.shadow;
        self.snapshot.cr0 = u.hardware;
        if u.efer != old.efer {
            // SDM Vol. 3C §27.3.1.1: "IA-32e mode guest" must equal EFER.LMA at entry; a VM
            // exit stores LMA back into it (§28.2), so only emulated changes need this.
            let ia32e = EntryControls::IA32E_MODE_GUEST.bits();
            let entry = read(control::VMENTRY_CONTROLS) as u32 & !ia32e;
            let entry = entry | if u.long_mode() { ia32e } else { 0 };
            write_all(&[
                (guest::IA32_EFER_FULL, u.efer),
                (control::VMENTRY_CONTROLS, u64::from(entry)),
            ])?;
            self.snapshot.efer = u.efer;
        }
        self.flush_linear(old.cr0 ^ u.shadow, cr::CR0_PAGING_BITS)
    }

    fn load_cr4(&mut self, old: &cr::Guest, u: &cr::Update) -> Result<(), VmFail> {
        write_all(&[
            (guest::CR4, u.hardware),
            (control::CR4_READ_SHADOW, u.shadow),
        ])?;
        self.own.cr4_shadow = u.shadow;
        self.snapshot.cr4 = u.hardware;
        self.flush_linear(old.cr4 ^ u.shadow, cr::CR4_PAGING_BITS)
    }

    /// Drops this vCPU's VPID-tagged translations when `changed` touches `paging` bits, as the
    /// guest's own MOV to CR would have (SDM Vol. 3A §4.10.4.1).
    fn flush_linear(&self, changed: u64, paging: u64) -> Result<(), VmFail> {
        match self.invvpid {
            // SAFETY: VMX root operation; the CPU supports INVVPID of this type; vpid ≠ 0.
            Some((kind, vpid)) if changed & paging != 0 => unsafe { vmcs::invvpid(kind, vpid) },
            _ => Ok(()),
        }
    }

    /// Turns a primary processor-based control on or off for the next entry.
    fn set_primary(&mut self, control: PrimaryControls, on: bool) {
        let new = if on {
            self.primary | control.bits()
        } else {
            self.primary & !control.bits()
        };
        if new != self.primary {
            self.primary = new;
            self.primary_dirty = true;
        }
    }

    fn enter(&mut self) -> ExitInfo {
        if let Some(e) = self.broken {
            log::error!("vmx: vCPU unusable: {e}");
            return vmfail_exit();
        }
        if let Err(e) = self.prepare_entry() {
            log::error!("vmx: cannot prepare the VM entry: {e}");
            return vmfail_exit();
        }
        // SAFETY: the VMCS is current and programmed (`broken` is None), its host RIP is the
        // landing label, and `launched` tracks its launch state.
        match unsafe { switch::run(&mut self.regs.gpr, self.launched) } {
            Outcome::Exited => self.read_exit(),
            Outcome::FailInvalid => {
                log::error!("vmx: VM entry failed: VMfailInvalid");
                vmfail_exit()
            }
            Outcome::FailValid => {
                let e = VmFail::Valid(read(ro::VM_INSTRUCTION_ERROR) as u32);
                log::error!("vmx: VM entry failed: {e}");
                vmfail_exit()
            }
        }
    }
}

impl vcpu::Vcpu for VmxVcpu {
    /// Enters the guest; XSETBV and CR0/CR4 write exits are handled here and the guest
    /// re-entered.
    fn run(&mut self) -> ExitInfo {
        loop {
            let info = self.enter();
            match info.raw {
                exit::XSETBV => self.xsetbv(&info),
                exit::CR_ACCESS if self.cr_access() => {}
                _ => return info,
            }
        }
    }

    fn regs(&self) -> &Regs {
        &self.regs
    }

    fn regs_mut(&mut self) -> &mut Regs {
        &mut self.regs
    }

    fn control_state(&self) -> ControlState {
        self.snapshot.control_state(&self.own)
    }

    fn segments(&self) -> Segments {
        self.snapshot.segments
    }

    fn inject(&mut self, event: Event) {
        self.pending = Some(Injection::of(event));
    }

    fn interruptible(&self) -> bool {
        let shadowed = !self.snapshot.unshadowed() && self.regs.rip == self.exit_rip;
        self.regs.rflags & RFLAGS_IF != 0 && !shadowed && self.pending.is_none()
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.set_primary(PrimaryControls::INTERRUPT_WINDOW_EXITING, on);
    }

    fn nmi_allowed(&self) -> bool {
        let skipped = self.regs.rip != self.exit_rip;
        self.virtual_nmis && self.snapshot.nmi_unblocked(skipped) && self.pending.is_none()
    }

    fn request_nmi_window(&mut self, on: bool) {
        if self.nmi_window {
            self.set_primary(PrimaryControls::NMI_WINDOW_EXITING, on);
        }
    }

    fn read_state_msr(&self, msr: u32) -> Option<u64> {
        match msr {
            MSR_EFER => Some(self.snapshot.efer),
            MSR_PAT => Some(self.pat),
            _ => None,
        }
    }

    fn write_state_msr(&mut self, msr: u32, value: u64) -> Result<bool, InvalidValue> {
        match msr {
            MSR_EFER => {
                self.snapshot.efer = new_efer(self.snapshot.efer, self.snapshot.cr0, value)?;
                self.efer_dirty = true;
                Ok(true)
            }
            MSR_PAT if !valid_pat(value) => Err(InvalidValue),
            MSR_PAT => {
                self.pat = value;
                self.pat_dirty = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn exit_name(&self, raw: u32) -> &'static str {
        exit::name(raw)
    }

    fn set_deadline(&mut self, deadline: u64, now: u64) {
        if let Some(t) = self.timer.as_mut() {
            t.wanted = t.value_for(deadline, now);
        }
    }

    fn start_up(&mut self, vector: u8) {
        let (cr0_fixed, cr4_fixed) = (self.cr_rules.cr0_fixed, self.cr_rules.cr4_fixed);
        let fields = gs::sipi_fields(vector, cr0_fixed, cr4_fixed);
        let (_, cs_base) = vcpu::sipi::code_segment(vector);
        self.own.cr0_shadow = vcpu::sipi::CR0;
        self.own.cr4_shadow = 0;
        self.snapshot = Snapshot {
            cr0: gs::field_value(&fields, guest::CR0),
            cr3: 0,
            cr4: gs::field_value(&fields, guest::CR4),
            efer: 0,
            cs_access: gs::access::CODE,
            cs_base,
            segments: Segments::default(),
            interruptibility: 0,
        };
        self.regs = Regs {
            rflags: vcpu::sipi::RFLAGS,
            ..Regs::default()
        };
        self.exit_rip = 0;
        self.pending = None;
        self.efer_dirty = false;
        self.sipi = Some(vector);
    }

    fn release(&mut self) {
        if !self.current {
            return;
        }
        // SAFETY: this vCPU's MSRs are the live ones (`current`); the save reads MSRs the host
        // does not use. VMX is on and the region is this vCPU's VMCS.
        let cleared = unsafe {
            self.hw.msrs.save(self.tsc_aux);
            vmcs::clear(self.hw.vmcs.pa())
        };
        if let Err(e) = cleared {
            log::error!("vmx: VMCLEAR on release: {e}");
            self.broken = Some(e);
        }
        self.current = false;
        // VMCLEAR leaves the launch state "clear" (SDM Vol. 3C §25.11.3).
        self.launched = false;
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        // SAFETY: VMX is on and the region is this vCPU's VMCS: VMCLEAR leaves no CPU with it
        // active once its memory is freed.
        if let Err(e) = unsafe { vmcs::clear(self.hw.vmcs.pa()) } {
            log::error!("vmx: VMCLEAR on drop: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efer_writes_keep_lma_and_refuse_reserved_bits() {
        let long = EFER_LME | EFER_LMA;
        assert_eq!(new_efer(long, CR0_PG, 0xD01), Ok(0xD01));
        assert_eq!(new_efer(long, CR0_PG, 0x901), Ok(0xD01), "LMA is the CPU's");
        assert_eq!(
            new_efer(long, CR0_PG, 1 << 14),
            Err(InvalidValue),
            "FFXSR is AMD's"
        );
        assert_eq!(
            new_efer(long, CR0_PG, 0x1),
            Err(InvalidValue),
            "LME with paging on"
        );
        assert_eq!(new_efer(0, 0, EFER_LME), Ok(EFER_LME));
    }

    #[test]
    fn the_preemption_timer_ends_the_run_at_the_deadline() {
        let t = PreemptionTimer {
            shift: 5,
            backstop: 1000,
            written: 1000,
            wanted: 1000,
        };
        assert_eq!(t.value_for(10_000 + 3200, 10_000), 100);
        assert_eq!(t.value_for(5, 10_000), 1, "a past deadline exits at once");
        assert_eq!(t.value_for(u64::MAX, 0), 1000, "never past the backstop");
    }

    #[test]
    fn the_preemption_timer_lasts_the_backstop() {
        // 10 ms of a 2 GHz TSC is 20 M ticks; at 2^5 ticks per count, 625 000 counts.
        assert_eq!(preemption_timer_value(5, 2_000_000_000), 625_000);
        assert_eq!(preemption_timer_value(0, 1000), 10);
        assert_eq!(preemption_timer_value(31, 1000), 1, "never 0");
        assert_eq!(preemption_timer_value(0, u64::MAX), u32::MAX);
    }

    #[test]
    fn pat_validation() {
        assert!(valid_pat(DEFAULT_PAT));
        assert!(!valid_pat(0x0007_0406_0007_0402));
    }
}
