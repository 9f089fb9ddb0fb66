//! The monitor binary: from the boot loader's hand-over to running domains. It reads the boot
//! information, brings up the host (serial log, IDT, heap, host timer), picks the hardware
//! backend from CPUID, reads every `.cfg` module, and hands over to the scheduler, which starts
//! the configs marked `autostart`, has the other CPUs brought up, and serves the management
//! console on the serial line.
//!
//! The host-testable logic (configs, loaders, devices, the exit loop) lives in the library;
//! this file only wires it to the hardware.
#![no_std]
#![no_main]

extern crate alloc;

mod attach;
mod backend;
mod bare;
mod launch;
mod phy;
mod profile;
mod scheduler;
mod uplink;

use bare::{bootinfo, cpu, heap, idt, lapic, serial, smp, timer::HostTimer};
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
    let Some(backend) = backend::Backend::init(timer.tsc_hz) else {
        log::error!("no usable hardware virtualization; halting");
        cpu::halt_forever()
    };
    if !bare::fpu::init() {
        log::error!("the CPU has no XSAVE, which guests' FPU state needs; halting");
        cpu::halt_forever()
    }
    profile::init(boot.cmdline, timer.tsc_hz, &backend);
    phy::probe(timer.tsc_hz);
    let known = read_configs(&boot);
    let rsdp = boot.rsdp;
    let monitor = scheduler::Monitor::new(backend, boot, timer, known, HEAP_SIZE);
    scheduler::run(monitor, |tsc_hz| {
        let ids = smp::cpus(rsdp);
        smp::start_others(&ids, other_cpu, tsc_hz)
            .into_iter()
            .map(|index| scheduler::CpuId {
                index,
                apic_id: ids[index],
            })
            .collect()
    })
}

/// Where every CPU but the first starts (`smp::start_others`): its IDT, XSAVE and hardware
/// virtualization, then its timer and the scheduler's loop.
fn other_cpu(index: usize) -> ! {
    idt::load();
    smp::report(bare::fpu::init() && scheduler::enable_this_cpu());
    scheduler::run_other(scheduler::CpuId {
        index,
        apic_id: lapic::id(),
    })
}

/// Reads every `.cfg` module, in order; a broken one or one reusing a name is reported and left
/// out, the others are kept for `create` (and started at boot unless `autostart = 0`).
fn read_configs(boot: &bootinfo::BootInfo) -> alloc::vec::Vec<launch::Known> {
    let mut known: alloc::vec::Vec<launch::Known> = alloc::vec::Vec::new();
    for m in boot.modules().filter(|m| modules::is_config(m.name)) {
        match launch::read_config(m) {
            Ok(k) => match known.iter().find(|o| o.vm.name == k.vm.name) {
                Some(other) => log::error!(
                    "{}: duplicate name '{}' (already used by {})",
                    k.name_at(),
                    k.vm.name,
                    other.file
                ),
                None => known.push(k),
            },
            Err(e) => log::error!("{e}"),
        }
    }
    known
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    log::error!("monitor panic: {info}");
    cpu::halt_forever()
}
