#!/usr/bin/env bash
# Installs every Debian bookworm package Ferry's build, tests and demo need.
# Idempotent: apt-get skips what is already installed.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config binutils
  clang clang-format clang-tidy libclang-rt-14-dev
  # libraries (see docs/dependencies.md)
  libcaf-dev
  libboost1.81-dev libboost-json1.81-dev
  libssl-dev libzstd-dev zlib1g-dev libsqlite3-dev
  libcli11-dev libfmt-dev libspdlog-dev libtomlplusplus-dev libxxhash-dev
  # tests and benchmarks; qemu-utils (qemu-img, qemu-io) is the qcow2 oracle
  googletest libgtest-dev libgmock-dev libbenchmark-dev qemu-utils
  # observability: Prometheus and promtool (tests, demo), systemd-analyze
  prometheus systemd
  # the hand-over protocol's model checker (tools/model)
  spin
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "install-deps: ${#packages[@]} packages present"
