# ferry_guest_blob(<target> <source.S> <symbol> [SECTOR])
# Assembles a test guest with GNU as, links it flat at 0x7c00 into
# ${PROJECT_BINARY_DIR}/<target>.img, and embeds it (ferry_embed) as the
# static library <target>. With SECTOR the image must be exactly one 512-byte
# boot sector.
include(${CMAKE_CURRENT_LIST_DIR}/FerryEmbed.cmake)

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
  ferry_embed(${TARGET} ${img} ${SYMBOL})
  add_dependencies(${TARGET} ${TARGET}_img)
endfunction()
