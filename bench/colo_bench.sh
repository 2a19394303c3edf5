#!/usr/bin/env bash
# COLO checkpoint benchmark (not part of ctest): a running test guest (KVM
# where usable, else the -accel none dirtier) rewrites a known working set
# while a COLO pair checkpoints it every DELAY ms for SECONDS; then
# x-colo-lost-heartbeat on the primary ends the pair and the primary prints
# its figures. One row per working set (WS_LIST, in 4 KiB pages): checkpoints
# a second, the guest's pause per checkpoint p50/p99, pages a checkpoint.
#
#   bench/colo_bench.sh [BUILD_DIR]   SECONDS=10 DELAY=100 WS_LIST="256 2048" (environment)
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
seconds=${SECONDS_RUN:-10}
delay=${DELAY:-100}
ws_list=${WS_LIST:-256 2048}
size=256M
bench_name=colo
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
status() {
  qmp "$1" query-migrate | python3 -c 'import json, sys
print(json.loads(sys.stdin.readline())["return"].get("status", "none"))'
}
wait_status() { # socket regex tries
  for _ in $(seq 1 "$3"); do
    [[ $(status "$1") =~ $2 ]] && return 0
    sleep 0.05
  done
  echo "status of $1 stayed $(status "$1")" >&2
  return 1
}

accel=none
"$build/tools/ferry-testguest" kvm >/dev/null 2>&1 && accel=kvm
echo "COLO checkpoints, $(nproc) cores, guest accel=$accel, $size RAM, x-checkpoint-delay $delay ms, ${seconds} s a row"
printf '%-14s %10s %12s %12s %14s\n' "working set" "ckpt/s" "pause p50" "pause p99" "pages/ckpt"

for ws in $ws_list; do
  "$build/tools/ferry-testguest" image "$work/guest.img" --ram-top "$size" --ws-pages "$ws" \
    --report-every 20 >/dev/null
  "$build/tools/ferry-testguest" pattern "$work/ram.bin" --size "$size" \
    --image "$work/guest.img" >/dev/null
  rm -f "$work"/*.sock
  "$build/agent/ferry-agent" vm -m "$size" -drive "file=$work/guest.img,format=raw" \
    -object "memory-backend-file,id=ram0,size=$size,mem-path=$work/ram.bin,share=off" \
    -machine memory-backend=ram0 -qmp "unix:$work/src.sock,server=on,wait=off" \
    -accel "$accel" -serial "file:$work/src.txt" 2>"$work/src.err" &
  pids+=($!)
  "$build/agent/ferry-agent" vm -m "$size" -drive "file=$work/guest.img,format=raw" \
    -qmp "unix:$work/dst.sock,server=on,wait=off" -accel "$accel" -incoming defer \
    -serial "file:$work/dst.txt" 2>"$work/dst.err" &
  pids+=($!)
  wait_sock "$work/src.sock" && wait_sock "$work/dst.sock"
  caps='{"capabilities":[{"capability":"x-colo","state":true}]}'
  qmp "$work/src.sock" migrate-set-capabilities "$caps" \
    migrate-set-parameters "{\"x-checkpoint-delay\":$delay}" >/dev/null
  qmp "$work/dst.sock" migrate-set-capabilities "$caps" \
    migrate-incoming "{\"uri\":\"unix:$work/mig.sock\"}" >/dev/null
  qmp "$work/src.sock" migrate "{\"uri\":\"unix:$work/mig.sock\"}" >/dev/null
  wait_status "$work/src.sock" '^colo$' 1200
  sleep "$seconds"
  qmp "$work/src.sock" x-colo-lost-heartbeat >/dev/null
  wait_status "$work/src.sock" '^completed$' 400
  line=$(grep "COLO primary:" "$work/src.err" | tail -1)
  # "N checkpoints in S s, pause p50 A us p99 B us, P pages a checkpoint"
  read -r n s a b p < <(sed -E 's/.*: ([0-9]+) checkpoints in ([0-9.]+) s, pause p50 ([0-9]+) us p99 ([0-9]+) us, ([0-9]+) pages.*/\1 \2 \3 \4 \5/' <<<"$line")
  printf '%-14s %10.1f %9.1f ms %9.1f ms %14s\n' "$((ws * 4)) KiB" "$(echo "$n / $s" | bc -l)" \
    "$(echo "$a / 1000" | bc -l)" "$(echo "$b / 1000" | bc -l)" "$p"
  qmp "$work/src.sock" quit >/dev/null 2>&1 || true
  qmp "$work/dst.sock" quit >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
done
