/*
 * Ferry's counter test guest: one 512-byte boot sector.
 *
 * Real mode -> 32-bit flat protected mode; fill [pattern_start, ram_top) with
 * the seeded pattern unless it is already there (pre-filled by the host via a
 * memory backend file); then forever increment dword 0 of every page of the
 * working set in address order, bump the pass counter, and report the pass
 * number on the serial port every `report_every` passes.
 *
 * The pattern (see pattern.hpp, the one definition the host side uses):
 *   page p, dword 0      : counter (0 unless in the working set)
 *   page p, dword i >= 1 : p % 4 == 3 ? 0 : p * 0x9e3779b1 + seed + i * 0x01000193
 *
 * The parameter block sits at a fixed offset (param_offset in guest_image.hpp)
 * and is patched by `ferry-testguest image`.
 */
        .set COM1,        0x3f8
        .set STACK_TOP,   0x7000
        .set STATUS,      0x6000      /* u32 pass count, u32 phase */
        .set PAGE_MUL,    0x9e3779b1
        .set WORD_STEP,   0x01000193

        .code16
        .globl _start
_start:
        cli
        xor     %ax, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     $STACK_TOP, %sp
        inb     $0x92, %al              /* fast A20 on */
        or      $2, %al
        outb    %al, $0x92
        lgdtl   gdt_desc
        mov     %cr0, %eax
        or      $1, %eax
        mov     %eax, %cr0
        ljmpl   $0x08, $pm_entry

        .code32
pm_entry:
        mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     %ax, %fs
        mov     %ax, %gs
        mov     $STACK_TOP, %esp
        mov     $p_magic, %ebp          /* parameters are addressed off ebp */
        cld
        movl    $0, STATUS
        movl    $1, STATUS+4
        /* Pattern present? Probe dword 1 and 1023 of the first page and of
           the last non-zero-class page. */
        mov     (p_pattern_start - p_magic)(%ebp), %ebx
        shr     $12, %ebx
        call    probe_page
        jne     do_fill
        mov     (p_ram_top - p_magic)(%ebp), %ebx
        shr     $12, %ebx
        dec     %ebx
        and     $~3, %ebx
        call    probe_page
        je      filled
do_fill:
        mov     $msg_fill, %esi
        call    puts
        mov     (p_pattern_start - p_magic)(%ebp), %ebx
        shr     $12, %ebx
fill_page:
        mov     %ebx, %edi
        shl     $12, %edi
        cmp     (p_ram_top - p_magic)(%ebp), %edi
        jae     filled
        movl    $0, (%edi)              /* counter */
        add     $4, %edi
        mov     $1023, %ecx
        mov     %ebx, %eax
        and     $3, %eax
        cmp     $3, %eax
        jne     1f
        xor     %eax, %eax              /* zero-class page */
        rep stosl
        jmp     2f
1:      call    page_base               /* eax = base + WORD_STEP (i = 1) */
3:      stosl
        add     $WORD_STEP, %eax
        dec     %ecx
        jnz     3b
2:      inc     %ebx
        jmp     fill_page

filled:
        movl    $2, STATUS+4
        mov     $msg_ready, %esi
        call    puts

dirty_loop:
        mov     (p_ws_start - p_magic)(%ebp), %edi
        mov     (p_ws_pages - p_magic)(%ebp), %ecx
        test    %ecx, %ecx
        jz      idle
1:      incl    (%edi)
        mov     (p_pace - p_magic)(%ebp), %edx
2:      test    %edx, %edx
        jz      3f
        dec     %edx
        jmp     2b
3:      add     $4096, %edi
        dec     %ecx
        jnz     1b
        incl    STATUS
        mov     (p_report_every - p_magic)(%ebp), %ecx
        test    %ecx, %ecx
        jz      dirty_loop
        mov     STATUS, %eax
        xor     %edx, %edx
        div     %ecx
        test    %edx, %edx
        jnz     dirty_loop
        mov     $msg_pass, %esi
        call    puts
        mov     STATUS, %eax
        call    puthex
        mov     $'\n', %al
        call    putc
        jmp     dirty_loop

idle:   hlt
        jmp     idle

/* eax = page_base(ebx) + WORD_STEP: the value of dword 1 of page ebx. */
page_base:
        mov     %ebx, %eax
        imul    $PAGE_MUL, %eax, %eax
        add     (p_seed - p_magic)(%ebp), %eax
        add     $WORD_STEP, %eax
        ret

/* ZF set when page ebx holds the pattern in dwords 1 and 1023. */
probe_page:
        mov     %ebx, %edi
        shl     $12, %edi
        call    page_base
        cmp     4(%edi), %eax
        jne     1f
        add     $(1022 * WORD_STEP), %eax
        cmp     4092(%edi), %eax
1:      ret

puts:   lodsb
        test    %al, %al
        jz      1f
        call    putc
        jmp     puts
1:      ret

putc:   mov     $COM1, %dx
        outb    %al, %dx
        ret

puthex: mov     %eax, %ebx
        mov     $8, %ecx
1:      rol     $4, %ebx
        mov     %bl, %al
        and     $0xf, %al
        add     $'0', %al
        cmp     $'9', %al
        jbe     2f
        add     $('a' - '9' - 1), %al
2:      call    putc
        dec     %ecx
        jnz     1b
        ret

msg_fill:  .asciz "fill\n"
msg_ready: .asciz "ready\n"
msg_pass:  .asciz "pass "

        .p2align 3
gdt:                                    /* the null descriptor holds the GDTR */
gdt_desc:
        .word gdt_end - gdt - 1
        .long gdt
        .word 0
        .quad 0x00cf9a000000ffff        /* 0x08: code, flat 4 GiB */
        .quad 0x00cf92000000ffff        /* 0x10: data, flat 4 GiB */
gdt_end:

        /* Parameter block: layout mirrored by guest_params in guest_image.hpp. */
        .org 0x1d8
p_magic:         .ascii "FTGP"
p_version:       .long 1
p_ram_top:       .long 0x01000000
p_pattern_start: .long 0x00100000
p_ws_start:      .long 0x00100000
p_ws_pages:      .long 64
p_pace:          .long 0
p_seed:          .long 0x5eed
p_report_every:  .long 1000

        .org 0x1fe
        .byte 0x55, 0xaa
