/* Embeds the assembled boot sector into the host library. */
        .section .rodata
        .globl ferry_counter_guest_start
        .globl ferry_counter_guest_end
        .p2align 4
ferry_counter_guest_start:
        .incbin FERRY_COUNTER_GUEST_IMG
ferry_counter_guest_end:
        .section .note.GNU-stack,"",@progbits
