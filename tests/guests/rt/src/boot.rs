//! Entry points of the test guests, as a macro each guest expands once: `rt::entry!(main)`
//! places the 64-bit entry of the Linux boot protocol at 0x100200 and, for booting a guest
//! straight on QEMU without the monitor, a multiboot1 header (a.out kludge) with a 32-bit entry
//! that switches to long mode itself. Both end in `main(boot_params, multiboot_info,
//! multiboot_magic)` on the guest's own stack, GDT and data segments: boot_params from the Linux
//! entry, the other two from the multiboot entry's EBX and EAX, what an entry does not give 0.
//! A macro rather than code in this library because nothing references the entry: the linker
//! would leave it out of the image. Not here: the IDT (see `trap`); the layout is `guest.ld`.
//!
//! Linux boot protocol (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol"): the 64-bit
//! entry is the protected-mode load address plus 0x200, entered in long mode with the loaded
//! image identity-mapped, interrupts off, RSI = boot_params, and a GDT whose selectors 0x10 and
//! 0x18 are flat code and data. The guest loads its own GDT with that same layout so that nothing
//! depends on where the loader left its GDT.

/// Bytes of a guest's stack.
pub const STACK_BYTES: usize = 64 * 1024;

/// Code segment selector of the guests' GDT.
pub const CODE_SELECTOR: u64 = 0x10;

/// Emits the entry points; `$main` is an `extern "C" fn(boot_params: u64, multiboot_info: u64,
/// multiboot_magic: u64) -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        // The head at 0x100000: a halt loop where a bzImage has its 32-bit entry (`hlt; jmp`
        // encodes the same in 32- and 64-bit mode), then the multiboot1 header (Multiboot
        // Specification 0.6.96, section 3.1: flag bits 0 and 1 ask for page-aligned modules and
        // the memory information, bit 16 gives the load addresses explicitly, which QEMU needs
        // for an ELF64, and which lets the image be a flat binary).
        core::arch::global_asm!(
            r#"
            .section .head, "ax"
        1:  hlt
            jmp 1b
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

        // The multiboot path: entered in 32-bit protected mode with paging off (EAX =
        // 0x2BADB002, EBX = multiboot info). Identity-maps the first 4 GiB with 2 MiB pages,
        // enables long mode (Intel SDM Vol. 3A 10.8.5: PAE, then EFER.LME, then CR0.PG; none of
        // it touches EBX; EBP keeps EAX) and joins the common 64-bit path with no boot_params.
        core::arch::global_asm!(
            r#"
            .section .boot_tables, "aw", @nobits
            .balign 4096
        boot_pml4:  .skip 4096
        boot_pdpt:  .skip 4096
        boot_pd:    .skip 4 * 4096

            .section .text.boot32, "ax"
            .code32
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
            lgdt rt_gdt_pointer
            ljmp $0x10, $multiboot_entry64
            .code64
        multiboot_entry64:
            xorl %r12d, %r12d
            movl %ebx, %r13d
            movl %ebp, %r14d
            jmp rt_common_entry64
            "#,
            options(att_syntax)
        );

        // The Linux 64-bit entry: clears .bss (the boot protocol does not), switches to the
        // guest's stack and GDT, reloads every segment register and calls
        // `main(boot_params, multiboot_info, multiboot_magic)`.
        core::arch::global_asm!(
            r#"
            .section .rodata.gdt, "a"
            .balign 8
        rt_gdt:
            .quad 0
            .quad 0
            .quad 0x00AF9B000000FFFF
            .quad 0x00CF93000000FFFF
        rt_gdt_end:
        rt_gdt_pointer:
            .word rt_gdt_end - rt_gdt - 1
            .quad rt_gdt

            .section .bss.stack, "aw", @nobits
            .balign 16
        rt_stack:
            .skip {stack_bytes}
        rt_stack_top:

            .section .text.entry64, "ax"
            .code64
            .global linux_entry64
        linux_entry64:
            cli
            cld
            movq %rsi, %r12
            xorl %r13d, %r13d
            xorl %r14d, %r14d
        rt_common_entry64:
            leaq __bss_start(%rip), %rdi
            leaq __bss_end(%rip), %rcx
            subq %rdi, %rcx
            xorl %eax, %eax
            rep stosb
            leaq rt_stack_top(%rip), %rsp
            lgdt rt_gdt_pointer(%rip)
            movw $0x18, %ax
            movw %ax, %ds
            movw %ax, %es
            movw %ax, %fs
            movw %ax, %gs
            movw %ax, %ss
            pushq $0x10
            leaq 1f(%rip), %rax
            pushq %rax
            lretq
        1:  movq %r12, %rdi
            movq %r13, %rsi
            movq %r14, %rdx
            call {main}
        2:  hlt
            jmp 2b
            "#,
            stack_bytes = const $crate::boot::STACK_BYTES,
            main = sym $main,
            options(att_syntax)
        );
    };
}
