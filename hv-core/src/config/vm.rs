//! The typed VM configuration: the `xl.cfg` keys this monitor understands, checked and with
//! xl's defaults (`docs/man/xl.cfg.5.pod.in`; the command line is built as `parse_cmdline` in
//! `tools/xl/xl_parse.c` does).
//!
//! It is not the generic parser, and it does not load the kernel: `kernel`, `ramdisk` and
//! `modules` name boot modules the loader looks up.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::error::{truncated, ConfigError, ErrorKind};
use super::{parse, Config, Value};

/// Guest RAM when `memory` is not set, in MiB (xl's default is also 128).
pub const MEMORY_MIB_DEFAULT: u64 = 128;
/// Smallest guest RAM accepted, in MiB.
pub const MEMORY_MIB_MIN: u64 = 16;
/// Largest guest RAM accepted, in MiB (1 TiB).
pub const MEMORY_MIB_MAX: u64 = 1 << 20;
/// Most vCPUs per VM.
pub const VCPUS_MAX: u32 = 64;

/// One VM as the monitor builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    /// The boot module holding the kernel.
    pub kernel: String,
    /// The boot module holding the initial ramdisk.
    pub ramdisk: Option<String>,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// The kernel command line: `cmdline`, or else `root=ROOT EXTRA`.
    pub cmdline: String,
    /// How the kernel is booted (`type`).
    pub kind: KernelType,
    /// Extra boot modules (`modules`), each `NAME ARGS`: the module named NAME, handed to the
    /// guest with this whole string as its command line.
    pub modules: Vec<String>,
    /// Virtual disks (`disk`), in order.
    pub disks: Vec<super::DiskSpec>,
    /// Virtual NICs (`vif`), in order.
    pub vifs: Vec<super::VifSpec>,
}

/// The boot protocol of the kernel (`type`; xl's "hvm" and "pvh", plus "multiboot").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelType {
    /// A bzImage by the Linux boot protocol.
    #[default]
    Hvm,
    /// An ELF kernel with a `XEN_ELFNOTE_PHYS32_ENTRY` note, by the PVH boot ABI.
    Pvh,
    /// A Multiboot (version 1) kernel.
    Multiboot,
}

impl KernelType {
    const CHOICES: &'static str = "'hvm', 'pvh' or 'multiboot'";

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "hvm" => Some(Self::Hvm),
            "pvh" => Some(Self::Pvh),
            "multiboot" => Some(Self::Multiboot),
            _ => None,
        }
    }
}

impl VmConfig {
    /// The keys `from_config` reads; pass them to `Config::unknown_keys` to warn about the rest.
    pub const KNOWN_KEYS: &'static [&'static str] = &[
        "name", "kernel", "ramdisk", "memory", "vcpus", "cmdline", "root", "extra", "type",
        "modules", "disk", "vif",
    ];

    /// Checks and types the settings of `config`.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let memory_mib = bounded(
            config,
            "memory",
            MEMORY_MIB_DEFAULT,
            MEMORY_MIB_MIN,
            MEMORY_MIB_MAX,
        )?;
        let vcpus = bounded(config, "vcpus", 1, 1, u64::from(VCPUS_MAX))?;
        Ok(Self {
            name: mandatory(config, "name")?,
            kernel: mandatory(config, "kernel")?,
            ramdisk: optional(config, "ramdisk")?,
            memory_mib,
            vcpus: u32::try_from(vcpus).unwrap_or(VCPUS_MAX),
            cmdline: cmdline(config)?,
            kind: kernel_type(config)?,
            modules: modules(config)?,
            disks: super::devices::disks(config)?,
            vifs: super::devices::vifs(config)?,
        })
    }
}

/// Parses `text` (named `file` in errors) and types it. Unknown keys are ignored; use `parse`,
/// `VmConfig::from_config` and `Config::unknown_keys` to warn about them.
pub fn parse_vm(file: &str, text: &str) -> Result<VmConfig, ConfigError> {
    VmConfig::from_config(&parse(file, text)?)
}

/// A non-empty string setting that must be present; a missing one is reported at the end of
/// the file, where it would have to be added.
fn mandatory(config: &Config, key: &'static str) -> Result<String, ConfigError> {
    optional(config, key)?.ok_or_else(|| config.error(config.end(), ErrorKind::Missing { key }))
}

/// A string setting that, when present, must not be empty.
fn optional(config: &Config, key: &'static str) -> Result<Option<String>, ConfigError> {
    match config.get_string(key)? {
        None => Ok(None),
        Some("") => Err(config.error(position(config, key), ErrorKind::Empty { key })),
        Some(s) => Ok(Some(s.into())),
    }
}

/// A number setting within `min..=max`, `default` when absent.
pub(super) fn bounded(
    config: &Config,
    key: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let n = config.get_u64(key)?.unwrap_or(default);
    if (min..=max).contains(&n) {
        return Ok(n);
    }
    let kind = ErrorKind::OutOfRange {
        key,
        min,
        max,
        found: n,
    };
    Err(config.error(position(config, key), kind))
}

pub(super) fn position(config: &Config, key: &str) -> super::Position {
    config.setting(key).map_or(config.end(), |s| s.pos)
}

/// The kernel command line as xl builds it: `cmdline` as is (then `root` and `extra` are
/// ignored), otherwise `root=ROOT` and `extra` joined by a space.
fn cmdline(config: &Config) -> Result<String, ConfigError> {
    let root = config.get_string("root")?;
    let extra = config.get_string("extra")?;
    if let Some(cmdline) = config.get_string("cmdline")? {
        return Ok(cmdline.into());
    }
    Ok(match (root, extra) {
        (Some(root), Some(extra)) => format!("root={root} {extra}"),
        (Some(root), None) => format!("root={root}"),
        (None, Some(extra)) => extra.into(),
        (None, None) => String::new(),
    })
}

/// `type`, `hvm` when absent.
fn kernel_type(config: &Config) -> Result<KernelType, ConfigError> {
    let Some(name) = config.get_string("type")? else {
        return Ok(KernelType::default());
    };
    KernelType::from_name(name).ok_or_else(|| {
        let kind = ErrorKind::NotAChoice {
            key: "type",
            found: truncated(name),
            choices: KernelType::CHOICES,
        };
        config.error(position(config, "type"), kind)
    })
}

/// `modules`: a list of non-empty strings, each starting with a module name.
fn modules(config: &Config) -> Result<Vec<String>, ConfigError> {
    let Some(items) = config.get_list("modules")? else {
        return Ok(Vec::new());
    };
    let pos = position(config, "modules");
    items
        .iter()
        .map(|item| match item {
            Value::List(_) => Err(config.error(
                pos,
                ErrorKind::NotSingle {
                    key: "modules".into(),
                },
            )),
            Value::Str(s) | Value::Num { text: s, .. } if s.trim().is_empty() => {
                Err(config.error(pos, ErrorKind::Empty { key: "modules" }))
            }
            Value::Str(s) | Value::Num { text: s, .. } => Ok(s.trim().into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(extra: &str) -> Result<VmConfig, ConfigError> {
        parse_vm("t.cfg", &format!("name = 'a'\nkernel = 'k'\n{extra}"))
    }

    #[test]
    fn type_defaults_to_hvm_and_takes_three_values() {
        assert_eq!(vm("").unwrap().kind, KernelType::Hvm);
        assert_eq!(vm("type = 'hvm'").unwrap().kind, KernelType::Hvm);
        assert_eq!(vm("type = \"pvh\"").unwrap().kind, KernelType::Pvh);
        assert_eq!(
            vm("type = 'multiboot'").unwrap().kind,
            KernelType::Multiboot
        );
        let e = format!("{}", vm("type = 'pv'").unwrap_err());
        assert!(e.starts_with("t.cfg:3:8: "), "{e}");
        assert!(e.contains("'pv'") && e.contains("'multiboot'"), "{e}");
        assert!(vm("type = ['pvh']").is_err());
    }

    #[test]
    fn modules_are_a_list_of_name_and_arguments() {
        assert!(vm("").unwrap().modules.is_empty());
        let v = vm("modules = [ 'mod.bin a=1 b', \"other\" ]").unwrap();
        assert_eq!(v.modules, ["mod.bin a=1 b", "other"]);
        assert!(
            vm("modules = 'x'").is_err(),
            "a single string is not a list"
        );
        assert!(vm("modules = [ ' ' ]").is_err());
        assert!(vm("modules = [ ['x'] ]").is_err());
    }
}
