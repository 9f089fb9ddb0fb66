//! Boots the multiboot test guest (tests/guests/mbtest, a.out kludge) with `type = "multiboot"`
//! and a boot module, and checks what it reports having received: the boot loader magic, its
//! command line, the memory sizes and map, and the module's name, arguments, size and first
//! bytes.

use std::fs;
use std::time::Duration;

use tests::{Artifacts, Boot, Machine, VmConfig};

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn multiboot_guest_gets_its_command_line_memory_map_and_module() {
    let artifacts = Artifacts::from_env();
    let module = fs::read(&artifacts.initrd).expect("the initramfs is readable");
    let config = VmConfig {
        name: "mbtest".into(),
        kernel: "mbtest.bin".into(),
        memory_mib: 32,
        ..VmConfig::probe()
    }
    .with_type("multiboot")
    .with_extra("hello=multiboot")
    .with_module("initramfs.cpio answer=42 x");
    let boot = Boot::new(&artifacts.hv)
        .image("mbtest.bin", &artifacts.mbtest)
        .image("initramfs.cpio", &artifacts.initrd)
        .config(config);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));

    machine.expect("MBTEST: magic 0x2badb002", seconds(120));
    let flags = machine.expect_line("MBTEST: flags ", seconds(10));
    let flags = u32::from_str_radix(flags.rsplit("0x").next().unwrap_or(""), 16)
        .unwrap_or_else(|_| panic!("unreadable flags line: {flags}"));
    for (bit, what) in [(0, "mem_*"), (2, "cmdline"), (3, "mods"), (6, "mmap")] {
        assert!(
            flags & (1 << bit) != 0,
            "flag {bit} ({what}) not set: {flags:#x}"
        );
    }
    machine.expect(
        &format!("MBTEST: mem_lower 639 KiB, mem_upper {} KiB", 31 * 1024),
        seconds(10),
    );
    machine.expect("MBTEST: cmdline 'mbtest.bin hello=multiboot'", seconds(10));
    for region in [
        "MBTEST: mmap base 0x0 length 0x9fc00 type 1",
        "MBTEST: mmap base 0x9fc00 length 0x400 type 2",
        "MBTEST: mmap base 0xe0000 length 0x20000 type 2",
        "MBTEST: mmap base 0x100000 length 0x1f00000 type 1",
    ] {
        machine.expect(region, seconds(10));
    }
    let line = machine.expect_line("MBTEST: module 0 ", seconds(10));
    let first: String = module[..8].iter().map(|b| format!("{b:02x}")).collect();
    let expected_tail = format!("size {} first {first}", module.len());
    assert!(
        line.starts_with("MBTEST: module 0 'initramfs.cpio answer=42 x' at 0x")
            && line.ends_with(&expected_tail),
        "module line {line:?} does not end in {expected_tail:?}"
    );
    let at = line
        .split(" at 0x")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no module address in {line:?}"));
    assert_eq!(at % 4096, 0, "module not page-aligned: {line}");
    assert!(at >= 0x10_0000, "module below 1 MiB: {line}");
    machine.expect("MBTEST: done", seconds(10));
    machine.expect("hv: domain mbtest (id 1): powered off", seconds(30));
}
