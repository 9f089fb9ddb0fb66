//! The stock Debian guest kernel: resolves the current linux-image-<abi>-cloud-amd64 through
//! apt, downloads and unpacks the package once, and keeps only its bzImage as
//! build/cache/vmlinuz and the few modules the initramfs loads (`GUEST_MODULES`) in
//! build/cache/modules. Not a kernel builder, and it never touches the host's /boot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{bail, Context, Result};
use crate::process;

/// The metapackage that depends on the current cloud kernel.
const METAPACKAGE: &str = "linux-image-cloud-amd64";

/// The modules the initramfs loads, by path under lib/modules/<version>/, in load order: the
/// ACPI power button and the input event interface, so that busybox acpid sees the button;
/// then the virtio transport and drivers, each after what it depends on; then /dev/cpu/N/msr,
/// through which the test mode reads back the guest's paravirtual MSRs.
pub const GUEST_MODULES: [&str; 13] = [
    "kernel/drivers/acpi/button.ko",
    "kernel/drivers/input/evdev.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/char/virtio_console.ko",
    "kernel/arch/x86/kernel/msr.ko",
];

/// Where the guest modules are kept, each under its file name.
pub fn modules_dir(cache: &Path) -> PathBuf {
    cache.join("modules")
}

/// The cached file of module number `index`: its base name behind the index, so that loading
/// the directory's modules in name order loads them in `GUEST_MODULES` order.
fn module_file_name(index: usize, path: &str) -> String {
    format!("{index:02}-{}", path.rsplit('/').next().unwrap_or(path))
}

fn have_modules(cache: &Path) -> bool {
    GUEST_MODULES
        .iter()
        .enumerate()
        .all(|(i, m)| modules_dir(cache).join(module_file_name(i, m)).is_file())
}

/// Returns `dest`, fetching the kernel (and its modules) first unless they are already there.
pub fn fetch(cache: &Path, dest: &Path) -> Result<PathBuf> {
    if dest.is_file() && have_modules(cache) {
        eprintln!("kernel: using cached {}", dest.display());
        return Ok(dest.to_path_buf());
    }
    let package = resolve()?;
    eprintln!("fetching {package}…");
    fs::create_dir_all(cache).context(|| format!("creating {}", cache.display()))?;
    process::run(
        Command::new("apt-get")
            .arg("download")
            .arg(&package)
            .current_dir(cache),
    )?;
    let deb = find_deb(cache, &package)?;
    let unpacked = cache.join("unpacked");
    if unpacked.exists() {
        fs::remove_dir_all(&unpacked).context(|| format!("removing {}", unpacked.display()))?;
    }
    process::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let image = find_vmlinuz(&unpacked.join("boot"))?;
    let bytes = fs::read(&image).context(|| format!("reading {}", image.display()))?;
    check_bzimage(&bytes).context(|| format!("{} from {package}", image.display()))?;
    process::write_atomically(dest, &bytes)?;
    keep_modules(&unpacked.join("lib/modules"), &modules_dir(cache))
        .context(|| format!("modules of {package}"))?;
    fs::remove_dir_all(&unpacked).context(|| format!("removing {}", unpacked.display()))?;
    fs::remove_file(&deb).context(|| format!("removing {}", deb.display()))?;
    eprintln!("kernel: {} ({} bytes)", dest.display(), bytes.len());
    Ok(dest.to_path_buf())
}

/// Asks apt for the package name, updating the package lists once if apt knows none.
fn resolve() -> Result<String> {
    if let Some(name) = depends().ok().as_deref().and_then(kernel_package) {
        return Ok(name);
    }
    eprintln!("apt knows no {METAPACKAGE}; updating the package lists");
    process::run(Command::new("apt-get").args(["update", "-q"])).context(|| {
        "apt-get update (needs root; or run `bash .ci/install-deps` first)".to_string()
    })?;
    match kernel_package(&depends()?) {
        Some(name) => Ok(name),
        None => {
            bail!("`apt-cache depends {METAPACKAGE}` names no linux-image-*-cloud-amd64 package")
        }
    }
}

fn depends() -> Result<String> {
    process::stdout_of(Command::new("apt-cache").args(["depends", METAPACKAGE])).context(|| {
        "apt-cache (fetching the kernel needs a Debian host; or pass --kernel FILE)".to_string()
    })
}

/// The `Depends: linux-image-<abi>-cloud-amd64` line of `apt-cache depends` output.
fn kernel_package(depends: &str) -> Option<String> {
    depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|name| {
            name.starts_with("linux-image-")
                && name.ends_with("-cloud-amd64")
                && name.len() > "linux-image--cloud-amd64".len()
                && !name.contains(['<', '>', ' '])
        })
        .map(str::to_string)
}

/// The `.deb` that `apt-get download PACKAGE` left in `dir` (named PACKAGE_VERSION_ARCH.deb).
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    let entries = fs::read_dir(dir).context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .context(|| format!("listing {}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    bail!(
        "apt-get download left no {prefix}*.deb in {}",
        dir.display()
    )
}

/// The one boot/vmlinuz-* in an unpacked kernel package.
fn find_vmlinuz(boot: &Path) -> Result<PathBuf> {
    let entries = fs::read_dir(boot).context(|| format!("listing {}", boot.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .context(|| format!("listing {}", boot.display()))?
            .path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        {
            found.push(path);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no vmlinuz-* in {}", boot.display()),
        _ => bail!("several vmlinuz-* in {}", boot.display()),
    }
}

/// Copies `GUEST_MODULES` from the package's lib/modules/<version>/ into `dest`.
fn keep_modules(lib_modules: &Path, dest: &Path) -> Result<()> {
    let entries =
        fs::read_dir(lib_modules).context(|| format!("listing {}", lib_modules.display()))?;
    let versions: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    let [version] = versions.as_slice() else {
        bail!("expected one kernel version in {}", lib_modules.display());
    };
    fs::create_dir_all(dest).context(|| format!("creating {}", dest.display()))?;
    for (i, m) in GUEST_MODULES.iter().enumerate() {
        let from = version.join(m);
        let bytes = fs::read(&from).context(|| format!("reading {}", from.display()))?;
        process::write_atomically(&dest.join(module_file_name(i, m)), &bytes)?;
    }
    Ok(())
}

/// A bzImage has "HdrS" at 0x202 (Linux boot protocol, "The Real-Mode Kernel Header").
fn check_bzimage(bytes: &[u8]) -> Result<()> {
    if bytes.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        bail!("not a bzImage (no HdrS signature at 0x202)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_abi_package_from_apt_cache_output() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            kernel_package(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let virtual_only =
            "linux-image-cloud-amd64\n  Depends: <linux-image-6.1.0-56-cloud-amd64>\n";
        assert_eq!(kernel_package(virtual_only), None);
        assert_eq!(kernel_package("E: No packages found\n"), None);
        assert_eq!(
            kernel_package("  Depends: linux-image--cloud-amd64\n"),
            None
        );
    }

    #[test]
    fn finds_the_downloaded_deb_and_the_kernel_image() {
        let dir = std::env::temp_dir().join(format!("xtask-kernel-{}", std::process::id()));
        let boot = dir.join("boot");
        fs::create_dir_all(&boot).unwrap();
        assert!(find_deb(&dir, "linux-image-6.1.0-56-cloud-amd64").is_err());
        assert!(find_vmlinuz(&boot).is_err());
        fs::write(
            dir.join("linux-image-6.1.0-56-cloud-amd64_6.1.158-1_amd64.deb"),
            b"",
        )
        .unwrap();
        fs::write(boot.join("vmlinuz-6.1.0-56-cloud-amd64"), b"").unwrap();
        fs::write(boot.join("config-6.1.0-56-cloud-amd64"), b"").unwrap();
        assert!(find_deb(&dir, "linux-image-6.1.0-56-cloud-amd64").is_ok());
        assert_eq!(
            find_vmlinuz(&boot).unwrap(),
            boot.join("vmlinuz-6.1.0-56-cloud-amd64")
        );
        fs::write(boot.join("vmlinuz-6.1.0-57-cloud-amd64"), b"").unwrap();
        assert!(find_vmlinuz(&boot).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keeps_the_guest_modules_of_the_one_kernel_version() {
        let dir = std::env::temp_dir().join(format!("xtask-modules-{}", std::process::id()));
        let lib = dir.join("lib/modules");
        let version = lib.join("6.1.0-56-cloud-amd64");
        for m in GUEST_MODULES {
            let path = version.join(m);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, m.as_bytes()).unwrap();
        }
        let cache = dir.join("cache");
        assert!(!have_modules(&cache));
        keep_modules(&lib, &modules_dir(&cache)).unwrap();
        assert!(have_modules(&cache));
        assert_eq!(
            fs::read(modules_dir(&cache).join("01-evdev.ko")).unwrap(),
            b"kernel/drivers/input/evdev.ko"
        );
        fs::create_dir_all(lib.join("6.1.0-57-cloud-amd64")).unwrap();
        assert!(keep_modules(&lib, &modules_dir(&cache)).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_bzimages_are_accepted() {
        let mut image = vec![0u8; 0x400];
        assert!(check_bzimage(&image).is_err());
        assert!(check_bzimage(b"short").is_err());
        image[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(check_bzimage(&image).is_ok());
    }
}
