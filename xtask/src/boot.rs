//! What the monitor is booted with, the same whether QEMU loads it with `-kernel` or GRUB
//! from an ISO: its command line and its modules (a guest kernel, an initramfs and a VM
//! config), each named by its file's base name, plus the default Linux config text.
//! Not the config parser: that is the monitor's; this only writes the default.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{bail, Context, Result};

/// The monitor's command line.
pub const MONITOR_CMDLINE: &str = "console=com1 loglvl=info";

/// The default guest kernel command line (contract: "Default Linux config").
pub const LINUX_EXTRA: &str =
    "console=ttyS0 earlyprintk=serial,ttyS0 no_timer_check tsc=reliable panic=-1";

/// The default Linux VM config, for a kernel and ramdisk module of the given names.
pub fn linux_cfg(kernel: &str, ramdisk: &str) -> String {
    format!(
        "name = \"linux\"\nkernel = \"{kernel}\"\nramdisk = \"{ramdisk}\"\nmemory = 256\nvcpus = 1\nextra = \"{LINUX_EXTRA}\"\n"
    )
}

/// One module: an absolute path and the name the monitor knows it by.
#[derive(Debug)]
pub struct Module {
    pub path: PathBuf,
    pub name: String,
}

/// The monitor's modules in load order.
#[derive(Debug)]
pub struct Modules(Vec<Module>);

impl Modules {
    /// Checks that every file exists, that its name can stand in a QEMU module list and a
    /// GRUB command line, and that no two modules share a name.
    pub fn new(files: &[&Path]) -> Result<Self> {
        let mut names = BTreeSet::new();
        let mut modules = Vec::new();
        for file in files {
            let path = file
                .canonicalize()
                .context(|| format!("module {}", file.display()))?;
            if !path.is_file() {
                bail!("module {} is not a file", path.display());
            }
            let name = name_of(&path)?;
            if !names.insert(name.clone()) {
                bail!("two modules are named {name}; the monitor tells modules apart by base name");
            }
            modules.push(Module { path, name });
        }
        Ok(Modules(modules))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Module> {
        self.0.iter()
    }
}

/// A module's name: the base name of its file, limited to characters that need no quoting
/// on a GRUB or QEMU command line and cannot split a QEMU `-initrd` list.
pub fn name_of(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fine = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
    if name.is_empty() || !name.chars().all(fine) {
        bail!("module file name {name:?} must be non-empty and use only A-Z a-z 0-9 . _ + -");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_the_contract_one() {
        assert_eq!(
            linux_cfg("vmlinuz", "initramfs.cpio"),
            "name = \"linux\"\n\
             kernel = \"vmlinuz\"\n\
             ramdisk = \"initramfs.cpio\"\n\
             memory = 256\n\
             vcpus = 1\n\
             extra = \"console=ttyS0 earlyprintk=serial,ttyS0 no_timer_check tsc=reliable panic=-1\"\n"
        );
    }

    #[test]
    fn module_names_are_base_names_without_separators() {
        assert_eq!(
            name_of(Path::new("/a/b/initramfs.cpio")).unwrap(),
            "initramfs.cpio"
        );
        assert!(name_of(Path::new("/a/my kernel")).is_err());
        assert!(name_of(Path::new("/a/k,1")).is_err());
        assert!(name_of(Path::new("/")).is_err());
    }

    #[test]
    fn modules_must_exist_and_have_distinct_names() {
        let dir = std::env::temp_dir().join(format!("xtask-boot-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("other")).unwrap();
        for f in ["vmlinuz", "linux.cfg", "other/vmlinuz"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let (k, c, k2) = (
            dir.join("vmlinuz"),
            dir.join("linux.cfg"),
            dir.join("other/vmlinuz"),
        );
        let modules = Modules::new(&[&k, &c]).unwrap();
        let names: Vec<_> = modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["vmlinuz", "linux.cfg"]);
        assert!(modules.iter().all(|m| m.path.is_absolute()));
        assert!(Modules::new(&[&k, &k2]).is_err());
        assert!(Modules::new(&[&dir.join("missing")]).is_err());
        assert!(Modules::new(&[&dir.join("other")]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
