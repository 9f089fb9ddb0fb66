//! The `disk` and `vif` keys: xl's DISKSPEC (`docs/man/xl-disk-configuration.5.pod.in`) and
//! VIFSPEC (`docs/man/xl-network-configuration.5.pod.in`) strings, typed.
//!
//! DISKSPEC takes positional `target, format, vdev, access` or named `target=, format=, vdev=,
//! access=, devtype=` parameters; an empty value means the default, each parameter may appear
//! once, and `target=` comes last because it may hold commas. VIFSPEC is `key=value` pairs; keys
//! this monitor does not use (script, vifname, rate, ...) are accepted and ignored, as an xl
//! without those backends would. It is not device creation: the launcher attaches what these
//! describe.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::error::{ConfigError, ErrorKind};
use super::vm::position;
use super::Config;

/// Where a virtual disk's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskTarget {
    /// A boot module, by name (a path names the module with that base name); guest writes are
    /// kept in memory for the VM's lifetime.
    Module(String),
    /// `phy:DEVICE`, a partition of a host disk.
    Phy(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub target: DiskTarget,
    pub vdev: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifSpec {
    /// `mac=`; `None` asks for xl's default (00:16:3e plus three random bytes).
    pub mac: Option<[u8; 6]>,
    pub bridge: String,
}

/// Bridge name when `bridge=` is not given (xl's default).
pub const DEFAULT_BRIDGE: &str = "xenbr0";

/// The `disk` list.
pub fn disks(config: &Config) -> Result<Vec<DiskSpec>, ConfigError> {
    specs(config, "disk", parse_disk)
}

/// The `vif` list.
pub fn vifs(config: &Config) -> Result<Vec<VifSpec>, ConfigError> {
    specs(config, "vif", parse_vif)
}

fn specs<T>(
    config: &Config,
    key: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ConfigError> {
    let Some(items) = config.get_list(key)? else {
        return Ok(Vec::new());
    };
    let err = |message| config.error(position(config, key), ErrorKind::BadSpec { key, message });
    items
        .iter()
        .map(|item| {
            let text = item
                .as_atom()
                .ok_or_else(|| err(String::from("a list where a string is expected")))?;
            parse(text).map_err(err)
        })
        .collect()
}

/// One DISKSPEC. Three positional parameters whose second is not a format are the legacy
/// `target, vdev[:devtype], access` form (as in `'phy:/dev/vg/guest,xvda,w'`).
pub fn parse_disk(spec: &str) -> Result<DiskSpec, String> {
    let names = ["target", "format", "vdev", "access", "devtype"];
    let mut values: [Option<&str>; 5] = [None; 5];
    let mut positional: Vec<&str> = Vec::new();
    let mut rest = spec;
    while !rest.is_empty() {
        let trimmed = rest.trim_start();
        if let Some(target) = trimmed.strip_prefix("target=") {
            set(&mut values, &names, 0, target.trim())?;
            break;
        }
        let (piece, tail) = trimmed.split_once(',').unwrap_or((trimmed, ""));
        rest = tail;
        let piece = piece.trim();
        match piece.split_once('=') {
            Some((key, value)) => {
                let index = names
                    .iter()
                    .position(|n| *n == key.trim())
                    .ok_or_else(|| format!("unknown disk parameter '{}'", key.trim()))?;
                set(&mut values, &names, index, value.trim())?;
            }
            None => positional.push(piece),
        }
    }
    let legacy = positional.len() == 3
        && !matches!(positional[1], "" | "raw" | "qcow" | "qcow2" | "vhd" | "qed");
    let order: &[usize] = if legacy { &[0, 2, 3] } else { &[0, 1, 2, 3] };
    if positional.len() > order.len() {
        return Err(format!(
            "too many positional parameters at '{}'",
            positional[order.len()]
        ));
    }
    for (&index, value) in order.iter().zip(positional) {
        set(&mut values, &names, index, value)?;
    }
    let [target, format, vdev, access, devtype] = values.map(|v| v.filter(|v| !v.is_empty()));
    let target = target.ok_or("no target")?;
    let (vdev, vdev_type) = match vdev.ok_or("no vdev")?.split_once(':') {
        Some((vdev, kind)) => (vdev, Some(kind)),
        None => (vdev.unwrap_or_default(), None),
    };
    if !matches!(format, None | Some("raw")) {
        return Err(format!(
            "format '{}' is not supported (only raw)",
            format.unwrap_or("")
        ));
    }
    let cdrom = match devtype.or(vdev_type) {
        None | Some("disk") => false,
        Some("cdrom") => true,
        Some(other) => return Err(format!("devtype '{other}' is not 'disk' or 'cdrom'")),
    };
    let read_only = match access {
        None | Some("rw" | "w") => cdrom,
        Some("ro" | "r") => true,
        Some(other) => return Err(format!("access '{other}' is not 'rw' or 'ro'")),
    };
    let target = match target.strip_prefix("phy:") {
        Some(dev) if !dev.is_empty() => DiskTarget::Phy(dev.into()),
        Some(_) => return Err(String::from("'phy:' names no device")),
        None => DiskTarget::Module(target.rsplit('/').next().unwrap_or(target).into()),
    };
    Ok(DiskSpec {
        target,
        vdev: vdev.into(),
        read_only,
    })
}

fn set<'a>(
    values: &mut [Option<&'a str>; 5],
    names: &[&str; 5],
    index: usize,
    value: &'a str,
) -> Result<(), String> {
    match values.get_mut(index) {
        Some(slot @ None) => {
            *slot = Some(value);
            Ok(())
        }
        _ => Err(format!(
            "'{}' given twice",
            names.get(index).unwrap_or(&"?")
        )),
    }
}

/// One VIFSPEC.
pub fn parse_vif(spec: &str) -> Result<VifSpec, String> {
    let mut vif = VifSpec {
        mac: None,
        bridge: DEFAULT_BRIDGE.into(),
    };
    for piece in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = piece
            .split_once('=')
            .ok_or_else(|| format!("'{piece}' is not KEY=VALUE"))?;
        match key.trim() {
            "mac" => {
                let mac = devices::virtio::net::parse_mac(value.trim())
                    .ok_or_else(|| format!("'{}' is not a MAC address", value.trim()))?;
                if mac[0] & 1 != 0 {
                    return Err(format!("'{}' is a multicast MAC address", value.trim()));
                }
                vif.mac = Some(mac);
            }
            "bridge" => vif.bridge = value.trim().into(),
            _ => {}
        }
    }
    Ok(vif)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, vdev: &str, read_only: bool) -> DiskSpec {
        DiskSpec {
            target: DiskTarget::Module(name.into()),
            vdev: vdev.into(),
            read_only,
        }
    }

    #[test]
    fn positional_and_named_forms_agree() {
        let named = parse_disk("format=raw, vdev=xvda, access=rw, target=rootfs.img").unwrap();
        assert_eq!(named, module("rootfs.img", "xvda", false));
        assert_eq!(parse_disk("rootfs.img,raw,xvda,rw").unwrap(), named);
        assert_eq!(parse_disk("/boot/rootfs.img,,xvda").unwrap(), named);
        assert_eq!(
            parse_disk("/root/image.iso,,hdc,cdrom").unwrap_err(),
            "access 'cdrom' is not 'rw' or 'ro'"
        );
        assert_eq!(
            parse_disk("phy:/dev/vg/guest,xvda,w").unwrap(),
            DiskSpec {
                target: DiskTarget::Phy("/dev/vg/guest".into()),
                vdev: "xvda".into(),
                read_only: false
            }
        );
        assert_eq!(
            parse_disk("a.iso,hdc:cdrom,r").unwrap(),
            module("a.iso", "hdc", true)
        );
        assert_eq!(
            parse_disk("format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso")
                .unwrap(),
            module("image.iso", "hdc", true)
        );
        assert_eq!(
            parse_disk("vdev=xvdb, devtype=cdrom, target=a.iso").unwrap(),
            module("a.iso", "xvdb", true)
        );
    }

    #[test]
    fn target_last_keeps_its_commas_and_phy_is_recognised() {
        assert_eq!(
            parse_disk("vdev=xvda, target=phy:/dev/vda1,x")
                .unwrap()
                .target,
            DiskTarget::Phy("/dev/vda1,x".into())
        );
        assert_eq!(
            parse_disk("vdev=xvda, target=phy:").unwrap_err(),
            "'phy:' names no device"
        );
    }

    #[test]
    fn bad_disk_specs() {
        for (spec, why) in [
            ("", "no target"),
            ("a.img", "no vdev"),
            (
                "a.img,qcow2,xvda",
                "format 'qcow2' is not supported (only raw)",
            ),
            (
                "a.img,,xvda,rw,extra",
                "too many positional parameters at 'extra'",
            ),
            ("vdev=xvda, vdev=xvdb, target=a", "'vdev' given twice"),
            ("a.img, target=b.img", "'target' given twice"),
            ("size=3, target=a", "unknown disk parameter 'size'"),
        ] {
            assert_eq!(parse_disk(spec).unwrap_err(), why, "{spec}");
        }
    }

    #[test]
    fn vif_specs() {
        assert_eq!(
            parse_vif("").unwrap(),
            VifSpec {
                mac: None,
                bridge: "xenbr0".into()
            }
        );
        let vif = parse_vif("mac=00:16:3E:74:3d:76,model=rtl8139,bridge=br1").unwrap();
        assert_eq!(vif.mac, Some([0, 0x16, 0x3E, 0x74, 0x3D, 0x76]));
        assert_eq!(vif.bridge, "br1");
        assert!(parse_vif("mac=00:16:3e").is_err());
        assert!(parse_vif("mac=01:00:5e:00:00:01").is_err());
        assert!(parse_vif("bridge").is_err());
    }

    #[test]
    fn lists_from_a_config_report_the_key_position() {
        let config = crate::config::parse(
            "t.cfg",
            "disk = ['vdev=xvda, target=a.img', 'b.img,,xvdb,ro']\nvif = ['', 'mac=00:16:3e:00:00:01']\n",
        )
        .unwrap();
        let d = disks(&config).unwrap();
        assert_eq!(
            d,
            [
                module("a.img", "xvda", false),
                module("b.img", "xvdb", true)
            ]
        );
        assert_eq!(vifs(&config).unwrap().len(), 2);
        let bad = crate::config::parse("t.cfg", "\ndisk = ['x']").unwrap();
        let e = disks(&bad).unwrap_err();
        assert_eq!(alloc::format!("{e}"), "t.cfg:2:8: 'disk': no vdev");
        let single = crate::config::parse("t.cfg", "vif = 'mac=00:16:3e:00:00:01'").unwrap();
        assert!(vifs(&single).is_err(), "a list is required");
    }
}
