# ferry_guest_blob(<target> <source.S> <symbol> [SECTOR])
# Assembles a test guest with GNU as, links it flat at 0x7c00 into
# ${PROJECT_BINARY_DIR}/<target>.img, and builds a static library <target>
# whose symbols <symbol>_start / <symbol>_end span those bytes. With SECTOR
# the image must be exactly one 512-byte boot sector.
set(FERRY_BLOB_TEMPLATE ${CMAKE_CURRENT_LIST_DIR}/guest_blob.S)

function(ferry_guest_blob TARGET SRC SYMBOL)
  cmake_parse_arguments(G "SECTOR" "" "" ${ARGN})
  get_filename_component(src_abs ${SRC} ABSOLUTE)
  set(obj ${CMAKE_CURRENT_BINARY_DIR}/${TARGET}.o)
  set(img ${PROJECT_BINARY_DIR}/${TARGET}.img)
  set(check)
  if(G_SECTOR)
    set(check COMMAND sh -c "test $(stat -c %s ${img}) -eq 512")
  endif()
  add_custom_command(
    OUTPUT ${img}
    COMMAND as --32 ${src_abs} -o ${obj}
    COMMAND ld -m elf_i386 -Ttext 0x7c00 --oformat binary ${obj} -o ${img}
    ${check}
    DEPENDS ${src_abs}
    COMMENT "Assembling test guest ${TARGET}"
    VERBATIM)
  add_custom_target(${TARGET}_img DEPENDS ${img})
  set(blob ${CMAKE_CURRENT_BINARY_DIR}/${TARGET}_blob.S)
  configure_file(${FERRY_BLOB_TEMPLATE} ${blob} COPYONLY)
  set_source_files_properties(${blob} PROPERTIES
    OBJECT_DEPENDS ${img}
    COMPILE_DEFINITIONS "FERRY_BLOB_PATH=\"${img}\";FERRY_BLOB_SYMBOL=${SYMBOL}")
  add_library(${TARGET} STATIC ${blob})
  add_dependencies(${TARGET} ${TARGET}_img)
endfunction()
