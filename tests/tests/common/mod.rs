//! What the integration tests on both backends (SVM under QEMU, VMX under Bochs) judge alike:
//! the probe guest's results. Not a test binary of its own: `probe.rs` and `vmx.rs` include it.

use tests::probe_lines;

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

/// Panics unless the probe, in `output` (COM1 up to its power-off), printed a passing result
/// for every check and none failing, and the monitor logged its accesses to unmapped memory.
#[track_caller]
pub fn assert_probe_passed(output: &str) {
    let lines = probe_lines(output);
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
