# Shared by the bench scripts, sourced once `build` is set (and `bench_name`,
# which names the work directory): a work directory removed on exit together
# with every process started into `pids`, `qmp` (ferry-qmp), and `wait_sock`
# for a QMP socket to appear (SOCK_WAIT x 50 ms, default 100).
# shellcheck shell=bash
: "${build:?set build before sourcing bench/lib.sh}"
work=$(mktemp -d "/tmp/ferry-${bench_name:-bench}-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

qmp() { "$build/tools/ferry-qmp" "$@"; }
wait_sock() {
  for _ in $(seq 1 "${SOCK_WAIT:-100}"); do
    [ -S "$1" ] && return 0
    sleep 0.05
  done
  return 1
}
