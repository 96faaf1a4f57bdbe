#!/usr/bin/env bash
# The footprint of a real, idle tern-agent with one service deployed: its
# resident memory and CPU over a quiet minute (heartbeats every 5 s, port
# mapping checked every 5 s, health probes of both slots every 500 ms).
# Runs in a network namespace of its own with a coordinator beside it.
#
#   sudo bench/agent_footprint.sh [SECONDS]     # default 60
#   TERN_AGENT_BIN=PATH measures another agent binary (bench/link_static_agent.sh makes one)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TERN_BUILD_DIR:-$root/build}
secs=${1:-60}
[ "$(id -u)" -eq 0 ] || { echo "agent_footprint: needs root (network namespace, nftables)" >&2; exit 2; }
ns=tern-footprint-$$
work=$(mktemp -d /tmp/tern-footprint.XXXXXX)
chmod 0755 "$work"   # the app runs as nobody, from a release under it
cleanup() {
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }

in_ns "$build/coordinator/tern-coordinator" --insecure --listen 127.0.0.1:7400 --metrics-listen "" \
  --database "$work/c.db" --ready-file "$work/ready.json" --log-level warn >"$work/c.log" 2>&1 &
for _ in $(seq 100); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
in_ns "${TERN_AGENT_BIN:-$build/agent/tern-agent}" --insecure --coordinator 127.0.0.1:7400 --host-id footprint --label role=web \
  --state-dir "$work/agent" --default-user nobody --log-level warn >"$work/agent.log" 2>&1 &
export TERN_INSECURE=1 TERN_COORDINATOR=127.0.0.1:7400
ctl() { in_ns "$build/ctl/ternctl" "$@"; }
for _ in $(seq 100); do ctl hosts 2>/dev/null | grep -q connected && break; sleep 0.1; done
ctl service apply -f "$root/examples/web.yaml" >/dev/null
ctl artifact push "$build/examples/demo_app/tern-demo-app" --service web --version 1.0 >/dev/null
ctl host deploy footprint web --version 1.0 >/dev/null
ctl artifact push "$build/examples/demo_app/tern-demo-app" --service web --version 2.0 >/dev/null
ctl host deploy footprint web --version 2.0 >/dev/null   # both slots run: 1.0 stays warm
agent=$(pgrep -f -- "--host-id footprint" | head -1)
sleep 5
hz=$(getconf CLK_TCK)
t0=$(awk '{print $14 + $15}' "/proc/$agent/stat")
sleep "$secs"
t1=$(awk '{print $14 + $15}' "/proc/$agent/stat")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
threads=$(awk '/Threads/ {print $2}' "/proc/$agent/status")
cpu_ms=$(((t1 - t0) * 1000 / hz))
anon=$(awk '/RssAnon/ {print $2}' "/proc/$agent/status")
pss=$(awk '/^Pss:/ {print $2}' "/proc/$agent/smaps_rollup")
file=$(awk '/RssFile/ {print $2}' "/proc/$agent/status")
# The biggest mappings, for where the memory is (TERN_FOOTPRINT_MAPS=1).
if [ -n "${TERN_FOOTPRINT_MAPS:-}" ]; then
  awk '/^[0-9a-f]+-/ {name=$6} /^Rss:/ {rss[name]+=$2} END {for (n in rss) if (rss[n] >= 256) printf "%8d KiB  %s\n", rss[n], n}' \
    "/proc/$agent/smaps" | sort -rn | head -25
fi
echo "agent idle with one service (two slots, probed every 500 ms): RSS $((rss / 1024)) MiB ($rss KiB), $threads threads"
echo "  of which private (heap, stacks): $((anon / 1024)) MiB ($anon KiB); mapped files (shared library code): $((file / 1024)) MiB ($file KiB)"
echo "  proportional share (PSS; shared pages divided among the processes mapping them): $((pss / 1024)) MiB ($pss KiB)"
echo "agent CPU over ${secs}s: ${cpu_ms} ms ($(awk -v c="$cpu_ms" -v s="$secs" 'BEGIN {printf "%.2f", c / (s * 10)}')% of one core)"
