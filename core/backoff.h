#pragma once

#include <cstdint>
#include <random>

#include "core/clock.h"

namespace tern {

struct BackoffPolicy {
  Millis initial{500};
  Millis max{30'000};
  double multiplier = 2.0;
  // Fraction of each delay that is randomised away: 0.2 gives a delay in
  // [0.8 * d, d]. Spreads a fleet's reconnects after a coordinator restart.
  double jitter = 0.2;
};

// Jittered exponential backoff for reconnecting clients. Not thread-safe; one
// per connection loop. Call reset() after the first good message on a new
// connection so a healthy link that later breaks starts again from `initial`.
class Backoff {
 public:
  explicit Backoff(BackoffPolicy policy, uint64_t seed = std::random_device{}());

  // The delay before the next attempt; each call grows the base delay.
  Millis next_delay();
  // The time of the next attempt, given the time of the failed one.
  TimePoint next_attempt(TimePoint failed_at) { return failed_at + next_delay(); }
  void reset() { attempt_ = 0; }
  uint32_t attempts() const { return attempt_; }
  const BackoffPolicy& policy() const { return policy_; }

 private:
  BackoffPolicy policy_;
  uint32_t attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace tern
