//! A GRUB BIOS ISO that boots the monitor by multiboot2 with its modules, with GRUB itself on
//! the serial port, built by grub-mkrescue. Not a UEFI image, and not an installer: on real
//! hardware one copies the files and the menu entry into an existing GRUB (see README.md).

use std::fs;
use std::path::Path;

use crate::boot::{Modules, MONITOR_CMDLINE};
use crate::error::{bail, Context, Result};
use crate::process;

/// The menu and the grub-mkrescue command, shared with the test harness (which builds its
/// own ISOs for Bochs).
#[path = "../../tests/src/grub_iso.rs"]
mod grub_iso;

use grub_iso::{mkrescue, GRUB_I386_PC};

/// The GRUB menu for the monitor and `modules`.
pub fn grub_cfg(modules: &Modules) -> String {
    grub_iso::grub_cfg(MONITOR_CMDLINE, modules.iter().map(|m| m.name.as_str()))
}

/// Lays out /boot in `staging` (emptied first) and runs grub-mkrescue to write `out`.
pub fn make(monitor: &Path, modules: &Modules, staging: &Path, out: &Path) -> Result<()> {
    if !Path::new(GRUB_I386_PC).is_dir() {
        bail!("{GRUB_I386_PC} is missing (install grub-pc-bin: bash .ci/install-deps)");
    }
    if staging.exists() {
        fs::remove_dir_all(staging).context(|| format!("removing {}", staging.display()))?;
    }
    let boot = staging.join("boot");
    let grub = boot.join("grub");
    fs::create_dir_all(&grub).context(|| format!("creating {}", grub.display()))?;
    copy(monitor, &boot.join("hv.elf"))?;
    for m in modules.iter() {
        copy(&m.path, &boot.join(&m.name))?;
    }
    let cfg = grub.join("grub.cfg");
    fs::write(&cfg, grub_cfg(modules)).context(|| format!("writing {}", cfg.display()))?;
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    }
    process::run(&mut mkrescue(staging, out))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .context(|| format!("copying {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("xtask-iso-{tag}-{}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn default_modules(dir: &Path) -> Modules {
        let files = ["vmlinuz", "initramfs.cpio", "linux.cfg"].map(|f| dir.join(f));
        for f in &files {
            fs::write(f, f.file_name().unwrap().as_encoded_bytes()).unwrap();
        }
        Modules::new(&files.each_ref().map(|p| p.as_path())).unwrap()
    }

    #[test]
    fn grub_cfg_loads_the_monitor_and_names_each_module() {
        let dir = TempDir::new("cfg");
        assert_eq!(
            grub_cfg(&default_modules(&dir.0)),
            "serial --unit=0 --speed=115200\n\
             terminal_input serial\n\
             terminal_output serial\n\
             set timeout=0\n\
             \n\
             menuentry \"hv\" {\n\
             \x20   multiboot2 /boot/hv.elf console=com1 loglvl=info\n\
             \x20   module2 /boot/vmlinuz vmlinuz\n\
             \x20   module2 /boot/initramfs.cpio initramfs.cpio\n\
             \x20   module2 /boot/linux.cfg linux.cfg\n\
             \x20   boot\n\
             }\n"
        );
    }

    /// Needs grub-mkrescue and xorriso, which .ci/install-deps installs.
    #[test]
    fn iso_holds_the_monitor_the_modules_and_the_menu() {
        let dir = TempDir::new("make");
        let modules = default_modules(&dir.0);
        let monitor = dir.0.join("hv");
        fs::write(&monitor, b"not really a kernel").unwrap();
        let (staging, out) = (dir.0.join("root"), dir.0.join("out/hv.iso"));
        make(&monitor, &modules, &staging, &out).unwrap();
        let iso = fs::read(&out).unwrap();
        // ISO 9660 primary volume descriptor at sector 16 (ECMA-119 8.4).
        assert_eq!(&iso[0x8001..0x8006], b"CD001");
        let listing = process::stdout_of(
            std::process::Command::new("xorriso")
                .args(["-indev"])
                .arg(&out)
                .args(["-find", "/boot", "-type", "f"]),
        )
        .unwrap();
        for file in [
            "hv.elf",
            "vmlinuz",
            "initramfs.cpio",
            "linux.cfg",
            "grub/grub.cfg",
        ] {
            assert!(
                listing.contains(&format!("'/boot/{file}'")),
                "{file} missing:\n{listing}"
            );
        }
        assert_eq!(
            fs::read(staging.join("boot/hv.elf")).unwrap(),
            b"not really a kernel"
        );
    }
}
