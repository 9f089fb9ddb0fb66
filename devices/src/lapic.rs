//! One CPU's local APIC (Intel SDM Vol. 3A ch. 11, "Advanced Programmable Interrupt Controller")
//! with its xAPIC MMIO page, its x2APIC MSRs, the APIC timer (one-shot, periodic, TSC-deadline)
//! and interrupt acceptance, priority and EOI, and the NMI latch of its CPU. It is not an
//! interrupt router: IPIs to other CPUs and level-triggered EOIs are handed back to the platform
//! as a [`LapicAction`]. LINT0 and LINT1 programmed as NMI deliver nothing: no NMI source is
//! wired to them (LINT0 carries only the 8259's INTR, as ExtINT).

use crate::layout;

/// What the platform must do after a register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicAction {
    None,
    /// An EOI retired a level-triggered vector: broadcast it to the I/O APIC.
    Eoi(u8),
    /// An ICR write that reaches other CPUs. For Fixed, LowestPriority and NMI the sender has
    /// already taken its own share, so the platform must not deliver it back to the sender;
    /// other modes (SMI, INIT, SIPI) name every target, the sender included.
    Ipi {
        /// xAPIC: 8-bit APIC ID or logical mask; x2APIC: 32-bit destination.
        dest: u32,
        vector: u8,
        /// ICR delivery mode (bits 10:8): 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 6 SIPI.
        mode: u8,
        /// ICR destination shorthand (bits 19:18): 0 none, 1 self, 2 all, 3 all but self.
        shorthand: u8,
        /// ICR level bit 14 (assert).
        level: bool,
        logical: bool,
    },
}

/// IA32_APIC_BASE and its fields (SDM 11.4.4, 11.12.1).
pub const MSR_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE (SDM 11.5.4.1).
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;
const MSR_X2APIC_FIRST: u32 = 0x800;
const MSR_X2APIC_LAST: u32 = 0x8FF;

const BASE_BSP: u64 = 1 << 8;
const BASE_EXTD: u64 = 1 << 10;
const BASE_ENABLE: u64 = 1 << 11;
const BASE_ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits 0-7, 9 and those above a 52-bit physical address are reserved.
const BASE_RESERVED: u64 = !(BASE_ADDRESS_MASK | BASE_ENABLE | BASE_EXTD | BASE_BSP);

/// Register offsets within the xAPIC page; the x2APIC MSR is 0x800 + offset / 16 (SDM 11.12.1.2).
mod reg {
    pub const ID: u32 = 0x020;
    pub const VERSION: u32 = 0x030;
    pub const TPR: u32 = 0x080;
    pub const APR: u32 = 0x090;
    pub const PPR: u32 = 0x0A0;
    pub const EOI: u32 = 0x0B0;
    pub const LDR: u32 = 0x0D0;
    pub const DFR: u32 = 0x0E0;
    pub const SVR: u32 = 0x0F0;
    pub const ISR: u32 = 0x100;
    pub const ISR_LAST: u32 = 0x170;
    pub const TMR: u32 = 0x180;
    pub const TMR_LAST: u32 = 0x1F0;
    pub const IRR: u32 = 0x200;
    pub const IRR_LAST: u32 = 0x270;
    pub const ESR: u32 = 0x280;
    pub const LVT_CMCI: u32 = 0x2F0;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERF: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3E0;
    pub const SELF_IPI: u32 = 0x3F0;
}

/// Version 0x14 with max LVT entry 5 and no EOI-broadcast suppression (SDM 11.4.8).
const VERSION_VALUE: u32 = 0x0005_0014;

const SVR_ENABLE: u32 = 1 << 8;
/// Spurious vector, software enable, focus processor checking.
const SVR_WRITABLE: u32 = 0x3FF;

const LVT_MASKED: u32 = 1 << 16;
const LVT_DELIVERY_STATUS: u32 = 1 << 12;
const LVT_REMOTE_IRR: u32 = 1 << 14;
const LVT_TIMER_MODE_SHIFT: u32 = 17;
const DELIVERY_MODE_EXTINT: u32 = 0b111;

/// The LVT entries, indexed as stored.
const LVT_CMCI: usize = 0;
const LVT_TIMER: usize = 1;
const LVT_THERMAL: usize = 2;
const LVT_PERF: usize = 3;
const LVT_LINT0: usize = 4;
const LVT_LINT1: usize = 5;
const LVT_ERROR: usize = 6;
const LVT_COUNT: usize = 7;
/// Software-writable bits of each LVT entry (SDM Figure 11-8).
const LVT_WRITABLE: [u32; LVT_COUNT] = [
    0x0001_07FF, // CMCI: vector, delivery mode, mask
    0x0007_00FF, // timer: vector, mask, timer mode
    0x0001_07FF, // thermal
    0x0001_07FF, // performance counters
    0x0001_A7FF, // LINT0: vector, delivery mode, polarity, trigger mode, mask
    0x0001_A7FF, // LINT1
    0x0001_00FF, // error: vector, mask
];

/// Delivery status, and remote IRR on the LINT entries.
const LVT_READ_ONLY: [u32; LVT_COUNT] = [
    LVT_DELIVERY_STATUS,
    LVT_DELIVERY_STATUS,
    LVT_DELIVERY_STATUS,
    LVT_DELIVERY_STATUS,
    LVT_DELIVERY_STATUS | LVT_REMOTE_IRR,
    LVT_DELIVERY_STATUS | LVT_REMOTE_IRR,
    LVT_DELIVERY_STATUS,
];

/// Vector, delivery mode, destination mode, level, trigger mode and shorthand (SDM Figure 11-12);
/// delivery status (bit 12) is read-only and reads 0 because delivery is immediate.
const ICR_LOW_WRITABLE: u32 = 0x000C_CFFF;
const ICR_HIGH_XAPIC_WRITABLE: u32 = 0xFF00_0000;
const ICR_LOGICAL: u32 = 1 << 11;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_TRIGGER_LEVEL: u32 = 1 << 15;

pub(crate) const MODE_FIXED: u8 = 0;
pub(crate) const MODE_LOWEST_PRIORITY: u8 = 1;
const MODE_SMI: u8 = 2;
pub(crate) const MODE_NMI: u8 = 4;
pub(crate) const MODE_INIT: u8 = 5;
pub(crate) const MODE_STARTUP: u8 = 6;

pub(crate) const SHORTHAND_NONE: u8 = 0;
pub(crate) const SHORTHAND_SELF: u8 = 1;
pub(crate) const SHORTHAND_ALL_INCLUDING_SELF: u8 = 2;

/// Error status bits (SDM Figure 11-9).
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

const DFR_FLAT: u32 = 0xF;
const DFR_READS_AS_ONES: u32 = 0x0FFF_FFFF;
const LDR_XAPIC_WRITABLE: u32 = 0xFF00_0000;
const DIVIDE_WRITABLE: u32 = 0b1011;

/// The APIC's operating mode, from IA32_APIC_BASE EN and EXTD (SDM 11.12.5, Figure 11-27).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disabled,
    Invalid,
    XApic,
    X2Apic,
}

impl Mode {
    fn of(apic_base: u64) -> Self {
        match (apic_base & BASE_ENABLE != 0, apic_base & BASE_EXTD != 0) {
            (false, false) => Mode::Disabled,
            (false, true) => Mode::Invalid,
            (true, false) => Mode::XApic,
            (true, true) => Mode::X2Apic,
        }
    }
}

/// LVT timer bits 18:17 (SDM Table 11-2); the reserved encoding 0b11 behaves as one-shot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

/// A 256-bit vector bitmap: IRR, ISR or TMR.
#[derive(Clone, Copy, Default)]
struct VectorSet([u32; 8]);

impl VectorSet {
    fn set(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] |= 1 << (vector & 31);
    }

    fn clear(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] &= !(1 << (vector & 31));
    }

    fn assign(&mut self, vector: u8, on: bool) {
        if on {
            self.set(vector);
        } else {
            self.clear(vector);
        }
    }

    fn contains(&self, vector: u8) -> bool {
        self.0[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
    }

    fn highest(&self) -> Option<u8> {
        let (word, bits) = self.0.iter().enumerate().rev().find(|(_, w)| **w != 0)?;
        // word < 8 and the bit index < 32, so the vector fits in a u8.
        Some(((word as u32) << 5 | (31 - bits.leading_zeros())) as u8)
    }

    /// The 32-bit register at `offset` from the first one of the set.
    fn word_at(&self, offset: u32) -> u32 {
        self.0.get((offset >> 4) as usize).copied().unwrap_or(0)
    }
}

/// A local APIC.
pub struct Lapic {
    id: u32,
    tsc_hz: u64,
    apic_base: u64,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    irr: VectorSet,
    isr: VectorSet,
    tmr: VectorSet,
    /// ESR as last latched by a write, and the errors seen since.
    esr: u32,
    esr_pending: u32,
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; LVT_COUNT],
    initial_count: u32,
    divide_config: u32,
    /// TSC time the current count reaches zero, and the TSC length of one full count.
    timer_deadline: Option<u64>,
    timer_period: u64,
    tsc_deadline: u64,
    /// An NMI was accepted and the CPU has not taken it yet. One is latched, no more: another
    /// before the CPU takes it is lost, as on hardware (SDM Vol. 3A §7.7.1).
    nmi_pending: bool,
}

impl Lapic {
    /// A local APIC in its power-up state: xAPIC mode at the default base, software-disabled.
    pub fn new(apic_id: u32, tsc_hz: u64) -> Self {
        let bsp = if apic_id == 0 { BASE_BSP } else { 0 };
        Self {
            id: apic_id,
            tsc_hz,
            apic_base: layout::LAPIC_BASE | BASE_ENABLE | bsp,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xFF,
            irr: VectorSet::default(),
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [LVT_MASKED; LVT_COUNT],
            initial_count: 0,
            divide_config: 0,
            timer_deadline: None,
            timer_period: 0,
            tsc_deadline: 0,
            nmi_pending: false,
        }
    }

    /// The MSRs this device answers.
    pub fn claims_msr(msr: u32) -> bool {
        matches!(
            msr,
            MSR_APIC_BASE | MSR_TSC_DEADLINE | MSR_X2APIC_FIRST..=MSR_X2APIC_LAST
        )
    }

    /// The physical address of the xAPIC page.
    pub fn base_address(&self) -> u64 {
        self.apic_base & BASE_ADDRESS_MASK
    }

    /// Whether the MMIO page answers: hardware-enabled and not in x2APIC mode.
    pub fn xapic_mmio_enabled(&self) -> bool {
        Mode::of(self.apic_base) == Mode::XApic
    }

    pub fn is_x2apic(&self) -> bool {
        Mode::of(self.apic_base) == Mode::X2Apic
    }

    fn hardware_enabled(&self) -> bool {
        self.apic_base & BASE_ENABLE != 0
    }

    fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// Whether the 8259's INTR reaches the CPU: the APIC is disabled (hardware or software) or
    /// LINT0 is an unmasked ExtINT entry ("virtual wire", MP spec 3.6.2.2).
    pub fn lint0_extint(&self) -> bool {
        let lint0 = self.lvt[LVT_LINT0];
        !self.hardware_enabled()
            || !self.software_enabled()
            || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 0b111 == DELIVERY_MODE_EXTINT)
    }

    // ---- Interrupt acceptance and priority (SDM 11.8) ----

    /// Accepts a fixed interrupt from the I/O APIC, an IPI or a local source. Vectors 0-15 are
    /// illegal: they set "receive illegal vector" in the ESR and are dropped (SDM 11.5.3).
    /// A disabled APIC accepts no fixed interrupts (SDM 11.4.7.2).
    pub fn accept_interrupt(&mut self, vector: u8, level_triggered: bool) {
        if !self.hardware_enabled() || !self.software_enabled() {
            return;
        }
        if vector < 16 {
            self.signal_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        self.irr.set(vector);
        self.tmr.assign(vector, level_triggered);
    }

    /// Processor priority: the TPR, or the class of the highest in-service vector if that is
    /// higher (SDM 11.8.3.1).
    fn ppr(&self) -> u32 {
        let isrv = self.isr.highest().map_or(0, u32::from);
        if self.tpr & 0xF0 >= isrv & 0xF0 {
            self.tpr & 0xFF
        } else {
            isrv & 0xF0
        }
    }

    /// The vector the CPU should take next, if its priority class is above the PPR's.
    /// Vectors already in the IRR stay deliverable while software-disabled (SDM 11.4.7.2).
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.hardware_enabled() {
            return None;
        }
        let vector = self.irr.highest()?;
        (u32::from(vector) & 0xF0 > self.ppr() & 0xF0).then_some(vector)
    }

    /// Accepts an NMI (an IPI, or an I/O APIC entry in NMI mode). A software-disabled APIC
    /// still takes NMIs; a hardware-disabled one takes nothing (SDM 11.4.7.2, 11.4.3).
    pub fn accept_nmi(&mut self) {
        if self.hardware_enabled() {
            self.nmi_pending = true;
        }
    }

    /// Whether an NMI waits for the CPU.
    pub fn has_nmi(&self) -> bool {
        self.nmi_pending
    }

    /// The CPU takes the pending NMI; false when there was none.
    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.nmi_pending)
    }

    /// The CPU took `vector`: move it from the IRR to the ISR.
    pub fn acknowledge(&mut self, vector: u8) {
        if self.irr.contains(vector) {
            self.irr.clear(vector);
            self.isr.set(vector);
        }
    }

    /// Whether the CPU may end its current interrupt without an exit, as a guest using KVM's
    /// PV EOI does (Linux `arch/x86/kvm/lapic.c`, `apic_sync_pv_eoi_to_guest`): a vector is in
    /// service, it was edge-triggered (its EOI sends the I/O APIC nothing), and the IRR is
    /// empty (so the EOI cannot unblock an interrupt that would then be due at once).
    pub fn eoi_may_skip_exit(&self) -> bool {
        self.irr.highest().is_none() && self.isr.highest().is_some_and(|v| !self.tmr.contains(v))
    }

    /// Retires the highest in-service vector (SDM 11.8.5), as a write to the EOI register does.
    pub fn eoi(&mut self) -> LapicAction {
        let Some(vector) = self.isr.highest() else {
            return LapicAction::None;
        };
        self.isr.clear(vector);
        if self.tmr.contains(vector) {
            LapicAction::Eoi(vector)
        } else {
            LapicAction::None
        }
    }

    /// Records an error and raises the LVT error interrupt for each newly seen one (SDM 11.5.3).
    fn signal_error(&mut self, bit: u32) {
        if self.esr_pending & bit != 0 {
            return;
        }
        self.esr_pending |= bit;
        let lvt = self.lvt[LVT_ERROR];
        if lvt & LVT_MASKED != 0 {
            return;
        }
        let vector = lvt as u8;
        if vector < 16 {
            self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
        } else {
            self.irr.set(vector);
            self.tmr.clear(vector);
        }
    }

    // ---- Timer (SDM 11.5.4) ----

    fn timer_mode(&self) -> TimerMode {
        match (self.lvt[LVT_TIMER] >> LVT_TIMER_MODE_SHIFT) & 0b11 {
            0b01 => TimerMode::Periodic,
            0b10 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    /// Timer clock divisor from the divide configuration register bits 3, 1:0 (SDM Figure 11-10).
    fn divisor(&self) -> u64 {
        let code = (self.divide_config & 0b11) | ((self.divide_config >> 1) & 0b100);
        if code == 0b111 {
            1
        } else {
            2 << code
        }
    }

    /// TSC ticks for `count` timer ticks at the current divisor, rounded up, at least 1.
    fn count_to_tsc(&self, count: u32) -> u64 {
        let numerator = u128::from(count) * u128::from(self.divisor()) * u128::from(self.tsc_hz);
        let ticks = numerator.div_ceil(u128::from(layout::LAPIC_TIMER_HZ));
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }

    /// Whole timer ticks elapsed in `tsc` TSC ticks at the current divisor.
    fn tsc_to_count(&self, tsc: u64) -> u64 {
        let numerator = u128::from(tsc) * u128::from(layout::LAPIC_TIMER_HZ);
        let denominator = u128::from(self.tsc_hz) * u128::from(self.divisor());
        numerator
            .checked_div(denominator)
            .map_or(0, |t| u64::try_from(t).unwrap_or(u64::MAX))
    }

    fn arm_timer(&mut self, now: u64) {
        if self.initial_count == 0 {
            self.timer_deadline = None;
            return;
        }
        self.timer_period = self.count_to_tsc(self.initial_count);
        self.timer_deadline = Some(now.saturating_add(self.timer_period));
    }

    fn current_count(&self, now: u64) -> u32 {
        if self.timer_mode() == TimerMode::TscDeadline {
            return 0;
        }
        let Some(deadline) = self.timer_deadline else {
            return 0;
        };
        let remaining = if now < deadline {
            deadline - now
        } else if self.timer_mode() == TimerMode::Periodic {
            // Expired periods not yet polled: the count has reloaded and kept going.
            self.timer_period - (now - deadline) % self.timer_period
        } else {
            return 0;
        };
        let count = self
            .tsc_to_count(remaining)
            .min(u64::from(self.initial_count));
        // Bounded by the u32 initial count just above.
        count as u32
    }

    fn write_initial_count(&mut self, value: u32, now: u64) {
        // Ignored in TSC-deadline mode (SDM 11.5.4.1).
        if self.timer_mode() == TimerMode::TscDeadline {
            return;
        }
        self.initial_count = value;
        self.arm_timer(now);
    }

    /// A new divisor applies to the remaining count from now on and to every later reload.
    fn write_divide(&mut self, value: u32, now: u64) {
        let running = self.timer_deadline.filter(|d| now < *d).is_some();
        let remaining = self.current_count(now);
        self.divide_config = value & DIVIDE_WRITABLE;
        if self.timer_deadline.is_none() {
            return;
        }
        self.timer_period = self.count_to_tsc(self.initial_count);
        if running {
            self.timer_deadline = Some(now.saturating_add(self.count_to_tsc(remaining)));
        }
    }

    /// Switching between TSC-deadline and the count-down modes disarms the timer (SDM 11.5.4.1).
    fn write_lvt_timer(&mut self, value: u32) {
        let was_deadline = self.timer_mode() == TimerMode::TscDeadline;
        self.write_lvt(LVT_TIMER, value);
        if was_deadline != (self.timer_mode() == TimerMode::TscDeadline) {
            self.initial_count = 0;
            self.timer_deadline = None;
            self.tsc_deadline = 0;
        }
    }

    /// Fires the timer if it is due. A periodic timer that missed several periods delivers one
    /// interrupt and re-arms on its original grid: next = last deadline + k * period.
    pub fn poll_timer(&mut self, now: u64) {
        if self.timer_mode() == TimerMode::TscDeadline {
            if self.tsc_deadline != 0 && now >= self.tsc_deadline {
                self.tsc_deadline = 0;
                self.fire_timer();
            }
            return;
        }
        let Some(deadline) = self.timer_deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.timer_deadline = match self.timer_mode() {
            TimerMode::Periodic => {
                let periods = (now - deadline) / self.timer_period + 1;
                Some(deadline.saturating_add(periods.saturating_mul(self.timer_period)))
            }
            _ => None,
        };
        self.fire_timer();
    }

    /// A masked timer still counts but delivers nothing (SDM 11.5.1).
    fn fire_timer(&mut self) {
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.accept_interrupt(lvt as u8, false);
        }
    }

    /// TSC time of the next timer expiry; `now` or earlier means poll at once.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.timer_mode() == TimerMode::TscDeadline {
            (self.tsc_deadline != 0).then_some(self.tsc_deadline)
        } else {
            self.timer_deadline
        }
    }

    // ---- Interprocessor interrupts (SDM 11.6) ----

    /// Whether a message for `dest` reaches this APIC (SDM 11.6.2, and 11.12.10 for x2APIC).
    /// `dest` is 8-bit in xAPIC mode (0xFF broadcasts) and 32-bit in x2APIC mode (0xFFFF_FFFF
    /// broadcasts).
    pub fn matches_destination(&self, dest: u32, logical: bool) -> bool {
        if self.is_x2apic() {
            if dest == u32::MAX {
                return true;
            }
            if !logical {
                return dest == self.id;
            }
            dest >> 16 == self.ldr >> 16 && dest & self.ldr & 0xFFFF != 0
        } else {
            let dest = dest & 0xFF;
            if dest == 0xFF {
                return true;
            }
            if !logical {
                return dest == self.id;
            }
            let ldr = self.ldr >> 24;
            if self.dfr >> 28 == DFR_FLAT {
                dest & ldr != 0
            } else {
                dest >> 4 == ldr >> 4 && dest & ldr & 0xF != 0
            }
        }
    }

    fn icr_destination(&self) -> u32 {
        if self.is_x2apic() {
            self.icr_high
        } else {
            self.icr_high >> 24
        }
    }

    /// Sends the IPI just written to the ICR.
    fn send_ipi(&mut self) -> LapicAction {
        let low = self.icr_low;
        let dest = self.icr_destination();
        let mode = ((low >> 8) & 0b111) as u8;
        let level = low & ICR_LEVEL_ASSERT != 0;
        let action = LapicAction::Ipi {
            dest,
            vector: low as u8,
            mode,
            shorthand: ((low >> 18) & 0b11) as u8,
            level,
            logical: low & ICR_LOGICAL != 0,
        };
        let to_others = match mode {
            MODE_FIXED | MODE_LOWEST_PRIORITY => self.send_fixed(low, dest),
            MODE_NMI => self.send_nmi(low, dest),
            // INIT level de-assert is not supported since the Pentium 4 (SDM 11.6.1).
            MODE_INIT => level || low & ICR_TRIGGER_LEVEL == 0,
            MODE_SMI | MODE_STARTUP => true,
            _ => false,
        };
        if to_others {
            action
        } else {
            LapicAction::None
        }
    }

    /// Delivers a fixed or lowest-priority IPI to this APIC if it is a target; returns whether
    /// other CPUs may be targets too. Lowest priority stops at this APIC when it is a target.
    fn send_fixed(&mut self, icr_low: u32, dest: u32) -> bool {
        let vector = icr_low as u8;
        if vector < 16 {
            self.signal_error(ESR_SEND_ILLEGAL_VECTOR);
            return false;
        }
        let (to_self, to_others) = self.ipi_targets(icr_low, dest);
        if !to_self {
            return to_others;
        }
        self.accept_interrupt(vector, icr_low & ICR_TRIGGER_LEVEL != 0);
        to_others && (icr_low >> 8) & 0b111 != u32::from(MODE_LOWEST_PRIORITY)
    }

    /// Delivers an NMI IPI to this APIC if it is a target; returns whether other CPUs may be
    /// targets too. The self shorthand is undefined for NMIs (SDM Table 11-3); like KVM, the
    /// sender takes it.
    fn send_nmi(&mut self, icr_low: u32, dest: u32) -> bool {
        let (to_self, to_others) = self.ipi_targets(icr_low, dest);
        if to_self {
            self.accept_nmi();
        }
        to_others
    }

    /// Whether the IPI in `icr_low` for `dest` reaches this APIC, and whether it may reach
    /// other ones (by its shorthand, or its destination when it has none).
    fn ipi_targets(&self, icr_low: u32, dest: u32) -> (bool, bool) {
        let logical = icr_low & ICR_LOGICAL != 0;
        match ((icr_low >> 18) & 0b11) as u8 {
            SHORTHAND_NONE => (
                self.matches_destination(dest, logical),
                logical || dest != self.id,
            ),
            SHORTHAND_SELF => (true, false),
            SHORTHAND_ALL_INCLUDING_SELF => (true, true),
            _ => (false, true),
        }
    }

    // ---- Register file ----

    /// Registers readable the same way in both modes.
    fn read_common(&self, offset: u32, now: u64) -> Option<u32> {
        let value = match offset {
            reg::VERSION => VERSION_VALUE,
            reg::TPR => self.tpr,
            reg::PPR => self.ppr(),
            reg::LDR => self.ldr,
            reg::SVR => self.svr,
            reg::ISR..=reg::ISR_LAST => self.isr.word_at(offset - reg::ISR),
            reg::TMR..=reg::TMR_LAST => self.tmr.word_at(offset - reg::TMR),
            reg::IRR..=reg::IRR_LAST => self.irr.word_at(offset - reg::IRR),
            reg::ESR => self.esr,
            reg::TIMER_INITIAL => self.initial_count,
            reg::TIMER_CURRENT => self.current_count(now),
            reg::TIMER_DIVIDE => self.divide_config,
            _ => self.lvt[lvt_index(offset)?],
        };
        Some(value)
    }

    /// Writes the registers common to both modes; values are masked to their writable bits.
    fn write_common(&mut self, offset: u32, value: u32, now: u64) -> LapicAction {
        match offset {
            reg::TPR => self.tpr = value & 0xFF,
            reg::EOI => return self.eoi(),
            reg::SVR => self.write_svr(value),
            // A write latches the errors seen since the previous write (SDM 11.5.3).
            reg::ESR => self.esr = core::mem::take(&mut self.esr_pending),
            reg::ICR_LOW => {
                self.icr_low = value & ICR_LOW_WRITABLE;
                return self.send_ipi();
            }
            reg::LVT_TIMER => self.write_lvt_timer(value),
            reg::TIMER_INITIAL => self.write_initial_count(value, now),
            reg::TIMER_DIVIDE => self.write_divide(value, now),
            _ => {
                if let Some(index) = lvt_index(offset) {
                    self.write_lvt(index, value);
                }
            }
        }
        LapicAction::None
    }

    /// While software-disabled every LVT entry stays masked (SDM 11.4.7.2).
    fn write_lvt(&mut self, index: usize, value: u32) {
        let mut value = value & LVT_WRITABLE[index];
        if !self.software_enabled() {
            value |= LVT_MASKED;
        }
        self.lvt[index] = value;
    }

    fn write_svr(&mut self, value: u32) {
        self.svr = value & SVR_WRITABLE;
        if !self.software_enabled() {
            for lvt in &mut self.lvt {
                *lvt |= LVT_MASKED;
            }
        }
    }

    /// Reads a register of the xAPIC page; unknown offsets and a disabled page read 0.
    pub fn mmio_read(&mut self, offset: u32, now: u64) -> u32 {
        if !self.xapic_mmio_enabled() || offset & 0xF != 0 {
            return 0;
        }
        match offset {
            reg::ID => self.id << 24,
            reg::APR => 0,
            reg::DFR => self.dfr,
            reg::ICR_LOW => self.icr_low,
            reg::ICR_HIGH => self.icr_high,
            _ => self.read_common(offset, now).unwrap_or(0),
        }
    }

    /// Writes a register of the xAPIC page; read-only and unknown offsets ignore writes.
    pub fn mmio_write(&mut self, offset: u32, value: u32, now: u64) -> LapicAction {
        if !self.xapic_mmio_enabled() || offset & 0xF != 0 {
            return LapicAction::None;
        }
        match offset {
            reg::LDR => self.ldr = value & LDR_XAPIC_WRITABLE,
            reg::DFR => self.dfr = value | DFR_READS_AS_ONES,
            reg::ICR_HIGH => self.icr_high = value & ICR_HIGH_XAPIC_WRITABLE,
            _ => return self.write_common(offset, value, now),
        }
        LapicAction::None
    }

    /// RDMSR; `None` means #GP.
    pub fn msr_read(&mut self, msr: u32, now: u64) -> Option<u64> {
        match msr {
            MSR_APIC_BASE => Some(self.apic_base),
            // Reads 0 outside TSC-deadline mode (SDM 11.5.4.1).
            MSR_TSC_DEADLINE => Some(if self.timer_mode() == TimerMode::TscDeadline {
                self.tsc_deadline
            } else {
                0
            }),
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST if self.is_x2apic() => {
                self.x2apic_read(x2apic_offset(msr), now)
            }
            _ => None,
        }
    }

    /// WRMSR; `Err` means #GP, the only way a WRMSR fails.
    #[allow(clippy::result_unit_err)]
    pub fn msr_write(&mut self, msr: u32, value: u64, now: u64) -> Result<LapicAction, ()> {
        match msr {
            MSR_APIC_BASE => self.write_apic_base(value).map(|()| LapicAction::None),
            MSR_TSC_DEADLINE => {
                // Ignored outside TSC-deadline mode; 0 disarms (SDM 11.5.4.1).
                if self.timer_mode() == TimerMode::TscDeadline {
                    self.tsc_deadline = value;
                }
                Ok(LapicAction::None)
            }
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST if self.is_x2apic() => {
                self.x2apic_write(x2apic_offset(msr), value, now)
            }
            _ => Err(()),
        }
    }

    /// x2APIC reads: write-only and absent registers #GP (SDM 11.12.1.2, Table 11-6).
    fn x2apic_read(&self, offset: u32, now: u64) -> Option<u64> {
        match offset {
            reg::ID => Some(u64::from(self.id)),
            reg::ICR_LOW => Some(u64::from(self.icr_high) << 32 | u64::from(self.icr_low)),
            _ => self.read_common(offset, now).map(u64::from),
        }
    }

    /// x2APIC writes: read-only registers and set reserved bits #GP (SDM 11.12.1.2-3).
    fn x2apic_write(&mut self, offset: u32, value: u64, now: u64) -> Result<LapicAction, ()> {
        if offset == reg::ICR_LOW {
            if value & !(0xFFFF_FFFF_0000_0000 | u64::from(ICR_LOW_WRITABLE)) != 0 {
                return Err(());
            }
            self.icr_high = (value >> 32) as u32;
            self.icr_low = value as u32;
            return Ok(self.send_ipi());
        }
        let writable = x2apic_writable_bits(offset).ok_or(())?;
        if value & !u64::from(writable) != 0 {
            return Err(());
        }
        let value = value as u32;
        if offset == reg::SELF_IPI {
            // An edge-triggered fixed IPI to self (SDM 11.12.11).
            self.accept_interrupt(value as u8, false);
            return Ok(LapicAction::None);
        }
        Ok(self.write_common(offset, value, now))
    }

    /// IA32_APIC_BASE writes and the mode transitions of SDM 11.12.5 (Figure 11-27).
    fn write_apic_base(&mut self, value: u64) -> Result<(), ()> {
        if value & BASE_RESERVED != 0 {
            return Err(());
        }
        let old = Mode::of(self.apic_base);
        let new = Mode::of(value);
        match (old, new) {
            (_, Mode::Invalid) | (Mode::X2Apic, Mode::XApic) | (Mode::Disabled, Mode::X2Apic) => {
                return Err(())
            }
            _ => {}
        }
        // The BSP flag is set by hardware and not changed by software.
        let base = (value & !BASE_BSP) | (self.apic_base & BASE_BSP);
        if new == Mode::Disabled && old != Mode::Disabled {
            // Disabling returns the APIC to its power-up state (SDM 11.4.3).
            *self = Self::new(self.id, self.tsc_hz);
        } else if old == Mode::XApic && new == Mode::X2Apic {
            self.ldr = x2apic_logical_id(self.id);
        }
        self.apic_base = base;
        Ok(())
    }
}

/// The LVT entry stored for a register offset.
fn lvt_index(offset: u32) -> Option<usize> {
    Some(match offset {
        reg::LVT_CMCI => LVT_CMCI,
        reg::LVT_TIMER => LVT_TIMER,
        reg::LVT_THERMAL => LVT_THERMAL,
        reg::LVT_PERF => LVT_PERF,
        reg::LVT_LINT0 => LVT_LINT0,
        reg::LVT_LINT1 => LVT_LINT1,
        reg::LVT_ERROR => LVT_ERROR,
        _ => return None,
    })
}

fn x2apic_offset(msr: u32) -> u32 {
    (msr - MSR_X2APIC_FIRST) << 4
}

/// Bits a WRMSR may set in a 32-bit x2APIC register; `None` for read-only or absent ones.
/// Writing the read-only LVT status bits is tolerated and has no effect.
fn x2apic_writable_bits(offset: u32) -> Option<u32> {
    Some(match offset {
        reg::TPR | reg::SELF_IPI => 0xFF,
        // EOI and ESR accept only 0 (SDM Table 11-6).
        reg::EOI | reg::ESR => 0,
        reg::SVR => SVR_WRITABLE,
        reg::TIMER_INITIAL => u32::MAX,
        reg::TIMER_DIVIDE => DIVIDE_WRITABLE,
        _ => {
            let index = lvt_index(offset)?;
            LVT_WRITABLE[index] | LVT_READ_ONLY[index]
        }
    })
}

/// Logical x2APIC ID: cluster in bits 31:16, one bit of 16 in 15:0 (SDM 11.12.10.2).
fn x2apic_logical_id(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xF))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSC_HZ: u64 = 2_000_000_000;

    /// An APIC in xAPIC mode, software-enabled with spurious vector 0xFF.
    fn enabled(id: u32) -> Lapic {
        let mut apic = Lapic::new(id, TSC_HZ);
        apic.mmio_write(reg::SVR, SVR_ENABLE | 0xFF, 0);
        apic
    }

    fn x2apic(id: u32) -> Lapic {
        let mut apic = enabled(id);
        let base = apic.msr_read(MSR_APIC_BASE, 0).unwrap();
        apic.msr_write(MSR_APIC_BASE, base | BASE_EXTD, 0).unwrap();
        apic
    }

    fn deliver(apic: &mut Lapic, vector: u8) {
        apic.accept_interrupt(vector, false);
        assert_eq!(apic.pending_vector(), Some(vector));
        apic.acknowledge(vector);
    }

    #[test]
    fn power_up_state() {
        let mut bsp = Lapic::new(0, TSC_HZ);
        assert_eq!(bsp.msr_read(MSR_APIC_BASE, 0), Some(0xFEE0_0900));
        assert_eq!(bsp.base_address(), 0xFEE0_0000);
        assert!(bsp.xapic_mmio_enabled() && !bsp.is_x2apic());
        assert_eq!(bsp.mmio_read(reg::VERSION, 0), 0x50014);
        assert_eq!(bsp.mmio_read(reg::SVR, 0), 0xFF);
        assert_eq!(bsp.mmio_read(reg::DFR, 0), u32::MAX);
        assert_eq!(bsp.mmio_read(reg::LVT_LINT0, 0), LVT_MASKED);
        let mut ap = Lapic::new(3, TSC_HZ);
        assert_eq!(ap.msr_read(MSR_APIC_BASE, 0), Some(0xFEE0_0800));
        assert_eq!(ap.mmio_read(reg::ID, 0), 3 << 24);
        // Unknown and misaligned offsets read 0.
        assert_eq!(ap.mmio_read(0x40, 0), 0);
        assert_eq!(ap.mmio_read(reg::VERSION + 4, 0), 0);
        assert_eq!(ap.mmio_read(0xFF0, 0), 0);
    }

    #[test]
    fn ppr_follows_tpr_and_isr() {
        let mut apic = enabled(0);
        apic.mmio_write(reg::TPR, 0x35, 0);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0x35);
        deliver(&mut apic, 0x61);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0x60);
        // Same class as the ISR: the TPR wins, with its sub-class.
        apic.mmio_write(reg::TPR, 0x6A, 0);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0x6A);
        apic.mmio_write(reg::EOI, 0, 0);
        apic.mmio_write(reg::TPR, 0, 0);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0);
        assert_eq!(apic.mmio_read(reg::APR, 0), 0);
    }

    #[test]
    fn pending_vector_respects_priority_classes() {
        let mut apic = enabled(0);
        apic.mmio_write(reg::TPR, 0x40, 0);
        apic.accept_interrupt(0x45, false);
        assert_eq!(apic.pending_vector(), None, "same class as TPR is blocked");
        apic.accept_interrupt(0x50, false);
        assert_eq!(apic.pending_vector(), Some(0x50));
        apic.acknowledge(0x50);
        assert_eq!(apic.mmio_read(reg::ISR + 0x20, 0), 1 << 16);
        assert_eq!(apic.mmio_read(reg::IRR + 0x20, 0), 1 << 5);
        apic.accept_interrupt(0x5F, false);
        assert_eq!(apic.pending_vector(), None, "same class as ISR is blocked");
        apic.accept_interrupt(0x80, false);
        assert_eq!(apic.pending_vector(), Some(0x80), "higher class nests");
        apic.acknowledge(0x80);
        assert_eq!(apic.pending_vector(), None);
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(apic.pending_vector(), None, "0x50 still in service");
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(apic.pending_vector(), Some(0x5F));
        apic.mmio_write(reg::TPR, 0x60, 0);
        assert_eq!(apic.pending_vector(), None);
        // Acknowledging a vector not in the IRR changes nothing.
        apic.acknowledge(0x90);
        assert_eq!(apic.mmio_read(reg::ISR + 0x40, 0), 0);
    }

    #[test]
    fn eoi_reports_level_triggered_vectors_only() {
        let mut apic = enabled(0);
        apic.accept_interrupt(0x30, true);
        apic.accept_interrupt(0x40, false);
        assert_eq!(apic.mmio_read(reg::TMR + 0x10, 0), 1 << 16);
        apic.acknowledge(0x40);
        apic.acknowledge(0x30);
        assert_eq!(apic.mmio_write(reg::EOI, 0, 0), LapicAction::None);
        assert_eq!(apic.mmio_write(reg::EOI, 0, 0), LapicAction::Eoi(0x30));
        assert_eq!(apic.mmio_write(reg::EOI, 0, 0), LapicAction::None);
        // Re-accepting as edge clears the TMR bit.
        apic.accept_interrupt(0x30, false);
        assert_eq!(apic.mmio_read(reg::TMR + 0x10, 0), 0);
    }

    #[test]
    fn an_eoi_may_skip_the_exit_only_for_a_lone_edge_triggered_vector() {
        let mut apic = enabled(0);
        assert!(!apic.eoi_may_skip_exit(), "nothing in service");
        deliver(&mut apic, 0x40);
        assert!(apic.eoi_may_skip_exit());
        apic.accept_interrupt(0x30, false);
        assert!(
            !apic.eoi_may_skip_exit(),
            "the EOI would unblock 0x30: it must exit"
        );
        assert_eq!(apic.eoi(), LapicAction::None);
        apic.acknowledge(0x30);
        assert!(apic.eoi_may_skip_exit());
        apic.eoi();
        apic.accept_interrupt(0x50, true);
        apic.acknowledge(0x50);
        assert!(
            !apic.eoi_may_skip_exit(),
            "a level-triggered EOI goes to the I/O APIC"
        );
        assert_eq!(apic.eoi(), LapicAction::Eoi(0x50));
    }

    #[test]
    fn illegal_vectors_set_esr_and_raise_error_interrupt() {
        let mut apic = enabled(0);
        apic.mmio_write(reg::LVT_ERROR, 0xFE, 0);
        apic.accept_interrupt(0x0F, false);
        assert_eq!(apic.pending_vector(), Some(0xFE));
        assert_eq!(
            apic.mmio_read(reg::ESR, 0),
            0,
            "ESR reads the last latched value"
        );
        apic.mmio_write(reg::ESR, 0, 0);
        assert_eq!(apic.mmio_read(reg::ESR, 0), ESR_RECEIVE_ILLEGAL_VECTOR);
        apic.mmio_write(reg::ESR, 0, 0);
        assert_eq!(
            apic.mmio_read(reg::ESR, 0),
            0,
            "back-to-back writes clear it"
        );
        // Sending an illegal vector is a send error and delivers nothing.
        apic.acknowledge(0xFE);
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(
            apic.mmio_write(reg::ICR_LOW, 0x4_0005, 0),
            LapicAction::None
        );
        apic.mmio_write(reg::ESR, 0, 0);
        assert_eq!(apic.mmio_read(reg::ESR, 0), ESR_SEND_ILLEGAL_VECTOR);
        assert_eq!(apic.mmio_read(reg::IRR, 0), 0);
    }

    #[test]
    fn software_disable_masks_lvts_and_drops_fixed_interrupts() {
        let mut apic = enabled(0);
        apic.accept_interrupt(0x40, false);
        apic.mmio_write(reg::LVT_LINT0, 0x700, 0);
        assert!(apic.lint0_extint());
        apic.mmio_write(reg::LVT_LINT0, 0x10700, 0);
        assert!(!apic.lint0_extint());
        apic.mmio_write(reg::LVT_LINT0, 0x700, 0);
        apic.mmio_write(reg::SVR, 0xFF, 0);
        assert_eq!(apic.mmio_read(reg::LVT_LINT0, 0), 0x10700);
        assert!(
            apic.lint0_extint(),
            "software-disabled passes the 8259 through"
        );
        apic.mmio_write(reg::LVT_TIMER, 0x20, 0);
        assert_eq!(apic.mmio_read(reg::LVT_TIMER, 0), 0x10020, "mask stays set");
        apic.accept_interrupt(0x50, false);
        assert_eq!(apic.pending_vector(), Some(0x40), "held IRR still delivers");
        assert_eq!(apic.mmio_read(reg::IRR + 0x20, 0), 1, "0x50 dropped");
    }

    #[test]
    fn hardware_disable_resets_and_passes_extint() {
        let mut apic = enabled(2);
        apic.mmio_write(reg::TPR, 0x20, 0);
        apic.accept_interrupt(0x40, false);
        apic.msr_write(MSR_APIC_BASE, 0xFEE0_0000, 0).unwrap();
        assert!(apic.lint0_extint());
        assert!(!apic.xapic_mmio_enabled());
        assert_eq!(apic.pending_vector(), None);
        assert_eq!(apic.mmio_read(reg::TPR, 0), 0, "MMIO is off");
        apic.msr_write(MSR_APIC_BASE, 0xFEE0_0800, 0).unwrap();
        assert_eq!(apic.mmio_read(reg::TPR, 0), 0);
        assert_eq!(apic.mmio_read(reg::SVR, 0), 0xFF);
        assert_eq!(apic.mmio_read(reg::ID, 0), 2 << 24);
        assert_eq!(apic.pending_vector(), None);
    }

    #[test]
    fn relocating_the_base_keeps_bsp() {
        let mut apic = Lapic::new(0, TSC_HZ);
        apic.msr_write(MSR_APIC_BASE, 0xFED0_0800, 0).unwrap();
        assert_eq!(apic.base_address(), 0xFED0_0000);
        assert_eq!(apic.msr_read(MSR_APIC_BASE, 0), Some(0xFED0_0900));
    }

    #[test]
    fn divide_configuration_encodings() {
        let mut apic = Lapic::new(0, TSC_HZ);
        for (code, divisor) in [
            (0b0000, 2),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ] {
            apic.mmio_write(reg::TIMER_DIVIDE, code | 0xF4, 0);
            assert_eq!(apic.mmio_read(reg::TIMER_DIVIDE, 0), code);
            assert_eq!(apic.divisor(), divisor, "code {code:#b}");
        }
    }

    #[test]
    fn one_shot_timer_expires_exactly() {
        let mut apic = enabled(0);
        apic.mmio_write(reg::LVT_TIMER, 0xEC, 0);
        apic.mmio_write(reg::TIMER_DIVIDE, 0b0011, 0); // divide by 16
        apic.mmio_write(reg::TIMER_INITIAL, 1000, 10_000);
        // 1000 ticks * 16 ns = 16 us = 32_000 TSC ticks at 2 GHz.
        assert_eq!(apic.next_deadline(), Some(42_000));
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 10_000), 1000);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 26_000), 500);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 41_999), 0);
        apic.poll_timer(41_999);
        assert_eq!(apic.pending_vector(), None);
        apic.poll_timer(42_000);
        assert_eq!(apic.pending_vector(), Some(0xEC));
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 50_000), 0);
        assert_eq!(apic.mmio_read(reg::TIMER_INITIAL, 50_000), 1000);
        apic.acknowledge(0xEC);
        apic.poll_timer(100_000);
        assert_eq!(apic.pending_vector(), None, "fires once");
    }

    #[test]
    fn periodic_timer_skips_missed_periods_without_drift() {
        let mut apic = enabled(0);
        apic.mmio_write(reg::LVT_TIMER, 0x2_00EC, 0);
        apic.mmio_write(reg::TIMER_DIVIDE, 0b1011, 0); // divide by 1
        apic.mmio_write(reg::TIMER_INITIAL, 500, 0); // 500 ns = 1000 TSC ticks
        assert_eq!(apic.next_deadline(), Some(1000));
        apic.poll_timer(1003);
        assert_eq!(
            apic.next_deadline(),
            Some(2000),
            "re-armed from the deadline"
        );
        apic.acknowledge(0xEC);
        apic.mmio_write(reg::EOI, 0, 1003);
        // 3.5 periods late: one interrupt, next deadline back on the grid.
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 5500), 250);
        apic.poll_timer(5500);
        assert_eq!(apic.pending_vector(), Some(0xEC));
        apic.acknowledge(0xEC);
        apic.mmio_write(reg::EOI, 0, 5500);
        assert_eq!(apic.pending_vector(), None);
        assert_eq!(apic.next_deadline(), Some(6000));
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 5750), 125);
        // Initial count 0 stops it.
        apic.mmio_write(reg::TIMER_INITIAL, 0, 5800);
        assert_eq!(apic.next_deadline(), None);
        apic.poll_timer(10_000);
        assert_eq!(apic.pending_vector(), None);
    }

    #[test]
    fn divide_change_rescales_the_remaining_count() {
        let mut apic = enabled(0);
        apic.mmio_write(reg::LVT_TIMER, 0x2_0040, 0);
        apic.mmio_write(reg::TIMER_INITIAL, 100, 0); // divide by 2: 200 ns = 400 ticks
        assert_eq!(apic.next_deadline(), Some(400));
        apic.mmio_write(reg::TIMER_DIVIDE, 0b0001, 200); // 50 left, now at 8 ticks each
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 200), 50);
        assert_eq!(apic.next_deadline(), Some(600));
        apic.poll_timer(600);
        assert_eq!(apic.next_deadline(), Some(1400), "reloads at the new rate");
    }

    #[test]
    fn masked_timer_counts_silently() {
        let mut apic = enabled(0);
        apic.mmio_write(reg::LVT_TIMER, 0x1_00EC, 0);
        apic.mmio_write(reg::TIMER_INITIAL, 10, 0);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 20), 5);
        apic.poll_timer(40);
        assert_eq!(apic.pending_vector(), None);
        assert_eq!(apic.next_deadline(), None);
    }

    #[test]
    fn tsc_deadline_mode() {
        let mut apic = enabled(0);
        apic.msr_write(MSR_TSC_DEADLINE, 5000, 0).unwrap();
        assert_eq!(
            apic.msr_read(MSR_TSC_DEADLINE, 0),
            Some(0),
            "ignored outside the mode"
        );
        apic.mmio_write(reg::TIMER_INITIAL, 100, 0);
        apic.mmio_write(reg::LVT_TIMER, 0x4_00D0, 10);
        assert_eq!(
            apic.next_deadline(),
            None,
            "mode switch disarmed the count-down"
        );
        assert_eq!(apic.mmio_read(reg::TIMER_INITIAL, 10), 0);
        apic.mmio_write(reg::TIMER_INITIAL, 100, 10);
        assert_eq!(
            apic.mmio_read(reg::TIMER_INITIAL, 10),
            0,
            "ignored in deadline mode"
        );
        apic.msr_write(MSR_TSC_DEADLINE, 5000, 10).unwrap();
        assert_eq!(apic.next_deadline(), Some(5000));
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 10), 0);
        apic.poll_timer(4999);
        assert_eq!(apic.pending_vector(), None);
        apic.poll_timer(5000);
        assert_eq!(apic.pending_vector(), Some(0xD0));
        assert_eq!(
            apic.msr_read(MSR_TSC_DEADLINE, 5000),
            Some(0),
            "cleared on expiry"
        );
        assert_eq!(apic.next_deadline(), None);
        // Writing 0 disarms; leaving the mode clears the deadline.
        apic.msr_write(MSR_TSC_DEADLINE, 9000, 5000).unwrap();
        apic.msr_write(MSR_TSC_DEADLINE, 0, 5000).unwrap();
        assert_eq!(apic.next_deadline(), None);
        apic.msr_write(MSR_TSC_DEADLINE, 9000, 5000).unwrap();
        apic.mmio_write(reg::LVT_TIMER, 0xD0, 5000);
        apic.mmio_write(reg::LVT_TIMER, 0x4_00D0, 5000);
        assert_eq!(apic.next_deadline(), None);
    }

    #[test]
    fn x2apic_transitions() {
        let mut apic = enabled(0x25);
        let base = apic.msr_read(MSR_APIC_BASE, 0).unwrap();
        assert_eq!(apic.msr_write(MSR_APIC_BASE, base | 1 << 9, 0), Err(()));
        assert_eq!(apic.msr_write(MSR_APIC_BASE, base | 1 << 60, 0), Err(()));
        apic.mmio_write(reg::TPR, 0x30, 0);
        apic.msr_write(MSR_APIC_BASE, base | BASE_EXTD, 0).unwrap();
        assert!(apic.is_x2apic() && !apic.xapic_mmio_enabled());
        assert_eq!(apic.msr_read(0x808, 0), Some(0x30), "state preserved");
        assert_eq!(apic.msr_read(0x802, 0), Some(0x25));
        assert_eq!(apic.msr_read(0x80D, 0), Some(0x2_0020));
        assert_eq!(
            apic.msr_write(MSR_APIC_BASE, base, 0),
            Err(()),
            "x2APIC -> xAPIC"
        );
        assert_eq!(
            apic.msr_write(MSR_APIC_BASE, BASE_EXTD | 0xFEE0_0000, 0),
            Err(()),
            "EXTD without EN is invalid"
        );
        apic.msr_write(MSR_APIC_BASE, 0xFEE0_0000, 0).unwrap();
        assert_eq!(apic.msr_read(0x808, 0), None, "disabled: no x2APIC MSRs");
        assert_eq!(
            apic.msr_write(MSR_APIC_BASE, 0xFEE0_0000 | BASE_ENABLE | BASE_EXTD, 0),
            Err(()),
            "disabled -> x2APIC"
        );
        apic.msr_write(MSR_APIC_BASE, base, 0).unwrap();
        assert!(apic.xapic_mmio_enabled());
        assert_eq!(apic.mmio_read(reg::TPR, 0), 0, "reset by the disable");
    }

    #[test]
    fn x2apic_msrs_fault_outside_x2apic_mode() {
        let mut apic = enabled(0);
        assert_eq!(apic.msr_read(0x808, 0), None);
        assert_eq!(apic.msr_write(0x808, 0, 0), Err(()));
        assert!(Lapic::claims_msr(0x1B) && Lapic::claims_msr(0x6E0));
        assert!(Lapic::claims_msr(0x800) && Lapic::claims_msr(0x8FF));
        assert!(!Lapic::claims_msr(0x900) && !Lapic::claims_msr(0x7FF));
        assert_eq!(apic.msr_read(0x10, 0), None);
    }

    #[test]
    fn x2apic_access_rules() {
        let mut apic = x2apic(1);
        // Read-only registers.
        for msr in [0x802, 0x803, 0x80A, 0x80D, 0x810, 0x818, 0x820, 0x839] {
            assert_eq!(apic.msr_write(msr, 0, 0), Err(()), "{msr:#x}");
        }
        // Write-only and absent registers.
        for msr in [0x80B, 0x83F, 0x809, 0x80C, 0x80E, 0x831, 0x840] {
            assert_eq!(apic.msr_read(msr, 0), None, "{msr:#x}");
        }
        assert_eq!(apic.msr_write(0x80E, 0, 0), Err(()), "no DFR");
        assert_eq!(apic.msr_write(0x80B, 1, 0), Err(()), "non-zero EOI");
        assert_eq!(apic.msr_write(0x80B, 0, 0), Ok(LapicAction::None));
        assert_eq!(apic.msr_write(0x828, 1, 0), Err(()), "non-zero ESR");
        assert_eq!(
            apic.msr_write(0x808, 0x100, 0),
            Err(()),
            "TPR reserved bits"
        );
        assert_eq!(apic.msr_write(0x808, 1 << 32, 0), Err(()), "upper half");
        assert_eq!(
            apic.msr_write(0x80F, 1 << 12, 0),
            Err(()),
            "no directed EOI"
        );
        assert_eq!(apic.msr_write(0x832, 1 << 19, 0), Err(()), "LVT reserved");
        assert_eq!(apic.msr_write(0x83E, 0x4, 0), Err(()), "divide reserved");
        assert_eq!(apic.msr_write(0x830, 1 << 12, 0), Err(()), "ICR bit 12");
        assert_eq!(
            apic.msr_write(0x83F, 0x100, 0),
            Err(()),
            "self-IPI reserved"
        );
        apic.msr_write(0x832, 0x3_00EC, 0).unwrap();
        assert_eq!(apic.msr_read(0x832, 0), Some(0x3_00EC));
        apic.msr_write(0x838, 0x1234, 0).unwrap();
        assert_eq!(apic.msr_read(0x838, 0), Some(0x1234));
    }

    #[test]
    fn x2apic_self_ipi_and_icr() {
        let mut apic = x2apic(7);
        assert_eq!(apic.msr_write(0x83F, 0x41, 0), Ok(LapicAction::None));
        assert_eq!(apic.pending_vector(), Some(0x41));
        let icr = 7u64 << 32 | 0x51;
        assert_eq!(apic.msr_write(0x830, icr, 0), Ok(LapicAction::None));
        assert_eq!(apic.msr_read(0x830, 0), Some(icr));
        assert_eq!(apic.msr_read(0x822, 0), Some(1 << 1 | 1 << 17));
        let to_other = 0x1_0000u64 << 32 | 0x61;
        assert_eq!(
            apic.msr_write(0x830, to_other, 0),
            Ok(LapicAction::Ipi {
                dest: 0x1_0000,
                vector: 0x61,
                mode: 0,
                shorthand: 0,
                level: false,
                logical: false,
            })
        );
        assert_eq!(apic.msr_read(0x823, 0), Some(0), "not delivered locally");
    }

    #[test]
    fn xapic_ipis() {
        let mut apic = enabled(1);
        // Shorthand self.
        assert_eq!(
            apic.mmio_write(reg::ICR_LOW, 0x4_0031, 0),
            LapicAction::None
        );
        assert_eq!(apic.pending_vector(), Some(0x31));
        // Fixed to own ID.
        apic.mmio_write(reg::ICR_HIGH, 0x0100_00FF, 0);
        assert_eq!(apic.mmio_read(reg::ICR_HIGH, 0), 0x0100_0000);
        assert_eq!(apic.mmio_write(reg::ICR_LOW, 0x42, 0), LapicAction::None);
        assert_eq!(apic.pending_vector(), Some(0x42));
        // All including self: delivered here and handed on.
        assert_eq!(
            apic.mmio_write(reg::ICR_LOW, 0x8_0043, 0),
            LapicAction::Ipi {
                dest: 1,
                vector: 0x43,
                mode: 0,
                shorthand: 2,
                level: false,
                logical: false,
            }
        );
        assert_eq!(apic.pending_vector(), Some(0x43));
        // INIT assert, INIT de-assert (dropped), SIPI to CPU 2.
        apic.mmio_write(reg::ICR_HIGH, 0x0200_0000, 0);
        assert_eq!(
            apic.mmio_write(reg::ICR_LOW, 0xC500, 0),
            LapicAction::Ipi {
                dest: 2,
                vector: 0,
                mode: 5,
                shorthand: 0,
                level: true,
                logical: false,
            }
        );
        assert_eq!(apic.mmio_write(reg::ICR_LOW, 0x8500, 0), LapicAction::None);
        assert_eq!(
            apic.mmio_write(reg::ICR_LOW, 0x0609, 0),
            LapicAction::Ipi {
                dest: 2,
                vector: 9,
                mode: 6,
                shorthand: 0,
                level: false,
                logical: false,
            }
        );
        assert_eq!(
            apic.mmio_read(reg::ICR_LOW, 0),
            0x0609,
            "delivery status idle"
        );
        // All excluding self never lands here.
        assert!(matches!(
            apic.mmio_write(reg::ICR_LOW, 0xC_0050, 0),
            LapicAction::Ipi { shorthand: 3, .. }
        ));
        assert_eq!(apic.mmio_read(reg::IRR + 0x20, 0) & 1 << 16, 0);
    }

    #[test]
    fn nmi_ipis_reach_this_apic_when_it_is_a_target() {
        // Software-disabled: NMIs are still accepted (SDM 11.4.7.2).
        let mut apic = Lapic::new(1, 1_000_000_000);
        // Self shorthand.
        assert_eq!(
            apic.mmio_write(reg::ICR_LOW, 0x4_0400, 0),
            LapicAction::None
        );
        assert!(apic.has_nmi());
        assert!(apic.take_nmi());
        assert!(!apic.has_nmi() && !apic.take_nmi(), "taken once");
        // Physical destination: its own ID.
        apic.mmio_write(reg::ICR_HIGH, 0x0100_0000, 0);
        assert_eq!(apic.mmio_write(reg::ICR_LOW, 0x0400, 0), LapicAction::None);
        assert!(apic.take_nmi());
        // Another CPU: handed on, not taken here.
        apic.mmio_write(reg::ICR_HIGH, 0x0200_0000, 0);
        assert!(matches!(
            apic.mmio_write(reg::ICR_LOW, 0x0400, 0),
            LapicAction::Ipi {
                dest: 2,
                mode: 4,
                ..
            }
        ));
        assert!(!apic.has_nmi());
        // All excluding self.
        assert!(matches!(
            apic.mmio_write(reg::ICR_LOW, 0xC_0400, 0),
            LapicAction::Ipi { shorthand: 3, .. }
        ));
        assert!(!apic.has_nmi());
        // All including self: taken here and handed on.
        assert!(matches!(
            apic.mmio_write(reg::ICR_LOW, 0x8_0400, 0),
            LapicAction::Ipi { shorthand: 2, .. }
        ));
        assert!(apic.take_nmi());
        // Broadcast destination.
        apic.mmio_write(reg::ICR_HIGH, 0xFF00_0000, 0);
        assert!(matches!(
            apic.mmio_write(reg::ICR_LOW, 0x0400, 0),
            LapicAction::Ipi { mode: 4, .. }
        ));
        assert!(apic.take_nmi());
        assert_eq!(apic.pending_vector(), None, "an NMI sets no IRR bit");
    }

    #[test]
    fn x2apic_nmi_ipis_and_a_hardware_disabled_apic() {
        let mut apic = x2apic(7);
        assert_eq!(
            apic.msr_write(0x830, 7u64 << 32 | 0x400, 0),
            Ok(LapicAction::None)
        );
        assert!(apic.take_nmi());
        assert!(apic.msr_write(0x830, 8u64 << 32 | 0x400, 0).is_ok());
        assert!(!apic.has_nmi(), "APIC 8 is another CPU");
        apic.msr_write(MSR_APIC_BASE, 0, 0).unwrap();
        apic.accept_nmi();
        assert!(!apic.has_nmi(), "a hardware-disabled APIC takes nothing");
    }

    #[test]
    fn lowest_priority_stops_at_a_matching_sender() {
        let mut apic = enabled(1);
        apic.mmio_write(reg::LDR, 0x0200_0000, 0);
        apic.mmio_write(reg::ICR_HIGH, 0x0600_0000, 0);
        assert_eq!(apic.mmio_write(reg::ICR_LOW, 0x0961, 0), LapicAction::None);
        assert_eq!(apic.pending_vector(), Some(0x61));
        // Fixed logical to the same mask is also handed on.
        assert!(matches!(
            apic.mmio_write(reg::ICR_LOW, 0x0862, 0),
            LapicAction::Ipi {
                logical: true,
                dest: 6,
                ..
            }
        ));
        assert_eq!(apic.pending_vector(), Some(0x62));
    }

    #[test]
    fn logical_destinations() {
        let mut apic = enabled(0x13);
        apic.mmio_write(reg::LDR, 0x24FF_FFFF, 0);
        assert_eq!(apic.mmio_read(reg::LDR, 0), 0x2400_0000);
        // Flat model: any common bit.
        assert!(apic.matches_destination(0x04, true));
        assert!(!apic.matches_destination(0x03, true));
        assert!(apic.matches_destination(0xFF, true));
        assert!(apic.matches_destination(0x13, false));
        assert!(!apic.matches_destination(0x14, false));
        // Cluster model: cluster 2, member bit 2.
        apic.mmio_write(reg::DFR, 0x0FFF_FFFF, 0);
        assert_eq!(apic.mmio_read(reg::DFR, 0), 0x0FFF_FFFF);
        assert!(apic.matches_destination(0x26, true));
        assert!(!apic.matches_destination(0x16, true));
        assert!(!apic.matches_destination(0x21, true));
        // x2APIC: cluster 1, bit 3.
        let apic = x2apic(0x13);
        assert!(apic.matches_destination(0x1_0008, true));
        assert!(!apic.matches_destination(0x1_0004, true));
        assert!(!apic.matches_destination(0x2_0008, true));
        assert!(apic.matches_destination(u32::MAX, false));
        assert!(!apic.matches_destination(0xFF, false));
    }

    #[test]
    fn x2apic_id_and_ldr_are_read_only() {
        let mut apic = enabled(4);
        apic.mmio_write(reg::ID, 0x0900_0000, 0);
        assert_eq!(apic.mmio_read(reg::ID, 0), 0x0400_0000);
        let mut apic = x2apic(0x1234_5678);
        assert_eq!(apic.msr_read(0x802, 0), Some(0x1234_5678));
        assert_eq!(apic.msr_read(0x80D, 0), Some(0x4567_0100));
        assert_eq!(apic.mmio_read(reg::TPR, 0), 0, "no MMIO in x2APIC mode");
    }
}
