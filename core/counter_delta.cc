#include "core/counter_delta.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/text.h"

namespace tern {
namespace {

bool is_count(double v) { return std::isfinite(v) && v >= 0; }

}  // namespace

CounterDelta::CounterDelta(Options options) : options_(std::move(options)) {}

bool CounterDelta::tracked(const PromSample& sample) const {
  if (options_.track.empty()) return true;
  for (const PromSelector& s : options_.track) {
    if (matches(s, sample)) return true;
  }
  return false;
}

void CounterDelta::restart() {
  baseline_next_ = true;
  has_delta_ = false;
  resets_ = 0;
  previous_.clear();
  increases_.clear();
}

absl::Status CounterDelta::observe(const std::vector<PromSample>& scrape) {
  const bool baseline = baseline_next_;
  const absl::flat_hash_map<std::string, double> previous = std::move(previous_);
  restart();  // until this scrape is accepted: a failure leaves no interval and no baseline
  absl::flat_hash_map<std::string, double> current;
  std::vector<PromSample> increases;
  std::size_t resets = 0;
  for (const PromSample& sample : scrape) {
    if (!tracked(sample)) continue;
    if (current.size() == options_.max_series) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the scrape has more than ", options_.max_series,
                       " series to track; track fewer metrics or raise the limit"));
    }
    std::string key = format_prom_series(sample);
    auto [at, fresh] = current.emplace(std::move(key), sample.value);
    if (!fresh) {
      return absl::InvalidArgumentError(
          absl::StrCat("the scrape has the series ", printable(at->first, 200), " twice"));
    }
    if (baseline) continue;
    double increase;
    auto before = previous.find(at->first);
    if (!is_count(sample.value)) {
      increase = std::numeric_limits<double>::quiet_NaN();
    } else if (before == previous.end()) {
      increase = sample.value;  // new since the last scrape: counted from zero
    } else if (!is_count(before->second)) {
      increase = std::numeric_limits<double>::quiet_NaN();
    } else if (sample.value < before->second) {
      increase = sample.value;  // reset: the process started again from zero
      ++resets;
    } else {
      increase = sample.value - before->second;
    }
    increases.push_back(PromSample{sample.name, sample.labels, increase});
  }
  baseline_next_ = false;
  has_delta_ = !baseline;
  resets_ = resets;
  previous_ = std::move(current);
  increases_ = std::move(increases);
  return absl::OkStatus();
}

double CounterDelta::increase(const PromSelector& selector) const { return sum(selector, increases_); }

absl::StatusOr<PromBuckets> CounterDelta::increase_buckets(absl::string_view histogram_name,
                                                          const std::vector<PromLabelMatcher>& matchers) const {
  return histogram_buckets(increases_, histogram_name, matchers);
}

}  // namespace tern
