//! Guest FPU, SSE, AVX and AVX-512 state of each vCPU. The monitor itself never touches these
//! registers (it is built soft-float), so a vCPU's state stays live in the CPU across its
//! exits: it is restored with XRSTOR, together with its XCR0, when the vCPU's turn on a CPU
//! begins, and saved with XSAVE when the turn ends (SDM Vol. 1 §13.7-13.8), so that the next
//! turn may be on any CPU. A new vCPU starts from the initial state (an XSAVE header of zeros),
//! never from another guest's registers.
//!
//! CPUs without XSAVE are not supported (every CPU with SVM or VMX and EPT has it).

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::arch::asm;
use raw_cpuid::cpuid;

const CR4_OSXSAVE: u64 = 1 << 18;
/// XCR0 at reset: x87 only.
const XCR0_RESET: u64 = 1;

/// One vCPU's saved state.
pub struct FpuState(Saved);

/// XCR0 and an XSAVE area.
struct Saved {
    xcr0: u64,
    area: *mut u8,
    layout: Layout,
}

/// Turns on XSAVE for the host (CR4.OSXSAVE) and enables every user state component the CPU
/// has in XCR0, so that the host's XSAVE saves whatever a guest may have used. Once per CPU.
pub fn init() -> bool {
    if cpuid!(1).ecx & (1 << 26) == 0 {
        return false;
    }
    // SAFETY: the CPU has XSAVE; setting CR4.OSXSAVE and a supported XCR0 is architectural.
    unsafe {
        let cr4: u64;
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        asm!("mov cr4, {}", in(reg) cr4 | CR4_OSXSAVE, options(nomem, nostack));
        xsetbv(supported_xcr0());
    }
    true
}

/// User state components the CPU supports (CPUID.(EAX=0xD,ECX=0):EDX:EAX).
fn supported_xcr0() -> u64 {
    let leaf = cpuid!(0xD, 0);
    ((u64::from(leaf.edx) << 32) | u64::from(leaf.eax)) & !(1 << 9) // PKRU stays with the host's
}

/// # Safety
/// CR4.OSXSAVE must be set and `value` valid for this CPU.
unsafe fn xsetbv(value: u64) {
    // SAFETY: per the caller.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nomem, nostack))
    };
}

fn xgetbv() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: CR4.OSXSAVE is set by `init` before any domain runs.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

// SAFETY: the XSAVE area is owned by this state alone (allocated in `new`, freed in `drop`).
unsafe impl Send for FpuState {}

impl FpuState {
    /// The initial state, with room for every component the CPU supports.
    pub fn new() -> Self {
        let size = cpuid!(0xD, 0).ecx.max(576) as usize;
        let layout = Layout::from_size_align(size, 64).expect("XSAVE area layout");
        // SAFETY: the layout has a non-zero size.
        let area = unsafe { alloc_zeroed(layout) };
        assert!(!area.is_null(), "out of memory for an XSAVE area");
        Self(Saved {
            xcr0: XCR0_RESET,
            area,
            layout,
        })
    }

    /// Makes this state the live one on this CPU. XSAVE and XRSTOR run with every component
    /// the CPU supports enabled in XCR0 (and whatever the vCPU enabled itself, such as PKRU),
    /// not with the vCPU's own XCR0: the whole state is restored and later saved even when the
    /// live XCR0 is not the vCPU's at that moment (the VMX backend loads the XCR0 of each vCPU
    /// whose VMCS it makes current). The vCPU's own XCR0 is loaded last.
    pub fn load(&self) {
        let s = &self.0;
        // SAFETY: XRSTOR gets a 64-byte aligned area of the size CPUID gives, holding the
        // initial state or one XSAVE stored; XCR0 gets the supported set, a guest's own value
        // (which its XSETBV passed) or their union.
        unsafe {
            xsetbv(supported_xcr0() | s.xcr0);
            asm!("xrstor64 [{}]", in(reg) s.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            xsetbv(s.xcr0);
        }
    }

    /// Saves the live registers, those of the vCPU whose turn on this CPU ends, into this state.
    pub fn save(&mut self) {
        let s = &mut self.0;
        s.xcr0 = xgetbv();
        // SAFETY: as for `load`.
        unsafe {
            xsetbv(supported_xcr0() | s.xcr0);
            asm!("xsave64 [{}]", in(reg) s.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
        }
    }
}

impl Drop for FpuState {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.0.area, self.0.layout) };
    }
}
