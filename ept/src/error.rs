//! Why a page-table operation was refused.

use crate::Perms;
use core::fmt;

/// A refused map, unmap or protect. On `OutOfTableMemory` a range may be partly done, but
/// every entry stays consistent: each page keeps either its old or its new mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The guest-physical address is not 4 KiB aligned.
    MisalignedGpa(u64),
    /// The host-physical address is not 4 KiB aligned.
    MisalignedHpa(u64),
    /// The length is not a multiple of 4 KiB.
    MisalignedLen(u64),
    /// Address plus length wraps around 2^64.
    Overflow,
    /// The guest-physical range ends above the 48-bit limit of 4-level tables.
    GpaTooLarge(u64),
    /// The host-physical range ends above the configured host address width.
    HpaTooLarge(u64),
    /// The format cannot express these permissions (write or execute without read on NPT,
    /// write without read on EPT).
    UnsupportedPerms(Perms),
    /// The caller's `TableMemory` has no frame left.
    OutOfTableMemory,
    /// `TableMemory::alloc_table` returned a frame that is not 4 KiB aligned.
    MisalignedTableFrame(u64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MisalignedGpa(a) => {
                write!(f, "guest-physical address {a:#x} is not 4 KiB aligned")
            }
            Self::MisalignedHpa(a) => {
                write!(f, "host-physical address {a:#x} is not 4 KiB aligned")
            }
            Self::MisalignedLen(l) => write!(f, "length {l:#x} is not a multiple of 4 KiB"),
            Self::Overflow => f.write_str("address range wraps around"),
            Self::GpaTooLarge(end) => {
                write!(f, "guest-physical range ends at {end:#x}, above 48 bits")
            }
            Self::HpaTooLarge(end) => {
                write!(
                    f,
                    "host-physical range ends at {end:#x}, above the host address width"
                )
            }
            Self::UnsupportedPerms(p) => {
                write!(f, "permissions {p} cannot be expressed in this format")
            }
            Self::OutOfTableMemory => f.write_str("out of page-table memory"),
            Self::MisalignedTableFrame(pa) => write!(f, "table frame {pa:#x} is not 4 KiB aligned"),
        }
    }
}
