//! The guest's ACPI tables: RSDP, XSDT, FACS, FADT, MADT and a DSDT holding `\_S5` and the PCI
//! host bridge (`pci_root`), built into guest memory so a stock Linux finds its interrupt
//! controllers, its PCI bus, the PM fixed hardware,
//! the reset register and how to power off (ACPI 6.5, chapter 5).
//!
//! It describes the platform of `devices::layout`; it is not an AML interpreter and does not
//! model the PM registers themselves (`devices::pm` does).

use alloc::vec::Vec;
use core::fmt;

use devices::layout;

use crate::memory::{GuestMemory, OutOfRam};

mod pci_root;

/// xAPIC IDs are 8 bits and 0xFF is the broadcast ID, so at most 255 processors.
pub const MAX_VCPUS: u32 = 255;

const OEM_ID: [u8; 6] = *b"HVMON ";
const OEM_TABLE_ID: [u8; 8] = *b"HVMONVM ";
const CREATOR_ID: [u8; 4] = *b"HVMN";
const HEADER_LEN: usize = 36;

const RSDP_LEN: usize = 36;
const XSDT_LEN: usize = HEADER_LEN + 2 * 8;
const FACS_LEN: usize = 64;
const FADT_LEN: usize = 276;

/// `\_S5` = Package (4) { S5_SLP_TYP, S5_SLP_TYP, 0, 0 } at the root of the namespace
/// (ACPI 6.5, 7.4.2 "\_Sx System States"; encoding in 20.2 "AML Grammar Definition"):
/// NameOp 0x08, NameString `\_S5_` (RootChar 0x5C + NameSeg), PackageOp 0x12, PkgLength 0x08
/// (one byte: itself, NumElements and the six bytes of elements), NumElements 0x04, then
/// BytePrefix 0x0A + value twice for SLP_TYPa/SLP_TYPb and ZeroOp 0x00 twice (reserved).
pub const S5_AML: [u8; 15] = [
    0x08,
    b'\\',
    b'_',
    b'S',
    b'5',
    b'_',
    0x12,
    0x08,
    0x04,
    0x0A,
    layout::S5_SLP_TYP,
    0x0A,
    layout::S5_SLP_TYP,
    0x00,
    0x00,
];
const DSDT_LEN: usize = HEADER_LEN + S5_AML.len() + pci_root::AML_LEN;

/// Offsets from the base: the RSDP on a 16-byte boundary (5.2.5.1), the FACS on a 64-byte
/// boundary (5.2.10), the other tables 16-byte aligned, the variable-length MADT last.
const RSDP_OFF: u64 = 0;
const XSDT_OFF: u64 = align_up(RSDP_OFF + RSDP_LEN as u64, 16);
const FACS_OFF: u64 = align_up(XSDT_OFF + XSDT_LEN as u64, 64);
const FADT_OFF: u64 = align_up(FACS_OFF + FACS_LEN as u64, 16);
const DSDT_OFF: u64 = align_up(FADT_OFF + FADT_LEN as u64, 16);
const MADT_OFF: u64 = align_up(DSDT_OFF + DSDT_LEN as u64, 16);

/// Bytes from the base the tables occupy for `vcpus` processors.
pub const fn tables_len(vcpus: u32) -> u64 {
    MADT_OFF + madt_len(vcpus) as u64
}

const fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiBuildError {
    NoVcpus,
    TooManyVcpus {
        vcpus: u32,
    },
    /// The base must be 64-byte aligned (the FACS alignment).
    MisalignedBase {
        base: u64,
    },
    OutOfRam(OutOfRam),
}

impl From<OutOfRam> for AcpiBuildError {
    fn from(e: OutOfRam) -> Self {
        Self::OutOfRam(e)
    }
}

impl fmt::Display for AcpiBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoVcpus => write!(f, "ACPI tables need at least one vCPU"),
            Self::TooManyVcpus { vcpus } => {
                write!(
                    f,
                    "{vcpus} vCPUs exceed the {MAX_VCPUS} xAPIC IDs the MADT can describe"
                )
            }
            Self::MisalignedBase { base } => {
                write!(f, "ACPI table base {base:#x} is not 64-byte aligned")
            }
            Self::OutOfRam(e) => write!(f, "ACPI tables at {:#x} fall outside guest RAM", e.gpa),
        }
    }
}

/// Writes the tables for `vcpus` processors at `base` (64-byte aligned; `tables_len(vcpus)`
/// bytes) and returns the RSDP's guest-physical address.
pub fn build_acpi(
    mem: &mut impl GuestMemory,
    base: u64,
    vcpus: u32,
) -> Result<u64, AcpiBuildError> {
    if vcpus == 0 {
        return Err(AcpiBuildError::NoVcpus);
    }
    if vcpus > MAX_VCPUS {
        return Err(AcpiBuildError::TooManyVcpus { vcpus });
    }
    if base & 63 != 0 {
        return Err(AcpiBuildError::MisalignedBase { base });
    }
    let at = |off: u64| base.checked_add(off).ok_or(OutOfRam { gpa: base });
    let (facs, fadt, dsdt, madt, xsdt) = (
        at(FACS_OFF)?,
        at(FADT_OFF)?,
        at(DSDT_OFF)?,
        at(MADT_OFF)?,
        at(XSDT_OFF)?,
    );
    let mut aml = Vec::with_capacity(DSDT_LEN - HEADER_LEN);
    aml.extend_from_slice(&S5_AML);
    aml.extend_from_slice(&pci_root::aml());
    mem.write(dsdt, &sdt(b"DSDT", 2, &aml))?;
    mem.write(madt, &build_madt(vcpus))?;
    mem.write(facs, &build_facs())?;
    mem.write(fadt, &build_fadt(facs, dsdt))?;
    let mut entries = [0u8; 16];
    entries[..8].copy_from_slice(&fadt.to_le_bytes());
    entries[8..].copy_from_slice(&madt.to_le_bytes());
    mem.write(xsdt, &sdt(b"XSDT", 1, &entries))?;
    let rsdp = at(RSDP_OFF)?;
    mem.write(rsdp, &build_rsdp(xsdt))?;
    Ok(rsdp)
}

/// The byte that makes `bytes` sum to zero modulo 256.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)))
}

/// A system description table: the 36-byte header (5.2.6) followed by `body`.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + body.len();
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(signature);
    t.extend_from_slice(&(len as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(&OEM_ID);
    t.extend_from_slice(&OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(&CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// RSDP revision 2 (5.2.5.3): no RSDT, the XSDT only; the first checksum covers the ACPI 1.0
/// part (20 bytes), the extended checksum the whole structure.
fn build_rsdp(xsdt: u64) -> [u8; RSDP_LEN] {
    let mut r = [0u8; RSDP_LEN];
    r[..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(&OEM_ID);
    r[15] = 2;
    r[20..24].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// FACS (5.2.10): required unless the platform is hardware-reduced; no waking vector, no
/// S4BIOS, global lock free. It has no checksum and is not listed in the XSDT.
fn build_facs() -> [u8; FACS_LEN] {
    let mut f = [0u8; FACS_LEN];
    f[..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&(FACS_LEN as u32).to_le_bytes());
    f[32] = 2; // version
    f
}

/// FADT field offsets (ACPI 6.5, Table 5.9).
mod fadt {
    pub const FIRMWARE_CTRL: usize = 36;
    pub const DSDT: usize = 40;
    pub const SCI_INT: usize = 46;
    pub const SMI_CMD: usize = 48;
    pub const PM1A_EVT_BLK: usize = 56;
    pub const PM1A_CNT_BLK: usize = 64;
    pub const PM_TMR_BLK: usize = 76;
    pub const PM1_EVT_LEN: usize = 88;
    pub const PM1_CNT_LEN: usize = 89;
    pub const PM_TMR_LEN: usize = 91;
    pub const P_LVL2_LAT: usize = 96;
    pub const P_LVL3_LAT: usize = 98;
    pub const IAPC_BOOT_ARCH: usize = 109;
    pub const FLAGS: usize = 112;
    pub const RESET_REG: usize = 116;
    pub const RESET_VALUE: usize = 128;
    pub const X_FIRMWARE_CTRL: usize = 132;
    pub const X_DSDT: usize = 140;
    pub const X_PM1A_EVT_BLK: usize = 148;
    pub const X_PM1A_CNT_BLK: usize = 172;
    pub const X_PM_TMR_BLK: usize = 208;

    /// Fixed feature flags (Table 5.10).
    pub const WBINVD: u32 = 1 << 0;
    pub const PROC_C1: u32 = 1 << 2;
    /// Set: no fixed-feature sleep button.
    pub const SLP_BUTTON: u32 = 1 << 5;
    /// The PM timer counts 32 bits.
    pub const TMR_VAL_EXT: u32 = 1 << 8;
    pub const RESET_REG_SUP: u32 = 1 << 10;

    /// IA-PC boot architecture flags (Table 5.11): legacy ISA devices (COM1, PIT, RTC, PIC)
    /// exist; no 8042 keyboard controller (only its reset line is emulated, so Linux must not
    /// probe for one); no VGA.
    pub const LEGACY_DEVICES: u16 = 1 << 0;
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;

    /// P_LVL2_LAT above 100 and P_LVL3_LAT above 1000 say C2/C3 are not supported.
    pub const NO_C2: u16 = 101;
    pub const NO_C3: u16 = 1001;
}

/// Generic Address Structure (5.2.3.2) for a System I/O register: space 1, `bits` wide,
/// accessed `access` (1 byte, 2 word, 3 dword) at a time.
fn io_gas(port: u16, bits: u8, access: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1;
    g[1] = bits;
    g[3] = access;
    g[4..].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// FADT revision 6 (5.2.9): a full (not hardware-reduced) PC with PM1a event/control blocks
/// and the PM timer in I/O space, no SMI command port (ACPI mode is always on), no GPE blocks,
/// and the reset register at `layout::RESET_PORT`.
fn build_fadt(facs: u64, dsdt: u64) -> Vec<u8> {
    let mut b = [0u8; FADT_LEN - HEADER_LEN];
    let mut put = |off: usize, bytes: &[u8]| {
        let at = off - HEADER_LEN;
        b[at..at + bytes.len()].copy_from_slice(bytes);
    };
    // The 32-bit pointers are set alongside the X_ ones: both are below 4 GiB.
    put(fadt::FIRMWARE_CTRL, &(facs as u32).to_le_bytes());
    put(fadt::DSDT, &(dsdt as u32).to_le_bytes());
    put(fadt::SCI_INT, &u16::from(layout::SCI_IRQ).to_le_bytes());
    put(fadt::SMI_CMD, &0u32.to_le_bytes());
    put(
        fadt::PM1A_EVT_BLK,
        &u32::from(layout::PM1A_EVT_BLK).to_le_bytes(),
    );
    put(
        fadt::PM1A_CNT_BLK,
        &u32::from(layout::PM1A_CNT_BLK).to_le_bytes(),
    );
    put(
        fadt::PM_TMR_BLK,
        &u32::from(layout::PM_TMR_BLK).to_le_bytes(),
    );
    put(fadt::PM1_EVT_LEN, &[4]);
    put(fadt::PM1_CNT_LEN, &[2]);
    put(fadt::PM_TMR_LEN, &[4]);
    put(fadt::P_LVL2_LAT, &fadt::NO_C2.to_le_bytes());
    put(fadt::P_LVL3_LAT, &fadt::NO_C3.to_le_bytes());
    let boot_arch = fadt::LEGACY_DEVICES | fadt::VGA_NOT_PRESENT;
    put(fadt::IAPC_BOOT_ARCH, &boot_arch.to_le_bytes());
    let flags =
        fadt::WBINVD | fadt::PROC_C1 | fadt::SLP_BUTTON | fadt::TMR_VAL_EXT | fadt::RESET_REG_SUP;
    put(fadt::FLAGS, &flags.to_le_bytes());
    put(fadt::RESET_REG, &io_gas(layout::RESET_PORT, 8, 1));
    put(fadt::RESET_VALUE, &[layout::RESET_VALUE]);
    put(fadt::X_FIRMWARE_CTRL, &facs.to_le_bytes());
    put(fadt::X_DSDT, &dsdt.to_le_bytes());
    // PM1 event: status and enable, 16 bits each; PM1 control: 16 bits; timer: 32 bits.
    put(fadt::X_PM1A_EVT_BLK, &io_gas(layout::PM1A_EVT_BLK, 32, 2));
    put(fadt::X_PM1A_CNT_BLK, &io_gas(layout::PM1A_CNT_BLK, 16, 2));
    put(fadt::X_PM_TMR_BLK, &io_gas(layout::PM_TMR_BLK, 32, 3));
    sdt(b"FACP", 6, &b)
}

const MADT_LOCAL_APIC_LEN: usize = 8;
const MADT_IO_APIC_LEN: usize = 12;
const MADT_OVERRIDE_LEN: usize = 10;

const fn madt_len(vcpus: u32) -> usize {
    HEADER_LEN + 8 + vcpus as usize * MADT_LOCAL_APIC_LEN + MADT_IO_APIC_LEN + 2 * MADT_OVERRIDE_LEN
}

/// MPS INTI flags of an interrupt source override (Table 5.26): polarity active high (01),
/// trigger mode level (11).
const ACTIVE_HIGH_LEVEL: u16 = 0b1101;

/// MADT revision 5 (5.2.12): the local APIC address with PCAT_COMPAT (dual 8259s present),
/// one enabled Processor Local APIC per vCPU (ACPI UID = APIC ID = index), the I/O APIC, and
/// the two ISA overrides: the PIT on `layout::PIT_GSI`, and the level-triggered SCI.
fn build_madt(vcpus: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(madt_len(vcpus) - HEADER_LEN);
    b.extend_from_slice(&(layout::LAPIC_BASE as u32).to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    for id in 0..vcpus as u8 {
        b.extend_from_slice(&[0, MADT_LOCAL_APIC_LEN as u8, id, id]);
        b.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    b.extend_from_slice(&[1, MADT_IO_APIC_LEN as u8, layout::IOAPIC_ID, 0]);
    b.extend_from_slice(&(layout::IOAPIC_BASE as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    let mut source_override = |irq: u8, gsi: u8, flags: u16| {
        b.extend_from_slice(&[2, MADT_OVERRIDE_LEN as u8, 0, irq]);
        b.extend_from_slice(&u32::from(gsi).to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
    };
    source_override(0, layout::PIT_GSI, 0);
    source_override(layout::SCI_IRQ, layout::SCI_IRQ, ACTIVE_HIGH_LEVEL);
    sdt(b"APIC", 5, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestRam;
    use ::acpi::madt::{Madt, MadtEntry};
    use ::acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
    use alloc::vec;
    use core::ptr::NonNull;

    const BASE: u64 = 0xE0000;

    /// Maps guest-physical addresses onto the test's RAM buffer.
    #[derive(Clone)]
    struct RamHandler {
        ram: *const u8,
        len: usize,
    }

    impl AcpiHandler for RamHandler {
        unsafe fn map_physical_region<T>(
            &self,
            gpa: usize,
            size: usize,
        ) -> PhysicalMapping<Self, T> {
            assert!(gpa.checked_add(size).is_some_and(|end| end <= self.len));
            // SAFETY: the range was checked to lie inside the buffer, which outlives the tables;
            // ACPI structures are packed (alignment 1).
            unsafe {
                let ptr = NonNull::new(self.ram.add(gpa) as *mut T).unwrap();
                PhysicalMapping::new(gpa, ptr, size, size, self.clone())
            }
        }

        fn unmap_physical_region<T>(_: &PhysicalMapping<Self, T>) {}
    }

    fn build(vcpus: u32) -> (Vec<u8>, u64) {
        let mut buf = vec![0u8; 0x10_0000];
        let rsdp = build_acpi(&mut GuestRam::new(&mut buf), BASE, vcpus).unwrap();
        (buf, rsdp)
    }

    fn tables(buf: &[u8], rsdp: u64) -> AcpiTables<RamHandler> {
        let handler = RamHandler {
            ram: buf.as_ptr(),
            len: buf.len(),
        };
        // SAFETY: the handler maps the buffer, which outlives the returned tables in each test.
        unsafe { AcpiTables::from_rsdp(handler, rsdp as usize) }.unwrap()
    }

    fn table_at(buf: &[u8], gpa: u64) -> &[u8] {
        let at = gpa as usize;
        let len = u32::from_le_bytes(buf[at + 4..at + 8].try_into().unwrap()) as usize;
        &buf[at..at + len]
    }

    #[test]
    fn rsdp_and_every_table_checksum_to_zero() {
        let (buf, rsdp) = build(4);
        assert_eq!(rsdp, BASE);
        let r = &buf[BASE as usize..][..RSDP_LEN];
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(r[15], 2);
        assert_eq!(checksum(&r[..20]), 0);
        assert_eq!(checksum(r), 0);
        let xsdt = u64::from_le_bytes(r[24..32].try_into().unwrap());
        let x = table_at(&buf, xsdt);
        assert_eq!(&x[..4], b"XSDT");
        assert_eq!(checksum(x), 0);
        let mut seen = Vec::new();
        for entry in x[HEADER_LEN..].chunks(8) {
            let t = table_at(&buf, u64::from_le_bytes(entry.try_into().unwrap()));
            assert_eq!(checksum(t), 0);
            seen.push(t[..4].to_vec());
        }
        assert_eq!(seen, [b"FACP", b"APIC"]);
        assert_eq!(checksum(table_at(&buf, BASE + DSDT_OFF)), 0);
        // The acpi crate accepts every table the XSDT lists.
        let names: Vec<_> = tables(&buf, rsdp).headers().map(|h| h.signature).collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn madt_lists_processors_ioapic_and_overrides() {
        let (buf, rsdp) = build(3);
        let t = tables(&buf, rsdp);
        let mapping = t.find_table::<Madt>().unwrap();
        let madt = mapping.get();
        assert_eq!({ madt.local_apic_address } as u64, layout::LAPIC_BASE);
        assert!(madt.supports_8259());
        let (mut cpus, mut ioapics, mut overrides) = (Vec::new(), Vec::new(), Vec::new());
        for e in madt.entries() {
            match e {
                MadtEntry::LocalApic(l) => cpus.push((l.processor_id, l.apic_id, { l.flags })),
                MadtEntry::IoApic(io) => {
                    ioapics.push((io.io_apic_id, { io.io_apic_address } as u64, {
                        io.global_system_interrupt_base
                    }))
                }
                MadtEntry::InterruptSourceOverride(o) => {
                    overrides.push((o.bus, o.irq, { o.global_system_interrupt }, { o.flags }))
                }
                other => panic!("unexpected MADT entry {other:?}"),
            }
        }
        assert_eq!(cpus, [(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
        assert_eq!(ioapics, [(layout::IOAPIC_ID, layout::IOAPIC_BASE, 0)]);
        assert_eq!(
            overrides,
            [
                (0, 0, u32::from(layout::PIT_GSI), 0),
                (0, layout::SCI_IRQ, 9, 0xD),
            ]
        );
    }

    #[test]
    fn fadt_describes_pm_blocks_sci_reset_and_dsdt() {
        use ::acpi::address::{AccessSize, AddressSpace};
        use ::acpi::fadt::Fadt;
        use ::acpi::AcpiTable;
        let (buf, rsdp) = build(1);
        let t = tables(&buf, rsdp);
        let fadt = t.find_table::<Fadt>().unwrap();
        assert_eq!({ fadt.header().revision }, 6);
        assert_eq!({ fadt.sci_interrupt }, u16::from(layout::SCI_IRQ));
        assert_eq!({ fadt.smi_cmd_port }, 0);
        let io = |g: ::acpi::address::GenericAddress| {
            assert_eq!(g.address_space, AddressSpace::SystemIo);
            (g.address, g.bit_width)
        };
        assert_eq!(
            io(fadt.pm1a_event_block().unwrap()),
            (u64::from(layout::PM1A_EVT_BLK), 32)
        );
        assert_eq!(
            io(fadt.pm1a_control_block().unwrap()),
            (u64::from(layout::PM1A_CNT_BLK), 16)
        );
        let tmr = fadt.pm_timer_block().unwrap().unwrap();
        assert_eq!(io(tmr), (u64::from(layout::PM_TMR_BLK), 32));
        assert!(fadt.pm1b_event_block().unwrap().is_none());
        assert!(fadt.gpe0_block().unwrap().is_none());
        let reset = fadt.reset_register().unwrap();
        assert_eq!(io(reset), (u64::from(layout::RESET_PORT), 8));
        assert_eq!(reset.access_size, AccessSize::ByteAccess);
        assert_eq!({ fadt.reset_value }, layout::RESET_VALUE);
        let flags = { fadt.flags };
        assert!(flags.supports_system_reset_via_fadt());
        assert!(flags.pm_timer_is_32_bit());
        assert!(flags.sleep_button_is_control_method());
        assert!(flags.supports_equivalent_to_wbinvd());
        assert!(flags.all_procs_support_c1_power_state());
        assert!(!flags.system_is_hw_reduced_acpi());
        let arch = { fadt.iapc_boot_arch };
        assert!(arch.legacy_devices_are_accessible());
        assert!(!arch.motherboard_implements_8042());
        assert!(arch.dont_probe_vga());
        assert_eq!(fadt.dsdt_address().unwrap() as u64, BASE + DSDT_OFF);
        let facs = fadt.facs_address().unwrap();
        assert_eq!(facs & 63, 0);
        assert_eq!(&buf[facs..facs + 4], b"FACS");
        // The 32-bit copies of the X_ pointers agree.
        let f = table_at(&buf, BASE + FADT_OFF);
        assert_eq!(
            &f[fadt::DSDT..fadt::DSDT + 4],
            &((BASE + DSDT_OFF) as u32).to_le_bytes()
        );
        assert_eq!(&f[fadt::FIRMWARE_CTRL..][..4], &(facs as u32).to_le_bytes());
    }

    #[test]
    fn dsdt_defines_s5() {
        let (buf, rsdp) = build(1);
        let aml = tables(&buf, rsdp).dsdt().unwrap();
        let body = &buf[aml.address..aml.address + aml.length as usize];
        let s5 = [0x08, 0x5C, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A];
        assert_eq!(&body[..s5.len()], &s5);
        assert_eq!(body[10], layout::S5_SLP_TYP);
        assert_eq!(body[12], layout::S5_SLP_TYP);
        assert_eq!(body.len(), 15 + pci_root::AML_LEN);
        assert_eq!(&body[15..], &pci_root::aml()[..]);
    }

    #[test]
    fn the_largest_madt_fits_and_vcpu_counts_are_checked() {
        let (buf, rsdp) = build(MAX_VCPUS);
        let t = tables(&buf, rsdp);
        let madt = t.find_table::<Madt>().unwrap();
        let last = madt.get().entries().filter_map(|e| match e {
            MadtEntry::LocalApic(l) => Some(l.apic_id),
            _ => None,
        });
        assert_eq!(last.last(), Some(254));
        assert!(BASE + tables_len(MAX_VCPUS) <= 0x10_0000);
        let mut buf = vec![0u8; 0x10_0000];
        let mut ram = GuestRam::new(&mut buf);
        assert_eq!(build_acpi(&mut ram, BASE, 0), Err(AcpiBuildError::NoVcpus));
        assert_eq!(
            build_acpi(&mut ram, BASE, 256),
            Err(AcpiBuildError::TooManyVcpus { vcpus: 256 })
        );
        assert_eq!(
            build_acpi(&mut ram, BASE + 16, 1),
            Err(AcpiBuildError::MisalignedBase { base: BASE + 16 })
        );
        assert!(matches!(
            build_acpi(&mut ram, 0xFFF00, 1),
            Err(AcpiBuildError::OutOfRam(_))
        ));
    }
}
