#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each from its committed
# seed corpus (tests/fuzz/corpus/NAME for fuzz_NAME). Any crash, sanitizer
# report or leak fails the run.
#
#   tools/fuzz.sh [BUILD_DIR]          FUZZ_SECONDS each (default 20): the test command's run
#   tools/fuzz.sh --long [BUILD_DIR]   an hour each (FUZZ_SECONDS overrides); opt-in
#                                      (the fuzz build's `fuzz_long` target runs it)
#
# A long run keeps what it finds: inputs that reach new code are merged into
# the committed corpus, and an input that crashes is copied there as
# crash-<hash> (so that every later run, short ones included, replays it until
# the bug is fixed). It goes on with the other targets and fails at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
long=
if [ "${1:-}" = --long ]; then
  long=1
  shift
fi
build=${1:-build-fuzz}
seconds=${FUZZ_SECONDS:-$([ -n "$long" ] && echo 3600 || echo 20)}
targets=$(ls tests/fuzz/corpus)
cmake -S . -B "$build" -G Ninja -DFERRY_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
# shellcheck disable=SC2046
cmake --build "$build" --target $(printf 'fuzz_%s ' $targets)
failed=()
for t in $targets; do
  corpus=tests/fuzz/corpus/$t
  work=$(mktemp -d)
  mkdir "$work/in" "$work/found"
  cp "$corpus"/* "$work/in/"
  echo "fuzz_$t: ${seconds}s"
  if "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -max_len=8192 -print_final_stats=0 \
    -artifact_prefix="$work/found/" "$work/in" 2>"$work/log"; then
    grep -E "^Done [0-9]+ runs" "$work/log" || true
  else
    tail -40 "$work/log"
    failed+=("$t")
    if [ -z "$long" ]; then
      rm -rf "$work"
      exit 1
    fi
    for f in "$work"/found/*; do
      [ -e "$f" ] || continue
      kept=$corpus/crash-$(sha1sum "$f" | cut -c1-16)
      cp "$f" "$kept"
      echo "fuzz_$t: kept $(basename "$f") as $kept"
    done
  fi
  if [ -n "$long" ]; then
    # Only inputs that add coverage join the committed corpus.
    "$build/tests/fuzz/fuzz_$t" -merge=1 -max_len=8192 "$corpus" "$work/in" 2>/dev/null ||
      echo "fuzz_$t: merging the new inputs failed (the corpus is unchanged)"
  fi
  rm -rf "$work"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]} (kept in their corpora)" >&2
  exit 1
fi
