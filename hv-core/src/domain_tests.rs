//! Unit tests of the exit loop against a mock vCPU: each test feeds scripted exits to
//! `Domain::handle` and checks the guest-visible result (registers, RIP, injected events) and
//! what the scheduler is told.

use super::*;
use crate::cpuid::CpuidPolicy;
use crate::memory::GuestRam;
use crate::pvclock::PvClock;
use alloc::boxed::Box;
use devices::platform::{Platform, PlatformConfig};
use vcpu::{ControlState, Event, Exit, ExitInfo, InvalidValue, IoAccess, Regs, Segments, Vcpu};

#[derive(Default)]
struct MockVcpu {
    regs: Regs,
    injected: Option<Event>,
    window: bool,
    /// The guest is still in the handler of an earlier NMI.
    nmi_blocked: bool,
    nmi_window: bool,
    efer: u64,
    /// CR4 bits on top of PAE.
    cr4: u64,
    /// The vector of the last STARTUP IPI that started it.
    started_at: Option<u8>,
}

impl Vcpu for MockVcpu {
    fn run(&mut self) -> ExitInfo {
        unreachable!("the tests call handle() directly")
    }
    fn release(&mut self) {}
    fn regs(&self) -> &Regs {
        &self.regs
    }
    fn regs_mut(&mut self) -> &mut Regs {
        &mut self.regs
    }
    fn control_state(&self) -> ControlState {
        // 64-bit code, paging on with an identity map built by `domain()`.
        ControlState {
            cr0: 0x8000_0011,
            cr3: 0x1000,
            cr4: 0x20 | self.cr4,
            efer: 0x500,
            cs_long: true,
            ..ControlState::default()
        }
    }
    fn segments(&self) -> Segments {
        Segments::default()
    }
    fn inject(&mut self, event: Event) {
        self.injected = Some(event);
    }
    fn interruptible(&self) -> bool {
        self.regs.rflags & (1 << 9) != 0 && self.injected.is_none()
    }
    fn request_interrupt_window(&mut self, on: bool) {
        self.window = on;
    }
    fn nmi_allowed(&self) -> bool {
        !self.nmi_blocked && self.injected.is_none()
    }
    fn request_nmi_window(&mut self, on: bool) {
        self.nmi_window = on;
    }
    fn read_state_msr(&self, msr: u32) -> Option<u64> {
        (msr == 0xC000_0080).then_some(self.efer)
    }
    fn write_state_msr(&mut self, msr: u32, value: u64) -> Result<bool, InvalidValue> {
        match msr {
            0xC000_0080 if value & !0xD01 != 0 => Err(InvalidValue),
            0xC000_0080 => {
                self.efer = value;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    fn exit_name(&self, _raw: u32) -> &'static str {
        "MOCK"
    }
    fn set_deadline(&mut self, _deadline: u64, _now: u64) {}
    fn start_up(&mut self, vector: u8) {
        self.started_at = Some(vector);
        self.regs = Regs::default();
    }
}

fn fake_host(leaf: u32, _sub: u32) -> [u32; 4] {
    match leaf {
        0 => [0xD, 0x6874_7541, 0x444D_4163, 0x6974_6E65],
        1 => [0x00A0_0F11, 0, 1 << 27, 0],
        7 => [0, 0, 1 << 4, 0],
        0x8000_0000 => [0x8000_0008, 0, 0, 0],
        _ => [0; 4],
    }
}

/// A domain with 4 MiB of RAM: an identity map of the first 4 GiB (1 GiB pages) at 0x1000,
/// code at 0x10_0000.
fn domain() -> Domain<MockVcpu> {
    smp_domain(1)
}

/// `domain()` with `vcpus` vCPUs.
fn smp_domain(vcpus: u32) -> Domain<MockVcpu> {
    let mem: &'static mut [u8] = Box::leak(alloc::vec![0u8; 4 << 20].into_boxed_slice());
    let mut ram = GuestRam::new(mem);
    use crate::memory::GuestMemory;
    ram.write_u64(0x1000, 0x2000 | 3).unwrap();
    for gib in 0..4u64 {
        ram.write_u64(0x2000 + gib * 8, (gib << 30) | 0x83).unwrap();
    }
    let platform = Platform::new(&PlatformConfig {
        tsc_hz: 1_000_000_000,
        ram_bytes: 4 << 20,
        epoch_secs: 0,
        vcpus,
    });
    let identity = Identity {
        id: 1,
        name: String::from("test"),
        cpuid: CpuidPolicy {
            tsc_khz: 1_000_000,
            apic_timer_khz: 1_000_000,
            vcpus,
        },
        host_cpuid: fake_host,
        clock: PvClock::new(1_000_000_000, 0, 0),
    };
    let cpus = (0..vcpus).map(|_| MockVcpu::default()).collect();
    let mut d = Domain::new(identity, cpus, platform, ram);
    d.vcpu.regs.rip = 0x10_0000;
    d
}

fn exit(exit: Exit, next_rip: Option<u64>) -> ExitInfo {
    ExitInfo {
        exit,
        raw: 0,
        next_rip,
    }
}

fn code(d: &mut Domain<MockVcpu>, bytes: &[u8]) {
    use crate::memory::GuestMemory;
    d.ram.write(0x10_0000, bytes).unwrap();
}

#[test]
fn cpuid_fills_registers_and_decodes_its_length_without_nrip() {
    let mut d = domain();
    code(&mut d, &[0x0F, 0xA2]);
    d.vcpu.regs.gpr[reg::RAX] = 0x4000_0000;
    assert_eq!(d.handle(exit(Exit::Cpuid, None), 0), Next::Resume);
    assert_eq!(d.vcpu.regs.rip, 0x10_0002);
    assert_eq!(d.vcpu.regs.gpr[reg::RAX], 0x4000_0010);
    assert_eq!(
        d.vcpu.regs.gpr[reg::RBX],
        u64::from(u32::from_le_bytes(*b"hvmo"))
    );
}

#[test]
fn osxsave_and_ospke_follow_the_guest_cr4() {
    let mut d = domain();
    let ecx = |d: &mut Domain<MockVcpu>, leaf: u64, cr4: u64| {
        d.vcpu.cr4 = cr4;
        d.vcpu.regs.gpr[reg::RAX] = leaf;
        d.vcpu.regs.gpr[reg::RCX] = 0;
        assert_eq!(d.handle(exit(Exit::Cpuid, Some(0)), 0), Next::Resume);
        d.vcpu.regs.gpr[reg::RCX]
    };
    assert_eq!(
        ecx(&mut d, 1, 0) & 1 << 27,
        0,
        "the host's OSXSAVE is not the guest's"
    );
    assert_ne!(ecx(&mut d, 1, CR4_OSXSAVE) & 1 << 27, 0);
    assert_eq!(ecx(&mut d, 7, 0) & 1 << 4, 0);
    assert_ne!(ecx(&mut d, 7, CR4_PKE) & 1 << 4, 0);
}

#[test]
fn hardware_next_rip_is_used_when_given() {
    let mut d = domain();
    d.vcpu.regs.gpr[reg::RAX] = 1;
    assert_eq!(
        d.handle(exit(Exit::Cpuid, Some(0x10_0042)), 0),
        Next::Resume
    );
    assert_eq!(d.vcpu.regs.rip, 0x10_0042);
    assert_ne!(d.vcpu.regs.gpr[reg::RCX] & (1 << 31), 0, "hypervisor bit");
}

#[test]
fn unknown_msrs_inject_gp_and_leave_rip() {
    let mut d = domain();
    d.vcpu.regs.gpr[reg::RCX] = 0x2FFF;
    assert_eq!(
        d.handle(exit(Exit::MsrWrite, Some(0x10_0002)), 0),
        Next::Resume
    );
    assert_eq!(
        d.vcpu.injected,
        Some(Event::Exception {
            vector: vcpu::vector::GP,
            error_code: Some(0)
        })
    );
    assert_eq!(
        d.vcpu.regs.rip, 0x10_0000,
        "a fault does not retire the instruction"
    );
}

#[test]
fn msrs_go_to_the_backend_and_the_allow_list() {
    let mut d = domain();
    d.vcpu.regs.gpr[reg::RCX] = 0xC000_0080;
    d.vcpu.regs.gpr[reg::RAX] = 0xD01;
    assert_eq!(
        d.handle(exit(Exit::MsrWrite, Some(0x10_0002)), 0),
        Next::Resume
    );
    assert_eq!(d.vcpu.efer, 0xD01);
    d.vcpu.regs.gpr[reg::RCX] = 0x10;
    assert_eq!(
        d.handle(exit(Exit::MsrRead, Some(0x10_0004)), 0x1_2345_6789),
        Next::Resume
    );
    assert_eq!(d.vcpu.regs.gpr[reg::RAX], 0x2345_6789);
    assert_eq!(d.vcpu.regs.gpr[reg::RDX], 1);
    assert_eq!(d.vcpu.injected, None);
}

#[test]
fn unclaimed_port_reads_are_all_ones_merged_by_size() {
    let mut d = domain();
    d.vcpu.regs.gpr[reg::RAX] = 0x1122_3344_5566_7788;
    let io = |size| {
        Exit::Io(IoAccess {
            port: 0x2F8,
            size,
            write: false,
            string: false,
            rep: false,
        })
    };
    d.handle(exit(io(1), Some(0x10_0001)), 0);
    assert_eq!(d.vcpu.regs.gpr[reg::RAX], 0x1122_3344_5566_77FF);
    d.handle(exit(io(4), Some(0x10_0002)), 0);
    assert_eq!(
        d.vcpu.regs.gpr[reg::RAX],
        0xFFFF_FFFF,
        "32-bit results zero-extend"
    );
}

#[test]
fn s5_write_powers_the_domain_off() {
    let mut d = domain();
    d.vcpu.regs.gpr[reg::RAX] = (5 << 10) | (1 << 13);
    let out = Exit::Io(IoAccess {
        port: devices::layout::PM1A_CNT_BLK,
        size: 2,
        write: true,
        string: false,
        rep: false,
    });
    assert_eq!(
        d.handle(exit(out, Some(0x10_0001)), 0),
        Next::Stop(StopReason::PowerOff)
    );
}

#[test]
fn hlt_halts_and_shutdown_stops_only_this_domain() {
    let mut d = domain();
    code(&mut d, &[0xF4]);
    assert_eq!(d.handle(exit(Exit::Hlt, None), 0), Next::Halt);
    assert_eq!(d.vcpu.regs.rip, 0x10_0001);
    assert_eq!(
        d.handle(exit(Exit::Shutdown, None), 0),
        Next::Stop(StopReason::TripleFault { rip: 0x10_0001 })
    );
}

#[test]
fn virtualization_instructions_raise_ud() {
    let mut d = domain();
    assert_eq!(d.handle(exit(Exit::VirtInstruction, None), 0), Next::Resume);
    assert_eq!(
        d.vcpu.injected,
        Some(Event::Exception {
            vector: vcpu::vector::UD,
            error_code: None
        })
    );
}

#[test]
fn mmio_to_a_hole_reads_all_ones_and_advances() {
    let mut d = domain();
    // mov eax, [rbx]
    code(&mut d, &[0x8B, 0x03]);
    d.vcpu.regs.gpr[reg::RBX] = 0x8000_0000;
    let npf = Exit::NestedPageFault {
        gpa: 0x8000_0000,
        write: false,
        fetch: false,
    };
    assert_eq!(d.handle(exit(npf, None), 0), Next::Resume);
    assert_eq!(d.vcpu.regs.gpr[reg::RAX], 0xFFFF_FFFF);
    assert_eq!(d.vcpu.regs.rip, 0x10_0002);
}

#[test]
fn an_undecodable_exit_stops_the_domain_with_a_reason() {
    let mut d = domain();
    code(&mut d, &[0xFF, 0xFF]);
    let npf = Exit::NestedPageFault {
        gpa: 0x8000_0000,
        write: true,
        fetch: false,
    };
    assert!(matches!(
        d.handle(exit(npf, None), 0),
        Next::Stop(StopReason::Crashed(_))
    ));
    let fetch = Exit::NestedPageFault {
        gpa: 0x8000_0000,
        write: false,
        fetch: true,
    };
    assert!(matches!(
        d.handle(exit(fetch, None), 0),
        Next::Stop(StopReason::Crashed(_))
    ));
}

#[test]
fn pending_interrupts_are_injected_or_wait_for_a_window() {
    let mut d = domain();
    // As Linux does: mask the 8259s, enable the local APIC, route the PIT's pin 2 to vector
    // 0x30 and program a periodic tick.
    d.platform.io_write(0x21, 1, 0xFF, 0);
    d.platform.io_write(0xA1, 1, 0xFF, 0);
    d.platform.mmio_write(0xFEE0_00F0, 4, 0x1FF, 0);
    d.platform.mmio_write(0xFEC0_0000, 4, 0x14, 0);
    d.platform.mmio_write(0xFEC0_0010, 4, 0x30, 0);
    d.platform.io_write(0x43, 1, 0x34, 0);
    d.platform.io_write(0x40, 1, 0xA9, 0);
    d.platform.io_write(0x40, 1, 0x04, 0);
    let later = 10_000_000;
    d.prepare_entry(later);
    assert_eq!(d.vcpu.injected, None, "interrupts are off");
    assert!(d.vcpu.window);
    d.vcpu.regs.rflags |= 1 << 9;
    d.prepare_entry(later);
    assert_eq!(d.vcpu.injected, Some(Event::Interrupt(0x30)));
    assert!(!d.vcpu.window);
}

/// Writes the current vCPU's xAPIC ICR: destination APIC ID, then the low word.
fn send_ipi(d: &mut Domain<MockVcpu>, dest: u32, low: u32) {
    d.platform
        .mmio_write(0xFEE0_0310, 4, u64::from(dest) << 24, 0);
    d.platform.mmio_write(0xFEE0_0300, 4, u64::from(low), 0);
}

/// An exit of the current vCPU that changes nothing (an interrupt window).
fn nothing() -> ExitInfo {
    exit(Exit::InterruptWindow, None)
}

#[test]
fn application_processors_wait_for_init_and_startup() {
    let mut d = smp_domain(2);
    code(&mut d, &[0xF4]);
    // The AP waits for its STARTUP IPI: when the BSP halts, nothing can run.
    assert_eq!(d.handle(exit(Exit::Hlt, None), 0), Next::Halt);
    assert!(!d.pick_vcpu(false));
    assert!(!d.has_work(0));
    // INIT, then STARTUP with vector 0x9A, as Linux sends them.
    send_ipi(&mut d, 1, 5 << 8 | 1 << 14);
    send_ipi(&mut d, 1, 6 << 8 | 0x9A);
    d.handle(nothing(), 0);
    assert!(d.has_work(0));
    assert!(d.pick_vcpu(true));
    assert_eq!(d.current_vcpu(), 1);
    assert_eq!(d.vcpu.started_at, Some(0x9A));
    // A second STARTUP finds it running and is ignored.
    send_ipi(&mut d, 0, 6 << 8 | 0x9B);
    d.handle(nothing(), 0);
    assert_eq!(d.vcpu.started_at, Some(0x9A));
}

#[test]
fn each_vcpu_sees_its_own_apic_id_and_wakes_on_its_own_interrupts() {
    let mut d = smp_domain(2);
    send_ipi(&mut d, 1, 5 << 8 | 1 << 14);
    send_ipi(&mut d, 1, 6 << 8 | 0x10);
    d.handle(nothing(), 0);
    assert!(d.pick_vcpu(true));
    assert_eq!(d.current_vcpu(), 1);
    let apic_id = |d: &mut Domain<MockVcpu>| {
        code(d, &[0x0F, 0xA2]);
        d.vcpu.regs.rip = 0x10_0000;
        d.vcpu.regs.gpr[reg::RAX] = 1;
        d.handle(exit(Exit::Cpuid, None), 0);
        d.vcpu.regs.gpr[reg::RBX] >> 24
    };
    assert_eq!(apic_id(&mut d), 1);
    // The AP enables its APIC and halts; the BSP runs, and a fixed IPI wakes the AP.
    d.platform.mmio_write(0xFEE0_00F0, 4, 0x1FF, 0);
    code(&mut d, &[0xF4]);
    d.vcpu.regs.rip = 0x10_0000;
    assert_eq!(d.handle(exit(Exit::Hlt, None), 0), Next::Halt);
    assert!(d.pick_vcpu(false));
    assert_eq!(d.current_vcpu(), 0);
    assert_eq!(apic_id(&mut d), 0);
    assert!(d.pick_vcpu(true), "the BSP runs on");
    assert_eq!(d.current_vcpu(), 0, "the halted AP has nothing to do");
    send_ipi(&mut d, 1, 0x40);
    d.handle(nothing(), 0);
    assert!(d.pick_vcpu(true));
    assert_eq!(d.current_vcpu(), 1);
    d.vcpu.regs.rflags |= 1 << 9;
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, Some(Event::Interrupt(0x40)));
}

/// The guest sends itself an NMI through the xAPIC's ICR (self shorthand, delivery mode NMI).
fn self_nmi(d: &mut Domain<MockVcpu>) {
    assert!(d.platform.mmio_write(0xFEE0_0300, 4, 0x4_0400, 0));
}

#[test]
fn an_nmi_goes_before_a_pending_interrupt() {
    let mut d = domain();
    d.platform.mmio_write(0xFEE0_00F0, 4, 0x1FF, 0);
    d.platform.mmio_write(0xFEE0_0300, 4, 0x4_0041, 0);
    self_nmi(&mut d);
    d.vcpu.regs.rflags |= 1 << 9;
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, Some(Event::Nmi));
    assert!(!d.vcpu.nmi_window);
    assert!(d.vcpu.window, "the interrupt waits for its window");
    d.vcpu.injected = None;
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, Some(Event::Interrupt(0x41)));
    assert!(!d.platform.has_nmi(), "the NMI was taken once");
}

#[test]
fn a_blocked_nmi_waits_for_its_window_without_holding_interrupts_back() {
    let mut d = domain();
    d.platform.mmio_write(0xFEE0_00F0, 4, 0x1FF, 0);
    d.vcpu.nmi_blocked = true;
    self_nmi(&mut d);
    d.platform.mmio_write(0xFEE0_0300, 4, 0x4_0041, 0);
    d.vcpu.regs.rflags |= 1 << 9;
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, Some(Event::Interrupt(0x41)));
    assert!(d.vcpu.nmi_window);
    assert!(d.platform.has_nmi(), "still pending");
    // The handler's IRET: the window opens.
    d.vcpu.injected = None;
    d.vcpu.nmi_blocked = false;
    assert_eq!(d.handle(exit(Exit::NmiWindow, None), 0), Next::Resume);
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, Some(Event::Nmi));
    assert!(!d.vcpu.nmi_window);
}

#[test]
fn an_nmi_wakes_a_halted_vcpu_with_interrupts_off() {
    let mut d = domain();
    code(&mut d, &[0xF4]);
    assert_eq!(d.handle(exit(Exit::Hlt, None), 0), Next::Halt);
    assert!(!d.has_work(0));
    self_nmi(&mut d);
    assert!(
        d.has_work(0),
        "NMIs ignore RFLAGS.IF and a software-disabled APIC"
    );
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, Some(Event::Nmi));
    assert!(!d.has_work(0));
}

const PV_EOI_WORD: u64 = 0x3000;

/// Writes `value` to MSR `index` through a WRMSR exit; true when it did not fault.
fn wrmsr(d: &mut Domain<MockVcpu>, index: u32, value: u64) -> bool {
    d.vcpu.injected = None;
    let rip = d.vcpu.regs.rip;
    d.vcpu.regs.gpr[reg::RCX] = u64::from(index);
    d.vcpu.regs.gpr[reg::RAX] = value & 0xFFFF_FFFF;
    d.vcpu.regs.gpr[reg::RDX] = value >> 32;
    d.handle(exit(Exit::MsrWrite, Some(rip + 2)), 0);
    d.vcpu.injected.is_none()
}

fn rdmsr(d: &mut Domain<MockVcpu>, index: u32) -> u64 {
    let rip = d.vcpu.regs.rip;
    d.vcpu.regs.gpr[reg::RCX] = u64::from(index);
    d.handle(exit(Exit::MsrRead, Some(rip + 2)), 0);
    (d.vcpu.regs.gpr[reg::RDX] << 32) | d.vcpu.regs.gpr[reg::RAX]
}

fn pv_eoi_flag(d: &Domain<MockVcpu>) -> u8 {
    use crate::memory::GuestMemory;
    let mut b = [0];
    d.ram.read(PV_EOI_WORD, &mut b).unwrap();
    b[0]
}

/// Whether `vector` is in service in the local APIC.
fn in_service(d: &mut Domain<MockVcpu>, vector: u8) -> bool {
    let isr = 0xFEE0_0100 + u64::from(vector >> 5) * 0x10;
    d.platform.mmio_read(isr, 4, 0).unwrap() & (1 << (vector & 31)) != 0
}

/// Enables the local APIC (8259s masked), PV EOI at `PV_EOI_WORD`, and interrupts.
fn pv_eoi_domain() -> Domain<MockVcpu> {
    let mut d = domain();
    d.platform.io_write(0x21, 1, 0xFF, 0);
    d.platform.io_write(0xA1, 1, 0xFF, 0);
    d.platform.mmio_write(0xFEE0_00F0, 4, 0x1FF, 0);
    assert!(wrmsr(&mut d, pv_eoi::MSR_KVM_PV_EOI_EN, PV_EOI_WORD | 1));
    d.vcpu.regs.rflags |= 1 << 9;
    d
}

/// Sends the local APIC a self-IPI with `vector` (ICR: fixed, shorthand self).
fn self_ipi(d: &mut Domain<MockVcpu>, vector: u8) {
    d.platform
        .mmio_write(0xFEE0_0300, 4, 0x4_0000 | u64::from(vector), 0);
}

#[test]
fn pv_eoi_lets_the_guest_end_an_edge_interrupt_by_clearing_the_flag() {
    let mut d = pv_eoi_domain();
    assert_eq!(rdmsr(&mut d, pv_eoi::MSR_KVM_PV_EOI_EN), PV_EOI_WORD | 1);
    d.prepare_entry(0);
    assert_eq!(pv_eoi_flag(&d), 0, "nothing in service");
    self_ipi(&mut d, 0x40);
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, Some(Event::Interrupt(0x40)));
    assert_eq!(pv_eoi_flag(&d), 1, "offered with the injection");
    // An exit before the guest's EOI changes nothing.
    d.vcpu.injected = None;
    d.handle(exit(Exit::InterruptWindow, None), 0);
    assert!(in_service(&mut d, 0x40));
    // The guest's EOI clears the flag without an exit; the next exit performs it.
    use crate::memory::GuestMemory;
    d.ram.write(PV_EOI_WORD, &[0]).unwrap();
    d.handle(exit(Exit::InterruptWindow, None), 0);
    assert!(!in_service(&mut d, 0x40));
    d.prepare_entry(0);
    assert_eq!(pv_eoi_flag(&d), 0, "nothing in service: not offered again");
}

#[test]
fn pv_eoi_is_withdrawn_while_an_eoi_must_exit() {
    let mut d = pv_eoi_domain();
    self_ipi(&mut d, 0x40);
    d.prepare_entry(0);
    assert_eq!(pv_eoi_flag(&d), 1);
    // A lower vector waits in the IRR: the EOI must exit so that it is delivered at once.
    d.vcpu.injected = None;
    self_ipi(&mut d, 0x30);
    d.handle(exit(Exit::InterruptWindow, None), 0);
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, None, "0x30 is below the vector in service");
    assert_eq!(pv_eoi_flag(&d), 0);
    // The guest EOIs through the register; 0x30 goes in and may be ended by the flag.
    d.platform.mmio_write(0xFEE0_00B0, 4, 0, 0);
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, Some(Event::Interrupt(0x30)));
    assert_eq!(pv_eoi_flag(&d), 1);
    // A level-triggered vector (the UART's THR-empty interrupt through I/O APIC pin 4) is
    // never offered: its EOI goes to the I/O APIC.
    use crate::memory::GuestMemory;
    d.ram.write(PV_EOI_WORD, &[0]).unwrap();
    d.vcpu.injected = None;
    d.handle(exit(Exit::InterruptWindow, None), 0);
    d.platform.mmio_write(0xFEC0_0000, 4, 0x18, 0);
    d.platform.mmio_write(0xFEC0_0010, 4, 0x8050, 0);
    d.platform.io_write(0x3FC, 1, 0x08, 0);
    d.platform.io_write(0x3F9, 1, 0x02, 0);
    d.prepare_entry(0);
    assert_eq!(d.vcpu.injected, Some(Event::Interrupt(0x50)));
    assert_eq!(pv_eoi_flag(&d), 0);
}

#[test]
fn pv_msrs_refuse_bad_values_with_gp() {
    let mut d = domain();
    assert!(
        !wrmsr(&mut d, pv_eoi::MSR_KVM_PV_EOI_EN, 0x3002 | 1),
        "misaligned"
    );
    assert!(
        !wrmsr(&mut d, pv_eoi::MSR_KVM_PV_EOI_EN, (8 << 20) | 1),
        "outside RAM"
    );
    assert_eq!(rdmsr(&mut d, pv_eoi::MSR_KVM_PV_EOI_EN), 0);
    assert!(
        !wrmsr(&mut d, steal_time::MSR_KVM_STEAL_TIME, 0x3020 | 1),
        "misaligned"
    );
    assert!(wrmsr(&mut d, steal_time::MSR_KVM_STEAL_TIME, 0x3040 | 1));
    assert_eq!(rdmsr(&mut d, steal_time::MSR_KVM_STEAL_TIME), 0x3040 | 1);
}

#[test]
fn steal_time_is_the_scheduler_wait_in_kvmclock_nanoseconds() {
    use crate::memory::GuestMemory;
    let mut d = domain();
    // The test domain's TSC runs at 1 GHz: one tick is one nanosecond.
    d.account_steal(1_000);
    assert!(wrmsr(&mut d, steal_time::MSR_KVM_STEAL_TIME, 0x3040 | 1));
    d.account_steal(1_000);
    assert_eq!(
        d.ram.read_u32(0x3048).unwrap(),
        0,
        "no wait since registering"
    );
    d.account_steal(3_500);
    assert_eq!(d.ram.read_u64(0x3040).unwrap(), 2_500);
    assert_eq!(d.ram.read_u32(0x3048).unwrap(), 2, "an even version");
}
