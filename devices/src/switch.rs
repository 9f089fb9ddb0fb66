//! The in-monitor Ethernet switch between the VMs' virtio-net NICs: a learning L2 bridge
//! (IEEE 802.1D in spirit). It learns which port each unicast source MAC lives on, sends a
//! frame to the port its destination was learned on, and floods broadcast, multicast and
//! unknown destinations to every other port.
//!
//! `pump` moves the frames between the platforms of the domains and the uplink, a host NIC
//! (port `UPLINK`) if the monitor has one; `forward` only decides. Learned entries never age out; the table holds `TABLE_SIZE` MACs
//! and replaces the least recently learned one when full.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::platform::Platform;
use crate::virtio::net::MAX_FRAME;

pub type Mac = [u8; 6];
/// MAC addresses remembered at once.
pub const TABLE_SIZE: usize = 256;

/// A switch port: one NIC of one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub domain: u32,
    pub nic: u8,
}

/// The uplink's port: domain 0 is the monitor itself (Xen's Domain-0 bridges to the host NIC).
pub const UPLINK: Port = Port { domain: 0, nic: 0 };
/// Frames taken from the uplink in one `pump`, so a flood cannot hold the CPU.
const UPLINK_BURST: usize = 64;

/// A host NIC: the switch's way out.
pub trait Uplink {
    /// Sends `frame`; one that cannot be sent is dropped.
    fn send(&mut self, frame: &[u8]);
    /// Copies the next frame that came in into `buf` and gives its length.
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize>;
}

struct Entry {
    mac: Mac,
    port: Port,
    /// When it was last learned, in frames seen by the switch.
    stamp: u64,
}

#[derive(Default)]
pub struct Switch {
    ports: Vec<Port>,
    table: Vec<Entry>,
    frames: u64,
    uplink: Option<Box<dyn Uplink>>,
}

impl Switch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn attach(&mut self, port: Port) {
        if !self.ports.contains(&port) {
            self.ports.push(port);
        }
    }

    /// Attaches `uplink` as port `UPLINK`.
    pub fn set_uplink(&mut self, uplink: Box<dyn Uplink>) {
        self.uplink = Some(uplink);
        self.attach(UPLINK);
    }

    /// Attaches every NIC of domain `id`'s platform.
    pub fn connect(&mut self, id: u32, platform: &Platform) {
        for nic in 0..platform.nic_count() {
            self.attach(Port { domain: id, nic });
        }
    }

    /// Takes every frame the NICs of `slots` sent, and up to `UPLINK_BURST` the uplink
    /// received, and delivers each to the ports `forward` names; `domain` gives a slot's domain
    /// ID and platform, or `None` while its platform is out of reach (a CPU is running it): such
    /// a domain sends nothing now, and a frame for it is dropped, as one for a full inbox is.
    pub fn pump<T>(&mut self, slots: &mut [T], domain: fn(&mut T) -> Option<(u32, &mut Platform)>) {
        let mut buf = [0u8; MAX_FRAME];
        let mut uplink = self.uplink.take();
        for i in 0..slots.len() {
            while let Some((id, platform)) = domain(&mut slots[i]) {
                let Some((nic, len)) = platform.take_net_frame(&mut buf) else {
                    break;
                };
                let frame = &buf[..len];
                self.forward(Port { domain: id, nic }, frame, |to| {
                    deliver(slots, domain, &mut uplink, to, frame)
                });
            }
        }
        for _ in 0..UPLINK_BURST {
            let Some(len) = uplink.as_mut().and_then(|u| u.receive(&mut buf)) else {
                break;
            };
            let frame = &buf[..len];
            self.forward(UPLINK, frame, |to| {
                deliver(slots, domain, &mut uplink, to, frame)
            });
        }
        self.uplink = uplink;
    }

    /// Removes a domain's ports and everything learned on them.
    pub fn detach_domain(&mut self, domain: u32) {
        self.ports.retain(|p| p.domain != domain);
        self.table.retain(|e| e.port.domain != domain);
    }

    /// The port `mac` was learned on.
    pub fn lookup(&self, mac: &Mac) -> Option<Port> {
        self.table.iter().find(|e| e.mac == *mac).map(|e| e.port)
    }

    /// Learns the frame's source and calls `deliver` for each port the frame goes to. Frames
    /// from unattached ports and runts are dropped.
    pub fn forward(&mut self, from: Port, frame: &[u8], mut deliver: impl FnMut(Port)) {
        let (Some(dst), Some(src)) = (mac_at(frame, 0), mac_at(frame, 6)) else {
            return;
        };
        if !self.ports.contains(&from) {
            return;
        }
        self.frames += 1;
        if !is_group(&src) {
            self.learn(src, from);
        }
        match self.lookup(&dst).filter(|_| !is_group(&dst)) {
            Some(to) if to == from => {}
            Some(to) => deliver(to),
            None => self
                .ports
                .iter()
                .filter(|&&p| p != from)
                .for_each(|&p| deliver(p)),
        }
    }

    fn learn(&mut self, mac: Mac, port: Port) {
        let stamp = self.frames;
        if let Some(e) = self.table.iter_mut().find(|e| e.mac == mac) {
            e.port = port;
            e.stamp = stamp;
        } else if self.table.len() < TABLE_SIZE {
            self.table.push(Entry { mac, port, stamp });
        } else if let Some(oldest) = self.table.iter_mut().min_by_key(|e| e.stamp) {
            *oldest = Entry { mac, port, stamp };
        }
    }
}

/// Hands `frame` to port `to`: the uplink, or a NIC of one of `slots`.
fn deliver<T>(
    slots: &mut [T],
    domain: fn(&mut T) -> Option<(u32, &mut Platform)>,
    uplink: &mut Option<Box<dyn Uplink>>,
    to: Port,
    frame: &[u8],
) {
    if to == UPLINK {
        if let Some(u) = uplink {
            u.send(frame);
        }
        return;
    }
    let target = slots.iter_mut().find_map(|s| {
        let (id, platform) = domain(s)?;
        (id == to.domain).then_some(platform)
    });
    if let Some(platform) = target {
        platform.deliver_net_frame(to.nic, frame);
    }
}

fn mac_at(frame: &[u8], at: usize) -> Option<Mac> {
    frame.get(at..at + 6)?.try_into().ok()
}

/// Broadcast and multicast addresses have the I/G bit, bit 0 of the first byte.
fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Port = Port { domain: 1, nic: 0 };
    const B: Port = Port { domain: 2, nic: 0 };
    const C: Port = Port { domain: 3, nic: 0 };
    const MAC_A: Mac = [0x00, 0x16, 0x3E, 0, 0, 0xA];
    const MAC_B: Mac = [0x00, 0x16, 0x3E, 0, 0, 0xB];
    const BROADCAST: Mac = [0xFF; 6];

    fn frame(dst: Mac, src: Mac) -> std::vec::Vec<u8> {
        let mut f = std::vec::Vec::from(dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x06]);
        f
    }

    fn send(sw: &mut Switch, from: Port, f: &[u8]) -> std::vec::Vec<Port> {
        let mut out = std::vec::Vec::new();
        sw.forward(from, f, |p| out.push(p));
        out
    }

    fn switch() -> Switch {
        let mut sw = Switch::new();
        for p in [A, B, C, A] {
            sw.attach(p);
        }
        sw
    }

    #[test]
    fn floods_unknown_and_broadcast_then_forwards_learned() {
        let mut sw = switch();
        assert_eq!(send(&mut sw, A, &frame(BROADCAST, MAC_A)), [B, C]);
        assert_eq!(sw.lookup(&MAC_A), Some(A));
        assert_eq!(send(&mut sw, B, &frame(MAC_A, MAC_B)), [A], "learned");
        assert_eq!(send(&mut sw, A, &frame(MAC_B, MAC_A)), [B]);
        let unknown = [0x00, 0x16, 0x3E, 1, 2, 3];
        assert_eq!(send(&mut sw, A, &frame(unknown, MAC_A)), [B, C]);
    }

    #[test]
    fn multicast_sources_are_not_learned_and_hairpins_are_dropped() {
        let mut sw = switch();
        let multicast = [0x01, 0x00, 0x5E, 0, 0, 1];
        send(&mut sw, A, &frame(BROADCAST, multicast));
        assert_eq!(sw.lookup(&multicast), None);
        assert_eq!(send(&mut sw, B, &frame(multicast, MAC_B)), [A, C]);
        send(&mut sw, A, &frame(BROADCAST, MAC_A));
        assert_eq!(send(&mut sw, A, &frame(MAC_A, MAC_A)), []);
    }

    #[test]
    fn a_mac_that_moves_is_relearned() {
        let mut sw = switch();
        send(&mut sw, A, &frame(BROADCAST, MAC_A));
        send(&mut sw, C, &frame(BROADCAST, MAC_A));
        assert_eq!(sw.lookup(&MAC_A), Some(C));
    }

    #[test]
    fn detached_domains_are_forgotten_and_unattached_ports_ignored() {
        let mut sw = switch();
        send(&mut sw, A, &frame(BROADCAST, MAC_A));
        sw.detach_domain(1);
        assert_eq!(sw.lookup(&MAC_A), None);
        assert_eq!(send(&mut sw, A, &frame(BROADCAST, MAC_A)), []);
        assert_eq!(send(&mut sw, B, &frame(MAC_A, MAC_B)), [C]);
        assert_eq!(send(&mut sw, B, &[0xFF; 11]), [], "runt");
    }

    #[test]
    fn connect_attaches_each_nic_of_a_platform() {
        use crate::virtio::{net::Net, Device};
        let mut p = Platform::new(&crate::platform::PlatformConfig {
            tsc_hz: 1_000_000_000,
            ram_bytes: 64 << 20,
            epoch_secs: 0,
            vcpus: 1,
        });
        p.add_virtio(Device::Net(Net::new(MAC_A)));
        p.add_virtio(Device::Net(Net::new(MAC_B)));
        let mut sw = Switch::new();
        sw.connect(7, &p);
        assert_eq!(
            sw.ports,
            [Port { domain: 7, nic: 0 }, Port { domain: 7, nic: 1 }]
        );
        let mut slots = [(7u32, p)];
        sw.pump(&mut slots, |s| Some((s.0, &mut s.1)));
        assert_eq!(sw.frames, 0, "nothing sent");
    }

    /// Frames waiting to come in, and those sent out.
    type Wire = std::rc::Rc<
        core::cell::RefCell<(
            std::collections::VecDeque<std::vec::Vec<u8>>,
            std::vec::Vec<std::vec::Vec<u8>>,
        )>,
    >;

    struct FakeUplink(Wire);

    impl Uplink for FakeUplink {
        fn send(&mut self, frame: &[u8]) {
            self.0.borrow_mut().1.push(frame.into());
        }

        fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
            let f = self.0.borrow_mut().0.pop_front()?;
            buf[..f.len()].copy_from_slice(&f);
            Some(f.len())
        }
    }

    #[test]
    fn the_uplink_is_a_port_whose_frames_are_pumped_in_a_burst_at_a_time() {
        let wire = Wire::default();
        let mut sw = switch();
        sw.set_uplink(Box::new(FakeUplink(wire.clone())));
        let outside = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        wire.borrow_mut().0.push_back(frame(BROADCAST, outside));
        for _ in 0..UPLINK_BURST {
            wire.borrow_mut().0.push_back(frame(outside, outside));
        }
        let mut slots: [(u32, Platform); 0] = [];
        sw.pump(&mut slots, |s| Some((s.0, &mut s.1)));
        assert_eq!(wire.borrow().0.len(), 1, "one burst taken");
        assert_eq!(sw.lookup(&outside), Some(UPLINK));
        assert!(wire.borrow().1.is_empty(), "nothing goes back out");
        assert_eq!(send(&mut sw, A, &frame(outside, MAC_A)), [UPLINK]);
        assert_eq!(send(&mut sw, A, &frame(BROADCAST, MAC_A)), [B, C, UPLINK]);
    }

    #[test]
    fn a_full_table_replaces_the_oldest_entry() {
        let mut sw = switch();
        for i in 0..=TABLE_SIZE {
            let mac = [0x00, 0x16, 0x3E, 0, (i >> 8) as u8, i as u8];
            send(&mut sw, B, &frame(BROADCAST, mac));
        }
        assert_eq!(
            sw.lookup(&[0x00, 0x16, 0x3E, 0, 0, 0]),
            None,
            "oldest evicted"
        );
        assert_eq!(sw.lookup(&[0x00, 0x16, 0x3E, 0, 1, 0]), Some(B));
        assert_eq!(sw.table.len(), TABLE_SIZE);
    }
}
