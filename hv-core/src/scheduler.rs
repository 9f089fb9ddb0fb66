//! The scheduler of this first version: the domains take turns on this one CPU in slices of at
//! most 10 ms, ended by the host LAPIC timer; a halted domain is skipped until an interrupt is due
//! for it, and when every domain is halted the CPU sleeps until the earliest device deadline.
//! The consoles of all domains are relayed to the monitor's serial line, and its input goes to
//! the first domain.

use alloc::vec::Vec;

use crate::bare::cpu::{self, rdtsc};
use crate::bare::serial::CONSOLE;
use crate::bare::timer::HostTimer;
use crate::launch::Vm;
use hv_core::domain::Next;
use vcpu::Vcpu;

const SLICES_PER_SECOND: u64 = 100;

struct Slot {
    vm: Vm,
    halted: bool,
}

pub fn run(domains: Vec<Vm>, timer: &HostTimer) -> ! {
    let mut slots: Vec<Slot> = domains
        .into_iter()
        .map(|vm| Slot { vm, halted: false })
        .collect();
    let mut input = InputQueue::new();
    let slice = timer.tsc_hz / SLICES_PER_SECOND;
    loop {
        if slots.is_empty() {
            log::info!("no domains left, halting");
            cpu::halt_forever();
        }
        forward_input(&mut slots, &mut input);
        let mut ran = false;
        let mut i = 0;
        while i < slots.len() {
            let s = &mut slots[i];
            if s.halted && !s.vm.has_work(rdtsc()) {
                i += 1;
                continue;
            }
            s.halted = false;
            ran = true;
            match run_slice(&mut s.vm, timer, rdtsc() + slice) {
                Some(Next::Halt) => s.halted = true,
                Some(Next::Stop(reason)) => {
                    relay_console(&mut s.vm);
                    log::info!("domain {} (id {}): {reason}", s.vm.name, s.vm.id);
                    slots.remove(i);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        if !ran {
            sleep(&slots, timer, slice);
        }
    }
}

/// Runs `vm` until its slice ends, it halts or it stops.
fn run_slice(vm: &mut Vm, timer: &HostTimer, slice_end: u64) -> Option<Next> {
    loop {
        let now = rdtsc();
        vm.prepare_entry(now);
        let deadline = vm
            .platform
            .next_deadline()
            .map_or(slice_end, |d| d.min(slice_end));
        timer.arm(deadline);
        let exit = vm.vcpu.run();
        let now = rdtsc();
        let next = vm.handle(exit, now);
        relay_console(vm);
        match next {
            Next::Resume => {}
            Next::HostInterrupt => {
                cpu::interrupt_window();
                if now >= slice_end {
                    return None;
                }
            }
            other => return Some(other),
        }
    }
}

/// Sleeps until the earliest device deadline of any domain (at most one slice, so that console
/// input is polled).
fn sleep(slots: &[Slot], timer: &HostTimer, slice: u64) {
    let now = rdtsc();
    let wake = slots
        .iter()
        .filter_map(|s| s.vm.platform.next_deadline())
        .min()
        .map_or(now + slice, |d| d.min(now + slice));
    if wake > now {
        timer.arm(wake);
        cpu::wait_for_interrupt();
    }
}

fn relay_console(vm: &mut Vm) {
    if let Some(first) = vm.platform.pop_console_output() {
        let c = CONSOLE.lock();
        c.write_byte(first);
        while let Some(b) = vm.platform.pop_console_output() {
            c.write_byte(b);
        }
    }
}

/// Console input read from the serial line and not yet taken by the guest's UART, whose
/// receive FIFO holds only 16 bytes.
struct InputQueue {
    buf: [u8; 1024],
    head: usize,
    len: usize,
}

impl InputQueue {
    fn new() -> Self {
        Self {
            buf: [0; 1024],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.len < self.buf.len() {
            self.buf[(self.head + self.len) % self.buf.len()] = byte;
            self.len += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        (self.len > 0).then(|| self.buf[self.head])
    }

    fn pop(&mut self) {
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
    }
}

fn forward_input(slots: &mut [Slot], input: &mut InputQueue) {
    while let Some(b) = CONSOLE.lock().read_byte() {
        input.push(b);
    }
    if let Some(first) = slots.first_mut() {
        while let Some(b) = input.peek() {
            if !first.vm.platform.push_console_input(b) {
                break;
            }
            input.pop();
            first.halted = false;
        }
    }
}
