//! One SVM virtual CPU: its VMCB programmed with the monitor's intercepts and nested paging,
//! the guest's start state, event injection with interrupt-window exits (V_IRQ + VINTR, as APM
//! Vol. 2 §15.21.4 describes), NMI injection with the guest's NMI blocking tracked through the
//! IRET intercept (`nmi`), re-injection of events cut short by an exit (EXITINTINFO, §15.20),
//! and the `vcpu::Vcpu` implementation the exit loop drives.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::intercepts::{IoPermissionMap, MsrPermissionMap};
use crate::nmi::NmiBlocking;
use crate::vmcb::{self, attrib, event, misc1, misc2, Segment, Vmcb};
use crate::{exit, Features};
use vcpu::{ControlState, Event, ExitInfo, InvalidValue, Regs, Segments, StartState};

const MSR_EFER: u32 = 0xC000_0080;
const MSR_PAT: u32 = 0x277;
/// EFER bits a guest may set: SCE, LME, LMA (written by hardware), NXE, FFXSR.
const EFER_GUEST_BITS: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11) | (1 << 14);
const RFLAGS_IF: u64 = 1 << 9;
const EFER_LME: u64 = 1 << 8;
const CR0_PG: u64 = 1 << 31;
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;

/// Permission maps shared by every vCPU (they hold the same policy).
pub struct Shared {
    iopm: Box<IoPermissionMap>,
    msrpm: Box<MsrPermissionMap>,
    features: Features,
}

impl Shared {
    pub fn new(features: Features) -> Self {
        Self {
            iopm: IoPermissionMap::intercept_all(),
            msrpm: MsrPermissionMap::standard(),
            features,
        }
    }

    pub fn features(&self) -> Features {
        self.features
    }
}

pub struct SvmVcpu {
    vmcb: Box<Vmcb>,
    regs: Regs,
    nrip_save: bool,
    /// RIP at the last exit: when the core moves past the exiting instruction, the interrupt
    /// shadow of an STI or MOV SS before it ends.
    exit_rip: u64,
    nmi: NmiBlocking,
    /// The guest's TSC_AUX, which it reads and writes directly but which neither VMRUN nor
    /// VMSAVE/VMLOAD moves (APM Vol. 2 §15.5.1, §15.13.4): loaded into the CPU when the vCPU's
    /// turn on it begins and saved when it is released. `None` without RDTSCP.
    tsc_aux: Option<u64>,
    /// The vCPU's TSC_AUX is the CPU's (it ran since it was last released).
    live: bool,
}

const MSR_TSC_AUX: u32 = 0xC000_0103;

/// The CPU has RDTSCP and so TSC_AUX (CPUID 8000_0001h EDX bit 27).
fn has_tsc_aux() -> bool {
    raw_cpuid::cpuid!(0x8000_0001).edx & (1 << 27) != 0
}

/// ASIDs tracked for sharing; CPUs with more are used only up to this many.
const TRACKED_ASIDS: u32 = 256;

/// Which VMCB last ran with each ASID: when more domains exist than ASIDs, domains share one,
/// and a vCPU entering after another owner flushes the ASID's TLB entries. A VMCB gives up its
/// ownership when it leaves a CPU (`release`) and when dropped, so that its next entry, on any
/// CPU, or a later VMCB at the same address with the same ASID, starts from a flushed TLB.
static ASID_OWNER: [AtomicU64; TRACKED_ASIDS as usize] =
    [const { AtomicU64::new(0) }; TRACKED_ASIDS as usize];

/// The hardware ASID for domain number `id` (≥ 1) on a CPU with `asids` ASIDs (ASID 0 is the
/// host's): domains 1..asids-1 get their own, later ones wrap around.
fn hardware_asid(id: u32, asids: u32) -> u32 {
    let guest_asids = asids.clamp(2, TRACKED_ASIDS) - 1;
    (id.saturating_sub(1) % guest_asids) + 1
}

fn phys<T>(p: &T) -> u64 {
    p as *const T as u64
}

impl SvmVcpu {
    /// A vCPU of domain `id` (≥ 1) whose nested page table root is `ncr3`.
    pub fn new(shared: &Shared, id: u32, ncr3: u64, start: &StartState) -> Self {
        let asid = hardware_asid(id, shared.features.asids);
        // SAFETY: Vmcb is plain data (integers and arrays): all-zero is a valid value.
        let mut vmcb: Box<Vmcb> = unsafe { Box::new_zeroed().assume_init() };
        let c = &mut vmcb.control;
        c.intercept_misc1 = misc1::INTR
            | misc1::NMI
            | misc1::SMI
            | misc1::INIT
            | misc1::CPUID
            | misc1::INVD
            | misc1::HLT
            // The guest runs with EFER.SVME set: INVLPGA would flush other ASIDs' entries.
            | misc1::INVLPGA
            | misc1::IOIO_PROT
            | misc1::MSR_PROT
            | misc1::SHUTDOWN;
        c.intercept_misc2 = misc2::VMRUN
            | misc2::VMMCALL
            | misc2::VMLOAD
            | misc2::VMSAVE
            | misc2::STGI
            | misc2::CLGI
            | misc2::SKINIT
            | misc2::WBINVD
            | misc2::MONITOR
            | misc2::MWAIT
            | misc2::MWAIT_CONDITIONAL;
        c.iopm_base_pa = phys(&*shared.iopm);
        c.msrpm_base_pa = phys(&*shared.msrpm);
        c.guest_asid = asid;
        c.vintr = vmcb::vintr::V_INTR_MASKING;
        c.np_control = 1;
        c.n_cr3 = ncr3;
        load_start_state(&mut vmcb.save, start);
        Self {
            vmcb,
            regs: start.regs,
            nrip_save: shared.features.nrip_save,
            exit_rip: start.regs.rip,
            nmi: NmiBlocking::default(),
            tsc_aux: has_tsc_aux().then_some(0),
            live: false,
        }
    }

    fn vmcb_pa(&self) -> u64 {
        phys(&*self.vmcb)
    }

    /// Forgets that this VMCB owns its ASID, so that its next entry, on whichever CPU, flushes
    /// the ASID's TLB entries: that CPU may hold translations of it from an earlier run there.
    fn give_up_asid(&self) {
        if let Some(owner) = ASID_OWNER.get(self.vmcb.control.guest_asid as usize) {
            let _ = owner.compare_exchange(self.vmcb_pa(), 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The core moved RIP past the exiting instruction: an STI or MOV SS shadow covering it has
    /// ended (a HLT right after STI must not keep interrupts blocked once it is skipped).
    fn end_shadow_if_skipped(&mut self) {
        if self.regs.rip != self.exit_rip {
            self.vmcb.control.interrupt_shadow &= !1;
        }
    }

    /// Intercepts IRET while the guest handles an injected NMI.
    fn sync_iret_intercept(&mut self) {
        let c = &mut self.vmcb.control;
        if self.nmi.intercept_iret() {
            c.intercept_misc1 |= misc1::IRET;
        } else {
            c.intercept_misc1 &= !misc1::IRET;
        }
    }

    /// Follows the guest's NMI blocking through an exit at `rip`; true for the IRET intercept,
    /// which the guest resumes from at once (the IRET is not skipped: it runs at the entry).
    fn track_nmi(&mut self, code: u64, rip: u64) -> bool {
        if !self.nmi.blocked() {
            // No NMI in progress: IRET is not intercepted and nothing changes.
            return false;
        }
        let iret = code == exit::IRET;
        if iret {
            self.nmi.iret_intercepted(rip);
        } else {
            self.nmi.exited_at(rip);
        }
        self.sync_iret_intercept();
        iret
    }

    /// An event cut short by the exit is delivered again at the next entry (APM §15.20).
    fn requeue_interrupted_event(&mut self) {
        let c = &mut self.vmcb.control;
        let info = c.exit_int_info;
        c.event_inj = if info & event::VALID != 0 { info } else { 0 };
    }
}

impl Drop for SvmVcpu {
    /// A later VMCB may get this one's address and ASID: it must not find this one's TLB
    /// entries (AMD APM Vol. 2 §15.16: the TLB is tagged by ASID alone).
    fn drop(&mut self) {
        self.give_up_asid();
    }
}

fn load_start_state(s: &mut vmcb::Save, start: &StartState) {
    let flat_code = if start.long_mode {
        0x9B | attrib::LONG | (1 << 11)
    } else {
        0x9B | attrib::DB | (1 << 11)
    };
    let flat_data = 0x93 | attrib::DB | (1 << 11);
    s.cs = Segment::new(start.code_selector, flat_code, 0xFFFF_FFFF, 0);
    let data = Segment::new(start.data_selector, flat_data, 0xFFFF_FFFF, 0);
    s.ds = data;
    s.es = data;
    s.ss = data;
    s.fs = data;
    s.gs = data;
    s.gdtr = Segment::new(0, 0, u32::from(start.gdt_limit), start.gdt_base);
    s.idtr = Segment::new(0, 0, 0, 0);
    s.ldtr = Segment::new(0, 0x82, 0, 0);
    // A busy 32/64-bit TSS: the boot protocols leave TR undefined but VMRUN wants it usable.
    s.tr = Segment::new(0, 0x8B, 0x67, 0);
    s.cpl = 0;
    s.efer = start.efer | vmcb::efer::SVME;
    s.cr0 = start.cr0;
    s.cr3 = start.cr3;
    s.cr4 = start.cr4;
    s.dr6 = 0xFFFF_0FF0;
    s.dr7 = 0x400;
    s.g_pat = DEFAULT_PAT;
    s.rflags = start.regs.rflags | 2;
    s.rip = start.regs.rip;
    s.rsp = start.regs.gpr[vcpu::reg::RSP];
    s.rax = start.regs.gpr[vcpu::reg::RAX];
}

/// A PAT value is valid when every entry is a defined memory type (SDM Vol. 3A §13.12.2).
fn valid_pat(value: u64) -> bool {
    value
        .to_le_bytes()
        .iter()
        .all(|t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

impl SvmVcpu {
    /// One VMRUN, up to the #VMEXIT, with the guest's registers moved in and out.
    fn enter(&mut self) {
        if !self.live {
            if let Some(aux) = self.tsc_aux {
                // SAFETY: the CPU has TSC_AUX; the host does not use it.
                unsafe { crate::features::wrmsr(MSR_TSC_AUX, aux) };
            }
            self.live = true;
        }
        self.end_shadow_if_skipped();
        let s = &mut self.vmcb.save;
        s.rax = self.regs.gpr[vcpu::reg::RAX];
        s.rsp = self.regs.gpr[vcpu::reg::RSP];
        s.rip = self.regs.rip;
        s.rflags = self.regs.rflags;
        let pa = self.vmcb_pa();
        // TLB_CONTROL 1 flushes everything, which every SVM implementation supports.
        let owner = &ASID_OWNER[self.vmcb.control.guest_asid as usize];
        self.vmcb.control.tlb_control = u8::from(owner.swap(pa, Ordering::Relaxed) != pa);
        // SAFETY: SVM was enabled by the monitor before any vCPU is created, and this VMCB was
        // programmed by `new` with a valid guest state.
        unsafe { crate::switch::run(pa, &mut self.regs.gpr) };
        let s = &self.vmcb.save;
        self.regs.gpr[vcpu::reg::RAX] = s.rax;
        self.regs.gpr[vcpu::reg::RSP] = s.rsp;
        self.regs.rip = s.rip;
        self.exit_rip = s.rip;
        self.regs.rflags = s.rflags;
        self.requeue_interrupted_event();
    }
}

impl vcpu::Vcpu for SvmVcpu {
    /// Enters the guest; the IRET intercept is handled here and the guest re-entered.
    fn run(&mut self) -> ExitInfo {
        loop {
            self.enter();
            let code = self.vmcb.control.exit_code;
            if !self.track_nmi(code, self.regs.rip) {
                let c = &self.vmcb.control;
                let next_rip = self.nrip_save.then_some(c.next_rip);
                return exit::decode(code, c.exit_info1, c.exit_info2, next_rip);
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
        let s = &self.vmcb.save;
        ControlState {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer & !vmcb::efer::SVME,
            cs_long: s.cs.attrib & attrib::LONG != 0,
            cs_db: s.cs.attrib & attrib::DB != 0,
            cs_base: s.cs.base,
            cpl: s.cpl,
        }
    }

    fn segments(&self) -> Segments {
        let s = &self.vmcb.save;
        Segments {
            es_base: s.es.base,
            ss_base: s.ss.base,
            ds_base: s.ds.base,
            fs_base: s.fs.base,
            gs_base: s.gs.base,
        }
    }

    fn inject(&mut self, ev: Event) {
        if ev == Event::Nmi {
            self.nmi.injected();
            self.sync_iret_intercept();
        }
        self.vmcb.control.event_inj = match ev {
            Event::Interrupt(v) => event::VALID | event::TYPE_INTR | u64::from(v),
            Event::Nmi => event::VALID | event::TYPE_NMI | 2,
            Event::Exception {
                vector,
                error_code: None,
            } => event::VALID | event::TYPE_EXCEPTION | u64::from(vector),
            Event::Exception {
                vector,
                error_code: Some(code),
            } => {
                event::VALID
                    | event::TYPE_EXCEPTION
                    | event::ERROR_VALID
                    | u64::from(vector)
                    | (u64::from(code) << 32)
            }
        };
    }

    fn interruptible(&self) -> bool {
        let c = &self.vmcb.control;
        self.regs.rflags & RFLAGS_IF != 0
            && c.interrupt_shadow & 1 == 0
            && c.event_inj & event::VALID == 0
    }

    fn request_interrupt_window(&mut self, on: bool) {
        let c = &mut self.vmcb.control;
        if on {
            // A virtual interrupt the guest takes as soon as it can: the VINTR intercept fires
            // instead, and the core injects the real vector (APM §15.21.4).
            c.vintr |= vmcb::vintr::V_IRQ | vmcb::vintr::V_IGN_TPR;
            c.intercept_misc1 |= misc1::VINTR;
        } else {
            c.vintr &= !(vmcb::vintr::V_IRQ | vmcb::vintr::V_IGN_TPR);
            c.intercept_misc1 &= !misc1::VINTR;
        }
    }

    fn nmi_allowed(&self) -> bool {
        let c = &self.vmcb.control;
        // A shadow ends with the exiting instruction when the core skipped it.
        let shadowed = c.interrupt_shadow & 1 != 0 && self.regs.rip == self.exit_rip;
        !self.nmi.blocked() && !shadowed && c.event_inj & event::VALID == 0
    }

    /// Nothing to arm: while the handler runs, its IRET exits; after that, and for a shadow
    /// or a queued event, the next exit of any kind is the window.
    fn request_nmi_window(&mut self, _on: bool) {}

    fn read_state_msr(&self, msr: u32) -> Option<u64> {
        let s = &self.vmcb.save;
        match msr {
            MSR_EFER => Some(s.efer & !vmcb::efer::SVME),
            MSR_PAT => Some(s.g_pat),
            _ => None,
        }
    }

    fn write_state_msr(&mut self, msr: u32, value: u64) -> Result<bool, InvalidValue> {
        let s = &mut self.vmcb.save;
        match msr {
            MSR_EFER if value & !EFER_GUEST_BITS != 0 => Err(InvalidValue),
            // LME may not change while paging is on (SDM Vol. 3A §9.8.5; APM Vol. 2 §14.6.1).
            MSR_EFER if (value ^ s.efer) & EFER_LME != 0 && s.cr0 & CR0_PG != 0 => {
                Err(InvalidValue)
            }
            MSR_EFER => {
                // LMA is maintained by the hardware; the guest's write of it is ignored.
                let lma = s.efer & (1 << 10);
                s.efer = (value & !(1 << 10)) | lma | vmcb::efer::SVME;
                Ok(true)
            }
            MSR_PAT if !valid_pat(value) => Err(InvalidValue),
            MSR_PAT => {
                s.g_pat = value;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn exit_name(&self, raw: u32) -> &'static str {
        exit::name(raw)
    }

    /// SVM has no timer of its own: the host timer's interrupt ends the run.
    fn set_deadline(&mut self, _deadline: u64, _now: u64) {}

    fn release(&mut self) {
        if core::mem::take(&mut self.live) {
            if let Some(aux) = self.tsc_aux.as_mut() {
                // SAFETY: the CPU has TSC_AUX, which holds this vCPU's value (`live`).
                *aux = unsafe { crate::features::rdmsr(MSR_TSC_AUX) };
            }
        }
        self.give_up_asid();
    }

    fn start_up(&mut self, vector: u8) {
        load_sipi_state(&mut self.vmcb.save, vector);
        let c = &mut self.vmcb.control;
        c.event_inj = 0;
        c.interrupt_shadow = 0;
        self.nmi = NmiBlocking::default();
        self.sync_iret_intercept();
        self.regs = Regs {
            rip: 0,
            rflags: vcpu::sipi::RFLAGS,
            ..Regs::default()
        };
        self.exit_rip = 0;
    }
}

/// Real mode at `vector << 12`, as INIT and STARTUP leave a processor (`vcpu::sipi`). The
/// attributes are those of real-mode segments: present, writable data, readable code, and a
/// busy TSS in TR, which VMRUN accepts in any mode.
fn load_sipi_state(s: &mut vmcb::Save, vector: u8) {
    use vcpu::sipi;
    let (selector, base) = sipi::code_segment(vector);
    s.cs = Segment::new(selector, 0x9B, sipi::LIMIT, base);
    let data = Segment::new(0, 0x93, sipi::LIMIT, 0);
    s.ds = data;
    s.es = data;
    s.ss = data;
    s.fs = data;
    s.gs = data;
    s.gdtr = Segment::new(0, 0, sipi::LIMIT, 0);
    s.idtr = Segment::new(0, 0, sipi::LIMIT, 0);
    s.ldtr = Segment::new(0, 0x82, sipi::LIMIT, 0);
    s.tr = Segment::new(0, 0x8B, sipi::LIMIT, 0);
    s.cpl = 0;
    s.efer = vmcb::efer::SVME;
    s.cr0 = sipi::CR0;
    s.cr3 = 0;
    s.cr4 = 0;
    s.dr6 = sipi::DR6;
    s.dr7 = sipi::DR7;
    s.rflags = sipi::RFLAGS;
    s.rip = 0;
    s.rsp = 0;
    s.rax = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcpu::Vcpu;

    fn start() -> StartState {
        let mut regs = Regs {
            rip: 0x10_0200,
            rflags: 2,
            ..Regs::default()
        };
        regs.gpr[vcpu::reg::RSI] = 0x7000;
        StartState {
            regs,
            cr0: 0x8005_0033,
            cr3: 0x9000,
            cr4: 0x20,
            efer: 0x500,
            gdt_base: 0x500,
            gdt_limit: 0x1F,
            code_selector: 0x10,
            data_selector: 0x18,
            long_mode: true,
        }
    }

    fn vcpu() -> SvmVcpu {
        SvmVcpu::new(&Shared::new(Features::default()), 1, 0x5000, &start())
    }

    #[test]
    fn start_state_is_a_flat_long_mode_guest_with_svme() {
        let v = vcpu();
        let s = &v.vmcb.save;
        assert_eq!(s.efer, 0x500 | vmcb::efer::SVME);
        assert_eq!(s.cs.selector, 0x10);
        assert_eq!(s.cs.attrib, 0xA9B);
        assert_eq!(s.ds.attrib, 0xC93);
        assert_eq!(s.rip, 0x10_0200);
        assert_eq!(v.vmcb.control.n_cr3, 0x5000);
        assert_eq!(v.vmcb.control.np_control, 1);
        assert!(v.vmcb.control.intercept_misc2 & misc2::VMRUN != 0);
        let cs = v.control_state();
        assert!(cs.cs_long && !cs.cs_db);
        assert_eq!(cs.efer, 0x500, "the guest never sees SVME");
    }

    #[test]
    fn asids_are_unique_until_they_run_out_then_shared() {
        assert_eq!(hardware_asid(1, 16), 1);
        assert_eq!(hardware_asid(15, 16), 15);
        assert_eq!(hardware_asid(16, 16), 1);
        assert_eq!(hardware_asid(30, 16), 15);
        assert_eq!(hardware_asid(3, 0), 1, "no ASID count reported");
        assert_eq!(
            hardware_asid(300, 65536),
            45,
            "tracked ASIDs bound the range"
        );
        let shared = Shared::new(Features {
            asids: 2,
            ..Features::default()
        });
        let v = SvmVcpu::new(&shared, 2, 0x5000, &start());
        assert_eq!(v.vmcb.control.guest_asid, 1);
    }

    #[test]
    fn a_dropped_vmcb_leaves_its_tlb_entries_to_no_one() {
        let shared = Shared::new(Features {
            asids: 2,
            ..Features::default()
        });
        let v = SvmVcpu::new(&shared, 7, 0x5000, &start());
        let (pa, asid) = (v.vmcb_pa(), v.vmcb.control.guest_asid as usize);
        ASID_OWNER[asid].store(pa, Ordering::Relaxed);
        drop(v);
        assert_ne!(
            ASID_OWNER[asid].load(Ordering::Relaxed),
            pa,
            "a new VMCB at this address flushes the ASID"
        );
    }

    #[test]
    fn injection_encodes_eventinj() {
        let mut v = vcpu();
        v.inject(Event::Exception {
            vector: 13,
            error_code: Some(0),
        });
        assert_eq!(v.vmcb.control.event_inj, 0x8000_0B0D);
        v.inject(Event::Interrupt(0x30));
        assert_eq!(v.vmcb.control.event_inj, 0x8000_0030);
        assert!(!v.interruptible(), "an event is already queued");
    }

    #[test]
    fn interruptible_needs_if_and_no_shadow() {
        let mut v = vcpu();
        assert!(!v.interruptible());
        v.regs_mut().rflags |= RFLAGS_IF;
        assert!(v.interruptible());
        v.vmcb.control.interrupt_shadow = 1;
        assert!(!v.interruptible());
    }

    #[test]
    fn skipping_the_exiting_instruction_ends_its_interrupt_shadow() {
        let mut v = vcpu();
        v.regs_mut().rflags |= RFLAGS_IF;
        v.vmcb.control.interrupt_shadow = 1;
        v.end_shadow_if_skipped();
        assert!(!v.interruptible(), "RIP unchanged: still in the STI shadow");
        v.regs_mut().rip += 1;
        v.end_shadow_if_skipped();
        assert!(v.interruptible(), "the HLT after STI was skipped");
    }

    #[test]
    fn interrupted_events_are_requeued() {
        let mut v = vcpu();
        v.vmcb.control.exit_int_info = event::VALID | 0x41;
        v.requeue_interrupted_event();
        assert_eq!(v.vmcb.control.event_inj, event::VALID | 0x41);
        v.vmcb.control.exit_int_info = 0;
        v.requeue_interrupted_event();
        assert_eq!(v.vmcb.control.event_inj, 0);
    }

    #[test]
    fn efer_and_pat_writes_are_validated() {
        let mut v = vcpu();
        assert_eq!(v.write_state_msr(MSR_EFER, 0xD01), Ok(true));
        assert_eq!(v.read_state_msr(MSR_EFER), Some(0xD01 | 0x400));
        assert_eq!(
            v.write_state_msr(MSR_EFER, vmcb::efer::SVME),
            Err(InvalidValue)
        );
        assert_eq!(
            v.write_state_msr(MSR_PAT, 0x0007_0406_0007_0402),
            Err(InvalidValue)
        );
        assert_eq!(v.write_state_msr(MSR_PAT, 0x0007_0106_0007_0406), Ok(true));
        assert_eq!(v.write_state_msr(0x10, 0), Ok(false));
    }

    #[test]
    fn an_injected_nmi_blocks_nmis_until_the_exit_after_its_iret() {
        let mut v = vcpu();
        assert!(v.nmi_allowed(), "NMIs ignore RFLAGS.IF");
        v.inject(Event::Nmi);
        assert_eq!(v.vmcb.control.event_inj, event::VALID | event::TYPE_NMI | 2);
        assert!(v.vmcb.control.intercept_misc1 & misc1::IRET != 0);
        v.vmcb.control.event_inj = 0;
        assert!(!v.nmi_allowed(), "in the handler");
        assert!(!v.track_nmi(exit::NPF, 0x5000), "an exit in the handler");
        assert!(v.track_nmi(exit::IRET, 0x5010), "the IRET is run at once");
        assert_eq!(v.vmcb.control.intercept_misc1 & misc1::IRET, 0);
        assert!(!v.nmi_allowed());
        assert!(!v.track_nmi(exit::INTR, 0x5010));
        assert!(!v.nmi_allowed(), "an exit before the IRET ran");
        v.regs_mut().rip = 0x10_0300;
        assert!(!v.track_nmi(exit::NPF, 0x10_0300));
        assert!(v.nmi_allowed(), "past the IRET");
    }

    #[test]
    fn nmis_wait_for_a_shadow_the_core_did_not_skip_and_a_queued_event() {
        let mut v = vcpu();
        v.vmcb.control.interrupt_shadow = 1;
        assert!(!v.nmi_allowed());
        v.regs_mut().rip += 1;
        assert!(v.nmi_allowed(), "the instruction in the shadow was skipped");
        v.inject(Event::Interrupt(0x30));
        assert!(!v.nmi_allowed());
    }

    #[test]
    fn interrupt_window_sets_virq_and_the_vintr_intercept() {
        let mut v = vcpu();
        v.request_interrupt_window(true);
        assert!(v.vmcb.control.intercept_misc1 & misc1::VINTR != 0);
        assert!(v.vmcb.control.vintr & vmcb::vintr::V_IRQ != 0);
        v.request_interrupt_window(false);
        assert_eq!(v.vmcb.control.intercept_misc1 & misc1::VINTR, 0);
        assert_eq!(
            v.vmcb.control.vintr,
            vmcb::vintr::V_INTR_MASKING,
            "masking stays on"
        );
    }
}
