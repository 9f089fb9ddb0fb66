//! Exit tracing: xentrace-compatible fixed-size records, the run-time switch and filter (by
//! domain and by event class), and a fixed-size ring of records per physical CPU.
//!
//! Not the transport: the monitor binary streams each record out of COM2 as it is produced
//! (`trace=com2`), and `cargo xtask trace report` reads that stream.
//!
//! # Record format
//! The binary format of xentrace's output as `xentrace_format` reads it (xentrace(8)): one
//! record is 36 bytes, packed, little-endian, with no header and no padding:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | physical CPU number |
//! | 4 | 8 | TSC when the event happened |
//! | 12 | 4 | event number (Xen's class/sub-class/event encoding) |
//! | 16 | 20 | five 32-bit data words D1..D5 |
//!
//! Events this monitor writes:
//! - `VMEXIT` 0x00081002 (HVM class, ENTRYEXIT sub-class), one per exit, written when its
//!   handling ends; TSC = the time of the exit. D1 raw vendor exit code (SVM EXITCODE or VMX
//!   basic exit reason), D2 domain id << 16 | vCPU index, D3 qualification (see
//!   `qualification`), D4 guest RIP bits 31:0, D5 TSC cycles the monitor spent handling it
//!   (saturated at 0xFFFF_FFFF).
//! - `TSC_HZ` 0x0001F801 (GEN class), first in every stream: D1/D2 the TSC frequency in Hz
//!   (low/high 32 bits), D3 the vendor (`VENDOR_SVM` or `VENDOR_VMX`).
//! - `DOMAIN_NAME` 0x0001F802 (GEN class), before a domain's first exit: D1 the domain id,
//!   D2..D5 the first 16 bytes of its name, NUL-padded.
//! - `EXIT_NAME` 0x0001F803 (GEN class), before the first exit with a given code: D1 the raw
//!   code, D2..D5 the first 16 bytes of the vendor's name for it, NUL-padded; so a trace
//!   names its own reasons whichever backend wrote it.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use vcpu::{reg, Exit, Regs};

/// Bytes per record.
pub const RECORD_BYTES: usize = 36;

/// Event numbers and classes (Xen's `public/trace.h`).
pub mod event {
    /// Generic class: the monitor's own bookkeeping records.
    pub const CLASS_GEN: u32 = 0x0001_F000;
    /// The whole HVM class.
    pub const CLASS_HVM: u32 = 0x0008_F000;
    /// HVM entry/exit sub-class.
    pub const CLASS_ENTRYEXIT: u32 = 0x0008_1000;
    pub const VMEXIT: u32 = 0x0008_1002;
    pub const TSC_HZ: u32 = 0x0001_F801;
    pub const DOMAIN_NAME: u32 = 0x0001_F802;
    pub const EXIT_NAME: u32 = 0x0001_F803;
}

/// D3 of `TSC_HZ`: the backend that produced the trace.
pub const VENDOR_SVM: u32 = 1;
pub const VENDOR_VMX: u32 = 2;

/// One trace record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub cpu: u32,
    pub tsc: u64,
    pub event: u32,
    pub data: [u32; 5],
}

impl Record {
    /// The record in its 36-byte wire format.
    pub fn to_bytes(&self) -> [u8; RECORD_BYTES] {
        let mut b = [0; RECORD_BYTES];
        b[0..4].copy_from_slice(&self.cpu.to_le_bytes());
        b[4..12].copy_from_slice(&self.tsc.to_le_bytes());
        b[12..16].copy_from_slice(&self.event.to_le_bytes());
        for (i, d) in self.data.iter().enumerate() {
            b[16 + 4 * i..20 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        b
    }

    /// Reads a record from its wire format.
    pub fn from_bytes(b: &[u8; RECORD_BYTES]) -> Self {
        let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        Self {
            cpu: word(0),
            tsc: u64::from(word(4)) | (u64::from(word(8)) << 32),
            event: word(12),
            data: [word(16), word(20), word(24), word(28), word(32)],
        }
    }

    /// The `VMEXIT` record of one handled exit.
    pub fn vmexit(cpu: u32, exit: &ExitTrace, cost: u64) -> Self {
        Self {
            cpu,
            tsc: exit.tsc,
            event: event::VMEXIT,
            data: [
                exit.raw,
                (exit.domain << 16) | (exit.vcpu & 0xFFFF),
                exit.qualification,
                exit.rip as u32,
                u32::try_from(cost).unwrap_or(u32::MAX),
            ],
        }
    }

    /// The `TSC_HZ` record that starts a stream.
    pub fn tsc_hz(cpu: u32, tsc: u64, hz: u64, vendor: u32) -> Self {
        Self {
            cpu,
            tsc,
            event: event::TSC_HZ,
            data: [hz as u32, (hz >> 32) as u32, vendor, 0, 0],
        }
    }

    /// The `DOMAIN_NAME` record of domain `id`.
    pub fn domain_name(cpu: u32, tsc: u64, id: u32, name: &str) -> Self {
        Self::named(cpu, tsc, event::DOMAIN_NAME, id, name)
    }

    /// The `EXIT_NAME` record of exit code `raw`.
    pub fn exit_name(cpu: u32, tsc: u64, raw: u32, name: &str) -> Self {
        Self::named(cpu, tsc, event::EXIT_NAME, raw, name)
    }

    fn named(cpu: u32, tsc: u64, event: u32, key: u32, name: &str) -> Self {
        let mut bytes = [0u8; 16];
        for (d, s) in bytes.iter_mut().zip(name.bytes()) {
            *d = s;
        }
        let w = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Self {
            cpu,
            tsc,
            event,
            data: [key, w(0), w(4), w(8), w(12)],
        }
    }
}

/// What the exit path knows about an exit before handling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitTrace {
    pub tsc: u64,
    pub raw: u32,
    pub domain: u32,
    pub vcpu: u32,
    pub qualification: u32,
    pub rip: u64,
}

/// D3 of a `VMEXIT` record, read before the exit is handled: for port I/O the port in bits
/// 15:0, the size in bytes in 23:16, bit 24 set for OUT, bit 25 for INS/OUTS; for a nested page
/// fault the guest-physical address bits 31:0; for CPUID the leaf (EAX); for RDMSR/WRMSR the MSR
/// index (ECX); for an exception the vector; otherwise 0.
pub fn qualification(exit: &Exit, regs: &Regs) -> u32 {
    match *exit {
        Exit::Io(io) => {
            u32::from(io.port)
                | (u32::from(io.size) << 16)
                | (u32::from(io.write) << 24)
                | (u32::from(io.string) << 25)
        }
        Exit::NestedPageFault { gpa, .. } => gpa as u32,
        Exit::Cpuid => regs.gpr[reg::RAX] as u32,
        Exit::MsrRead | Exit::MsrWrite => regs.gpr[reg::RCX] as u32,
        Exit::Exception { vector, .. } => u32::from(vector),
        _ => 0,
    }
}

/// Whether an event of `class_mask`'s classes passes: Xen's rule, both the main class (bits
/// 27:16) and the sub-class (bits 15:12) of the event must be in the mask.
pub fn class_matches(class_mask: u32, event: u32) -> bool {
    (event & class_mask & 0x0FFF_0000) != 0 && (event & class_mask & 0x0000_F000) != 0
}

/// No domain filter.
const ALL_DOMAINS: u32 = u32::MAX;

/// The run-time switch and filter, shared by all CPUs.
pub struct Control {
    enabled: AtomicBool,
    domain: AtomicU32,
    classes: AtomicU32,
}

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    /// Off, every domain, every class.
    pub const fn new() -> Self {
        Self {
            enabled: AtomicBool::new(false),
            domain: AtomicU32::new(ALL_DOMAINS),
            classes: AtomicU32::new(0x0FFF_F000),
        }
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Traces only domain `id`, or every domain with `None`.
    pub fn set_domain(&self, id: Option<u32>) {
        self.domain
            .store(id.unwrap_or(ALL_DOMAINS), Ordering::Relaxed);
    }

    /// Traces only events of the classes in `mask` (xentrace's `-e`, e.g. 0x0008F000 for HVM).
    pub fn set_classes(&self, mask: u32) {
        self.classes.store(mask, Ordering::Relaxed);
    }

    /// The domain filter (`None`: every domain) and the class mask.
    pub fn filter(&self) -> (Option<u32>, u32) {
        let d = self.domain.load(Ordering::Relaxed);
        (
            (d != ALL_DOMAINS).then_some(d),
            self.classes.load(Ordering::Relaxed),
        )
    }

    /// Whether an event of domain `domain` is traced now.
    #[inline]
    pub fn wants(&self, domain: u32, event: u32) -> bool {
        if !self.enabled() {
            return false;
        }
        let d = self.domain.load(Ordering::Relaxed);
        (d == ALL_DOMAINS || d == domain)
            && class_matches(self.classes.load(Ordering::Relaxed), event)
    }
}

/// The last `N` records of one physical CPU; the oldest is overwritten when it is full.
pub struct Ring<const N: usize> {
    records: [Record; N],
    next: usize,
    len: usize,
    /// Records overwritten before anyone read them.
    pub lost: u64,
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Ring<N> {
    pub const fn new() -> Self {
        Self {
            records: [Record {
                cpu: 0,
                tsc: 0,
                event: 0,
                data: [0; 5],
            }; N],
            next: 0,
            len: 0,
            lost: 0,
        }
    }

    #[inline]
    pub fn push(&mut self, record: Record) {
        if N == 0 {
            return;
        }
        self.records[self.next] = record;
        self.next = (self.next + 1) % N;
        if self.len == N {
            self.lost += 1;
        } else {
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The records held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        let start = (self.next + N - self.len) % N.max(1);
        (0..self.len).map(move |i| &self.records[(start + i) % N])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcpu::IoAccess;

    #[test]
    fn records_are_36_packed_little_endian_bytes() {
        let r = Record {
            cpu: 1,
            tsc: 0x0102_0304_0506_0708,
            event: event::VMEXIT,
            data: [0x72, 2, 3, 4, 0xAABB_CCDD],
        };
        let b = r.to_bytes();
        assert_eq!(&b[0..4], &[1, 0, 0, 0]);
        assert_eq!(&b[4..12], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[12..16], &[0x02, 0x10, 0x08, 0x00]);
        assert_eq!(&b[16..20], &[0x72, 0, 0, 0]);
        assert_eq!(&b[32..36], &[0xDD, 0xCC, 0xBB, 0xAA]);
        assert_eq!(Record::from_bytes(&b), r);
    }

    #[test]
    fn vmexit_packs_domain_vcpu_rip_and_saturates_cost() {
        let e = ExitTrace {
            tsc: 99,
            raw: 0x7B,
            domain: 3,
            vcpu: 1,
            qualification: 0x0101_0080,
            rip: 0xFFFF_FFFF_8100_1234,
        };
        let r = Record::vmexit(0, &e, 1 << 40);
        assert_eq!(r.tsc, 99);
        assert_eq!(
            r.data,
            [0x7B, 0x0003_0001, 0x0101_0080, 0x8100_1234, u32::MAX]
        );
        assert_eq!(Record::vmexit(0, &e, 250).data[4], 250);
    }

    #[test]
    fn header_records_carry_the_tsc_rate_and_names() {
        let r = Record::tsc_hz(0, 5, 0x1_2345_6789, VENDOR_SVM);
        assert_eq!(r.data[..3], [0x2345_6789, 1, VENDOR_SVM]);
        let n = Record::domain_name(0, 5, 7, "a-very-long-domain-name");
        assert_eq!(n.data[0], 7);
        assert_eq!(&n.data[1].to_le_bytes(), b"a-ve");
        assert_eq!(&n.data[4].to_le_bytes(), b"doma");
        let e = Record::exit_name(0, 5, 0x72, "CPUID");
        assert_eq!((e.event, e.data[0]), (event::EXIT_NAME, 0x72));
        assert_eq!(&e.data[1].to_le_bytes(), b"CPUI");
        let short = Record::domain_name(0, 5, 1, "ab");
        assert_eq!(short.data[1..], [u32::from_le_bytes(*b"ab\0\0"), 0, 0, 0]);
    }

    #[test]
    fn qualification_describes_the_access() {
        let mut regs = Regs::default();
        regs.gpr[reg::RAX] = 0x8000_0001;
        regs.gpr[reg::RCX] = 0xC000_0080;
        let io = Exit::Io(IoAccess {
            port: 0x80,
            size: 1,
            write: true,
            string: false,
            rep: false,
        });
        assert_eq!(qualification(&io, &regs), 0x0101_0080);
        assert_eq!(qualification(&Exit::Cpuid, &regs), 0x8000_0001);
        assert_eq!(qualification(&Exit::MsrWrite, &regs), 0xC000_0080);
        let npf = Exit::NestedPageFault {
            gpa: 0xFEE0_0030,
            write: false,
            fetch: false,
        };
        assert_eq!(qualification(&npf, &regs), 0xFEE0_0030);
        assert_eq!(qualification(&Exit::Hlt, &regs), 0);
    }

    #[test]
    fn filter_by_switch_domain_and_class() {
        let c = Control::new();
        assert!(!c.wants(1, event::VMEXIT), "off by default");
        c.set_enabled(true);
        assert!(c.wants(1, event::VMEXIT) && c.wants(2, event::TSC_HZ));
        c.set_domain(Some(2));
        assert!(!c.wants(1, event::VMEXIT) && c.wants(2, event::VMEXIT));
        c.set_domain(None);
        c.set_classes(event::CLASS_HVM);
        assert!(c.wants(1, event::VMEXIT) && !c.wants(1, event::DOMAIN_NAME));
        c.set_classes(0x0008_2000);
        assert!(!c.wants(1, event::VMEXIT), "handler sub-class only");
        assert!(class_matches(event::CLASS_ENTRYEXIT, event::VMEXIT));
        c.set_enabled(false);
        assert!(!c.wants(1, event::VMEXIT));
    }

    #[test]
    fn ring_keeps_the_newest_records_and_counts_losses() {
        let mut ring: Ring<3> = Ring::new();
        assert!(ring.is_empty());
        for tsc in 1..=5 {
            ring.push(Record {
                tsc,
                ..Record::default()
            });
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.lost, 2);
        let tscs: alloc::vec::Vec<u64> = ring.iter().map(|r| r.tsc).collect();
        assert_eq!(tscs, [3, 4, 5]);
    }
}
