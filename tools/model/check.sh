#!/usr/bin/env bash
# Checks a Promela model with spin: every interleaving, every assertion and
# LTL property (safety; pan -a). Prints pan's verdict and, on a violation,
# the counterexample's last steps.
#
#   check.sh MODEL.pml [-DNAME ...]                    passes iff no violation
#   check.sh --expect-violation MODEL.pml -DNAME ...   passes iff one is found
#     (how the tests show that a deliberately broken variant is caught)
#
# Exit 77 (CTest: skipped) without spin (Debian package 'spin').
set -euo pipefail
expect_violation=0
if [ "${1:-}" = "--expect-violation" ]; then
  expect_violation=1
  shift
fi
model=$(realpath "${1:?usage: check.sh [--expect-violation] MODEL.pml [-DNAME ...]}")
shift
if ! command -v spin >/dev/null; then
  echo "SKIPPED: spin not installed (Debian package 'spin'; deploy/install-deps.sh installs it)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$model" "$work/model.pml"
cd "$work"
spin -a "$@" model.pml >spin.log 2>&1 || { cat spin.log; exit 1; }
cc -O2 -w -o pan pan.c
# -m: search depth far beyond the model's (a truncated search would be a
# silent pass: pan says so and this script refuses it).
./pan -a -m1000000 >pan.log 2>&1 || true
errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' pan.log | head -1)
if [ -z "$errors" ]; then
  cat pan.log
  echo "check.sh: pan gave no verdict"
  exit 1
fi
if grep -q "max search depth too small" pan.log; then
  cat pan.log
  echo "check.sh: the search was cut short"
  exit 1
fi
grep -E "states, stored|errors:|assertion violated|violated" pan.log || true
if [ "$errors" -ne 0 ]; then
  echo "-- counterexample (last steps):"
  spin -t -p -g "$@" model.pml 2>&1 | grep -E "proc|assert" | tail -15 || true
fi
if [ "$expect_violation" -eq 1 ]; then
  [ "$errors" -ne 0 ] || { echo "check.sh: the broken variant ($*) was NOT caught"; exit 1; }
  echo "check.sh: the broken variant ($*) is caught, as it must be"
  exit 0
fi
[ "$errors" -eq 0 ] || { echo "check.sh: $(basename "$model") is violated"; exit 1; }
echo "check.sh: $(basename "$model") holds"
