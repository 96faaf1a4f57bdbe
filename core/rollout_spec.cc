#include "core/words.h"
#include "core/rollout_spec.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/duration.h"
#include "core/label_selector.h"
#include "core/service_spec.h"
#include "core/yaml_config.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

absl::Status field_error(absl::string_view field, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat("field ", field, ": ", reason));
}

bool valid_version(const std::string& v) {
  if (v.empty() || v.size() > 64 || v[0] == '.' || v[0] == '-') return false;
  for (char c : v) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '+' || c == '-')) return false;
  }
  return true;
}

template <typename Mutable>
void get_duration(YamlMap& m, absl::string_view key, Mutable mut) {
  Millis v{-1};
  const bool present = m.has(key);
  m.get(key, v);
  if (present && v >= Millis(0)) *mut() = TimeUtil::MillisecondsToDuration(v.count());
}

absl::Status validate_analysis_policy(const tern::v1::RolloutSpec& spec) {
  const bool any_analyzed =
      std::any_of(spec.waves().begin(), spec.waves().end(), [](const tern::v1::Wave& w) { return w.analyze(); });
  if (!spec.has_analysis()) return absl::OkStatus();
  if (!any_analyzed) {
    return field_error("analysis",
                       "no wave keeps a split to judge: give the waves to analyze a weight below 100 (e.g. "
                       "waves: [{hosts: 1, weight: 10}, {percent: 100}])");
  }
  const auto& a = spec.analysis();
  const Millis day(24LL * 3600 * 1000);
  const std::pair<const char*, const google::protobuf::Duration*> durations[] = {
      {"analysis.interval", &a.interval()},
      {"analysis.warmup", &a.warmup()},
      {"analysis.min_duration", &a.min_duration()},
      {"analysis.max_duration", &a.max_duration()}};
  for (const auto& [f, d] : durations) {
    if (auto ms = checked_duration(*d, day); !ms.ok()) return field_error(f, std::string(ms.status().message()));
  }
  const auto ms = [](const google::protobuf::Duration& d) { return TimeUtil::DurationToMilliseconds(d); };
  if (a.has_interval() && ms(a.interval()) < 100) return field_error("analysis.interval", "must be at least 100ms");
  if (a.has_max_duration() && ms(a.max_duration()) < ms(a.min_duration())) {
    return field_error("analysis.max_duration", "must not be shorter than min_duration");
  }
  if (a.has_max_duration() && a.has_interval() && ms(a.max_duration()) < ms(a.interval())) {
    return field_error("analysis.max_duration", "must be at least one interval");
  }
  if (!a.source().empty() && a.source() != "agent" && a.source() != "prometheus") {
    return field_error("analysis.source", absl::StrCat("\"", a.source(), "\" must be agent or prometheus"));
  }
  if (a.confidence() != 0 && (a.confidence() < 0.5 || a.confidence() >= 1)) {
    return field_error("analysis.confidence",
                       absl::StrCat(a.confidence(), " is not in [0.5, 1): it is 1 - the false-alarm rate, e.g. 0.99"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<tern::v1::RolloutSpec> parse_rollout_spec(const std::string& yaml, const std::string& origin) {
  auto root = load_yaml_string(yaml, origin);
  if (!root.ok()) return root.status();
  if (!root->IsMap()) return absl::InvalidArgumentError(absl::StrCat(origin, ": expected a mapping (a rollout spec)"));
  tern::v1::RolloutSpec spec;
  YamlMap m(*root, origin);
  m.get("service", *spec.mutable_service());
  m.get("release", *spec.mutable_release()->mutable_version());
  m.get("selector", *spec.mutable_selector());
  int i = 0;
  for (auto& w : m.children("waves")) {
    auto* wave = spec.add_waves();
    uint32_t n = 0;
    if (w.has("hosts")) w.get("hosts", n), wave->set_hosts(n);
    else w.get("hosts", n);
    n = 0;
    if (w.has("percent")) {
      if (wave->size_case() == tern::v1::Wave::kHosts) {
        m.absorb(absl::InvalidArgumentError(
            absl::StrCat(origin, ": field waves[", i, "]: give hosts or percent, not both")));
      }
      w.get("percent", n), wave->set_percent(n);
    } else {
      w.get("percent", n);
    }
    get_duration(w, "bake", [&] { return wave->mutable_bake(); });
    std::string gate;
    w.get("gate", gate);
    if (gate == "manual") wave->set_gate(tern::v1::WAVE_GATE_MANUAL);
    else if (gate == "auto" || gate.empty()) wave->set_gate(tern::v1::WAVE_GATE_AUTO);
    else m.absorb(absl::InvalidArgumentError(absl::StrCat(origin, ": field waves[", i, "].gate: \"", gate,
                                                          "\" must be auto or manual")));
    w.get("gate_webhook", *wave->mutable_gate_webhook());
    w.get("split", *wave->mutable_split());
    n = 0;
    w.get("weight", n);
    wave->set_weight(n);
    bool analyze = false;
    w.get("analyze", analyze);
    wave->set_analyze(analyze);
    m.absorb(w.finish());
    ++i;
  }
  uint32_t max_parallel = 0;
  m.get("max_parallel", max_parallel);
  spec.set_max_parallel(max_parallel);
  if (auto b = m.child("failure_budget")) {
    uint32_t v = 0;
    b->get("max_failed_hosts", v), spec.mutable_failure_budget()->set_max_failed_hosts(v), v = 0;
    b->get("max_failed_percent", v), spec.mutable_failure_budget()->set_max_failed_percent(v), v = 0;
    b->get("max_failed_per_wave", v), spec.mutable_failure_budget()->set_max_failed_per_wave(v);
    m.absorb(b->finish());
  }
  std::string on_failure;
  m.get("on_failure", on_failure);
  if (on_failure == "rollback") spec.set_on_failure(tern::v1::ON_FAILURE_ROLLBACK);
  else if (on_failure == "pause") spec.set_on_failure(tern::v1::ON_FAILURE_PAUSE);
  else if (!on_failure.empty()) {
    m.absorb(absl::InvalidArgumentError(
        absl::StrCat(origin, ": field on_failure: \"", on_failure, "\" must be rollback or pause")));
  }
  get_duration(m, "progress_deadline", [&] { return spec.mutable_progress_deadline(); });
  m.get("spread_label", *spec.mutable_spread_label());
  if (auto a = m.child("analysis")) {
    auto* ap = spec.mutable_analysis();
    get_duration(*a, "interval", [&] { return ap->mutable_interval(); });
    get_duration(*a, "warmup", [&] { return ap->mutable_warmup(); });
    get_duration(*a, "min_duration", [&] { return ap->mutable_min_duration(); });
    get_duration(*a, "max_duration", [&] { return ap->mutable_max_duration(); });
    double confidence = 0;
    a->get("confidence", confidence);
    ap->set_confidence(confidence);
    a->get("source", *ap->mutable_source());
    std::string on_fail;
    a->get("on_fail", on_fail);
    if (on_fail == "rollback") ap->set_on_fail(tern::v1::ON_FAILURE_ROLLBACK);
    else if (on_fail == "pause") ap->set_on_fail(tern::v1::ON_FAILURE_PAUSE);
    else if (!on_fail.empty()) {
      a->absorb(absl::InvalidArgumentError(
          absl::StrCat(origin, ": field analysis.on_fail: \"", on_fail, "\" must be rollback or pause")));
    }
    m.absorb(a->finish());
  }
  if (auto st = m.finish(); !st.ok()) return st;
  apply_rollout_defaults(spec);
  if (auto st = validate_rollout_spec(spec); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": ", st.message()));
  }
  return spec;
}

absl::StatusOr<tern::v1::RolloutSpec> load_rollout_spec_file(const std::string& path) {
  auto root = load_yaml_file(path);
  if (!root.ok()) return root.status();
  return parse_rollout_spec(YAML::Dump(*root), path);
}

void apply_rollout_defaults(tern::v1::RolloutSpec& spec) {
  if (spec.waves_size() == 0) spec.add_waves()->set_percent(100);
  for (auto& w : *spec.mutable_waves()) {
    if (w.gate() == tern::v1::WAVE_GATE_UNSPECIFIED) w.set_gate(tern::v1::WAVE_GATE_AUTO);
    w.set_weight(effective_weight(w.weight()));
  }
  if (spec.on_failure() == tern::v1::ON_FAILURE_UNSPECIFIED) spec.set_on_failure(tern::v1::ON_FAILURE_ROLLBACK);
  if (!spec.has_progress_deadline()) *spec.mutable_progress_deadline() = TimeUtil::MillisecondsToDuration(600'000);
  const bool any_analyzed =
      std::any_of(spec.waves().begin(), spec.waves().end(), [](const tern::v1::Wave& w) { return w.analyze(); });
  if (!spec.has_analysis() && !any_analyzed) return;
  // `analysis:` alone judges every wave that keeps a split.
  if (!any_analyzed) {
    for (auto& w : *spec.mutable_waves()) w.set_analyze(w.weight() < 100);
  }
  auto* a = spec.mutable_analysis();
  if (!a->has_interval()) *a->mutable_interval() = TimeUtil::MillisecondsToDuration(10'000);
  if (!a->has_warmup()) *a->mutable_warmup() = TimeUtil::MillisecondsToDuration(60'000);
  if (!a->has_min_duration()) *a->mutable_min_duration() = TimeUtil::MillisecondsToDuration(120'000);
  if (!a->has_max_duration()) *a->mutable_max_duration() = TimeUtil::MillisecondsToDuration(1'800'000);
  if (a->confidence() == 0) a->set_confidence(0.99);
  if (a->on_fail() == tern::v1::ON_FAILURE_UNSPECIFIED) a->set_on_fail(tern::v1::ON_FAILURE_ROLLBACK);
  if (a->source().empty()) a->set_source("agent");
}

absl::StatusOr<std::vector<tern::v1::Wave>> parse_wave_list(absl::string_view text) {
  std::vector<tern::v1::Wave> waves;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    absl::string_view digits = part;
    const bool percent = absl::ConsumeSuffix(&digits, "%");
    // Six digits at most: far past any fleet, and std::stoul cannot overflow.
    if (digits.empty() || digits.find_first_not_of("0123456789") != absl::string_view::npos || digits.size() > 6) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", part, "\" is not a host count or a percentage (e.g. 1,10%,100%)"));
    }
    const auto n = static_cast<uint32_t>(std::stoul(std::string(digits)));
    auto& wave = waves.emplace_back();
    if (percent) wave.set_percent(n);
    else wave.set_hosts(n);
  }
  return waves;
}

absl::Status validate_rollout_spec(const tern::v1::RolloutSpec& spec) {
  if (!is_valid_service_name(spec.service())) {
    return field_error("service", absl::StrCat("\"", spec.service(), "\" is not a service name"));
  }
  if (!valid_version(spec.release().version())) {
    return field_error("release", absl::StrCat("\"", spec.release().version(),
                                               "\" must be 1-64 of letters, digits, '.', '_', '+', '-'"));
  }
  if (auto sel = LabelSelector::parse(spec.selector()); !sel.ok()) return field_error("selector", sel.status().message());
  if (spec.waves_size() > 32) return field_error("waves", "at most 32 waves");
  // Sizes are cumulative, so each must be larger than the last one given in
  // the same unit: "1,10%,5%" is a typo, not a plan.
  int last_hosts = -1, last_percent = -1;
  for (int i = 0; i < spec.waves_size(); ++i) {
    const auto& w = spec.waves(i);
    const std::string f = absl::StrCat("waves[", i, "]");
    switch (w.size_case()) {
      case tern::v1::Wave::kHosts:
        if (w.hosts() == 0) return field_error(f + ".hosts", "must be at least 1");
        if (last_hosts >= 0 && w.hosts() <= spec.waves(last_hosts).hosts()) {
          return field_error(f + ".hosts", absl::StrCat(w.hosts(), " is not more than waves[", last_hosts, "] (",
                                                        spec.waves(last_hosts).hosts(),
                                                        "): sizes are cumulative, each the total after that wave"));
        }
        last_hosts = i;
        break;
      case tern::v1::Wave::kPercent:
        if (w.percent() == 0 || w.percent() > 100) {
          return field_error(f + ".percent", absl::StrCat(w.percent(), " is not 1-100"));
        }
        if (last_percent >= 0 && w.percent() <= spec.waves(last_percent).percent()) {
          return field_error(f + ".percent", absl::StrCat(w.percent(), "% is not more than waves[", last_percent,
                                                          "] (", spec.waves(last_percent).percent(),
                                                          "%): sizes are cumulative, each the total after that wave"));
        }
        last_percent = i;
        break;
      default:
        return field_error(f, "give its size as hosts: N or percent: P");
    }
    if (w.weight() > 100) return field_error(f + ".weight", absl::StrCat(w.weight(), " is not 1-100"));
    if (!parse_traffic_split(w.split())) {
      return field_error(f + ".split", absl::StrCat("\"", w.split(), "\" must be connection or client"));
    }
    const auto& gw = w.gate_webhook();
    const bool plain = gw.size() <= 64 && std::all_of(gw.begin(), gw.end(), [](char c) {
      return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    });
    if (!plain) {
      return field_error(f + ".gate_webhook",
                         absl::StrCat("\"", w.gate_webhook(), "\" is not a webhook name (the names of the "
                                      "coordinator's webhooks: config)"));
    }
    if (auto m = checked_duration(w.bake(), Millis(30LL * 24 * 3600 * 1000)); !m.ok()) {
      return field_error(f + ".bake", std::string(m.status().message()));
    }
    if (w.analyze() && effective_weight(w.weight()) == 100) {
      return field_error(f + ".analyze",
                         "a wave at weight 100 leaves no blue to judge green against; give it a weight below 100 "
                         "(e.g. weight: 10), or do not analyze it");
    }
  }
  if (auto st = validate_analysis_policy(spec); !st.ok()) return st;
  const auto& b = spec.failure_budget();
  if (b.max_failed_percent() > 100) {
    return field_error("failure_budget.max_failed_percent", absl::StrCat(b.max_failed_percent(), " is not 0-100"));
  }
  if (auto m = checked_duration(spec.progress_deadline(), Millis(30LL * 24 * 3600 * 1000)); !m.ok()) {
    return field_error("progress_deadline", std::string(m.status().message()));
  }
  if (TimeUtil::DurationToMilliseconds(spec.progress_deadline()) < 1000) {
    return field_error("progress_deadline", "must be at least 1s");
  }
  if (!spec.spread_label().empty() && !is_valid_label_key(spec.spread_label())) {
    return field_error("spread_label", absl::StrCat("\"", spec.spread_label(), "\" is not a label key"));
  }
  return absl::OkStatus();
}

}  // namespace tern
