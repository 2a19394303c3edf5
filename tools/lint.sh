#!/usr/bin/env bash
# Style and lint gates: clang-format must leave every C++ file unchanged and
# clang-tidy (.clang-tidy, warnings are errors) must be clean.
# Usage: tools/lint.sh BUILD_DIR   (a configured build: compile_commands.json)
set -euo pipefail
cd "$(dirname "$0")/.."
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
if ! run-clang-tidy -p "$build" -quiet -j"$(nproc)" "$(pwd)/(actors|agent|orchestrator|protocol|tools|tests)/.*\.cpp$" >"$log" 2>&1 \
   || grep -qE "(error|warning):" "$log"; then
  grep -E "(error|warning):" "$log" | head -40
  echo "clang-tidy: findings above"
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "clang-tidy: clean"
