#!/usr/bin/env bash
# Save/restore benchmark (not part of ctest): a paused guest (1 GiB, its RAM
# pre-filled with the test pattern, about three quarters non-zero) saved to a
# file and restored by a fresh agent, as one stream (file: without mapped-ram)
# and with mapped-ram on 1 and 4 threads (multifd-channels), alternating
# within each round. Prints each row's median save and restore time, the
# file's size and allocated bytes, and the stream's time over each mapped-ram
# row's. When the installed QEMU has mapped-ram (9.0 and later) it is named;
# QEMU 7.2, Debian bookworm's, has not, so the baseline is Ferry's stream.
#
#   bench/mapped_ram_bench.sh [BUILD_DIR]    RUNS=3 SIZE=1G DIR= ROWS="stream 1 4" (environment)
#   DIR: where the files go (default: the work directory under /tmp)
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
runs=${RUNS:-3}
size=${SIZE:-1G}
bench_name=mapped-ram
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
out=${DIR:-$work}
accel=none
[ -r /dev/kvm ] && [ -w /dev/kvm ] && accel=kvm

"$build/tools/ferry-testguest" image "$work/guest.img" --ram-top "$size" --ws-pages 2048 \
  --report-every 20 >/dev/null
"$build/tools/ferry-testguest" pattern "$work/ram.bin" --size "$size" --image "$work/guest.img" \
  >/dev/null

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Waits until $1's migration completed; fails on anything else.
wait_done() {
  local info
  for _ in $(seq 1 6000); do
    info=$(qmp "$1" query-migrate)
    case $info in
      *'"status": "completed"'* | *'"status":"completed"'*) return 0 ;;
      *'"status": "failed"'* | *'"status":"failed"'*)
        echo "migration failed: $info" >&2
        return 1
        ;;
    esac
    sleep 0.005
  done
  return 1
}

stop_agent() {
  qmp "$1" quit >/dev/null 2>&1 || true
  wait "${pids[-1]}" 2>/dev/null || true
  unset 'pids[-1]'
}

# $1 row (stream | 1 | 4): prints "SAVE_MS RESTORE_MS FILE_BYTES ALLOCATED".
run_row() {
  local row=$1 caps='[{"capability":"events","state":true}' params='{"max-bandwidth":107374182400'
  if [ "$row" != stream ]; then
    caps+=',{"capability":"mapped-ram","state":true}'
    if [ "$row" -gt 1 ]; then
      caps+=',{"capability":"multifd","state":true}'
      params+=",\"multifd-channels\":$row"
    fi
  fi
  caps+=']'
  params+='}'
  local file=$out/guest.$row sock=$work/src.sock
  rm -f "$file" "$sock"
  "$build/agent/ferry-agent" vm -m "$size" -drive "file=$work/guest.img,format=raw" \
    -object "memory-backend-file,id=ram0,size=$size,mem-path=$work/ram.bin,share=off" \
    -machine memory-backend=ram0 -qmp "unix:$sock,server=on,wait=off" -accel "$accel" -S >&2 &
  pids+=($!)
  wait_sock "$sock" || return 1
  qmp "$sock" migrate-set-capabilities "{\"capabilities\":$caps}" \
    migrate-set-parameters "$params" >/dev/null
  local t0 t1 t2
  t0=$(now_ms)
  qmp "$sock" migrate "{\"uri\":\"file:$file\"}" >/dev/null
  wait_done "$sock" || return 1
  t1=$(now_ms)
  stop_agent "$sock"
  sync "$file"
  sock=$work/dst.sock
  rm -f "$sock"
  "$build/agent/ferry-agent" vm -m "$size" -drive "file=$work/guest.img,format=raw" \
    -qmp "unix:$sock,server=on,wait=off" -accel "$accel" -incoming defer -S >&2 &
  pids+=($!)
  wait_sock "$sock" || return 1
  qmp "$sock" migrate-set-capabilities "{\"capabilities\":$caps}" \
    migrate-set-parameters "$params" >/dev/null
  t2=$(now_ms)
  qmp "$sock" migrate-incoming "{\"uri\":\"file:$file\"}" >/dev/null
  wait_done "$sock" || return 1
  local t3
  t3=$(now_ms)
  stop_agent "$sock"
  echo "$((t1 - t0)) $((t3 - t2)) $(stat -c %s "$file") $(($(stat -c %b "$file") * 512))"
  rm -f "$file"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

read -r -a rows <<<"${ROWS:-stream 1 4}" # "stream" first: the baseline
declare -A save restore bytes alloc
for r in $(seq 1 "$runs"); do
  for row in "${rows[@]}"; do
    line=$(run_row "$row")
    read -r s l b a <<<"$line"
    save[$row]+="$s "
    restore[$row]+="$l "
    bytes[$row]=$b
    alloc[$row]=$a
    echo "round $r $row: save $s ms, restore $l ms" >&2
  done
done

qemu_note="QEMU: none installed"
if command -v qemu-system-x86_64 >/dev/null; then
  qemu_note="QEMU: $(qemu-system-x86_64 --version | head -1) — no mapped-ram before 9.0: Ferry's stream is the baseline"
fi
echo "mapped-ram save/restore, $size guest (paused, pattern), accel $accel, $runs rounds, files in $out"
echo "$qemu_note"
printf '%-12s %10s %12s %14s %14s %12s %12s\n' row save_ms restore_ms file_bytes allocated \
  save_ratio restore_ratio
s0=$(tr ' ' '\n' <<<"${save[stream]}" | grep . | median)
l0=$(tr ' ' '\n' <<<"${restore[stream]}" | grep . | median)
for row in "${rows[@]}"; do
  s=$(tr ' ' '\n' <<<"${save[$row]}" | grep . | median)
  l=$(tr ' ' '\n' <<<"${restore[$row]}" | grep . | median)
  name=$row
  [ "$row" != stream ] && name="mapped $row"
  printf '%-12s %10s %12s %14s %14s %12s %12s\n' "$name" "$s" "$l" "${bytes[$row]}" \
    "${alloc[$row]}" "$(awk -v a="$s0" -v b="$s" 'BEGIN{printf "%.2fx", a/b}')" \
    "$(awk -v a="$l0" -v b="$l" 'BEGIN{printf "%.2fx", a/b}')"
done
