#!/usr/bin/env bash
# Migration benchmark (not part of ctest): a paused 1 GiB guest whose RAM is
# pre-filled with the test pattern (about three quarters non-zero) migrated
# over loopback TCP between two ferry-agent processes with 1 stream and with
# 2 and 4 multifd channels; when qemu-system-x86_64 is installed, QEMU
# migrates the very same memory image in the same run, alternating with
# Ferry, and the ratio of the medians and of each pair are printed. For both
# VMMs and both sides: minor page faults (per GiB of page data) and CPU
# seconds spent during the migration (/proc/PID/stat). After each pair, the
# machine's floor for the same row (bench/wire_floor.cpp: the page data over
# as many plain loopback TCP streams into fresh memory, and the first touch of
# the guest's size), so a row that cannot reach a ratio shows how far above
# the wire each VMM lands. Then a live run: a
# running guest dirtying its working set, its downtime against the limit
# (ROWS=live runs just that).
#
#   bench/migrate_bench.sh [BUILD_DIR]      RUNS=3 SIZE=1G ROWS= NO_QEMU= ACCEL= (environment)
#   SOCK_WAIT=N: wait N x 50 ms for the agents' QMP sockets (default 100; more under valgrind)
#   HUGE=1: both VMMs' destinations keep guest RAM in 2 MiB huge pages
#   (memory-backend-memfd,hugetlb=on; needs SIZE of free huge pages:
#   vm.nr_hugepages)
#   PORT=N: the destination's port (default 17110: below the kernel's ephemeral
#   range, where a client connection of some other program, lingering in
#   TIME-WAIT, could hold it)
#
# max-bandwidth is set to 100 GiB/s on both systems (QEMU's default of
# 128 MiB/s would measure the limiter, not the migration).
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
runs=${RUNS:-3}
size=${SIZE:-1G}
bench_name=migrate
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bw=107374182400

"$build/tools/ferry-testguest" image "$work/guest.img" --ram-top "$size" --ws-pages 2048 \
  --report-every 20 >/dev/null
"$build/tools/ferry-testguest" pattern "$work/ram.bin" --size "$size" --image "$work/guest.img" \
  >/dev/null

port=${PORT:-17110}

# Migrates between the running source and destination with $1 multifd
# channels (0 = one stream) and prints the one result line (total-time,
# downtime, bytes, usage): the VMMs' own stdout goes to stderr, so a line
# either prints cannot be read as the result.
migrate_once() {
  local channels=$1 src_sock=$work/src.sock dst_sock=$work/dst.sock caps params
  if ! wait_sock "$src_sock" || ! wait_sock "$dst_sock"; then
    echo "the agents did not start (see above)" >&2
    return 1
  fi
  caps='[{"capability":"events","state":true}'
  [ "$channels" -gt 0 ] && caps+=',{"capability":"multifd","state":true}'
  caps+=']'
  params="{\"max-bandwidth\":$bw${extra_params:-}"
  [ "$channels" -gt 0 ] && params+=",\"multifd-channels\":$channels"
  params+='}'
  for s in "$src_sock" "$dst_sock"; do
    qmp "$s" migrate-set-capabilities "{\"capabilities\":$caps}" \
      migrate-set-parameters "$params" >/dev/null
  done
  local reply
  reply=$(qmp "$dst_sock" migrate-incoming "{\"uri\":\"tcp:127.0.0.1:$port\"}")
  case $reply in
    *'"error"'*)
      echo "migrate-incoming failed: $reply" >&2
      return 1
      ;;
  esac
  # What each side costs during the migration alone (its start-up is apart).
  local src_before dst_before
  src_before=$(proc_usage "${pids[0]}")
  dst_before=$(proc_usage "${pids[1]}")
  qmp "$src_sock" migrate "{\"uri\":\"tcp:127.0.0.1:$port\"}" >/dev/null
  # The poll starts no interpreter: on 2 cores a Python start-up per round
  # took a quarter of the CPU the migration had.
  local info status=
  for _ in $(seq 1 1200); do
    info=$(qmp "$src_sock" query-migrate)
    case $info in
      *'"status": "completed"'* | *'"status":"completed"'*) status=completed ;;
      *'"status": "failed"'* | *'"status":"failed"'*) status=failed ;;
    esac
    [ -n "$status" ] && break
    sleep 0.05
  done
  [ "$status" = completed ] || { echo "migration ${status:-unfinished}: $info" >&2; return 1; }
  # QEMU 7.2 reports completed a moment before it has worked out the
  # total-time (0 until then): a fast run caught in that moment would be
  # lost, so ask again.
  for _ in $(seq 1 40); do
    case $info in
      *'"total-time": 0,'* | *'"total-time":0,'*) ;;
      *) break ;;
    esac
    sleep 0.05
    info=$(qmp "$src_sock" query-migrate)
  done
  # The destination may still be loading the last pages: its figures once
  # it reports completed too.
  for _ in $(seq 1 200); do
    qmp "$dst_sock" query-migrate | grep -q '"completed"' && break
    sleep 0.05
  done
  local usage
  usage="$(usage_since "${pids[0]}" "$src_before") $(usage_since "${pids[1]}" "$dst_before")"
  echo "$info" | python3 -c 'import json, sys
r = json.loads(sys.stdin.readline())["return"]
print(r["total-time"], r.get("downtime", 0), r["ram"]["normal-bytes"], r["ram"]["transferred"],
      sys.argv[1])
if len(sys.argv) > 2: print(json.dumps(r), file=sys.stderr)' "$usage" ${BENCH_VERBOSE:+-v}
}

# Minor page faults and CPU clock ticks (user + system) of a process so far,
# from /proc/PID/stat (fields 10, 14, 15; the name in field 2 has no spaces
# for either VMM).
proc_usage() { awk '{print $10, $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo "0 0"; }
ticks=$(getconf CLK_TCK)
# "FAULTS CPU_SECONDS" of a process since `before` (proc_usage's output).
usage_since() {
  local now
  now=$(proc_usage "$1")
  awk -v a="$2" -v b="$now" -v hz="$ticks" 'BEGIN {
    split(a, x, " "); split(b, y, " "); printf "%d %.2f", y[1] - x[1], (y[2] - x[2]) / hz }'
}

stop_all() {
  qmp "$work/src.sock" quit >/dev/null 2>&1 || true
  qmp "$work/dst.sock" quit >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  rm -f "$work"/*.sock
}

# TLS credentials (QEMU's layout, so both systems read the same files).
bash "$(dirname "$0")/../deploy/pki/ferry-pki.sh" "$work/pki" >/dev/null
tls_objects() { # client|server
  [ -n "${tls:-}" ] && echo "-object tls-creds-x509,id=tls0,dir=$work/pki,endpoint=$1"
  return 0
}

# A paused guest runs no instructions: without a usable KVM (one that
# answers, not just a /dev/kvm that opens) both agents take -accel none and
# the migration is the same (ACCEL= overrides).
kvm_usable=
"$build/tools/ferry-testguest" kvm >/dev/null 2>&1 && kvm_usable=1
accel=${ACCEL:-}
if [ -z "$accel" ]; then
  accel=none
  [ -n "$kvm_usable" ] && accel=kvm
fi

# The destinations' RAM: huge pages with HUGE=1 (the same object for both VMMs).
dst_ram=()
[ -n "${HUGE:-}" ] && dst_ram=(-object "memory-backend-memfd,id=ram0,size=$size,hugetlb=on"
  -machine memory-backend=ram0)

ferry_run() {
  local channels=$1 live=${2:-}
  local start=(-S)
  [ -n "$live" ] && start=()
  "$build/agent/ferry-agent" vm -m "$size" -drive "file=$work/guest.img,format=raw" \
    -object "memory-backend-file,id=ram0,size=$size,mem-path=$work/ram.bin,share=off" \
    -machine memory-backend=ram0 -qmp "unix:$work/src.sock,server=on,wait=off" \
    -accel "$accel" -serial "file:$work/src.txt" "${start[@]}" $(tls_objects client) >&2 &
  pids+=($!)
  "$build/agent/ferry-agent" vm -m "$size" -drive "file=$work/guest.img,format=raw" \
    -qmp "unix:$work/dst.sock,server=on,wait=off" -accel "$accel" -incoming defer -S \
    "${dst_ram[@]}" $(tls_objects server) >&2 &
  pids+=($!)
  if [ -n "$live" ]; then
    for _ in $(seq 1 300); do grep -q "pass 00000028" "$work/src.txt" 2>/dev/null && break; sleep 0.1; done
  fi
  local rc=0
  migrate_once "$channels" || rc=$?
  stop_all
  return $rc
}

qemu_run() {
  local channels=$1
  local common=(-nodefaults -display none -machine pc,accel=tcg -m "$size")
  qemu-system-x86_64 "${common[@]}" -S \
    -object "memory-backend-file,id=ram0,size=$size,mem-path=$work/ram.bin,share=off" \
    -machine memory-backend=ram0 -qmp "unix:$work/src.sock,server=on,wait=off" \
    $(tls_objects client) >&2 &
  pids+=($!)
  local qdst=(-object "memory-backend-ram,id=ram0,size=$size" -machine memory-backend=ram0)
  [ -n "${HUGE:-}" ] && qdst=("${dst_ram[@]}")
  qemu-system-x86_64 "${common[@]}" -incoming defer $(tls_objects server) \
    "${qdst[@]}" -qmp "unix:$work/dst.sock,server=on,wait=off" >&2 &
  pids+=($!)
  local rc=0
  migrate_once "$channels" || rc=$?
  stop_all
  return $rc
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# "SRC_FLT/GiB DST_FLT/GiB SRC_CPU DST_CPU" (medians over the runs) from the
# runs' "SRC_FLT SRC_CPU DST_FLT DST_CPU" and the bytes of page data moved.
cost_line() {
  local bytes=$1
  shift
  local col
  for col in 1 3 2 4; do
    printf '%s\n' "$@" | awk -v c="$col" '{print $c}' | median
  done | paste -sd' ' | awk -v b="$bytes" '{
    g = b / 1073741824; if (g <= 0) g = 1
    printf "faults/GiB src %7.0f dst %7.0f  cpu s src %5.2f dst %5.2f", $1 / g, $2 / g, $3, $4 }'
}

have_qemu=
[ -z "${NO_QEMU:-}" ] && command -v qemu-system-x86_64 >/dev/null && have_qemu=1
echo "paused ${size} guest, pattern-filled, loopback TCP, -accel $accel, median of $runs runs"
printf '%-10s %12s %12s %12s %12s %8s\n' setup ferry_ms ferry_MB/s qemu_ms qemu_MB/s ratio
# label | multifd channels | extra migrate-set-parameters members | tls
rows=("1 stream|0||" "multifd 2|2||" "multifd 4|4||"
  "2 + zstd|2|,\"multifd-compression\":\"zstd\"|"
  "2 + TLS|2|,\"tls-creds\":\"tls0\"|tls"
  "2+TLS+zstd|2|,\"tls-creds\":\"tls0\",\"multifd-compression\":\"zstd\"|tls")
declare -A ferry_ms ferry_wire ferry_data costs pairs qemu_failed floors qemu_med
size_bytes=$(numfmt --from=iec "$size")
measured=()
for row in "${rows[@]}"; do
  IFS='|' read -r label ch extra_params tls <<<"$row"
  # ROWS='multifd 2|2 + TLS' measures just those setups.
  if [ -n "${ROWS:-}" ] && ! grep -qxF "$label" <<<"${ROWS//|/$'\n'}"; then continue; fi
  ft=() ; qt=() ; fu=() ; qu=() ; pr=() ; fw=() ; tt=()
  bytes=0
  for _ in $(seq 1 "$runs"); do
    # $(...) waits for the run to finish (and its agents to exit). The two
    # VMMs alternate, so that a drift of the machine hits both alike.
    out=$(ferry_run "$ch")
    read -r t _ b w u <<<"$out"
    ft+=("$t"); bytes=$b; wire=$w; fu+=("$u")
    if [ -n "$have_qemu" ]; then
      # A QEMU run that fails or gives no result (runs have failed to
      # greet, and given a 0) is retried once; one that fails twice is left
      # out of the medians and counted, never taken as 0 ms.
      q=
      if out=$(qemu_run "$ch") || out=$(qemu_run "$ch"); then
        read -r q _ _ _ u <<<"$out"
      fi
      if [[ $q =~ ^[0-9]+$ ]] && [ "$q" -gt 0 ]; then
        qt+=("$q"); qu+=("$u")
        pr+=("$(awk -v f="$t" -v q="$q" 'BEGIN {printf "%.2f", q / f}')")
      else
        echo "QEMU run left out (${label}): result '${out:-}'" >&2
        qemu_failed[$label]=$((${qemu_failed[$label]:-0} + 1))
        pr+=("-")
      fi
    fi
    # The floor right after the pair, on the same memory the two just freed.
    if read -r w1 t1 < <("$build/bench/ferry-wire-floor" "$b" "$((ch > 0 ? ch : 1))" \
      "$size_bytes" "$((port + 1))"); then
      fw+=("$w1"); tt+=("$t1")
    fi
  done
  [ ${#fw[@]} -gt 0 ] && floors[$label]="$(printf '%s\n' "${fw[@]}" | median) $(printf '%s\n' \
    "${tt[@]}" | median)"
  costs[$label]="$(cost_line "$bytes" "${fu[@]}")"
  [ -n "$have_qemu" ] && [ ${#qt[@]} -gt 0 ] && costs[$label]+="   qemu $(cost_line "$bytes" "${qu[@]}")"
  pairs[$label]="${pr[*]}"
  measured+=("$label")
  f=$(printf '%s\n' "${ft[@]}" | median)
  fr=$(awk -v b="$bytes" -v t="$f" 'BEGIN {printf "%.0f", b / 1e6 / (t / 1000)}')
  if [ -n "$have_qemu" ] && [ ${#qt[@]} -gt 0 ]; then
    q=$(printf '%s\n' "${qt[@]}" | median)
    qr=$(awk -v b="$bytes" -v t="$q" 'BEGIN {printf "%.0f", b / 1e6 / (t / 1000)}')
    ratio=$(awk -v f="$f" -v q="$q" 'BEGIN {printf "%.2fx", q / f}')
    qemu_med[$label]=$q
  else
    q=n/a; qr=n/a; ratio="(no qemu)"
  fi
  printf '%-10s %12s %12s %12s %12s %8s\n' "$label" "$f" "$fr" "$q" "$qr" "$ratio"
  ferry_ms[$label]=$f
  ferry_wire[$label]=$wire
  ferry_data[$label]=$bytes
done
extra_params= tls=
echo "ratio = QEMU total-time / Ferry total-time (higher is better for Ferry)"
if [ -n "$have_qemu" ]; then
  echo "per-pair ratios (each Ferry run against the QEMU run right after it):"
  for label in "${measured[@]}"; do
    printf '  %-10s %s' "$label" "${pairs[$label]}"
    [ -n "${qemu_failed[$label]:-}" ] &&
      printf '   (%s QEMU run(s) failed twice: left out, "-")' "${qemu_failed[$label]}"
    echo
  done
fi
echo "the machine's floor (medians; the row's page data over as many plain loopback TCP"
echo "streams into fresh memory, and one thread's first touch of ${size} fresh memory):"
for label in "${measured[@]}"; do
  [ -n "${floors[$label]:-}" ] || continue
  read -r w t <<<"${floors[$label]}"
  awk -v l="$label" -v w="$w" -v t="$t" -v f="${ferry_ms[$label]}" -v q="${qemu_med[$label]:-}" \
    'BEGIN {printf "  %-10s wire %5.0f ms  first touch %5.0f ms  Ferry at %.2fx the wire", l, w, t, f / w
      if (q != "") printf ", QEMU at %.2fx", q / w
      printf "\n" }'
done
echo "during the migration (medians; faults per GiB of page data moved):"
for label in "${measured[@]}"; do printf '  %-10s ferry %s\n' "$label" "${costs[$label]}"; done
[ -n "${ferry_ms[multifd 2]:-}" ] && [ -n "${ferry_ms[2 + TLS]:-}" ] &&
  awk -v p="${ferry_ms[multifd 2]}" -v t="${ferry_ms[2 + TLS]}" \
  'BEGIN {printf "Ferry TLS throughput on 2 channels: %.0f%% of plain\n", 100 * p / t}'
[ -n "${ferry_ms[2 + zstd]:-}" ] &&
  awk -v d="${ferry_data[2 + zstd]}" -v w="${ferry_wire[2 + zstd]}" -v t="${ferry_ms[2 + zstd]}" \
  'BEGIN {printf "Ferry zstd on the test pattern: %.0f MB of pages in %.0f MB on the wire (ratio %.3f), %.0f MB/s\n", d / 1e6, w / 1e6, d / w, d / 1e6 / (t / 1000)}'

if [ -z "${ROWS:-}" ] || grep -qxF live <<<"${ROWS//|/$'\n'}"; then
  # The guest runs (-accel $accel: the KVM counter guest or the -accel none
  # dirtier) and keeps dirtying its working set; its downtime must stay
  # within downtime-limit (QEMU's default, 300 ms, left as it is).
  echo
  echo "live guest (-accel $accel) dirtying an 8 MiB working set, multifd 2:"
  out=$(ferry_run 2 live)
  read -r t d _ <<<"$out"
  verdict=within
  [ "$d" -le 300 ] || verdict=OVER
  echo "  ferry total-time ${t} ms, downtime ${d} ms (downtime-limit 300 ms: ${verdict})"
fi
