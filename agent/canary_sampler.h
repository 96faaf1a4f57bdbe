#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/clock.h"
#include "core/counter_delta.h"
#include "core/prom_text.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/service.pb.h"

namespace tern {

// GET http://127.0.0.1:<port><path> with libcurl: the body of a 200 answer,
// at most kMaxPromTextBytes, within `timeout`; no proxy, no redirects. Errors
// are one phrase: "GET /metrics on 127.0.0.1:9002: Connection refused".
absl::StatusOr<std::string> scrape_loopback(uint16_t port, const std::string& path, Millis timeout);

// One canary split on this host: the canary's and the baseline's metrics
// endpoints, scraped together, turned into one interval of counts per
// analysis metric of the spec (docs/ARCHITECTURE.md, "Canary analysis"). The first sample() is the baseline and has no counts; so is
// the first after a scrape failed on either side (both sides always cover
// the same interval, or neither counts). Latency thresholds come from the
// baseline's whole history (its cumulative histogram when they are first
// needed) and stay fixed for the split.
//
// Not thread-safe: the supervisor's thread owns it.
class CanarySampler {
 public:
  using Fetch = std::function<absl::StatusOr<std::string>(uint16_t port, const std::string& path)>;

  // The spec was validated: every selector parses. INVALID_ARGUMENT otherwise.
  static absl::StatusOr<CanarySampler> create(const tern::v1::ServiceSpec& spec, uint16_t canary_port,
                                              uint16_t baseline_port, Fetch fetch);

  // Scrapes both sides. nullopt for a baseline; otherwise one MetricCounts
  // per analysis metric, in the spec's order, `no_data` set (never zeros)
  // where this interval has no counts for it.
  std::optional<std::vector<tern::v1::MetricCounts>> sample();

 private:
  struct Metric {
    tern::v1::AnalysisMetric spec;
    std::optional<PromSelector> bad, total;                // ratio
    std::string histogram;                                  // latency: name without _bucket
    std::vector<PromLabelMatcher> histogram_matchers;
    std::optional<double> threshold;                        // latency, once known
  };
  CanarySampler(std::vector<Metric> metrics, uint16_t canary_port, uint16_t baseline_port, std::string path,
                Fetch fetch, CounterDelta::Options track);

  tern::v1::MetricCounts count(const Metric& m) const;

  std::vector<Metric> metrics_;
  uint16_t canary_port_, baseline_port_;
  std::string path_;
  Fetch fetch_;
  CounterDelta canary_, baseline_;
};

// Adds `next` to `into` metric by metric (same order, same names): counts
// add up; a metric with no data on one side keeps the other's counts.
void accumulate_counts(std::vector<tern::v1::MetricCounts>& into, const std::vector<tern::v1::MetricCounts>& next);

}  // namespace tern
