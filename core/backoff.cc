#include "core/backoff.h"

#include <algorithm>
#include <cmath>

namespace tern {

Backoff::Backoff(BackoffPolicy policy, uint64_t seed) : policy_(policy), rng_(seed) {
  policy_.initial = std::max(policy_.initial, Millis(1));
  policy_.max = std::max(policy_.max, policy_.initial);
  policy_.multiplier = std::max(policy_.multiplier, 1.0);
  policy_.jitter = std::clamp(policy_.jitter, 0.0, 1.0);
}

Millis Backoff::next_delay() {
  const double initial = static_cast<double>(policy_.initial.count());
  const double cap = static_cast<double>(policy_.max.count());
  // pow() of a large attempt count overflows to inf; min() handles that.
  const double base = std::min(cap, initial * std::pow(policy_.multiplier, attempt_));
  if (attempt_ < 64) ++attempt_;
  std::uniform_real_distribution<double> spread(1.0 - policy_.jitter, 1.0);
  const double delay = base * spread(rng_);
  return Millis(std::max<int64_t>(1, static_cast<int64_t>(delay)));
}

}  // namespace tern
