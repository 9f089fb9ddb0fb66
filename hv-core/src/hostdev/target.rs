//! The names `phy:` targets use for host disks, in the style of Linux's virtio disks: `vda`
//! is the first host virtio-blk disk found on PCI bus 0 (in slot order), `vdb` the second, up
//! to `vdz`; `vda1` to `vda4` are the primary partitions of its MBR. A `/dev/` prefix is
//! accepted, as xl users write it.
//!
//! It is not the lookup: `registry` finds the disk and the partition a name denotes.

use alloc::format;
use alloc::string::String;
use core::fmt;

/// A host disk, whole or one of its partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhyTarget {
    /// 0 for `vda`.
    pub disk: u8,
    /// 1 to 4; `None` for the whole disk.
    pub partition: Option<u8>,
}

impl PhyTarget {
    /// Parses `vdX` or `vdXN` (after `phy:`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "'{text}' is not a host disk (vda, vdb, ...) or a primary partition (vda1 to vda4)"
            )
        };
        let name = text.strip_prefix("/dev/").unwrap_or(text);
        let rest = name.strip_prefix("vd").ok_or_else(bad)?;
        let mut chars = rest.chars();
        let letter = chars
            .next()
            .filter(char::is_ascii_lowercase)
            .ok_or_else(bad)?;
        let partition = match chars.as_str() {
            "" => None,
            n @ ("1" | "2" | "3" | "4") => n.parse().ok(),
            _ => return Err(bad()),
        };
        Ok(Self {
            disk: letter as u8 - b'a',
            partition,
        })
    }
}

impl fmt::Display for PhyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vd{}", char::from(b'a' + self.disk))?;
        match self.partition {
            Some(n) => write!(f, "{n}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_disks_and_partitions() {
        let t = |disk, partition| PhyTarget { disk, partition };
        assert_eq!(PhyTarget::parse("vda1"), Ok(t(0, Some(1))));
        assert_eq!(PhyTarget::parse("/dev/vdb"), Ok(t(1, None)));
        assert_eq!(PhyTarget::parse("vdz4"), Ok(t(25, Some(4))));
        assert_eq!(t(2, Some(3)).to_string(), "vdc3");
    }

    #[test]
    fn refuses_other_names() {
        for bad in [
            "",
            "vd",
            "vda0",
            "vda5",
            "vda12",
            "sda1",
            "vdA",
            "/dev/vg/guest",
            "vdé",
        ] {
            assert!(PhyTarget::parse(bad).is_err(), "{bad}");
        }
        assert!(PhyTarget::parse("sda1").unwrap_err().contains("'sda1'"));
    }
}
