# ferry_embed(<target> <file> <symbol>)
# A static library <target> whose symbols <symbol>_start / <symbol>_end span
# the bytes of <file> (which may be generated: the library rebuilds when it
# changes). One mechanism for test guest images and the QAPI schema.
set(FERRY_EMBED_TEMPLATE ${CMAKE_CURRENT_LIST_DIR}/embed_blob.S)

function(ferry_embed TARGET FILE SYMBOL)
  set(blob ${CMAKE_CURRENT_BINARY_DIR}/${TARGET}_blob.S)
  configure_file(${FERRY_EMBED_TEMPLATE} ${blob} COPYONLY)
  set_source_files_properties(${blob} PROPERTIES
    OBJECT_DEPENDS ${FILE}
    COMPILE_DEFINITIONS "FERRY_BLOB_PATH=\"${FILE}\";FERRY_BLOB_SYMBOL=${SYMBOL}")
  add_library(${TARGET} STATIC ${blob})
endfunction()
