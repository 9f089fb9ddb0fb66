//! The attacker's own page tables: the first 4 GiB identity-mapped with 2 MiB pages, as the
//! loader left them, plus a 4 GiB window at `WINDOW` (PML4 slot 1) whose page directory
//! entries the attacks point anywhere, nonexistent guest-physical addresses and entries with
//! reserved bits included (Intel SDM Vol. 3A 4.5, AMD APM Vol. 2 5.3).

use crate::cpu;

/// Virtual base of the window (PML4 entry 1).
pub const WINDOW: u64 = 1 << 39;
/// Each window slot is one page directory: 1 GiB.
pub const SLOT_BYTES: u64 = 1 << 30;
const PRESENT_WRITABLE: u64 = 0b11;
const HUGE: u64 = 1 << 7;
const TWO_MIB: u64 = 1 << 21;

#[repr(C, align(4096))]
struct Table([u64; 512]);

const EMPTY: Table = Table([0; 512]);

static mut PML4: Table = EMPTY;
static mut PDPT_LOW: Table = EMPTY;
static mut PD_LOW: [Table; 4] = [EMPTY, EMPTY, EMPTY, EMPTY];
static mut PDPT_WINDOW: Table = EMPTY;
/// Page directories of window slots 0 and 1; slot 1 may hold a 4 KiB page table.
static mut PD_WINDOW: [Table; 2] = [EMPTY, EMPTY];
static mut PT_WINDOW: Table = EMPTY;

fn addr<T>(table: *const T) -> u64 {
    table as u64
}

/// Builds the tables and switches to them.
pub fn install() {
    // SAFETY: single-threaded; the tables are the guest's own statics, identity-mapped, and the
    // new tables map everything the old ones did below 4 GiB.
    unsafe {
        let pml4 = &mut *(&raw mut PML4);
        let pdpt = &mut *(&raw mut PDPT_LOW);
        let pds = &mut *(&raw mut PD_LOW);
        for (g, pd) in pds.iter_mut().enumerate() {
            for (i, e) in pd.0.iter_mut().enumerate() {
                *e = ((g as u64) << 30) | ((i as u64) * TWO_MIB) | PRESENT_WRITABLE | HUGE;
            }
            pdpt.0[g] = addr(pd) | PRESENT_WRITABLE;
        }
        pml4.0[0] = addr(pdpt) | PRESENT_WRITABLE;
        pml4.0[1] = addr(&raw const PDPT_WINDOW) | PRESENT_WRITABLE;
        cpu::set_cr3(addr(pml4));
    }
}

fn flush() {
    // SAFETY: reloading CR3 with its own value only flushes the TLB.
    unsafe { cpu::set_cr3(cpu::cr3()) };
}

/// Maps window slot 0 onto the 1 GiB of guest-physical space around `gpa` with 2 MiB pages
/// and returns the virtual address of `gpa`.
pub fn map(gpa: u64) -> u64 {
    let base = gpa & !(SLOT_BYTES - 1);
    // SAFETY: single-threaded; only the window's own tables change.
    unsafe {
        let pd = &mut (*(&raw mut PD_WINDOW))[0];
        for (i, e) in pd.0.iter_mut().enumerate() {
            *e = (base + i as u64 * TWO_MIB) | PRESENT_WRITABLE | HUGE;
        }
        (*(&raw mut PDPT_WINDOW)).0[0] = addr(pd) | PRESENT_WRITABLE;
    }
    flush();
    WINDOW + (gpa - base)
}

/// Makes window slot 1 a page directory whose entry 0 is a 4 KiB page table with `ptes`
/// (raw entries) and whose entry 1 is `pde` (a raw 2 MiB entry). Returns the slot's address:
/// page i of the table is at `+ i * 4096`, the 2 MiB entry at `+ 2 MiB`.
pub fn map_raw(ptes: &[u64], pde: u64) -> u64 {
    // SAFETY: single-threaded; only the window's own tables change.
    unsafe {
        let pt = &mut *(&raw mut PT_WINDOW);
        pt.0.fill(0);
        for (e, &v) in pt.0.iter_mut().zip(ptes) {
            *e = v;
        }
        let pd = &mut (*(&raw mut PD_WINDOW))[1];
        pd.0.fill(0);
        pd.0[0] = addr(pt) | PRESENT_WRITABLE;
        pd.0[1] = pde;
        (*(&raw mut PDPT_WINDOW)).0[1] = addr(pd) | PRESENT_WRITABLE;
    }
    flush();
    WINDOW + SLOT_BYTES
}

/// Points window slot `slot` (2..512) at a page directory at guest-physical `table`, which
/// need not be RAM. Returns the slot's address.
pub fn map_directory_at(slot: u64, table: u64) -> u64 {
    // SAFETY: single-threaded; only the window's own PDPT changes.
    unsafe { (*(&raw mut PDPT_WINDOW)).0[slot as usize] = table | PRESENT_WRITABLE };
    flush();
    WINDOW + slot * SLOT_BYTES
}

/// A 4 KiB page-table entry mapping `gpa`, present and writable.
pub fn pte(gpa: u64) -> u64 {
    gpa | PRESENT_WRITABLE
}

/// A 2 MiB page-directory entry mapping `gpa`, present and writable.
pub fn huge_pde(gpa: u64) -> u64 {
    gpa | PRESENT_WRITABLE | HUGE
}
