#!/usr/bin/env bash
# Installs Tern's build dependencies from Debian 12 packages (only the missing
# ones, so a second run changes nothing) and builds everything into build/.
#
#   scripts/setup.sh            # install + configure + build
#   TERN_BUILD_DIR=out scripts/setup.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${TERN_BUILD_DIR:-$root/build}

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libboost-dev libboost-filesystem-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libsqlite3-dev libyaml-cpp-dev libcli11-dev
  libssl-dev libsystemd-dev zlib1g-dev nftables iptables iproute2 conntrack tar gzip
  python3 curl python3-grpcio python3-protobuf
  systemd ansible ansible-lint
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing ${#missing[@]} missing packages: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root (or sudo) to apt-get install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$build_dir/build.ninja" ]; then
  echo "==> configuring $build_dir"
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
echo "==> building (this takes a few minutes the first time)"
cmake --build "$build_dir" -j "$(nproc)" -- --quiet
echo "==> built: $build_dir/{coordinator/tern-coordinator,agent/tern-agent,ctl/ternctl}"
