#!/usr/bin/env bash
# The shipped alert rules and Grafana dashboard, checked with Prometheus' own
# tools: the rules parse and their unit tests pass (promtool), and every
# expression of the dashboard parses as PromQL (as recording rules, which
# `promtool check rules` parses, once the dashboard's variables have values).
set -euo pipefail
dir=${1:?usage: check_monitoring.sh MONITORING_DIR}
command -v promtool >/dev/null || { echo "promtool not installed (apt-get install prometheus)"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
promtool check rules "$dir/tern-alerts.yml"
(cd "$dir" && promtool test rules tern-alerts.test.yml)
python3 - "$dir/tern-dashboard.json" "$work/dashboard-rules.yml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
values = {"$coordinator": "tern-coordinator", "$agent": "tern-agent", "$service": ".*"}
rules = []
for p in dash["panels"]:
    assert p.get("title"), p
    for t in p.get("targets", []):
        expr = t["expr"]
        for k, v in values.items():
            expr = expr.replace(k, v)
        assert "$" not in expr, f"panel {p['title']!r}: unknown variable in {expr!r}"
        rules.append({"record": f"dashboard:panel{p['id']}:{t['refId']}", "expr": expr})
assert rules, "the dashboard has no queries"
with open(sys.argv[2], "w") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
print(f"{len(rules)} dashboard queries")
PY
promtool check rules "$work/dashboard-rules.yml"
