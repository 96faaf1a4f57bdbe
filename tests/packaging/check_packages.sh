#!/usr/bin/env bash
# The fast half of the install story, run by ctest: build the three Debian
# packages from this build, check what is in them (binaries, units,
# conffiles, maintainer scripts), and `systemd-analyze verify` the units as
# installed (the packages unpacked into a scratch root beside this machine's
# own systemd units). The slow half, booting systemd hosts and installing
# with Ansible, is tests/e2e/install_test.sh.
#
#   check_packages.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== cpack"
(cd "$build" && cpack -B "$work/packages" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log"; fail "cpack"; }
version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build/CPackConfig.cmake")
arch=$(dpkg --print-architecture)
agent=$work/packages/tern-agent_${version}_${arch}.deb
coord=$work/packages/tern-coordinator_${version}_${arch}.deb
ctl=$work/packages/ternctl_${version}_${arch}.deb
for p in "$agent" "$coord" "$ctl"; do [ -f "$p" ] || fail "missing package $(basename "$p")"; done

has_file() { dpkg-deb -c "$1" | awk '{print $6}' | grep -qx "$2" || fail "$(basename "$1") lacks $2"; }
has_file "$agent" ./usr/bin/tern-agent
has_file "$agent" ./lib/systemd/system/tern-agent.service
has_file "$agent" ./usr/share/doc/tern-agent/examples/agent.yaml
has_file "$coord" ./usr/bin/tern-coordinator
has_file "$coord" ./lib/systemd/system/tern-coordinator.service
has_file "$coord" ./etc/tern/coordinator.yaml
has_file "$ctl" ./usr/bin/ternctl
if dpkg-deb -c "$agent" | awk '{print $6}' | grep -qx ./etc/tern/agent.yaml; then
  fail "tern-agent must not ship /etc/tern/agent.yaml (it would start before it is configured)"
fi

echo "== control files"
dpkg-deb --ctrl-tarfile "$coord" | tar -xO ./conffiles | grep -qx /etc/tern/coordinator.yaml ||
  fail "coordinator.yaml is not a conffile"
for p in "$agent" "$coord"; do
  for s in postinst prerm postrm; do
    dpkg-deb --ctrl-tarfile "$p" | tar -xO "./$s" >"$work/$s" || fail "$(basename "$p") has no $s"
    sh -n "$work/$s" || fail "$(basename "$p") $s: syntax"
  done
done
dpkg-deb --ctrl-tarfile "$coord" | tar -xO ./postinst | grep -q 'useradd --system' ||
  fail "the coordinator's postinst does not create its system user"
dpkg-deb -f "$agent" Depends | grep -q 'nftables | iptables' || fail "tern-agent must depend on nftables | iptables"

echo "== systemd-analyze verify"
if ! command -v systemd-analyze >/dev/null || [ ! -d /lib/systemd/system ]; then
  echo "SKIP: systemd-analyze is not installed (apt-get install systemd)"
else
  root=$work/root
  mkdir -p "$root/lib/systemd/system"
  for p in "$agent" "$coord" "$ctl"; do dpkg-deb -x "$p" "$root"; done
  # The units refer to targets (network-online, multi-user) that the
  # scratch root takes from this machine's systemd.
  cp -an /lib/systemd/system/. "$root/lib/systemd/system/"
  out=$(systemd-analyze verify --root="$root" /lib/systemd/system/tern-agent.service \
        /lib/systemd/system/tern-coordinator.service 2>&1) || fail "systemd-analyze verify: $out"
  # verify exits 0 on warnings (an unknown key, a bad value); any output is a finding.
  [ -z "$out" ] || fail "systemd-analyze verify: $out"
  for u in tern-agent tern-coordinator; do
    systemd-analyze security --offline=yes --root="$root" "/lib/systemd/system/$u.service" 2>/dev/null |
      grep 'Overall exposure' || true
  done
fi
echo "OK: packages, control files and units"
