//! The monitor's vendor-neutral core as a library: configuration, the guest CPUID policy, guest
//! loaders, the instruction emulator, guest memory and the exit loop. Everything here builds and
//! unit-tests on the host; the bare-metal boot path lives in the `hv` binary (`src/main.rs`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod config;
pub mod console;
pub mod cpuid;
pub mod domain;
pub mod emulate;
pub mod frames;
pub mod hostdev;
pub mod loader;
pub mod memory;
pub mod modules;
pub mod msr;
pub mod pv_eoi;
pub mod pvclock;
pub mod sched;
pub mod stats;
pub mod steal_time;
pub mod trace;
