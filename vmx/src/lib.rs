//! The Intel VT-x backend (VMX with EPT, SDM Vol. 3C chapters 24-29): capability detection and
//! control adjustment, VMXON with the host's own GDT and TSS, the per-vCPU VMCS, the world
//! switch, exit decoding into the vendor-neutral exit enum, and event injection with
//! interrupt-window exits, the guest's CR0/CR4 writes VMX makes exit. It implements `vcpu::Vcpu`.
//!
//! It holds nothing device- or loader-specific: those are shared in `hv-core` and `devices`.
//! Physical memory is assumed identity-mapped (the monitor's own page tables), so the address of
//! a page the backend allocates is also its physical address. One CPU runs every vCPU.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod controls;
pub mod cr;
pub mod event;
pub mod exit;
pub mod features;
pub mod guest;
mod guest_msrs;
pub mod host;
pub mod msr_bitmap;
mod switch;
pub mod vcpu;
pub mod vmcs;
pub mod xcr0;

pub use features::Features;
pub use vcpu::{Shared, VmxVcpu};
