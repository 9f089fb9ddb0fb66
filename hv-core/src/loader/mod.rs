//! Guest loaders: the Linux bzImage boot protocol (64-bit entry) and the ACPI tables the
//! guest finds at boot. They write into guest memory through `memory::GuestMemory` and return
//! the register state to start from; they do not touch vCPUs or the nested page tables.

pub mod acpi;
pub mod bzimage;
pub mod linux;
