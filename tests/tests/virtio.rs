//! virtio over PCI with the stock Debian kernel: a guest mounts an ext2 image given as a disk
//! module, reads the file the image was made with, writes one, and reads it back after a
//! remount (so from the device, not the page cache); it writes to `hvc0`, whose output joins
//! the console stream; and its NIC carries the MAC the config gave.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tests::{Artifacts, Boot, Machine, VmConfig};

const KNOWN_TEXT: &str = "hello from the disk module";
const MAC: &str = "00:16:3e:12:34:56";

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A 4 MiB ext2 image holding hello.txt, made with mke2fs (e2fsprogs).
fn ext2_image() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hv-virtio-{}", std::process::id()));
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), format!("{KNOWN_TEXT}\n")).unwrap();
    let image = dir.join("disk.img");
    let status = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("4M")
        .status()
        .expect("mke2fs (e2fsprogs) runs");
    assert!(status.success(), "mke2fs failed");
    image
}

#[test]
fn linux_mounts_reads_and_writes_a_virtio_disk() {
    let artifacts = Artifacts::from_env();
    let image = ext2_image();
    let config = VmConfig::linux().with_extra("hvtest=disk");
    let ramdisk = config
        .ramdisk
        .clone()
        .expect("the Linux config has a ramdisk");
    let mut text = config.render().unwrap();
    text.push_str("disk = [ 'format=raw, vdev=xvda, access=rw, target=disk.img' ]\n");
    text.push_str(&format!("vif = [ 'mac={MAC},bridge=xenbr0' ]\n"));
    let boot = Boot::new(&artifacts.hv)
        .image(&config.kernel, &artifacts.kernel)
        .image(&ramdisk, &artifacts.initrd)
        .image("disk.img", &image)
        .raw_config("linux.cfg", &text);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));

    machine.expect(&format!("hv: domain linux: vif {MAC}"), seconds(60));
    machine.expect("HVTEST: userspace up", seconds(420));
    machine.expect("HVTEST: disk mounted", seconds(60));
    machine.expect(&format!("HVTEST: disk read {KNOWN_TEXT}"), seconds(30));
    machine.expect("HVTEST: disk reread written by the guest", seconds(60));
    machine.expect("HVTEST: hvc0 works", seconds(30));
    machine.expect(&format!("HVTEST: nic {MAC}"), seconds(30));
    machine.expect("hv: domain linux (id 1): powered off", seconds(90));
    let _ = std::fs::remove_dir_all(image.parent().unwrap());
}
