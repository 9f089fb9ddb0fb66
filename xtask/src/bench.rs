//! `cargo xtask bench`: deterministic microbenchmarks and a Linux boot comparison.
//!
//! The bench guest (tests/guests/bench) runs in its `bench` mode under QEMU with
//! `-icount shift=0,sleep=off` (one TSC tick per guest-visible instruction) and a CPU without
//! RDRAND/RDSEED, four ways: under the monitor (counters on, tracing off), under the monitor with
//! `counters=off`, under the monitor with `trace=com2`, and booted directly by QEMU. It prints
//! the TSC ticks per round trip of each operation. Then the stock Linux guest boots to its
//! `HVTEST: userspace up` marker under the monitor and directly (wall time, no icount), and the
//! monitor's exit counters of that boot are read from its log. Prints a table; writes JSON.
//! Not a timed test: nothing here passes or fails on the numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::boot;
use crate::error::{bail, Context, Result};
use crate::headless::{self, Watch, BENCH_CPU, ICOUNT};
use crate::process;

/// The artifacts a benchmark run boots.
pub struct Inputs<'a> {
    pub hv: &'a Path,
    pub bench_bzimage: &'a Path,
    pub bench_elf: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Where configs, the trace sink and bench.json go.
    pub out_dir: &'a Path,
}

/// The operations the bench guest times, in its order.
pub const OPERATIONS: [&str; 7] = [
    "empty",
    "cpuid",
    "hypercall",
    "port-out",
    "lapic-read",
    "lapic-timer",
    "self-ipi",
];

const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
const LINUX_TIMEOUT: Duration = Duration::from_secs(1200);
const USERSPACE: &str = "HVTEST: userspace up";

/// Exit counters as the monitor logs them: (reason, count, cycles).
pub type ExitCounts = Vec<(String, u64, u64)>;

/// The bench guest's `BENCH: cycles OP N|n/a` lines: `None` for n/a.
pub fn parse_cycles(output: &str) -> BTreeMap<String, Option<u64>> {
    output
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("BENCH: cycles ")? + "BENCH: cycles ".len()..];
            let mut words = rest.split_whitespace();
            let op = words.next()?.to_string();
            let value = words.next()?;
            Some((op, value.parse().ok()))
        })
        .collect()
}

/// The counters the monitor logs when a domain stops: `(reason, count, cycles)`, from
/// `hv: domain NAME (id N) exits: vcpu 0 VENDOR: total T in C cycles, R N in C cycles, ...`.
pub fn parse_exit_counters(output: &str, domain: &str) -> Option<ExitCounts> {
    let prefix = format!("hv: domain {domain} (id ");
    let line = output
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(") exits: vcpu "))?;
    let list = &line[line.find(") exits: vcpu ")?..];
    let list = &list[list.find(": ")? + 2..];
    let list = &list[list.find(": ")? + 2..];
    list.split(", ")
        .map(|item| {
            let words: Vec<&str> = item.trim().split(' ').collect();
            match words[..] {
                [name, count, "in", cycles, "cycles"] => {
                    Some((name.to_string(), count.parse().ok()?, cycles.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

fn bench_config(dir: &Path, name: &str, kernel: &str, extra: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.cfg"));
    let text = format!(
        "name = \"{name}\"\nkernel = \"{kernel}\"\nmemory = 64\nvcpus = 1\nextra = \"{extra}\"\n"
    );
    process::write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// The default Linux config with `hvtest=1`, so that the guest powers off once it is up.
pub fn linux_config(dir: &Path, kernel: &Path, initrd: &Path) -> Result<PathBuf> {
    let text = boot::linux_cfg(&boot::name_of(kernel)?, &boot::name_of(initrd)?).replace(
        &format!("\"{}\"", boot::LINUX_EXTRA),
        &format!("\"{} hvtest=1\"", boot::LINUX_EXTRA),
    );
    let path = dir.join("linux.cfg");
    process::write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

fn guest_watch(echo: bool) -> Watch<'static> {
    Watch {
        time_to: None,
        stop_at: &["hv: no domains left", "BENCH: done"],
        timeout: GUEST_TIMEOUT,
        echo,
    }
}

/// One column of the micro-benchmark table.
struct Column {
    label: &'static str,
    cycles: BTreeMap<String, Option<u64>>,
}

fn guest_under_monitor(
    inputs: &Inputs,
    cfg: &Path,
    cmdline: &str,
    extra: &[String],
) -> Result<String> {
    let modules = [inputs.bench_bzimage.to_path_buf(), cfg.to_path_buf()];
    let mut cmd = headless::monitor(inputs.hv, &modules, cmdline, BENCH_CPU)?;
    cmd.args(ICOUNT).args(extra);
    let run = headless::run(cmd, &guest_watch(false))?;
    // The monitor's stop line comes after the guest's last one.
    if !run.output.contains("BENCH: done") {
        bail!(
            "the bench guest did not finish under the monitor:\n{}",
            headless::tail(&run.output, 20)
        );
    }
    Ok(run.output)
}

fn micro(inputs: &Inputs) -> Result<(Vec<Column>, ExitCounts)> {
    let dir = inputs.out_dir;
    let bz = boot::name_of(inputs.bench_bzimage)?;
    let cfg = bench_config(dir, "bench", &bz, "bench")?;
    let sink = dir.join("trace-sink.bin");
    let on = guest_under_monitor(inputs, &cfg, "", &[])?;
    let counters = parse_exit_counters(&on, "bench").unwrap_or_default();
    let off = guest_under_monitor(inputs, &cfg, "counters=off", &[])?;
    let traced = guest_under_monitor(
        inputs,
        &cfg,
        "trace=com2",
        &["-serial".into(), format!("file:{}", sink.display())],
    )?;
    let direct = headless::run(
        {
            let mut cmd = headless::direct(inputs.bench_elf, None, "bench", BENCH_CPU);
            cmd.args(ICOUNT);
            cmd
        },
        &guest_watch(false),
    )?;
    if !direct.output.contains("BENCH: done") {
        bail!(
            "the bench guest did not finish on bare QEMU:\n{}",
            headless::tail(&direct.output, 20)
        );
    }
    let columns = vec![
        Column {
            label: "monitor",
            cycles: parse_cycles(&on),
        },
        Column {
            label: "counters=off",
            cycles: parse_cycles(&off),
        },
        Column {
            label: "trace=com2",
            cycles: parse_cycles(&traced),
        },
        Column {
            label: "direct",
            cycles: parse_cycles(&direct.output),
        },
    ];
    Ok((columns, counters))
}

/// The Linux boot comparison.
struct Linux {
    monitor: Duration,
    direct: Duration,
    exits: ExitCounts,
}

fn linux(inputs: &Inputs) -> Result<Linux> {
    let cfg = linux_config(inputs.out_dir, inputs.kernel, inputs.initrd)?;
    let modules = [
        inputs.kernel.to_path_buf(),
        inputs.initrd.to_path_buf(),
        cfg,
    ];
    let watch = Watch {
        time_to: Some(USERSPACE),
        stop_at: &["hv: no domains left"],
        timeout: LINUX_TIMEOUT,
        echo: false,
    };
    let under = headless::run(
        headless::monitor(inputs.hv, &modules, "", BENCH_CPU)?,
        &watch,
    )?;
    let append = format!("{} hvtest=1", boot::LINUX_EXTRA);
    let direct_watch = Watch {
        stop_at: &["HVTEST: powering off"],
        ..watch
    };
    let direct = headless::run(
        headless::direct(inputs.kernel, Some(inputs.initrd), &append, BENCH_CPU),
        &direct_watch,
    )?;
    let (Some(monitor), Some(direct_t)) = (under.marker_at, direct.marker_at) else {
        bail!(
            "Linux did not reach {USERSPACE:?}; under the monitor:\n{}\ndirectly:\n{}",
            headless::tail(&under.output, 15),
            headless::tail(&direct.output, 15)
        );
    };
    Ok(Linux {
        monitor,
        direct: direct_t,
        exits: parse_exit_counters(&under.output, "linux").unwrap_or_default(),
    })
}

fn cell(v: Option<&Option<u64>>) -> String {
    match v {
        Some(Some(n)) => n.to_string(),
        Some(None) => "n/a".into(),
        None => "-".into(),
    }
}

fn table(columns: &[Column], guest_exits: &[(String, u64, u64)], linux: &Linux) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Round trips in guest-visible instructions (TSC ticks under -icount shift=0), mean of 100:"
    );
    let _ = write!(s, "{:<12}", "operation");
    for c in columns {
        let _ = write!(s, " {:>13}", c.label);
    }
    let _ = writeln!(s, " {:>13}", "monitor cost");
    for op in OPERATIONS {
        let _ = write!(s, "{op:<12}");
        for c in columns {
            let _ = write!(s, " {:>13}", cell(c.cycles.get(op)));
        }
        let on = columns
            .first()
            .and_then(|c| c.cycles.get(op).copied().flatten());
        let direct = columns
            .last()
            .and_then(|c| c.cycles.get(op).copied().flatten());
        let cost = match (on, direct) {
            (Some(m), Some(d)) => format!("{}", m as i64 - d as i64),
            (Some(m), None) => format!("{m}"),
            _ => "-".into(),
        };
        let _ = writeln!(s, " {cost:>13}");
    }
    let _ = writeln!(s, "\nExits of the bench guest's run under the monitor:");
    for (reason, count, cycles) in guest_exits {
        let _ = writeln!(s, "  {reason:<20} {count:>9} {cycles:>14} cycles");
    }
    let _ = writeln!(
        s,
        "\nLinux to {USERSPACE:?}: {:.2} s under the monitor, {:.2} s directly, ratio {:.2}",
        linux.monitor.as_secs_f64(),
        linux.direct.as_secs_f64(),
        linux.monitor.as_secs_f64() / linux.direct.as_secs_f64().max(1e-9)
    );
    let _ = writeln!(s, "Exits of that boot by reason (whole run, to power-off):");
    for (reason, count, cycles) in &linux.exits {
        let _ = writeln!(s, "  {reason:<20} {count:>9} {cycles:>14} cycles");
    }
    s
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_exits(exits: &[(String, u64, u64)]) -> String {
    let items: Vec<String> = exits
        .iter()
        .map(|(r, n, c)| format!("{}: {{\"count\": {n}, \"cycles\": {c}}}", json_string(r)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn json(columns: &[Column], guest_exits: &[(String, u64, u64)], linux: &Linux) -> String {
    let mut micro = Vec::new();
    for c in columns {
        let ops: Vec<String> = OPERATIONS
            .iter()
            .map(|op| {
                let v = match c.cycles.get(*op) {
                    Some(Some(n)) => n.to_string(),
                    _ => "null".into(),
                };
                format!("{}: {v}", json_string(op))
            })
            .collect();
        micro.push(format!(
            "    {}: {{{}}}",
            json_string(c.label),
            ops.join(", ")
        ));
    }
    format!(
        "{{\n  \"unit\": \"guest-visible instructions per round trip (-icount shift=0)\",\n  \"micro\": {{\n{}\n  }},\n  \"bench_guest_exits\": {},\n  \"linux\": {{\"monitor_s\": {:.3}, \"direct_s\": {:.3}, \"ratio\": {:.3}, \"exits\": {}}}\n}}\n",
        micro.join(",\n"),
        json_exits(guest_exits),
        linux.monitor.as_secs_f64(),
        linux.direct.as_secs_f64(),
        linux.monitor.as_secs_f64() / linux.direct.as_secs_f64().max(1e-9),
        json_exits(&linux.exits)
    )
}

/// Runs everything, prints the table and writes `out_dir/../bench.json`; returns its path.
pub fn run(inputs: &Inputs, json_path: &Path) -> Result<PathBuf> {
    fs::create_dir_all(inputs.out_dir)
        .context(|| format!("creating {}", inputs.out_dir.display()))?;
    let (columns, guest_exits) = micro(inputs)?;
    let linux = linux(inputs)?;
    print!("{}", table(&columns, &guest_exits, &linux));
    process::write_atomically(json_path, json(&columns, &guest_exits, &linux).as_bytes())?;
    Ok(json_path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_lines_parse_numbers_and_na() {
        let out =
            "x\r\nBENCH: cycles cpuid 1234\r\nhv: BENCH: cycles hypercall n/a\r\nBENCH: cycles\r\n";
        let c = parse_cycles(out);
        assert_eq!(c.get("cpuid"), Some(&Some(1234)));
        assert_eq!(c.get("hypercall"), Some(&None));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn exit_counters_parse_from_the_monitor_log() {
        let out = "hv: domain other (id 2) exits: vcpu 0 svm: total 1 in 2 cycles\n\
                   hv: domain bench (id 1) exits: vcpu 0 svm: total 1700 in 90 cycles, CPUID 1000 in 50 cycles, NPF 200 in 40 cycles\n";
        assert_eq!(
            parse_exit_counters(out, "bench").unwrap(),
            [
                ("total".to_string(), 1700, 90),
                ("CPUID".to_string(), 1000, 50),
                ("NPF".to_string(), 200, 40)
            ]
        );
        assert!(parse_exit_counters(out, "linux").is_none());
        assert!(
            parse_exit_counters("hv: domain bench (id 1) exits: vcpu 0 svm: x y", "bench")
                .is_none()
        );
    }

    #[test]
    fn json_escapes_and_marks_missing_values_null() {
        assert_eq!(json_string("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
        let cols = [Column {
            label: "direct",
            cycles: parse_cycles("BENCH: cycles cpuid 7\nBENCH: cycles hypercall n/a\n"),
        }];
        let l = Linux {
            monitor: Duration::from_secs(4),
            direct: Duration::from_secs(2),
            exits: vec![("IOIO".into(), 3, 9)],
        };
        let j = json(&cols, &[], &l);
        assert!(j.contains("\"cpuid\": 7, \"hypercall\": null"), "{j}");
        assert!(j.contains("\"ratio\": 2.000"), "{j}");
        assert!(j.contains("\"IOIO\": {\"count\": 3, \"cycles\": 9}"), "{j}");
    }
}
