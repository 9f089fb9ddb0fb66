//! Boots the stock Debian kernel with the busybox initramfs under the monitor and checks, in
//! order, what the kernel, its userspace and the monitor print, up to the guest powering off.
//! The guest has two vCPUs: the kernel must bring up both.

use std::time::Duration;

use tests::{linux, Artifacts, Boot, Machine};

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn linux_boots_to_userspace_and_powers_off() {
    let artifacts = Artifacts::from_env();
    let boot = linux::hvtest_boot(&artifacts, Boot::new(&artifacts.hv), 2);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));
    // Nested emulation is slow: the steps together allow 600 s, most of it for the boot itself.
    linux::expect_hvtest_run(&machine, 2, seconds(180), seconds(240));
}
