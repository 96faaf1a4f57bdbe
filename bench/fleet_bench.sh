#!/usr/bin/env bash
# Fleet-scale measurements of one coordinator against N simulated agents
# (tern-bench-fleet), on this machine. Prints one line per figure.
#
#   bench/fleet_bench.sh [N] [PER_CONNECTION]      # default 1000 agents, 1 stream per connection
#
# Measures: registration of N fresh agents, coordinator memory per agent
# stream, coordinator CPU per heartbeat, fan-out of one command to every
# agent (p50/p99/max until the agent has it), a rollout over all N hosts in
# 4 waves with zero bake, a fleet-wide rollback, and the reconnect storm
# after a kill -9 and restart of the coordinator. The coordinator runs with
# --insecure (plaintext): TLS handshakes are not what is measured here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TERN_BUILD_DIR:-$root/build}
n=${1:-1000}
coordinator=$build/coordinator/tern-coordinator
sim=$build/bench/tern-bench-fleet
ternctl=$build/ctl/ternctl
app=$build/examples/demo_app/tern-demo-app
work=$(mktemp -d /tmp/tern-fleet-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_for() {  # wait_for SECONDS COMMAND...
  local secs=$1; shift
  for _ in $(seq $((secs * 20))); do "$@" && return 0; sleep 0.05; done
  echo "fleet_bench: timed out: $*" >&2
  return 1
}
ulimit -n "$(ulimit -Hn)"
# Who paid for a phase: CPU milliseconds of the coordinator and of the
# simulator, so a figure can be told apart from the simulator's own cost.
phase_begin() { pc0=$(cpu_ticks "$cpid"); ps0=$(cpu_ticks "$spid"); }
phase_end() {
  local hz; hz=$(getconf CLK_TCK)
  echo "  cpu: coordinator $((($(cpu_ticks "$cpid") - pc0) * 1000 / hz)) ms, simulator $((($(cpu_ticks "$spid") - ps0) * 1000 / hz)) ms"
}
# TERN_BENCH_PERF=DIR records the coordinator with perf (call graphs) from
# the spec push to the end of the rollback, for `perf report -i DIR/coordinator.perf`.
perf_pid=
perf_begin() {
  [ -n "${TERN_BENCH_PERF:-}" ] || return 0
  mkdir -p "$TERN_BENCH_PERF"
  perf record -q -F "${TERN_BENCH_PERF_HZ:-499}" --call-graph "${TERN_BENCH_PERF_CALLGRAPH:-fp}" -p "$cpid" -o "$TERN_BENCH_PERF/coordinator.perf" >/dev/null 2>&1 &
  perf_pid=$!
  sleep 0.5
}
perf_end() {
  [ -n "$perf_pid" ] || return 0
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; perf_pid=
}

start_coordinator() {
  rm -f "$work/ready.json"
  "$coordinator" --insecure --listen "127.0.0.1:${port:-0}" --metrics-listen "" --database "$work/c.db" \
    --ready-file "$work/ready.json" --log-level warn --heartbeat-interval 5s --unreachable-after 30s \
    >>"$work/coordinator.log" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  wait_for 20 test -s "$work/ready.json"
  addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"])' "$work/ready.json")
  port=${addr##*:}
}
export TERN_INSECURE=1
start_coordinator
export TERN_COORDINATOR=$addr
base_rss=$(rss_kb "$cpid")

t0=$(now_ms)
"$sim" --coordinator "$addr" --agents "$n" --log-commands --log-hellos >"$work/sim.log" 2>&1 &
spid=$!
pids+=("$spid")
wait_for 300 grep -q '^all_connected' "$work/sim.log"
t1=$(awk '/^all_connected/ {print $3; exit}' "$work/sim.log")
echo "register: $n fresh agents in $((t1 - t0)) ms"
sleep 3
rss=$(rss_kb "$cpid")
echo "memory: coordinator RSS $((base_rss / 1024)) MiB idle -> $((rss / 1024)) MiB with $n streams: $(((rss - base_rss) / n)) KiB per agent"

hz=$(getconf CLK_TCK)
c0=$(cpu_ticks "$cpid"); s0=$(now_ms)
sleep 20
c1=$(cpu_ticks "$cpid"); s1=$(now_ms)
beats=$((n * (s1 - s0) / 5000))
echo "heartbeats: $beats in $(((s1 - s0) / 1000)) s cost $(((c1 - c0) * 1000 / hz)) ms CPU: $(((c1 - c0) * 1000000000 / hz / beats)) ns per heartbeat"

sed "s/healthy_deadline: 30s/healthy_deadline: 30s/" "$root/examples/web.yaml" >"$work/web.yaml"
: >"$work/mark"
perf_begin
phase_begin
t0=$(now_ms)
"$ternctl" service apply -f "$work/web.yaml" >/dev/null
wait_for 120 bash -c "[ \$(grep -c '^command apply_service' '$work/sim.log') -ge $n ]"
python3 - "$work/sim.log" "$t0" <<'EOF'
import sys
t0 = int(sys.argv[2])
d = sorted(int(l.split()[3]) - t0 for l in open(sys.argv[1]) if l.startswith("command apply_service"))
p = lambda q: d[min(len(d) - 1, int(q * len(d)))]
print(f"fan-out: one spec push to {len(d)} agents: p50 {p(0.5)} ms, p99 {p(0.99)} ms, max {d[-1]} ms")
EOF
phase_end

"$ternctl" artifact push "$app" --service web --version 2.0 >/dev/null
phase_begin
t0=$(now_ms)
"$ternctl" rollout start web --version 2.0 --waves 1,10%,50%,100% --bake 0s --watch --wait 30m >"$work/rollout.log" 2>&1 ||
  { tail -5 "$work/rollout.log"; exit 1; }
t1=$(now_ms)
echo "rollout: $n hosts in 4 waves, zero bake, agents answering at once: $((t1 - t0)) ms"
phase_end

before=$(grep -c '^command rollback' "$work/sim.log" || true)
phase_begin
t0=$(now_ms)
"$ternctl" rollout rollback web-1 >/dev/null
"$ternctl" rollout watch web-1 --wait 30m >"$work/rollback.log" 2>&1 || true
t1=$(now_ms)
python3 - "$work/sim.log" "$t0" "$before" <<'EOF'
import sys
t0, before = int(sys.argv[2]), int(sys.argv[3])
d = [int(l.split()[3]) - t0 for l in open(sys.argv[1]) if l.startswith("command rollback")][before:]
d.sort()
if d:
    p = lambda q: d[min(len(d) - 1, int(q * len(d)))]
    print(f"rollback: flip reached {len(d)} agents: p50 {p(0.5)} ms, p99 {p(0.99)} ms, max {d[-1]} ms")
EOF
echo "rollback: command -> rollout rolled back (every flip acknowledged): $((t1 - t0)) ms"
phase_end
perf_end

# Reconnect storm: kill -9 the coordinator, restart it on the same port.
# The simulated agents redial with tern-agent's own backoff policy, so how
# long they take is the real agents' schedule plus the coordinator's work.
t_kill=$(now_ms)
kill -9 "$cpid"
wait "$cpid" 2>/dev/null || true
marks=$(grep -c '^all_connected' "$work/sim.log")
start_coordinator
t0=$(now_ms)
wait_for 600 bash -c "[ \$(grep -c '^all_connected' '$work/sim.log') -gt $marks ]"
t1=$(grep '^all_connected' "$work/sim.log" | tail -1 | awk '{print $3}')
echo "reconnect storm: coordinator down $((t0 - t_kill)) ms (kill -9, restart, listening); $n agents registered again $((t1 - t0)) ms after it listened"
python3 - "$work/sim.log" "$t0" <<'PYEOF2'
import sys, collections
t0 = int(sys.argv[2])
d = sorted(int(l.split()[2]) - t0 for l in open(sys.argv[1]) if l.startswith("hello ") and int(l.split()[2]) >= t0)
if d:
    p = lambda q: d[min(len(d) - 1, int(q * len(d)))]
    per = collections.Counter(x // 100 for x in d)
    print(f"  re-registered after listen: p50 {p(0.5)} ms, p90 {p(0.9)} ms, p99 {p(0.99)} ms, max {d[-1]} ms; "
          f"busiest 100 ms: {max(per.values())} hellos")
PYEOF2
