#!/usr/bin/env bash
# The local demo: sets up, then runs a coordinator and three agents on this
# machine with built-in defaults, shows the fleet through ternctl, and cleans
# up after itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
build=${TERN_BUILD_DIR:-$root/build}
coordinator=$build/coordinator/tern-coordinator
agent=$build/agent/tern-agent
ternctl=$build/ctl/ternctl

work=$(mktemp -d /tmp/tern-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
wait_for() {  # wait_for DESCRIPTION SECONDS COMMAND...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "demo: timed out waiting for $what; logs are in $work" >&2
  trap - EXIT
  exit 1
}

step "starting tern-coordinator (state in $work)"
"$coordinator" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --database "$work/coordinator.db" \
  --ready-file "$work/ready.json" --unreachable-after 3s --heartbeat-interval 500ms \
  >"$work/coordinator.log" 2>&1 &
pids+=($!)
wait_for "the coordinator to listen" 10 test -s "$work/ready.json"
export TERN_COORDINATOR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"])' "$work/ready.json")
metrics=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics"])' "$work/ready.json")
echo "coordinator at $TERN_COORDINATOR, metrics at http://$metrics/metrics"

step "starting three agents (zones a, b, c)"
for zone in a b c; do
  "$agent" --coordinator "$TERN_COORDINATOR" --host-id "demo-$zone" --label "zone=$zone" --label role=web --state-dir "$work/agent-$zone" \
    >"$work/agent-$zone.log" 2>&1 &
  pids+=($!)
  echo "agent demo-$zone (pid $!)"
done
all_connected() { [ "$("$ternctl" hosts -o json | grep -c HOST_STATE_CONNECTED)" -eq 3 ]; }
wait_for "three connected hosts" 20 all_connected

step "ternctl hosts"
"$ternctl" hosts
step "ternctl hosts -l zone=b -o json"
"$ternctl" hosts -l zone=b -o json
step "ternctl version"
"$ternctl" version

step "stopping agent demo-c: it shows disconnected, then unreachable after the 3s grace"
kill "${pids[3]}"
wait "${pids[3]}" 2>/dev/null || true
sleep 0.5
"$ternctl" hosts
unreachable() { "$ternctl" hosts -o json | grep -q HOST_STATE_UNREACHABLE; }
wait_for "demo-c to turn unreachable" 10 unreachable
"$ternctl" hosts

step "coordinator metrics"
curl -s "http://$metrics/metrics" | grep -v '^#'

step "done; stopping the demo fleet"
