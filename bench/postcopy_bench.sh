#!/usr/bin/env bash
# Postcopy benchmark (not part of ctest). Rows, each the median of RUNS:
#  - hot: a running test guest (KVM where usable, else the -accel none
#    dirtier) rewriting an 8 MiB working set faster than max-bandwidth
#    (32 MiB/s, downtime-limit 1 ms) carries it: precopy cannot finish.
#    After 2 passes migrate-start-postcopy; the owed pages follow at
#    max-postcopy-bandwidth 8 MiB/s. Printed: total time, downtime, the
#    destination's postcopy-blocktime and its page-request latency p50/p99
#    (fault to page placed, from its log), without and with postcopy-preempt.
#    With qemu-system-x86_64 installed, QEMU runs the same guest image the
#    same way under TCG (QEMU's KVM on this kind of machine pays each first
#    touch of guest RAM so dearly that the guest's fill takes minutes);
#    QEMU 7.2 does not log request latency (n/a).
#  - paused: the pattern-filled SIZE guest, paused, switched to postcopy
#    0.2 s into a precopy held to 256 MiB/s (so that most pages move in
#    postcopy, whose bandwidth is unlimited); Ferry and, when
#    qemu-system-x86_64 is installed, QEMU on the same memory image,
#    alternating in the same run: total time and downtime, and their ratio.
#
#   bench/postcopy_bench.sh [BUILD_DIR]   RUNS=3 SIZE=1G NO_QEMU= (environment)
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
runs=${RUNS:-3}
size=${SIZE:-1G}
bench_name=postcopy
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
port=${PORT:-17120}
# The named member of the return of `query-migrate` on socket $1 (path
# through dicts with /), or nothing.
member() {
  qmp "$1" query-migrate | python3 -c 'import json, sys
r = json.loads(sys.stdin.readline())["return"]
for k in sys.argv[1].split("/"):
    r = r.get(k) if isinstance(r, dict) else None
print("" if r is None else r)' "$2"
}
wait_member() { # socket member value-regex tries
  local v
  for _ in $(seq 1 "$4"); do
    v=$(member "$1" "$2")
    [[ $v =~ $3 ]] && return 0
    sleep 0.05
  done
  echo "$2 stayed '$v'" >&2
  return 1
}
stop_all() {
  qmp "$work/src.sock" quit >/dev/null 2>&1 || true
  qmp "$work/dst.sock" quit >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  rm -f "$work"/*.sock
}

kvm_usable=
"$build/tools/ferry-testguest" kvm >/dev/null 2>&1 && kvm_usable=1
accel=none
[ -n "$kvm_usable" ] && accel=kvm

# $1 image, $2 ram file, $3 size, $4 live (empty: paused, -S)
ferry_pair() {
  # A live guest runs on at the destination from the switch (and faults
  # there); a paused one stays paused on both sides.
  local start=(-S)
  [ -n "$4" ] && start=()
  "$build/agent/ferry-agent" vm -m "$3" -drive "file=$1,format=raw" \
    -object "memory-backend-file,id=ram0,size=$3,mem-path=$2,share=off" \
    -machine memory-backend=ram0 -qmp "unix:$work/src.sock,server=on,wait=off" \
    -accel "$accel" -serial "file:$work/src.txt" "${start[@]}" >&2 &
  pids+=($!)
  "$build/agent/ferry-agent" vm -m "$3" -drive "file=$1,format=raw" \
    -qmp "unix:$work/dst.sock,server=on,wait=off" -accel "$accel" -incoming defer "${start[@]}" \
    -serial "file:$work/dst.txt" 2>"$work/dst.err" &
  pids+=($!)
}

# $1 image, $2 ram file, $3 size, $4 live (empty: paused, -S, RAM from $2;
# live: the guest boots from $1 and fills its RAM itself)
qemu_pair() {
  local common=(-nodefaults -display none -machine "pc,accel=tcg" -m "$3")
  local src=() dst=()
  if [ -n "${4:-}" ]; then
    # Both ends have the disk and a serial port: QEMU refuses a stream whose
    # devices differ from its own.
    common+=(-drive "file=$1,format=raw,if=ide,snapshot=on")
    src=(-serial "file:$work/src.txt" -object "memory-backend-ram,id=ram0,size=$3")
    dst=(-serial "file:$work/dst.txt")
  else
    src=(-S -object "memory-backend-file,id=ram0,size=$3,mem-path=$2,share=off")
  fi
  qemu-system-x86_64 "${common[@]}" "${src[@]}" -machine memory-backend=ram0 \
    -qmp "unix:$work/src.sock,server=on,wait=off" >&2 &
  pids+=($!)
  qemu-system-x86_64 "${common[@]}" "${dst[@]}" -incoming defer \
    -object "memory-backend-ram,id=ram0,size=$3" -machine memory-backend=ram0 \
    -qmp "unix:$work/dst.sock,server=on,wait=off" 2>"$work/dst.err" &
  pids+=($!)
}

# Runs one postcopy migration between the started pair and prints
# "TOTAL_MS DOWNTIME_MS BLOCKTIME_MS P50_MS P99_MS" (n/a where not known).
# $1 caps JSON members, $2 source parameters JSON members, $3 when to
# switch: "passes N" or "after SECONDS".
postcopy_once() {
  if ! wait_sock "$work/src.sock" || ! wait_sock "$work/dst.sock"; then
    echo "no QMP sockets" >&2
    return 1
  fi
  local caps="[{\"capability\":\"postcopy-ram\",\"state\":true}$1]"
  qmp "$work/src.sock" migrate-set-capabilities "{\"capabilities\":$caps}" \
    migrate-set-parameters "{$2}" >/dev/null
  qmp "$work/dst.sock" migrate-set-capabilities "{\"capabilities\":$caps}" \
    migrate-set-capabilities \
    '{"capabilities":[{"capability":"postcopy-blocktime","state":true}]}' >/dev/null
  qmp "$work/dst.sock" migrate-incoming "{\"uri\":\"tcp:127.0.0.1:$port\"}" >/dev/null
  qmp "$work/src.sock" migrate "{\"uri\":\"tcp:127.0.0.1:$port\"}" >/dev/null
  read -r how n <<<"$3"
  if [ "$how" = passes ]; then
    wait_member "$work/src.sock" ram/dirty-sync-count "^([$n-9]|[1-9][0-9]+)$" 1200 || return 1
  else
    sleep "$n"
  fi
  qmp "$work/src.sock" migrate-start-postcopy >/dev/null
  wait_member "$work/src.sock" status '^(completed|failed)$' 2400 || return 1
  [ "$(member "$work/src.sock" status)" = completed ] || {
    echo "postcopy failed: $(qmp "$work/src.sock" query-migrate)" >&2
    return 1
  }
  wait_member "$work/dst.sock" status '^completed$' 400 || true
  local total down block p50=n/a p99=n/a
  total=$(member "$work/src.sock" total-time)
  down=$(member "$work/src.sock" downtime)
  block=$(member "$work/dst.sock" postcopy-blocktime)
  local line
  line=$(grep -o 'latency p50 [0-9.]* ms p99 [0-9.]* ms' "$work/dst.err" 2>/dev/null | tail -1 || true)
  [ -n "$line" ] && read -r _ _ p50 _ _ p99 _ <<<"$line"
  echo "$total $down ${block:-n/a} $p50 $p99"
}

median() { grep -E '^[0-9.]+$' | sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "n/a")}'; }
col() { printf '%s\n' "${@:2}" | awk -v c="$1" '{print $c}' | median; }

echo "postcopy, loopback TCP, -accel $accel, median of $runs runs"

# Hot rows.
"$build/tools/ferry-testguest" image "$work/hot.img" --ram-top 64M --ws-pages 2048 \
  --report-every 20 >/dev/null
"$build/tools/ferry-testguest" pattern "$work/hot.bin" --size 64M --image "$work/hot.img" >/dev/null
have_qemu=
[ -z "${NO_QEMU:-}" ] && command -v qemu-system-x86_64 >/dev/null && have_qemu=1
printf '%-32s %9s %9s %10s %9s %9s\n' "hot guest (64 MiB, 8 MiB ws)" total_ms down_ms block_ms req_p50 req_p99
vmms=(ferry)
[ -n "$have_qemu" ] && vmms+=(qemu)
for preempt in "" ",{\"capability\":\"postcopy-preempt\",\"state\":true}"; do
  ferry_results=() qemu_results=()
  for _ in $(seq 1 "$runs"); do
    # Ferry and QEMU alternate within each run: both see the machine alike.
    for vmm in "${vmms[@]}"; do
      rm -f "$work/src.txt"
      if [ "$vmm" = ferry ]; then
        ferry_pair "$work/hot.img" "$work/hot.bin" 64M live
      else
        qemu_pair "$work/hot.img" "" 64M live
      fi
      for _ in $(seq 1 600); do grep -q "pass 00000028" "$work/src.txt" 2>/dev/null && break; sleep 0.1; done
      out=$(postcopy_once "$preempt" \
        '"max-bandwidth":33554432,"downtime-limit":1,"max-postcopy-bandwidth":8388608' \
        "passes 2") || out=""
      stop_all
      if [ -n "$out" ] && [ "$vmm" = ferry ]; then ferry_results+=("$out"); fi
      if [ -n "$out" ] && [ "$vmm" = qemu ]; then qemu_results+=("$out"); fi
    done
  done
  for vmm in "${vmms[@]}"; do
    label="ferry (-accel $accel)"
    results=("${ferry_results[@]}")
    if [ "$vmm" = qemu ]; then
      label="qemu (tcg)"
      results=("${qemu_results[@]}")
    fi
    [ -n "$preempt" ] && label="$label + preempt"
    if [ ${#results[@]} -eq 0 ]; then
      printf '%-32s %s\n' "$label" "no run finished"
      continue
    fi
    printf '%-32s %9s %9s %10s %9s %9s\n' "$label" "$(col 1 "${results[@]}")" \
      "$(col 2 "${results[@]}")" "$(col 3 "${results[@]}")" "$(col 4 "${results[@]}")" \
      "$(col 5 "${results[@]}")"
  done
done

# Paused rows: the same image for both VMMs.
"$build/tools/ferry-testguest" image "$work/guest.img" --ram-top "$size" --ws-pages 2048 \
  --report-every 20 >/dev/null
"$build/tools/ferry-testguest" pattern "$work/ram.bin" --size "$size" --image "$work/guest.img" \
  >/dev/null
echo
echo "paused ${size} guest, pattern-filled, postcopy 0.2 s into a 256 MiB/s precopy:"
printf '%-10s %10s %10s %10s %10s %8s\n' "" ferry_ms ferry_down qemu_ms qemu_down ratio
fr=() ; qr=()
paused_params='"max-bandwidth":268435456,"downtime-limit":1,"max-postcopy-bandwidth":0'
for _ in $(seq 1 "$runs"); do
  ferry_pair "$work/guest.img" "$work/ram.bin" "$size" ""
  out=$(postcopy_once "" "$paused_params" "after 0.2") || out=""
  stop_all
  [ -n "$out" ] && fr+=("$out")
  if [ -n "$have_qemu" ]; then
    qemu_pair "$work/guest.img" "$work/ram.bin" "$size"
    out=$(postcopy_once "" "$paused_params" "after 0.2") || out=""
    stop_all
    [ -n "$out" ] && qr+=("$out") || echo "QEMU run left out" >&2
  fi
done
f=$( [ ${#fr[@]} -gt 0 ] && col 1 "${fr[@]}" || echo n/a)
fd=$( [ ${#fr[@]} -gt 0 ] && col 2 "${fr[@]}" || echo n/a)
q=n/a qd=n/a ratio="(no qemu)"
if [ ${#qr[@]} -gt 0 ]; then
  q=$(col 1 "${qr[@]}")
  qd=$(col 2 "${qr[@]}")
  ratio=$(awk -v f="$f" -v q="$q" 'BEGIN {printf "%.2fx", q / f}')
fi
printf '%-10s %10s %10s %10s %10s %8s\n' postcopy "$f" "$fd" "$q" "$qd" "$ratio"
echo "ratio = QEMU total-time / Ferry total-time (higher is better for Ferry)"
