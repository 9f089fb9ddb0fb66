//! Host-side `TableMemory` for the tests: boxed frames at made-up physical addresses, a frame
//! budget, garbage in fresh frames and poison in freed ones so misuse shows up.

extern crate std;
use crate::TableMemory;
use std::boxed::Box;
use std::vec::Vec;

const BASE: u64 = 0x10_0000;
const GARBAGE: u64 = 0xa5a5_a5a5_a5a5_a5a5;
const POISON: u64 = 0xdead_dead_dead_dead;

pub struct TestMemory {
    frames: Vec<Box<[u64; 512]>>,
    free: Vec<u64>,
    budget: usize,
}

impl TestMemory {
    /// Memory that hands out at most `budget` frames at once.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            frames: Vec::new(),
            free: Vec::new(),
            budget,
        }
    }

    pub fn new() -> Self {
        Self::with_budget(usize::MAX)
    }

    /// Frames handed out and not freed.
    pub fn live(&self) -> usize {
        self.frames.len() - self.free.len()
    }

    fn slot(pa: u64) -> usize {
        assert!(pa >= BASE && pa & 0xfff == 0, "bad table address {pa:#x}");
        ((pa - BASE) / 0x1000) as usize
    }
}

impl TableMemory for TestMemory {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.live() >= self.budget {
            return None;
        }
        if let Some(pa) = self.free.pop() {
            return Some(pa);
        }
        self.frames.push(Box::new([GARBAGE; 512]));
        Some(BASE + (self.frames.len() as u64 - 1) * 0x1000)
    }

    fn free_table(&mut self, pa: u64) {
        assert!(!self.free.contains(&pa), "double free of {pa:#x}");
        *self.frames[Self::slot(pa)] = [POISON; 512];
        self.free.push(pa);
    }

    fn table(&self, pa: u64) -> &[u64; 512] {
        let t = &self.frames[Self::slot(pa)];
        assert!(!self.free.contains(&pa), "use of freed table {pa:#x}");
        t
    }

    fn table_mut(&mut self, pa: u64) -> &mut [u64; 512] {
        assert!(!self.free.contains(&pa), "use of freed table {pa:#x}");
        &mut self.frames[Self::slot(pa)]
    }
}
