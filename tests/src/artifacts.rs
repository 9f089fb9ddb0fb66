//! The build artifacts the tests boot, named by environment variables that `cargo xtask test`
//! sets. Not here: building them (xtask does).

use std::env;
use std::path::PathBuf;

/// Paths of the monitor and the guest images.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// `HV_ELF`: the monitor.
    pub hv: PathBuf,
    /// `HV_PROBE`: the probe guest as a bzImage.
    pub probe: PathBuf,
    /// `HV_KERNEL`: the stock Linux bzImage.
    pub kernel: PathBuf,
    /// `HV_INITRD`: the busybox initramfs.
    pub initrd: PathBuf,
    /// `HV_VMLINUX`: the ELF vmlinux inside the stock kernel's bzImage, for PVH.
    pub vmlinux: PathBuf,
    /// `HV_MBTEST`: the multiboot test guest as a flat image.
    pub mbtest: PathBuf,
    /// `HV_BENCH`: the bench guest as a bzImage.
    pub bench: PathBuf,
    /// `HV_XTASK`: the xtask program, for `trace report`.
    pub xtask: PathBuf,
}

impl Artifacts {
    /// Reads the artifact paths from the environment.
    ///
    /// # Panics
    /// If a variable is unset or names no file: the tests were not started by `cargo xtask test`.
    #[track_caller]
    pub fn from_env() -> Self {
        Artifacts {
            hv: artifact("HV_ELF"),
            probe: artifact("HV_PROBE"),
            kernel: artifact("HV_KERNEL"),
            initrd: artifact("HV_INITRD"),
            vmlinux: artifact("HV_VMLINUX"),
            mbtest: artifact("HV_MBTEST"),
            bench: artifact("HV_BENCH"),
            xtask: artifact("HV_XTASK"),
        }
    }
}

#[track_caller]
fn artifact(variable: &str) -> PathBuf {
    const HOW: &str = "run the integration tests through `cargo xtask test`";
    let Some(path) = env::var_os(variable) else {
        panic!("{variable} is not set: {HOW}");
    };
    let path = PathBuf::from(path);
    match path.canonicalize() {
        Ok(path) if path.is_file() => path,
        _ => panic!("{variable}={} is not a file: {HOW}", path.display()),
    }
}
