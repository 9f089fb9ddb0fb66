//! Port I/O attacks: every port read with every width and written, string I/O, and malformed
//! PCI configuration accesses.

use rt::guarded;
use rt::insn::{self, Completion, Width};

use crate::pci::{self, Function};
use crate::report::{check, note};
use crate::rng::Rng;

/// Ports not written by the sweep, because a write there may end the VM on purpose: the ACPI
/// PM1a control block (sleep, 0xB004..=0xB005), the reset control register (0xCF9) and the
/// keyboard controller's command port (0x64, whose 0xFE pulses reset). The reset and power-off
/// paths have their own attacks (`reset-cf9`, `reset-kbc`; every attack ends in a power-off).
const NOT_WRITTEN: [u16; 4] = [0x64, 0xB004, 0xB005, 0xCF9];

/// Every port: IN of each width must complete (unclaimed ports read all ones), OUT of a byte
/// of 0 must complete.
pub fn port_sweep(_: u64) {
    let mut ones = 0u32;
    for port in 0..=u16::MAX {
        for width in [Width::Byte, Width::Word, Width::Dword] {
            // SAFETY: reading a port changes no memory of the guest.
            let got = unsafe { insn::port_in(port, width) };
            check!(
                got.is_ok(),
                "in {port:#x} ({} bytes) {}",
                width.bytes(),
                insn::Outcome(got)
            );
            ones += u32::from(got == Ok(width.ones()));
        }
    }
    for port in 0..=u16::MAX {
        if NOT_WRITTEN.contains(&port) {
            continue;
        }
        // SAFETY: a port write changes a device, not the guest's memory.
        let done = unsafe { guarded!("out dx, al", in("dx") port, in("al") 0u8) };
        check!(done.is_ok(), "out {port:#x} {}", Completion(done));
    }
    note(format_args!(
        "65536 ports read and written, {ones} reads of all ones"
    ));
}

/// OUTS to the POST port: a string instruction the monitor must emulate or refuse.
pub fn string_io(_: u64) {
    let bytes = *b"string";
    // SAFETY: OUTSB reads the guest's own buffer and writes the POST port.
    let done = unsafe {
        guarded!("rep outsb", in("dx") 0x80u16, inout("rsi") bytes.as_ptr() => _, inout("rcx") bytes.len() => _)
    };
    check!(done.is_ok(), "rep outsb {}", Completion(done));
}

/// Every register of every function on buses 0, 1 and 255 read; on bus 0 each written with
/// all ones and random values, then its old value; odd-sized and misaligned accesses to the
/// data port; CONFIG_ADDRESS with reserved bits; the virtio console's BAR moved over the local
/// APIC and over RAM. The devices must still answer afterwards.
pub fn pci_config(_: u64) {
    let mut rng = Rng::new(0x5043_4900);
    let lapic_version = || {
        // SAFETY: the LAPIC version register reads without side effects.
        unsafe { insn::read(0xFEE0_0030, Width::Dword) }
    };
    let version = lapic_version();
    let console = pci::virtio_console();
    check!(console.is_some(), "no virtio console on bus 0");
    for bus in [0u8, 1, 255] {
        for device in 0..32 {
            for function in 0..8 {
                let f = Function {
                    bus,
                    device,
                    function,
                };
                for offset in (0..=252u8).step_by(4) {
                    let old = f.read(offset);
                    if bus == 0 && offset >= 4 {
                        f.write(offset, u32::MAX);
                        f.write(offset, rng.next() as u32);
                        f.write(offset, old);
                    }
                }
            }
        }
    }
    // SAFETY: the configuration ports change devices only; 0xCF9 is written with 0 by the
    // 2-byte access at 0xCF8, which resets nothing (the reset needs bit 2).
    unsafe {
        for (port, width) in [
            (0xCFDu16, 1),
            (0xCFE, 2),
            (0xCFF, 1),
            (0xCFD, 2),
            (0xCF8, 2),
            (0xCFB, 1),
        ] {
            let r = match width {
                1 => insn::port_in(port, Width::Byte),
                _ => insn::port_in(port, Width::Word),
            };
            check!(r.is_ok(), "in {port:#x}");
            let w = match width {
                1 => guarded!("out dx, al", in("dx") port, in("al") 0u8),
                _ => guarded!("out dx, ax", in("dx") port, in("ax") 0u16),
            };
            check!(w.is_ok(), "out {port:#x}");
        }
        for address in [0x7F00_0000u32, 0x8000_0003, 0xFFFF_FFFF, 0x8000_F8FF] {
            rt::port::outl(0xCF8, address);
            let _ = rt::port::inl(0xCFC);
            rt::port::outl(0xCFC, u32::MAX);
        }
    }
    if let Some(f) = console {
        let (bar, command) = (f.read(0x10), f.read(4));
        for place in [0xFEE0_0000u32, 0xFEC0_0000, 0, 0x10_0000, 0xFFFF_F000] {
            f.write(0x10, place);
            f.write(4, command | pci::COMMAND_MEMORY);
            check!(
                lapic_version() == version,
                "the LAPIC changed with a BAR at {place:#x}"
            );
            // SAFETY: RAM at 1 MiB is the guest's own image: a read changes nothing.
            let ram = unsafe { insn::read(0x10_0000, Width::Dword) };
            check!(ram.is_ok(), "RAM unreadable with a BAR at {place:#x}");
        }
        f.write(0x10, bar);
        f.write(4, command);
        check!(
            pci::virtio_console().is_some(),
            "the virtio console is gone"
        );
    }
    note(format_args!("PCI configuration survived"));
}
