//! Exact exit counts: the bench guest (tests/guests/bench) issues exactly 1000 CPUID, 500 OUT to
//! port 0x80 and 200 xAPIC MMIO reads, and reports every port I/O instruction it executed
//! (its own printing and power-off included). Its boot uses no CPUID and no MMIO. The monitor's
//! counter dump and `cargo xtask trace report` on the COM2 trace of the same run must both show
//! exactly those numbers for that domain, on SVM (QEMU) and on VMX (Bochs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::{Artifacts, Boot, Emulator, Machine, VmConfig};

const CPUIDS: u64 = 1000;
const LAPIC_READS: u64 = 200;

/// The exit reasons of the three operations, by backend, as the vendor names them.
fn reasons(vendor: &str) -> [&'static str; 3] {
    match vendor {
        "vmx" => ["CPUID", "IO_INSTRUCTION", "EPT_VIOLATION"],
        _ => ["CPUID", "IOIO", "NPF"],
    }
}

/// `hv: domain bench (id 1) exits: vcpu 0 VENDOR: total T in C cycles, R N in C cycles, ...`
/// as (vendor, reason → count).
fn parse_dump(line: &str) -> (String, BTreeMap<String, u64>) {
    let after = line
        .split_once(") exits: vcpu 0 ")
        .unwrap_or_else(|| panic!("not a counter dump: {line}"))
        .1;
    let (vendor, list) = after.split_once(": ").expect("vendor then counters");
    let counts = list
        .split(", ")
        .map(|item| {
            let words: Vec<&str> = item.split(' ').collect();
            assert_eq!(words.len(), 5, "counter {item:?} in {line}");
            (words[0].to_string(), words[1].parse().expect("a count"))
        })
        .collect();
    (vendor.to_string(), counts)
}

/// The counts of the report's section for domain `bench`, by reason name.
fn parse_report(report: &str) -> BTreeMap<String, u64> {
    let section = report
        .split("\nDomain ")
        .find(|s| s.starts_with("bench (id 1) vCPU 0:"))
        .unwrap_or_else(|| panic!("no section for domain bench in the report:\n{report}"));
    section
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(" (0x"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[3].parse().expect("a count"))
        })
        .collect()
}

/// The trace file of one run (the two tests run in parallel, in one process).
fn trace_file(emulator: Emulator) -> PathBuf {
    std::env::temp_dir().join(format!("hv-counts-{}-{emulator:?}.bin", std::process::id()))
}

/// The report on `file`; the plots it writes (`xtask: wrote PATH` on its stderr) are removed.
fn report(xtask: &Path, file: &Path) -> String {
    let out = Command::new(xtask)
        .args(["trace", "report"])
        .arg(file)
        .output()
        .expect("running xtask trace report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for plot in stderr
        .lines()
        .filter_map(|l| l.strip_prefix("xtask: wrote "))
    {
        let _ = std::fs::remove_file(plot);
    }
    assert!(out.status.success(), "trace report failed: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 report")
}

/// Runs the bench guest on `emulator` (and so on its backend) with the trace on COM2, and checks
/// the counter dump and the trace report show exactly the guest's exits.
fn check_exact_counts(emulator: Emulator) {
    let artifacts = Artifacts::from_env();
    let trace = trace_file(emulator);
    let config = VmConfig {
        name: "bench".into(),
        kernel: "bench.bzImage".into(),
        ..VmConfig::probe()
    };
    let boot = Boot::new(&artifacts.hv)
        .on(emulator)
        .memory("512M")
        .monitor_option("trace=com2")
        .com2_to_file(&trace)
        .image(&config.kernel, &artifacts.bench)
        .config(config);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));

    // Bochs boots GRUB first and interprets every instruction.
    let boot_time = match emulator {
        Emulator::Qemu => Duration::from_secs(120),
        Emulator::Bochs => Duration::from_secs(300),
    };
    let line = machine.expect_line("BENCH: port-io ", boot_time);
    let port_io: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    machine.expect(
        "hv: domain bench (id 1): powered off",
        Duration::from_secs(60),
    );
    let dump = machine.expect_line("hv: domain bench (id 1) exits: ", Duration::from_secs(30));
    let (vendor, counters) = parse_dump(&dump);
    let expected_vendor = match emulator {
        Emulator::Qemu => "svm",
        Emulator::Bochs => "vmx",
    };
    assert_eq!(vendor, expected_vendor, "the backend of {dump}");
    let [cpuid, io, mmio] = reasons(&vendor);
    let expected = [(cpuid, CPUIDS), (io, port_io), (mmio, LAPIC_READS)];
    for (reason, count) in expected {
        assert_eq!(counters.get(reason), Some(&count), "{reason} in {dump}");
    }

    // The monitor wrote the last record before the two lines above, which are longer than
    // COM2's transmit FIFO: the emulator has put every record in the file (`com2_to_file`).
    let text = report(&artifacts.xtask, &trace);
    let _ = std::fs::remove_file(&trace);
    let traced = parse_report(&text);
    for (reason, count) in expected {
        assert_eq!(traced.get(reason), Some(&count), "{reason} in:\n{text}");
    }
    let total: u64 = counters.values().sum::<u64>() - counters["total"];
    assert_eq!(
        traced.values().sum::<u64>(),
        total,
        "the trace holds every counted exit"
    );
}

#[test]
fn svm_exact_counts_in_counters_and_trace() {
    check_exact_counts(Emulator::Qemu);
}

#[test]
fn vmx_exact_counts_in_counters_and_trace() {
    check_exact_counts(Emulator::Bochs);
}

#[test]
fn dump_and_report_parsers_read_what_the_tools_print() {
    let (vendor, c) = parse_dump(
        "hv: domain bench (id 1) exits: vcpu 0 svm: total 3 in 9 cycles, CPUID 2 in 4 cycles, NPF 1 in 5 cycles",
    );
    assert_eq!(vendor, "svm");
    assert_eq!((c["total"], c["CPUID"], c["NPF"]), (3, 2, 1));
    let report = "Trace: x\n\nDomain bench (id 1) vCPU 0: 3 exits\n Exit reasons:\n  reason vendor count\n  CPUID (0x72)  svm  2  10\n  NPF (0x400)  svm  1  5\n\nDomain other (id 2) vCPU 0: 1 exits\n  CPUID (0x72)  svm  9  1\n";
    let r = parse_report(report);
    assert_eq!(r.len(), 2);
    assert_eq!((r["CPUID"], r["NPF"]), (2, 1));
}
