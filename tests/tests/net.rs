//! Two stock Linux guests ping each other over virtio-net through the monitor's switch: `a` has a
//! `vif` with an explicit MAC, `b` one with a MAC the monitor makes up (xl's rule: 00:16:3e, the
//! fourth byte's top bit clear). Each guest's `hvtest=net` /init brings eth0 up with its own
//! address, prints its MAC, waits until the peer answers, pings it three times and prints the
//! result and its virtio interrupt lines from /proc/interrupts, then keeps answering until a line
//! arrives on its console. The test reads `a` on the console it starts attached to, then attaches
//! to `b` (which replays its recent output), and releases both. The interrupt lines show that
//! Linux put the NIC's queues and configuration changes on MSI-X vectors, and that receive
//! interrupts arrived on them.
//!
//! The addresses are from TEST-NET-1 (RFC 5737): the frames never leave the monitor.

use std::time::Duration;

use tests::{Artifacts, Boot, Machine, VmConfig};

const MAC_A: &str = "00:16:3e:5a:00:01";
const IP_A: &str = "192.0.2.1";
const IP_B: &str = "192.0.2.2";
const CTRL_RBRACKET: &str = "\x1d";
const PROMPT: &str = "hv> ";

fn seconds(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A Linux guest with one NIC (`vif` is the entry's text) that pings `peer` from `me`.
fn guest(name: &str, vif: &str, me: &str, peer: &str) -> String {
    let config = VmConfig {
        name: name.into(),
        memory_mib: 192,
        ..VmConfig::linux()
    }
    .with_extra(&format!("hvtest=net hvip={me} hvpeer={peer}"));
    let mut text = config.render().expect("the config renders");
    text.push_str(&format!("vif = [ '{vif}' ]\n"));
    text
}

/// The MAC at the end of the monitor's `hv: domain NAME: vif MAC` line.
fn logged_mac(m: &Machine, name: &str) -> String {
    let line = m.expect_line(&format!("hv: domain {name}: vif "), seconds(60));
    line.rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// What one guest printed: its MAC, its ping result, and its virtio interrupt lines.
struct Report {
    mac: String,
    ping: String,
    irqs: Vec<String>,
}

/// Reads the guest's `hvtest=net` lines from where the console cursor is.
fn report(m: &Machine, peer: &str, boot: Duration) -> Report {
    let mac = m.expect_line("HVTEST: mac ", boot);
    let mac = mac.rsplit(' ').next().unwrap_or_default().trim().to_owned();
    let ping = m.expect_line(&format!("HVTEST: ping {peer} "), seconds(600));
    let irqs = m
        .expect_text("HVTEST: net done", seconds(60))
        .lines()
        .filter_map(|l| {
            l.split_once("HVTEST: irq ")
                .map(|(_, irq)| irq.trim().to_owned())
        })
        .collect();
    Report { mac, ping, irqs }
}

fn check(name: &str, r: &Report, peer: &str) {
    assert!(
        r.ping.contains(&format!("HVTEST: ping {peer} ok: ")),
        "{name} could not ping {peer}: {}",
        r.ping
    );
    assert!(
        r.ping
            .contains("3 packets transmitted, 3 packets received, 0% packet loss"),
        "{name}: {}",
        r.ping
    );
    assert!(r.mac.starts_with("00:16:3e:"), "{name}'s MAC {}", r.mac);
    // Every queue of the NIC and the device's configuration change have a vector of their own.
    let msix = |what: &str| {
        r.irqs
            .iter()
            .any(|l| l.contains("PCI-MSI") && l.contains("-edge") && l.ends_with(what))
    };
    for what in ["-config", "-input.0", "-output.0"] {
        assert!(
            msix(what),
            "{name}: no MSI-X vector for {what}: {:#?}",
            r.irqs
        );
    }
    // The frames it received came with MSI-X interrupts: `IRQ: COUNT PCI-MSI ... -input.0`.
    let received = r
        .irqs
        .iter()
        .find(|l| l.ends_with("-input.0"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        received > Some(0),
        "{name}: no receive interrupts: {:#?}",
        r.irqs
    );
    assert!(
        r.irqs.iter().all(|l| !l.contains("IO-APIC")),
        "{name}: virtio still on INTx: {:#?}",
        r.irqs
    );
}

/// Sends a line to the attached guest, releasing its /init to power off.
fn release(m: &Machine, name: &str, id: u32) {
    m.type_text("\r");
    m.expect(
        &format!("hv: domain {name} (id {id}): powered off"),
        seconds(120),
    );
}

#[test]
fn two_guests_ping_each_other_over_virtio_net() {
    let artifacts = Artifacts::from_env();
    let boot = Boot::new(&artifacts.hv)
        .image("vmlinuz", &artifacts.kernel)
        .image("initramfs.cpio", &artifacts.initrd)
        .raw_config("a.cfg", &guest("a", &format!("mac={MAC_A}"), IP_A, IP_B))
        .raw_config("b.cfg", &guest("b", "", IP_B, IP_A));
    let m = Machine::boot(boot).unwrap_or_else(|error| panic!("{error}"));

    assert_eq!(logged_mac(&m, "a"), MAC_A);
    let mac_b = logged_mac(&m, "b");

    // The console starts attached to `a`.
    let a = report(&m, IP_B, seconds(600));
    check("a", &a, IP_B);
    assert_eq!(a.mac, MAC_A);

    m.type_text(CTRL_RBRACKET);
    m.expect(PROMPT, seconds(30));
    m.type_text("console b\r");
    let b = report(&m, IP_A, seconds(600));
    check("b", &b, IP_A);
    assert_eq!(b.mac, mac_b, "b's NIC has the MAC the monitor logged");
    let fourth = u8::from_str_radix(&b.mac[9..11], 16).expect("a hex byte");
    assert_eq!(fourth & 0x80, 0, "generated MAC {}", b.mac);
    assert_ne!(b.mac, a.mac);

    release(&m, "b", 2);
    m.expect(PROMPT, seconds(30));
    m.type_text("console a\r");
    release(&m, "a", 1);
    m.expect("hv: no domains left, halting", seconds(30));
}
