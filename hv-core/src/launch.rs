//! Turning a `.cfg` module into a running domain and back: parse and check the config (kept so
//! that `create` can start it again), find its modules, take its RAM from the frame allocator,
//! map it in nested page tables, load the kernel, create its devices and vCPU; and on destroy,
//! return the tables and the RAM.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::backend::{AnyVcpu, Backend};
use crate::bare::bootinfo::BootInfo;
use crate::bare::heap::HeapTables;
use crate::bare::timer::HostTimer;
use crate::bare::{clock, cpu};
use ept::{GuestPageTable, MemType, Perms};
use hv_core::config::KernelType;
use hv_core::config::{parse, Config, Lifecycle, VmConfig};
use hv_core::cpuid::CpuidPolicy;
use hv_core::domain::{Domain, Identity};
use hv_core::frames::FrameAllocator;
use hv_core::loader::boot32::BootModule;
use hv_core::loader::linux::{load_linux, BootState};
use hv_core::loader::{multiboot::load_multiboot, pvh::load_pvh};
use hv_core::memory::GuestRam;
use hv_core::modules::{module_name, Module};
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

/// A VM config read from its `.cfg` module: what `create` starts, as often as asked.
pub struct Known {
    pub file: &'static str,
    pub vm: VmConfig,
    pub life: Lifecycle,
    /// Where errors about the settings point, as `FILE:LINE:COL`.
    at: Positions,
}

struct Positions {
    name: String,
    kernel: String,
    ramdisk: String,
    memory: String,
    modules: String,
}

impl Known {
    /// `FILE:LINE:COL` of the `name` setting, for errors about the name.
    pub fn name_at(&self) -> &str {
        &self.at.name
    }
}

fn at(config: &Config, key: &str) -> String {
    let pos = config.setting(key).map_or(config.end(), |s| s.pos);
    format!("{}:{}:{}", config.file(), pos.line, pos.column)
}

/// Parses and checks the config module `cfg`; errors read `FILE:LINE:COL: REASON`.
pub fn read_config(cfg: Module<'static>) -> Result<Known, String> {
    let file = cfg.name;
    let text =
        core::str::from_utf8(cfg.data).map_err(|e| format!("{file}:1:1: not UTF-8 text: {e}"))?;
    let config = parse(file, text).map_err(|e| format!("{e}"))?;
    let vm = VmConfig::from_config(&config).map_err(|e| format!("{e}"))?;
    let life = Lifecycle::from_config(&config).map_err(|e| format!("{e}"))?;
    Ok(Known {
        file,
        at: Positions {
            name: at(&config, "name"),
            kernel: at(&config, "kernel"),
            ramdisk: at(&config, "ramdisk"),
            memory: at(&config, "memory"),
            modules: at(&config, "modules"),
        },
        vm,
        life,
    })
}

fn module(boot: &BootInfo, at: &str, what: &str, name: &str) -> Result<Module<'static>, String> {
    boot.modules()
        .find(|m| m.name == name)
        .ok_or_else(|| format!("{at}: {what} module '{name}' was not given to the monitor"))
}

/// A domain and what it holds: its block of host RAM and its guest-physical page tables.
pub struct Guest {
    pub vm: Vm,
    pub life: Lifecycle,
    /// The config it was created from (by index into the known configs).
    pub config: usize,
    pub memory_mib: u64,
    base: u64,
    tables: GuestPageTable,
}

impl Guest {
    /// Frees the domain: its vCPU and devices, its page tables and its RAM.
    pub fn destroy(self, frames: &mut FrameAllocator) {
        let Guest {
            vm,
            tables,
            base,
            memory_mib,
            ..
        } = self;
        drop(vm);
        tables.free(&mut HeapTables);
        frames.free(base, memory_mib << 20);
    }
}

/// Creates domain `id` from the config `known` (number `config` among the known ones); its
/// vCPUs are tagged `tags` (their ASIDs or VPIDs, one each, unique among live domains).
pub fn create(
    backend: &Backend,
    boot: &mut BootInfo,
    (known, config): (&Known, usize),
    (id, tags): (u32, &[u32]),
    timer: &HostTimer,
) -> Result<Guest, String> {
    let vm = &known.vm;
    let kernel = module(boot, &known.at.kernel, "kernel", &vm.kernel)?;
    let ramdisk = vm
        .ramdisk
        .as_deref()
        .map(|r| module(boot, &known.at.ramdisk, "ramdisk", r))
        .transpose()?;
    let extra = vm
        .modules
        .iter()
        .map(|m| {
            let found = module(boot, &known.at.modules, "boot", module_name(m))?;
            Ok(BootModule {
                data: found.data,
                cmdline: m.as_str(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let devs = crate::attach::devices(boot, known.file, vm)?;
    let size = vm.memory_mib << 20;
    let base = boot
        .frames
        .alloc(size, GUEST_RAM_ALIGN, IDENTITY_LIMIT)
        .ok_or_else(|| {
            format!(
                "{}: {} MiB of memory requested, {} MiB free",
                known.at.memory,
                vm.memory_mib,
                boot.frames.free_bytes() >> 20
            )
        })?;
    let images = (kernel, ramdisk, extra.as_slice());
    let built = build(backend, known, (id, tags), (base, size), images, timer);
    match built {
        Ok((mut domain, tables)) => Ok(Guest {
            vm: {
                crate::attach::plug(&mut domain.platform, &vm.name, devs);
                domain
            },
            life: known.life,
            config,
            memory_mib: vm.memory_mib,
            base,
            tables,
        }),
        Err(e) => {
            boot.frames.free(base, size);
            Err(e)
        }
    }
}

/// The kernel, the ramdisk and the config's `modules`.
type Images<'a> = (
    Module<'static>,
    Option<Module<'static>>,
    &'a [BootModule<'a>],
);

/// Builds the domain in the RAM block at `base`; on failure frees what it made itself.
fn build(
    backend: &Backend,
    known: &Known,
    (id, tags): (u32, &[u32]),
    (base, size): (u64, u64),
    images: Images<'_>,
    timer: &HostTimer,
) -> Result<(Vm, GuestPageTable), String> {
    let (file, vm) = (known.file, &known.vm);
    // SAFETY: the block was just taken from the frame allocator, is identity-mapped, and
    // belongs to this domain alone until `Guest::destroy` returns it.
    let mem = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, size as usize) };
    mem.fill(0);
    let mut ram = GuestRam::new(mem);
    let tables = guest_page_tables(backend, base, size)
        .map_err(|e| format!("{file}: guest-physical page tables: {e}"))?;
    let start = load_kernel(&mut ram, size, vm, images).map_err(|e| {
        format!(
            "{}: cannot load kernel '{}': {e}",
            known.at.kernel, vm.kernel
        )
    });
    let start = match start {
        Ok(s) => s,
        Err(e) => {
            tables.free(&mut HeapTables);
            return Err(e);
        }
    };
    let epoch_secs = clock::rtc_epoch_secs();
    let platform = devices::platform::Platform::new(&devices::platform::PlatformConfig {
        tsc_hz: timer.tsc_hz,
        ram_bytes: size,
        epoch_secs,
        vcpus: vm.vcpus,
    });
    let pvclock = PvClock::new(timer.tsc_hz, cpu::rdtsc(), epoch_secs);
    // Application processors get the same start state; it is replaced by their STARTUP IPI.
    let vcpus = tags
        .iter()
        .map(|&tag| backend.vcpu(tag, &tables, &start))
        .collect();
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
        name: vm.name.clone(),
        cpuid: policy,
        host_cpuid,
        clock: pvclock,
    };
    Ok((Domain::new(identity, vcpus, platform, ram), tables))
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

/// Loads the kernel by the boot protocol of the config's `type`: the ramdisk, if any, is the
/// first module of a PVH or multiboot kernel (named by its module name), the config's
/// `modules` follow; a multiboot kernel's command line starts with its name, as GRUB's does.
fn load_kernel(
    ram: &mut GuestRam,
    size: u64,
    vm: &VmConfig,
    (kernel, ramdisk, extra): Images<'_>,
) -> Result<StartState, String> {
    let mut mods = Vec::with_capacity(extra.len() + 1);
    mods.extend(ramdisk.map(|r| BootModule {
        data: r.data,
        cmdline: r.name,
    }));
    mods.extend_from_slice(extra);
    match vm.kind {
        KernelType::Hvm if !extra.is_empty() => {
            Err("'modules' needs type 'pvh' or 'multiboot'".into())
        }
        KernelType::Hvm => load_linux(
            ram,
            size,
            kernel.data,
            ramdisk.map(|r| r.data),
            &vm.cmdline,
            vm.vcpus,
        )
        .map(|b| start_state(&b))
        .map_err(|e| format!("{e}")),
        KernelType::Pvh => load_pvh(ram, size, kernel.data, &mods, &vm.cmdline, vm.vcpus)
            .map(|e| e.start_state())
            .map_err(|e| format!("type 'pvh': {e}")),
        KernelType::Multiboot => {
            let cmdline = format!("{} {}", vm.kernel, vm.cmdline);
            let image = BootModule {
                data: kernel.data,
                cmdline: cmdline.trim_end(),
            };
            load_multiboot(ram, size, image, &mods, vm.vcpus)
                .map(|e| e.start_state())
                .map_err(|e| format!("type 'multiboot': {e}"))
        }
    }
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
