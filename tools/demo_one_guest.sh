#!/usr/bin/env bash
# The one-guest demo: boots the counter test guest in ferry-agent's one-guest mode
# (QEMU-compatible flags), shows its serial output, then stops it over QMP,
# dumps its memory with pmemsave and proves the dump consistent with
# ferry-verify. Usage: tools/demo_one_guest.sh [BUILD_DIR]
set -euo pipefail

build=${1:-build}
build=$(cd "$build" && pwd)
work=$(mktemp -d /tmp/ferry-demo-XXXXXX)
agent_pid=
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

accel=()
if ! "$build/tools/ferry-testguest" kvm >/dev/null 2>&1; then
  say "/dev/kvm is not usable here: running the guest with -accel none (a host thread dirties its memory)"
  accel=(-accel none,dirty-rate=200000)
fi

say "Making a 256 MiB test guest: boot image + RAM pre-filled with its pattern"
"$build/tools/ferry-testguest" image "$work/guest.img" \
  --ram-top 256M --ws-pages 2048 --report-every 20
"$build/tools/ferry-testguest" pattern "$work/ram.bin" --size 256M --image "$work/guest.img"
ls -lsh "$work/ram.bin"

say "Starting ferry-agent"
cmd=("$build/agent/ferry-agent" vm -name demo -m 256M
  -object "memory-backend-file,id=ram0,size=256M,mem-path=$work/ram.bin,share=off"
  -machine memory-backend=ram0
  -drive "file=$work/guest.img,format=raw"
  -qmp "unix:$work/qmp.sock,server=on,wait=off"
  -serial "file:$work/serial.txt" "${accel[@]}")
echo "${cmd[*]}"
"${cmd[@]}" &
agent_pid=$!

if [ ${#accel[@]} -eq 0 ]; then
  for _ in $(seq 1 300); do
    grep -q "pass 00000064" "$work/serial.txt" 2>/dev/null && break
    sleep 0.1
  done
else
  sleep 1
fi

say "QMP: query-status, stop, pmemsave, query-status"
qmp=("$build/tools/ferry-qmp" "$work/qmp.sock")
"${qmp[@]}" query-status stop \
  pmemsave "{\"val\":0,\"size\":268435456,\"filename\":\"$work/dump.bin\"}" query-status

say "ferry-verify: is every page of the dump intact and every counter in step?"
"$build/tools/ferry-verify" "$work/dump.bin"

say "QMP: cont, quit"
"${qmp[@]}" cont quit
wait "$agent_pid"
agent_pid=
say "Files are in $work. The guest's serial output ($work/serial.txt):"
cat "$work/serial.txt"
