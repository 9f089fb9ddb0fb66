//! Boots the probe guest under the monitor and checks every result it prints: unknown MSRs,
//! unclaimed ports, unmapped guest-physical memory, SVM instructions and CPUID, plus the
//! monitor's own log lines about the unmapped accesses.

use std::time::Duration;

use tests::{probe_lines, Artifacts, Boot, Machine, VmConfig};

/// The checks the probe runs, by the name on their `PROBE:` line.
const CHECKS: [&str; 10] = [
    "boot-params",
    "wrmsr-unknown",
    "rdmsr-unknown",
    "port-unclaimed",
    "mmio-hole-read",
    "mmio-hole-write",
    "vmrun",
    "vmmcall",
    "cpuid-hypervisor",
    "still-alive",
];

#[test]
fn probe_checks_pass_and_the_monitor_logs_unmapped_accesses() {
    let artifacts = Artifacts::from_env();
    let config = VmConfig::probe();
    let boot = Boot::new(&artifacts.hv)
        .image(&config.kernel, &artifacts.probe)
        .config(config);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));

    machine.expect("PROBE: done", Duration::from_secs(300));
    machine.expect(
        "hv: domain probe (id 1): powered off",
        Duration::from_secs(60),
    );

    let output = machine.output();
    let lines = probe_lines(&output);
    let failed: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| *line != "PROBE: done" && (!line.ends_with(" ok") || line.contains("FAIL")))
        .collect();
    assert!(
        failed.is_empty(),
        "probe checks failed:\n{}",
        failed.join("\n")
    );
    for check in CHECKS {
        let prefix = format!("PROBE: {check}: ");
        assert!(
            lines.iter().any(|line| line.starts_with(&prefix)),
            "no result for {check}; the probe printed:\n{}",
            lines.join("\n")
        );
    }
    for log in [
        "hv: domain probe (id 1): read of unmapped gpa 0x80000000",
        "hv: domain probe (id 1): write to unmapped gpa",
    ] {
        assert!(output.contains(log), "the monitor did not log {log:?}");
    }
}
