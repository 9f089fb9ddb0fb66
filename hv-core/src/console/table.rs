//! The `list` and `top` tables in the formats Xen users know: `xl list`
//! (`tools/xl/xl_info.c`) and xentop's batch lines (`tools/xentop/xentop.c`). Fractions are
//! formatted with integers (tenths, rounded), as `%8.1f` and `%6.1f` would print them.
//!
//! It is not where the numbers come from: the monitor fills in a `Row` per domain.

use core::fmt::{self, Write};

/// Why a domain shut down: libxl's `shutdown_reason`, shown as xl's fifth state letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    PowerOff,
    Reboot,
    Crash,
}

impl ShutdownReason {
    /// xl's letter from `"-rscwS"`, indexed by the libxl enum (poweroff 0, reboot 1, crash 3).
    fn letter(self) -> char {
        match self {
            Self::PowerOff => '-',
            Self::Reboot => 'r',
            Self::Crash => 'c',
        }
    }
}

/// A domain's state flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub running: bool,
    pub blocked: bool,
    pub paused: bool,
    pub shutdown: Option<ShutdownReason>,
    pub dying: bool,
}

/// One domain as the tables show it.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    pub name: &'a str,
    pub id: u32,
    pub mem_kib: u64,
    pub vcpus: u32,
    pub state: State,
    pub cpu_ns: u64,
}

/// `xl list`'s header (its literal tabs included).
pub const LIST_HEADER: &str =
    "Name                                        ID   Mem VCPUs\tState\tTime(s)";

fn flag(on: bool, c: char) -> char {
    if on {
        c
    } else {
        '-'
    }
}

/// `n` hundredths-free tenths: `value * 10 / unit`, rounded to nearest.
fn tenths(value: u64, unit: u64) -> u64 {
    let unit = unit.max(1);
    ((u128::from(value) * 10 + u128::from(unit) / 2) / u128::from(unit)) as u64
}

/// A fixed-point number of tenths right-aligned in `width`, as `%{width}.1f` prints it.
struct Tenths {
    value: u64,
    width: usize,
}

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int_width = self.width.saturating_sub(2);
        write!(f, "{:>int_width$}.{}", self.value / 10, self.value % 10)
    }
}

/// One `xl list` line: `"%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f"`.
pub fn list_row(w: &mut impl Write, d: &Row) -> fmt::Result {
    let s = d.state;
    write!(
        w,
        "{:<40} {:>5} {:>5} {:>5}     {}{}{}{}{}{}  {}",
        d.name,
        d.id,
        d.mem_kib / 1024,
        d.vcpus,
        flag(s.running, 'r'),
        flag(s.blocked, 'b'),
        flag(s.paused, 'p'),
        flag(s.shutdown.is_some(), 's'),
        s.shutdown.map_or('-', ShutdownReason::letter),
        flag(s.dying, 'd'),
        Tenths {
            value: tenths(d.cpu_ns, 1_000_000_000),
            width: 8
        }
    )
}

/// xentop's columns: title and width.
const TOP_COLUMNS: [(&str, usize); 19] = [
    ("NAME", 10),
    ("STATE", 6),
    ("CPU(sec)", 10),
    ("CPU(%)", 6),
    ("MEM(k)", 10),
    ("MEM(%)", 6),
    ("MAXMEM(k)", 10),
    ("MAXMEM(%)", 9),
    ("VCPUS", 5),
    ("NETS", 4),
    ("NETTX(k)", 8),
    ("NETRX(k)", 8),
    ("VBDS", 4),
    ("VBD_OO", 8),
    ("VBD_RD", 8),
    ("VBD_WR", 8),
    ("VBD_RSECT", 10),
    ("VBD_WSECT", 10),
    ("SSID", 4),
];

/// xentop's column header.
pub fn top_header(w: &mut impl Write) -> fmt::Result {
    for (i, (title, width)) in TOP_COLUMNS.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        write!(w, "{sep}{title:>width$}")?;
    }
    Ok(())
}

/// One xentop line. `cpu_permille` is the share of one CPU since the last sample, in tenths
/// of a percent; `total_kib` is the host's memory. There are no networks, disks or security
/// labels, so those columns are zero; memory cannot grow, so MAXMEM is MEM.
pub fn top_row(w: &mut impl Write, d: &Row, cpu_permille: u64, total_kib: u64) -> fmt::Result {
    let s = d.state;
    let name: &str = d
        .name
        .char_indices()
        .nth(10)
        .map_or(d.name, |(i, _)| &d.name[..i]);
    let mem_pct = Tenths {
        value: tenths(d.mem_kib * 100, total_kib),
        width: 6,
    };
    write!(
        w,
        "{name:>10} {}{}{}{}{}{} {:>10} {} {:>10} {} {:>10} {} {:>5} {:>4} {:>8} {:>8} {:>4} {:>8} {:>8} {:>8} {:>10} {:>10} {:>4}",
        flag(s.dying, 'd'),
        flag(s.shutdown.is_some(), 's'),
        flag(s.blocked, 'b'),
        flag(s.shutdown == Some(ShutdownReason::Crash), 'c'),
        flag(s.paused, 'p'),
        flag(s.running, 'r'),
        d.cpu_ns / 1_000_000_000,
        Tenths { value: cpu_permille, width: 6 },
        d.mem_kib,
        mem_pct,
        d.mem_kib,
        Tenths { value: tenths(d.mem_kib * 100, total_kib), width: 9 },
        d.vcpus,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0
    )
}

/// The share of one CPU used: `delta_ns` over `interval_ns`, in tenths of a percent.
pub fn cpu_permille(delta_ns: u64, interval_ns: u64) -> u64 {
    tenths(delta_ns.saturating_mul(100), interval_ns)
}

/// `xl vcpu-list`'s header (`tools/xl/xl_vcpu.c`).
pub const VCPU_LIST_HEADER: &str =
    "Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)";

/// One vCPU as `vcpu-list` shows it.
pub struct VcpuRow<'a> {
    pub name: &'a str,
    pub id: u32,
    pub vcpu: u32,
    /// The CPU it runs or last ran on; `None` while it is offline (waiting for a STARTUP IPI).
    pub cpu: Option<u32>,
    pub running: bool,
    pub blocked: bool,
    pub time_ns: u64,
    /// The CPUs it may run on (bit n is CPU n).
    pub affinity: u64,
    /// The CPUs the monitor has.
    pub nr_cpus: u32,
}

/// One `vcpu-list` row, as `xl vcpu-list` prints it: an offline vCPU shows `-` for its CPU and
/// `--p` for its state; the soft affinity is always `all`.
pub fn vcpu_row(w: &mut impl Write, v: &VcpuRow) -> fmt::Result {
    write!(w, "{:<32} {:>5} {:>5}", v.name, v.id, v.vcpu)?;
    match v.cpu {
        None => w.write_str("    -   --p ")?,
        Some(cpu) => write!(
            w,
            "{cpu:>5} {:>3}{}- ",
            flag(v.running, 'r'),
            flag(v.blocked, 'b')
        )?,
    }
    let time = Tenths {
        value: tenths(v.time_ns, 1_000_000_000),
        width: 9,
    };
    write!(w, "{time}  ")?;
    cpu_bitmap(w, v.affinity, v.nr_cpus)?;
    w.write_str(" / all")
}

/// The CPUs of `mask` below `nr_cpus` as xl's `print_bitmap` writes them: `all` when every one
/// is set, `none` when none is, otherwise ranges such as `0-2,5`.
pub fn cpu_bitmap(w: &mut impl Write, mask: u64, nr_cpus: u32) -> fmt::Result {
    let n = nr_cpus.min(64);
    let set = |i: u32| i < n && mask & (1 << i) != 0;
    if (0..n).all(set) && n > 0 {
        return w.write_str("all");
    }
    if !(0..n).any(set) {
        return w.write_str("none");
    }
    let mut first = true;
    let mut i = 0;
    while i < n {
        if !set(i) {
            i += 1;
            continue;
        }
        let start = i;
        while set(i + 1) {
            i += 1;
        }
        w.write_str(if first { "" } else { "," })?;
        first = false;
        if i > start {
            write!(w, "{start}-{i}")?;
        } else {
            write!(w, "{start}")?;
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap(mask: u64, n: u32) -> String {
        let mut s = String::new();
        cpu_bitmap(&mut s, mask, n).unwrap();
        s
    }

    #[test]
    fn cpu_bitmaps_read_as_xl_prints_them() {
        assert_eq!(bitmap(u64::MAX, 2), "all");
        assert_eq!(bitmap(0b11, 2), "all");
        assert_eq!(bitmap(0b10, 2), "1");
        assert_eq!(bitmap(0b100, 2), "none", "beyond the CPUs there are");
        assert_eq!(bitmap(0b10_0111, 8), "0-2,5");
        assert_eq!(bitmap(0b1010, 4), "1,3");
        assert_eq!(bitmap(u64::MAX, 64), "all");
    }

    /// The expected strings are what xl's printf formats give for the same values.
    #[test]
    fn vcpu_rows_have_xls_columns() {
        let mut out = String::new();
        let row = VcpuRow {
            name: "web",
            id: 3,
            vcpu: 1,
            cpu: Some(1),
            running: true,
            blocked: false,
            time_ns: 12_340_000_000,
            affinity: 0b10,
            nr_cpus: 2,
        };
        vcpu_row(&mut out, &row).unwrap();
        assert_eq!(
            out,
            "web                                  3     1    1   r--      12.3  1 / all"
        );
        let mut out = String::new();
        vcpu_row(
            &mut out,
            &VcpuRow {
                cpu: None,
                running: false,
                affinity: u64::MAX,
                ..row
            },
        )
        .unwrap();
        assert_eq!(
            out,
            "web                                  3     1    -   --p      12.3  all / all"
        );
    }
    use alloc::string::String;

    fn row(name: &str, id: u32, state: State, cpu_ns: u64) -> Row<'_> {
        Row {
            name,
            id,
            mem_kib: 512 << 10,
            vcpus: 2,
            state,
            cpu_ns,
        }
    }

    #[test]
    fn list_matches_xl_byte_for_byte() {
        // The example of xen-compat.md §2, made with xl's own format strings.
        let mut s = String::new();
        let dom0 = Row {
            mem_kib: 2048 << 10,
            vcpus: 4,
            ..row(
                "Domain-0",
                0,
                State {
                    running: true,
                    ..State::default()
                },
                123_400_000_000,
            )
        };
        list_row(&mut s, &dom0).unwrap();
        s.push('\n');
        let blocked = State {
            blocked: true,
            ..State::default()
        };
        list_row(&mut s, &row("linux-pvh", 3, blocked, 4_960_000_000)).unwrap();
        assert_eq!(
            s,
            "Domain-0                                     0  2048     4     r-----     123.4\n\
             linux-pvh                                    3   512     2     -b----       5.0"
        );
        assert_eq!(
            LIST_HEADER,
            "Name                                        ID   Mem VCPUs\tState\tTime(s)"
        );
    }

    #[test]
    fn list_state_letters() {
        let mut s = String::new();
        let st = State {
            paused: true,
            shutdown: Some(ShutdownReason::Crash),
            dying: true,
            ..State::default()
        };
        list_row(&mut s, &row("x", 1, st, 0)).unwrap();
        assert!(s.ends_with("     --pscd       0.0"), "{s:?}");
        let mut s = String::new();
        let st = State {
            shutdown: Some(ShutdownReason::Reboot),
            ..State::default()
        };
        list_row(&mut s, &row("x", 1, st, 12_345_678_900_000)).unwrap();
        assert!(s.ends_with("     ---sr-   12345.7"), "{s:?}");
    }

    #[test]
    fn top_header_is_xentops() {
        let mut s = String::new();
        top_header(&mut s).unwrap();
        assert_eq!(
            s,
            "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID"
        );
    }

    #[test]
    fn top_rows_align_under_the_header() {
        let mut header = String::new();
        top_header(&mut header).unwrap();
        let mut s = String::new();
        let st = State {
            running: true,
            ..State::default()
        };
        top_row(
            &mut s,
            &row("a-very-long-name", 7, st, 3_900_000_000),
            333,
            2 << 20,
        )
        .unwrap();
        assert_eq!(s.len(), header.len());
        assert!(s.starts_with("a-very-lon -----r          3   33.3     524288   25.0     524288      25.0     2    0"), "{s:?}");
        assert_eq!(cpu_permille(1_000_000_000, 3_000_000_000), 333);
        assert_eq!(
            cpu_permille(5, 0),
            5000,
            "a zero interval does not divide by zero"
        );
    }
}
