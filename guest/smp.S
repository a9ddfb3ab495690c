/* smp.S — the AP real-mode trampoline of the ferry test guest.
 *
 * kernel.c copies [tramp_start, tramp_end) to TRAMPOLINE_PA (0x80000) and sends
 * INIT-SIPI-SIPI with vector TRAMPOLINE_PA >> 12, so an AP starts here in real mode with
 * CS = TRAMPOLINE_PA >> 4, IP = 0. It loads the guest's GDT (through a GDTR copied along
 * with the code), turns on protected mode (clearing CR0.CD/NW) and far-jumps to
 * ap_entry32 in the image at 1 MiB, which does the rest (entry.S). Position-independent:
 * only CS-relative offsets and absolute addresses of the image are used.
 */
#include "guest.h"

        .section .rodata.tramp, "a"
        .code16
        .balign 16
        .globl tramp_start, tramp_end
tramp_start:
        cli
        cld
        movw %cs, %ax
        movw %ax, %ds
        lgdtl tramp_gdtr - tramp_start
        movl %cr0, %eax
        andl $0x9fffffff, %eax          /* CD, NW off */
        orl $1, %eax                    /* PE */
        movl %eax, %cr0
        ljmpl $SEL_KCODE32, $ap_entry32
        .balign 8
tramp_gdtr:
        .word GDT_BYTES - 1
        .long gdt
tramp_end:
        .code64

        .section .note.GNU-stack, "", @progbits
