//! Interrupt-controller attacks through the xAPIC (Intel SDM Vol. 3A 11) and the I/O APIC
//! (82093AA datasheet): MMIO floods, self-IPI storms, illegal vectors, EOIs with nothing in
//! service, the timer at its shortest period, self-NMIs and INIT to itself. Interrupts are
//! counted by `rt::trap` (`count_interrupts`), which also signals their EOI.

use rt::insn::{self, Width};

use crate::report::{check, note};
use crate::rng::Rng;
use crate::{cpu, pci};

const LAPIC: u64 = 0xFEE0_0000;
const IOAPIC: u64 = 0xFEC0_0000;
/// xAPIC registers (SDM Table 11-1).
const VERSION: u64 = 0x30;
const TPR: u64 = 0x80;
const EOI: u64 = 0xB0;
const SVR: u64 = 0xF0;
const ISR: u64 = 0x100;
const IRR: u64 = 0x200;
const ESR: u64 = 0x280;
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
const LVT_TIMER: u64 = 0x320;
const TIMER_INITIAL: u64 = 0x380;
const TIMER_DIVIDE: u64 = 0x3E0;
/// ICR fields (SDM Figure 11-12): delivery modes, level assert, shorthands.
const ICR_NMI: u32 = 4 << 8;
const ICR_INIT: u32 = 5 << 8;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_SELF: u32 = 1 << 18;
const ICR_ALL: u32 = 2 << 18;
const ICR_OTHERS: u32 = 3 << 18;
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const LVT_MASKED: u32 = 1 << 16;
const TIMER_PERIODIC: u32 = 1 << 17;
const VECTOR: u8 = 0x40;

fn read(offset: u64) -> u32 {
    // SAFETY: LAPIC registers read without touching guest memory.
    match unsafe { insn::read(LAPIC + offset, Width::Dword) } {
        Ok(v) => v as u32,
        Err(t) => crate::report::fail(format_args!("LAPIC read {offset:#x} raised {t}")),
    }
}

fn write(offset: u64, value: u32) {
    // SAFETY: LAPIC registers change interrupt state, not guest memory.
    let done = unsafe { insn::write(LAPIC + offset, Width::Dword, u64::from(value)) };
    check!(
        done.is_ok(),
        "LAPIC write {offset:#x} <- {value:#x} {}",
        insn::Completion(done)
    );
}

fn ioapic_write(offset: u64, value: u32) {
    // SAFETY: I/O APIC registers change interrupt routing, not guest memory.
    let done = unsafe { insn::write(IOAPIC + offset, Width::Dword, u64::from(value)) };
    check!(
        done.is_ok(),
        "I/O APIC write {offset:#x} {}",
        insn::Completion(done)
    );
}

fn ioapic_read(offset: u64) -> u32 {
    // SAFETY: as above, for a read.
    match unsafe { insn::read(IOAPIC + offset, Width::Dword) } {
        Ok(v) => v as u32,
        Err(t) => crate::report::fail(format_args!("I/O APIC read {offset:#x} raised {t}")),
    }
}

/// Software-enables the LAPIC with spurious vector 0xFF and counts interrupts.
fn enable() {
    rt::trap::count_interrupts(true);
    write(SVR, 0x1FF);
    write(TIMER_INITIAL, 0);
}

/// Lets pending interrupts in for a moment.
fn window() {
    cpu::sti();
    for _ in 0..1000 {
        core::hint::spin_loop();
    }
    cpu::cli();
}

/// A self-IPI at `VECTOR` must arrive exactly once.
fn expect_working() {
    let before = rt::trap::interrupts(VECTOR);
    write(ICR_LOW, u32::from(VECTOR) | ICR_SELF);
    window();
    let got = rt::trap::interrupts(VECTOR) - before;
    check!(got == 1, "a self-IPI arrived {got} times");
    for i in 0..8 {
        let isr = read(ISR + 0x10 * i);
        check!(isr == 0, "ISR word {i} is {isr:#x} with nothing in service");
    }
}

pub fn mmio_flood(_: u64) {
    enable();
    let version = read(VERSION);
    let mut rng = Rng::new(0x4D4D_494F);
    for pass in 0..4 {
        for offset in (0..0x1000).step_by(4) {
            let old = read(offset);
            let value = match pass {
                0 => 0,
                1 => u32::MAX,
                2 => old,
                _ => rng.next() as u32,
            };
            // ICR writes other than 0 and all ones would send NMIs, INITs or SMIs to the
            // attacker itself: those have attacks of their own.
            if offset == ICR_LOW && pass >= 2 {
                continue;
            }
            write(offset, value);
        }
    }
    // Odd sizes, which the architecture leaves undefined but a guest can issue.
    for (offset, width) in [
        (VERSION, Width::Byte),
        (SVR + 1, Width::Byte),
        (VERSION, Width::Word),
        (ISR, Width::Qword),
    ] {
        // SAFETY: LAPIC reads touch no guest memory.
        let got = unsafe { insn::read(LAPIC + offset, width) };
        check!(
            got.is_ok(),
            "{}-byte LAPIC read at {offset:#x} {}",
            width.bytes(),
            insn::Outcome(got)
        );
    }
    write(LVT_TIMER, LVT_MASKED);
    write(TPR, 0);
    enable();
    check!(read(VERSION) == version, "the LAPIC version changed");
    window();
    let _ = read(ESR);
    expect_working();
    // The I/O APIC: every register through IOREGSEL/IOWIN, then the rest of its window.
    for reg in 0..=0xFFu32 {
        ioapic_write(0, reg);
        let old = ioapic_read(0x10);
        for value in [u32::MAX, rng.next() as u32 | LVT_MASKED, old] {
            ioapic_write(0, reg);
            ioapic_write(0x10, value);
        }
    }
    for offset in (0..0x1000).step_by(4) {
        let _ = ioapic_read(offset);
        if offset != 0 && offset != 0x10 {
            ioapic_write(offset, rng.next() as u32);
        }
    }
    // The virtio console's BAR, mapped: every register read and written with random values.
    if let Some(f) = pci::virtio_console() {
        let command = f.read(4);
        f.write(4, command | pci::COMMAND_MEMORY);
        let bar = u64::from(f.read(0x10) & !0xF);
        for _ in 0..2 {
            for offset in (0..0x2000).step_by(4) {
                // SAFETY: device registers, no guest memory.
                let r = unsafe { insn::read(bar + offset, Width::Dword) };
                check!(r.is_ok(), "BAR read {offset:#x}");
                // SAFETY: as above; a queue this sets up points at random addresses, which
                // the device must refuse without touching memory outside the guest.
                let w =
                    unsafe { insn::write(bar + offset, Width::Dword, rng.next() & 0xFFFF_FFFF) };
                check!(w.is_ok(), "BAR write {offset:#x}");
            }
        }
        f.write(4, command);
    }
    expect_working();
    note(format_args!("LAPIC, I/O APIC and BAR flooded"));
}

pub fn ipi_storm(_: u64) {
    enable();
    let before = rt::trap::interrupts(VECTOR);
    for _ in 0..5000 {
        write(ICR_LOW, u32::from(VECTOR) | ICR_SELF);
        window();
    }
    let got = rt::trap::interrupts(VECTOR) - before;
    check!(got == 5000, "5000 self-IPIs, {got} arrived");
    // Broadcasts with the sender, without it, and to every physical destination.
    for _ in 0..1000 {
        write(ICR_LOW, 0x41 | ICR_ALL);
        write(ICR_LOW, 0x42 | ICR_OTHERS);
    }
    for dest in 0..=255u32 {
        write(ICR_HIGH, dest << 24);
        write(ICR_LOW, 0x43);
    }
    cpu::sti();
    cpu::delay_ms(5);
    cpu::cli();
    let (all, others, fixed) = (
        rt::trap::interrupts(0x41),
        rt::trap::interrupts(0x42),
        rt::trap::interrupts(0x43),
    );
    check!(
        (1..=1000).contains(&all),
        "broadcasts with self: {all} arrived"
    );
    check!(
        others == 0,
        "broadcasts to the others only: {others} arrived here"
    );
    check!(
        (1..=256).contains(&fixed),
        "IPIs to every destination: {fixed} arrived"
    );
    expect_working();
    note(format_args!(
        "{got} self-IPIs, {all} broadcasts, {fixed} by destination"
    ));
}

/// Vectors 0..=15 are illegal for IPIs and LVT entries: not delivered, ESR reports them (SDM
/// 11.5.3). Vectors 16..=31 are legal for the APIC but alias exceptions whose handlers expect
/// error codes: not sent.
pub fn bad_vectors(_: u64) {
    enable();
    cpu::sti();
    for vector in 0..16u32 {
        write(ESR, 0);
        write(ICR_LOW, vector | ICR_SELF);
        write(ESR, 0);
        let esr = read(ESR);
        check!(
            esr & ESR_SEND_ILLEGAL_VECTOR != 0,
            "self-IPI at vector {vector}: ESR {esr:#x}"
        );
        write(LVT_TIMER, vector);
        write(TIMER_DIVIDE, 0xB);
        write(TIMER_INITIAL, 1);
        cpu::delay_ms(1);
    }
    cpu::cli();
    write(TIMER_INITIAL, 0);
    write(LVT_TIMER, LVT_MASKED);
    check!(
        rt::trap::interrupts_in(0..=15) == 0,
        "an illegal vector arrived"
    );
    // An exception vector arriving as an interrupt would have gone to `unexpected` already.
    expect_working();
    note(format_args!("illegal vectors refused"));
}

pub fn eoi_with_nothing_in_service(_: u64) {
    enable();
    for i in 0..10_000u32 {
        write(EOI, 0);
        if i % 100 == 0 {
            ioapic_write(0x40, i & 0xFF);
        }
    }
    expect_working();
    for i in 0..8 {
        let irr = read(IRR + 0x10 * i);
        check!(irr == 0, "IRR word {i} is {irr:#x} after the EOIs");
    }
    note(format_args!("10000 EOIs"));
}

/// TSC-deadline mode with deadlines already past, when the CPU has it; then the LAPIC timer
/// periodic with divide-by-1 and initial count 1 (one tick of its 1 GHz clock per interrupt)
/// with interrupts on, forever. The interrupts come faster than any handler returns, as on
/// hardware: the attacker does nothing else from then on, and the canary must not notice.
pub fn shortest_timer(_: u64) {
    enable();
    if cpu::cpuid(1, 0)[2] & (1 << 24) != 0 {
        write(LVT_TIMER, 0x51 | 2 << 17);
        for _ in 0..1000 {
            // SAFETY: IA32_TSC_DEADLINE arms the timer; a past deadline fires at once.
            let w = unsafe { insn::wrmsr(0x6E0, 1) };
            check!(w.is_ok(), "wrmsr TSC_DEADLINE {}", insn::Completion(w));
            window();
        }
        let deadline = rt::trap::interrupts(0x51);
        check!(deadline > 0, "past TSC deadlines never fired");
        note(format_args!("{deadline} past deadlines fired"));
    }
    write(LVT_TIMER, LVT_MASKED);
    window();
    expect_working();
    write(TIMER_DIVIDE, 0xB);
    write(LVT_TIMER, 0x50 | TIMER_PERIODIC);
    write(TIMER_INITIAL, 1);
    cpu::sti();
    loop {
        core::hint::spin_loop();
    }
}

pub fn self_nmi(_: u64) {
    enable();
    for _ in 0..1000 {
        write(ICR_LOW, ICR_NMI | ICR_ALL);
        for _ in 0..100 {
            core::hint::spin_loop();
        }
    }
    let nmis = rt::trap::interrupts(rt::trap::NMI);
    check!((1..=1000).contains(&nmis), "1000 self-NMIs, {nmis} arrived");
    expect_working();
    note(format_args!("{nmis} NMIs"));
}

/// INIT to the sender itself (all-including-self: the self shorthand allows only fixed IPIs).
/// The monitor may ignore it (it has no wait-for-SIPI state for the only vCPU) or reset the
/// VM; either way the attacker's fate line tells.
pub fn init_self(_: u64) {
    enable();
    write(ICR_LOW, ICR_INIT | ICR_ASSERT | ICR_ALL);
    write(ICR_LOW, ICR_INIT | ICR_ALL);
    cpu::delay_ms(10);
    expect_working();
    note(format_args!("INIT to self ignored"));
}
