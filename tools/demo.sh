#!/usr/bin/env bash
# Ferry's demo: a three-host cluster on this machine. Three ferry-agent
# daemons (each in its own network namespace when this machine allows it,
# otherwise on loopback ports), ferry-orchestrator, and a Prometheus server
# scraping all four with Ferry's alert rules. A few test guests start on
# host-a and host-b, host-a is evacuated with ferryctl, every moved guest is
# verified page by page on its new host, and the demo shows what Prometheus
# recorded and where to look.
#
#   tools/demo.sh [BUILD_DIR]
#   FERRY_DEMO_KEEP=1 tools/demo.sh build   # leave the cluster running (Ctrl-C ends it)
#   FERRY_DEMO_CLEAN=1: remove the demo's files at the end (the test does)
#   FERRY_DEMO_NO_NETNS=1 / FERRY_DEMO_NO_KVM=1: loopback / -accel none even
#   where namespaces / KVM are available
#
# Ports (loopback): orchestrator API and metrics 127.0.0.1:47300, Prometheus
# 127.0.0.1:19090; override with FERRY_DEMO_API_PORT / FERRY_DEMO_PROM_PORT
# (FERRY_DEMO_API_PORT=0: any free port, read back from the orchestrator).
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/ferry-demo-XXXXXX)
api_port=${FERRY_DEMO_API_PORT:-47300}
prom_port=${FERRY_DEMO_PROM_PORT:-19090}
hosts=(host-a host-b host-c)
tag=fd$$ # names of this run's namespaces and links
pids=()
netns=

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  # Each daemon gets 15 s to stop; one that does not is named and killed, so
  # the demo (and its test) never waits on it for ever.
  local deadline=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "demo: process $pid ($(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-80)) ignored SIGTERM for 15 s: killed" >&2
      kill -9 "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  # Guests outlive their agents (as QEMU outlives libvirtd): end them too.
  for rec in "$work"/*-run/*.guest; do
    [ -e "$rec" ] || continue
    pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$rec")
    [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null
  done
  if [ -n "$netns" ]; then
    for i in 0 1 2; do ip netns delete "$tag-$i" 2>/dev/null; done
    ip link delete "$tag-br" 2>/dev/null
  fi
  [ -z "${FERRY_DEMO_CLEAN:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in ferry-agent ferry-orchestrator; do
  [ -x "$build/agent/$tool" ] || [ -x "$build/orchestrator/$tool" ] ||
    { echo "demo: build first (cmake --build $build)" >&2; exit 1; }
done
ctl() {
  "$build/tools/ferryctl" --server "127.0.0.1:$api_port" --ca "$work/pki/orchestrator-ca.pem" \
    --cert "$work/pki/operator-demo-cert.pem" --key "$work/pki/operator-demo-key.pem" "$@"
}

# --- Network: a namespace per host on a bridge, or loopback ---------------
# Each namespace gets 10.77.<n>.<1x>/24 behind a bridge whose address the
# root namespace (orchestrator, Prometheus) uses to reach them.
net=$((($$ % 200) + 20))
if [ -z "${FERRY_DEMO_NO_NETNS:-}" ] && [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null &&
  ip link add "$tag-br" type bridge 2>/dev/null; then
  netns=1
  ip addr add "10.77.$net.1/24" dev "$tag-br"
  ip link set "$tag-br" up
  for i in 0 1 2; do
    ip netns add "$tag-$i"
    ip link add "$tag-v$i" type veth peer name eth0 netns "$tag-$i"
    ip link set "$tag-v$i" master "$tag-br" up
    ip -n "$tag-$i" addr add "10.77.$net.1$i/24" dev eth0
    ip -n "$tag-$i" link set eth0 up
    ip -n "$tag-$i" link set lo up
  done
  say "Network: one namespace per host (${tag}-0..2, 10.77.$net.10-12) on bridge $tag-br"
else
  say "Network namespaces are not available here (needs root and iproute2): hosts share loopback"
fi
addr_of() { if [ -n "$netns" ]; then echo "10.77.$net.1$1"; else echo 127.0.0.1; fi; }
# exec: started in the background, the subshell becomes the agent itself, so
# that cleanup's kill reaches it.
in_host() { if [ -n "$netns" ]; then exec ip netns exec "$tag-$1" "${@:2}"; else exec "${@:2}"; fi; }

# --- PKI: the cluster CA and one identity per node ------------------------
say "PKI: one CA per role and an identity per node (deploy/pki/ferry-pki.sh cluster)"
bash "$src/deploy/pki/ferry-pki.sh" cluster "$work/pki" \
  --host host-a --host host-b --host host-c --operator demo --viewer prometheus >/dev/null
ls "$work/pki"

# --- Agents ---------------------------------------------------------------
say "Starting three agents"
for i in 0 1 2; do
  h=${hosts[$i]}
  a=$(addr_of "$i")
  cat >"$work/$h.toml" <<EOF
host = "$h"
[control]
listen = "$a:0"
[tls]
ca = "$work/pki/orchestrator-ca.pem"
cert = "$work/pki/$h-cert.pem"
key = "$work/pki/$h-key.pem"
[paths]
state_dir = "$work/$h-state"
run_dir = "$work/$h-run"
images = ["$work"]
[metrics]
listen = "$a:0"
[migration]
ca = "$work/pki/hosts-ca.pem"
address = "$a"
port_min = $((21000 + i * 100))
port_max = $((21000 + i * 100 + 99))
[capacity]
memory = "1G"
EOF
  in_host "$i" "$build/agent/ferry-agent" --config "$work/$h.toml" \
    >"$work/$h.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  h=${hosts[$i]}
  for _ in $(seq 1 100); do [ -s "$work/$h-run/metrics.port" ] && break; sleep 0.1; done
  [ -s "$work/$h-run/metrics.port" ] || { cat "$work/$h.log"; exit 1; }
  echo "$h: control $(addr_of "$i"):$(cat "$work/$h-run/control.port")," \
    "metrics http://$(addr_of "$i"):$(cat "$work/$h-run/metrics.port")/metrics"
done

# --- Orchestrator ---------------------------------------------------------
say "Starting the orchestrator"
{
  cat <<EOF
[http]
listen = "127.0.0.1:$api_port"
cert = "$work/pki/orchestrator-cert.pem"
key = "$work/pki/orchestrator-key.pem"
client_ca = "$work/pki/clients-ca.pem"   # operators and viewers by certificate
[journal]
path = "$work/journal.db"
[tls]
ca = "$work/pki/hosts-ca.pem"
cert = "$work/pki/orchestrator-cert.pem"
key = "$work/pki/orchestrator-key.pem"
[policy]
max_bandwidth = 4194304    # 4 MiB/s per migration: slow enough to watch
EOF
  for i in 0 1 2; do
    printf '[[agents]]\nname = "%s"\naddress = "%s:%s"\n' "${hosts[$i]}" "$(addr_of "$i")" \
      "$(cat "$work/${hosts[$i]}-run/control.port")"
  done
} >"$work/orchestrator.toml"
"$build/orchestrator/ferry-orchestrator" --config "$work/orchestrator.toml" \
  >"$work/orchestrator.log" 2>&1 &
orch=$!
pids+=("$orch")
# Its start line names the port it bound (port 0 asks the kernel for one).
for _ in $(seq 1 200); do
  grep -q '^ferry-orchestrator: API on ' "$work/orchestrator.log" && break
  kill -0 "$orch" 2>/dev/null || break
  sleep 0.1
done
bound=$(sed -n 's|^ferry-orchestrator: API on https://[^:]*:\([0-9]*\)/.*|\1|p' "$work/orchestrator.log")
if [ -z "$bound" ]; then
  echo "demo: the orchestrator did not start; its log:" >&2
  cat "$work/orchestrator.log" >&2
  exit 1
fi
api_port=$bound
echo "API and /metrics on https://127.0.0.1:$api_port: ferryctl with an operator's certificate," \
  "Prometheus with a viewer's"
for _ in $(seq 1 100); do
  [ "$(ctl hosts -o json 2>/dev/null | grep -o '"up":true' | wc -l)" -eq 3 ] && break
  sleep 0.2
done
ctl hosts

# --- Prometheus -----------------------------------------------------------
prom=
if command -v prometheus >/dev/null; then
  say "Starting Prometheus on http://127.0.0.1:$prom_port (scrapes every 2 s, Ferry's alert rules)"
  {
    printf 'global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n'
    printf 'rule_files:\n  - %s/deploy/prometheus/ferry-alerts.yml\n' "$src"
    printf 'scrape_configs:\n  - job_name: ferry-orchestrator\n'
    printf '    scheme: https\n    tls_config:\n      ca_file: %s\n      server_name: orchestrator\n' \
      "$work/pki/orchestrator-ca.pem"
    printf '      cert_file: %s\n      key_file: %s\n' "$work/pki/viewer-prometheus-cert.pem" \
      "$work/pki/viewer-prometheus-key.pem"
    printf '    static_configs:\n      - targets: ["127.0.0.1:%s"]\n' "$api_port"
    printf '  - job_name: ferry-agent\n    static_configs:\n      - targets:\n'
    for i in 0 1 2; do
      printf '          - "%s:%s"\n' "$(addr_of "$i")" "$(cat "$work/${hosts[$i]}-run/metrics.port")"
    done
  } >"$work/prometheus.yml"
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
  pids+=($!)
  prom=1
else
  say "Prometheus is not installed (deploy/install-deps.sh installs it): metrics only on the endpoints"
fi

# --- Guests ---------------------------------------------------------------
kvm=1
if [ -n "${FERRY_DEMO_NO_KVM:-}" ] || ! "$build/tools/ferry-testguest" kvm >/dev/null 2>&1; then
  kvm=
  say "/dev/kvm is not usable here: guests run with -accel none (a host thread plays the test guest)"
fi
"$build/tools/ferry-testguest" image "$work/guest.img" --ram-top 16M --ws-pages 128 \
  --report-every 50 >/dev/null
say "Creating guests: web-1, web-2, db-1 on host-a (db-1 first in an evacuation), cache-1 on host-b"
create() {
  local extra=()
  [ -n "$kvm" ] || extra=(--accel none --dirty-rate 100)
  ctl create "$1" --host "$2" --memory 16M --image "$work/guest.img" --priority "$3" "${extra[@]}"
}
create web-1 host-a 0
create web-2 host-a 0
create db-1 host-a 10
create cache-1 host-b 0
for g in web-1 web-2 db-1; do
  for _ in $(seq 1 600); do grep -q ready "$work/host-a-run/$g.serial" 2>/dev/null && break; sleep 0.2; done
done
sleep 3 # let Prometheus see the cluster before the evacuation
ctl guests

# --- Evacuation -----------------------------------------------------------
say "ferryctl evacuate host-a --wait"
ctl evacuate host-a --wait
ctl migrations
ctl guests

# --- Verification ---------------------------------------------------------
host_of() { ctl guests -o json | tr '{' '\n' | grep "\"name\":\"$1\"" | sed 's/.*"host":"\([^"]*\)".*/\1/'; }
say "Verifying every moved guest page by page where it runs now (pmemsave + ferry-verify)"
for g in web-1 web-2 db-1; do
  h=$(host_of "$g")
  [ "$h" != host-a ] || { echo "$g is still on host-a" >&2; exit 1; }
  "$build/tools/ferry-qmp" "$work/$h-run/$g.qmp" stop \
    pmemsave "{\"val\":0,\"size\":16777216,\"filename\":\"$work/$g.bin\"}" cont >/dev/null
  printf '%s on %s: ' "$g" "$h"
  "$build/tools/ferry-verify" "$work/$g.bin"
done

# --- What Prometheus saw --------------------------------------------------
if [ -n "$prom" ]; then
  sleep 4 # the last scrapes
  say "Prometheus: migrations finished, by result"
  query() { promtool query instant "http://127.0.0.1:$prom_port" "$1" | sed 's/^/  /'; }
  query 'ferry_orchestrator_migrations_finished_total'
  say "Prometheus: evacuation progress"
  query 'ferry_orchestrator_evacuation_progress_ratio'
  say "Prometheus: scrape targets"
  query 'up'
fi

say "Where to look"
cat <<EOF
  ferryctl:        $build/tools/ferryctl --server 127.0.0.1:$api_port --ca $work/pki/orchestrator-ca.pem \\
                     --cert $work/pki/operator-demo-cert.pem --key $work/pki/operator-demo-key.pem \\
                     hosts | guests | migrations | watch
  orchestrator:    https://orchestrator:$api_port/api/v1/migrations   https://orchestrator:$api_port/metrics
                   (curl --cacert $work/pki/orchestrator-ca.pem --resolve orchestrator:$api_port:127.0.0.1 \\
                     --cert $work/pki/viewer-prometheus-cert.pem --key $work/pki/viewer-prometheus-key.pem URL)
  agents:          $(for i in 0 1 2; do printf 'http://%s:%s/metrics  ' "$(addr_of "$i")" "$(cat "$work/${hosts[$i]}-run/metrics.port")"; done)
  prometheus:      http://127.0.0.1:$prom_port/graph   (alerts: http://127.0.0.1:$prom_port/alerts)
  grafana:         import $src/deploy/grafana/dashboards/*.json with a Prometheus data source
                   at http://127.0.0.1:$prom_port (or provision deploy/grafana/provisioning/)
  logs and files:  $work
EOF
if [ -n "${FERRY_DEMO_KEEP:-}" ]; then
  say "The cluster keeps running; Ctrl-C ends it"
  wait
fi
