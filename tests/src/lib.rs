//! Harness of the integration tests: boots the monitor with guest images and VM configs as
//! multiboot modules, under QEMU (SVM backend) or under Bochs from a GRUB ISO (VMX backend),
//! and waits for what the monitor and its guests print on COM1.
//! It judges nothing itself: the tests in `tests/tests` decide what output is right.

mod artifacts;
mod bochs;
mod bochsrc;
mod config;
mod console;
mod grub_iso;
pub mod linux;
mod machine;

pub use artifacts::Artifacts;
pub use config::VmConfig;
pub use console::{probe_lines, tail_lines};
pub use machine::{Boot, Emulator, Machine};
