#!/usr/bin/env bash
# The whole test suite, as the README states it and CI runs it:
#   1. install the Debian packages (idempotent),
#   2. build with warnings as errors and run every CTest test (unit, kvm,
#      integration; KVM tests report "Skipped" with the reason when /dev/kvm
#      is not usable),
#   3. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer,
#   4. every libFuzzer target for a bounded time (FUZZ_SECONDS, default 20),
#   5. clang-format and clang-tidy (tools/lint.sh).
# The last CTest summary line is the sanitizer run's; any failure stops here.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash deploy/install-deps.sh

echo "== build (warnings are errors) and test"
cmake -S . -B build-test -G Ninja -DFERRY_WERROR=ON >/dev/null
cmake --build build-test
ctest --test-dir build-test --output-on-failure -j"$jobs"

echo "== lint"
bash tools/lint.sh build-test

echo "== libFuzzer targets"
bash tools/fuzz.sh build-fuzz

echo "== ASan/UBSan build and test"
cmake -S . -B build-asan -G Ninja -DFERRY_WERROR=ON -DFERRY_SANITIZE=ON >/dev/null
cmake --build build-asan
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"
