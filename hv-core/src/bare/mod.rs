//! The bare-metal host layer of the monitor binary: entry from the boot loader, the serial line,
//! the IDT, the heap, host time, and reading the boot loader's information. Everything that
//! executes privileged instructions on the host lives here (and in `svm`/`vmx`).

pub mod bootinfo;
pub mod clock;
pub mod com2;
pub mod cpu;
mod entry;
pub mod fpu;
pub mod heap;
pub mod idt;
pub mod lapic;
pub mod pci;
pub mod serial;
pub mod smp;
pub mod timer;
