//! The monitor binary: from the boot loader's hand-over to running domains. It reads the boot
//! information, brings up the host (serial log, IDT, heap, host timer), picks the hardware
//! backend from CPUID, creates a domain for every `.cfg` module in order, and schedules them on
//! this CPU, relaying their consoles to the serial line.
//!
//! The host-testable logic (configs, loaders, devices, the exit loop) lives in the library;
//! this file only wires it to the hardware.
#![no_std]
#![no_main]

extern crate alloc;

mod backend;
mod bare;
mod launch;
mod scheduler;

use bare::{bootinfo, cpu, heap, idt, serial, timer::HostTimer};
use hv_core::modules;

/// The monitor's heap: page tables, VMCBs, device state and the domains' bookkeeping.
const HEAP_SIZE: u64 = 32 << 20;

#[no_mangle]
extern "C" fn kmain(magic: u32, info: u32) -> ! {
    serial::init_log(log::LevelFilter::Info);
    let Some(mut boot) = bootinfo::parse(magic, info) else {
        log::error!("not started by a multiboot loader (magic {magic:#x}); halting");
        cpu::halt_forever()
    };
    log::set_max_level(modules::log_level(modules::option(boot.cmdline, "loglvl")));
    idt::init();
    log::info!(
        "booting from {} with command line '{}', {} MiB free",
        boot.loader,
        boot.cmdline,
        boot.frames.free_bytes() >> 20
    );
    let Some(heap_base) = boot.frames.alloc(HEAP_SIZE, 4096, launch::IDENTITY_LIMIT) else {
        log::error!("not enough memory for the monitor's heap; halting");
        cpu::halt_forever()
    };
    // SAFETY: the block was just taken from the frame allocator and is identity-mapped.
    unsafe { heap::init(heap_base, HEAP_SIZE) };
    let timer = HostTimer::init();
    log::info!(
        "tsc {} kHz, host timer {}",
        timer.tsc_hz / 1000,
        timer.mode()
    );
    let Some(backend) = backend::Backend::init() else {
        log::error!("no usable hardware virtualization; halting");
        cpu::halt_forever()
    };
    let mut domains = alloc::vec::Vec::new();
    let configs: alloc::vec::Vec<_> = boot
        .modules()
        .filter(|m| modules::is_config(m.name))
        .collect();
    for m in configs {
        let id = domains.len() as u32 + 1;
        match launch::create(&backend, &mut boot, m, id, &timer) {
            Ok(d) => domains.push(d),
            Err(e) => log::error!("{e}"),
        }
    }
    log::info!(
        "{} domain(s) started, heap {} KiB used",
        domains.len(),
        heap::used() >> 10
    );
    scheduler::run(domains, &timer)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    log::error!("monitor panic: {info}");
    cpu::halt_forever()
}
