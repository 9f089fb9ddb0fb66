//! The busybox initramfs of the test and demo guests: Debian's static /bin/busybox, a
//! symlink per applet at the path busybox itself names, /dev/console, the kernel's ACPI button
//! and evdev modules with a busybox acpid handler that powers off on the power button, and
//! the /init script of the contract (prints `HVTEST:` lines and powers off with `hvtest=1`,
//! otherwise gives a shell on the console). Not a general initramfs builder: no compression.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::cpio;
use crate::elf::Elf64;
use crate::error::{bail, Context, Result};
use crate::process;

/// Where Debian's busybox-static package puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The first process. `hvtest=1` on the kernel command line selects the scripted run.
pub const INIT_SCRIPT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /lib/modules/*.ko; do [ -e "$m" ] && insmod "$m"; done
acpid -l /dev/null
echo "HVTEST: userspace up"
case " $(cat /proc/cmdline) " in
*" hvtest=disk "*)
    mount -t ext2 /dev/vda /mnt && echo "HVTEST: disk mounted"
    echo "HVTEST: disk read $(cat /mnt/hello.txt)"
    echo "written by the guest" > /mnt/guest.txt
    sync
    umount /mnt
    mount -t ext2 -o ro /dev/vda /mnt
    echo "HVTEST: disk reread $(cat /mnt/guest.txt)"
    echo "HVTEST: hvc0 works" > /dev/hvc0
    echo "HVTEST: nic $(cat /sys/class/net/eth0/address)"
    echo "HVTEST: powering off"
    poweroff -f
    ;;
*" hvtest=net "*)
    # hvip=ADDR hvpeer=ADDR: wait (bounded) until the peer answers, ping it, then keep
    # answering its pings until a line arrives on the console or 300 s pass.
    for w in $(cat /proc/cmdline); do
        case "$w" in hvip=*) me="${w#hvip=}" ;; hvpeer=*) peer="${w#hvpeer=}" ;; esac
    done
    ip link set eth0 up && ip addr add "$me/24" dev eth0
    echo "HVTEST: mac $(cat /sys/class/net/eth0/address)"
    n=0
    until ping -c 1 -W 2 "$peer" >/dev/null 2>&1 || [ $n -ge 200 ]; do n=$((n+1)); done
    if ping -c 3 -W 3 "$peer" >/tmp/ping 2>&1; then r=ok; else r=failed; fi
    echo "HVTEST: ping $peer $r: $(grep 'packet loss' /tmp/ping)"
    grep virtio /proc/interrupts | while read -r l; do echo "HVTEST: irq $l"; done
    echo "HVTEST: net done"
    read -t 300 l
    echo "HVTEST: powering off"
    poweroff -f
    ;;
*" hvtest=phy "*)
    mount -t ext2 /dev/vda /mnt && echo "HVTEST: phy mounted"
    echo "HVTEST: phy read $(cat /mnt/token.txt 2>/dev/null)"
    t=$(sed -n 's/.* phytoken=\([^ ]*\).*/\1/p' /proc/cmdline)
    [ -n "$t" ] && echo "$t" > /mnt/token.txt && sync && echo "HVTEST: phy wrote $t"
    umount /mnt
    echo "HVTEST: powering off"
    poweroff -f
    ;;
*" hvtest=uplink "*)
    ip link set eth0 up
    echo "HVTEST: uplink $(udhcpc -i eth0 -f -q -n -t 5 -s /bin/true 2>&1 | grep -o 'lease of [0-9.]*')"
    echo "HVTEST: powering off"
    poweroff -f
    ;;
*" hvtest=1 "*)
    echo "HVTEST: uname $(uname -sr)"
    echo "HVTEST: $(grep -m1 '^flags' /proc/cpuinfo)"
    for m in 4b564d03 4b564d04; do
        echo "HVTEST: msr $m $(dd if=/dev/cpu/0/msr bs=8 count=1 skip=$((0x$m)) iflag=skip_bytes 2>/dev/null | od -An -tx8 | tr -d ' ')"
    done
    /bin/sh -c 'echo "HVTEST: echo works"'
    echo "HVTEST: powering off"
    poweroff -f
    ;;
esac
echo "busybox shell; 'exit' or Ctrl-D powers the guest off"
export PS1='# '
setsid cttyhack sh
poweroff -f
"#;

/// What busybox acpid runs on a power-button press (`/etc/acpi/PWRF/00000080`, the action
/// acpid maps the KEY_POWER event to): a clean power-off with its messages.
pub const POWER_BUTTON_HANDLER: &str = r#"#!/bin/sh
echo "acpid: power button pressed, the system is going down" > /dev/console
kill -TERM -1
sleep 1
sync
poweroff -f
"#;
const POWER_BUTTON_PATH: &str = "etc/acpi/PWRF/00000080";

/// Directories created whether or not an applet lives there.
const BASE_DIRS: [&str; 8] = [
    "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys",
];
const EXTRA_DIRS: [&str; 8] = [
    "etc",
    "etc/acpi",
    "etc/acpi/PWRF",
    "lib",
    "lib/modules",
    "root",
    "tmp",
    "mnt",
];

/// A kernel module to put in /lib/modules: its file name and contents.
pub type KernelModule = (String, Vec<u8>);

/// Builds the archive from a busybox binary, its applet paths (as `busybox --list-full`
/// prints them, relative to /) and the kernel modules /init loads.
pub fn archive(busybox: &[u8], applets: &[String], modules: &[KernelModule]) -> Result<Vec<u8>> {
    let elf = Elf64::parse(busybox).context(|| BUSYBOX.to_string())?;
    if elf.is_dynamic() {
        bail!("{BUSYBOX} is dynamically linked; install busybox-static");
    }
    let links: BTreeSet<&str> = applets
        .iter()
        .map(|a| a.trim().trim_start_matches('/'))
        .filter(|a| !a.is_empty() && *a != "bin/busybox" && *a != "init")
        .collect();
    let mut dirs: BTreeSet<String> = BASE_DIRS
        .iter()
        .chain(&EXTRA_DIRS)
        .map(|d| d.to_string())
        .collect();
    for link in &links {
        if link
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            bail!("unexpected applet path {link:?}");
        }
        let mut parent = Path::new(link).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    let mut w = cpio::Writer::new();
    // BTreeSet order puts every directory before anything inside it.
    for dir in &dirs {
        let perm = if dir == "tmp" { 0o1777 } else { 0o755 };
        w.dir(dir, perm)?;
    }
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.file("bin/busybox", 0o755, busybox)?;
    for link in links {
        w.symlink(link, BUSYBOX)?;
    }
    for (name, bytes) in modules {
        if name.contains('/') || !name.ends_with(".ko") {
            bail!("unexpected module name {name:?}");
        }
        w.file(&format!("lib/modules/{name}"), 0o644, bytes)?;
    }
    w.file(POWER_BUTTON_PATH, 0o755, POWER_BUTTON_HANDLER.as_bytes())?;
    w.file("init", 0o755, INIT_SCRIPT.as_bytes())?;
    w.finish()
}

/// The `.ko` files in `dir`, by name; none (with a note) when it does not exist.
fn read_modules(dir: &Path) -> Result<Vec<KernelModule>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!(
            "initramfs: no kernel modules in {}; the guests will not see the power button",
            dir.display()
        );
        return Ok(Vec::new());
    };
    let mut modules = Vec::new();
    for entry in entries {
        let path = entry
            .context(|| format!("listing {}", dir.display()))?
            .path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name.filter(|n| n.ends_with(".ko")) {
            let bytes = std::fs::read(&path).context(|| format!("reading {}", path.display()))?;
            modules.push((name, bytes));
        }
    }
    modules.sort();
    Ok(modules)
}

/// Writes the initramfs to `out` from the host's static busybox and the kernel modules in
/// `modules` (see `kernel::modules_dir`).
pub fn build(out: &Path, modules: &Path) -> Result<()> {
    eprintln!("building initramfs {} from {BUSYBOX}…", out.display());
    let busybox = std::fs::read(BUSYBOX)
        .context(|| format!("reading {BUSYBOX} (install busybox-static: bash .ci/install-deps)"))?;
    let list = process::stdout_of(Command::new(BUSYBOX).arg("--list-full"))?;
    let applets: Vec<String> = list.lines().map(str::to_string).collect();
    let modules = read_modules(modules)?;
    process::write_atomically(out, &archive(&busybox, &applets, &modules)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::build::{executable, Segment};
    use crate::elf::{PT_INTERP, PT_LOAD};

    fn fake_busybox(p_type: u32) -> Vec<u8> {
        executable(
            0x401000,
            &[Segment {
                p_type,
                paddr: 0x400000,
                data: b"\x90",
                memsz: 1,
            }],
        )
    }

    /// The names in the archive, in order, each with its mode; stops at the trailer.
    fn names(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let field = |i: usize| {
                let hex = std::str::from_utf8(&archive[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap() as usize
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name = String::from_utf8(archive[at + 110..at + 109 + namesize].to_vec()).unwrap();
            let data_at = (at + 110 + namesize).next_multiple_of(4);
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((name, mode as u32, archive[data_at..data_at + size].to_vec()));
            at = (data_at + size).next_multiple_of(4);
        }
    }

    #[test]
    fn holds_busybox_applet_links_init_and_console() {
        let busybox = fake_busybox(PT_LOAD);
        let applets = ["bin/sh", "sbin/poweroff", "usr/bin/[", "bin/busybox"].map(String::from);
        let modules = [("button.ko".to_string(), b"\x7fELF-ko".to_vec())];
        let entries = names(&archive(&busybox, &applets, &modules).unwrap());
        let find = |n: &str| {
            entries
                .iter()
                .position(|e| e.0 == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };

        let bb = &entries[find("bin/busybox")];
        assert_eq!((bb.1, &bb.2), (cpio::S_IFREG | 0o755, &busybox));
        for link in ["bin/sh", "sbin/poweroff", "usr/bin/["] {
            let e = &entries[find(link)];
            assert_eq!(
                (e.1, e.2.as_slice()),
                (cpio::S_IFLNK | 0o777, BUSYBOX.as_bytes())
            );
        }
        assert_eq!(entries.iter().filter(|e| e.0 == "bin/busybox").count(), 1);
        let init = &entries[find("init")];
        assert_eq!(
            (init.1, init.2.as_slice()),
            (cpio::S_IFREG | 0o755, INIT_SCRIPT.as_bytes())
        );
        assert_eq!(entries[find("dev/console")].1, cpio::S_IFCHR | 0o600);
        let ko = &entries[find("lib/modules/button.ko")];
        assert_eq!(
            (ko.1, ko.2.as_slice()),
            (cpio::S_IFREG | 0o644, &b"\x7fELF-ko"[..])
        );
        let handler = &entries[find("etc/acpi/PWRF/00000080")];
        assert_eq!(handler.1, cpio::S_IFREG | 0o755);
        assert!(String::from_utf8_lossy(&handler.2).contains("poweroff"));
        assert!(find("etc/acpi/PWRF") < find("etc/acpi/PWRF/00000080"));
        for dir in ["proc", "sys", "dev", "usr/bin"] {
            assert_eq!(entries[find(dir)].1, cpio::S_IFDIR | 0o755);
        }
        assert!(find("usr") < find("usr/bin") && find("usr/bin") < find("usr/bin/["));
    }

    #[test]
    fn dynamic_busybox_is_refused() {
        assert!(archive(&fake_busybox(PT_INTERP), &[], &[]).is_err());
    }

    #[test]
    fn applet_paths_escaping_the_root_are_refused() {
        let applets = ["../etc/passwd".to_string()];
        assert!(archive(&fake_busybox(PT_LOAD), &applets, &[]).is_err());
        let module = [("../evil.ko".to_string(), Vec::new())];
        assert!(archive(&fake_busybox(PT_LOAD), &[], &module).is_err());
    }

    #[test]
    fn init_script_follows_the_contract() {
        for line in [
            "echo \"HVTEST: userspace up\"",
            "*\" hvtest=1 \"*)",
            "*\" hvtest=disk \"*)",
            "*\" hvtest=net \"*)",
            "echo \"HVTEST: ping $peer $r: $(grep 'packet loss' /tmp/ping)\"",
            "*\" hvtest=phy \"*)",
            "*\" hvtest=uplink \"*)",
            "mount -t ext2 /dev/vda /mnt",
            "echo \"HVTEST: disk reread $(cat /mnt/guest.txt)\"",
            "echo \"HVTEST: uname $(uname -sr)\"",
            "echo \"HVTEST: $(grep -m1 '^flags' /proc/cpuinfo)\"",
            "echo \"HVTEST: msr $m $(dd if=/dev/cpu/0/msr bs=8 count=1 skip=$((0x$m))",
            "echo \"HVTEST: powering off\"",
            "setsid cttyhack sh",
        ] {
            assert!(INIT_SCRIPT.contains(line), "{line}");
        }
        let up = INIT_SCRIPT.find("userspace up").unwrap();
        assert!(INIT_SCRIPT.find("mount -t devtmpfs").unwrap() < up);
        let insmod = INIT_SCRIPT.find("insmod").unwrap();
        assert!(INIT_SCRIPT.find("mount -t devtmpfs").unwrap() < insmod);
        assert!(insmod < INIT_SCRIPT.find("acpid").unwrap());
        assert!(INIT_SCRIPT.find("hvtest=1").unwrap() > up);
    }
}
