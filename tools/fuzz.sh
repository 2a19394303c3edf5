#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a bounded time
# (FUZZ_SECONDS, default 20) from the committed seed corpora. Any crash,
# sanitizer report or leak fails the run. Usage: tools/fuzz.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
seconds=${FUZZ_SECONDS:-20}
cmake -S . -B "$build" -G Ninja -DFERRY_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build" --target fuzz_api_json fuzz_migration_stream fuzz_page_batch fuzz_qmp_input \
  fuzz_vcpu_state fuzz_vm_args fuzz_xbzrle
for t in api_json migration_stream page_batch qmp_input vcpu_state vm_args xbzrle; do
  work=$(mktemp -d)
  cp tests/fuzz/corpus/$t/* "$work/"
  echo "fuzz_$t: ${seconds}s"
  "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -max_len=8192 \
    -print_final_stats=0 "$work" 2>"$work.log" || { tail -40 "$work.log"; exit 1; }
  grep -E "^Done [0-9]+ runs" "$work.log" || true
  rm -rf "$work" "$work.log"
done
