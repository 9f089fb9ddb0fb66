//! The drivers against a fake machine: a modern virtio PCI function, either a virtio-blk whose
//! requests the guest device model (`devices::virtio::blk::Blk`) serves from a recording store,
//! or a virtio-net that records what is sent and lets a test make frames arrive.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::vec::Vec;

use devices::mem::{GuestMemory, OutOfRam};
use devices::virtio::blk::{Blk, BlockStore, IoError};
use devices::virtio::queue::Queue;

use super::mbr::tests::sector0;
use super::partition::{Disk, PartitionStore};
use super::pci::{self, ConfigSpace, Function, Window};
use super::registry::HostDisks;
use super::target::PhyTarget;
use super::transport::Regs;
use super::virtio_blk::HostBlk;
use super::virtio_net::HostNet;
use super::Bus;
use devices::switch::Uplink;

const COMMON: u64 = 0xFE00_0000;
const NOTIFY: u64 = 0xFE00_1000;
const DEVICE: u64 = 0xFE00_2000;
const DMA: u64 = 0x20_0000;
/// The fake disk: 64 sectors, partition 1 at sector 8, 32 sectors long.
const DISK_SECTORS: usize = 64;
const PART_START: u64 = 8;
const PART_SECTORS: u64 = 32;
const TIMEOUT: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read(u64, usize),
    Write(u64, usize),
    Flush,
}

/// The fake host disk's medium, logging what reaches it.
struct Medium {
    bytes: Vec<u8>,
    log: Rc<RefCell<Vec<Op>>>,
}

impl BlockStore for Medium {
    fn capacity(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.log.borrow_mut().push(Op::Read(offset, buf.len()));
        let at = offset as usize;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), IoError> {
        self.log.borrow_mut().push(Op::Write(offset, data.len()));
        let at = offset as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.log.borrow_mut().push(Op::Flush);
        Ok(())
    }
}

struct Dma(Vec<u8>);

impl GuestMemory for Dma {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        let at = gpa.checked_sub(DMA).ok_or(OutOfRam { gpa })? as usize;
        let src = self.0.get(at..at + buf.len()).ok_or(OutOfRam { gpa })?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam> {
        let at = gpa.checked_sub(DMA).ok_or(OutOfRam { gpa })? as usize;
        let dst = self
            .0
            .get_mut(at..at + data.len())
            .ok_or(OutOfRam { gpa })?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

enum Model {
    Blk(Blk),
    Net { mac: [u8; 6], sent: Vec<Vec<u8>> },
}

struct Device {
    model: Model,
    queues: [Queue; 2],
    selected: usize,
    dma: Dma,
    offered: u64,
    device_select: u32,
    driver_select: u32,
    accepted: u64,
    status: u8,
    /// False: requests are never completed.
    completes: bool,
    ticks: u64,
}

#[derive(Clone)]
struct FakeBus(Rc<RefCell<Device>>);

impl FakeBus {
    fn new(offered: u64) -> (Self, Rc<RefCell<Vec<Op>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut bytes = std::vec![0u8; DISK_SECTORS * 512];
        bytes[..512].copy_from_slice(&sector0(&[(
            0,
            0x83,
            PART_START as u32,
            PART_SECTORS as u32,
        )]));
        let medium = Medium {
            bytes,
            log: log.clone(),
        };
        let blk = Model::Blk(Blk::new(std::boxed::Box::new(medium), "host"));
        (Self::with(blk, offered), log)
    }

    fn with(model: Model, offered: u64) -> Self {
        let device = Device {
            model,
            queues: [Queue::new(256), Queue::new(256)],
            selected: 0,
            dma: Dma(std::vec![0; 0x10000]),
            offered,
            device_select: 0,
            driver_select: 0,
            accepted: 0,
            status: 0,
            completes: true,
            ticks: 0,
        };
        Self(Rc::new(RefCell::new(device)))
    }

    fn read(&mut self, pa: u64) -> u64 {
        let d = self.0.borrow();
        match pa.wrapping_sub(COMMON) {
            4 => d.offered >> (32 * d.device_select) & 0xFFFF_FFFF,
            20 => u64::from(d.status),
            21 => 0,
            24 => u64::from(d.queues[d.selected].max_size()),
            // Queue n is notified at NOTIFY + 4 * (n + 1).
            30 => d.selected as u64 + 1,
            _ if (DEVICE..DEVICE + 8).contains(&pa) => match &d.model {
                Model::Blk(blk) => {
                    let mut b = [0u8; 4];
                    blk.read_config(pa - DEVICE, &mut b);
                    u64::from(u32::from_le_bytes(b))
                }
                Model::Net { mac, .. } => mac.get((pa - DEVICE) as usize).map_or(0, |&b| b.into()),
            },
            _ => 0,
        }
    }

    fn write(&mut self, pa: u64, value: u64) {
        let mut guard = self.0.borrow_mut();
        let d = &mut *guard;
        let set = |field: &mut u64, half: u32| {
            *field = *field & !(0xFFFF_FFFF << (32 * half)) | value << (32 * half)
        };
        match pa.wrapping_sub(COMMON) {
            0 => d.device_select = value as u32,
            8 => d.driver_select = value as u32,
            12 => {
                let half = d.driver_select;
                set(&mut d.accepted, half)
            }
            20 => {
                d.status = value as u8;
                if value == 0 {
                    d.queues.iter_mut().for_each(Queue::reset);
                }
                if d.accepted & !d.offered != 0 {
                    d.status &= !8;
                }
            }
            22 => d.selected = value as usize % 2,
            24 => d.queues[d.selected].set_size(value as u16),
            28 => d.queues[d.selected].ready = value == 1,
            32 => set(&mut d.queues[d.selected].desc, 0),
            36 => set(&mut d.queues[d.selected].desc, 1),
            40 => set(&mut d.queues[d.selected].driver, 0),
            44 => set(&mut d.queues[d.selected].driver, 1),
            48 => set(&mut d.queues[d.selected].device, 0),
            52 => set(&mut d.queues[d.selected].device, 1),
            _ if pa == NOTIFY + 4 && d.completes => {
                if let Model::Blk(blk) = &mut d.model {
                    blk.service(&mut d.queues[0], &mut d.dma).unwrap();
                }
            }
            _ if pa == NOTIFY + 8 && d.completes => {
                if let Model::Net { sent, .. } = &mut d.model {
                    while let Some(chain) = d.queues[1].pop(&d.dma).unwrap() {
                        let mut frame = std::vec![0u8; chain.readable_len() as usize];
                        chain.read(&d.dma, 0, &mut frame).unwrap();
                        let head = chain.head;
                        assert_eq!(frame[..12], [0; 12], "a zeroed virtio_net_hdr");
                        sent.push(frame[12..].to_vec());
                        d.queues[1].push_used(&mut d.dma, head, 0).unwrap();
                    }
                }
            }
            _ => {}
        }
    }
}

impl Bus for FakeBus {
    fn read8(&mut self, pa: u64) -> u8 {
        self.read(pa) as u8
    }
    fn read16(&mut self, pa: u64) -> u16 {
        self.read(pa) as u16
    }
    fn read32(&mut self, pa: u64) -> u32 {
        self.read(pa) as u32
    }
    fn write8(&mut self, pa: u64, value: u8) {
        self.write(pa, value.into());
    }
    fn write16(&mut self, pa: u64, value: u16) {
        self.write(pa, value.into());
    }
    fn write32(&mut self, pa: u64, value: u32) {
        self.write(pa, value.into());
    }
    fn dma_read(&mut self, pa: u64, buf: &mut [u8]) {
        self.0.borrow().dma.read(pa, buf).unwrap();
    }
    fn dma_write(&mut self, pa: u64, data: &[u8]) {
        self.0.borrow_mut().dma.write(pa, data).unwrap();
    }
    fn now(&mut self) -> u64 {
        let mut d = self.0.borrow_mut();
        d.ticks += 1;
        d.ticks
    }
}

const VERSION_1: u64 = 1 << 32;
const FLUSH: u64 = 1 << 9;
const REGS: Regs = Regs {
    common: COMMON,
    notify: NOTIFY,
    notify_multiplier: 4,
    device: DEVICE,
};

fn driver(offered: u64) -> (HostBlk<FakeBus>, FakeBus, Rc<RefCell<Vec<Op>>>) {
    let (bus, log) = FakeBus::new(offered);
    let blk = HostBlk::init(bus.clone(), REGS, DMA, TIMEOUT).unwrap();
    (blk, bus, log)
}

#[test]
fn init_negotiates_version_1_and_flush_and_reads_the_capacity() {
    let (blk, bus, _) = driver(VERSION_1 | FLUSH | 1 << 6);
    let d = bus.0.borrow();
    assert_eq!(d.accepted, VERSION_1 | FLUSH);
    assert_eq!(d.status, 1 | 2 | 4 | 8);
    assert!(d.queues[0].ready && d.queues[0].size == 4);
    assert_eq!(blk.sectors(), DISK_SECTORS as u64);
    assert!(blk.has_flush());
}

#[test]
fn a_device_without_version_1_is_refused() {
    let (bus, _) = FakeBus::new(FLUSH);
    let err = HostBlk::init(bus.clone(), REGS, DMA, TIMEOUT).err();
    assert_eq!(err, Some("the device does not offer VIRTIO_F_VERSION_1"));
    assert_eq!(bus.0.borrow().status, 128);
}

#[test]
fn partition_writes_then_flush_reach_the_host_disk_in_order() {
    let (blk, _, log) = driver(VERSION_1 | FLUSH);
    let mut store = PartitionStore::new(blk, PART_START, PART_SECTORS, false);
    assert_eq!(store.capacity(), PART_SECTORS * 512);
    let data: Vec<u8> = (0..8192).map(|i| (i / 512) as u8 + 1).collect();
    store.write(512, &data).unwrap();
    store.flush().unwrap();
    let host = (PART_START + 1) * 512;
    assert_eq!(
        *log.borrow(),
        [
            Op::Write(host, 4096),
            Op::Write(host + 4096, 4096),
            Op::Flush
        ]
    );
    let mut back = std::vec![0u8; 8192 + 512];
    store.read(0, &mut back).unwrap();
    assert!(back[..512].iter().all(|&b| b == 0));
    assert_eq!(back[512..], data[..]);
}

#[test]
fn requests_past_the_partition_never_reach_the_disk() {
    let (blk, _, log) = driver(VERSION_1 | FLUSH);
    let mut store = PartitionStore::new(blk, PART_START, PART_SECTORS, false);
    let mut buf = [0u8; 1024];
    assert_eq!(store.read((PART_SECTORS - 1) * 512, &mut buf), Err(IoError));
    assert_eq!(store.write(PART_SECTORS * 512, &buf), Err(IoError));
    assert_eq!(store.write(100, &buf), Err(IoError), "not sector-aligned");
    assert!(log.borrow().is_empty());
    let mut ro = PartitionStore::new(driver(VERSION_1).0, 0, 4, true);
    assert_eq!(ro.write(0, &buf), Err(IoError));
}

#[test]
fn without_flush_feature_flush_stays_in_the_driver() {
    let (mut blk, _, log) = driver(VERSION_1);
    assert!(!blk.has_flush());
    blk.flush().unwrap();
    assert!(log.borrow().is_empty());
}

#[test]
fn a_request_that_never_completes_times_out_and_stops_the_driver() {
    let (mut blk, bus, log) = driver(VERSION_1 | FLUSH);
    bus.0.borrow_mut().completes = false;
    let mut buf = [0u8; 512];
    assert_eq!(blk.read(0, &mut buf), Err(IoError));
    bus.0.borrow_mut().completes = true;
    assert_eq!(blk.read(0, &mut buf), Err(IoError));
    assert!(log.borrow().is_empty());
    assert_eq!(bus.0.borrow().status & 128, 128);
}

#[test]
fn registry_hands_out_each_range_once_and_names_what_is_missing() {
    let mut disks = HostDisks::new();
    let t = |s: &str| PhyTarget::parse(s).unwrap();
    assert!(disks
        .claim(t("vda1"), "a")
        .unwrap_err()
        .contains("found no virtio-blk disk"));
    let text = disks.add(driver(VERSION_1).0);
    assert_eq!(text, "vda: 64 sectors, vda1 (type 0x83, 32 sectors at 8)");
    let one = disks.claim(t("vda1"), "a").unwrap();
    assert_eq!((one.start, one.sectors), (PART_START, PART_SECTORS));
    assert_eq!(
        disks.claim(t("vda1"), "b").unwrap_err(),
        "vda1 is in use: domain 'a' holds vda1"
    );
    assert_eq!(
        disks.claim(t("vda"), "b").unwrap_err(),
        "vda is in use: domain 'a' holds vda1"
    );
    assert_eq!(
        disks.claim(t("vda2"), "b").unwrap_err(),
        "host disk has no partition vda2"
    );
    assert_eq!(
        disks.claim(t("vdb"), "b").unwrap_err(),
        "no host disk vdb: the monitor found 1"
    );
    disks.release(&one);
    let whole = disks.claim(t("vda"), "b").unwrap();
    assert_eq!((whole.start, whole.sectors), (0, DISK_SECTORS as u64));
}

/// Configuration space: bus 0 functions by (device, function).
struct FakeConfig(HashMap<(u8, u8), [u8; 256]>);

impl ConfigSpace for FakeConfig {
    fn read32(&mut self, dev: u8, func: u8, reg: u8) -> u32 {
        self.0.get(&(dev, func)).map_or(!0, |s| {
            let r = usize::from(reg);
            u32::from_le_bytes(s[r..r + 4].try_into().unwrap())
        })
    }
    fn write32(&mut self, dev: u8, func: u8, reg: u8, value: u32) {
        if let Some(s) = self.0.get_mut(&(dev, func)) {
            let r = usize::from(reg);
            s[r..r + 4].copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// A function with `id`, a 64-bit BAR 4 at 0x80_0000_0000 and capabilities `caps` (offset,
/// bytes).
fn function(id: u32, caps: &[(u8, &[u8])]) -> [u8; 256] {
    let mut s = [0u8; 256];
    s[0..4].copy_from_slice(&id.to_le_bytes());
    s[6] = 0x10; // status: capability list
    s[0x20..0x24].copy_from_slice(&0x0000_000Cu32.to_le_bytes());
    s[0x24..0x28].copy_from_slice(&0x80u32.to_le_bytes());
    s[0x34] = caps.first().map_or(0, |c| c.0);
    for (i, &(at, bytes)) in caps.iter().enumerate() {
        let at = usize::from(at);
        s[at..at + bytes.len()].copy_from_slice(bytes);
        s[at + 1] = caps.get(i + 1).map_or(0, |c| c.0);
    }
    s
}

fn vendor_cap(cfg_type: u8, bar: u8, offset: u32, length: u32, extra: Option<u32>) -> Vec<u8> {
    let mut c = std::vec![
        0x09,
        0,
        if extra.is_some() { 20 } else { 16 },
        cfg_type,
        bar,
        0,
        0,
        0
    ];
    c.extend_from_slice(&offset.to_le_bytes());
    c.extend_from_slice(&length.to_le_bytes());
    if let Some(e) = extra {
        c.extend_from_slice(&e.to_le_bytes());
    }
    c
}

#[test]
fn finds_a_virtio_blk_function_and_its_structures() {
    let common = vendor_cap(1, 4, 0, 0x1000, None);
    let isr = vendor_cap(3, 4, 0x1000, 0x1000, None);
    let device = vendor_cap(4, 4, 0x2000, 0x1000, None);
    let notify = vendor_cap(2, 4, 0x3000, 0x1000, Some(4));
    let second_common = vendor_cap(1, 4, 0x9000, 0x1000, None);
    let msix = [0x11u8, 0, 0, 0];
    let blk = function(
        0x1042_1AF4,
        &[
            (0x40, &msix),
            (0x50, &common),
            (0x64, &isr),
            (0x78, &device),
            (0x8C, &notify),
            (0xA4, &second_common),
        ],
    );
    let mut host = [0u8; 256];
    host[0..4].copy_from_slice(&0x1237_8086u32.to_le_bytes());
    let mut cs = FakeConfig(HashMap::from([((0, 0), host), ((4, 0), blk)]));
    let found = pci::functions(&mut cs);
    assert_eq!(found.len(), 2);
    let f = found.iter().find(|f| f.is_virtio_blk()).copied().unwrap();
    assert_eq!((f.dev, f.func), (4, 0));
    assert!(!found[0].is_virtio_blk());
    assert_eq!(pci::memory_bar(&mut cs, &f, 4), Some(0x80_0000_0000));
    assert_eq!(pci::memory_bar(&mut cs, &f, 0), Some(0));
    assert_eq!(pci::memory_bar(&mut cs, &f, 6), None);
    let caps = pci::virtio_caps(&mut cs, &f).unwrap();
    let w = |offset| Window {
        bar: 4,
        offset,
        length: 0x1000,
    };
    assert_eq!(caps.common, w(0), "the first common capability wins");
    assert_eq!((caps.notify, caps.notify_multiplier), (w(0x3000), 4));
    assert_eq!(caps.device, w(0x2000));
    pci::enable(&mut cs, &f);
    assert_eq!(cs.read32(4, 0, 4) & 6, 6);
}

#[test]
fn capability_loops_and_missing_structures_are_errors() {
    let common = vendor_cap(1, 4, 0, 0x1000, None);
    let mut looped = function(0x1042_1AF4, &[(0x40, &common)]);
    looped[0x41] = 0x40;
    let f = Function {
        dev: 3,
        func: 0,
        vendor: 0x1AF4,
        device: 0x1042,
    };
    let mut cs = FakeConfig(HashMap::from([((3, 0), looped)]));
    assert_eq!(
        pci::virtio_caps(&mut cs, &f),
        Err("no virtio notification capability")
    );
    let mut none = function(0x1042_1AF4, &[]);
    none[6] = 0;
    let mut cs = FakeConfig(HashMap::from([((3, 0), none)]));
    assert_eq!(pci::virtio_caps(&mut cs, &f), Err("no capability list"));
}

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const MAC_FEATURE: u64 = 1 << 5;

impl FakeBus {
    fn net() -> Self {
        let model = Model::Net {
            mac: MAC,
            sent: Vec::new(),
        };
        Self::with(model, VERSION_1 | MAC_FEATURE)
    }

    /// A frame comes in: the device fills the next receive buffer; false if none is offered.
    fn arrive(&self, frame: &[u8]) -> bool {
        let mut guard = self.0.borrow_mut();
        let d = &mut *guard;
        let Some(chain) = d.queues[0].pop(&d.dma).unwrap() else {
            return false;
        };
        let head = chain.head;
        let mut bytes = std::vec![0u8; 12];
        bytes.extend_from_slice(frame);
        let n = chain.write(&mut d.dma, 0, &bytes).unwrap();
        d.queues[0].push_used(&mut d.dma, head, n as u32).unwrap();
        true
    }

    fn sent(&self) -> Vec<Vec<u8>> {
        match &self.0.borrow().model {
            Model::Net { sent, .. } => sent.clone(),
            Model::Blk(_) => Vec::new(),
        }
    }
}

#[test]
fn the_nic_reads_its_mac_sends_frames_and_recycles_receive_buffers() {
    let bus = FakeBus::net();
    let mut net = HostNet::init(bus.clone(), REGS, DMA, TIMEOUT).unwrap();
    assert_eq!(net.mac(), Some(MAC));
    assert_eq!(bus.0.borrow().accepted, VERSION_1 | MAC_FEATURE);
    net.send(b"an outgoing frame");
    assert_eq!(bus.sent(), [b"an outgoing frame".to_vec()]);

    let mut buf = [0u8; 1518];
    assert_eq!(net.receive(&mut buf), None);
    // Three times the buffers the driver offers: each must come back after it is read.
    for i in 0..48u8 {
        assert!(bus.arrive(&[i; 60]), "frame {i} found a buffer");
        assert_eq!(net.receive(&mut buf), Some(60));
        assert_eq!(buf[..60], [i; 60]);
    }
    assert_eq!(net.receive(&mut buf), None);
}

#[test]
fn a_nic_that_never_takes_a_frame_stops_sending() {
    let bus = FakeBus::net();
    let mut net = HostNet::init(bus.clone(), REGS, DMA, TIMEOUT).unwrap();
    bus.0.borrow_mut().completes = false;
    net.send(b"lost");
    bus.0.borrow_mut().completes = true;
    net.send(b"refused");
    assert!(bus.sent().is_empty());
    assert_eq!(bus.0.borrow().status & 128, 128);
}
