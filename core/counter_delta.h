#pragma once

// How much each counter of one app grew between two consecutive scrapes:
// the per-interval counts canary analysis judges (requests, errors, bucket
// counts), with the two rules a scraper that knows the app must apply
// (docs/ARCHITECTURE.md, "Canary analysis"):
//  - a counter that went down was reset (the process restarted): its
//    increase is its new value, and resets() says it happened;
//  - a series first seen after the baseline starts from zero: the first 5xx
//    creates `code="500"`, and that whole first count is an increase.
// The first scrape, and the first after restart(), is the baseline: it has
// no increases. Memory is bounded: only the last scrape's series are kept
// (a series that disappears is forgotten; if it comes back it is new), at
// most Options::max_series of them.
//
// Not thread-safe: one owner (the scrape loop of one slot) calls it.

#include <cstddef>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/prom_text.h"

namespace tern {

class CounterDelta {
 public:
  struct Options {
    // Series kept between scrapes (after `track`): a scrape with more is
    // refused and becomes no interval at all.
    std::size_t max_series = 10'000;
    // Only series that match one of these are kept; empty keeps every
    // series. A histogram is tracked by its `<name>_bucket` series.
    std::vector<PromSelector> track;
  };

  CounterDelta() : CounterDelta(Options{}) {}
  explicit CounterDelta(Options options);

  // Takes the next scrape (as parse_prom_text returns it) and works out each
  // tracked series' increase since the previous one. Errors leave no
  // interval and make the next scrape a baseline: RESOURCE_EXHAUSTED when
  // more than max_series series are tracked, INVALID_ARGUMENT when a series
  // appears twice. A series whose value, or previous value, is not a finite
  // number >= 0 has the increase NaN (so does any sum it is part of: no data,
  // never a guess).
  absl::Status observe(const std::vector<PromSample>& scrape);

  // The slot restarted (or the scrape lost track of it): forget the previous
  // scrape, so the next one is a baseline rather than counts against a
  // process that no longer exists.
  void restart();

  // True when the last observe() produced an interval (it was not a
  // baseline and did not fail).
  bool has_delta() const { return has_delta_; }
  // The last interval's increases, one sample per tracked series of the
  // last scrape with the increase as its value; empty without an interval.
  const std::vector<PromSample>& increases() const { return increases_; }
  // Sum of the matching series' increases (0 without an interval).
  double increase(const PromSelector& selector) const;
  // Per-`le` sums of the increases of `histogram_name`'s buckets, cumulative
  // as in the exposition (histogram_buckets() on increases()).
  absl::StatusOr<PromBuckets> increase_buckets(absl::string_view histogram_name,
                                               const std::vector<PromLabelMatcher>& matchers = {}) const;
  // Series that went down in the last interval: counter resets.
  std::size_t resets() const { return resets_; }
  // Series kept from the last scrape.
  std::size_t tracked_series() const { return previous_.size(); }

 private:
  bool tracked(const PromSample& sample) const;

  Options options_;
  bool baseline_next_ = true;
  bool has_delta_ = false;
  std::size_t resets_ = 0;
  absl::flat_hash_map<std::string, double> previous_;  // format_prom_series -> value
  std::vector<PromSample> increases_;
};

}  // namespace tern
