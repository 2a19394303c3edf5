#!/usr/bin/env bash
# Checks deploy/prometheus's alert rules with promtool: syntax (check rules)
# and behaviour (test rules against ferry-alerts.test.yml), and the example
# scrape configuration. Exit 77 (CTest: skipped) when promtool is missing.
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
if ! command -v promtool >/dev/null; then
  echo "SKIPPED: promtool not installed (Debian package 'prometheus'; deploy/install-deps.sh installs it)"
  exit 77
fi
promtool check rules ferry-alerts.yml
promtool test rules ferry-alerts.test.yml
# The example refers to the rules at their installed path; check it against
# the file here.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/etc/prometheus/ferry-alerts.yml|$PWD/ferry-alerts.yml|" prometheus.yml > "$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"
