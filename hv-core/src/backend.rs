//! The hardware backend chosen at boot from CPUID, and `AnyVcpu`, the one vCPU type the exit
//! loop drives whichever vendor runs it (static dispatch over the vendor crates' vCPUs).

use alloc::boxed::Box;

use ept::Format;
use svm::SvmVcpu;
use vcpu::{ControlState, Event, ExitInfo, InvalidValue, Regs, Segments, StartState, Vcpu};

/// The vendor backend, enabled on this CPU.
pub enum Backend {
    Svm(svm::Shared),
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
    /// Detects and enables the CPU's hardware virtualization; logs why when there is none.
    pub fn init() -> Option<Self> {
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
                log::error!("SVM unusable: {why}; VMX is not supported by this build");
                None
            }
        }
    }

    /// The guest-physical page-table format of this backend.
    pub fn table_format(&self) -> Format {
        match self {
            Self::Svm(_) => Format::Npt,
        }
    }

    /// A vCPU of domain `id` whose guest-physical tables are `tables`.
    pub fn vcpu(&self, id: u32, tables: &ept::GuestPageTable, start: &StartState) -> AnyVcpu {
        match self {
            Self::Svm(shared) => AnyVcpu::Svm(SvmVcpu::new(shared, id, tables.root(), start)),
        }
    }
}

pub enum AnyVcpu {
    Svm(SvmVcpu),
}

macro_rules! dispatch {
    ($self:ident, $v:ident => $e:expr) => {
        match $self {
            AnyVcpu::Svm($v) => $e,
        }
    };
}

impl Vcpu for AnyVcpu {
    fn run(&mut self) -> ExitInfo {
        dispatch!(self, v => v.run())
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

    fn read_state_msr(&self, msr: u32) -> Option<u64> {
        dispatch!(self, v => v.read_state_msr(msr))
    }

    fn write_state_msr(&mut self, msr: u32, value: u64) -> Result<bool, InvalidValue> {
        dispatch!(self, v => v.write_state_msr(msr, value))
    }

    fn exit_name(&self, raw: u32) -> &'static str {
        dispatch!(self, v => v.exit_name(raw))
    }
}
