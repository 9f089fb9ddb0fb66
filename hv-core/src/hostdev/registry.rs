//! The host disks the monitor drives and which VM holds which part of them: a `phy:` name is
//! looked up here, and a disk, or a partition of one, goes to one running VM at a time (two
//! ranges that overlap, such as a disk and its partition, are never handed out together).
//!
//! It is not a driver: it owns `Disk`s and forwards nothing itself.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::mbr::{self, Partition};
use super::partition::Disk;
use super::target::PhyTarget;

/// Sectors `[start, start + sectors)` of host disk `target.disk`, given to a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub target: PhyTarget,
    pub start: u64,
    pub sectors: u64,
}

struct Entry<D> {
    disk: D,
    /// The MBR's primary slots, if sector 0 holds an MBR.
    table: Option<[Option<Partition>; 4]>,
    /// What is handed out, and to whom.
    held: Vec<(Claim, String)>,
}

/// The host disks, `vda` first.
pub struct HostDisks<D> {
    disks: Vec<Entry<D>>,
}

impl<D> Default for HostDisks<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D> HostDisks<D> {
    pub const fn new() -> Self {
        Self { disks: Vec::new() }
    }
}

impl<D: Disk> HostDisks<D> {
    /// Adds the next disk (`vda`, then `vdb`, ...) and reads its partition table; tells what
    /// it found, for the log.
    pub fn add(&mut self, mut disk: D) -> String {
        let mut sector0 = [0u8; 512];
        let table = disk
            .read(0, &mut sector0)
            .ok()
            .and_then(|()| mbr::parse(&sector0));
        let name = PhyTarget {
            disk: self.disks.len() as u8,
            partition: None,
        };
        let mut text = format!("{name}: {} sectors", disk.sectors());
        match &table {
            None => text.push_str(", no MBR"),
            Some(slots) => {
                for (i, p) in slots.iter().enumerate() {
                    if let Some(p) = p {
                        text.push_str(&format!(
                            ", {name}{} (type {:#04x}, {} sectors at {})",
                            i + 1,
                            p.kind,
                            p.sectors,
                            p.start
                        ));
                    }
                }
            }
        }
        self.disks.push(Entry {
            disk,
            table,
            held: Vec::new(),
        });
        text
    }

    /// Gives `target` to `owner`, if it exists and no part of it is held.
    pub fn claim(&mut self, target: PhyTarget, owner: &str) -> Result<Claim, String> {
        let count = self.disks.len();
        let entry = self
            .disks
            .get_mut(usize::from(target.disk))
            .ok_or_else(|| match count {
                0 => format!(
                    "no host disk {target}: the monitor found no virtio-blk disk on PCI bus 0"
                ),
                n => format!("no host disk {target}: the monitor found {n}"),
            })?;
        let disk_sectors = entry.disk.sectors();
        let (start, sectors) = match target.partition {
            None => (0, disk_sectors),
            Some(n) => {
                let slots = entry
                    .table
                    .ok_or_else(|| format!("host disk {target} has no MBR partition table"))?;
                let p = slots[usize::from(n - 1)]
                    .ok_or_else(|| format!("host disk has no partition {target}"))?;
                if p.start.saturating_add(p.sectors) > disk_sectors {
                    return Err(format!("partition {target} ends past its disk's end"));
                }
                (p.start, p.sectors)
            }
        };
        let end = start + sectors;
        if let Some((other, by)) = entry
            .held
            .iter()
            .find(|(c, _)| c.start < end && start < c.start + c.sectors)
        {
            return Err(format!(
                "{target} is in use: domain '{by}' holds {}",
                other.target
            ));
        }
        let claim = Claim {
            target,
            start,
            sectors,
        };
        entry.held.push((claim.clone(), owner.into()));
        Ok(claim)
    }

    /// Takes `claim` back.
    pub fn release(&mut self, claim: &Claim) {
        if let Some(entry) = self.disks.get_mut(usize::from(claim.target.disk)) {
            entry.held.retain(|(c, _)| c != claim);
        }
    }

    /// Disk `index` (0 for `vda`).
    pub fn disk_mut(&mut self, index: u8) -> Option<&mut D> {
        self.disks.get_mut(usize::from(index)).map(|e| &mut e.disk)
    }
}
