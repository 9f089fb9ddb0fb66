//! The hardware backend chosen at boot from CPUID (VMX on Intel, SVM on AMD), and `AnyVcpu`,
//! the one vCPU type the exit loop drives whichever vendor runs it (static dispatch over the
//! vendor crates' vCPUs).

use alloc::boxed::Box;

use ept::{Format, PageSize};
use raw_cpuid::cpuid;
use svm::SvmVcpu;
use vcpu::{ControlState, Event, ExitInfo, InvalidValue, Regs, Segments, StartState, Vcpu};
use vmx::features::ept_cap;
use vmx::VmxVcpu;

/// The vendor backend, enabled on this CPU.
pub enum Backend {
    Svm(svm::Shared),
    Vmx(vmx::Shared),
}

/// The CPU vendor, from CPUID leaf 0's EBX:EDX:ECX.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Intel,
    Amd,
    Other,
}

fn vendor() -> Vendor {
    let r = cpuid!(0);
    match (r.ebx, r.edx, r.ecx) {
        // "GenuineIntel"
        (0x756E_6547, 0x4965_6E69, 0x6C65_746E) => Vendor::Intel,
        // "AuthenticAMD"
        (0x6874_7541, 0x6974_6E65, 0x444D_4163) => Vendor::Amd,
        _ => Vendor::Other,
    }
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl Backend {
    /// Detects and enables the CPU's hardware virtualization (VMX on Intel CPUs, SVM on AMD
    /// ones, both tried in that order on others); logs why when there is none.
    /// `tsc_hz` is the calibrated TSC rate.
    pub fn init(tsc_hz: u64) -> Option<Self> {
        match vendor() {
            Vendor::Intel => Self::init_vmx(tsc_hz),
            Vendor::Amd => Self::init_svm(),
            Vendor::Other => Self::init_vmx(tsc_hz).or_else(Self::init_svm),
        }
    }

    fn init_vmx(tsc_hz: u64) -> Option<Self> {
        let f = match vmx::features::detect() {
            Ok(f) => f,
            Err(why) => {
                log::error!("VMX unusable: {why}");
                return None;
            }
        };
        let ept_pages = match (f.ept_cap(ept_cap::PAGE_1G), f.ept_cap(ept_cap::PAGE_2M)) {
            (true, _) => "4K/2M/1G",
            (false, true) => "4K/2M",
            _ => "4K",
        };
        let timer = f
            .preemption_timer_shift
            .map(|s| alloc::format!("yes (TSC/2^{s})"));
        log::info!(
            "backend vmx: EPT pages {ept_pages}, EPT A/D {}, VPID {}, unrestricted guest {}, preemption timer {}, revision {:#x}",
            yes(f.ept_cap(ept_cap::ACCESSED_DIRTY)),
            yes(f.vpid()),
            yes(f.unrestricted_guest()),
            timer.as_deref().unwrap_or("no"),
            f.revision
        );
        // SAFETY: detect() succeeded on this CPU, and this runs once, on the first CPU.
        match unsafe { vmx::host::enable(&f) } {
            Ok(host) => {
                let mut shared = vmx::Shared::new(f, host);
                // Sizes the VMX-preemption timer backstop to the calibrated TSC.
                shared.set_tsc_hz(tsc_hz);
                Some(Self::Vmx(shared))
            }
            Err(e) => {
                log::error!("VMXON failed: {e}");
                None
            }
        }
    }

    fn init_svm() -> Option<Self> {
        match svm::features::detect() {
            Ok(f) => {
                log::info!(
                    "backend svm: nested paging, {} ASIDs, nrip-save {}, decode-assists {}, flush-by-asid {}, vmcb-clean {}, vgif {}",
                    f.asids,
                    yes(f.nrip_save),
                    yes(f.decode_assists),
                    yes(f.flush_by_asid),
                    yes(f.vmcb_clean),
                    yes(f.vgif)
                );
                let hsave = Box::leak(Box::new(Page([0; 4096])));
                // SAFETY: detect() succeeded; the host save area is a leaked page of our own.
                unsafe { svm::features::enable(hsave as *mut Page as u64) };
                Some(Self::Svm(svm::Shared::new(f)))
            }
            Err(why) => {
                log::error!("SVM unusable: {why}");
                None
            }
        }
    }

    /// Enables the same hardware virtualization on another CPU of the machine, which this one
    /// started; logs why not.
    pub fn enable_other(&self) -> bool {
        match self {
            Self::Svm(_) => match svm::features::detect() {
                Ok(_) => {
                    let hsave = Box::leak(Box::new(Page([0; 4096])));
                    // SAFETY: detect() succeeded on this CPU; the host save area is a leaked
                    // page of its own.
                    unsafe { svm::features::enable(hsave as *mut Page as u64) };
                    true
                }
                Err(why) => {
                    log::error!("SVM unusable on this CPU: {why}");
                    false
                }
            },
            Self::Vmx(shared) => {
                let enabled = vmx::features::detect()
                    .map_err(|e| alloc::format!("{e}"))
                    .and_then(|f| {
                        // SAFETY: detect() succeeded on this CPU, once, and `init_vmx` enabled VMX
                        // on the first CPU, whose host state this is.
                        unsafe { vmx::host::enable_other(&f, shared.host()) }
                            .map_err(|e| alloc::format!("VMXON failed: {e}"))
                    });
                if let Err(why) = &enabled {
                    log::error!("VMX unusable on this CPU: {why}");
                }
                enabled.is_ok()
            }
        }
    }

    /// The guest-physical page-table format of this backend.
    pub fn table_format(&self) -> Format {
        match self {
            Self::Svm(_) => Format::Npt,
            Self::Vmx(_) => Format::Ept,
        }
    }

    /// The largest page the guest-physical tables may use: on AMD, 1 GiB pages of long-mode
    /// paging (CPUID 8000_0001h EDX bit 26); on Intel, what IA32_VMX_EPT_VPID_CAP offers
    /// (bit 17 for 1 GiB, bit 16 for 2 MiB; SDM Vol. 3D §A.10).
    pub fn max_page_size(&self) -> PageSize {
        match self {
            Self::Svm(_) if cpuid!(0x8000_0001).edx & (1 << 26) != 0 => PageSize::Size1GiB,
            Self::Svm(_) => PageSize::Size2MiB,
            Self::Vmx(s) if s.features().ept_cap(ept_cap::PAGE_1G) => PageSize::Size1GiB,
            Self::Vmx(s) if s.features().ept_cap(ept_cap::PAGE_2M) => PageSize::Size2MiB,
            Self::Vmx(_) => PageSize::Size4KiB,
        }
    }

    /// A vCPU of domain `id` whose guest-physical tables are `tables`.
    pub fn vcpu(&self, id: u32, tables: &ept::GuestPageTable, start: &StartState) -> AnyVcpu {
        match self {
            Self::Svm(shared) => AnyVcpu::Svm(SvmVcpu::new(shared, id, tables.root(), start)),
            // The tables are EPT (`table_format`), so `eptp` is Some; a zero EPTP would only
            // make VM entry fail, which the exit loop reports.
            Self::Vmx(shared) => AnyVcpu::Vmx(VmxVcpu::new(
                shared,
                id,
                tables.eptp(false).unwrap_or(0),
                start,
            )),
        }
    }
}

// One lives in each domain and is never moved on the exit path; boxing the larger variant
// would only add a pointer chase to every exit.
#[allow(clippy::large_enum_variant)]
pub enum AnyVcpu {
    Svm(SvmVcpu),
    Vmx(VmxVcpu),
}

macro_rules! dispatch {
    ($self:ident, $v:ident => $e:expr) => {
        match $self {
            AnyVcpu::Svm($v) => $e,
            AnyVcpu::Vmx($v) => $e,
        }
    };
}

impl Vcpu for AnyVcpu {
    fn run(&mut self) -> ExitInfo {
        dispatch!(self, v => v.run())
    }

    fn release(&mut self) {
        dispatch!(self, v => v.release())
    }

    fn regs(&self) -> &Regs {
        dispatch!(self, v => v.regs())
    }

    fn regs_mut(&mut self) -> &mut Regs {
        dispatch!(self, v => v.regs_mut())
    }

    fn control_state(&self) -> ControlState {
        dispatch!(self, v => v.control_state())
    }

    fn segments(&self) -> Segments {
        dispatch!(self, v => v.segments())
    }

    fn inject(&mut self, event: Event) {
        dispatch!(self, v => v.inject(event))
    }

    fn interruptible(&self) -> bool {
        dispatch!(self, v => v.interruptible())
    }

    fn request_interrupt_window(&mut self, on: bool) {
        dispatch!(self, v => v.request_interrupt_window(on))
    }

    fn nmi_allowed(&self) -> bool {
        dispatch!(self, v => v.nmi_allowed())
    }

    fn request_nmi_window(&mut self, on: bool) {
        dispatch!(self, v => v.request_nmi_window(on))
    }

    fn read_state_msr(&self, msr: u32) -> Option<u64> {
        dispatch!(self, v => v.read_state_msr(msr))
    }

    fn write_state_msr(&mut self, msr: u32, value: u64) -> Result<bool, InvalidValue> {
        dispatch!(self, v => v.write_state_msr(msr, value))
    }

    fn exit_name(&self, raw: u32) -> &'static str {
        dispatch!(self, v => v.exit_name(raw))
    }

    fn set_deadline(&mut self, deadline: u64, now: u64) {
        dispatch!(self, v => v.set_deadline(deadline, now))
    }

    fn start_up(&mut self, vector: u8) {
        dispatch!(self, v => v.start_up(vector))
    }
}
