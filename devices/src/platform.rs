//! The PC the guest sees: COM1, the 8259A pair, the 8254 PIT, the CMOS RTC, ACPI fixed
//! hardware, a local APIC per vCPU and one I/O APIC, wired as on a PIIX-style board. It dispatches
//! port, MMIO and MSR accesses to them, carries ISA IRQ line levels to both the PICs and the
//! I/O APIC (ISA IRQ 0 arrives at `layout::PIT_GSI`), and hands the CPU its next interrupt.
//! PCI bus 0 holds a host bridge and the virtio devices (`add_virtio`), their INTA# lines wired
//! to I/O APIC pins `layout::PCI_GSI_BASE..`, active low; a device whose driver enabled MSI-X
//! sends messages instead, which reach the local APIC as edges. Queue work happens in
//! `service_devices`, the one place that needs guest memory. `refresh`, called before every
//! guest entry, skips that work and the poll when neither an access nor time can have changed
//! anything since the last poll, and `next_deadline` and `has_interrupt` answer from what that
//! poll left. APIC accesses and interrupt queries concern the vCPU chosen by `select_vcpu`;
//! IPIs and I/O APIC messages reach the APICs they name, and INIT/STARTUP IPIs wait in
//! `take_startup` for the exit loop.
//! It is not the exit loop: callers decode instructions and inject what `take_interrupt` gives.

use crate::ioapic::{Delivery, DeliveryMode, IoApic};
use alloc::vec::Vec;

use crate::lapic::{
    Lapic, LapicAction, MODE_FIXED, MODE_INIT, MODE_LOWEST_PRIORITY, MODE_NMI, MODE_STARTUP,
    SHORTHAND_ALL_INCLUDING_SELF, SHORTHAND_NONE, SHORTHAND_SELF,
};
use crate::layout;
use crate::mem::GuestMemory;
use crate::msix::Message;
use crate::pci::{self, ConfigPorts, ConfigSpace};
use crate::pic::PicPair;
use crate::pit::Pit;
use crate::pm::{Pm, PowerEvent};
use crate::rtc::Rtc;
use crate::uart::Uart16550;
use crate::virtio::{Device, VirtioPci};

const PIT_IRQ: u8 = 0;
const RTC_IRQ: u8 = 8;
const POST_PORT: u16 = 0x80;
const PORT61: u16 = 0x61;
/// APIC MMIO windows are claimed a 4 KiB page at a time.
const APIC_PAGE: u64 = 0x1000;
/// Guest console output kept until the caller drains it.
const CONSOLE_RING_BYTES: usize = 4096;

pub struct PlatformConfig {
    pub tsc_hz: u64,
    pub ram_bytes: u64,
    pub epoch_secs: u64,
    /// vCPUs, each with a local APIC whose ID is its number; at most 64.
    pub vcpus: u32,
}

/// The most vCPUs a platform has (interrupt readiness is a bit per vCPU).
pub const MAX_VCPUS: usize = 64;

/// A startup signal an IPI sent to another vCPU (SDM Vol. 3A 9.4.4, "MP Initialization
/// Example"): the exit loop changes the target vCPU's state, which the platform cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    /// INIT: the vCPU waits for a STARTUP IPI.
    Init,
    /// STARTUP with its vector: a vCPU waiting for one starts in real mode at `vector << 12`.
    Sipi(u8),
}

/// The device a port belongs to; a multi-byte access must stay inside one device.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PortDevice {
    Uart,
    Pic,
    Pit,
    Port61,
    Rtc,
    Pm,
    Post,
}

/// Single ports first, then the devices' own ranges.
fn port_device(port: u16) -> Option<PortDevice> {
    match port {
        POST_PORT => Some(PortDevice::Post),
        PORT61 => Some(PortDevice::Port61),
        p if p.wrapping_sub(layout::UART_BASE) < 8 => Some(PortDevice::Uart),
        p if Pit::claims(p) => Some(PortDevice::Pit),
        p if PicPair::claims(p) => Some(PortDevice::Pic),
        p if Rtc::claims(p) => Some(PortDevice::Rtc),
        p if Pm::claims(p) => Some(PortDevice::Pm),
        _ => None,
    }
}

/// Fixed-size byte ring that overwrites its oldest byte when full.
struct ConsoleRing {
    buf: [u8; CONSOLE_RING_BYTES],
    head: usize,
    len: usize,
}

impl ConsoleRing {
    const fn new() -> Self {
        Self {
            buf: [0; CONSOLE_RING_BYTES],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        self.buf[(self.head + self.len) % CONSOLE_RING_BYTES] = byte;
        if self.len == CONSOLE_RING_BYTES {
            self.head = (self.head + 1) % CONSOLE_RING_BYTES;
        } else {
            self.len += 1;
        }
    }

    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.buf[self.head];
        self.head = (self.head + 1) % CONSOLE_RING_BYTES;
        self.len -= 1;
        Some(byte)
    }
}

/// All ones in the low `size` bytes.
fn ones(size: u8) -> u64 {
    match size {
        1..=7 => (1 << (8 * u32::from(size))) - 1,
        _ => u64::MAX,
    }
}

/// What the last `poll` left, valid while `Platform::stale` is clear: no device changes by
/// itself before `until`, so polling again earlier would change nothing.
#[derive(Clone, Copy)]
struct Quiet {
    until: u64,
    deadline: Option<u64>,
    /// The vCPUs with an interrupt ready, a bit each.
    interrupts: u64,
}

pub struct Platform {
    uart: Uart16550,
    pic: PicPair,
    pit: Pit,
    rtc: Rtc,
    pm: Pm,
    /// The local APIC of vCPU `i`, APIC ID `i`.
    lapics: Vec<Lapic>,
    /// The vCPU whose APIC accesses and interrupts the calls address (`select_vcpu`).
    cur: usize,
    /// INIT and STARTUP IPIs for other vCPUs, oldest first, until the exit loop takes them.
    startups: Vec<(usize, Startup)>,
    ioapic: IoApic,
    console: ConsoleRing,
    power_event: Option<PowerEvent>,
    /// Level last driven on each ISA IRQ line.
    isa_levels: u16,
    pci_ports: ConfigPorts,
    host_bridge: ConfigSpace,
    /// The device in PCI slot `i + 1`.
    virtio: Vec<VirtioPci>,
    /// Asserted PCI interrupt lines, one bit per GSI above `layout::PCI_GSI_BASE`.
    pci_levels: u32,
    /// Set by every access that may change device state, and while a virtio device has work
    /// left; cleared by `poll`.
    stale: bool,
    quiet: Quiet,
}

impl Platform {
    pub fn new(cfg: &PlatformConfig) -> Self {
        Self {
            uart: Uart16550::new(),
            pic: PicPair::new(),
            pit: Pit::new(cfg.tsc_hz),
            rtc: Rtc::new(cfg.ram_bytes, cfg.epoch_secs, cfg.tsc_hz),
            pm: Pm::new(cfg.tsc_hz),
            lapics: (0..cfg.vcpus.clamp(1, MAX_VCPUS as u32))
                .map(|id| Lapic::new(id, cfg.tsc_hz))
                .collect(),
            cur: 0,
            startups: Vec::new(),
            ioapic: IoApic::new(),
            console: ConsoleRing::new(),
            power_event: None,
            isa_levels: 0,
            pci_ports: ConfigPorts::default(),
            host_bridge: pci::host_bridge(),
            virtio: Vec::new(),
            pci_levels: 0,
            stale: true,
            quiet: Quiet {
                until: 0,
                deadline: None,
                interrupts: 0,
            },
        }
        .with_pci_lines_idle()
    }

    /// PCI interrupt lines are active low: idle lines are driven high.
    fn with_pci_lines_idle(mut self) -> Self {
        for i in 0..layout::PCI_GSI_COUNT {
            self.ioapic.set_irq(layout::PCI_GSI_BASE + i, true);
        }
        self
    }

    /// Plugs a virtio device into the next free slot of bus 0; `None` when the bus is full.
    pub fn add_virtio(&mut self, device: Device) -> Option<u8> {
        let slot = u8::try_from(self.virtio.len() + 1).ok()?;
        if slot > layout::PCI_SLOTS {
            return None;
        }
        let bar = layout::PCI_MMIO_BASE + u64::from(slot) * layout::PCI_BAR_STRIDE;
        let bar = u32::try_from(bar).ok()?;
        self.stale = true;
        self.virtio
            .push(VirtioPci::new(device, bar, pci::slot_gsi(slot)));
        Some(slot)
    }

    /// Does the queue work the virtio devices were notified of, and delivers frames waiting for
    /// receive buffers. Call before entering the guest; cheap when there is nothing to do.
    pub fn service_devices(&mut self, mem: &mut dyn GuestMemory) {
        if !self.virtio.iter().any(VirtioPci::needs_service) {
            return;
        }
        self.stale = true;
        let console = &mut self.console;
        for dev in &mut self.virtio {
            dev.service(mem, &mut |bytes| {
                bytes.iter().for_each(|&b| console.push(b))
            });
        }
        self.update_pci_irqs();
    }

    /// Takes the oldest frame a NIC sent: copies it into `buf` and returns the NIC's index
    /// (NICs are numbered in the order they were added) and the frame's length.
    pub fn take_net_frame(&mut self, buf: &mut [u8]) -> Option<(u8, usize)> {
        self.stale = true;
        self.nics_mut().enumerate().find_map(|(i, nic)| {
            let frame = nic.sent()?;
            let len = frame.len().min(buf.len());
            buf[..len].copy_from_slice(&frame[..len]);
            nic.pop_sent();
            Some((i as u8, len))
        })
    }

    /// Queues `frame` for NIC `nic`; false when dropped (no such NIC or its inbox is full).
    pub fn deliver_net_frame(&mut self, nic: u8, frame: &[u8]) -> bool {
        self.stale = true;
        self.nics_mut()
            .nth(usize::from(nic))
            .is_some_and(|n| n.deliver(frame))
    }

    /// How many NICs the platform has.
    pub fn nic_count(&self) -> u8 {
        let n = self
            .virtio
            .iter()
            .filter(|d| matches!(d.device, Device::Net(_)))
            .count();
        n as u8
    }

    fn nics_mut(&mut self) -> impl Iterator<Item = &mut crate::virtio::net::Net> {
        self.virtio.iter_mut().filter_map(|d| match &mut d.device {
            Device::Net(n) => Some(n),
            _ => None,
        })
    }

    /// A CONFIG_ADDRESS or CONFIG_DATA read.
    fn pci_read(&mut self, port: u16, size: u8) -> u32 {
        self.stale = true;
        if port == layout::PCI_CONFIG_ADDRESS {
            return self.pci_ports.address();
        }
        let target = self.pci_ports.target(port);
        match target.and_then(|t| self.pci_function(t)) {
            Some((cs, offset)) => cs.read(offset, size),
            None => ones(size) as u32,
        }
    }

    fn pci_write(&mut self, port: u16, size: u8, value: u32) {
        self.stale = true;
        if port == layout::PCI_CONFIG_ADDRESS {
            self.pci_ports.set_address(value);
            return;
        }
        let target = self.pci_ports.target(port);
        if let Some((cs, offset)) = target.and_then(|t| self.pci_function(t)) {
            cs.write(offset, size, value);
            // The command register's INTx disable bit changes the line.
            self.update_pci_irqs();
        }
    }

    /// The configuration space a bus-0 function-0 target names, and the offset in it.
    fn pci_function(&mut self, t: pci::Target) -> Option<(&mut ConfigSpace, u8)> {
        if t.bus != 0 || t.function != 0 {
            return None;
        }
        let cs = match t.slot {
            0 => &mut self.host_bridge,
            s => &mut self.virtio.get_mut(usize::from(s) - 1)?.pci,
        };
        Some((cs, t.offset))
    }

    /// The virtio device whose BAR holds `gpa`, and the offset in the BAR.
    fn virtio_at(&mut self, gpa: u64) -> Option<(&mut VirtioPci, u64)> {
        self.virtio.iter_mut().find_map(|d| {
            let offset = gpa.wrapping_sub(d.bar()?);
            (offset < u64::from(crate::virtio::BAR_SIZE)).then_some((d, offset))
        })
    }

    /// Sends the MSI-X messages the virtio devices may send, and drives each PCI GSI to the
    /// wired OR of the INTA# lines on it (active low).
    fn update_pci_irqs(&mut self) {
        for i in 0..self.virtio.len() {
            while let Some(message) = self.virtio[i].take_message() {
                self.deliver_msi(message);
            }
        }
        let mut levels = 0u32;
        for (i, dev) in self.virtio.iter().enumerate() {
            if dev.irq_level() {
                let slot = i as u8 + 1;
                levels |= 1 << (pci::slot_gsi(slot) - layout::PCI_GSI_BASE);
            }
        }
        let changed = levels ^ self.pci_levels;
        self.pci_levels = levels;
        for i in 0..layout::PCI_GSI_COUNT {
            if changed & (1 << i) != 0 {
                self.ioapic
                    .set_irq(layout::PCI_GSI_BASE + i, levels & (1 << i) == 0);
            }
        }
        self.route_ioapic_deliveries();
    }

    /// Port read of `size` bytes; unclaimed ports (or accesses straddling two devices) read
    /// as all ones.
    pub fn io_read(&mut self, port: u16, size: u8, now: u64) -> u32 {
        if ConfigPorts::claims(port, size) {
            return self.pci_read(port, size);
        }
        let Some(dev) = self.device_for(port, size) else {
            log::trace!("unclaimed port read {port:#x}/{size}");
            return ones(size) as u32;
        };
        let value = match dev {
            PortDevice::Pm => self.pm.read(port, size, now),
            _ => (0..u16::from(size)).fold(0, |acc, i| {
                let byte = self.read_byte(dev, port.wrapping_add(i), now);
                acc | u32::from(byte) << (8 * i)
            }),
        };
        self.after_port_access(dev);
        value
    }

    pub fn io_write(&mut self, port: u16, size: u8, value: u32, now: u64) {
        if ConfigPorts::claims(port, size) {
            self.pci_write(port, size, value);
            return;
        }
        let Some(dev) = self.device_for(port, size) else {
            log::trace!("unclaimed port write {port:#x}/{size} = {value:#x}");
            return;
        };
        match dev {
            PortDevice::Pm => {
                if let Some(event) = self.pm.write(port, size, value, now) {
                    self.power_event.get_or_insert(event);
                }
            }
            _ => {
                for i in 0..u16::from(size) {
                    let byte = (value >> (8 * i)) as u8;
                    self.write_byte(dev, port.wrapping_add(i), byte, now);
                }
            }
        }
        self.after_port_access(dev);
    }

    /// MMIO read in the APIC windows or a PCI BAR; `None` when no device decodes `gpa`. APIC
    /// register reads change no state.
    pub fn mmio_read(&mut self, gpa: u64, size: u8, now: u64) -> Option<u64> {
        let Some((is_lapic, offset)) = self.apic_window(gpa) else {
            let (dev, offset) = self.virtio_at(gpa)?;
            let value = dev.read(offset, size);
            self.stale = true;
            // Reading the ISR lowers INTA#.
            self.update_pci_irqs();
            return Some(value);
        };
        let aligned = offset & !3;
        let mut read32 = |off: u32| -> u64 {
            if u64::from(off) >= APIC_PAGE {
                return 0xFFFF_FFFF;
            }
            u64::from(if is_lapic {
                self.lapics[self.cur].mmio_read(off, now)
            } else {
                self.ioapic.mmio_read(off)
            })
        };
        // APIC registers are 32 bits wide: a narrower read takes bytes of the dword, an 8-byte
        // read is two dword reads.
        let value = match size {
            8 => read32(aligned) | read32(aligned + 4) << 32,
            _ => (read32(aligned) >> (8 * (offset & 3))) & ones(size),
        };
        Some(value)
    }

    /// MMIO write in the APIC windows or a PCI BAR; false when no device decodes `gpa`.
    pub fn mmio_write(&mut self, gpa: u64, size: u8, value: u64, now: u64) -> bool {
        self.stale = true;
        let Some((is_lapic, offset)) = self.apic_window(gpa) else {
            let Some((dev, offset)) = self.virtio_at(gpa) else {
                return false;
            };
            dev.write(offset, size, value);
            // A device reset lowers INTA#.
            self.update_pci_irqs();
            return true;
        };
        let aligned = offset & !3;
        let value32 = match size {
            // The upper half of an 8-byte write lands in the reserved part of the register's
            // 16-byte slot.
            4 | 8 => value as u32,
            _ => {
                // Merge a narrow write into the register's current value.
                let shift = 8 * (offset & 3);
                let mask = (ones(size) as u32) << shift;
                let current = if is_lapic {
                    self.lapics[self.cur].mmio_read(aligned, now)
                } else {
                    self.ioapic.mmio_read(aligned)
                };
                (current & !mask) | ((value as u32) << shift & mask)
            }
        };
        if is_lapic {
            let action = self.lapics[self.cur].mmio_write(aligned, value32, now);
            self.handle_lapic_action(action);
        } else {
            self.ioapic.mmio_write(aligned, value32);
        }
        self.route_ioapic_deliveries();
        true
    }

    /// `None`: not a platform MSR; `Some(Err(()))`: the access raises #GP. Reads change no
    /// state.
    pub fn msr_read(&mut self, msr: u32, now: u64) -> Option<Result<u64, ()>> {
        Lapic::claims_msr(msr).then(|| self.lapics[self.cur].msr_read(msr, now).ok_or(()))
    }

    pub fn msr_write(&mut self, msr: u32, value: u64, now: u64) -> Option<Result<(), ()>> {
        if !Lapic::claims_msr(msr) {
            return None;
        }
        self.stale = true;
        let result = self.lapics[self.cur].msr_write(msr, value, now);
        Some(result.map(|action| {
            self.handle_lapic_action(action);
            self.route_ioapic_deliveries();
        }))
    }

    /// Services the virtio devices and polls, unless both would be no-ops: nothing was
    /// accessed since the last poll (and no device has work left) and no device changes by
    /// itself before `now`. Call before every guest entry.
    #[inline]
    pub fn refresh(&mut self, mem: &mut dyn GuestMemory, now: u64) {
        if self.stale || now >= self.quiet.until {
            self.service_and_poll(mem, now);
        }
    }

    fn service_and_poll(&mut self, mem: &mut dyn GuestMemory, now: u64) {
        self.service_devices(mem);
        self.poll(now);
    }

    /// Runs the timers due by `now` and brings every interrupt line up to date.
    pub fn poll(&mut self, now: u64) {
        if self.pit.poll(now) {
            // The PIT's OUT is a square wave; the interrupt controllers see its rising edge.
            self.drive_isa_irq(PIT_IRQ, true);
            self.drive_isa_irq(PIT_IRQ, false);
        }
        for lapic in &mut self.lapics {
            lapic.poll_timer(now);
        }
        self.rtc.poll(now);
        self.pm.poll(now);
        self.drive_isa_irq(layout::UART_IRQ, self.uart.irq_level());
        self.drive_isa_irq(RTC_IRQ, self.rtc.irq_level());
        self.drive_isa_irq(layout::SCI_IRQ, self.pm.sci_level());
        self.route_ioapic_deliveries();
        // The RTC's flags change on their own schedule whether or not they interrupt (a later
        // alarm check depends on when the update happened); every other device's state changes
        // only at its interrupt deadline or when accessed.
        let deadline = self.compute_next_deadline();
        let until = [deadline, self.rtc.next_change()]
            .into_iter()
            .flatten()
            .min();
        self.quiet = Quiet {
            until: until.unwrap_or(u64::MAX),
            deadline,
            interrupts: self.compute_interrupts(),
        };
        // A device with work left (a frame waiting for receive buffers) is served again.
        self.stale = self.virtio.iter().any(VirtioPci::needs_service);
    }

    /// Earliest TSC time at which some device needs `poll`.
    #[inline]
    pub fn next_deadline(&self) -> Option<u64> {
        if self.stale {
            self.compute_next_deadline()
        } else {
            self.quiet.deadline
        }
    }

    fn compute_next_deadline(&self) -> Option<u64> {
        [
            self.pit.next_event(),
            self.rtc.next_event(),
            self.pm.next_event(),
        ]
        .into_iter()
        .chain(self.lapics.iter().map(Lapic::next_deadline))
        .flatten()
        .min()
    }

    /// The vCPUs there are, numbered from 0 (the bootstrap processor).
    pub fn vcpus(&self) -> usize {
        self.lapics.len()
    }

    /// Makes vCPU `vcpu` the one whose APIC accesses, interrupts and startup signals the next
    /// calls concern; a number past the last vCPU is ignored.
    #[inline]
    pub fn select_vcpu(&mut self, vcpu: usize) {
        if vcpu < self.lapics.len() {
            self.cur = vcpu;
        }
    }

    /// Whether the selected vCPU has an interrupt ready.
    #[inline]
    pub fn has_interrupt(&self) -> bool {
        self.interrupt_mask() & (1 << self.cur) != 0
    }

    /// The vCPUs with an interrupt ready, a bit each.
    #[inline]
    pub fn interrupt_mask(&self) -> u64 {
        if self.stale {
            self.compute_interrupts()
        } else {
            self.quiet.interrupts
        }
    }

    fn compute_interrupts(&self) -> u64 {
        self.vcpus_where(|l| l.pending_vector().is_some()) | u64::from(self.extint_pending())
    }

    /// Acknowledges the interrupt the selected vCPU takes now and returns its vector. ExtINT
    /// from the PIC goes first: it bypasses the local APIC's IRR and priority (SDM vol. 3
    /// 10.5.1), and reaches only the bootstrap processor (MP spec 3.6.2.2, virtual wire).
    pub fn take_interrupt(&mut self) -> Option<u8> {
        self.stale = true;
        if self.cur == 0 && self.extint_pending() {
            let vector = self.pic.acknowledge();
            return Some(vector);
        }
        let lapic = &mut self.lapics[self.cur];
        let vector = lapic.pending_vector()?;
        lapic.acknowledge(vector);
        Some(vector)
    }

    /// The oldest INIT or STARTUP IPI sent to another vCPU: the target's number and the signal.
    pub fn take_startup(&mut self) -> Option<(usize, Startup)> {
        (!self.startups.is_empty()).then(|| self.startups.remove(0))
    }

    /// Whether an NMI waits for the selected vCPU (an NMI IPI or an I/O APIC entry in NMI
    /// mode).
    pub fn has_nmi(&self) -> bool {
        self.lapics[self.cur].has_nmi()
    }

    /// The selected vCPU takes its pending NMI; false when there was none.
    pub fn take_nmi(&mut self) -> bool {
        self.lapics[self.cur].take_nmi()
    }

    /// The vCPUs with an interrupt or an NMI ready, a bit each: those a halt ends for.
    pub fn wake_mask(&self) -> u64 {
        self.interrupt_mask() | self.vcpus_where(Lapic::has_nmi)
    }

    /// Whether the selected vCPU may end its current interrupt without an exit (KVM's PV EOI).
    pub fn eoi_may_skip_exit(&self) -> bool {
        self.lapics[self.cur].eoi_may_skip_exit()
    }

    /// The selected vCPU ended its current interrupt without writing the EOI register (KVM's PV EOI).
    pub fn eoi(&mut self) {
        self.stale = true;
        let action = self.lapics[self.cur].eoi();
        self.handle_lapic_action(action);
        self.route_ioapic_deliveries();
    }

    pub fn take_power_event(&mut self) -> Option<PowerEvent> {
        self.power_event.take()
    }

    #[inline]
    pub fn pop_console_output(&mut self) -> Option<u8> {
        self.console.pop()
    }

    /// Queues a byte for COM1's receiver; false when its FIFO is full.
    pub fn push_console_input(&mut self, byte: u8) -> bool {
        self.stale = true;
        let accepted = self.uart.push_input(byte);
        self.drive_isa_irq(layout::UART_IRQ, self.uart.irq_level());
        self.route_ioapic_deliveries();
        accepted
    }

    pub fn press_power_button(&mut self) {
        self.stale = true;
        self.pm.press_power_button();
        self.drive_isa_irq(layout::SCI_IRQ, self.pm.sci_level());
        self.route_ioapic_deliveries();
    }

    fn extint_pending(&self) -> bool {
        self.lapics[0].lint0_extint() && self.pic.interrupt_pending()
    }

    /// The device serving an access of `size` bytes at `port`, when all its bytes hit it.
    fn device_for(&self, port: u16, size: u8) -> Option<PortDevice> {
        if !matches!(size, 1 | 2 | 4) {
            return None;
        }
        let dev = port_device(port)?;
        if size == 1 {
            return Some(dev);
        }
        let last = port.checked_add(u16::from(size) - 1)?;
        (port_device(last) == Some(dev)).then_some(dev)
    }

    fn read_byte(&mut self, dev: PortDevice, port: u16, now: u64) -> u8 {
        match dev {
            PortDevice::Uart => self.uart.read(port.wrapping_sub(layout::UART_BASE) as u8),
            PortDevice::Pic => self.pic.read(port),
            PortDevice::Pit => self.pit.read(port, now),
            PortDevice::Port61 => self.pit.read_port61(now),
            PortDevice::Rtc => self.rtc.read(port, now),
            PortDevice::Pm => self.pm.read(port, 1, now) as u8,
            PortDevice::Post => 0xFF,
        }
    }

    fn write_byte(&mut self, dev: PortDevice, port: u16, value: u8, now: u64) {
        match dev {
            PortDevice::Uart => {
                let offset = port.wrapping_sub(layout::UART_BASE) as u8;
                if let Some(byte) = self.uart.write(offset, value) {
                    self.console.push(byte);
                }
            }
            PortDevice::Pic => self.pic.write(port, value),
            PortDevice::Pit => self.pit.write(port, value, now),
            PortDevice::Port61 => self.pit.write_port61(value, now),
            PortDevice::Rtc => self.rtc.write(port, value, now),
            PortDevice::Pm => {
                if let Some(event) = self.pm.write(port, 1, u32::from(value), now) {
                    self.power_event.get_or_insert(event);
                }
            }
            // POST codes are dropped.
            PortDevice::Post => {}
        }
    }

    /// An access can change the device's IRQ line (IIR reads, register C reads, PM1 writes);
    /// forwarding it at once keeps every edge visible to the interrupt controllers. POST codes
    /// change nothing; the PIT's line moves only in `poll`, and the PICs reach the CPU through
    /// `has_interrupt`, not the I/O APIC. The UART and the PICs have no timer, so what the last
    /// poll left holds after an access to them but for whether an interrupt is ready.
    fn after_port_access(&mut self, dev: PortDevice) {
        let (irq, level) = match dev {
            PortDevice::Post => return,
            PortDevice::Pic => return self.interrupt_changed(),
            PortDevice::Pit | PortDevice::Port61 => {
                self.stale = true;
                return;
            }
            PortDevice::Uart => {
                self.drive_isa_irq(layout::UART_IRQ, self.uart.irq_level());
                self.route_ioapic_deliveries();
                return self.interrupt_changed();
            }
            PortDevice::Rtc => (RTC_IRQ, self.rtc.irq_level()),
            PortDevice::Pm => (layout::SCI_IRQ, self.pm.sci_level()),
        };
        self.stale = true;
        self.drive_isa_irq(irq, level);
        self.route_ioapic_deliveries();
    }

    /// Brings what the last poll left up to date after an access that changed no device's
    /// timing.
    fn interrupt_changed(&mut self) {
        self.quiet.interrupts = self.compute_interrupts();
    }

    /// Drives ISA line `irq` to the PICs and the I/O APIC when its level changes.
    fn drive_isa_irq(&mut self, irq: u8, level: bool) {
        let mask = 1u16 << (irq & 15);
        if (self.isa_levels & mask != 0) == level {
            return;
        }
        self.isa_levels ^= mask;
        self.pic.set_irq(irq, level);
        let gsi = if irq == PIT_IRQ { layout::PIT_GSI } else { irq };
        self.ioapic.set_irq(gsi, level);
    }

    /// Hands I/O APIC messages to the local APICs they name. ExtINT messages are served by the
    /// PIC path; SMI and INIT from the I/O APIC are not modelled.
    fn route_ioapic_deliveries(&mut self) {
        while let Some(d) = self.ioapic.take_delivery() {
            match d.mode {
                DeliveryMode::Fixed | DeliveryMode::LowestPriority => self.accept_message(&d),
                DeliveryMode::Nmi => {
                    let mask = self.destinations(d.dest, d.logical, false);
                    self.lapics_in(mask).for_each(Lapic::accept_nmi);
                }
                _ => log::trace!("ignored I/O APIC delivery {:?}", d.vector),
            }
        }
    }

    /// Hands a fixed or lowest-priority message (from the I/O APIC or an MSI) to the local
    /// APICs its destination names.
    fn accept_message(&mut self, d: &Delivery) {
        let lowest = d.mode == DeliveryMode::LowestPriority;
        let mask = self.destinations(d.dest, d.logical, lowest);
        self.lapics_in(mask)
            .for_each(|l| l.accept_interrupt(d.vector, d.level_triggered));
    }

    /// The vCPUs whose local APIC `f` holds for, a bit each.
    fn vcpus_where(&self, f: impl Fn(&Lapic) -> bool) -> u64 {
        self.lapics
            .iter()
            .enumerate()
            .filter(|(_, l)| f(l))
            .fold(0, |mask, (i, _)| mask | 1 << i)
    }

    /// The local APICs of the vCPUs in `mask`, a bit each.
    fn lapics_in(&mut self, mask: u64) -> impl Iterator<Item = &mut Lapic> {
        self.lapics
            .iter_mut()
            .enumerate()
            .filter(move |(i, _)| mask & (1 << i) != 0)
            .map(|(_, l)| l)
    }

    /// The vCPUs a message for `dest` reaches, a bit each; lowest-priority delivery picks one
    /// of them (the lowest numbered: every vCPU runs at the same priority here).
    fn destinations(&self, dest: u32, logical: bool, lowest: bool) -> u64 {
        let mask = self.vcpus_where(|l| l.matches_destination(dest, logical));
        if lowest {
            mask & mask.wrapping_neg()
        } else {
            mask
        }
    }

    /// Delivers a message a PCI function wrote to 0xFEEx_xxxx: a fixed or lowest-priority
    /// interrupt reaches the local APICs its destination names as an edge (SDM 11.11). Other
    /// delivery modes, and writes elsewhere, are dropped.
    fn deliver_msi(&mut self, message: Message) {
        let Some(d) = message.decode() else {
            log::trace!(
                "dropped MSI write {:#x} to {:#x}",
                message.data,
                message.address
            );
            return;
        };
        match d.mode {
            // `decode` gives every message as edge-triggered.
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => self.accept_message(&d),
            _ => log::trace!("ignored MSI {:?} for vector {:#x}", d.mode, d.vector),
        }
    }

    fn handle_lapic_action(&mut self, action: LapicAction) {
        match action {
            LapicAction::None => {}
            LapicAction::Eoi(vector) => self.ioapic.eoi(vector),
            LapicAction::Ipi {
                dest,
                vector,
                mode,
                shorthand,
                level,
                logical,
            } => {
                let from = self.cur;
                let all = u64::MAX >> (64 - self.lapics.len());
                let targets = match shorthand {
                    SHORTHAND_NONE => {
                        self.destinations(dest, logical, mode == MODE_LOWEST_PRIORITY)
                    }
                    SHORTHAND_SELF => 1 << from,
                    SHORTHAND_ALL_INCLUDING_SELF => all,
                    _ => all & !(1 << from),
                };
                for to in (0..self.lapics.len()).filter(|i| targets & (1 << i) != 0) {
                    self.send_ipi(from, to, mode, vector, level);
                }
            }
        }
    }

    /// Delivers one IPI from vCPU `from` to vCPU `to` (SDM Vol. 3A 11.6.1). The sender's APIC
    /// already took its own fixed, lowest-priority and NMI IPIs; a vCPU does not INIT or start
    /// itself.
    fn send_ipi(&mut self, from: usize, to: usize, mode: u8, vector: u8, level: bool) {
        if to == from {
            return;
        }
        match mode {
            MODE_FIXED | MODE_LOWEST_PRIORITY => self.lapics[to].accept_interrupt(vector, false),
            MODE_NMI => self.lapics[to].accept_nmi(),
            MODE_INIT if level => self.startups.push((to, Startup::Init)),
            MODE_STARTUP => self.startups.push((to, Startup::Sipi(vector))),
            _ => log::trace!("ignored IPI mode {mode} from vCPU {from} to {to}"),
        }
    }

    /// Which APIC window holds `gpa`, and the offset in it.
    fn apic_window(&self, gpa: u64) -> Option<(bool, u32)> {
        let lapic = &self.lapics[self.cur];
        let lapic_base = lapic.base_address();
        if lapic.xapic_mmio_enabled() && gpa.wrapping_sub(lapic_base) < APIC_PAGE {
            return Some((true, (gpa - lapic_base) as u32));
        }
        let offset = gpa.wrapping_sub(layout::IOAPIC_BASE);
        (offset < APIC_PAGE).then_some((false, offset as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue::tests::{Driver, AVAIL, DESC, USED};

    const TSC_HZ: u64 = 3_000_000_000;
    const LAPIC: u64 = layout::LAPIC_BASE;
    const IOAPIC: u64 = layout::IOAPIC_BASE;
    const SVR: u64 = 0xF0;
    const EOI: u64 = 0xB0;
    const LVT_LINT0: u64 = 0x350;

    fn platform() -> Platform {
        smp_platform(1)
    }

    fn smp_platform(vcpus: u32) -> Platform {
        Platform::new(&PlatformConfig {
            tsc_hz: TSC_HZ,
            ram_bytes: 256 << 20,
            epoch_secs: 1_700_000_000,
            vcpus,
        })
    }

    fn enable_lapic(p: &mut Platform) {
        assert!(p.mmio_write(LAPIC + SVR, 4, 0x1FF, 0));
    }

    /// Routes I/O APIC `pin` to `vector`, fixed delivery, physical destination 0.
    fn route_pin(p: &mut Platform, pin: u32, vector: u8, level: bool) {
        let low = u64::from(vector) | if level { 1 << 15 } else { 0 };
        p.mmio_write(IOAPIC, 4, u64::from(0x10 + 2 * pin + 1), 0);
        p.mmio_write(IOAPIC + 0x10, 4, 0, 0);
        p.mmio_write(IOAPIC, 4, u64::from(0x10 + 2 * pin), 0);
        p.mmio_write(IOAPIC + 0x10, 4, low, 0);
    }

    /// Programs the 8259 pair as Linux does, vectors 0x20 and 0x28, all unmasked.
    fn init_pic(p: &mut Platform) {
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xA0, 0x11),
            (0xA1, 0x28),
            (0xA1, 0x02),
            (0xA1, 0x01),
            (0x21, 0x00),
            (0xA1, 0x00),
        ] {
            p.io_write(port, 1, value, 0);
        }
    }

    /// PIT channel 0, mode 2, 1193 clocks (about 1 ms).
    fn start_pit(p: &mut Platform) {
        p.io_write(0x43, 1, 0x34, 0);
        p.io_write(0x40, 1, 1193 & 0xFF, 0);
        p.io_write(0x40, 1, 1193 >> 8, 0);
    }

    #[test]
    fn unclaimed_ports_read_all_ones() {
        let mut p = platform();
        assert_eq!(p.io_read(0x1234, 1, 0), 0xFF);
        assert_eq!(p.io_read(0x1234, 2, 0), 0xFFFF);
        assert_eq!(p.io_read(0x1234, 4, 0), 0xFFFF_FFFF);
        assert_eq!(p.io_read(0xFFFF, 4, 0), 0xFFFF_FFFF);
        assert_eq!(p.io_read(0x3F8, 3, 0), 0xFF_FFFF);
    }

    #[test]
    fn pci_config_address_dword_is_not_the_reset_register() {
        let mut p = platform();
        p.io_write(0xCF8, 4, 0x8000_0400, 0);
        assert_eq!(p.take_power_event(), None);
        assert_eq!(p.io_read(0xCF8, 4, 0), 0x8000_0400);
        assert_eq!(
            p.io_read(0xCF9, 1, 0),
            0,
            "byte reads reach the reset register"
        );
    }

    #[test]
    fn uart_output_reaches_console_in_order() {
        let mut p = platform();
        for &b in b"hi\n" {
            p.io_write(layout::UART_BASE, 1, u32::from(b), 0);
        }
        assert_eq!(p.pop_console_output(), Some(b'h'));
        assert_eq!(p.pop_console_output(), Some(b'i'));
        assert_eq!(p.pop_console_output(), Some(b'\n'));
        assert_eq!(p.pop_console_output(), None);
    }

    #[test]
    fn console_ring_overwrites_oldest() {
        let mut p = platform();
        for i in 0..CONSOLE_RING_BYTES + 3 {
            p.io_write(layout::UART_BASE, 1, i as u32 & 0xFF, 0);
        }
        assert_eq!(p.pop_console_output(), Some(3));
        let mut n = 1;
        while p.pop_console_output().is_some() {
            n += 1;
        }
        assert_eq!(n, CONSOLE_RING_BYTES);
    }

    #[test]
    fn console_input_read_through_rbr() {
        let mut p = platform();
        assert!(p.push_console_input(b'k'));
        assert_eq!(p.io_read(layout::UART_BASE + 5, 1, 0) & 1, 1);
        assert_eq!(p.io_read(layout::UART_BASE, 1, 0), u32::from(b'k'));
    }

    #[test]
    fn power_events() {
        let mut p = platform();
        let s5 = u32::from(layout::S5_SLP_TYP) << 10 | 1 << 13;
        p.io_write(layout::PM1A_CNT_BLK, 2, s5, 0);
        assert_eq!(p.take_power_event(), Some(PowerEvent::PowerOff));
        assert_eq!(p.take_power_event(), None);
        p.io_write(layout::RESET_PORT, 1, u32::from(layout::RESET_VALUE), 0);
        assert_eq!(p.take_power_event(), Some(PowerEvent::Reset));
        p.io_write(0x64, 1, 0xFE, 0);
        assert_eq!(p.take_power_event(), Some(PowerEvent::Reset));
    }

    #[test]
    fn port_devices_are_reachable() {
        let mut p = platform();
        p.io_write(0x21, 1, 0xFF, 0);
        assert_eq!(p.io_read(0x21, 1, 0), 0xFF);
        p.io_write(0x70, 1, 0x0D, 0);
        assert_eq!(p.io_read(0x71, 1, 0), 0x80);
        p.io_write(0x70, 1, 0x30, 0);
        assert_eq!(p.io_read(0x71, 1, 0), 0xFF, "255 MiB extended, low byte");
        p.io_write(0x61, 1, 0x01, 0);
        assert_eq!(p.io_read(0x61, 1, 0) & 1, 1);
        p.io_write(0x80, 1, 0x55, 0);
        let t = p.io_read(layout::PM_TMR_BLK, 4, TSC_HZ);
        assert_eq!(u64::from(t), crate::pm::PM_TIMER_HZ);
    }

    #[test]
    fn nothing_scheduled_at_reset() {
        let p = platform();
        assert_eq!(p.next_deadline(), None);
        assert!(!p.has_interrupt());
    }

    #[test]
    fn pit_through_ioapic_to_lapic() {
        let mut p = platform();
        enable_lapic(&mut p);
        route_pin(&mut p, u32::from(layout::PIT_GSI), 0x30, false);
        start_pit(&mut p);
        let first = p.next_deadline().expect("PIT armed");
        assert_eq!(first, 1193 * TSC_HZ / crate::pit::PIT_HZ + 1);
        p.poll(first - 1);
        assert!(!p.has_interrupt());
        p.poll(first);
        assert!(p.has_interrupt());
        assert_eq!(p.take_interrupt(), Some(0x30));
        assert!(!p.has_interrupt());
        p.mmio_write(LAPIC + EOI, 4, 0, first);
        let second = p.next_deadline().expect("periodic");
        assert!(second > first);
        p.poll(second);
        assert_eq!(p.take_interrupt(), Some(0x30));
    }

    #[test]
    fn pit_through_pic_and_extint() {
        let mut p = platform();
        enable_lapic(&mut p);
        assert!(p.mmio_write(LAPIC + LVT_LINT0, 4, 0x700, 0));
        init_pic(&mut p);
        start_pit(&mut p);
        let t = p.next_deadline().expect("PIT armed");
        p.poll(t);
        assert!(p.has_interrupt());
        assert_eq!(p.take_interrupt(), Some(0x20));
        assert!(!p.has_interrupt());
        p.io_write(0x20, 1, 0x20, t);
        let t2 = p.next_deadline().expect("periodic");
        p.poll(t2);
        assert_eq!(p.take_interrupt(), Some(0x20));
    }

    #[test]
    fn masked_lint0_blocks_pic() {
        let mut p = platform();
        enable_lapic(&mut p);
        p.mmio_write(LAPIC + LVT_LINT0, 4, 0x1_0700, 0);
        init_pic(&mut p);
        start_pit(&mut p);
        p.poll(p.next_deadline().expect("PIT armed"));
        assert!(!p.has_interrupt());
        assert_eq!(p.take_interrupt(), None);
    }

    #[test]
    fn uart_thre_interrupt_through_pic() {
        let mut p = platform();
        init_pic(&mut p);
        p.io_write(layout::UART_BASE + 4, 1, 0x08, 0); // OUT2
        p.io_write(layout::UART_BASE + 1, 1, 0x02, 0); // ETBEI
        assert!(
            p.has_interrupt(),
            "APIC still software-disabled: PIC reaches the CPU"
        );
        assert_eq!(p.take_interrupt(), Some(0x24));
        assert_eq!(p.io_read(layout::UART_BASE + 2, 1, 0), 0x02);
        p.io_write(0x20, 1, 0x20, 0);
        assert!(!p.has_interrupt());
        // The next THR write re-raises the line: a new edge.
        p.io_write(layout::UART_BASE, 1, u32::from(b'x'), 0);
        assert_eq!(p.take_interrupt(), Some(0x24));
    }

    #[test]
    fn console_input_interrupt_through_ioapic() {
        let mut p = platform();
        enable_lapic(&mut p);
        route_pin(&mut p, u32::from(layout::UART_IRQ), 0x34, false);
        p.io_write(layout::UART_BASE + 4, 1, 0x08, 0);
        p.io_write(layout::UART_BASE + 1, 1, 0x01, 0);
        assert!(!p.has_interrupt());
        p.push_console_input(b'q');
        assert_eq!(p.take_interrupt(), Some(0x34));
    }

    #[test]
    fn power_button_sci_is_level_and_eoi_redelivers() {
        let mut p = platform();
        enable_lapic(&mut p);
        route_pin(&mut p, u32::from(layout::SCI_IRQ), 0x41, true);
        p.io_write(layout::PM1A_EVT_BLK + 2, 2, 1 << 8, 0);
        p.press_power_button();
        assert_eq!(p.take_interrupt(), Some(0x41));
        p.mmio_write(LAPIC + EOI, 4, 0, 0);
        assert_eq!(p.take_interrupt(), Some(0x41), "line still high after EOI");
        p.io_write(layout::PM1A_EVT_BLK, 2, 1 << 8, 0);
        p.mmio_write(LAPIC + EOI, 4, 0, 0);
        assert!(!p.has_interrupt());
    }

    #[test]
    fn apic_mmio_sizes() {
        let mut p = platform();
        let version = p.mmio_read(LAPIC + 0x30, 4, 0).expect("LAPIC page");
        assert_eq!(p.mmio_read(LAPIC + 0x30, 1, 0), Some(version & 0xFF));
        assert_eq!(p.mmio_read(LAPIC + 0x32, 2, 0), Some(version >> 16));
        assert_eq!(
            p.mmio_read(LAPIC + 0x30, 8, 0).map(|v| v & 0xFFFF_FFFF),
            Some(version)
        );
        // A byte write to IOREGSEL selects the I/O APIC version register.
        assert!(p.mmio_write(IOAPIC, 1, 0x01, 0));
        let ver = p.mmio_read(IOAPIC + 0x10, 4, 0).expect("IOAPIC page");
        assert_eq!((ver >> 16) & 0xFF, u64::from(layout::IOAPIC_PINS) - 1);
        assert_eq!(
            p.mmio_read(IOAPIC + 0xFFC, 8, 0).map(|v| v >> 32),
            Some(0xFFFF_FFFF)
        );
        assert_eq!(p.mmio_read(IOAPIC + 0x1000, 4, 0), None);
        assert!(!p.mmio_write(0xFEB0_0000, 4, 0, 0));
    }

    fn config_read(p: &mut Platform, slot: u8, offset: u8) -> u32 {
        p.io_write(
            0xCF8,
            4,
            0x8000_0000 | u32::from(slot) << 11 | u32::from(offset),
            0,
        );
        p.io_read(0xCFC, 4, 0)
    }

    fn config_write(p: &mut Platform, slot: u8, offset: u8, value: u32) {
        p.io_write(
            0xCF8,
            4,
            0x8000_0000 | u32::from(slot) << 11 | u32::from(offset),
            0,
        );
        p.io_write(0xCFC, 4, value, 0);
    }

    fn with_console() -> (Platform, u64) {
        let mut p = platform();
        assert_eq!(
            p.add_virtio(Device::Console(crate::virtio::console::Console)),
            Some(1)
        );
        let bar = layout::PCI_MMIO_BASE + layout::PCI_BAR_STRIDE;
        (p, bar)
    }

    #[test]
    fn bus_zero_scan_finds_the_host_bridge_and_devices() {
        let (mut p, bar) = with_console();
        assert_eq!(config_read(&mut p, 0, 0), 0x0008_1B36);
        assert_eq!(config_read(&mut p, 0, 8) >> 8, 0x06_00_00);
        assert_eq!(config_read(&mut p, 1, 0), 0x1043_1AF4);
        assert_eq!(config_read(&mut p, 1, 0x10), bar as u32);
        assert_eq!(config_read(&mut p, 2, 0), 0xFFFF_FFFF, "empty slot");
        p.io_write(0xCF8, 4, 0x8001_0800, 0);
        assert_eq!(p.io_read(0xCFC, 4, 0), 0xFFFF_FFFF, "bus 1");
        p.io_write(0xCF8, 4, 0x0000_0800, 0);
        assert_eq!(p.io_read(0xCFC, 2, 0), 0xFFFF, "enable bit clear");
        p.io_write(0xCF8, 4, 0x8000_0800, 0);
        assert_eq!(p.io_read(0xCFE, 2, 0), 0x1043, "word at byte 2");
    }

    #[test]
    fn bars_decode_only_with_memory_space_enabled() {
        let (mut p, bar) = with_console();
        assert_eq!(p.mmio_read(bar + 0x12, 2, 0), None);
        config_write(&mut p, 1, 4, u32::from(pci::COMMAND_MEMORY));
        assert_eq!(p.mmio_read(bar + 0x12, 2, 0), Some(2), "num_queues");
        assert!(p.mmio_write(bar + 0x14, 1, 1, 0));
        assert_eq!(p.mmio_read(bar + 0x14, 1, 0), Some(1));
        config_write(&mut p, 1, 0x10, 0xC100_0000);
        assert_eq!(p.mmio_read(bar + 0x12, 2, 0), None, "moved away");
        assert_eq!(p.mmio_read(0xC100_0012, 2, 0), Some(2));
    }

    #[test]
    fn virtio_console_output_and_intx_through_the_ioapic() {
        let (mut p, bar) = with_console();
        enable_lapic(&mut p);
        let gsi = u32::from(pci::slot_gsi(1));
        // Level-triggered, active low, as Linux programs a PCI GSI.
        p.mmio_write(IOAPIC, 4, u64::from(0x10 + 2 * gsi + 1), 0);
        p.mmio_write(IOAPIC + 0x10, 4, 0, 0);
        p.mmio_write(IOAPIC, 4, u64::from(0x10 + 2 * gsi), 0);
        p.mmio_write(IOAPIC + 0x10, 4, 0x51 | 1 << 13 | 1 << 15, 0);
        assert!(!p.has_interrupt(), "idle lines are high");
        config_write(&mut p, 1, 4, u32::from(pci::COMMAND_MEMORY));
        let mut d = Driver::new();
        start_transmit_queue(&mut p, bar, &[]);
        d.mem.write(0x8000, b"hvc0 says hi").unwrap();
        d.offer(0, &[(0x8000, 12, false)]);
        assert!(p.mmio_write(bar + 0x300, 2, 1, 0));
        p.service_devices(&mut d.mem);
        let out: std::vec::Vec<u8> = core::iter::from_fn(|| p.pop_console_output()).collect();
        assert_eq!(out, b"hvc0 says hi");
        assert_eq!(p.take_interrupt(), Some(0x51));
        assert_eq!(p.mmio_read(bar + 0x100, 1, 0), Some(1), "ISR");
        p.mmio_write(LAPIC + EOI, 4, 0, 0);
        assert!(!p.has_interrupt(), "the line fell with the ISR read");
    }

    /// Brings up the console on slot 1 with its transmit queue (queue 1) at DESC/AVAIL/USED, as a
    /// driver does: features, FEATURES_OK, the queue, `before_enable` right after selecting it,
    /// then DRIVER_OK.
    fn start_transmit_queue(p: &mut Platform, bar: u64, before_enable: &[(u64, u8, u64)]) {
        let setup = [(0x08, 4, 1), (0x0C, 4, 1), (0x14, 1, 0xB), (0x16, 2, 1)];
        let queue = [
            (0x18, 2, 8),
            (0x20, 8, DESC),
            (0x28, 8, AVAIL),
            (0x30, 8, USED),
            (0x1C, 2, 1),
            (0x14, 1, 0xF),
        ];
        for &(off, size, value) in setup.iter().chain(before_enable).chain(&queue) {
            assert!(p.mmio_write(bar + off, size, value, 0));
        }
    }

    /// The console on slot 1 brought up with MSI-X on: its transmit queue on vector 1, whose
    /// table entry says `address` and `data`.
    fn console_with_msix(p: &mut Platform, bar: u64, address: u64, data: u64) {
        config_write(p, 1, 4, u32::from(pci::COMMAND_MEMORY));
        let mut cap = config_read(p, 1, 0x34) as u8;
        while config_read(p, 1, cap) & 0xFF != u32::from(crate::msix::CAP_ID) {
            cap = (config_read(p, 1, cap) >> 8) as u8;
        }
        // Table entry 1, then queue 1's vector.
        start_transmit_queue(
            p,
            bar,
            &[
                (0x1010, 8, address),
                (0x1018, 4, data),
                (0x101C, 4, 0),
                (0x1A, 2, 1),
            ],
        );
        // MSI-X Enable, bit 15 of Message Control (the capability's bytes 2 and 3).
        config_write(p, 1, cap, 0x8000_0000);
    }

    /// The console sends buffer number `n` the driver `d` offers; the interrupt that reaches
    /// the CPU, if any.
    fn console_sends(p: &mut Platform, bar: u64, d: &mut Driver, n: u16) -> Option<u8> {
        d.mem.write(0x8000, b"msi").unwrap();
        d.offer(n, &[(0x8000, 3, false)]);
        assert!(p.mmio_write(bar + 0x300, 2, 1, 0));
        p.service_devices(&mut d.mem);
        let out: std::vec::Vec<u8> = core::iter::from_fn(|| p.pop_console_output()).collect();
        assert_eq!(out, b"msi");
        p.take_interrupt()
    }

    #[test]
    fn msix_reaches_the_local_apic_as_an_edge() {
        let (mut p, bar) = with_console();
        enable_lapic(&mut p);
        // The INTx route is there too (level, active low); MSI-X must not use it.
        let gsi = u32::from(pci::slot_gsi(1));
        p.mmio_write(IOAPIC, 4, u64::from(0x10 + 2 * gsi), 0);
        p.mmio_write(IOAPIC + 0x10, 4, 0x51 | 1 << 13 | 1 << 15, 0);
        console_with_msix(&mut p, bar, 0xFEE0_0000, 0x61);
        let mut d = Driver::new();
        assert_eq!(console_sends(&mut p, bar, &mut d, 0), Some(0x61));
        assert!(!p.has_interrupt(), "no INTx beside it");
        p.mmio_write(LAPIC + EOI, 4, 0, 0);
        assert!(!p.has_interrupt(), "an edge: nothing left after EOI");
        // Logical destination 1 reaches the APIC once its LDR says so (flat model).
        assert!(p.mmio_write(LAPIC + 0xD0, 4, 1 << 24, 0));
        assert!(p.mmio_write(bar + 0x1010, 4, 0xFEE0_1004, 0));
        assert_eq!(console_sends(&mut p, bar, &mut d, 1), Some(0x61));
    }

    #[test]
    fn msix_for_other_apics_or_not_interrupts_is_dropped() {
        for (address, data) in [
            (0xFEE0_3000, 0x61),
            (0xFED0_0000, 0x61),
            (0xFEE0_0000, 0x361),
            (0xFEE0_0000, 0x761),
        ] {
            let (mut p, bar) = with_console();
            enable_lapic(&mut p);
            console_with_msix(&mut p, bar, address, data);
            let mut d = Driver::new();
            let sent = console_sends(&mut p, bar, &mut d, 0);
            assert_eq!(sent, None, "{address:#x} {data:#x}");
            assert_eq!(
                p.mmio_read(bar + 0x1800, 8, 0),
                Some(0),
                "sent, not pending"
            );
        }
    }

    #[test]
    fn nics_exchange_frames_through_the_caller() {
        use crate::virtio::net::Net;
        let mut p = platform();
        assert_eq!(p.nic_count(), 0);
        p.add_virtio(Device::Console(crate::virtio::console::Console));
        p.add_virtio(Device::Net(Net::new([0, 0x16, 0x3E, 1, 2, 3])));
        assert_eq!(p.nic_count(), 1);
        let frame = [0xFFu8; 60];
        assert!(p.deliver_net_frame(0, &frame));
        assert!(!p.deliver_net_frame(1, &frame), "no second NIC");
        let mut buf = [0u8; 1600];
        assert_eq!(p.take_net_frame(&mut buf), None, "nothing sent");
    }

    #[test]
    fn the_bus_holds_sixteen_devices() {
        let mut p = platform();
        for slot in 1..=layout::PCI_SLOTS {
            assert_eq!(
                p.add_virtio(Device::Console(crate::virtio::console::Console)),
                Some(slot)
            );
        }
        assert_eq!(
            p.add_virtio(Device::Console(crate::virtio::console::Console)),
            None
        );
    }

    /// Guest memory for platforms without virtio devices: nothing reads it.
    struct NoRam;

    impl GuestMemory for NoRam {
        fn read(&self, gpa: u64, _: &mut [u8]) -> Result<(), crate::mem::OutOfRam> {
            Err(crate::mem::OutOfRam { gpa })
        }

        fn write(&mut self, gpa: u64, _: &[u8]) -> Result<(), crate::mem::OutOfRam> {
            Err(crate::mem::OutOfRam { gpa })
        }
    }

    /// Every timer and interrupt path on: PIT, RTC periodic, LAPIC periodic timer, UART THRE
    /// and the PM timer, through both the PICs and the I/O APIC.
    fn busy_platform() -> Platform {
        let mut p = platform();
        enable_lapic(&mut p);
        init_pic(&mut p);
        start_pit(&mut p);
        route_pin(&mut p, u32::from(layout::PIT_GSI), 0x30, false);
        route_pin(&mut p, 8, 0x38, false);
        route_pin(&mut p, u32::from(layout::UART_IRQ), 0x34, false);
        route_pin(&mut p, u32::from(layout::SCI_IRQ), 0x39, true);
        for (index, value) in [(0x0A, 0x26), (0x0B, 0x42)] {
            p.io_write(0x70, 1, index, 0);
            p.io_write(0x71, 1, value, 0);
        }
        p.io_write(layout::UART_BASE + 4, 1, 0x08, 0);
        p.io_write(layout::UART_BASE + 1, 1, 0x02, 0);
        p.io_write(layout::PM1A_EVT_BLK + 2, 2, 1, 0);
        for (reg, value) in [(0x3E0, 0xB), (0x320, 0x41 | 1 << 17), (0x380, 2_000_000)] {
            p.mmio_write(LAPIC + reg, 4, value, 0);
        }
        p
    }

    #[test]
    fn refresh_skips_only_polls_that_change_nothing() {
        // One platform polls before every entry, the other refreshes; the same accesses at the
        // same times must give the same reads, deadlines and interrupts.
        let (mut polled, mut refreshed) = (busy_platform(), busy_platform());
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let ports = [
            0x20, 0x21, 0xA0, 0x40, 0x61, 0x71, 0x80, 0x3FA, 0x3FD, 0xB000, 0xB008,
        ];
        let mut now = 0;
        let mut taken = 0;
        for step in 0..20_000 {
            now += random(TSC_HZ / 500);
            let action = random(10);
            let tpr = random(2) << 6;
            for p in [&mut polled, &mut refreshed] {
                match action {
                    0 => p.io_write(0x80, 1, step, now),
                    1 => p.io_write(0x70, 1, 0x0C, now),
                    2 => {
                        p.mmio_write(LAPIC + EOI, 4, 0, now);
                    }
                    3 => {
                        p.mmio_write(LAPIC + 0x80, 4, tpr, now);
                    }
                    4 => p.io_write(layout::UART_BASE, 1, u32::from(b'x'), now),
                    5 => p.io_write(0x20, 1, 0x20, now),
                    _ => {}
                }
            }
            if action >= 6 {
                let port = ports[random(ports.len() as u64) as usize];
                let a = polled.io_read(port, 1, now);
                assert_eq!(
                    refreshed.io_read(port, 1, now),
                    a,
                    "port {port:#x} at {now}"
                );
            }
            polled.service_devices(&mut NoRam);
            polled.poll(now);
            refreshed.refresh(&mut NoRam, now);
            assert_eq!(
                refreshed.next_deadline(),
                polled.next_deadline(),
                "at {now}"
            );
            assert_eq!(
                refreshed.has_interrupt(),
                polled.has_interrupt(),
                "at {now}"
            );
            if polled.has_interrupt() && random(2) == 0 {
                assert_eq!(refreshed.take_interrupt(), polled.take_interrupt());
                taken += 1;
            }
        }
        assert!(taken > 1000, "only {taken} interrupts");
    }

    /// Writes the xAPIC ICR of the selected vCPU: destination APIC ID, then the low word.
    fn send_ipi(p: &mut Platform, dest: u8, low: u32) {
        p.mmio_write(LAPIC + 0x310, 4, u64::from(dest) << 24, 0);
        p.mmio_write(LAPIC + 0x300, 4, u64::from(low), 0);
    }

    fn enable_all(p: &mut Platform) {
        for i in 0..p.vcpus() {
            p.select_vcpu(i);
            enable_lapic(p);
        }
        p.select_vcpu(0);
    }

    #[test]
    fn fixed_ipi_reaches_only_its_destination() {
        let mut p = smp_platform(3);
        enable_all(&mut p);
        send_ipi(&mut p, 2, 0x40);
        assert_eq!(p.interrupt_mask(), 0b100);
        p.select_vcpu(2);
        assert!(p.has_interrupt());
        assert_eq!(p.take_interrupt(), Some(0x40));
        p.select_vcpu(1);
        // All but self, from vCPU 1.
        send_ipi(&mut p, 0, 0x51 | 3 << 18);
        assert_eq!(p.interrupt_mask(), 0b101);
    }

    #[test]
    fn init_and_startup_ipis_wait_for_the_exit_loop() {
        let mut p = smp_platform(2);
        enable_all(&mut p);
        // INIT level assert, then STARTUP vector 0x9A, as Linux's wakeup_secondary_cpu_via_init.
        send_ipi(&mut p, 1, 5 << 8 | 1 << 14);
        send_ipi(&mut p, 1, 6 << 8 | 0x9A);
        assert_eq!(p.take_startup(), Some((1, Startup::Init)));
        assert_eq!(p.take_startup(), Some((1, Startup::Sipi(0x9A))));
        assert_eq!(p.take_startup(), None);
        // A vCPU does not start itself, and INIT de-assert does nothing.
        send_ipi(&mut p, 0, 6 << 8 | 0x9A);
        send_ipi(&mut p, 1, 5 << 8 | 1 << 15);
        assert_eq!(p.take_startup(), None);
        assert_eq!(p.interrupt_mask(), 0);
    }

    #[test]
    fn nmi_ipis_reach_other_vcpus_and_wake_them() {
        let mut p = smp_platform(2);
        enable_all(&mut p);
        send_ipi(&mut p, 1, 4 << 8);
        assert_eq!(p.wake_mask(), 0b10);
        assert_eq!(p.interrupt_mask(), 0, "an NMI is not an external interrupt");
        assert!(!p.has_nmi());
        p.select_vcpu(1);
        assert!(p.take_nmi());
        assert_eq!(p.wake_mask(), 0);
    }

    #[test]
    fn ioapic_messages_follow_their_destination_and_extint_the_bsp() {
        let mut p = smp_platform(2);
        enable_all(&mut p);
        start_pit(&mut p);
        route_pin(&mut p, layout::PIT_GSI.into(), 0x30, false);
        // Physical destination APIC ID 1.
        p.mmio_write(
            IOAPIC,
            4,
            u64::from(0x10 + 2 * u32::from(layout::PIT_GSI) + 1),
            0,
        );
        p.mmio_write(IOAPIC + 0x10, 4, 1 << 24, 0);
        p.poll(TSC_HZ);
        assert_eq!(p.interrupt_mask(), 0b10);
        p.select_vcpu(1);
        assert_eq!(p.take_interrupt(), Some(0x30));
    }

    #[test]
    fn extint_reaches_only_the_bsp() {
        let mut p = smp_platform(2);
        init_pic(&mut p);
        start_pit(&mut p);
        p.poll(TSC_HZ);
        assert_eq!(p.interrupt_mask(), 0b01);
        p.select_vcpu(1);
        assert_eq!(p.take_interrupt(), None);
    }

    #[test]
    fn apic_base_msr_moves_and_disables_window() {
        let mut p = platform();
        let base = p
            .msr_read(0x1B, 0)
            .expect("platform MSR")
            .expect("readable");
        assert_eq!(base & !0xFFF, layout::LAPIC_BASE);
        assert_eq!(p.msr_read(0x10, 0), None);
        assert_eq!(p.msr_write(0x10, 0, 0), None);
        // Globally disabling the APIC removes its MMIO page.
        assert_eq!(p.msr_write(0x1B, base & !0x800, 0), Some(Ok(())));
        assert_eq!(p.mmio_read(LAPIC + 0x30, 4, 0), None);
    }
}
