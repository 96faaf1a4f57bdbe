#!/usr/bin/env bash
# The local demo: sets up, then runs a coordinator and four demo hosts on
# this machine with built-in defaults. Each host is a network namespace with
# its own tern-agent, the demo app in its blue and green slots and real
# nftables rules. The demo rolls 1.0 out, then 2.0 in canary waves with live
# progress, then a bad 3.0 that turns unhealthy on its canaries while they
# bake and is rolled back automatically (the canaries flip back to 2.0),
# then canary analysis under load: 4.0, healthy by its checks but failing 1
# request in 10, is rejected by the judge of green against blue on its
# canary host and rolled back; 5.0 passes. Then it flips one host by hand; a
# client loop counts the requests that failed throughout (none). Everything
# it made is removed at the end.
#
# Needs root for the namespaces and nftables (it re-runs itself with sudo).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
if [ "$(id -u)" -ne 0 ]; then
  echo "==> the demo creates network namespaces and nftables rules: re-running with sudo"
  exec sudo TERN_BUILD_DIR="${TERN_BUILD_DIR:-}" "$0" "$@"
fi
build=${TERN_BUILD_DIR:-$root/build}
coordinator=$build/coordinator/tern-coordinator
agent=$build/agent/tern-agent
ternctl=$build/ctl/ternctl
app=$build/examples/demo_app/tern-demo-app

hosts=(a b c d)
bridge=terndemo0
net=198.18.99        # 198.18.0.0/15 is reserved for benchmarks: never a real network
work=$(mktemp -d /tmp/tern-demo.XXXXXX)
chmod 0755 "$work"   # the apps run as nobody, from releases under it
pids=()
keep_logs=0
cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  # Agents leave their slots running on purpose (a restart must not stop
  # the app); the demo's slots go with their namespaces.
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  for h in "${hosts[@]}"; do
    for pid in $(ip netns pids "tern-demo-$h" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "tern-demo-$h" 2>/dev/null
  done
  ip link del "$bridge" 2>/dev/null
  wait 2>/dev/null
  if [ "$keep_logs" -eq 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
wait_for() {  # wait_for DESCRIPTION SECONDS COMMAND...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "demo: timed out waiting for $what; logs are in $work" >&2
  keep_logs=1
  exit 1
}
host_ip() { echo "$net.$((10 + $1))"; }   # host_ip INDEX
get() { curl -s --max-time 2 "http://$1:8080/" || echo "FAILED"; }

step "network: bridge $bridge ($net.1) and one namespace per demo host"
# Leftovers of an earlier run that was killed before it could clean up.
ip link del "$bridge" 2>/dev/null || true
for h in "${hosts[@]}"; do ip netns del "tern-demo-$h" 2>/dev/null || true; done
ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
for i in "${!hosts[@]}"; do
  h=${hosts[$i]} ns=tern-demo-${hosts[$i]}
  ip netns add "$ns"
  ip link add "td-$h" type veth peer name eth0 netns "$ns"
  ip link set "td-$h" master "$bridge" up
  ip -n "$ns" addr add "$(host_ip "$i")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  echo "demo-$h: namespace $ns, address $(host_ip "$i")"
done

step "starting tern-coordinator on $net.1 (state in $work)"
# --insecure: plaintext and no authentication, for this local demo only
# (a real fleet uses mutual TLS: scripts/tern-pki.sh, README "Security").
"$coordinator" --insecure --listen "$net.1:0" --metrics-listen 127.0.0.1:0 --database "$work/coordinator.db" \
  --ready-file "$work/ready.json" --unreachable-after 5s --heartbeat-interval 500ms \
  >"$work/coordinator.log" 2>&1 &
pids+=($!)
wait_for "the coordinator to listen" 10 test -s "$work/ready.json"
export TERN_INSECURE=1
export TERN_COORDINATOR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"])' "$work/ready.json")
metrics=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics"])' "$work/ready.json")
echo "coordinator at $TERN_COORDINATOR, metrics at http://$metrics/metrics"

step "starting an agent in each demo host"
for i in "${!hosts[@]}"; do
  h=${hosts[$i]}
  ip netns exec "tern-demo-$h" "$agent" --insecure --coordinator "$TERN_COORDINATOR" --host-id "demo-$h" \
    --label "zone=$h" --label role=web --state-dir "$work/agent-$h" --heartbeat-interval 500ms \
    --default-user nobody \
    >"$work/agent-$h.log" 2>&1 &
  pids+=($!)
done
all_connected() { [ "$("$ternctl" hosts -o json | grep -c HOST_STATE_CONNECTED)" -eq "${#hosts[@]}" ]; }
wait_for "${#hosts[@]} connected hosts" 20 all_connected
"$ternctl" hosts

step "ternctl service apply -f examples/web.yaml; artifact push 1.0, 2.0 and a broken 3.0"
# examples/web.yaml, with a 5s healthy deadline so the bad release fails fast.
sed 's/healthy_deadline: 30s/healthy_deadline: 5s /' "$root/examples/web.yaml" >"$work/web.yaml"
"$ternctl" service apply -f "$work/web.yaml"
"$ternctl" service list
"$ternctl" artifact push "$app" --service web --version 1.0
"$ternctl" artifact push "$app" --service web --version 2.0
# 3.0 is a bundle whose app passes its health checks at first and starts
# failing them 3s later: it goes bad while its canary wave bakes.
mkdir -p "$work/bad"
printf '#!/bin/sh\nexec %s "$@" --fail-health-after 3s\n' "$app" >"$work/bad/tern-demo-app"
chmod +x "$work/bad/tern-demo-app"
tar -czf "$work/bad.tar.gz" -C "$work/bad" tern-demo-app
"$ternctl" artifact push "$work/bad.tar.gz" --service web --version 3.0

step "rolling 1.0 out to every host (stage, start blue, probe, switch)"
"$ternctl" rollout start web --version 1.0 --waves 100% --yes --watch
for i in "${!hosts[@]}"; do echo "demo-${hosts[$i]} $(host_ip "$i"):8080 -> $(get "$(host_ip "$i")")"; done

# A client loop against every host's public port from now on,
# through every swap that follows.
: >"$work/client.log"
(
  while :; do
    for i in "${!hosts[@]}"; do echo "$(get "$(host_ip "$i")")" >>"$work/client.log"; done
    sleep 0.02
  done
) &
client=$!
pids+=($client)

step "ternctl rollout plan: 2.0 in canary waves, spread across zones"
"$ternctl" rollout plan web --version 2.0 --waves 1,50%,100% --bake 2s --spread zone

step "rolling 2.0 out: one canary host, then half, then all, baking 2s after each wave"
"$ternctl" rollout start web --version 2.0 --waves 1,50%,100% --bake 2s --spread zone --watch
for i in "${!hosts[@]}"; do echo "demo-${hosts[$i]} -> $(get "$(host_ip "$i")")"; done

step "rolling out a bad 3.0: two canaries take it, it turns unhealthy while they bake, the rollout flips them back"
set +e
"$ternctl" rollout start web --version 3.0 --waves 2,100% --bake 15s --spread zone --watch
code=$?
set -e
echo "ternctl exited $code (1: the rollout did not complete)"
for i in "${!hosts[@]}"; do echo "demo-${hosts[$i]} -> $(get "$(host_ip "$i")")"; done

step "canary analysis: 4.0 passes its health checks but fails 1 request in 10; 5.0 is as good as 2.0"
# Both canaries take half of their host's new connections while a load of
# about 100 requests/s per host runs; each host's agent counts green's and
# blue's requests and errors from their /metrics, and the coordinator judges
# green against blue on the same host (examples/web.yaml: analysis).
mkdir -p "$work/errors"
printf '#!/bin/sh\nexec %s "$@" --error-rate 0.1\n' "$app" >"$work/errors/tern-demo-app"
chmod +x "$work/errors/tern-demo-app"
tar -czf "$work/errors.tar.gz" -C "$work/errors" tern-demo-app
"$ternctl" artifact push "$work/errors.tar.gz" --service web --version 4.0
"$ternctl" artifact push "$app" --service web --version 5.0
for v in 4.0 5.0; do
  printf 'service: web\nrelease: "%s"\nwaves: [{hosts: 1, weight: 50, analyze: true}, {percent: 100}]\n%s\n%s\n' \
    "$v" "spread_label: zone" "analysis: {interval: 1s, warmup: 2s, min_duration: 10s, max_duration: 2m}" \
    >"$work/rollout-$v.yaml"
done
# The load: a new connection per request (the split is per connection).
python3 - "$work/load.stop" "$net" "${#hosts[@]}" >"$work/load.log" 2>&1 <<'PY' &
import sys, os, threading, http.client, collections
stop, net, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = collections.Counter()
def run(k):
    i = k
    while not os.path.exists(stop):
        host = f"{net}.{10 + i % n}"
        i += 1
        try:
            c = http.client.HTTPConnection(host, 8080, timeout=2)
            c.request("GET", "/")
            seen[c.getresponse().status] += 1
            c.close()
        except Exception as e:
            seen[type(e).__name__] += 1
threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(" ".join(f"HTTP {k}: {v}" if isinstance(k, int) else f"{k}: {v}" for k, v in sorted(seen.items(), key=str)))
PY
load=$!
pids+=($load)
latest() { "$ternctl" rollout list -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rollouts"][0]["id"])'; }
set +e
"$ternctl" rollout start -f "$work/rollout-4.0.yaml" --watch
code=$?
set -e
echo "ternctl exited $code (1: the rollout did not complete)"
"$ternctl" rollout analysis "$(latest)"
"$ternctl" rollout start -f "$work/rollout-5.0.yaml" --watch
"$ternctl" rollout analysis "$(latest)"
touch "$work/load.stop"
wait "$load" 2>/dev/null || true
echo "the load's answers: $(cat "$work/load.log") (the 500s: 4.0's own errors while it was a canary)"
for i in "${!hosts[@]}"; do echo "demo-${hosts[$i]} -> $(get "$(host_ip "$i")")"; done

step "by hand: demo-b back to 1.0 (a rollback returns to the last good release, 5.0: a no-op here)"
"$ternctl" host rollback demo-b web
"$ternctl" host deploy demo-b web --version 1.0
"$ternctl" rollout list
step "what each host serves now, from a real request"
for i in "${!hosts[@]}"; do echo "demo-${hosts[$i]} -> $(get "$(host_ip "$i")")"; done

kill "$client" 2>/dev/null || true
wait "$client" 2>/dev/null || true
total=$(wc -l <"$work/client.log")
failed=$(grep -c FAILED "$work/client.log" || true)
step "client loop: $failed of $total requests failed during all of the above"
sort "$work/client.log" | uniq -c

step "coordinator metrics"
curl -s "http://$metrics/metrics" | grep -v -e '^#' -e '_bucket{' -e '^process_' | grep -v ' 0$' || true

if [ "$failed" -ne 0 ]; then
  echo "demo: $failed requests failed; logs are in $work" >&2
  keep_logs=1
  exit 1
fi
step "done; removing the demo hosts"
