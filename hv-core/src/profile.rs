//! Exit profiling in the monitor binary: the hooks the scheduler calls around each exit's
//! handling (always-on counters, and trace records when tracing is on), the counter dump when a
//! domain stops, and the command-line options:
//!
//! - `trace=com2`: trace every exit and stream the records out of COM2 (port 0x2F8) as they are
//!   produced, in the format documented in `hv_core::trace`;
//! - `trace_dom=N`: trace only domain N; `trace_class=0xMASK`: only these event classes
//!   (xentrace's `-e`, e.g. `0x0008f000` for HVM);
//! - `counters=off`: do not count exits (to measure what counting costs).
//!
//! Not the record format, the filter or the ring (`hv_core::trace`), nor the counters
//! themselves (`hv_core::stats`).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;

use crate::backend::{AnyVcpu, Backend};
use crate::bare::{com2, cpu::rdtsc};
use crate::launch::Vm;
use hv_core::console::command::TraceSetting;
use hv_core::domain::StopReason;
use hv_core::modules;
use hv_core::stats::Summary;
use hv_core::trace::{self, event, Control, ExitTrace, Record, Ring};
use vcpu::{ExitInfo, Vcpu};

/// Records the ring keeps, the latest of every CPU.
const RING_RECORDS: usize = 1024;
/// The physical CPU this runs on, for the records.
fn cpu() -> u32 {
    crate::bare::smp::this_cpu()
}

static CONTROL: Control = Control::new();
static COUNTERS: AtomicBool = AtomicBool::new(true);
/// Records go out of COM2 as they are produced.
static STREAM: AtomicBool = AtomicBool::new(false);
static RING: Mutex<Ring<RING_RECORDS>> = Mutex::new(Ring::new());
/// Domains (ids below 64) whose `DOMAIN_NAME` record was written.
static NAMED: AtomicU64 = AtomicU64::new(0);
/// Exit codes below 256 whose `EXIT_NAME` record was written, a bit each (SVM's NPF, 0x400, is
/// folded onto bit 0xFF, which no vendor uses); other codes are named at every exit.
static EXITS_NAMED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Reads the profiling options of the monitor's command line and starts the trace stream.
pub fn init(cmdline: &str, tsc_hz: u64, backend: &Backend) {
    COUNTERS.store(
        modules::option(cmdline, "counters") != Some("off"),
        Ordering::Relaxed,
    );
    if let Some(id) = modules::option(cmdline, "trace_dom").and_then(|v| v.parse().ok()) {
        CONTROL.set_domain(Some(id));
    }
    if let Some(mask) = modules::option(cmdline, "trace_class")
        .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    {
        CONTROL.set_classes(mask);
    }
    match modules::option(cmdline, "trace") {
        Some("com2") if com2::init() => {
            STREAM.store(true, Ordering::Relaxed);
            CONTROL.set_enabled(true);
            log::info!("tracing exits to COM2");
        }
        Some("com2") => log::warn!("trace=com2: no UART at COM2, tracing stays off"),
        Some("ring") => CONTROL.set_enabled(true),
        Some(other) => log::warn!("trace={other}: unknown sink (com2 or ring)"),
        None => {}
    }
    let vendor = match backend {
        Backend::Svm(_) => trace::VENDOR_SVM,
        Backend::Vmx(_) => trace::VENDOR_VMX,
    };
    emit(Record::tsc_hz(cpu(), rdtsc(), tsc_hz, vendor));
}

/// Applies the console's `trace` command and says what tracing does now. Turning it on
/// streams to COM2 when the machine has that UART, and always keeps the ring.
pub fn set_trace(setting: TraceSetting) -> alloc::string::String {
    match setting {
        TraceSetting::Show => {}
        TraceSetting::On => {
            if !STREAM.load(Ordering::Relaxed) && com2::init() {
                STREAM.store(true, Ordering::Relaxed);
            }
            CONTROL.set_enabled(true);
        }
        TraceSetting::Off => CONTROL.set_enabled(false),
        TraceSetting::Domain(id) => CONTROL.set_domain(id),
        TraceSetting::Classes(mask) => CONTROL.set_classes(mask),
    }
    let (domain, classes) = CONTROL.filter();
    let sink = if STREAM.load(Ordering::Relaxed) {
        "COM2 and the ring"
    } else {
        "the ring"
    };
    match (CONTROL.enabled(), domain) {
        (false, _) => alloc::string::String::from("tracing is off"),
        (true, Some(id)) => {
            alloc::format!("tracing domain {id} to {sink}, classes {classes:#010x}")
        }
        (true, None) => alloc::format!("tracing every domain to {sink}, classes {classes:#010x}"),
    }
}

fn emit(record: Record) {
    RING.lock().push(record);
    if STREAM.load(Ordering::Relaxed) {
        com2::write(&record.to_bytes());
    }
}

/// What the trace needs of an exit that only the state before handling has (RIP, the CPUID
/// leaf in RAX). Called right after the exit, at TSC `now`.
#[inline]
pub fn begin(vm: &Vm, exit: &ExitInfo, now: u64) -> ExitTrace {
    let traced = CONTROL.wants(vm.id, event::VMEXIT);
    let regs = vm.vcpu.regs();
    ExitTrace {
        tsc: now,
        raw: exit.raw,
        domain: vm.id,
        vcpu: vm.current_vcpu() as u32,
        qualification: if traced {
            trace::qualification(&exit.exit, regs)
        } else {
            0
        },
        rip: regs.rip,
    }
}

/// Counts (and traces) the exit `begin` saw, handled by TSC `done`.
#[inline]
pub fn end(vm: &mut Vm, exit: &ExitTrace, done: u64) {
    let cost = done.wrapping_sub(exit.tsc);
    if COUNTERS.load(Ordering::Relaxed) {
        vm.stats.vcpu_mut(exit.vcpu as usize).record(exit.raw, cost);
    }
    if CONTROL.wants(vm.id, event::VMEXIT) {
        name_domain(vm);
        name_exit(vm, exit.raw);
        emit(Record::vmexit(cpu(), exit, cost));
    }
}

fn name_exit(vm: &Vm, raw: u32) {
    let bit = match raw {
        0x400 => Some(0xFF),
        r if r < 0xFF => Some(r as usize),
        _ => None,
    };
    let first = bit.is_none_or(|b| {
        let mask = 1u64 << (b % 64);
        EXITS_NAMED[b / 64].fetch_or(mask, Ordering::Relaxed) & mask == 0
    });
    if first && CONTROL.wants(vm.id, event::EXIT_NAME) {
        emit(Record::exit_name(
            cpu(),
            rdtsc(),
            raw,
            vm.vcpu.exit_name(raw),
        ));
    }
}

fn name_domain(vm: &Vm) {
    let bit = 1u64.checked_shl(vm.id).unwrap_or(0);
    if NAMED.load(Ordering::Relaxed) & bit == 0 || bit == 0 {
        NAMED.fetch_or(bit, Ordering::Relaxed);
        if CONTROL.wants(vm.id, event::DOMAIN_NAME) {
            emit(Record::domain_name(cpu(), rdtsc(), vm.id, &vm.name));
        }
    }
}

/// Logs the domain's counters, one line per vCPU:
/// `domain NAME (id N) exits: vcpu 0 svm: total T in C cycles, CPUID 1000 in C cycles, ...`;
/// when it did not power off or reset, also its last exits still in the trace ring.
pub fn dump(vm: &Vm, reason: &StopReason) {
    let vendor = match vm.vcpu {
        AnyVcpu::Svm(_) => "svm",
        AnyVcpu::Vmx(_) => "vmx",
    };
    let name = |raw| vm.vcpu.exit_name(raw);
    for (i, stats) in vm.stats.vcpus().iter().enumerate() {
        log::info!(
            "domain {} (id {}) exits: vcpu {i} {vendor}: {}",
            vm.name,
            vm.id,
            Summary { stats, name: &name }
        );
    }
    if !matches!(reason, StopReason::PowerOff | StopReason::Reset) {
        dump_last_exits(vm);
    }
}

/// How many of a crashed domain's last exits are logged.
const LAST_EXITS: usize = 16;

fn dump_last_exits(vm: &Vm) {
    let ring = RING.lock();
    let mine = |r: &&Record| r.event == event::VMEXIT && r.data[1] >> 16 == vm.id;
    let skip = ring.iter().filter(mine).count().saturating_sub(LAST_EXITS);
    for r in ring.iter().filter(mine).skip(skip) {
        log::info!(
            "domain {} (id {}): exit at tsc {}: {} qual {:#x} rip {:#x} cost {}",
            vm.name,
            vm.id,
            r.tsc,
            vm.vcpu.exit_name(r.data[0]),
            r.data[2],
            r.data[3],
            r.data[4]
        );
    }
}
