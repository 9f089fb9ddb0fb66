//! How an attack ends: `done` prints `HOSTILE: <attack> ok` and powers off; `fail` prints
//! `HOSTILE: FAIL <attack>: <why>` and triple-faults, which the monitor logs differently from a
//! power-off. `check!` fails unless a condition holds.

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The running attack's name (address and length of a `'static` string).
static ATTACK: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// Records the attack's name for the result lines.
pub fn set_attack(name: &'static str) {
    ATTACK[0].store(name.as_ptr() as usize, Ordering::SeqCst);
    ATTACK[1].store(name.len(), Ordering::SeqCst);
}

fn attack() -> &'static str {
    let (ptr, len) = (
        ATTACK[0].load(Ordering::SeqCst),
        ATTACK[1].load(Ordering::SeqCst),
    );
    if ptr == 0 {
        return "-";
    }
    // SAFETY: `set_attack` stored the parts of a `&'static str`.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr as *const u8, len)) }
}

/// Prints a progress line (seen only when the attacker's console is shown).
pub fn note(what: fmt::Arguments<'_>) {
    rt::serial::line(format_args!("HOSTILE: {}: {what}", attack()));
}

/// Every result was architectural: powers off.
pub fn done() -> ! {
    rt::serial::line(format_args!("HOSTILE: {} ok", attack()));
    rt::power_off()
}

/// A result was not architectural: says which, then triple-faults.
pub fn fail(why: fmt::Arguments<'_>) -> ! {
    rt::serial::line(format_args!("HOSTILE: FAIL {}: {why}", attack()));
    triple_fault()
}

/// Loads an empty IDT and raises an exception: #GP on the vector lookup, #DF, shutdown.
pub fn triple_fault() -> ! {
    let empty = [0u16; 5];
    // SAFETY: the guest gives up here; nothing runs after the fault.
    unsafe { asm!("lidt [{}]", "int3", in(reg) empty.as_ptr(), options(noreturn)) }
}

/// Fails with the message unless the condition holds.
macro_rules! check {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            $crate::report::fail(format_args!($($why)+));
        }
    };
}
pub(crate) use check;
