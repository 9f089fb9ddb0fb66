//! A guest disk on a partition of a host disk (`target=phy:vda1`): QEMU gives the monitor a
//! virtio-blk disk holding an MBR and one ext2 partition; a Linux guest writes a token to the
//! partition and powers off; QEMU is stopped and started again on the same image, and a new
//! guest reads the token back. Alongside the first guest, configs asking for the partition it
//! holds or for a partition the disk lacks are refused with their file named, and once it is
//! gone a new domain gets the partition. The second time the disk's registers lie above 4 GiB.
//!
//! And the switch's uplink: a guest's DHCP exchange crosses the monitor's driver of QEMU's
//! virtio-net, whose user-mode network (restricted: nothing leaves the machine) answers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tests::{Artifacts, Boot, Machine, VmConfig};

const PARTITION_START: u64 = 2048;
const FS_BYTES: u64 = 8 << 20;

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `dir/disk.img`: an MBR whose first entry is an ext2 partition (type 0x83) from sector 2048,
/// made with mke2fs (e2fsprogs).
fn partitioned_image(dir: &Path) -> PathBuf {
    let fs = dir.join("fs.img");
    let status = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2"])
        .arg(&fs)
        .arg(format!("{}k", FS_BYTES >> 10))
        .status()
        .expect("mke2fs (e2fsprogs) runs");
    assert!(status.success(), "mke2fs failed");
    let mut disk = vec![0u8; (PARTITION_START * 512) as usize];
    let entry = &mut disk[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&(PARTITION_START as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&((FS_BYTES / 512) as u32).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xAA;
    disk.extend(std::fs::read(&fs).unwrap());
    let image = dir.join("disk.img");
    std::fs::write(&image, disk).unwrap();
    image
}

/// The monitor on a machine with `image` as its virtio-blk disk (and the QEMU arguments
/// `qemu`), booting `linux.cfg` with `extra` on the guest's command line and the configs of
/// `more`.
fn boot(
    artifacts: &Artifacts,
    (image, qemu): (&Path, &[&str]),
    extra: &str,
    more: &[(&str, String)],
) -> Machine {
    let config = VmConfig::linux().with_extra(extra);
    let ramdisk = config.ramdisk.clone().expect("a ramdisk");
    let mut text = config.render().unwrap();
    text.push_str("disk = [ 'format=raw, vdev=xvda, access=rw, target=phy:vda1' ]\n");
    let drive = format!("file={},if=none,id=d0,format=raw", image.display());
    let mut boot = Boot::new(&artifacts.hv)
        .qemu_args(qemu)
        .qemu_args(&[
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=d0,disable-legacy=on",
        ])
        .image(&config.kernel, &artifacts.kernel)
        .image(&ramdisk, &artifacts.initrd)
        .image("probe.bzImage", &artifacts.probe)
        .raw_config("linux.cfg", &text);
    for (file, text) in more {
        boot = boot.raw_config(file, text);
    }
    Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"))
}

fn probe_with_disk(name: &str, target: &str) -> String {
    let mut config = VmConfig::probe();
    config.name = name.into();
    let mut text = config.render().unwrap();
    text.push_str(&format!("disk = [ 'vdev=xvda, target={target}' ]\n"));
    text
}

#[test]
fn phy_partition_keeps_guest_writes_across_qemu_restarts() {
    let artifacts = Artifacts::from_env();
    let dir = std::env::temp_dir().join(format!("hv-phy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = partitioned_image(&dir);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let token = format!("token-{}-{nanos}", std::process::id());

    let more = [
        ("thief.cfg", probe_with_disk("thief", "phy:vda1")),
        ("nopart.cfg", probe_with_disk("nopart", "phy:vda2")),
        (
            "later.cfg",
            probe_with_disk("later", "phy:vda1") + "autostart = 0\n",
        ),
    ];
    let first = boot(
        &artifacts,
        (&image, &[]),
        &format!("hvtest=phy phytoken={token}"),
        &more,
    );
    first.expect(
        "hv: host disk vda: 18432 sectors, vda1 (type 0x83, 16384 sectors at 2048); PCI 00:",
        seconds(60),
    );
    first.expect(
        "hv: error: thief.cfg: disk 'phy:vda1' (xvda): vda1 is in use: domain 'linux' holds vda1",
        seconds(60),
    );
    first.expect(
        "hv: error: nopart.cfg: disk 'phy:vda2' (xvda): host disk has no partition vda2",
        seconds(60),
    );
    first.expect("HVTEST: phy mounted", seconds(420));
    first.expect(&format!("HVTEST: phy wrote {token}"), seconds(60));
    first.expect("hv: domain linux (id 1): powered off", seconds(90));
    // Its partition went back with it: a new domain may have it.
    first.expect("hv> ", seconds(30));
    first.type_text("create later -c\r");
    first.expect("PROBE: done", seconds(60));
    first.expect("hv: domain later (id ", seconds(30));
    assert!(!first.output().contains("later.cfg: disk"));
    drop(first);

    // A 2 GiB BAR leaves no room below 4 GiB, so SeaBIOS moves the 64-bit BARs, the disk's
    // too, above it: the monitor must map them there.
    let big_bar = [
        "-object",
        "memory-backend-ram,id=big,size=2G",
        "-device",
        "ivshmem-plain,memdev=big",
    ];
    let second = boot(&artifacts, (&image, &big_bar), "hvtest=phy", &[]);
    let line = second.expect_line("hv: host disk vda:", seconds(60));
    let registers = line.rsplit("registers at 0x").next().unwrap().trim();
    assert!(
        u64::from_str_radix(registers, 16).unwrap() >= 1 << 32,
        "{line}"
    );
    second.expect("HVTEST: phy mounted", seconds(420));
    second.expect(&format!("HVTEST: phy read {token}"), seconds(60));
    second.expect("hv: domain linux (id 1): powered off", seconds(90));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn phy_nic_uplink_carries_a_guest_dhcp_exchange() {
    let artifacts = Artifacts::from_env();
    let config = VmConfig::linux().with_extra("hvtest=uplink");
    let ramdisk = config.ramdisk.clone().expect("a ramdisk");
    let mut text = config.render().unwrap();
    text.push_str("vif = [ 'mac=00:16:3e:00:00:01' ]\n");
    let boot = Boot::new(&artifacts.hv)
        .qemu_args(&[
            "-netdev",
            "user,id=n0,restrict=on",
            "-device",
            "virtio-net-pci,netdev=n0,disable-legacy=on,mac=52:54:00:12:34:56",
        ])
        .image(&config.kernel, &artifacts.kernel)
        .image(&ramdisk, &artifacts.initrd)
        .raw_config("linux.cfg", &text);
    let machine = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));
    machine.expect("hv: uplink: host NIC at PCI 00:", seconds(60));
    machine.expect("mac 52:54:00:12:34:56", seconds(5));
    machine.expect("HVTEST: uplink lease of 10.0.2.15", seconds(420));
    machine.expect("hv: domain linux (id 1): powered off", seconds(90));
}
