//! Boots the stock Debian kernel with the busybox initramfs under the monitor and checks, in
//! order, what the kernel, its userspace and the monitor print, up to the guest powering off.

use std::time::Duration;

use tests::{Artifacts, Boot, Machine, VmConfig};

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn linux_boots_to_userspace_and_powers_off() {
    let artifacts = Artifacts::from_env();
    let config = VmConfig::linux().with_extra("hvtest=1");
    let ramdisk = config
        .ramdisk
        .clone()
        .expect("the Linux config has a ramdisk");
    let boot = Boot::new(&artifacts.hv)
        .image(&config.kernel, &artifacts.kernel)
        .image(&ramdisk, &artifacts.initrd)
        .config(config);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));

    // Nested emulation is slow: the steps together allow 600 s, most of it for the boot itself.
    machine.expect("Linux version", seconds(180));
    machine.expect("HVTEST: userspace up", seconds(240));
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
