//! What every test that boots the stock Linux guest in test mode (`hvtest=1`) does alike,
//! whatever the backend: the modules and config it boots with, and the lines it must print,
//! in order, from the kernel banner to the monitor's power-off line.

use std::time::Duration;

use crate::{Artifacts, Boot, Machine, VmConfig};

/// `boot` with the stock kernel, the busybox initramfs and the default config plus `hvtest=1`,
/// with `vcpus` vCPUs.
pub fn hvtest_boot(artifacts: &Artifacts, boot: Boot, vcpus: u32) -> Boot {
    let config = VmConfig {
        vcpus,
        ..VmConfig::linux().with_extra("hvtest=1")
    };
    let ramdisk = config
        .ramdisk
        .clone()
        .expect("the Linux config has a ramdisk");
    boot.image(&config.kernel, &artifacts.kernel)
        .image(&ramdisk, &artifacts.initrd)
        .config(config)
}

/// Waits for the kernel banner (within `banner`), kvm-clock's registration, the kernel bringing
/// up all `vcpus` CPUs, the initramfs's test output (userspace within `userspace` after that,
/// with the guest's PV EOI and steal-time registrations), the kernel's power-down and the
/// monitor's stop line.
#[track_caller]
pub fn expect_hvtest_run(machine: &Machine, vcpus: u32, banner: Duration, userspace: Duration) {
    let seconds = Duration::from_secs;
    machine.expect("Linux version", banner);
    // The guest found the paravirtual clock it was offered and uses it.
    machine.expect("kvm-clock: Using msrs 4b564d01 and 4b564d00", seconds(60));
    let cpus = if vcpus == 1 {
        String::from("1 CPU")
    } else {
        format!("{vcpus} CPUs")
    };
    machine.expect(&format!("smp: Brought up 1 node, {cpus}"), userspace);
    machine.expect("clocksource: Switched to clocksource kvm-clock", userspace);
    machine.expect("HVTEST: userspace up", userspace);
    machine.expect("HVTEST: uname Linux", seconds(30));
    let flags = machine.expect_line("HVTEST: flags", seconds(30));
    assert!(
        flags.contains(" hypervisor"),
        "the guest's CPU flags lack \"hypervisor\": {flags}"
    );
    // The guest took up the other two KVM features it was offered: its userspace reads back the
    // MSRs it registered them with, enabled (bit 0) at a nonzero guest-physical address.
    for (msr, feature) in [("4b564d03", "steal time"), ("4b564d04", "PV EOI")] {
        let line = machine.expect_line(&format!("HVTEST: msr {msr} "), seconds(30));
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
        assert!(
            value.is_some_and(|v| v & 1 == 1 && v > 1),
            "the guest did not register {feature}: {line}"
        );
    }
    machine.expect("HVTEST: echo works", seconds(30));
    machine.expect("reboot: Power down", seconds(60));
    machine.expect("hv: domain linux (id 1): powered off", seconds(30));
}
