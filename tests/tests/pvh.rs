//! Boots the stock Debian kernel's ELF `vmlinux` by PVH (`type = "pvh"`: entered at its
//! XEN_ELFNOTE_PHYS32_ENTRY note with an hvm_start_info) with the busybox initramfs as module 0,
//! and checks that it reaches userspace and powers off; and that a kernel without the note is
//! refused with a clear error.

use std::time::Duration;

use tests::{Artifacts, Boot, Machine, VmConfig};

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn pvh_linux() -> VmConfig {
    VmConfig {
        name: "pvh".into(),
        kernel: "vmlinux".into(),
        ..VmConfig::linux()
    }
    .with_type("pvh")
    .with_extra("hvtest=1")
}

#[test]
fn pvh_vmlinux_boots_to_userspace_and_powers_off() {
    let artifacts = Artifacts::from_env();
    let config = pvh_linux();
    let boot = Boot::new(&artifacts.hv)
        .image("vmlinux", &artifacts.vmlinux)
        .image("initramfs.cpio", &artifacts.initrd)
        .config(config);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));

    machine.expect("Linux version", seconds(180));
    // The kernel took its command line and memory map from the hvm_start_info.
    machine.expect("Command line: console=ttyS0", seconds(30));
    machine.expect(
        "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable",
        seconds(30),
    );
    // Module 0 is the initramfs; the RSDP is the one the start info points at.
    machine.expect("RAMDISK: [mem 0x", seconds(30));
    machine.expect("ACPI: RSDP 0x00000000000E0000", seconds(30));
    machine.expect("HVTEST: userspace up", seconds(240));
    machine.expect("HVTEST: echo works", seconds(30));
    machine.expect("reboot: Power down", seconds(60));
    machine.expect("hv: domain pvh (id 1): powered off", seconds(30));
}

#[test]
fn pvh_refuses_a_kernel_without_the_note() {
    let artifacts = Artifacts::from_env();
    // The monitor itself is an ELF kernel, but one without the PVH note.
    let config = VmConfig {
        name: "nopvh".into(),
        kernel: "hv.elf".into(),
        ..VmConfig::probe()
    }
    .with_type("pvh");
    let boot = Boot::new(&artifacts.hv)
        .image("hv.elf", &artifacts.hv)
        .config(config);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));
    let line = machine.expect_line("cannot load kernel 'hv.elf'", seconds(60));
    for part in ["nopvh.cfg", "not a PVH kernel", "XEN_ELFNOTE_PHYS32_ENTRY"] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
    machine.expect("hv: no domains left, halting", seconds(30));
}
