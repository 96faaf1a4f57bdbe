#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite with ctest.
# Extra arguments go to ctest, e.g. scripts/test.sh -R Fleet
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
build_dir=${TERN_BUILD_DIR:-$root/build}
echo "==> running tests"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "$@"
