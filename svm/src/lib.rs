//! The AMD-V (SVM) backend: feature detection, enabling SVM on a CPU, the VMCB, the world switch
//! and the decoding of #VMEXIT into the vendor-neutral exit enum. It implements `vcpu::Vcpu`.
//!
//! It holds nothing device- or loader-specific: those are shared in `hv-core` and `devices`.
//! Physical memory is assumed identity-mapped (the monitor's own page tables), so the address of
//! a page the backend allocates is also its physical address.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod exit;
pub mod features;
pub mod intercepts;
pub mod nmi;
mod switch;
pub mod vcpu;
pub mod vmcb;

pub use features::Features;
pub use vcpu::{Shared, SvmVcpu};
