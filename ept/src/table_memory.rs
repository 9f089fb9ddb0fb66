//! Where table frames come from: the caller's frame allocator and its view of physical memory.
//!
//! It is not an allocator itself; in the monitor physical memory is identity-mapped, so a
//! table's host-physical address is also its pointer.

/// Frames holding page tables, addressed by host-physical address.
pub trait TableMemory {
    /// A 4 KiB-aligned frame for a new table, or `None` when memory is exhausted. The
    /// builder zeroes it before use.
    fn alloc_table(&mut self) -> Option<u64>;

    /// Takes back a frame the builder no longer references. The processor may still cache
    /// translations through it until the caller invalidates the guest's translations, so the
    /// frame must not be reused before that flush.
    fn free_table(&mut self, pa: u64);

    /// The table at `pa`, an address this memory returned from `alloc_table`.
    fn table(&self, pa: u64) -> &[u64; 512];

    /// The table at `pa` for writing.
    fn table_mut(&mut self, pa: u64) -> &mut [u64; 512];
}
