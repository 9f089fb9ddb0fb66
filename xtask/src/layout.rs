//! Where the artifacts of the contract live: everything under <workspace>/build/.
//! Not where cargo puts its own outputs; cargo reports those (see `cargo.rs`).

use std::path::{Path, PathBuf};

/// The paths of one workspace.
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The workspace xtask was built from (its manifest directory's parent).
    pub fn of_this_workspace() -> Self {
        let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        Layout {
            root: xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn build_dir(&self) -> PathBuf {
        self.root.join("build")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.build_dir().join("cache")
    }

    pub fn hv_elf(&self) -> PathBuf {
        self.build_dir().join("hv.elf")
    }

    pub fn probe_bzimage(&self) -> PathBuf {
        self.build_dir().join("probe.bzImage")
    }

    pub fn bench_bzimage(&self) -> PathBuf {
        self.build_dir().join("bench.bzImage")
    }

    /// The bench guest as an ELF with a multiboot header, for QEMU's `-kernel`.
    pub fn bench_elf(&self) -> PathBuf {
        self.build_dir().join("bench.elf")
    }

    /// Configs and scratch files of `cargo xtask bench` and `trace record`.
    pub fn bench_dir(&self) -> PathBuf {
        self.build_dir().join("bench")
    }

    pub fn trace_bin(&self) -> PathBuf {
        self.build_dir().join("trace.bin")
    }

    pub fn bench_json(&self) -> PathBuf {
        self.build_dir().join("bench.json")
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.cache_dir().join("vmlinuz")
    }

    pub fn initramfs(&self) -> PathBuf {
        self.build_dir().join("initramfs.cpio")
    }

    /// The default Linux config, for the default kernel and initramfs.
    pub fn linux_cfg(&self) -> PathBuf {
        self.build_dir().join("linux.cfg")
    }

    /// The config `run` writes when the user names a kernel or initramfs but no config.
    pub fn custom_cfg_dir(&self) -> PathBuf {
        self.build_dir().join("custom")
    }

    pub fn iso(&self) -> PathBuf {
        self.build_dir().join("hv.iso")
    }

    /// The directory grub-mkrescue turns into the ISO.
    pub fn iso_staging(&self) -> PathBuf {
        self.build_dir().join("iso-root")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_where_the_contract_says() {
        let layout = Layout::of_this_workspace();
        assert!(layout.root().join("Cargo.toml").is_file());
        assert!(layout.root().join("xtask").is_dir());
        let rel = |p: PathBuf| p.strip_prefix(layout.root()).unwrap().to_path_buf();
        assert_eq!(rel(layout.hv_elf()), Path::new("build/hv.elf"));
        assert_eq!(
            rel(layout.probe_bzimage()),
            Path::new("build/probe.bzImage")
        );
        assert_eq!(rel(layout.vmlinuz()), Path::new("build/cache/vmlinuz"));
        assert_eq!(rel(layout.initramfs()), Path::new("build/initramfs.cpio"));
        assert_eq!(rel(layout.linux_cfg()), Path::new("build/linux.cfg"));
    }
}
