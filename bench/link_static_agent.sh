#!/usr/bin/env bash
# Links tern-agent with gRPC, protobuf, abseil and OpenSSL from Debian's
# static archives (spdlog, fmt and libsystemd stay shared: Debian ships no
# archives of them), unused sections dropped, to measure what static
# linking saves in resident memory:
#
#   bench/link_static_agent.sh && sudo TERN_AGENT_BIN=build/bench/tern-agent-static bench/agent_footprint.sh 60
#
# Not what Tern ships: a static OpenSSL would not get Debian's security
# updates, in a daemon that runs as root (docs/BENCHMARKS.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TERN_BUILD_DIR:-$root/build}
cmake --build "$build" --target tern-agent >/dev/null
out=$build/bench/tern-agent-static
static=$(pkg-config --static --libs grpc++ protobuf | sed 's/-pthread//g')
# shellcheck disable=SC2086  # $static is a list of linker flags
c++ -O2 -pthread "$build/agent/CMakeFiles/tern-agent.dir/main.cc.o" -o "$out" \
  "$build/agent/libtern_agent_lib.a" "$build/core/libtern_core.a" "$build/proto/libtern_proto.a" \
  -Wl,--gc-sections -Wl,--start-group -Wl,-Bstatic $static -lprotobuf -lboost_filesystem -lyaml-cpp -lz \
  -Wl,--end-group -Wl,-Bdynamic -lspdlog -lfmt -lsystemd -ldl -lm -lrt
echo "$out ($(du -h "$out" | cut -f1), shared libraries: $(ldd "$out" | wc -l))"
