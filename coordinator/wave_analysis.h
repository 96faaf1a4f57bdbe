#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/canary_judge.h"
#include "core/clock.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/rollout.pb.h"
#include "tern/v1/service.pb.h"

namespace tern {

// The canary analysis of one wave: per host and metric a CountTest of what
// the host's agent counted (green, the canary, against blue, the baseline,
// on that host at the same time), and the wave's verdict from the pooled
// tests of the hosts still on the canary (docs/ARCHITECTURE.md, "Canary analysis").
//
// Samples from a host's warm-up (the agent's time since it applied the
// weight) are not judged; a repeated or older sample of the same split is
// ignored; a sample of another split (the host was deployed again) starts
// the host's tests over. A host's own FAIL uses alpha divided by the wave's
// hosts, so a wide wave does not flip hosts back by chance.
//
// Pure: no clock, no I/O; the rollout engine decides when to ask.
// New connections to each side against what the weights should have given.
struct SplitCount {
  uint64_t canary = 0, baseline = 0;
  double expected_canary = 0;  // sum of weight x connections per sample
  double variance = 0;         // sum of n p (1 - p) per sample
  void add(uint64_t c, uint64_t b, uint32_t weight);
  void merge(const SplitCount& o);
  // "green got 31.0% of 1,200 new connections, its weight 10%", when far off.
  std::optional<std::string> off() const;
};

class WaveAnalysis {
 public:
  WaveAnalysis(tern::v1::ServiceAnalysis metrics, const tern::v1::AnalysisPolicy& policy, uint32_t wave_hosts);

  enum class Taken { kCounted, kWarmingUp, kStale, kMismatch, kImplausible };
  // Counts per side and interval past which a sample is refused
  // (kImplausible), as are more bad requests than requests.
  static constexpr uint64_t kMaxRequestsPerInterval = 100'000'000;
  // `sample` from `host`. kMismatch when its metrics are not the spec's (a
  // spec applied mid-wave): nothing is counted.
  Taken add(const std::string& host, const tern::v1::AnalysisSample& sample);

  // Why `host` fails on its own counts (its first failing metric, with the
  // judge's numbers), or nullopt. Also a canary that exited during analysis.
  std::optional<std::string> host_failure(const std::string& host) const;

  // The wave's verdict over `hosts` (those still on the canary).
  struct Verdict {
    CanaryVerdict verdict = CanaryVerdict::kRunning;
    // One line: the deciding metric and its numbers, or what is missing.
    std::string summary;
    std::vector<tern::v1::MetricVerdict> metrics;
    uint32_t hosts_counted = 0;
    uint64_t intervals = 0;
    // Green's share of the first metric's requests, and of new connections
    // by the weights its counted samples had (0 without counts).
    double canary_share = 0;
    double expected_share = 0;
    // The kernel's count of the split: new connections to either side, and
    // green's share of them (0 without counts). A warning when the share is
    // far from what the weights give, pooled or on some host: more than 5
    // standard deviations and 2 points off, over at least
    // kMinConnectionsForSplitCheck connections.
    uint64_t connections = 0;
    double connection_share = 0;
    std::string split_warning;
  };
  static constexpr uint64_t kMinConnectionsForSplitCheck = 200;
  Verdict decide(const std::vector<std::string>& hosts, bool may_pass, bool at_horizon) const;

  // `host`'s own verdict per metric (for display when it fails alone).
  std::vector<tern::v1::MetricVerdict> host_verdicts(const std::string& host) const;

  // Forgets a host (flipped back, gone): its counts leave the pool.
  void drop(const std::string& host);

 private:
  struct HostTests {
    uint64_t split_id = 0;
    uint64_t last_sequence = 0;
    uint32_t canary_exits = 0;
    std::vector<CountTest> tests;  // per metric, in the spec's order
    std::vector<double> thresholds;
    double weight_sum = 0;  // the weights of the counted samples
    uint64_t weighted = 0;
    SplitCount split;
  };
  JudgePolicy policy_for(const tern::v1::AnalysisMetric& m, double alpha) const;

  tern::v1::ServiceAnalysis metrics_;
  double alpha_;
  Millis warmup_;
  uint32_t wave_hosts_;
  std::unordered_map<std::string, HostTests> hosts_;
};

// Every verdict of one analyzed wave recomputed from its stored samples
// (`times_ms` beside them, when the coordinator took each): the wave's
// verdict at each interval once its first sample's split began, and each
// host that fails on its own counts; an entry when something changes. The
// wave's clock starts at its earliest split (a sample's time less its
// since_split), so warm-up, min_duration and max_duration apply as the
// engine applied them, to within one interval.
std::vector<tern::v1::ReplayedVerdict> replay_wave(uint32_t wave, const tern::v1::ServiceAnalysis& metrics,
                                                   const tern::v1::AnalysisPolicy& policy, uint32_t wave_hosts,
                                                   const std::vector<std::pair<std::string, tern::v1::AnalysisSample>>& samples,
                                                   const std::vector<int64_t>& times_ms);

}  // namespace tern
