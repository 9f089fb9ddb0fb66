//! The monitor's first instructions: the multiboot1 header (with the a.out-kludge address fields,
//! so QEMU's `-kernel` loads this ELF64 image) and the multiboot2 header (for GRUB), then the
//! 32-bit entry that both loaders jump to with paging off, which identity-maps the first 4 GiB
//! with 2 MiB pages, enters long mode and calls `kmain(magic, info)`.
//!
//! Multiboot 0.6.96 §3.1 and Multiboot2 §3.1 give the header formats and the machine state.

use core::arch::global_asm;

/// Multiboot1's EAX at entry.
pub const MULTIBOOT1_MAGIC: u32 = 0x2BAD_B002;
/// Multiboot2's EAX at entry.
pub const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;

global_asm!(
    r#"
    .section .multiboot, "a"
    .balign 4
mb1_header:
    .long 0x1BADB002
    .long 0x00010003
    .long -(0x1BADB002 + 0x00010003)
    .long mb1_header
    .long __image_start
    .long __load_end
    .long __image_end
    .long _start32

    .balign 8
mb2_header:
    .long 0xE85250D6
    .long 0
    .long mb2_end - mb2_header
    .long 0x100000000 - (0xE85250D6 + (mb2_end - mb2_header))
    /* entry address tag */
    .short 3
    .short 0
    .long 12
    .long _start32
    .long 0
    /* modules page-aligned */
    .short 6
    .short 0
    .long 8
    /* end */
    .short 0
    .short 0
    .long 8
mb2_end:

    .section .boot32, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov esp, offset boot_stack_top
    mov edi, eax
    mov esi, ebx

    /* PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages. */
    mov eax, offset boot_pdpt
    or eax, 3
    mov [boot_pml4], eax
    mov ecx, 0
1:
    mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 3
    mov [boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 1b
    mov ecx, 0
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov [boot_pd + ecx * 8], eax
    mov eax, ecx
    shr eax, 11
    mov [boot_pd + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jb 2b

    mov eax, offset boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, (1 << 8) | (1 << 11)
    wrmsr
    /* PG, WP and PE on; CD and NW off (caches on, whatever the firmware left) */
    mov eax, cr0
    and eax, ~((1 << 30) | (1 << 29))
    or eax, (1 << 31) | (1 << 16) | 1
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    /* jmp far 0x08:long_entry (EA ptr16:32) */
    .byte 0xEA
    .long long_entry
    .short 0x08

    .code64
long_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    call kmain
3:
    hlt
    jmp 3b

    .section .rodata
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_end:
    .global boot_gdt_ptr
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
boot_stack:
    .skip 256 * 1024
boot_stack_top:
    .text
"#
);
