//! Guest-physical page tables in both hardware formats: AMD nested page tables (NPT) and
//! Intel extended page tables (EPT). One builder maps, unmaps, re-protects and translates
//! guest-physical ranges; the format only changes how an entry is encoded.
//!
//! It is not the guest's own page tables, not the host frame allocator (the caller supplies
//! table frames through [`TableMemory`]) and it does not invalidate TLBs: after changing or
//! removing a mapping that the guest may have used, the caller flushes (INVEPT single-context
//! on Intel, a TLB flush of the guest's ASID through the VMCB on AMD).
//!
//! # Layout
//!
//! Both formats are four levels of 512 eight-byte entries, indexed by guest-physical address
//! bits 47:39 (PML4), 38:30 (PDPT), 29:21 (PD) and 20:12 (PT), so guest-physical addresses
//! are limited to 48 bits. Bits 51:12 of an entry hold the host-physical address of the next
//! table or of the page (bits 51:21 for a 2 MiB page, 51:30 for a 1 GiB page); bit 7 marks a
//! PDPT or PD entry as a 1 GiB or 2 MiB leaf. Bit 11 is ignored by the hardware in every entry
//! of both formats; this crate sets it on every leaf so a leaf with no access rights still
//! records its host-physical address. An all-zero entry is unmapped.
//!
//! NPT (AMD APM vol. 2 §15.25, entries as in §5.3 long-mode paging): every non-leaf entry is
//! P|R/W|U/S (bits 0, 1, 2) because nested walks are user-mode accesses (§15.25.5). A leaf has
//! P = readable, R/W = writable, U/S = 1, NX (bit 63) = not executable; PCD|PWT (bits 4, 3) for
//! uncacheable and PWT for write-through, which select UC and WT in the power-on host PAT.
//! Other memory types are left write-back so the guest PAT decides (§15.25.8).
//! The host must run with EFER.NXE set, since bit 63 is reserved in these entries otherwise.
//!
//! EPT (Intel SDM vol. 3C §29.3, §28.3 in older editions): bits 0, 1, 2 are read, write,
//! execute. Non-leaf entries grant all three. A leaf carries its memory type in bits 5:3 with
//! ignore-PAT (bit 6) clear, so the guest PAT combines with it (§29.3.7.2); bits 8 and 9 are
//! the accessed and dirty flags the processor sets when enabled in the EPTP. The EPTP
//! (§25.6.11) is the PML4 address with write-back walks (6) in bits 2:0, walk length minus one
//! (3) in bits 5:3 and the accessed/dirty enable in bit 6.
#![no_std]

mod attributes;
mod entry;
mod error;
mod guest_page_table;
mod table_memory;
#[cfg(test)]
mod test_memory;

pub use attributes::{MemType, PageSize, Perms};
pub use entry::Format;
pub use error::Error;
pub use guest_page_table::{Config, GuestPageTable, Translation, GPA_LIMIT};
pub use table_memory::TableMemory;
