/*
 * Dirty-tracking probe guest (real mode, no stack, no other writes): reads a
 * zero-terminated list of 16-bit segments at 0x7e00 (written by the test),
 * increments the byte at each segment:0 — one write per listed page — then
 * halts. The test rewinds CS:IP to 0:0x7c00 to run it again.
 */
        .code16
        .globl _start
_start:
        xor     %ax, %ax
        mov     %ax, %ds
        mov     $0x7e00, %si
        cld
1:      lodsw
        test    %ax, %ax
        jz      2f
        mov     %ax, %es
        incb    %es:0
        jmp     1b
2:      hlt
        jmp     2b
