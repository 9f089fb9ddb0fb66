//! Fuzzes the MMIO path of the instruction emulator: `fetch`, `instruction_length` and
//! `emulate_mmio` over fuzzed registers, segment bases, control state, guest memory (with page
//! tables for real mode, flat 32-bit, 32-bit PSE, PAE, 4- and 5-level paging, or entirely
//! fuzzed) and a mock device bus.
//!
//! Invariants: no panic; `instruction_length` agrees with the decoded length; a successful
//! emulation advances RIP by exactly that length, makes at most one device read and one device
//! write, each of 1, 2, 4 or 8 bytes wholly inside the faulting page, and at most one RAM write
//! of at most 8 bytes; a failed one changes no register, touches no device and writes no RAM.
#![no_main]

use hv_core::emulate::{
    bitness, emulate_mmio, fetch, instruction_length, translate, Access, MmioBus, Segments,
};
use hv_core::memory::{GuestMemory, GuestRam, OutOfRam};
use hv_fuzz::Input;
use iced_x86::{Instruction, OpKind, Register};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use vcpu::{ControlState, Regs};

const RAM_LEN: usize = 256 << 10;
const PAGE: u64 = 0x1000;
/// Where the code goes in the modes whose page tables the target builds (two pages, so an
/// instruction may straddle them).
const CODE_GPA: u64 = 0x10000;
/// Page-table frames, below the code.
const TABLES: u64 = 0x1000;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

thread_local! {
    static RAM: RefCell<Vec<u8>> = RefCell::new(vec![0; RAM_LEN]);
}

/// Guest RAM that counts writes, to check that a failed emulation wrote nothing.
struct Recorder<'a> {
    ram: GuestRam<'a>,
    writes: Vec<(u64, usize)>,
}

impl GuestMemory for Recorder<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        self.ram.read(gpa, buf)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam> {
        self.writes.push((gpa, data.len()));
        self.ram.write(gpa, data)
    }
}

/// Records device accesses; reads return a fuzzed value.
struct Bus {
    value: u64,
    log: Vec<(u64, u8)>,
}

impl MmioBus for Bus {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        self.log.push((gpa, size));
        self.value
    }

    fn write(&mut self, gpa: u64, size: u8, _value: u64) {
        self.log.push((gpa, size));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8() % 8;
    let flags = input.u8();
    let aim = input.u8();
    let _reserved = input.u8();
    let mut regs = Regs {
        rip: input.u64(),
        rflags: input.u64() | 2,
        ..Default::default()
    };
    for r in &mut regs.gpr {
        *r = input.u64();
    }
    let bus_value = input.u64();
    let raw_gpa = input.u64();
    let segs = Segments {
        es_base: input.u64(),
        ss_base: input.u64(),
        ds_base: input.u64(),
        fs_base: input.u64(),
        gs_base: input.u64(),
    };
    let raw_ctrl = ControlState {
        cr0: input.u64(),
        cr3: input.u64(),
        cr4: input.u64(),
        efer: input.u64(),
        cs_base: input.u64(),
        cs_long: input.bool(),
        cs_db: input.bool(),
        cpl: input.u8() & 3,
    };
    let code = input.bytes(15);
    let tail = input.rest();

    RAM.with_borrow_mut(|ram| {
        ram.fill(0);
        let ctrl = if mode == 7 {
            let n = tail.len().min(RAM_LEN);
            ram[..n].copy_from_slice(&tail[..n]);
            raw_ctrl
        } else {
            regs.rip = CODE_GPA + (regs.rip & (PAGE - 1));
            let ctrl = build_mode(ram, mode, flags);
            let at = CODE_GPA as usize + (regs.rip & (PAGE - 1)) as usize;
            ram[at..at + code.len()].copy_from_slice(code);
            ctrl
        };
        let mut mem = Recorder {
            ram: GuestRam::new(ram),
            writes: Vec::new(),
        };
        let gpa = match aim % 4 {
            0 => raw_gpa,
            n => operand_gpa(&regs, &ctrl, &segs, &mem, n - 1).unwrap_or(raw_gpa) ^ (raw_gpa & 7),
        };
        run(regs, &ctrl, &segs, &mut mem, bus_value, gpa);
    });
});

/// Page tables (or none) for `mode`, identity-mapping the low 4 GiB with leaf rights from
/// `flags`; returns the control state that selects them.
fn build_mode(ram: &mut [u8], mode: u8, flags: u8) -> ControlState {
    let mut rights = P;
    rights |= if flags & 2 == 0 { RW } else { 0 };
    rights |= if flags & 4 == 0 { US } else { 0 };
    let nx = if flags & 8 != 0 { NX } else { 0 };
    let cpl = if flags & 1 != 0 { 3 } else { 0 };
    let paged = ControlState {
        cr0: CR0_PE | CR0_PG | if flags & 16 != 0 { 1 << 16 } else { 0 },
        cr3: TABLES,
        cs_db: true,
        cpl,
        ..Default::default()
    };
    let put = |ram: &mut [u8], at: u64, v: u64| {
        ram[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    };
    match mode {
        // Real mode, then flat 16-bit and 32-bit protected mode without paging.
        0 => ControlState::default(),
        1 => ControlState {
            cr0: CR0_PE,
            cpl,
            ..Default::default()
        },
        2 => ControlState {
            cr0: CR0_PE,
            cs_db: true,
            cpl,
            ..Default::default()
        },
        // 32-bit paging with 4 MiB pages: one page directory.
        3 => {
            for i in 0..1024u64 {
                let e = ((i << 22) | rights | PS) as u32;
                let at = (TABLES + 4 * i) as usize;
                ram[at..at + 4].copy_from_slice(&e.to_le_bytes());
            }
            ControlState {
                cr4: CR4_PSE,
                ..paged
            }
        }
        // PAE: four PDPTEs, four directories of 2 MiB pages.
        4 => {
            for d in 0..4u64 {
                let pd = TABLES + PAGE * (1 + d);
                put(ram, TABLES + 8 * d, pd | P);
                for i in 0..512u64 {
                    put(ram, pd + 8 * i, (d << 30) | (i << 21) | rights | PS | nx);
                }
            }
            ControlState {
                cr4: CR4_PAE,
                efer: EFER_NXE,
                ..paged
            }
        }
        // 4- and 5-level paging: 1 GiB pages over 0..4 GiB, mapped low and in the top half.
        _ => {
            let (pml4, pdpt, pml5) = (TABLES, TABLES + PAGE, TABLES + 2 * PAGE);
            for slot in [0, 511] {
                put(ram, pml4 + 8 * slot, pdpt | P | RW | US);
                put(ram, pml5 + 8 * slot, pml4 | P | RW | US);
            }
            for i in 0..4u64 {
                put(ram, pdpt + 8 * i, (i << 30) | rights | PS | nx);
            }
            let five = mode == 6;
            ControlState {
                cr3: if five { pml5 } else { pml4 },
                cr4: CR4_PAE | if five { CR4_LA57 } else { 0 },
                efer: EFER_LME | EFER_LMA | EFER_NXE,
                cs_long: flags & 32 == 0,
                ..paged
            }
        }
    }
}

/// The guest-physical address of memory operand `nth` (0 or 1) of the instruction at CS:RIP,
/// so that most runs fault on the page the instruction really touches.
fn operand_gpa(
    regs: &Regs,
    ctrl: &ControlState,
    segs: &Segments,
    mem: &Recorder<'_>,
    nth: u8,
) -> Option<u64> {
    let instr = fetch(regs, ctrl, mem).ok()?;
    let op = (0..instr.op_count())
        .filter(|&i| is_memory(instr.op_kind(i)))
        .nth(usize::from(nth % 2))?;
    let flat = bitness(ctrl) == 64;
    let la = virtual_address(&instr, op, regs, segs, ctrl, flat)?;
    let la = if flat { la } else { la & 0xffff_ffff };
    translate(ctrl, mem, la, Access::read(ctrl.cpl)).ok()
}

fn is_memory(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Memory
            | OpKind::MemorySegSI
            | OpKind::MemorySegESI
            | OpKind::MemorySegRSI
            | OpKind::MemoryESDI
            | OpKind::MemoryESEDI
            | OpKind::MemoryESRDI
    )
}

fn virtual_address(
    instr: &Instruction,
    op: u32,
    regs: &Regs,
    segs: &Segments,
    ctrl: &ControlState,
    flat: bool,
) -> Option<u64> {
    instr.virtual_address(op, 0, |r, _, _| {
        Some(match r {
            Register::FS => segs.fs_base,
            Register::GS => segs.gs_base,
            Register::ES | Register::CS | Register::SS | Register::DS if flat => 0,
            Register::ES => segs.es_base,
            Register::CS => ctrl.cs_base,
            Register::SS => segs.ss_base,
            Register::DS => segs.ds_base,
            r => gpr(regs, r)?,
        })
    })
}

/// A general-purpose register's value at the width the decoder names it.
fn gpr(regs: &Regs, r: Register) -> Option<u64> {
    let n = r as u32;
    let block = |first: Register, mask: u64| {
        let i = n.checked_sub(first as u32).filter(|&i| i < 16)?;
        Some(regs.gpr[i as usize] & mask)
    };
    block(Register::RAX, u64::MAX)
        .or_else(|| block(Register::EAX, 0xffff_ffff))
        .or_else(|| block(Register::AX, 0xffff))
}

fn run(
    before: Regs,
    ctrl: &ControlState,
    segs: &Segments,
    mem: &mut Recorder<'_>,
    bus_value: u64,
    gpa: u64,
) {
    let fetched = fetch(&before, ctrl, mem);
    let length = instruction_length(&before, ctrl, mem);
    match &fetched {
        Ok(instr) => {
            assert!((1..=15).contains(&instr.len()));
            assert_eq!(
                length,
                Ok(instr.len() as u8),
                "length disagrees with the decoder"
            );
        }
        Err(e) => assert_eq!(length, Err(*e), "length without a decodable instruction"),
    }
    let mut regs = before;
    let mut bus = Bus {
        value: bus_value,
        log: Vec::new(),
    };
    match emulate_mmio(&mut regs, ctrl, segs, mem, &mut bus, gpa) {
        Ok(()) => {
            let len = fetched.expect("emulated without a fetch").len() as u64;
            let mask = match bitness(ctrl) {
                64 => u64::MAX,
                32 => 0xffff_ffff,
                _ => 0xffff,
            };
            assert_eq!(regs.rip, before.rip.wrapping_add(len) & mask, "RIP");
            assert!(!bus.log.is_empty() && bus.log.len() <= 2, "{:x?}", bus.log);
            for &(at, size) in &bus.log {
                assert!(matches!(size, 1 | 2 | 4 | 8), "size {size}");
                assert_eq!(at & !(PAGE - 1), gpa & !(PAGE - 1), "{at:#x} off the page");
                assert!(
                    (at & (PAGE - 1)) + u64::from(size) <= PAGE,
                    "{at:#x}/{size}"
                );
            }
            assert!(mem.writes.len() <= 1 && mem.writes.iter().all(|w| w.1 <= 8));
        }
        Err(e) => {
            let _ = e.to_string();
            assert_eq!(
                regs, before,
                "registers changed by a failed emulation ({e:?})"
            );
            assert!(
                bus.log.is_empty(),
                "device touched by a failed emulation ({e:?})"
            );
            assert!(
                mem.writes.is_empty(),
                "RAM written by a failed emulation ({e:?})"
            );
        }
    }
}
