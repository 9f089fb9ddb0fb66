//! Harness of the integration tests: boots the monitor under QEMU with guest images and VM
//! configs as multiboot modules, and waits for what the monitor and its guests print on COM1.
//! It judges nothing itself: the tests in `tests/tests` decide what output is right.

mod artifacts;
mod config;
mod console;
mod machine;

pub use artifacts::Artifacts;
pub use config::VmConfig;
pub use console::{probe_lines, tail_lines};
pub use machine::{Boot, Machine};
