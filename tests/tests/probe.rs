//! Boots the probe guest under the monitor and checks every result it prints: unknown MSRs,
//! unclaimed ports, unmapped guest-physical memory, SVM instructions and CPUID, plus the
//! monitor's own log lines about the unmapped accesses.

mod common;

use std::time::Duration;

use tests::{Artifacts, Boot, Machine, VmConfig};

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
    common::assert_probe_passed(&machine.output());
}
