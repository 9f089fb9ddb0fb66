//! The monitor's heap (a linked-list allocator over one block from the frame allocator) and the
//! table memory the nested page tables are built in.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Gives the heap `size` bytes at physical (= virtual) address `base`.
///
/// # Safety
/// The block must be unused RAM, identity-mapped, and never handed out by anything else.
pub unsafe fn init(base: u64, size: u64) {
    // SAFETY: per the caller.
    unsafe { HEAP.lock().init(base as *mut u8, size as usize) };
}

pub fn used() -> usize {
    HEAP.lock().used()
}

const PAGE: Layout = match Layout::from_size_align(4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!("4 KiB page layout"),
};

/// Page-table frames from the heap: identity mapping makes their addresses physical.
pub struct HeapTables;

impl ept::TableMemory for HeapTables {
    fn alloc_table(&mut self) -> Option<u64> {
        // SAFETY: PAGE has a non-zero size.
        let p = unsafe { alloc_zeroed(PAGE) };
        (!p.is_null()).then_some(p as u64)
    }

    fn free_table(&mut self, pa: u64) {
        // SAFETY: `pa` came from `alloc_table` with the same layout.
        unsafe { dealloc(pa as *mut u8, PAGE) };
    }

    fn table(&self, pa: u64) -> &[u64; 512] {
        // SAFETY: `pa` is a live table frame from `alloc_table`.
        unsafe { &*(pa as *const [u64; 512]) }
    }

    fn table_mut(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: as for `table`; the builder holds the only reference.
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }
}
