/* entry.S — PVH entry of the ferry test guest.
 *
 *  - the ELF note "Xen"/18 (XEN_ELFNOTE_PHYS32_ENTRY) holding the 32-bit entry address;
 *  - pvh_entry: 32-bit protected mode, paging off, %ebx = struct hvm_start_info; loads our
 *    GDT, identity-maps the first GiB with 2 MiB pages (kernel.c maps the rest), enters long
 *    mode and calls kmain() on the boot stack;
 *  - ap_entry32: where the real-mode trampoline (smp.S) lands an AP; takes a CPU index,
 *    enters long mode on the page tables the BSP built and calls ap_kmain(index);
 *  - the GDT, the 32 exception stubs, the three ring-3 service gates (power off, park,
 *    route a virtio IRQ), enter_user(), which drops to ring 3 with iretq, and the interrupt
 *    stubs: one per virtio-mmio entry (count in g.irqs[n], LAPIC EOI) and the spurious one.
 * Ring-0 code is emulated on this host (~0.7 us per instruction): keep it short.
 */
#include "guest.h"

#define CR4_BITS 0x620       /* PAE | OSFXSR | OSXMMEXCPT (TSD stays clear) */
#define CR0_BITS 0x80010033  /* PG | WP | NE | ET | MP | PE (CD, NW, EM clear) */
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100

        .section .note.Xen, "a", @note
        .balign 4
        .long 4                 /* namesz */
        .long 4                 /* descsz */
        .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long pvh_entry
        .balign 4

.macro ENTER_LONG target
        movl $CR4_BITS, %eax
        movl %eax, %cr4
        movl $pml4, %eax
        movl %eax, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
        movl $CR0_BITS, %eax
        movl %eax, %cr0
        ljmp $SEL_KCODE, $\target
.endm

.macro LOAD_DATA_SEGS
        movw $SEL_KDATA, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movw %ax, %fs
        movw %ax, %gs
.endm

        .section .text.entry, "ax"
        .code32
        .globl pvh_entry
pvh_entry:
        cli
        cld
        movl %ebx, boot_start_info
        lgdt gdt_ptr
        LOAD_DATA_SEGS
        movl $boot_stack_top, %esp
        /* PML4[0] -> PDPT, PDPT[0] -> PD 0 = identity 0..1 GiB (P|RW|US|PS) */
        movl $pdpt + 7, pml4
        movl $pd_ident + 7, pdpt
        movl $pd_ident, %edi
        movl $0x87, %eax
        movl $512, %ecx
1:      movl %eax, (%edi)
        addl $0x200000, %eax
        addl $8, %edi
        loop 1b
        ENTER_LONG bsp64

        .globl ap_entry32
ap_entry32:
        LOAD_DATA_SEGS
        movl $1, %edi
        lock xaddl %edi, ap_next        /* %edi = this AP's index (1, 2, ...) */
        cmpl $MAX_CPUS, %edi
        jae 2f
        ENTER_LONG ap64
2:      cli
        hlt
        jmp 2b

        .code64
bsp64:
        LOAD_DATA_SEGS
        movq $boot_stack_top, %rsp
        call kmain
        jmp park_forever

ap64:
        LOAD_DATA_SEGS
        movl %edi, %edi
        leaq 1(%rdi), %rsp
        shlq $12, %rsp                  /* KSTACK_SIZE = 4096 */
        addq $kstacks, %rsp
        call ap_kmain
        jmp park_forever

/* enter_user(rip, rsp, arg, rflags): iretq to ring 3 at rip with stack rsp and the given RFLAGS
 * (0x2: IF=0; 0x202: IF=1) plus IOPL=3; arg in %rdi.
 * Ring-3 port I/O has two grants, and each host honours only one of them:
 * - kvm_pvm ignores IOPL (it reads back 0), so the TSS I/O bitmap (cpu_setup) opens the
 *   console and exit ports;
 * - QEMU's TCG (the nested test VM, docs/testing.md) consults the bitmap only while TR's
 *   descriptor type is 9 (available). KVM reports TR as busy (type 11) in KVM_GET_SREGS,
 *   as VMX requires, so after a migration or a restore TCG would refuse every ring-3 port
 *   access with #GP; IOPL=3 lets the access through without the bitmap. */
        .text
        .globl enter_user
enter_user:
        orq $0x3000, %rcx               /* IOPL=3 */
        movw $SEL_UDATA, %ax
        movw %ax, %ds
        movw %ax, %es
        pushq $SEL_UDATA
        pushq %rsi
        pushq %rcx
        pushq $SEL_UCODE
        pushq %rdi
        movq %rdx, %rdi
        xorl %esi, %esi
        xorl %edx, %edx
        xorl %ecx, %ecx
        xorl %eax, %eax
        iretq

/* Exception stubs: push a dummy error code where the CPU pushes none, then the vector. */
.macro EXC_NOERR n
exc\n:  pushq $0
        pushq $\n
        jmp exc_common
.endm
.macro EXC_ERR n
exc\n:  pushq $\n
        jmp exc_common
.endm
        .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
        EXC_NOERR \n
        .endr
        .irp n, 8,10,11,12,13,14,17,21,29,30
        EXC_ERR \n
        .endr
exc_common:
        pushq %rdi                      /* frame: rdi, vec, err, rip, cs, rflags, rsp, ss */
        movq %rsp, %rdi
        pushq %rbx
        movq %rsp, %rbx
        andq $-16, %rsp
        call exc_handler
        /* Returns only from the VEC_IRQ_ROUTE service call: result in %rax; the caller
         * declared the registers C may clobber. */
        movq %rbx, %rsp
        popq %rbx
        popq %rdi
        addq $16, %rsp                  /* vector, error code */
        iretq
park_forever:
        cli
        hlt
        jmp park_forever

        .globl svc_poweroff, svc_park, svc_irq_route
svc_poweroff:
        movl %edi, %eax
        movw $0xf4, %dx
        outl %eax, %dx
        jmp park_forever
svc_park:
        jmp park_forever
svc_irq_route:                          /* where "int $0x32" is not turned into #UD */
        pushq $0
        pushq $VEC_IRQ_ROUTE
        jmp exc_common

/* Virtio interrupt n (vector VEC_VIRTIO0 + n, BSP only): g.irqs[n]++, EOI, back. Six
 * instructions, as each costs ~0.7 us here; the drivers poll, the count is all it does. */
.macro IRQ_STUB n
irq\n:  pushq %rax
        incq g+SHARED_IRQS+8*\n(%rip)
        xorl %eax, %eax
        movabsl %eax, LAPIC_EOI_PA
        popq %rax
        iretq
.endm
        .irp n, 0,1,2,3,4,5,6,7
        IRQ_STUB \n
        .endr
        .globl irq_spurious
irq_spurious:                           /* the LAPIC's spurious vector: no EOI */
        iretq

        .section .rodata
        .balign 8
        .globl exc_stubs
exc_stubs:
        .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad exc\n
        .endr
        .globl irq_stubs
irq_stubs:
        .irp n, 0,1,2,3,4,5,6,7
        .quad irq\n
        .endr
        .if VIRTIO_MMIO_MAX - 8
        .error "irq_stubs must have VIRTIO_MMIO_MAX entries"
        .endif

        .data
        .balign 16
        .globl gdt, gdt_tss
gdt:    .quad 0
        .quad 0x00af9a000000ffff        /* 0x08 kernel code, 64-bit */
        .quad 0x00cf92000000ffff        /* 0x10 kernel data */
        .quad 0x00cf9a000000ffff        /* 0x18 kernel code, 32-bit (AP trampoline) */
        .quad 0x00cff2000000ffff        /* 0x20 user data, DPL 3 */
        .quad 0x00affa000000ffff        /* 0x28 user code, 64-bit, DPL 3 */
gdt_tss:
        .fill 2 * MAX_CPUS, 8, 0        /* 0x30 + 16 * cpu: 64-bit TSS descriptors */
gdt_end:
        .if gdt_end - gdt - GDT_BYTES
        .error "GDT_BYTES does not match the GDT"
        .endif
        .balign 8
        .globl gdt_ptr
gdt_ptr:
        .word gdt_end - gdt - 1
        .quad gdt
        .balign 4
ap_next:
        .long 1

        .bss
        .balign 4096
        .globl boot_stack_top
boot_stack:
        .skip BOOT_STACK_SIZE
boot_stack_top:

        .section .note.GNU-stack, "", @progbits
