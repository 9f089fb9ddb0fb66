//! The hostile guest: one image, two roles, chosen on its kernel command line.
//!
//! - `canary`: fills its RAM with a pattern only it writes (`canary::pattern`) and prints
//!   `CANARY n tick` whenever n, the number of 10 ms periods of its TSC since it started, changes,
//!   forever. A gap in n is time it did not run.
//! - `attack=NAME`: runs one attack on the monitor (`attacks::run`) and checks every result it
//!   gets against the architecture. It powers off only if all were architectural; on a wrong
//!   result it prints `HOSTILE: FAIL ...` and triple-faults, so the monitor's log tells the two
//!   apart. Some attacks end the guest on purpose (triple fault, reset, spinning forever).
//!
//! Its console is not shown (the monitor shows the first domain's, the canary's), so the tests
//! judge an attacker by the monitor's `hv: domain ...` line. It is not a test framework: an
//! attack stops at its first failure.
#![no_std]
#![no_main]
// Statics are reached through explicit `&raw` pointers (the static_mut_refs lint forbids
// references to `static mut`), which clippy would rather see dereferenced in place.
#![allow(clippy::deref_addrof)]

mod apic;
mod attacks;
mod canary;
mod cpu;
mod insns;
mod io;
mod memory;
mod paging;
mod pci;
mod report;
mod rng;
mod state;
mod virtio;

use core::panic::PanicInfo;

use rt::trap::Trap;

rt::entry!(hostile_main);

extern "C" fn hostile_main(boot_params: u64, _multiboot_info: u64, _multiboot_magic: u64) -> ! {
    rt::trap::install(unexpected);
    let cmdline = rt::cmdline::get(boot_params);
    if rt::cmdline::has_word(cmdline, "canary") {
        canary::run(boot_params)
    }
    match rt::cmdline::value(cmdline, "attack") {
        Some(name) => attacks::run(name, boot_params),
        None => report::fail(format_args!(
            "no `canary` or `attack=NAME` on the command line"
        )),
    }
}

/// An exception nothing armed: a wrong result of whatever ran.
fn unexpected(trap: Trap, rip: u64) -> ! {
    report::fail(format_args!("unexpected {trap} at rip {rip:#x}"))
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    report::fail(format_args!("panic: {info}"))
}
