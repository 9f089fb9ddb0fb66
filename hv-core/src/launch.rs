//! Bringing up the hardware backend and turning a `.cfg` module into a running domain: parse
//! the config, find its modules, take its RAM from the frame allocator, map it in nested page
//! tables, load the kernel, and create its devices and vCPU.

use alloc::format;
use alloc::string::String;

use crate::backend::{AnyVcpu, Backend};
use crate::bare::bootinfo::BootInfo;
use crate::bare::heap::HeapTables;
use crate::bare::timer::HostTimer;
use crate::bare::{clock, cpu};
use ept::{GuestPageTable, MemType, Perms};
use hv_core::config::parse_vm;
use hv_core::cpuid::CpuidPolicy;
use hv_core::domain::{Domain, Identity};
use hv_core::loader::linux::{load_linux, BootState};
use hv_core::memory::GuestRam;
use hv_core::modules::Module;
use hv_core::pvclock::PvClock;
use raw_cpuid::cpuid;
use vcpu::{reg, Regs, StartState};

/// The boot page tables identity-map the first 4 GiB; the monitor uses memory below that only.
pub const IDENTITY_LIMIT: u64 = 4 << 30;
const GUEST_RAM_ALIGN: u64 = 2 << 20;

pub type Vm = Domain<AnyVcpu>;

fn host_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = cpuid!(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn module(boot: &BootInfo, file: &str, what: &str, name: &str) -> Result<Module<'static>, String> {
    boot.modules()
        .find(|m| m.name == name)
        .ok_or_else(|| format!("{file}: {what} module '{name}' was not given to the monitor"))
}

/// Creates domain `id` from the config module `cfg`.
pub fn create(
    backend: &Backend,
    boot: &mut BootInfo,
    cfg: Module,
    id: u32,
    timer: &HostTimer,
) -> Result<Vm, String> {
    let file = cfg.name;
    let text =
        core::str::from_utf8(cfg.data).map_err(|e| format!("{file}: not UTF-8 text: {e}"))?;
    let vm = parse_vm(file, text).map_err(|e| format!("{e}"))?;
    let kernel = module(boot, file, "kernel", &vm.kernel)?;
    let ramdisk = vm
        .ramdisk
        .as_deref()
        .map(|r| module(boot, file, "ramdisk", r))
        .transpose()?;
    let size = vm.memory_mib << 20;
    let base = boot
        .frames
        .alloc(size, GUEST_RAM_ALIGN, IDENTITY_LIMIT)
        .ok_or_else(|| {
            format!(
                "{file}: {} MiB of memory requested, {} MiB free",
                vm.memory_mib,
                boot.frames.free_bytes() >> 20
            )
        })?;
    // SAFETY: the block was just taken from the frame allocator, is identity-mapped, and
    // belongs to this domain alone from now on.
    let mem = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, size as usize) };
    mem.fill(0);
    let mut ram = GuestRam::new(mem);
    let tables = guest_page_tables(backend, base, size)
        .map_err(|e| format!("{file}: guest-physical page tables: {e}"))?;
    let boot_state = load_linux(
        &mut ram,
        size,
        kernel.data,
        ramdisk.map(|r| r.data),
        &vm.cmdline,
        vm.vcpus,
    )
    .map_err(|e| format!("{file}: cannot load kernel '{}': {e}", vm.kernel))?;
    let epoch_secs = clock::rtc_epoch_secs();
    let platform = devices::platform::Platform::new(&devices::platform::PlatformConfig {
        tsc_hz: timer.tsc_hz,
        ram_bytes: size,
        epoch_secs,
    });
    let pvclock = PvClock::new(timer.tsc_hz, cpu::rdtsc(), epoch_secs);
    let vcpu = backend.vcpu(id, &tables, &start_state(&boot_state));
    let policy = CpuidPolicy {
        tsc_khz: (timer.tsc_hz / 1000) as u32,
        apic_timer_khz: (devices::layout::LAPIC_TIMER_HZ / 1000) as u32,
        vcpus: vm.vcpus,
    };
    log::info!(
        "domain {} (id {id}): {} MiB at {base:#x}, kernel '{}', command line '{}'",
        vm.name,
        vm.memory_mib,
        vm.kernel,
        vm.cmdline
    );
    let identity = Identity {
        id,
        name: vm.name,
        cpuid: policy,
        host_cpuid,
        clock: pvclock,
    };
    Ok(Domain::new(identity, vcpu, platform, ram))
}

fn guest_page_tables(
    backend: &Backend,
    base: u64,
    size: u64,
) -> Result<GuestPageTable, ept::Error> {
    let config = ept::Config {
        max_page_size: backend.max_page_size(),
        host_phys_bits: (cpuid!(0x8000_0008).eax & 0xFF) as u8,
    };
    let mut tables = HeapTables;
    let mut t = GuestPageTable::with_config(backend.table_format(), config, &mut tables)?;
    t.map(&mut tables, 0, base, size, Perms::RWX, MemType::WriteBack)?;
    Ok(t)
}

fn start_state(b: &BootState) -> StartState {
    let mut regs = Regs {
        rip: b.rip,
        rflags: BootState::RFLAGS,
        ..Regs::default()
    };
    regs.gpr[reg::RSI] = b.rsi;
    StartState {
        regs,
        cr0: BootState::CR0,
        cr3: b.cr3,
        cr4: BootState::CR4,
        efer: BootState::EFER,
        gdt_base: b.gdt_base,
        gdt_limit: b.gdt_limit,
        code_selector: b.code_selector,
        data_selector: b.data_selector,
        long_mode: true,
    }
}
