//! What every test that boots the stock Linux guest in test mode (`hvtest=1`) does alike,
//! whatever the backend: the modules and config it boots with, and the lines it must print,
//! in order, from the kernel banner to the monitor's power-off line.

use std::time::Duration;

use crate::{Artifacts, Boot, Machine, VmConfig};

/// `boot` with the stock kernel, the busybox initramfs and the default config plus `hvtest=1`.
pub fn hvtest_boot(artifacts: &Artifacts, boot: Boot) -> Boot {
    let config = VmConfig::linux().with_extra("hvtest=1");
    let ramdisk = config
        .ramdisk
        .clone()
        .expect("the Linux config has a ramdisk");
    boot.image(&config.kernel, &artifacts.kernel)
        .image(&ramdisk, &artifacts.initrd)
        .config(config)
}

/// Waits for the kernel banner (within `banner`), kvm-clock's registration, the initramfs's
/// test output (userspace within `userspace` after that), the kernel's power-down and the
/// monitor's stop line.
#[track_caller]
pub fn expect_hvtest_run(machine: &Machine, banner: Duration, userspace: Duration) {
    let seconds = Duration::from_secs;
    machine.expect("Linux version", banner);
    // The guest found the paravirtual clock it was offered and uses it.
    machine.expect("kvm-clock: Using msrs 4b564d01 and 4b564d00", seconds(60));
    machine.expect("clocksource: Switched to clocksource kvm-clock", userspace);
    machine.expect("HVTEST: userspace up", userspace);
    machine.expect("HVTEST: uname Linux", seconds(30));
    let flags = machine.expect_line("HVTEST: flags", seconds(30));
    assert!(
        flags.contains(" hypervisor"),
        "the guest's CPU flags lack \"hypervisor\": {flags}"
    );
    machine.expect("HVTEST: echo works", seconds(30));
    machine.expect("reboot: Power down", seconds(60));
    machine.expect("hv: domain linux (id 1): powered off", seconds(30));
}
