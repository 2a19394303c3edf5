#!/usr/bin/env bash
# Style and lint gates: clang-format must leave every C++ file unchanged and
# clang-tidy (.clang-tidy, warnings are errors) must be clean.
#
#   tools/lint.sh BUILD_DIR          the test command's gate: clang-tidy on the
#       product code; the path-sensitive analyzer (clang-analyzer-*) on the
#       wire formats (protocol/, common/), the other checks everywhere
#   tools/lint.sh --deep BUILD_DIR   every check on every file, tests and
#       benchmarks too (about 35 minutes on two cores; run it before a change
#       lands, not in CI's 90 minutes)
# BUILD_DIR is a configured build (compile_commands.json).
set -euo pipefail
cd "$(dirname "$0")/.."
deep=
if [ "${1:-}" = --deep ]; then
  deep=1
  shift
fi
build=${1:-build}

# The rooms' doors (docs/ARCHITECTURE.md): a room includes only rooms below it.
#   common/        nothing of Ferry's but itself
#   protocol/      common/ and itself (a leaf: wire formats)
#   actors/        common/, protocol/, itself
#   orchestrator/  never agent/ or tools/
#   agent/         never orchestrator/ or tools/
# and no product code includes tools/ or tests/.
door() { # door ROOM ALLOWED-REGEX
  local hits
  hits=$(git grep -nE '^#include "[a-z_]+/' -- "$1" | grep -vE "#include \"($2)/" || true)
  if [ -n "$hits" ]; then
    echo "include rule: $1 may include only $2:"
    echo "$hits"
    return 1
  fi
}
doors=0
door common 'common' || doors=1
door protocol 'common|protocol' || doors=1
door actors 'common|protocol|actors' || doors=1
door orchestrator 'common|protocol|actors|orchestrator' || doors=1
door agent 'common|protocol|actors|agent' || doors=1
[ "$doors" -eq 0 ] || exit 1
echo "include rules: hold"

# Size limits outside tests: no source file over 600 lines, no function over
# 100 (a definition starting in column 0 up to its closing brace in column 0).
long=$(git ls-files '*.cpp' '*.hpp' | grep -vE '^tests/' | xargs wc -l | awk '$2 != "total" && $1 > 600')
if [ -n "$long" ]; then
  echo "files over 600 lines (split them along their responsibilities):"
  echo "$long"
  exit 1
fi
long=$(git ls-files '*.cpp' '*.hpp' | grep -vE '^tests/' | xargs awk '
  FNR == 1 { start = 0 }
  start == 0 && /^[A-Za-z_].*\(/ && !/^(namespace|struct|class|enum|union|extern|template|using|typedef)/ && !/;[[:space:]]*$/ {
    sig = FNR; name = $0
  }
  sig && start == 0 && /\{[[:space:]]*$/ { if (FNR - sig < 8) start = sig; else sig = 0 }
  start && /^}/ { if (FNR - start + 1 > 100) printf "%s:%d: %d lines: %s\n", FILENAME, start, FNR - start + 1, name; start = 0; sig = 0 }
')
if [ -n "$long" ]; then
  echo "functions over 100 lines (carve them into named steps):"
  echo "$long"
  exit 1
fi
echo "sizes: files within 600 lines, functions within 100"

bad=0
while IFS= read -r f; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "clang-format would change $f"
    bad=1
  fi
done < <(git ls-files '*.cpp' '*.hpp')
[ "$bad" -eq 0 ] || exit 1
echo "clang-format: clean"

log=$(mktemp)
tidy() { # tidy FILE-REGEX [EXTRA-ARGS...]: appends findings to $log
  run-clang-tidy -p "$build" -quiet -j"$(nproc)" -extra-arg=-Wno-unknown-warning-option \
    "${@:2}" "$(pwd)/$1" >>"$log" 2>&1 || echo "error: run-clang-tidy failed on $1" >>"$log"
}
if [ -n "$deep" ]; then
  tidy '(actors|agent|bench|common|orchestrator|protocol|tools|tests)/.*\.cpp$'
else
  # The analyzer costs about 60% of clang-tidy's time and tests/ adds 93
  # files of CAF/Boost/GoogleTest parsing: the whole set is the deep run's.
  tidy '(common|protocol)/.*\.cpp$'
  tidy '(actors|agent|orchestrator|tools)/.*\.cpp$' '-checks=-clang-analyzer-*'
fi
if grep -qE "(error|warning):" "$log"; then
  grep -E "(error|warning):" "$log" | head -40
  echo "clang-tidy: findings above"
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "clang-tidy: clean$([ -n "$deep" ] && echo " (deep)")"
