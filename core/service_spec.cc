#include "core/service_spec.h"

#include <google/protobuf/util/time_util.h>
#include <signal.h>

#include <algorithm>
#include <map>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/duration.h"
#include "core/label_selector.h"
#include "core/prom_text.h"
#include "core/yaml_config.h"

namespace tern {
namespace {

using google::protobuf::Duration;
using google::protobuf::util::TimeUtil;

Duration to_duration(Millis m) { return TimeUtil::MillisecondsToDuration(m.count()); }
Millis to_millis(const Duration& d) { return Millis(TimeUtil::DurationToMilliseconds(d)); }

absl::Status field_error(absl::string_view field, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat("field ", field, ": ", reason));
}

// Every public and slot port of a spec, with the field that names it.
std::vector<std::pair<uint32_t, std::string>> claimed_ports(const tern::v1::ServiceSpec& spec) {
  std::vector<std::pair<uint32_t, std::string>> out;
  for (int i = 0; i < spec.ports_size(); ++i) {
    const auto& p = spec.ports(i);
    out.emplace_back(p.public_port(), absl::StrCat("ports[", i, "].public"));
    out.emplace_back(p.blue_port(), absl::StrCat("ports[", i, "].blue"));
    out.emplace_back(p.green_port(), absl::StrCat("ports[", i, "].green"));
  }
  return out;
}

// Reads an optional duration key; a proto field stays unset when the key is
// absent (so defaults apply later). `mutable()` is only called when present.
template <typename Mutable>
void get_duration(YamlMap& m, absl::string_view key, Mutable mut) {
  Millis v{-1};
  const bool present = m.has(key);
  m.get(key, v);  // also marks the key known
  if (present && v >= Millis(0)) *mut() = to_duration(v);
}

void get_port(YamlMap& m, absl::string_view key, uint32_t& out) { m.get(key, out); }

bool valid_env_name(const std::string& k) {
  if (k.empty() || k.size() > 128) return false;
  if (!(std::isalpha(static_cast<unsigned char>(k[0])) || k[0] == '_')) return false;
  for (char c : k) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

bool valid_user_name(const std::string& u) {
  if (u.empty() || u.size() > 32) return false;
  for (char c : u) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  }
  return u[0] != '-';
}

absl::Status check_metric_selector(const std::string& selector) {
  if (selector.size() > 512) return absl::InvalidArgumentError("a selector is at most 512 characters");
  return parse_prom_selector(selector).status();
}

// The metrics endpoint and the analysis metrics.
absl::Status validate_analysis(const tern::v1::ServiceSpec& spec) {
  const auto& e = spec.metrics_endpoint();
  if (!e.port().empty() && std::none_of(spec.ports().begin(), spec.ports().end(),
                                        [&](const tern::v1::PortMap& p) { return p.name() == e.port(); })) {
    return field_error("metrics_endpoint.port", absl::StrCat("\"", e.port(), "\" is not the name of one of ports"));
  }
  if (!e.path().empty()) {
    if (e.path()[0] != '/' || e.path().size() > 256) {
      return field_error("metrics_endpoint.path", absl::StrCat("\"", e.path(), "\" must start with / (at most 256 characters)"));
    }
    for (char c : e.path()) {
      if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
        return field_error("metrics_endpoint.path", "must not contain spaces or control characters");
      }
    }
  }
  constexpr int kMaxAnalysisMetrics = 8;
  if (spec.analysis().metrics_size() > kMaxAnalysisMetrics) {
    return field_error("analysis.metrics", absl::StrCat("at most ", kMaxAnalysisMetrics, " metrics"));
  }
  std::set<std::string> names;
  for (int i = 0; i < spec.analysis().metrics_size(); ++i) {
    const auto& am = spec.analysis().metrics(i);
    const std::string f = absl::StrCat("analysis.metrics[", i, "]");
    if (!is_valid_service_name(am.name())) {
      return field_error(f + ".name", absl::StrCat("\"", am.name(), "\" must be 1-32 lower-case letters, digits or '-'"));
    }
    if (!names.insert(am.name()).second) return field_error(f + ".name", absl::StrCat("\"", am.name(), "\" is used twice"));
    if (am.bad_query().empty() != am.total_query().empty()) {
      return field_error(f + (am.bad_query().empty() ? ".bad_query" : ".total_query"),
                         "bad_query and total_query go together (the Prometheus source asks both)");
    }
    for (const auto& [key, q] : {std::pair<const char*, const std::string*>{"bad_query", &am.bad_query()},
                                 {"total_query", &am.total_query()}}) {
      if (q->size() > 4096) return field_error(absl::StrCat(f, ".", key), "a query template is at most 4096 characters");
    }
    const bool queries = !am.bad_query().empty();
    if (queries && am.kind() != "ratio") {
      return field_error(f + ".bad_query", "queries count bad and total requests: give kind: ratio");
    }
    if (am.kind() == "ratio" && queries && am.bad().empty() && am.total().empty()) {
      // Counted by a Prometheus server only.
    } else if (am.kind() == "ratio") {
      if (am.bad().empty()) return field_error(f + ".bad", "a ratio metric needs the selector of its bad requests");
      if (am.total().empty()) {
        return field_error(f + ".total", "a ratio metric needs the selector of all its requests (the denominator)");
      }
      for (const auto& [key, sel] : {std::pair<const char*, const std::string*>{"bad", &am.bad()}, {"total", &am.total()}}) {
        if (auto st = check_metric_selector(*sel); !st.ok()) return field_error(absl::StrCat(f, ".", key), st.message());
      }
      if (!am.histogram().empty()) return field_error(f + ".histogram", "only for kind: latency");
    } else if (am.kind() == "latency") {
      if (am.histogram().empty()) {
        return field_error(f + ".histogram", "a latency metric needs a classic histogram's name, e.g. "
                                             "http_request_duration_seconds");
      }
      if (auto st = check_metric_selector(am.histogram()); !st.ok()) return field_error(f + ".histogram", st.message());
      if (!am.bad().empty() || !am.total().empty()) return field_error(f + ".bad", "only for kind: ratio");
      if (am.quantile() != 0 && (am.quantile() <= 0.5 || am.quantile() >= 1)) {
        return field_error(f + ".quantile", absl::StrCat(am.quantile(), " is not between 0.5 and 1 (e.g. 0.99)"));
      }
      if (am.threshold() < 0) return field_error(f + ".threshold", "must be a positive number of seconds");
    } else {
      return field_error(f + ".kind", absl::StrCat("\"", am.kind(), "\" must be ratio or latency"));
    }
    if (am.max_ratio() != 0 && am.max_ratio() < 1) {
      return field_error(f + ".max_ratio", absl::StrCat(am.max_ratio(),
                                                        " is below 1: green would fail for being as good as blue; "
                                                        "the margin is how much worse than blue is too much, e.g. 1.5"));
    }
    if (am.max_ratio() > 100) return field_error(f + ".max_ratio", absl::StrCat(am.max_ratio(), " is above 100"));
    if (am.min_excess() < 0 || am.min_excess() >= 1) {
      return field_error(f + ".min_excess", absl::StrCat(am.min_excess(), " is not a rate in [0, 1), e.g. 0.1%"));
    }
    if (am.pass_below() < 0 || am.pass_below() >= 1) {
      return field_error(f + ".pass_below", absl::StrCat(am.pass_below(), " is not a rate in [0, 1), e.g. 0.5%"));
    }
  }
  return absl::OkStatus();
}

// The templates: paths that stay where they belong, modes, no two files at
// one place.
absl::Status validate_templates(const tern::v1::ServiceSpec& spec) {
  if (spec.templates_size() > kMaxTemplates) {
    return field_error("templates", absl::StrCat(spec.templates_size(), " templates; at most ", kMaxTemplates,
                                                 " (render fewer, larger files, or include files from them)"));
  }
  std::set<std::string> dests;
  for (int i = 0; i < spec.templates_size(); ++i) {
    const auto& t = spec.templates(i);
    const std::string f = absl::StrCat("templates[", i, "]");
    if (auto st = check_relative_path(t.source()); !st.ok()) {
      return field_error(f + ".source", absl::StrCat("\"", t.source(), "\" ", st.message(),
                                                     ": a path inside the release, e.g. conf/nginx.conf.tmpl"));
    }
    if (auto st = check_relative_path(t.dest()); !st.ok()) {
      return field_error(f + ".dest", absl::StrCat("\"", t.dest(), "\" ", st.message(),
                                                   ": a path inside the slot's render dir, e.g. nginx.conf"));
    }
    if (auto m = parse_template_mode(t.mode()); !m.ok()) return field_error(f + ".mode", m.status().message());
    dests.insert(t.dest());
  }
  if (dests.size() != static_cast<size_t>(spec.templates_size())) {
    for (int i = 0; i < spec.templates_size(); ++i) {
      for (int j = 0; j < i; ++j) {
        if (spec.templates(i).dest() == spec.templates(j).dest()) {
          return field_error(absl::StrCat("templates[", i, "].dest"),
                             absl::StrCat("\"", spec.templates(i).dest(), "\" is also templates[", j, "].dest"));
        }
      }
    }
  }
  // "conf" and "conf/app.conf" cannot both be rendered: one is a file.
  for (int i = 0; i < spec.templates_size(); ++i) {
    const std::string& d = spec.templates(i).dest();
    for (size_t slash = d.find('/'); slash != std::string::npos; slash = d.find('/', slash + 1)) {
      if (dests.count(d.substr(0, slash)) == 0) continue;
      return field_error(absl::StrCat("templates[", i, "].dest"),
                         absl::StrCat("\"", d, "\" lies inside \"", d.substr(0, slash),
                                      "\", which another template renders as a file"));
    }
  }
  return absl::OkStatus();
}

// The lifecycle hooks: a command each, a timeout in range, a known word.
absl::Status validate_hooks(const tern::v1::ServiceSpec& spec) {
  for (absl::string_view name : kHookNames) {
    const tern::v1::Hook& h = *find_hook(spec.hooks(), name);
    const std::string f = absl::StrCat("hooks.", name);
    const bool given = h.argv_size() > 0 || h.has_timeout() || !h.on_failure().empty() || h.idempotent();
    if (!given) continue;
    if (h.argv_size() == 0 || h.argv(0).empty()) {
      return field_error(f + ".argv", "the command to run is required, e.g. [\"{release_dir}/bin/smoke\", "
                                      "\"http://127.0.0.1:{port}/\"]");
    }
    if (h.argv_size() > 256) return field_error(f + ".argv", "at most 256 arguments");
    if (h.has_timeout()) {
      auto m = checked_duration(h.timeout(), Millis(3'600'000));
      if (!m.ok()) return field_error(f + ".timeout", m.status().message());
      if (*m < Millis(1'000)) {
        return field_error(f + ".timeout", absl::StrCat(format_duration(*m), " is below 1s; a hook gets 1s-1h"));
      }
    }
    if (!h.on_failure().empty() && !parse_hook_failure(h.on_failure())) {
      return field_error(f + ".on_failure", absl::StrCat("\"", h.on_failure(),
                                                         "\" must be fail (stop the step or fail the command) or "
                                                         "warn (report and go on)"));
    }
    if (name == "post_rollback" && hook_failure(name, h) == HookFailure::kFail) {
      return field_error(f + ".on_failure", "must be warn: a rollback is the way back to safety and never fails "
                                            "because of a hook (its failures are reported)");
    }
  }
  return absl::OkStatus();
}

}  // namespace

const tern::v1::Hook* find_hook(const tern::v1::Hooks& hooks, absl::string_view name) {
  if (name == "pre_start") return &hooks.pre_start();
  if (name == "pre_traffic") return &hooks.pre_traffic();
  if (name == "post_switch") return &hooks.post_switch();
  if (name == "pre_stop") return &hooks.pre_stop();
  if (name == "post_rollback") return &hooks.post_rollback();
  return nullptr;
}

tern::v1::Hook* find_mutable_hook(tern::v1::Hooks& hooks, absl::string_view name) {
  if (name == "pre_start") return hooks.mutable_pre_start();
  if (name == "pre_traffic") return hooks.mutable_pre_traffic();
  if (name == "post_switch") return hooks.mutable_post_switch();
  if (name == "pre_stop") return hooks.mutable_pre_stop();
  if (name == "post_rollback") return hooks.mutable_post_rollback();
  return nullptr;
}

std::optional<HookFailure> parse_hook_failure(const std::string& word) {
  if (word == "fail") return HookFailure::kFail;
  if (word == "warn") return HookFailure::kWarn;
  return std::nullopt;
}

HookFailure hook_failure(absl::string_view name, const tern::v1::Hook& hook) {
  if (auto f = parse_hook_failure(hook.on_failure())) return *f;
  return name == "pre_start" || name == "pre_traffic" ? HookFailure::kFail : HookFailure::kWarn;
}

Millis hook_timeout(const tern::v1::Hook& hook) {
  if (!hook.has_timeout()) return kDefaultHookTimeout;
  return std::clamp(to_millis(hook.timeout()), Millis(1'000), Millis(3'600'000));
}

absl::Status check_relative_path(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("is empty");
  if (path.size() > kMaxTemplatePathBytes) {
    return absl::InvalidArgumentError(absl::StrCat("is longer than ", kMaxTemplatePathBytes, " bytes"));
  }
  if (path[0] == '/') return absl::InvalidArgumentError("is absolute (it must be relative)");
  for (char c : path) {
    if (static_cast<unsigned char>(c) < ' ' || c == 0x7f) {
      return absl::InvalidArgumentError("contains a control character");
    }
  }
  size_t begin = 0;
  for (;;) {
    const size_t end = std::min(path.find('/', begin), path.size());
    const std::string_view part(path.data() + begin, end - begin);
    if (part == "..") return absl::InvalidArgumentError("contains \"..\" (it must stay inside its directory)");
    if (part.empty() || part == ".") {
      return absl::InvalidArgumentError("has an empty or \".\" component (write a/b, not a//b, ./a or a/)");
    }
    if (end == path.size()) return absl::OkStatus();
    begin = end + 1;
  }
}

absl::StatusOr<uint32_t> parse_template_mode(const std::string& mode) {
  if (mode.empty()) return 0640;
  uint32_t v = 0;
  bool octal = mode.size() >= 3 && mode.size() <= 4;
  for (char c : mode) {
    if (c < '0' || c > '7') octal = false;
    v = v * 8 + static_cast<uint32_t>(c - '0');
  }
  if (!octal) {
    return absl::InvalidArgumentError(absl::StrCat("\"", mode, "\" is not an octal mode such as \"0640\""));
  }
  if (v > 0777) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", mode, "\" sets setuid, setgid or sticky bits; at most 0777"));
  }
  if ((v & 0400) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("\"", mode, "\" does not let the file's owner (the slot's user) "
                                                   "read it; give at least 0400, e.g. \"0640\""));
  }
  return v;
}

bool is_valid_service_name(const std::string& name) {
  if (name.empty() || name.size() > 32) return false;
  if (!(std::islower(static_cast<unsigned char>(name[0])) || std::isdigit(static_cast<unsigned char>(name[0]))))
    return false;
  for (char c : name) {
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-'))
      return false;
  }
  return true;
}

bool is_valid_version(const std::string& v) {
  if (v.empty() || v.size() > 64 || v[0] == '.' || v[0] == '-') return false;
  for (char c : v) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '+' || c == '-')) return false;
  }
  return true;
}

absl::StatusOr<tern::v1::ServiceSpec> parse_service_spec(const std::string& yaml, const std::string& origin) {
  auto root = load_yaml_string(yaml, origin);
  if (!root.ok()) return root.status();
  if (!root->IsMap()) return absl::InvalidArgumentError(absl::StrCat(origin, ": expected a mapping (a service spec)"));
  tern::v1::ServiceSpec spec;
  YamlMap m(*root, origin);
  m.get("name", *spec.mutable_name());
  m.get("selector", *spec.mutable_selector());
  for (auto& p : m.children("ports")) {
    auto* pm = spec.add_ports();
    p.get("name", *pm->mutable_name());
    p.get("protocol", *pm->mutable_protocol());
    uint32_t v = 0;
    get_port(p, "public", v), pm->set_public_port(v), v = 0;
    get_port(p, "blue", v), pm->set_blue_port(v), v = 0;
    get_port(p, "green", v), pm->set_green_port(v);
    m.absorb(p.finish());
  }
  std::vector<std::string> argv;
  m.get("argv", argv);
  for (auto& a : argv) spec.add_argv(a);
  m.get("user", *spec.mutable_user());
  std::map<std::string, std::string> env;
  m.get("env", env);
  spec.mutable_env()->insert(env.begin(), env.end());
  m.get("working_dir", *spec.mutable_working_dir());
  if (auto h = m.child("health")) {
    auto* hc = spec.mutable_health();
    int kinds = 0;
    if (auto http = h->child("http")) {
      ++kinds;
      http->get("path", *hc->mutable_http()->mutable_path());
      h->absorb(http->finish());
    }
    if (auto tcp = h->child("tcp")) {
      ++kinds;
      hc->mutable_tcp();
      h->absorb(tcp->finish());
    }
    if (auto ex = h->child("exec")) {
      ++kinds;
      std::vector<std::string> eargv;
      ex->get("argv", eargv);
      for (auto& a : eargv) hc->mutable_exec()->add_argv(a);
      h->absorb(ex->finish());
    }
    if (auto g = h->child("grpc")) {
      ++kinds;
      g->get("service", *hc->mutable_grpc()->mutable_service());
      h->absorb(g->finish());
    }
    get_duration(*h, "interval", [&] { return hc->mutable_interval(); });
    get_duration(*h, "timeout", [&] { return hc->mutable_timeout(); });
    uint32_t n = 0;
    if (h->has("success_threshold")) h->get("success_threshold", n), hc->set_success_threshold(n);
    else h->get("success_threshold", n);
    n = 0;
    if (h->has("failure_threshold")) h->get("failure_threshold", n), hc->set_failure_threshold(n);
    else h->get("failure_threshold", n);
    get_duration(*h, "min_healthy_time", [&] { return hc->mutable_min_healthy_time(); });
    get_duration(*h, "healthy_deadline", [&] { return hc->mutable_healthy_deadline(); });
    if (kinds > 1) {
      h->absorb(absl::InvalidArgumentError(
          absl::StrCat(origin, ": field health: give exactly one of http, tcp, exec, grpc")));
    }
    m.absorb(h->finish());
  }
  get_duration(m, "drain", [&] { return spec.mutable_drain(); });
  get_duration(m, "grace", [&] { return spec.mutable_grace(); });
  m.get("stop_signal", *spec.mutable_stop_signal());
  m.get("drain_signal", *spec.mutable_drain_signal());
  std::vector<std::string> drain_command;
  m.get("drain_command", drain_command);
  for (auto& a : drain_command) spec.add_drain_command(a);
  bool keep_warm = false;
  m.get("keep_warm", keep_warm);
  spec.set_keep_warm(keep_warm);
  m.get("split", *spec.mutable_split());
  m.get("memory_max", *spec.mutable_memory_max());
  m.get("cpu_max", *spec.mutable_cpu_max());
  uint32_t tasks_max = 0;
  m.get("tasks_max", tasks_max);
  spec.set_tasks_max(tasks_max);
  if (auto r = m.child("restart")) {
    auto* rp = spec.mutable_restart();
    r->get("policy", *rp->mutable_policy());
    uint32_t n = 0;
    if (r->has("max_restarts")) r->get("max_restarts", n), rp->set_max_restarts(n);
    else r->get("max_restarts", n);
    get_duration(*r, "delay", [&] { return rp->mutable_delay(); });
    m.absorb(r->finish());
  }
  if (auto e = m.child("metrics_endpoint")) {
    e->get("port", *spec.mutable_metrics_endpoint()->mutable_port());
    e->get("path", *spec.mutable_metrics_endpoint()->mutable_path());
    m.absorb(e->finish());
  }
  if (auto a = m.child("analysis")) {
    auto* sa = spec.mutable_analysis();
    for (auto& x : a->children("metrics")) {
      auto* am = sa->add_metrics();
      x.get("name", *am->mutable_name());
      x.get("kind", *am->mutable_kind());
      x.get("bad", *am->mutable_bad());
      x.get("total", *am->mutable_total());
      x.get("histogram", *am->mutable_histogram());
      x.get("bad_query", *am->mutable_bad_query());
      x.get("total_query", *am->mutable_total_query());
      double d = 0;
      x.get("quantile", d), am->set_quantile(d), d = 0;
      x.get("threshold", d), am->set_threshold(d), d = 0;
      x.get("max_ratio", d), am->set_max_ratio(d), d = 0;
      x.get("min_excess", d), am->set_min_excess(d), d = 0;
      x.get("pass_below", d), am->set_pass_below(d);
      a->absorb(x.finish());
    }
    m.absorb(a->finish());
  }
  for (auto& t : m.children("templates")) {
    auto* tf = spec.add_templates();
    t.get("source", *tf->mutable_source());
    t.get("dest", *tf->mutable_dest());
    t.get("mode", *tf->mutable_mode());
    m.absorb(t.finish());
  }
  if (auto hk = m.child("hooks")) {
    for (absl::string_view name : kHookNames) {
      auto h = hk->child(name);
      if (!h) continue;
      tern::v1::Hook* hook = find_mutable_hook(*spec.mutable_hooks(), name);
      std::vector<std::string> hargv;
      h->get("argv", hargv);
      for (auto& a : hargv) hook->add_argv(a);
      get_duration(*h, "timeout", [&] { return hook->mutable_timeout(); });
      h->get("on_failure", *hook->mutable_on_failure());
      bool idempotent = false;
      h->get("idempotent", idempotent);
      hook->set_idempotent(idempotent);
      hk->absorb(h->finish());
    }
    m.absorb(hk->finish());
  }
  if (auto st = m.finish(); !st.ok()) return st;
  // The YAML said nothing about the proto3 "unset" vs 0 distinction, so
  // defaults are applied after parsing, then the whole spec is checked.
  apply_service_defaults(spec);
  if (auto st = validate_service_spec(spec); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", st.message()));
  }
  return spec;
}

std::optional<int> parse_signal_name(const std::string& name) {
  std::string n = absl::AsciiStrToUpper(name);
  if (absl::StartsWith(n, "SIG")) n = n.substr(3);
  static constexpr std::pair<const char*, int> kSignals[] = {
      {"TERM", SIGTERM}, {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"HUP", SIGHUP},
      {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"WINCH", SIGWINCH}, {"KILL", SIGKILL}};
  for (const auto& [word, sig] : kSignals) {
    if (n == word) return sig;
  }
  return std::nullopt;
}

std::optional<uint64_t> parse_byte_size(const std::string& text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  size_t digits = 0;
  while (digits < t.size() && absl::ascii_isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  if (digits == 0 || digits > 15) return std::nullopt;
  uint64_t n = 0;
  if (!absl::SimpleAtoi(t.substr(0, digits), &n) || n == 0) return std::nullopt;
  std::string unit = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(t.substr(digits)));
  if (absl::EndsWith(unit, "IB")) unit.resize(unit.size() - 2);
  else if (absl::EndsWith(unit, "B")) unit.resize(unit.size() - 1);
  int shift;
  if (unit.empty()) shift = 0;
  else if (unit == "K") shift = 10;
  else if (unit == "M") shift = 20;
  else if (unit == "G") shift = 30;
  else if (unit == "T") shift = 40;
  else return std::nullopt;
  if (n > (uint64_t{1} << (63 - shift))) return std::nullopt;
  return n << shift;
}

std::optional<uint64_t> parse_cpu_quota_us(const std::string& text) {
  double cpus = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(text), &cpus) || !(cpus >= 0.01) || cpus > 1024) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(cpus * 100'000 + 0.5);
}

int stop_signal(const tern::v1::ServiceSpec& spec) {
  return parse_signal_name(spec.stop_signal()).value_or(SIGTERM);
}

absl::StatusOr<tern::v1::ServiceSpec> load_service_spec_file(const std::string& path) {
  auto root = load_yaml_file(path);
  if (!root.ok()) return root.status();
  return parse_service_spec(YAML::Dump(*root), path);
}

void apply_service_defaults(tern::v1::ServiceSpec& spec) {
  for (auto& p : *spec.mutable_ports()) {
    if (p.protocol().empty()) p.set_protocol("tcp");
    if (p.name().empty()) p.set_name(absl::StrCat(p.protocol(), "-", p.public_port()));
  }
  auto* h = spec.mutable_health();
  if (h->kind_case() == tern::v1::HealthCheck::KIND_NOT_SET) h->mutable_tcp();
  if (!spec.has_drain()) *spec.mutable_drain() = to_duration(Millis(10'000));
  if (!spec.has_grace()) *spec.mutable_grace() = to_duration(Millis(10'000));
  if (spec.has_hooks()) {
    for (absl::string_view name : kHookNames) {
      tern::v1::Hook* hook = find_mutable_hook(*spec.mutable_hooks(), name);
      if (hook->argv_size() == 0) continue;
      if (!hook->has_timeout()) *hook->mutable_timeout() = to_duration(kDefaultHookTimeout);
      if (hook->on_failure().empty()) {
        hook->set_on_failure(hook_failure(name, *hook) == HookFailure::kFail ? "fail" : "warn");
      }
    }
  }
  auto* r = spec.mutable_restart();
  if (r->policy().empty()) r->set_policy("on-failure");
  if (!spec.restart().has_delay()) *r->mutable_delay() = to_duration(Millis(1'000));
  if (r->max_restarts() == 0 && restart_policy(*r) == RestartPolicy::kOnFailure) r->set_max_restarts(3);
  if (spec.analysis().metrics_size() > 0) {
    auto* e = spec.mutable_metrics_endpoint();
    if (e->port().empty() && spec.ports_size() > 0) e->set_port(spec.ports(0).name());
    if (e->path().empty()) e->set_path("/metrics");
    for (auto& am : *spec.mutable_analysis()->mutable_metrics()) {
      if (am.max_ratio() == 0) am.set_max_ratio(1.5);
      if (am.min_excess() == 0) am.set_min_excess(0.001);
      if (am.kind() == "latency" && am.quantile() == 0 && am.threshold() == 0) am.set_quantile(0.99);
    }
  }
}

std::optional<RestartPolicy> parse_restart_policy(const std::string& word) {
  if (word == "on-failure") return RestartPolicy::kOnFailure;
  if (word == "never") return RestartPolicy::kNever;
  return std::nullopt;
}

RestartPolicy restart_policy(const tern::v1::RestartPolicy& restart) {
  return parse_restart_policy(restart.policy()).value_or(RestartPolicy::kNever);
}

std::optional<TrafficSplit> parse_traffic_split(const std::string& word) {
  if (word.empty() || word == "connection") return TrafficSplit::kConnection;
  if (word == "client") return TrafficSplit::kClient;
  return std::nullopt;
}

TrafficSplit traffic_split(const tern::v1::ServiceSpec& spec) {
  return parse_traffic_split(spec.split()).value_or(TrafficSplit::kConnection);
}

absl::Status check_ports_free(const tern::v1::ServiceSpec& spec, const tern::v1::ServiceSpec& other) {
  const auto theirs = claimed_ports(other);
  for (const auto& [port, field] : claimed_ports(spec)) {
    for (const auto& [their_port, their_field] : theirs) {
      if (port != their_port) continue;
      return absl::FailedPreconditionError(absl::StrCat(
          "field ", field, ": ", port, " is service \"", other.name(), "\"'s ", their_field,
          "; a public or slot port belongs to one service, because agents run every service in one port space: "
          "choose another port, or move ", other.name(), " off it first"));
    }
  }
  return absl::OkStatus();
}

absl::Status validate_service_spec(const tern::v1::ServiceSpec& spec) {
  if (const size_t size = spec.ByteSizeLong(); size > kMaxServiceSpecBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the spec of service \"", spec.name(), "\" is ", (size + 1023) / 1024, " KiB serialized; the limit is ",
        kMaxServiceSpecBytes / 1024, " KiB, because every selected agent receives it in one message. Ship large "
        "data (files, certificates, long environment values) in the release artifact instead"));
  }
  if (!is_valid_service_name(spec.name())) {
    return field_error("name", absl::StrCat("\"", spec.name(),
                                            "\" must be 1-32 lower-case letters, digits or '-', starting with a "
                                            "letter or digit"));
  }
  if (auto sel = LabelSelector::parse(spec.selector()); !sel.ok()) {
    return field_error("selector", sel.status().message());
  }
  if (spec.ports_size() == 0) return field_error("ports", "at least one port mapping is required");
  if (spec.ports_size() > 16) return field_error("ports", "at most 16 port mappings");
  std::map<uint32_t, std::string> used;  // port -> field that uses it
  std::set<std::string> names;
  for (int i = 0; i < spec.ports_size(); ++i) {
    const auto& p = spec.ports(i);
    const std::string f = absl::StrCat("ports[", i, "]");
    if (p.protocol() != "tcp" && p.protocol() != "udp") {
      return field_error(f + ".protocol", absl::StrCat("\"", p.protocol(), "\" must be tcp or udp"));
    }
    if (!names.insert(p.name()).second) return field_error(f + ".name", absl::StrCat("\"", p.name(), "\" is used twice"));
    const std::pair<const char*, uint32_t> fields[] = {
        {"public", p.public_port()}, {"blue", p.blue_port()}, {"green", p.green_port()}};
    for (const auto& [key, port] : fields) {
      const std::string ff = absl::StrCat(f, ".", key);
      if (port == 0 || port > 65535) return field_error(ff, absl::StrCat(port, " is not a port (1-65535)"));
      auto [it, fresh] = used.emplace(port, ff);
      if (!fresh) return field_error(ff, absl::StrCat(port, " is already used by ", it->second));
    }
  }
  if (spec.argv_size() == 0 || spec.argv(0).empty()) {
    return field_error("argv", "the command to run is required, e.g. [\"{release_dir}/app\", \"--port\", \"{port}\"]");
  }
  if (!spec.stop_signal().empty() && !parse_signal_name(spec.stop_signal())) {
    return field_error("stop_signal", absl::StrCat("\"", spec.stop_signal(),
                                                   "\" is not one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, "
                                                   "SIGUSR2, SIGWINCH, SIGKILL"));
  }
  if (!spec.drain_signal().empty()) {
    auto sig = parse_signal_name(spec.drain_signal());
    if (!sig || *sig == SIGKILL) {
      return field_error("drain_signal", absl::StrCat("\"", spec.drain_signal(),
                                                      "\" is not one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, "
                                                      "SIGUSR2, SIGWINCH"));
    }
    if (spec.drain_command_size() > 0) {
      return field_error("drain_command", "give drain_signal or drain_command, not both");
    }
  }
  if (!spec.memory_max().empty() && !parse_byte_size(spec.memory_max())) {
    return field_error("memory_max", absl::StrCat("\"", spec.memory_max(),
                                                  "\" is not a size in bytes, e.g. 512MiB or 2G"));
  }
  if (!spec.cpu_max().empty() && !parse_cpu_quota_us(spec.cpu_max())) {
    return field_error("cpu_max", absl::StrCat("\"", spec.cpu_max(),
                                               "\" is not a number of CPUs from 0.01 to 1024, e.g. 1.5"));
  }
  if (spec.drain_command_size() > 0 && spec.drain_command(0).empty()) {
    return field_error("drain_command", "the command to run is required when the key is given");
  }
  if (!spec.user().empty() && !valid_user_name(spec.user())) {
    return field_error("user", absl::StrCat("\"", spec.user(), "\" is not a user name"));
  }
  for (const auto& [k, v] : spec.env()) {
    if (!valid_env_name(k)) return field_error("env", absl::StrCat("\"", k, "\" is not an environment variable name"));
  }
  const auto& h = spec.health();
  if (h.kind_case() == tern::v1::HealthCheck::kHttp) {
    if (h.http().path().empty() || h.http().path()[0] != '/') {
      return field_error("health.http.path", absl::StrCat("\"", h.http().path(), "\" must start with /"));
    }
    for (char c : h.http().path()) {
      if (c == ' ' || c == '\r' || c == '\n') return field_error("health.http.path", "must not contain spaces or newlines");
    }
  }
  if (h.kind_case() == tern::v1::HealthCheck::kExec && (h.exec().argv_size() == 0 || h.exec().argv(0).empty())) {
    return field_error("health.exec.argv", "the probe command is required");
  }
  const std::pair<const char*, const Duration*> durations[] = {
      {"health.interval", &h.interval()},
      {"health.timeout", &h.timeout()},
      {"health.min_healthy_time", &h.min_healthy_time()},
      {"health.healthy_deadline", &h.healthy_deadline()},
      {"drain", &spec.drain()},
      {"grace", &spec.grace()},
      {"restart.delay", &spec.restart().delay()}};
  for (const auto& [f, d] : durations) {
    if (auto m = checked_duration(*d, Millis(24LL * 3600 * 1000)); !m.ok()) {
      return field_error(f, std::string(m.status().message()));
    }
  }
  if (h.has_interval() && to_millis(h.interval()) < Millis(10)) return field_error("health.interval", "must be at least 10ms");
  const auto& r = spec.restart();
  if (!r.policy().empty() && !parse_restart_policy(r.policy())) {
    return field_error("restart.policy", absl::StrCat("\"", r.policy(), "\" must be on-failure or never"));
  }
  if (!parse_traffic_split(spec.split())) {
    return field_error("split", absl::StrCat("\"", spec.split(),
                                             "\" must be connection (each new connection drawn at random, the "
                                             "default) or client (by the client's address, so a client keeps its "
                                             "side)"));
  }
  if (auto st = validate_templates(spec); !st.ok()) return st;
  if (auto st = validate_hooks(spec); !st.ok()) return st;
  return validate_analysis(spec);
}

}  // namespace tern
