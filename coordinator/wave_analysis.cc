#include "coordinator/wave_analysis.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

std::string verdict_word(CanaryVerdict v) { return std::string(canary_verdict_name(v)); }

tern::v1::MetricVerdict metric_verdict(const std::string& name, const CanaryDecision& d, double threshold) {
  tern::v1::MetricVerdict v;
  v.set_name(name);
  v.set_verdict(verdict_word(d.verdict));
  v.set_ratio(d.ratio);
  v.set_ratio_low(d.ratio_low);
  v.set_ratio_high(d.ratio_high);
  v.set_canary_bad(d.green_bad);
  v.set_canary_total(d.green_total);
  v.set_baseline_bad(d.blue_bad);
  v.set_baseline_total(d.blue_total);
  v.set_reason(d.reason);
  v.set_threshold(threshold);
  return v;
}

}  // namespace

WaveAnalysis::WaveAnalysis(tern::v1::ServiceAnalysis metrics, const tern::v1::AnalysisPolicy& policy,
                           uint32_t wave_hosts)
    : metrics_(std::move(metrics)),
      alpha_(policy.confidence() > 0 && policy.confidence() < 1 ? 1 - policy.confidence() : 0.01),
      warmup_(TimeUtil::DurationToMilliseconds(policy.warmup())),
      wave_hosts_(std::max<uint32_t>(1, wave_hosts)) {}

JudgePolicy WaveAnalysis::policy_for(const tern::v1::AnalysisMetric& m, double alpha) const {
  JudgePolicy p;
  p.max_ratio = m.max_ratio() > 0 ? m.max_ratio() : 1.5;
  p.min_excess = m.min_excess();
  p.pass_below = m.pass_below();
  p.alpha = alpha;
  p.metrics = std::max(1, metrics_.metrics_size());
  return p;
}

WaveAnalysis::Taken WaveAnalysis::add(const std::string& host, const tern::v1::AnalysisSample& s) {
  if (s.metrics_size() != metrics_.metrics_size()) return Taken::kMismatch;
  for (int i = 0; i < s.metrics_size(); ++i) {
    const auto& c = s.metrics(i);
    if (c.name() != metrics_.metrics(i).name()) return Taken::kMismatch;
    // No host serves this many requests in one interval: one that claims to
    // would outweigh the whole wave in the pooled test.
    if (c.canary_total() > kMaxRequestsPerInterval || c.baseline_total() > kMaxRequestsPerInterval ||
        c.canary_bad() > c.canary_total() || c.baseline_bad() > c.baseline_total()) {
      return Taken::kImplausible;
    }
  }
  HostTests& h = hosts_[host];
  if (h.split_id != s.split_id()) {
    // A new split on this host (deployed again): its tests start over.
    h = HostTests();
    h.split_id = s.split_id();
    for (const auto& m : metrics_.metrics()) h.tests.emplace_back(policy_for(m, alpha_ / wave_hosts_));
    h.thresholds.assign(static_cast<std::size_t>(metrics_.metrics_size()), 0);
  } else if (s.sequence() <= h.last_sequence) {
    return Taken::kStale;
  }
  h.last_sequence = s.sequence();
  h.canary_exits += s.canary_exits();
  if (Millis(TimeUtil::DurationToMilliseconds(s.since_split())) < warmup_) return Taken::kWarmingUp;
  if (s.weight() > 0 && s.weight() < 100) {
    h.weight_sum += s.weight();
    ++h.weighted;
    if (s.has_connections() && s.connections().canary() <= kMaxRequestsPerInterval &&
        s.connections().baseline() <= kMaxRequestsPerInterval) {
      h.split.add(s.connections().canary(), s.connections().baseline(), s.weight());
    }
  }
  for (int i = 0; i < s.metrics_size(); ++i) {
    const auto& c = s.metrics(i);
    if (!c.no_data().empty()) continue;  // no data is never zero
    h.tests[static_cast<std::size_t>(i)].add(
        CanaryCounts{c.canary_bad(), c.canary_total(), c.baseline_bad(), c.baseline_total()});
    if (c.threshold() > 0) h.thresholds[static_cast<std::size_t>(i)] = c.threshold();
  }
  return Taken::kCounted;
}

void SplitCount::add(uint64_t c, uint64_t b, uint32_t weight) {
  const double n = static_cast<double>(c) + static_cast<double>(b);
  const double p = weight / 100.0;
  canary += c;
  baseline += b;
  expected_canary += n * p;
  variance += n * p * (1 - p);
}

void SplitCount::merge(const SplitCount& o) {
  canary += o.canary;
  baseline += o.baseline;
  expected_canary += o.expected_canary;
  variance += o.variance;
}

std::optional<std::string> SplitCount::off() const {
  const uint64_t n = canary + baseline;
  if (n < WaveAnalysis::kMinConnectionsForSplitCheck) return std::nullopt;
  const double gap = std::abs(static_cast<double>(canary) - expected_canary);
  if (gap <= 5 * std::sqrt(variance) + 0.02 * static_cast<double>(n)) return std::nullopt;
  return absl::StrFormat("green got %.1f%% of %d new connections, its weights %.1f%%",
                         100.0 * static_cast<double>(canary) / static_cast<double>(n), n,
                         100.0 * expected_canary / static_cast<double>(n));
}

std::optional<std::string> WaveAnalysis::host_failure(const std::string& host) const {
  auto it = hosts_.find(host);
  if (it == hosts_.end()) return std::nullopt;
  const HostTests& h = it->second;
  if (h.canary_exits > 0) {
    return absl::StrCat("the canary's process exited ", h.canary_exits, " time(s) during analysis");
  }
  for (std::size_t i = 0; i < h.tests.size(); ++i) {
    if (!h.tests[i].fails()) continue;  // the cheap check first: most samples fail nothing
    const CanaryDecision d = h.tests[i].decide(/*may_pass=*/false, /*at_horizon=*/false);
    if (d.verdict == CanaryVerdict::kFail) {
      return absl::StrCat("analysis: ", metrics_.metrics(static_cast<int>(i)).name(), " FAIL: ", d.reason);
    }
  }
  return std::nullopt;
}

WaveAnalysis::Verdict WaveAnalysis::decide(const std::vector<std::string>& hosts, bool may_pass,
                                           bool at_horizon) const {
  Verdict out;
  std::vector<CountTest> pooled;
  std::vector<double> thresholds(static_cast<std::size_t>(metrics_.metrics_size()), 0);
  for (const auto& m : metrics_.metrics()) pooled.emplace_back(policy_for(m, alpha_));
  double weight_sum = 0;
  uint64_t weighted = 0;
  SplitCount split;
  std::vector<std::string> split_off;
  for (const auto& host : hosts) {
    auto it = hosts_.find(host);
    if (it == hosts_.end() || it->second.tests.empty()) continue;
    weight_sum += it->second.weight_sum;
    weighted += it->second.weighted;
    split.merge(it->second.split);
    if (auto off = it->second.split.off()) split_off.push_back(absl::StrCat(host, " (", *off, ")"));
    bool counted = false;
    for (std::size_t i = 0; i < pooled.size(); ++i) {
      // Same margin by construction, so merge cannot refuse; a host's own
      // (smaller) alpha does not matter to the sums.
      counted |= it->second.tests[i].intervals() > 0;
      pooled[i].merge(it->second.tests[i]);
      if (it->second.thresholds[i] > 0) thresholds[i] = std::max(thresholds[i], it->second.thresholds[i]);
    }
    out.hosts_counted += counted;
  }
  if (!pooled.empty()) {
    const auto& t = pooled[0].totals();
    const double all = static_cast<double>(t.green_total) + static_cast<double>(t.blue_total);
    if (all > 0) out.canary_share = static_cast<double>(t.green_total) / all;
  }
  if (weighted > 0) out.expected_share = weight_sum / static_cast<double>(weighted) / 100;
  out.connections = split.canary + split.baseline;
  if (out.connections > 0) out.connection_share = static_cast<double>(split.canary) / static_cast<double>(out.connections);
  // The hosts where it is off first: they are where to look.
  if (split_off.empty()) {
    if (auto off = split.off()) out.split_warning = absl::StrCat("the split is off: ", *off);
  } else {
    std::sort(split_off.begin(), split_off.end());
    const std::size_t shown = std::min<std::size_t>(split_off.size(), 3);
    out.split_warning = absl::StrCat("the split is off on ", split_off.size(), " host(s): ",
                                     absl::StrJoin(split_off.begin(), split_off.begin() + static_cast<long>(shown), "; "),
                                     split_off.size() > shown ? "; ..." : "");
  }
  // The wave fails on any metric's FAIL; passes when every metric passes;
  // is inconclusive at the horizon otherwise.
  bool all_pass = !pooled.empty();
  std::string failing, waiting;
  for (std::size_t i = 0; i < pooled.size(); ++i) {
    const auto& m = metrics_.metrics(static_cast<int>(i));
    const CanaryDecision d = pooled[i].decide(may_pass, at_horizon);
    out.intervals = std::max(out.intervals, pooled[i].intervals());
    out.metrics.push_back(metric_verdict(m.name(), d, thresholds[i]));
    if (d.verdict == CanaryVerdict::kFail && failing.empty()) failing = absl::StrCat(m.name(), ": ", d.reason);
    if (d.verdict != CanaryVerdict::kPass) {
      all_pass = false;
      if (waiting.empty()) waiting = absl::StrCat(m.name(), ": ", d.reason);
    }
  }
  if (!failing.empty()) {
    out.verdict = CanaryVerdict::kFail;
    out.summary = failing;
  } else if (all_pass) {
    out.verdict = CanaryVerdict::kPass;
    out.summary = absl::StrCat(out.metrics.size(), " metric(s) passed over ", out.hosts_counted, " host(s)");
  } else if (at_horizon) {
    out.verdict = CanaryVerdict::kInconclusive;
    out.summary = out.hosts_counted == 0 ? std::string("no host sent counts past its warm-up") : waiting;
  } else {
    out.summary = waiting;
  }
  return out;
}

std::vector<tern::v1::MetricVerdict> WaveAnalysis::host_verdicts(const std::string& host) const {
  std::vector<tern::v1::MetricVerdict> out;
  auto it = hosts_.find(host);
  if (it == hosts_.end()) return out;
  for (std::size_t i = 0; i < it->second.tests.size(); ++i) {
    out.push_back(metric_verdict(metrics_.metrics(static_cast<int>(i)).name(),
                                 it->second.tests[i].decide(/*may_pass=*/false, /*at_horizon=*/false),
                                 it->second.thresholds[i]));
  }
  return out;
}

void WaveAnalysis::drop(const std::string& host) { hosts_.erase(host); }

std::vector<tern::v1::ReplayedVerdict> replay_wave(
    uint32_t wave, const tern::v1::ServiceAnalysis& metrics, const tern::v1::AnalysisPolicy& policy,
    uint32_t wave_hosts, const std::vector<std::pair<std::string, tern::v1::AnalysisSample>>& samples,
    const std::vector<int64_t>& times_ms) {
  std::vector<tern::v1::ReplayedVerdict> out;
  if (samples.empty() || samples.size() != times_ms.size()) return out;
  WaveAnalysis analysis(metrics, policy, wave_hosts);
  const int64_t interval = std::max<int64_t>(100, TimeUtil::DurationToMilliseconds(policy.interval()));
  const int64_t warmup = TimeUtil::DurationToMilliseconds(policy.warmup());
  int64_t t0 = times_ms[0] - TimeUtil::DurationToMilliseconds(samples[0].second.since_split());
  for (std::size_t i = 0; i < samples.size(); ++i) {
    t0 = std::min(t0, times_ms[i] - TimeUtil::DurationToMilliseconds(samples[i].second.since_split()));
  }
  const int64_t pass_from = t0 + warmup + TimeUtil::DurationToMilliseconds(policy.min_duration());
  const int64_t horizon = t0 + warmup + TimeUtil::DurationToMilliseconds(policy.max_duration());
  std::vector<std::string> hosts;
  std::set<std::string> seen, failed;
  std::string last = "RUNNING";
  int64_t next_look = t0 + interval;
  auto record = [&](int64_t t, const std::string& verdict, const std::string& host, const std::string& message,
                    uint64_t intervals) {
    auto& v = out.emplace_back();
    v.set_wave(wave);
    *v.mutable_time() = TimeUtil::MillisecondsToTimestamp(t);
    v.set_verdict(verdict);
    v.set_host(host);
    v.set_message(message);
    v.set_intervals(intervals);
  };
  auto look = [&](int64_t t) {
    const bool decided = last == "PASS" || last == "FAIL" || last == "INCONCLUSIVE";
    const auto v = analysis.decide(hosts, !decided && t >= pass_from, !decided && t >= horizon);
    const std::string now = verdict_word(v.verdict);
    // After a verdict only a FAIL changes it, as in the engine.
    if (now == last || now == "RUNNING" || (decided && now != "FAIL")) return;
    last = now;
    record(t, now, "", v.summary, v.intervals);
  };
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto& [host, s] = samples[i];
    const int64_t t = times_ms[i];
    while (next_look <= t) {
      look(next_look);
      next_look += interval;
    }
    if (failed.count(host) != 0) continue;
    if (seen.insert(host).second) hosts.push_back(host);
    if (analysis.add(host, s) != WaveAnalysis::Taken::kCounted) continue;
    if (auto why = analysis.host_failure(host)) {
      record(t, "FAIL", host, *why, 0);
      analysis.drop(host);
      failed.insert(host);
      hosts.erase(std::remove(hosts.begin(), hosts.end(), host), hosts.end());
    }
  }
  look(times_ms.back());
  return out;
}

}  // namespace tern
