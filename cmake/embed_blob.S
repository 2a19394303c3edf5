/* Embeds a file as bytes between <symbol>_start and <symbol>_end; see FerryEmbed.cmake. */
#define FERRY_CAT(a, b) a##b
#define FERRY_XCAT(a, b) FERRY_CAT(a, b)
        .section .rodata
        .globl FERRY_XCAT(FERRY_BLOB_SYMBOL, _start)
        .globl FERRY_XCAT(FERRY_BLOB_SYMBOL, _end)
        .p2align 4
FERRY_XCAT(FERRY_BLOB_SYMBOL, _start):
        .incbin FERRY_BLOB_PATH
FERRY_XCAT(FERRY_BLOB_SYMBOL, _end):
        .section .note.GNU-stack,"",@progbits
