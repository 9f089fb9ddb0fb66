//! The monitor's management console on its serial line, the host-testable parts: the line
//! discipline of the prompt (`line`), the commands and their arguments (`command`), the ring
//! that keeps each guest's console output while nobody watches it (`ring`), and the `list` and
//! `top` tables in Xen's formats (`table`).
//!
//! It is not the wiring to the serial port and the domains, which lives in the monitor binary.

pub mod command;
pub mod line;
pub mod ring;
pub mod table;

/// The prompt printed when the console belongs to the monitor.
pub const PROMPT: &str = "hv> ";
/// Ctrl-]: leaves a guest's console for the monitor's prompt (xl's default escape).
pub const ESCAPE: u8 = 0x1d;
