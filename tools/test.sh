#!/usr/bin/env bash
# The whole test suite, as the README states it and CI runs it:
#   1. install the Debian packages (idempotent),
#   2. build with warnings as errors and run every CTest test (unit, kvm,
#      integration; KVM tests report "Skipped" with the reason when /dev/kvm
#      is not usable),
#   3. clang-format and clang-tidy (tools/lint.sh),
#   4. every libFuzzer target for a bounded time (FUZZ_SECONDS, default 20),
#   5. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer.
# The last CTest summary line is the sanitizer run's; any failure stops here.
#
# CI gives the whole of it 90 minutes on two cores; each stage prints how long
# it took (docs/development.md has the budget). The release build keeps line
# tables only (-g1: a third less compile time than -g); the sanitizer build
# uses clang, whose UBSan instrumentation compiles the Beast- and CAF-heavy
# files three to four times faster than GCC 12's.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
stage_start=$SECONDS
stage() { # stage NAME: ends the previous stage's clock, starts NAME's
  echo "   (took $((SECONDS - stage_start)) s; $((SECONDS / 60)) min so far)"
  stage_start=$SECONDS
  echo "== $1"
}

bash deploy/install-deps.sh

stage "build (warnings are errors) and test"
cmake -S . -B build-test -G Ninja -DFERRY_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" >/dev/null
cmake --build build-test
ctest --test-dir build-test --output-on-failure -j"$jobs"

stage "lint"
bash tools/lint.sh build-test

stage "libFuzzer targets"
bash tools/fuzz.sh build-fuzz

stage "ASan/UBSan build (clang)"
cmake -S . -B build-asan -G Ninja -DFERRY_WERROR=ON -DFERRY_SANITIZE=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build-asan

stage "ASan/UBSan test (CTest's summary closes the run)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"
