/*
 * Ferry's counter test guest: one 512-byte boot sector.
 *
 * Real mode -> 32-bit flat protected mode; fill [pattern_start, ram_top) with
 * the seeded pattern unless it is already there (pre-filled by the host via a
 * memory backend file); then forever increment dword 0 of every page of the
 * working set in address order, bump the pass counter, and report the pass
 * number on the serial port every `report_every` passes.
 *
 * With -smp N every vCPU starts here (see docs/testguest.md). vCPU i >= 1
 * (its initial APIC ID, CPUID.01H:EBX[31:24]) skips all that and dirties a
 * working set of its own, the i-th one after the boot processor's, spinning
 * i * 256 more iterations per page: every vCPU dirties at its own rate.
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
        /* Interrupts off (a BIOS such as QEMU's SeaBIOS jumps here with
           them on, and protected mode has no IDT here), direction up. */
        cli
        cld
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
        mov     %ax, %ss                /* esp: STACK_TOP, set in real mode */
        mov     $p_magic, %ebp          /* parameters are addressed off ebp */
        mov     $1, %eax
        cpuid
        shr     $24, %ebx               /* initial APIC ID = vCPU index */
        jnz     ap_entry
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
        xor     %eax, %eax              /* counter */
        stosl
        mov     $1023, %ecx
        mov     %bl, %al
        not     %al
        test    $3, %al
        jnz     1f
        xor     %eax, %eax              /* zero-class page */
        rep stosl
        jmp     2f
1:      call    page_base               /* eax = base + WORD_STEP (i = 1) */
3:      stosl
        add     $WORD_STEP, %eax
        loop    3b
2:      inc     %ebx
        jmp     fill_page

filled:
        mov     $msg_ready, %esi
        call    puts

dirty_loop:
        mov     (p_ws_start - p_magic)(%ebp), %edi
        mov     (p_ws_pages - p_magic)(%ebp), %ecx
        jecxz   idle
1:      incl    (%edi)
        mov     (p_pace - p_magic)(%ebp), %edx
        inc     %edx                    /* spin `pace` iterations */
2:      dec     %edx
        jnz     2b
        add     $4096, %edi
        loop    1b
        incl    STATUS
        mov     (p_report_every - p_magic)(%ebp), %ecx
        jecxz   dirty_loop
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

/* vCPU ebx >= 1: dirty working set number ebx, no reports. A set beyond
   RAM reaches no memory (the agent ignores such writes). */
ap_entry:
        mov     (p_ws_pages - p_magic)(%ebp), %ecx
        jecxz   idle
        mov     %ecx, %esi
        shl     $12, %esi
        imul    %ebx, %esi
        add     (p_ws_start - p_magic)(%ebp), %esi
        shl     $8, %ebx                /* spin per page */
1:      mov     %esi, %edi
        mov     (p_ws_pages - p_magic)(%ebp), %ecx
2:      incl    (%edi)
        mov     %ebx, %edx
3:      dec     %edx
        jnz     3b
        add     $4096, %edi
        loop    2b
        jmp     1b

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
        cmp     $10, %al                /* 0-9 -> '0'-'9', 10-15 -> 'a'-'f' */
        sbb     $0x69, %al
        das
        or      $0x20, %al
        call    putc
        loop    1b
        ret

msg_fill:  .asciz "fill\n"
msg_ready: .asciz "ready\n"
msg_pass:  .asciz "pass "

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
