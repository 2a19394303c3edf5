#!/usr/bin/env bash
# systemd-analyze verify on deploy/systemd's units, with ExecStart pointing at
# the binaries of build directory $1. Exit 77 (CTest: skipped) without
# systemd-analyze.
set -euo pipefail
build=$(cd "${1:?usage: check_systemd_units.sh BUILD_DIR}" && pwd)
src="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIPPED: systemd-analyze not installed (Debian package 'systemd')"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in "$src"/deploy/systemd/*.service; do
  sed -e "s|/usr/local/bin/ferry-agent|$build/agent/ferry-agent|" \
      -e "s|/usr/local/bin/ferry-orchestrator|$build/orchestrator/ferry-orchestrator|" \
      "$unit" > "$tmp/$(basename "$unit")"
done
# Warnings about the unit files themselves fail the check; systemd's own
# complaints about the host (no running manager) do not concern them.
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$tmp"/*.service 2>&1 || true)
if printf '%s\n' "$out" | grep -F "$tmp" >/dev/null; then
  printf '%s\n' "$out"
  exit 1
fi
grep -q '^Type=notify' "$tmp/ferry-agent.service"
grep -q '^DeviceAllow=/dev/kvm rw' "$tmp/ferry-agent.service"
echo "systemd units: $(ls "$tmp" | tr '\n' ' ')verified"
