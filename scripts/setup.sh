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
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libre2-dev
  libboost-dev libboost-filesystem-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libsqlite3-dev libyaml-cpp-dev libcli11-dev
  libssl-dev libsystemd-dev zlib1g-dev libcurl4-openssl-dev nftables iptables iproute2 conntrack tar gzip
  python3 curl python3-grpcio python3-protobuf
  systemd ansible ansible-lint
  prometheus nginx caddy
  chromium
)

# shellcheck source=scripts/apt_install.sh
. "$root/scripts/apt_install.sh"
# chromium is the real browser that tests/integration/dashboard_test.cc drives
# (headless) through the coordinator's web dashboard.
# prometheus is for tests/integration/prometheus_source_test.cc, which starts
# its own server on a free port; nginx and caddy for
# tests/integration/slot_templates_test.cc and real_apps_test.cc, which run
# them as a slot's app. Each package enables and starts a system
# service (systemd's, or its init script where systemd is not running); when
# this script is what installs it, that service is stopped and disabled. One
# installed before is left as it is.
services=(prometheus nginx caddy)
fresh=()
for svc in "${services[@]}"; do
  dpkg-query -W -f='${Status}' "$svc" 2>/dev/null | grep -q "install ok installed" || fresh+=("$svc")
done
apt_install "${packages[@]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
for svc in "${fresh[@]}"; do
  if [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
  else
    [ -x "/etc/init.d/$svc" ] && { $sudo "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; }
    $sudo update-rc.d "$svc" disable >/dev/null 2>&1 || true
    # Offline, this only removes the unit's links: no service on a later boot with systemd.
    $sudo systemctl disable "$svc.service" >/dev/null 2>&1 || true
  fi
done

if [ ! -f "$build_dir/build.ninja" ]; then
  echo "==> configuring $build_dir"
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
echo "==> building (this takes a few minutes the first time)"
cmake --build "$build_dir" -j "$(nproc)" -- --quiet
echo "==> built: $build_dir/{coordinator/tern-coordinator,agent/tern-agent,ctl/ternctl}"
