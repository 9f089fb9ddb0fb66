//! Guest loaders: the Linux bzImage boot protocol (64-bit entry), PVH ELF kernels and
//! Multiboot (version 1) kernels (both entered in 32-bit protected mode, sharing `boot32`), the
//! ELF reader they use, and the ACPI tables the guest finds at boot. They write into guest
//! memory through `memory::GuestMemory` and return the register state to start from; they do
//! not touch vCPUs or the nested page tables.

pub mod acpi;
pub mod boot32;
pub mod bzimage;
pub mod elf;
pub mod linux;
pub mod multiboot;
pub mod pvh;
#[cfg(test)]
mod testbuf;
