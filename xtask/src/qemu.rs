//! QEMU command lines for booting the monitor: straight from its ELF with `-kernel` (QEMU's
//! multiboot loader, modules through `-initrd`) or from a GRUB ISO, with the guest console on
//! the terminal. Not a QEMU wrapper library: it builds `Command`s and checks QEMU is there.

use std::path::Path;
use std::process::Command;

use crate::boot::{Modules, MONITOR_CMDLINE};
use crate::error::{bail, Context, Result};
use crate::process;

pub const QEMU: &str = "qemu-system-x86_64";
/// Host memory of the emulated machine unless the user asks for another size.
pub const DEFAULT_MEM: &str = "2G";

/// What the emulated machine boots.
pub enum Media<'a> {
    /// The monitor ELF through QEMU's multiboot loader, with its modules.
    Kernel {
        monitor: &'a Path,
        modules: &'a Modules,
    },
    /// A bootable ISO (GRUB, see `iso.rs`).
    Cdrom(&'a Path),
}

/// How QEMU runs the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's emulator, whose `-cpu max` models SVM with nested paging.
    Tcg,
    /// KVM with the host CPU passed through: needs nested virtualization on the host.
    Kvm,
}

impl Accel {
    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
        }
    }
}

/// Checks that this machine can run the monitor under KVM: `/dev/kvm` is there and the KVM
/// module lets guests use VMX or SVM themselves (its `nested` parameter).
pub fn check_kvm() -> Result<()> {
    if std::fs::metadata("/dev/kvm").is_err() {
        bail!("--kvm: this machine has no /dev/kvm (no hardware virtualization, or KVM is not loaded)");
    }
    let nested = ["kvm_intel", "kvm_amd"].iter().any(|m| {
        std::fs::read_to_string(format!("/sys/module/{m}/parameters/nested"))
            .is_ok_and(|v| nested_enabled(&v))
    });
    if !nested {
        bail!("--kvm: KVM does not offer nested virtualization here (kvm_intel/kvm_amd nested=0); the monitor needs VMX or SVM inside its VM");
    }
    Ok(())
}

/// KVM's `nested` parameter reads `Y`/`N` (kvm_intel) or `1`/`0` (kvm_amd).
fn nested_enabled(value: &str) -> bool {
    matches!(value.trim(), "Y" | "y" | "1")
}

/// `qemu-system-x86_64` with the machine of the contract, the boot media, the console on the
/// terminal (`-nographic`: COM1 and the QEMU monitor multiplexed on stdio, Ctrl-A X quits),
/// then the user's extra arguments.
pub fn command(media: &Media, accel: Accel, mem: &str, extra: &[String]) -> Result<Command> {
    let mut cmd = Command::new(QEMU);
    cmd.args(accel.args());
    cmd.args(["-m", mem, "-smp", "2", "-no-reboot"]);
    match media {
        Media::Kernel { monitor, modules } => {
            cmd.arg("-kernel").arg(monitor);
            cmd.args(["-append", MONITOR_CMDLINE]);
            cmd.arg("-initrd").arg(module_list(modules)?);
        }
        Media::Cdrom(iso) => {
            cmd.arg("-cdrom").arg(iso).args(["-boot", "d"]);
        }
    }
    cmd.arg("-nographic").args(extra);
    Ok(cmd)
}

/// QEMU's multiboot `-initrd` value: module paths separated by commas. QEMU takes each
/// module's path up to the first space and passes the whole entry as its command line, so
/// the monitor sees the path and names the module by its base name.
fn module_list(modules: &Modules) -> Result<String> {
    let mut list = Vec::new();
    for module in modules.iter() {
        let path = module.path.to_string_lossy();
        if path.contains([',', ' ', '\t', '\n']) {
            bail!("QEMU cannot load module {path}: its path has a comma or a space");
        }
        list.push(path.into_owned());
    }
    Ok(list.join(","))
}

/// The first line of `qemu-system-x86_64 --version`; an error if QEMU is missing.
pub fn version() -> Result<String> {
    let out = process::stdout_of(Command::new(QEMU).arg("--version"))
        .context(|| format!("{QEMU} (install it: bash .ci/install-deps)"))?;
    Ok(out.lines().next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn kernel_boot_matches_the_contract() {
        let dir = std::env::temp_dir().join(format!("xtask-qemu-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let files = ["vmlinuz", "initramfs.cpio", "linux.cfg"].map(|f| dir.join(f));
        for f in &files {
            fs::write(f, b"x").unwrap();
        }
        let dir = dir.canonicalize().unwrap();
        let modules = Modules::new(&files.each_ref().map(|p| p.as_path())).unwrap();
        let hv = Path::new("/w/build/hv.elf");
        let extra = ["-s".to_string()];
        let cmd = command(
            &Media::Kernel {
                monitor: hv,
                modules: &modules,
            },
            Accel::Tcg,
            "2G",
            &extra,
        )
        .unwrap();
        assert_eq!(cmd.get_program(), QEMU);
        let d = dir.display();
        let list = format!("{d}/vmlinuz,{d}/initramfs.cpio,{d}/linux.cfg");
        let expected = [
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "2G",
            "-smp",
            "2",
            "-no-reboot",
            "-kernel",
            "/w/build/hv.elf",
            "-append",
            "console=com1 loglvl=info",
            "-initrd",
            &list,
            "-nographic",
            "-s",
        ];
        assert_eq!(args(&cmd), expected);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kvm_passes_the_host_cpu_through() {
        let cmd = command(&Media::Cdrom(Path::new("/i.iso")), Accel::Kvm, "1G", &[]).unwrap();
        assert_eq!(args(&cmd)[..4], ["-accel", "kvm", "-cpu", "host"]);
        assert!(nested_enabled("Y\n") && nested_enabled("1") && !nested_enabled("N"));
    }

    #[test]
    fn cdrom_boot_uses_the_iso() {
        let cmd = command(
            &Media::Cdrom(Path::new("/w/build/hv.iso")),
            Accel::Tcg,
            "512M",
            &[],
        )
        .unwrap();
        let a = args(&cmd);
        assert_eq!(a[..6], ["-accel", "tcg", "-cpu", "max", "-m", "512M"]);
        assert!(a.windows(2).any(|w| w == ["-cdrom", "/w/build/hv.iso"]));
        assert!(!a.iter().any(|x| x == "-kernel"));
        assert_eq!(a.last().map(String::as_str), Some("-nographic"));
    }

    #[test]
    fn paths_that_would_split_the_module_list_are_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-qemu-comma,{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vmlinuz"), b"x").unwrap();
        let modules = Modules::new(&[&dir.join("vmlinuz")]).unwrap();
        assert!(module_list(&modules).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
