#include "coordinator/dashboard.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/grpc_status.h"
#include "tern/v1/common.pb.h"
#include "tern/v1/fleet.pb.h"
#include "tern/v1/rollout.pb.h"

namespace tern {
namespace {

using Reply = MetricsHttpServer::Reply;

Reply json_error(int status, const std::string& message) {
  std::string quoted;
  for (char c : message) {
    if (c == '"' || c == '\\') quoted += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) quoted += c;
  }
  return Reply{status, "application/json", absl::StrCat("{\"error\":\"", quoted, "\"}\n")};
}

int http_status(const absl::Status& st) {
  switch (st.code()) {
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

template <class Message, class Read>
Reply answer(const DashboardData& d, Read read) {
  Message out;
  const absl::Status st = d.on_loop([&] { return read(&out); });
  if (!st.ok()) return json_error(http_status(st), std::string(st.message()));
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  std::string body;
  (void)google::protobuf::util::MessageToJsonString(out, &body, opts);
  return Reply{200, "application/json", std::move(body)};
}

// A rollout id as the coordinator makes them ("web-7"), nothing else.
bool plain_id(const std::string& id) {
  return !id.empty() && id.size() <= 80 && id.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_.") ==
                                               std::string::npos;
}

}  // namespace

void add_dashboard(MetricsHttpServer& server, DashboardData data) {
  server.route("/dashboard", [](const MetricsHttpServer::Request& r) {
    if (r.path != "/dashboard" && r.path != "/dashboard/") return json_error(404, "no such page; try /dashboard");
    return Reply{200, "text/html; charset=utf-8", dashboard_page()};
  });
  server.route("/api/v1/", [d = std::move(data)](const MetricsHttpServer::Request& r) -> Reply {
    if (auto st = d.authorize(r.authorization); !st.ok()) return json_error(401, std::string(st.message()));
    std::vector<std::string> parts = absl::StrSplit(r.path.substr(8), '/', absl::SkipEmpty());
    if (parts.size() == 1 && parts[0] == "hosts") {
      return answer<tern::v1::ListHostsResponse>(d, [&](google::protobuf::Message* m) { return d.hosts(m); });
    }
    if (parts.size() == 1 && parts[0] == "rollouts") {
      return answer<tern::v1::ListRolloutsResponse>(d, [&](google::protobuf::Message* m) { return d.rollouts(m); });
    }
    if (parts.size() >= 2 && parts[0] == "rollouts" && plain_id(parts[1])) {
      if (parts.size() == 2) {
        return answer<tern::v1::Rollout>(d, [&](google::protobuf::Message* m) { return d.rollout(parts[1], m); });
      }
      if (parts.size() == 3 && parts[2] == "history") {
        return answer<tern::v1::RolloutHistory>(d,
                                                [&](google::protobuf::Message* m) { return d.history(parts[1], m); });
      }
    }
    return json_error(404, "no such resource; the API has /api/v1/hosts, /api/v1/rollouts, /api/v1/rollouts/ID "
                           "and /api/v1/rollouts/ID/history");
  });
}

const std::string& dashboard_page() {
  static const std::string page = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tern</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:baseline}
header h1{font-size:18px;margin:0}header .muted{color:#aab}
main{padding:16px 20px;display:grid;gap:16px}
section{background:#fff;border:1px solid #dde;border-radius:6px;padding:12px 16px}
h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef;vertical-align:top}th{color:#667;font-weight:600}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;background:#eef;margin-right:6px}
.connected,.succeeded,.on-new,.healthy,.PASS{color:#137333}.unreachable,.failed,.rolled-back,.FAIL,.unhealthy{color:#b3261e}
.disconnected,.paused,.INCONCLUSIVE,.waiting{color:#a15c00}.running,.deploying{color:#0b57d0}
.bar{display:inline-block;width:220px;height:10px;background:#e4e7ee;border-radius:5px;overflow:hidden;vertical-align:middle}
.bar span{display:inline-block;height:100%}.ok{background:#34a853}.bad{background:#d93025}
tr.sel{background:#eef4ff}tr.click{cursor:pointer}#login{display:none}
input{font:inherit;padding:3px 6px}.muted{color:#667}
</style></head><body>
<header><h1>Tern</h1><span class="muted" id="status">loading</span><span class="muted">updates: <span id="updates">0</span></span></header>
<main>
<section id="login"><h2>Token</h2><p>This coordinator needs a token (any role; <code>ternctl token create NAME --role viewer</code>).</p>
<form id="tokenform"><input id="token" type="password" size="60" placeholder="tern_..."> <button>Use it</button></form>
<p class="muted" id="why"></p></section>
<section><h2>Fleet</h2><div id="states"></div>
<p><input id="filter" placeholder="filter hosts: label=value, host id or service" size="40"></p>
<table><thead><tr><th>host</th><th>state</th><th>since</th><th>labels</th><th>services</th></tr></thead><tbody id="hosts"></tbody></table></section>
<section><h2>Rollouts</h2>
<table><thead><tr><th>rollout</th><th>service</th><th>release</th><th>phase</th><th>wave</th><th>failed</th><th>updated</th></tr></thead><tbody id="rollouts"></tbody></table></section>
<section id="detail"><h2 id="dtitle">Rollout</h2><p id="dmessage" class="muted"></p><div id="waves"></div><div id="analysis"></div>
<h2>Hosts</h2><table><thead><tr><th>wave</th><th>host</th><th>state</th><th>from</th><th>message</th></tr></thead><tbody id="dhosts"></tbody></table>
<h2>History</h2><table><tbody id="history"></tbody></table>
<h2>Changes seen since this page opened</h2><ol id="seen" class="muted"></ol></section>
</main>
<script>
"use strict";
const $ = id => document.getElementById(id);
const word = s => String(s || "").replace(/^(ROLLOUT_PHASE|WAVE_STEP|HOST_STATE|HOST_ROLLOUT_STATE|SLOT_PHASE|SLOT_COLOR|ROLLOUT_EVENT_KIND)_/, "").toLowerCase().replace(/_/g, " ");
const cls = s => word(s).replace(/ /g, "-");
const esc = s => String(s == null ? "" : s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"})[c]);
const ago = t => { if (!t) return "-"; const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
  return s < 60 ? s + "s ago" : s < 3600 ? Math.floor(s / 60) + "m ago" : Math.floor(s / 3600) + "h ago"; };
let token = sessionStorage.getItem("tern-token") || "";
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) { token = fromHash; sessionStorage.setItem("tern-token", token); history.replaceState(null, "", location.pathname); }
let selected = null, updates = 0, lastSeen = "";
$("tokenform").onsubmit = e => { e.preventDefault(); token = $("token").value.trim(); sessionStorage.setItem("tern-token", token); poll(); };
$("filter").oninput = () => render();
async function api(path) {
  const r = await fetch("/api/v1/" + path, {headers: token ? {"Authorization": "Bearer " + token} : {}});
  const body = await r.json();
  if (r.status === 401) { $("login").style.display = "block"; $("why").textContent = body.error; throw new Error("token"); }
  if (!r.ok) throw new Error(body.error || r.statusText);
  $("login").style.display = "none";
  return body;
}
let hosts = [], rollouts = [], detail = null, historyEvents = [];
function render() {
  const counts = {};
  for (const h of hosts) counts[word(h.state)] = (counts[word(h.state)] || 0) + 1;
  $("states").innerHTML = Object.keys(counts).sort().map(k => `<span class="pill ${cls(k)}">${esc(k)}: ${counts[k]}</span>`).join("") || "no hosts yet";
  const f = $("filter").value.trim();
  const match = h => { if (!f) return true; const [k, v] = f.split("=");
    if (v !== undefined) return (h.labels || {})[k.trim()] === v.trim();
    return h.host_id.includes(f) || (h.services || []).some(s => s.service.includes(f)); };
  $("hosts").innerHTML = hosts.filter(match).map(h => `<tr><td>${esc(h.host_id)}</td><td class="${cls(h.state)}">${esc(word(h.state))}</td>
    <td>${ago(h.state_since)}</td><td>${Object.entries(h.labels || {}).map(([k, v]) => `<span class="pill">${esc(k)}=${esc(v)}</span>`).join("")}</td>
    <td>${(h.services || []).map(s => `<b>${esc(s.service)}</b> ` + (s.slots || []).filter(sl => sl.release && sl.release.version).map(sl =>
      `${esc(word(sl.color))} ${esc(sl.release.version)}${sl.active ? " (" + (sl.weight || 0) + "%)" : ""} <span class="${cls(sl.phase)}">${esc(word(sl.phase))}</span>`).join(", ") +
      (s.drift ? ` <span class="failed">drift: ${esc(s.drift)}</span>` : "")).join("<br>")}</td></tr>`).join("");
  $("rollouts").innerHTML = rollouts.map(r => `<tr class="click ${r.id === selected ? "sel" : ""}" data-id="${esc(r.id)}"><td>${esc(r.id)}</td><td>${esc(r.spec.service)}</td>
    <td>${esc(r.spec.release.version)}</td><td class="${cls(r.phase)}">${esc(word(r.phase))}</td><td>${(r.current_wave || 0) + 1}/${(r.spec.waves || []).length} ${esc(word(r.wave_step))}</td>
    <td>${r.failed_hosts || 0}/${r.total_hosts || 0}</td><td>${ago(r.updated)}</td></tr>`).join("") || "<tr><td>no rollouts yet</td></tr>";
  for (const tr of document.querySelectorAll("#rollouts tr.click")) tr.onclick = () => { selected = tr.dataset.id; poll(); };
  if (!detail) { $("detail").style.display = "none"; return; }
  $("detail").style.display = "block";
  const r = detail, waves = r.spec.waves || [];
  const prev = (r.previous_release || {}).version;
  $("dtitle").textContent = `${r.id}: ${r.spec.service} ${prev ? prev + " → " : ""}${r.spec.release.version}, ${word(r.phase)}`;
  $("dmessage").textContent = r.message || "";
  $("waves").innerHTML = waves.map((w, i) => { const hs = (r.hosts || []).filter(h => (h.wave || 0) === i);
    const ok = hs.filter(h => h.state === "HOST_ROLLOUT_STATE_ON_NEW").length;
    const bad = hs.filter(h => /FAILED|UNHEALTHY|UNREACHABLE|GONE|ROLLED_BACK/.test(h.state)).length;
    const n = Math.max(hs.length, 1), cur = i === (r.current_wave || 0) && /RUNNING|PAUSED/.test(r.phase);
    let step = i < (r.current_wave || 0) || r.phase === "ROLLOUT_PHASE_SUCCEEDED" ? "done" : cur ? word(r.wave_step) : "next";
    if (cur && r.wave_step === "WAVE_STEP_BAKING" && r.bake_until) step += ", " + Math.max(0, Math.round((Date.parse(r.bake_until) - Date.now()) / 1000)) + "s left";
    if (cur && r.wave_step === "WAVE_STEP_AWAITING_GATE") step += ": webhook " + w.gate_webhook;
    return `<p class="wave">wave ${i + 1}/${waves.length} <span class="bar"><span class="ok" style="width:${100 * ok / n}%"></span><span class="bad" style="width:${100 * bad / n}%"></span></span>
      ${ok}/${hs.length} on ${esc(r.spec.release.version)}${bad ? `, <span class="failed">${bad} failed</span>` : ""} — <span class="step">${esc(step)}</span></p>`; }).join("");
  const a = r.analysis;
  $("analysis").innerHTML = a && a.verdict ? `<p>analysis of wave ${(a.wave || 0) + 1}: <b class="${esc(a.verdict)}">${esc(a.verdict)}</b> ${esc(a.message || "")}</p>` +
    (a.metrics || []).map(m => `<p class="muted">${esc(m.name)}: <span class="${esc(m.verdict)}">${esc(m.verdict)}</span>, green ${m.canary_bad || 0}/${m.canary_total || 0}, blue ${m.baseline_bad || 0}/${m.baseline_total || 0}</p>`).join("") : "";
  $("dhosts").innerHTML = (r.hosts || []).slice(0, 500).map(h => `<tr><td>${(h.wave || 0) + 1}</td><td>${esc(h.host_id)}</td><td class="${cls(h.state)}">${esc(word(h.state))}</td>
    <td>${esc(h.previous_version || "-")}</td><td>${esc(h.message || "")}</td></tr>`).join("") + ((r.hosts || []).length > 500 ? `<tr><td colspan="5">and ${(r.hosts.length - 500)} more (ternctl rollout status ${esc(r.id)})</td></tr>` : "");
  $("history").innerHTML = historyEvents.slice(-30).reverse().map(e => `<tr><td>${esc(new Date(Date.parse(e.time)).toLocaleTimeString())}</td><td>${esc(word(e.kind))}</td><td>${esc(e.message)}</td></tr>`).join("");
  const seen = `${r.id}: ${word(r.phase)}, wave ${(r.current_wave || 0) + 1} ${word(r.wave_step)}`;
  if (seen !== lastSeen) { lastSeen = seen; const li = document.createElement("li"); li.textContent = seen; $("seen").appendChild(li); }
}
async function poll() {
  try {
    const [h, r] = await Promise.all([api("hosts"), api("rollouts")]);
    hosts = h.hosts || []; rollouts = r.rollouts || [];
    if (!selected || !rollouts.some(x => x.id === selected)) {
      const active = rollouts.find(x => /RUNNING|PAUSED|ROLLING_BACK|PENDING/.test(x.phase));
      selected = (active || rollouts[0] || {}).id || null;
    }
    if (selected) { detail = await api("rollouts/" + encodeURIComponent(selected));
      historyEvents = (await api("rollouts/" + encodeURIComponent(selected) + "/history")).events || []; } else detail = null;
    updates++; $("updates").textContent = updates; $("status").textContent = "updated " + new Date().toLocaleTimeString();
    render();
  } catch (e) { $("status").textContent = "cannot update: " + e.message; }
}
poll();
setInterval(poll, Number(new URLSearchParams(location.search).get("every")) || 2000);
</script></body></html>
)HTML";
  return page;
}

}  // namespace tern
