#!/usr/bin/env bash
# The slow end-to-end install test (a few minutes; the first run also
# downloads a Debian root filesystem): builds, installs what it needs
# (debootstrap, systemd-container, ansible), then runs
# tests/e2e/install_test.sh as root. See that file for what it checks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
if [ "$(id -u)" -ne 0 ]; then
  echo "==> the e2e test boots containers and makes a bridge: re-running with sudo"
  exec sudo TERN_BUILD_DIR="${TERN_BUILD_DIR:-}" TERN_E2E_CACHE="${TERN_E2E_CACHE:-}" "$0" "$@"
fi
# shellcheck source=scripts/apt_install.sh
. "$root/scripts/apt_install.sh"
apt_install debootstrap systemd-container openssh-client
[ -n "${TERN_E2E_CACHE:-}" ] || unset TERN_E2E_CACHE
[ -n "${TERN_BUILD_DIR:-}" ] || unset TERN_BUILD_DIR
exec "$root/tests/e2e/install_test.sh" "$@"
