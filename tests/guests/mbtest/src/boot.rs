//! Entry of the multiboot test guest: the multiboot1 header with the a.out kludge (Multiboot
//! Specification 0.6.96, §3.1; flag 16 gives the load addresses, so the image can be a flat
//! binary) and the 32-bit entry, which keeps EAX and EBX, switches to long mode with the first
//! 4 GiB identity-mapped and calls `mbtest_main(eax, ebx)` on its own stack.

use core::arch::global_asm;

const STACK_BYTES: usize = 16 * 1024;

// Flags: modules page-aligned (0), memory information (1), a.out kludge (16).
global_asm!(
    r#"
    .section .head, "ax"
    .balign 4
multiboot_header:
    .long 0x1BADB002
    .long 0x00010003
    .long -(0x1BADB002 + 0x00010003)
    .long multiboot_header
    .long __image_start
    .long __data_end
    .long __image_end
    .long multiboot_entry32
    "#,
    options(att_syntax)
);

// Entered in 32-bit protected mode, paging off, EAX = magic, EBX = info (§3.2). Identity-maps
// 4 GiB with 2 MiB pages, then PAE, EFER.LME, CR0.PG (Intel SDM Vol. 3A 10.8.5) and a far
// jump to 64-bit code. EBP keeps EAX; nothing here touches EBX.
global_asm!(
    r#"
    .section .boot_tables, "aw", @nobits
    .balign 4096
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4 * 4096

    .section .bss.stack, "aw", @nobits
    .balign 16
boot_stack:
    .skip {stack_bytes}
boot_stack_top:

    .section .rodata.gdt, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.boot32, "ax"
    .code32
    .global multiboot_entry32
multiboot_entry32:
    cli
    cld
    movl %eax, %ebp
    movl $boot_pml4, %edi
    xorl %eax, %eax
    movl $(6 * 4096 / 4), %ecx
    rep stosl
    movl $(boot_pdpt + 3), boot_pml4
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    addl $(boot_pd + 3), %eax
    movl %eax, boot_pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jb 1b
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_pd(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jb 2b
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    lgdt boot_gdt_pointer
    ljmp $0x10, $entry64

    .code64
entry64:
    movw $0x18, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    leaq boot_stack_top(%rip), %rsp
    movl %ebp, %edi
    movl %ebx, %esi
    call {main}
3:  hlt
    jmp 3b
    "#,
    stack_bytes = const STACK_BYTES,
    main = sym crate::mbtest_main,
    options(att_syntax)
);
