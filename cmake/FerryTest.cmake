# ferry_add_test(NAME <name> LABEL <unit|kvm|integration> SOURCES <...> [LIBS <...>] [SERIAL])
# One GoogleTest executable per call; each of its test cases becomes one CTest test
# carrying the label, so the quick suite and the slow ones are `ctest -L <label>`.
# SERIAL: its tests run with no other test beside them (ones that measure time).
# A GTEST_SKIP() shows up in CTest as "Skipped", with its message in the log.
include(GoogleTest)
find_package(GTest REQUIRED)

function(ferry_add_test)
  cmake_parse_arguments(T "SERIAL" "NAME;LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  gtest_discover_tests(${T_NAME}
    TEST_PREFIX "${T_NAME}."
    PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT} RUN_SERIAL ${T_SERIAL}
               ENVIRONMENT "FERRY_BUILD_DIR=${PROJECT_BINARY_DIR}"
    DISCOVERY_TIMEOUT 30)
endfunction()
