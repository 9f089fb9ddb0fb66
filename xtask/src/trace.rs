//! `cargo xtask trace`: reads the monitor's exit trace (the 36-byte xentrace-compatible records
//! documented in hv-core/src/trace.rs) and prints a xenalyze-style summary per domain and vCPU,
//! and draws two SVG plots next to the file (exits per reason over time; distribution of the
//! handling cost). `record` boots a guest with `trace=com2` and keeps the file.
//! Not the monitor side: see hv-core's `trace` and `profile` modules.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{bail, Context, Result};
use crate::{headless, svg};

const RECORD_BYTES: usize = 36;
const VMEXIT: u32 = 0x0008_1002;
const TSC_HZ: u32 = 0x0001_F801;
const DOMAIN_NAME: u32 = 0x0001_F802;
const EXIT_NAME: u32 = 0x0001_F803;

/// One record of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub cpu: u32,
    pub tsc: u64,
    pub event: u32,
    pub data: [u32; 5],
}

/// Splits a stream into records; a partial record at the end (a cut-off capture) is dropped.
pub fn parse(bytes: &[u8]) -> Vec<Record> {
    bytes
        .chunks_exact(RECORD_BYTES)
        .map(|b| {
            let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            Record {
                cpu: word(0),
                tsc: u64::from(word(4)) | (u64::from(word(8)) << 32),
                event: word(12),
                data: [word(16), word(20), word(24), word(28), word(32)],
            }
        })
        .collect()
}

/// The 16-byte NUL-padded name in D2..D5.
fn name_of(data: &[u32; 5]) -> String {
    let bytes: Vec<u8> = data[1..].iter().flat_map(|w| w.to_le_bytes()).collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// One exit as the report needs it.
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub tsc: u64,
    pub raw: u32,
    pub cost: u64,
}

/// A trace, decoded.
#[derive(Debug, Default)]
pub struct Trace {
    pub tsc_hz: Option<u64>,
    pub vendor: Option<&'static str>,
    pub domains: BTreeMap<u32, String>,
    pub exit_names: BTreeMap<u32, String>,
    /// Exits by (domain, vCPU), in stream order.
    pub exits: BTreeMap<(u32, u32), Vec<ExitEvent>>,
    pub first_tsc: u64,
    pub last_tsc: u64,
}

impl Trace {
    pub fn decode(records: &[Record]) -> Self {
        let mut t = Trace {
            first_tsc: u64::MAX,
            ..Trace::default()
        };
        for r in records {
            match r.event {
                TSC_HZ => {
                    t.tsc_hz = Some(u64::from(r.data[0]) | (u64::from(r.data[1]) << 32));
                    t.vendor = match r.data[2] {
                        1 => Some("svm"),
                        2 => Some("vmx"),
                        _ => None,
                    };
                }
                DOMAIN_NAME => {
                    t.domains.insert(r.data[0], name_of(&r.data));
                }
                EXIT_NAME => {
                    t.exit_names.insert(r.data[0], name_of(&r.data));
                }
                VMEXIT => {
                    let key = (r.data[1] >> 16, r.data[1] & 0xFFFF);
                    t.exits.entry(key).or_default().push(ExitEvent {
                        tsc: r.tsc,
                        raw: r.data[0],
                        cost: u64::from(r.data[4]),
                    });
                    t.first_tsc = t.first_tsc.min(r.tsc);
                    t.last_tsc = t.last_tsc.max(r.tsc + u64::from(r.data[4]));
                }
                _ => {}
            }
        }
        if t.first_tsc == u64::MAX {
            t.first_tsc = 0;
        }
        t
    }

    /// The vendor-neutral reason (`vcpu::Exit`) the monitor's exit loop saw for `raw`.
    pub fn neutral_reason(&self, raw: u32) -> &'static str {
        let exit = match self.vendor {
            Some("svm") => svm::exit::decode(u64::from(raw), 0, 0, None).exit,
            Some("vmx") => vmx::exit::decode(raw, 0, &|_| 0).exit,
            _ => return "?",
        };
        neutral_name(&exit)
    }

    pub fn reason_name(&self, raw: u32) -> String {
        self.exit_names
            .get(&raw)
            .cloned()
            .unwrap_or_else(|| format!("{raw:#x}"))
    }

    fn domain_label(&self, id: u32) -> String {
        match self.domains.get(&id) {
            Some(name) => format!("{name} (id {id})"),
            None => format!("id {id}"),
        }
    }
}

/// The statistics of one reason on one vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReasonStats {
    pub raw: u32,
    pub count: u64,
    pub total: u64,
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
}

impl ReasonStats {
    pub fn average(&self) -> u64 {
        self.total.checked_div(self.count).unwrap_or(0)
    }
}

/// The nearest-rank percentile `p` (0..=100) of sorted `values`.
fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Per-reason statistics of `exits`, most frequent first.
pub fn reasons(exits: &[ExitEvent]) -> Vec<ReasonStats> {
    let mut by_raw: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for e in exits {
        by_raw.entry(e.raw).or_default().push(e.cost);
    }
    let mut out: Vec<ReasonStats> = by_raw
        .into_iter()
        .map(|(raw, mut costs)| {
            costs.sort_unstable();
            ReasonStats {
                raw,
                count: costs.len() as u64,
                total: costs.iter().sum(),
                p50: percentile(&costs, 50),
                p95: percentile(&costs, 95),
                max: costs.last().copied().unwrap_or(0),
            }
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.raw.cmp(&b.raw)));
    out
}

fn micros(cycles: u64, hz: Option<u64>) -> String {
    match hz {
        Some(hz) if hz > 0 => format!("{:.3}", cycles as f64 * 1e6 / hz as f64),
        _ => "-".into(),
    }
}

/// The summary text: per domain and vCPU, one line per exit reason.
pub fn summary(t: &Trace) -> String {
    let mut s = String::new();
    let span = t.last_tsc.saturating_sub(t.first_tsc);
    let hz = t.tsc_hz;
    let _ = writeln!(
        s,
        "Trace: {} exits over {} TSC cycles ({} us), TSC {} kHz, backend {}",
        t.exits.values().map(Vec::len).sum::<usize>(),
        span,
        micros(span, hz),
        hz.map_or("unknown".into(), |h| (h / 1000).to_string()),
        t.vendor.unwrap_or("unknown")
    );
    for (&(domain, vcpu), exits) in &t.exits {
        let rs = reasons(exits);
        let in_monitor: u64 = rs.iter().map(|r| r.total).sum();
        let _ = writeln!(
            s,
            "\nDomain {} vCPU {vcpu}: {} exits, {} cycles ({} us) in the monitor, {:.2}% of the trace",
            t.domain_label(domain),
            exits.len(),
            in_monitor,
            micros(in_monitor, hz),
            pct(in_monitor, span)
        );
        let _ = writeln!(s, " Exit reasons:");
        let _ = writeln!(
            s,
            "  {:<20} {:<6} {:>9} {:>14} {:>12} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}  exit",
            "reason",
            "vendor",
            "count",
            "total cyc",
            "total us",
            "%time",
            "avg cyc",
            "p50 cyc",
            "p95 cyc",
            "max cyc",
            "avg us"
        );
        for r in &rs {
            let _ = writeln!(
                s,
                "  {:<20} {:<6} {:>9} {:>14} {:>12} {:>6.2}% {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
                format!("{} ({:#x})", t.reason_name(r.raw), r.raw),
                t.vendor.unwrap_or("?"),
                r.count,
                r.total,
                micros(r.total, hz),
                pct(r.total, span),
                r.average(),
                r.p50,
                r.p95,
                r.max,
                micros(r.average(), hz),
                t.neutral_reason(r.raw)
            );
        }
    }
    s
}

fn neutral_name(exit: &vcpu::Exit) -> &'static str {
    use vcpu::Exit;
    match exit {
        Exit::Cpuid => "cpuid",
        Exit::Hlt => "hlt",
        Exit::Io(_) => "io",
        // SVM's one MSR exit code covers both directions.
        Exit::MsrRead | Exit::MsrWrite => "msr",
        Exit::NestedPageFault { .. } => "mmio",
        Exit::ExternalInterrupt => "interrupt",
        Exit::InterruptWindow => "irq-window",
        Exit::NmiWindow => "nmi-window",
        Exit::Hypercall => "hypercall",
        Exit::VirtInstruction => "virt-insn",
        Exit::Xsetbv => "xsetbv",
        Exit::CacheFlush => "cache-flush",
        Exit::Shutdown => "shutdown",
        Exit::Exception { .. } => "exception",
        Exit::InvalidState => "invalid-state",
        Exit::Unknown => "unknown",
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Reasons drawn in the plots: the most frequent over the whole trace.
const PLOTTED: usize = 8;
/// Time bins of the exits-over-time plot.
const BINS: usize = 100;

/// The SVG of exits per reason over time (all domains), in `BINS` bins.
pub fn exits_over_time(t: &Trace) -> String {
    let all: Vec<ExitEvent> = t.exits.values().flatten().copied().collect();
    let top: Vec<u32> = reasons(&all).iter().take(PLOTTED).map(|r| r.raw).collect();
    let span = t.last_tsc.saturating_sub(t.first_tsc).max(1);
    let series: Vec<svg::Series> = top
        .iter()
        .map(|&raw| {
            let mut bins = vec![0f64; BINS];
            for e in all.iter().filter(|e| e.raw == raw) {
                let at =
                    ((e.tsc - t.first_tsc) as u128 * BINS as u128 / (span as u128 + 1)) as usize;
                bins[at.min(BINS - 1)] += 1.0;
            }
            let step = span as f64 / BINS as f64;
            let x = |i: usize| match t.tsc_hz {
                Some(hz) if hz > 0 => i as f64 * step / hz as f64 * 1e3,
                _ => i as f64 * step,
            };
            svg::Series {
                label: t.reason_name(raw),
                points: bins.iter().enumerate().map(|(i, &n)| (x(i), n)).collect(),
            }
        })
        .collect();
    let x_label = if t.tsc_hz.is_some() {
        "time since the first exit (ms)"
    } else {
        "TSC cycles since the first exit"
    };
    svg::line_chart(
        &format!("Exits per reason over time ({BINS} bins)"),
        x_label,
        "exits per bin",
        &series,
    )
}

/// The SVG of the distribution of handling cost per reason: exits per power-of-two bucket.
pub fn cost_distribution(t: &Trace) -> String {
    let all: Vec<ExitEvent> = t.exits.values().flatten().copied().collect();
    let top: Vec<u32> = reasons(&all).iter().take(PLOTTED).map(|r| r.raw).collect();
    let buckets = 40;
    let series: Vec<svg::Series> = top
        .iter()
        .map(|&raw| {
            let mut counts = vec![0f64; buckets];
            for e in all.iter().filter(|e| e.raw == raw) {
                let b = (64 - e.cost.max(1).leading_zeros()) as usize;
                counts[b.min(buckets - 1)] += 1.0;
            }
            svg::Series {
                label: t.reason_name(raw),
                points: counts
                    .iter()
                    .enumerate()
                    .map(|(b, &n)| (b as f64, n))
                    .collect(),
            }
        })
        .collect();
    svg::line_chart(
        "Distribution of handling cost per reason",
        "log2(cycles in the monitor)",
        "exits",
        &series,
    )
}

/// `cargo xtask trace report FILE`: prints the summary, writes FILE's plots; returns their paths.
pub fn report(file: &Path) -> Result<Vec<PathBuf>> {
    let bytes = fs::read(file).context(|| format!("reading {}", file.display()))?;
    let records = parse(&bytes);
    if records.is_empty() {
        bail!(
            "{}: no trace records (was the monitor started with trace=com2?)",
            file.display()
        );
    }
    let trace = Trace::decode(&records);
    print!("{}", summary(&trace));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let stem = file.with_extension("");
    let plots = [
        (
            format!("{}-exits.svg", stem.display()),
            exits_over_time(&trace),
        ),
        (
            format!("{}-cost.svg", stem.display()),
            cost_distribution(&trace),
        ),
    ];
    let mut written = Vec::new();
    for (path, text) in plots {
        fs::write(&path, text).context(|| format!("writing {path}"))?;
        written.push(PathBuf::from(path));
    }
    Ok(written)
}

/// How long a recorded boot may take.
const RECORD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// `cargo xtask trace record`: boots the monitor with `trace=com2` and `modules` (a config that
/// powers its guest off), COM1 here, COM2 into `out`, until no domain is left.
pub fn record(hv: &Path, modules: &[PathBuf], out: &Path, qemu_args: &[String]) -> Result<()> {
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    }
    let mut cmd = headless::monitor(hv, modules, "trace=com2", "max")?;
    cmd.arg("-serial")
        .arg(format!("file:{}", out.display()))
        .args(qemu_args);
    let run = headless::run(
        cmd,
        &headless::Watch {
            time_to: None,
            stop_at: &["hv: no domains left"],
            timeout: RECORD_TIMEOUT,
            echo: true,
        },
    )?;
    let size = fs::metadata(out).map_or(0, |m| m.len());
    eprintln!(
        "\nxtask: {} records ({size} bytes) in {} after {:.1} s",
        size / RECORD_BYTES as u64,
        out.display(),
        run.elapsed.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(r: &Record) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&r.cpu.to_le_bytes());
        b.extend_from_slice(&r.tsc.to_le_bytes());
        b.extend_from_slice(&r.event.to_le_bytes());
        for d in r.data {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b
    }

    fn named(event: u32, key: u32, name: &str) -> Record {
        let mut n = [0u8; 16];
        n[..name.len()].copy_from_slice(name.as_bytes());
        let w = |i: usize| u32::from_le_bytes([n[i], n[i + 1], n[i + 2], n[i + 3]]);
        Record {
            cpu: 0,
            tsc: 0,
            event,
            data: [key, w(0), w(4), w(8), w(12)],
        }
    }

    fn exit(tsc: u64, raw: u32, domain: u32, cost: u32) -> Record {
        Record {
            cpu: 0,
            tsc,
            event: VMEXIT,
            data: [raw, domain << 16, 0, 0, cost],
        }
    }

    fn sample() -> Vec<u8> {
        let mut recs = vec![
            Record {
                cpu: 0,
                tsc: 0,
                event: TSC_HZ,
                data: [1_000_000_000, 0, 1, 0, 0],
            },
            named(DOMAIN_NAME, 1, "bench"),
            named(EXIT_NAME, 0x72, "CPUID"),
            named(EXIT_NAME, 0x7B, "IOIO"),
        ];
        for i in 0..10u32 {
            recs.push(exit(1000 + u64::from(i) * 100, 0x72, 1, 10 * (i + 1)));
        }
        recs.push(exit(3000, 0x7B, 1, 1000));
        recs.push(exit(3500, 0x7B, 2, 7));
        let mut b: Vec<u8> = recs.iter().flat_map(bytes).collect();
        b.extend_from_slice(&[1, 2, 3]);
        b
    }

    #[test]
    fn records_decode_and_partial_tails_are_dropped() {
        let recs = parse(&sample());
        assert_eq!(recs.len(), 16);
        assert_eq!(recs[0].event, TSC_HZ);
        let t = Trace::decode(&recs);
        assert_eq!(t.tsc_hz, Some(1_000_000_000));
        assert_eq!(t.vendor, Some("svm"));
        assert_eq!(t.domains[&1], "bench");
        assert_eq!(t.reason_name(0x72), "CPUID");
        assert_eq!(t.reason_name(0x99), "0x99");
        assert_eq!(t.exits[&(1, 0)].len(), 11);
        assert_eq!(t.exits[&(2, 0)].len(), 1);
        assert_eq!((t.first_tsc, t.last_tsc), (1000, 4000));
    }

    #[test]
    fn reason_statistics_use_nearest_rank_percentiles() {
        let t = Trace::decode(&parse(&sample()));
        let rs = reasons(&t.exits[&(1, 0)]);
        assert_eq!(
            rs[0],
            ReasonStats {
                raw: 0x72,
                count: 10,
                total: 550,
                p50: 50,
                p95: 100,
                max: 100
            }
        );
        assert_eq!(rs[0].average(), 55);
        assert_eq!((rs[1].raw, rs[1].count, rs[1].p50), (0x7B, 1, 1000));
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[4], 95), 4);
    }

    #[test]
    fn summary_has_a_line_per_domain_vcpu_and_reason() {
        let t = Trace::decode(&parse(&sample()));
        let s = summary(&t);
        assert!(s.contains("Domain bench (id 1) vCPU 0: 11 exits"), "{s}");
        assert!(s.contains("Domain id 2 vCPU 0: 1 exits"), "{s}");
        let cpuid = s.lines().find(|l| l.contains("CPUID (0x72)")).unwrap();
        let cols: Vec<&str> = cpuid.split_whitespace().collect();
        assert_eq!(cols[2..5], ["svm", "10", "550"]);
        assert_eq!(cols[5], "0.550", "550 cycles at 1 GHz");
    }

    #[test]
    fn plots_are_svg_with_a_series_per_reason() {
        let t = Trace::decode(&parse(&sample()));
        for svg in [exits_over_time(&t), cost_distribution(&t)] {
            assert!(svg.starts_with("<svg"));
            assert!(svg.trim_end().ends_with("</svg>"));
            assert_eq!(svg.matches("<polyline").count(), 2);
            assert!(svg.contains(">CPUID<") && svg.contains(">IOIO<"));
        }
    }
}
