//! Fuzzes the guest-physical page tables (`ept::GuestPageTable`) in both formats with
//! sequences of map, unmap and protect over a fake `TableMemory` with a frame budget, checking
//! every result against a model of the address space (sorted ranges).
//!
//! Invariants: no panic; `translate` agrees with the model (host address, rights, memory type
//! as the format can express it) at the edges of every operation, at the edges of every mapped
//! range and at fuzzed probes; a large page never spans addresses the model maps differently;
//! a refused operation changes nothing, except running out of frames, after which each page has
//! its old or its new mapping; no table frame is used after being freed, freed twice, or
//! leaked once the tables are freed.
#![no_main]

use ept::{
    Config, Error, Format, GuestPageTable, MemType, PageSize, Perms, TableMemory, GPA_LIMIT,
};
use hv_fuzz::Input;
use libfuzzer_sys::fuzz_target;

const PAGE: u64 = 0x1000;
const GIB: u64 = 1 << 30;
const MIB2: u64 = 1 << 21;
const FRAME_BASE: u64 = 0x4000_0000;
const MEM_TYPES: &[MemType] = &[
    MemType::Uncacheable,
    MemType::WriteCombining,
    MemType::WriteThrough,
    MemType::WriteProtected,
    MemType::WriteBack,
];

/// Table frames with a budget; fresh frames hold garbage and freed ones poison.
struct Frames {
    frames: Vec<Box<[u64; 512]>>,
    free: Vec<bool>,
    free_list: Vec<usize>,
    live: usize,
    budget: usize,
}

impl Frames {
    fn slot(&self, pa: u64) -> usize {
        assert!(
            pa >= FRAME_BASE && pa.is_multiple_of(PAGE),
            "bad frame {pa:#x}"
        );
        let i = ((pa - FRAME_BASE) / PAGE) as usize;
        assert!(i < self.frames.len(), "frame {pa:#x} never allocated");
        assert!(!self.free[i], "use of freed frame {pa:#x}");
        i
    }
}

impl TableMemory for Frames {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.live >= self.budget {
            return None;
        }
        self.live += 1;
        let i = self.free_list.pop().unwrap_or_else(|| {
            self.frames.push(Box::new([0xa5a5_a5a5_a5a5_a5a5; 512]));
            self.free.push(false);
            self.frames.len() - 1
        });
        self.free[i] = false;
        Some(FRAME_BASE + i as u64 * PAGE)
    }

    fn free_table(&mut self, pa: u64) {
        let i = self.slot(pa);
        *self.frames[i] = [0xdead_dead_dead_dead; 512];
        self.free[i] = true;
        self.free_list.push(i);
        self.live -= 1;
    }

    fn table(&self, pa: u64) -> &[u64; 512] {
        &self.frames[self.slot(pa)]
    }

    fn table_mut(&mut self, pa: u64) -> &mut [u64; 512] {
        let i = self.slot(pa);
        &mut self.frames[i]
    }
}

/// One mapped range of the model: `[start, end)` to `hpa..`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Range {
    start: u64,
    end: u64,
    hpa: u64,
    perms: Perms,
    mt: MemType,
}

/// The address space as sorted, disjoint ranges, adjacent equal ones merged. Host addresses
/// wrap: the model of an operation is built before the table refuses an overflowing one.
#[derive(Clone, Default)]
struct Model(Vec<Range>);

impl Model {
    fn lookup(&self, gpa: u64) -> Option<Range> {
        self.0
            .iter()
            .copied()
            .find(|r| r.start <= gpa && gpa < r.end)
    }

    /// Cuts ranges at `at` so no range straddles it.
    fn split(&mut self, at: u64) {
        if let Some(i) = self.0.iter().position(|r| r.start < at && at < r.end) {
            let r = self.0[i];
            self.0[i].end = at;
            let tail = Range {
                start: at,
                hpa: r.hpa.wrapping_add(at - r.start),
                ..r
            };
            self.0.insert(i + 1, tail);
        }
    }

    fn edit(&mut self, start: u64, end: u64, f: impl Fn(&mut Vec<Range>, Range)) {
        self.split(start);
        self.split(end);
        let (inside, outside): (Vec<Range>, Vec<Range>) = self
            .0
            .drain(..)
            .partition(|r| r.start >= start && r.end <= end);
        self.0 = outside;
        for r in inside {
            f(&mut self.0, r);
        }
        self.0.sort_by_key(|r| r.start);
        self.merge();
    }

    fn merge(&mut self) {
        let mut out: Vec<Range> = Vec::with_capacity(self.0.len());
        for r in self.0.drain(..) {
            match out.last_mut() {
                Some(l)
                    if l.end == r.start
                        && l.hpa.wrapping_add(l.end - l.start) == r.hpa
                        && (l.perms, l.mt) == (r.perms, r.mt) =>
                {
                    l.end = r.end
                }
                _ => out.push(r),
            }
        }
        self.0 = out;
    }

    fn map(&mut self, r: Range) {
        self.edit(r.start, r.end, |_, _| {});
        self.0.push(r);
        self.0.sort_by_key(|r| r.start);
        self.merge();
    }

    fn unmap(&mut self, start: u64, end: u64) {
        self.edit(start, end, |_, _| {});
    }

    fn protect(&mut self, start: u64, end: u64, perms: Perms) {
        self.edit(start, end, |v, r| v.push(Range { perms, ..r }));
    }
}

/// The memory type a leaf of `format` reports for a mapping asked with `mt`.
fn reported(format: Format, mt: MemType) -> MemType {
    match (format, mt) {
        (Format::Ept, mt) | (Format::Npt, mt @ (MemType::Uncacheable | MemType::WriteThrough)) => {
            mt
        }
        (Format::Npt, _) => MemType::WriteBack,
    }
}

/// `translate` at `gpa` agrees with one of `models`.
fn check(pt: &GuestPageTable, mem: &Frames, models: &[&Model], gpa: u64) {
    let got = pt.translate(mem, gpa);
    let ok = models.iter().any(|m| match (m.lookup(gpa), got) {
        (None, None) => true,
        (Some(r), Some(t)) => {
            let base = gpa & !(t.page_size.bytes() - 1);
            let page_uniform = m
                .lookup(base)
                .is_some_and(|p| p == r && base + t.page_size.bytes() <= r.end);
            t.hpa == r.hpa.wrapping_add(gpa - r.start)
                && t.perms == r.perms
                && t.mem_type == reported(pt.format(), r.mt)
                && page_uniform
        }
        _ => false,
    });
    assert!(
        ok,
        "translate({gpa:#x}) = {got:x?}, model {:x?}",
        models[0].lookup(gpa)
    );
}

/// A range start: mostly a mix of 1 GiB, 2 MiB and 4 KiB steps, sometimes anything.
fn address(input: &mut Input<'_>) -> u64 {
    let sel = input.u8();
    match sel % 16 {
        0 => input.u64(),
        1 => GPA_LIMIT - (u64::from(input.u8()) + 1) * MIB2,
        _ => {
            (u64::from(sel >> 4) % 4) * GIB
                + u64::from(input.u8() % 8) * MIB2
                + u64::from(input.u8() % 8) * PAGE
        }
    }
}

fn length(input: &mut Input<'_>) -> u64 {
    let sel = input.u8();
    match sel % 16 {
        0 => input.u64(),
        _ => {
            u64::from(sel >> 4 == 15) * GIB
                + u64::from(input.u8() % 4) * MIB2
                + u64::from(input.u8() % 8) * PAGE
        }
    }
}

fn perms(input: &mut Input<'_>) -> Perms {
    let b = input.u8();
    Perms::new(b & 1 != 0, b & 2 != 0, b & 4 != 0)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let format = if input.bool() {
        Format::Ept
    } else {
        Format::Npt
    };
    let config = Config {
        max_page_size: input.pick(&[PageSize::Size4KiB, PageSize::Size2MiB, PageSize::Size1GiB]),
        host_phys_bits: input.pick(&[52, 52, 46, 39, 36, 64]),
    };
    let mut mem = Frames {
        frames: Vec::new(),
        free: Vec::new(),
        free_list: Vec::new(),
        live: 0,
        budget: 1 + usize::from(input.u8() % 96),
    };
    let Ok(mut pt) = GuestPageTable::with_config(format, config, &mut mem) else {
        return;
    };
    let mut model = Model::default();
    while !input.is_empty() {
        let op = input.u8() % 4;
        let (gpa, len) = (address(&mut input), length(&mut input));
        let end = gpa.wrapping_add(len);
        // The model as it will be if the operation succeeds.
        let mut after = model.clone();
        let result = match op {
            0 | 1 => {
                let (hpa, perms, mt) = (
                    address(&mut input),
                    perms(&mut input),
                    input.pick(MEM_TYPES),
                );
                if len > 0 && end > gpa {
                    after.map(Range {
                        start: gpa,
                        end,
                        hpa,
                        perms,
                        mt,
                    });
                }
                pt.map(&mut mem, gpa, hpa, len, perms, mt)
            }
            2 => {
                after.unmap(gpa, end);
                pt.unmap(&mut mem, gpa, len)
            }
            _ => {
                let perms = perms(&mut input);
                after.protect(gpa, end, perms);
                pt.protect(&mut mem, gpa, len, perms)
            }
        };
        let mut probes = vec![gpa, end, end.wrapping_sub(PAGE), gpa.wrapping_sub(PAGE)];
        probes.push(address(&mut input).wrapping_add(u64::from(input.u16())));
        match result {
            Ok(()) => model = after,
            Err(Error::OutOfTableMemory) => {
                // Each page keeps its old or its new mapping; the model cannot tell which, so
                // the sequence ends here.
                for p in probes {
                    check(&pt, &mem, &[&model, &after], p);
                }
                return finish(pt, mem);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        for r in &model.0 {
            probes.extend([r.start, r.end - PAGE, r.end, r.start.wrapping_sub(1)]);
        }
        for p in probes {
            check(&pt, &mem, &[&model], p);
        }
    }
    finish(pt, mem);
});

fn finish(pt: GuestPageTable, mut mem: Frames) {
    pt.free(&mut mem);
    assert_eq!(mem.live, 0, "table frames leaked");
}
