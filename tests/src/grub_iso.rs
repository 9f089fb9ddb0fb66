//! A GRUB BIOS ISO of the monitor and its modules: its menu (`grub.cfg`: GRUB on the serial
//! port, no delay, one entry loading `/boot/hv.elf` by multiboot2 and each module as
//! `module2 /boot/NAME NAME`; GRUB passes the text after the path as the module's command line,
//! and the monitor names a module by that text's first word) and the grub-mkrescue command that
//! turns a directory into the image.
//!
//! One source for two crates: the test harness compiles it as a module and xtask includes the
//! same file with `#[path]`, so both build the same ISO. Not here: laying out the directory
//! (each user copies its own files).

use std::path::Path;
use std::process::Command;

/// GRUB's BIOS platform files, from Debian's grub-pc-bin.
pub const GRUB_I386_PC: &str = "/usr/lib/grub/i386-pc";

/// The menu booting the monitor with `monitor_cmdline` and the modules in order, each a file
/// `/boot/NAME` on the image.
pub fn grub_cfg<'a>(monitor_cmdline: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let mut cfg = format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial\n\
         terminal_output serial\n\
         set timeout=0\n\
         \n\
         menuentry \"hv\" {{\n\
         \x20   multiboot2 /boot/hv.elf {monitor_cmdline}\n"
    );
    for name in names {
        cfg.push_str(&format!("    module2 /boot/{name} {name}\n"));
    }
    cfg.push_str("    boot\n}\n");
    cfg
}

/// grub-mkrescue writing `out` from `staging` for BIOS only, without translations, fonts or
/// themes (a serial console needs none of them), which keeps the image small and the build
/// under a second.
pub fn mkrescue(staging: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("grub-mkrescue");
    cmd.args(["-d", GRUB_I386_PC, "-o"])
        .arg(out)
        .arg(staging)
        .args(["--locales=", "--fonts=", "--themes="]);
    cmd
}
