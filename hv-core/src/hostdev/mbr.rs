//! The classic MBR partition table in a disk's first sector: four primary entries, each a
//! type byte and an LBA range, behind the 0x55 0xAA signature.
//!
//! It is not GPT and follows no extended partition (type 0x05/0x0F) into its logical ones.

/// A primary partition: `sectors` sectors from LBA `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub kind: u8,
    pub start: u64,
    pub sectors: u64,
}

const TABLE: usize = 446;
const ENTRY: usize = 16;

/// The four primary slots of sector 0 (`None` for an empty slot), or `None` if it holds no
/// MBR.
pub fn parse(sector0: &[u8; 512]) -> Option<[Option<Partition>; 4]> {
    if sector0[510..512] != [0x55, 0xAA] {
        return None;
    }
    Some(core::array::from_fn(|i| {
        let e = &sector0[TABLE + ENTRY * i..TABLE + ENTRY * (i + 1)];
        let le32 =
            |at: usize| u64::from(u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]));
        let p = Partition {
            kind: e[4],
            start: le32(8),
            sectors: le32(12),
        };
        (p.kind != 0 && p.sectors != 0).then_some(p)
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Sector 0 with `entries` as (slot, type, start, sectors).
    pub fn sector0(entries: &[(usize, u8, u32, u32)]) -> [u8; 512] {
        let mut s = [0u8; 512];
        for &(slot, kind, start, sectors) in entries {
            let e = TABLE + ENTRY * slot;
            s[e + 4] = kind;
            s[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            s[e + 12..e + 16].copy_from_slice(&sectors.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    #[test]
    fn reads_primary_entries_and_skips_empty_ones() {
        let s = sector0(&[
            (0, 0x83, 2048, 8192),
            (2, 0x83, 0, 0),
            (3, 0x07, 10240, 100),
        ]);
        let table = parse(&s).unwrap();
        assert_eq!(
            table[0],
            Some(Partition {
                kind: 0x83,
                start: 2048,
                sectors: 8192
            })
        );
        assert_eq!((table[1], table[2]), (None, None));
        assert_eq!(table[3].unwrap().start, 10240);
    }

    #[test]
    fn no_signature_no_table() {
        let mut s = sector0(&[(0, 0x83, 2048, 8192)]);
        s[511] = 0;
        assert_eq!(parse(&s), None);
    }
}
