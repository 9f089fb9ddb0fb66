//! The guests on the Intel VMX backend: the monitor booted by GRUB under Bochs, whose Skylake-X
//! CPU has VT-x with EPT. The probe guest gets the architectural results, and the stock Debian
//! kernel boots with two vCPUs (the second started in real mode by the guest's INIT/SIPI) to its
//! busybox userspace and powers off, as on SVM under QEMU (`probe.rs`, `linux.rs`). The Linux
//! machine has two CPUs, which the monitor brings up: the guest's vCPUs move between them from
//! slice to slice (VMCLEAR on one, VMPTRLD and VMLAUNCH on the other). Bochs interprets every
//! instruction, so the Linux guest takes a minute or more.

mod common;

use std::time::Duration;

use tests::{linux, Artifacts, Boot, Emulator, Machine, VmConfig};

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Checks the monitor's boot log names the VMX backend and the features it uses.
fn expect_vmx_backend(machine: &Machine) {
    let backend = machine.expect_line("hv: backend ", seconds(60));
    for feature in [
        "backend vmx:",
        "EPT pages",
        "VPID yes",
        "unrestricted guest yes",
        "preemption timer yes",
    ] {
        assert!(
            backend.contains(feature),
            "the backend line lacks {feature:?}: {backend}"
        );
    }
}

#[test]
fn vmx_probe_checks_pass_and_the_monitor_logs_unmapped_accesses() {
    let artifacts = Artifacts::from_env();
    let config = VmConfig::probe();
    let boot = Boot::new(&artifacts.hv)
        .on(Emulator::Bochs)
        .memory("256M")
        .image(&config.kernel, &artifacts.probe)
        .config(config);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));

    expect_vmx_backend(&machine);
    machine.expect("PROBE: done", seconds(120));
    machine.expect("hv: domain probe (id 1): powered off", seconds(60));
    common::assert_probe_passed(&machine.output());
}

#[test]
fn vmx_linux_boots_to_userspace_and_powers_off() {
    let artifacts = Artifacts::from_env();
    let boot = Boot::new(&artifacts.hv)
        .on(Emulator::Bochs)
        .memory("512M")
        .cpus(2);
    let machine = Machine::boot(linux::hvtest_boot(&artifacts, boot, 2))
        .unwrap_or_else(|error| panic!("{error}"));
    // About one minute on an unloaded machine; the steps together allow eight.
    expect_vmx_backend(&machine);
    machine.expect("hv: running domains on 2 CPU(s)", seconds(60));
    linux::expect_hvtest_run(&machine, 2, seconds(120), seconds(300));
}
