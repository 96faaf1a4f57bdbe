#include "core/backoff.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(BackoffTest, GrowsExponentiallyUpToTheCap) {
  Backoff b({.initial = Millis(100), .max = Millis(1000), .multiplier = 2.0, .jitter = 0.0});
  EXPECT_EQ(b.next_delay(), Millis(100));
  EXPECT_EQ(b.next_delay(), Millis(200));
  EXPECT_EQ(b.next_delay(), Millis(400));
  EXPECT_EQ(b.next_delay(), Millis(800));
  EXPECT_EQ(b.next_delay(), Millis(1000));
  EXPECT_EQ(b.next_delay(), Millis(1000));
}

TEST(BackoffTest, JitterStaysWithinItsBand) {
  Backoff b({.initial = Millis(1000), .max = Millis(1000), .multiplier = 2.0, .jitter = 0.25}, 42);
  Millis lo = Millis::max(), hi = Millis::zero();
  for (int i = 0; i < 1000; ++i) {
    Millis d = b.next_delay();
    ASSERT_GE(d, Millis(750));
    ASSERT_LE(d, Millis(1000));
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  // The delays really are spread, so a fleet does not reconnect in lockstep.
  EXPECT_LT(lo, Millis(800));
  EXPECT_GT(hi, Millis(950));
}

TEST(BackoffTest, DifferentSeedsSpreadTheSameAttempt) {
  Backoff a({.initial = Millis(1000), .jitter = 0.5}, 1);
  Backoff b({.initial = Millis(1000), .jitter = 0.5}, 2);
  EXPECT_NE(a.next_delay(), b.next_delay());
}

TEST(BackoffTest, ResetStartsOverAfterAGoodConnection) {
  FakeClock clock;
  Backoff b({.initial = Millis(500), .max = Millis(30'000), .jitter = 0.0});
  // Three failed attempts, each scheduled from the fake clock.
  TimePoint t = clock.now();
  for (int i = 0; i < 3; ++i) {
    TimePoint next = b.next_attempt(clock.now());
    clock.set(next);
  }
  EXPECT_EQ(clock.now() - t, Millis(500 + 1000 + 2000));
  EXPECT_EQ(b.attempts(), 3u);
  b.reset();  // first good message on the new stream
  EXPECT_EQ(b.next_attempt(clock.now()) - clock.now(), Millis(500));
}

TEST(BackoffTest, ManyAttemptsNeitherOverflowNorExceedTheCap) {
  Backoff b({.initial = Millis(1), .max = Millis(60'000), .multiplier = 10.0, .jitter = 0.0});
  for (int i = 0; i < 500; ++i) ASSERT_LE(b.next_delay(), Millis(60'000));
  EXPECT_EQ(b.next_delay(), Millis(60'000));
}

TEST(BackoffTest, NonsensePolicyIsClampedToSomethingSafe) {
  Backoff b({.initial = Millis(0), .max = Millis(0), .multiplier = 0.5, .jitter = 7.0});
  for (int i = 0; i < 10; ++i) ASSERT_GE(b.next_delay(), Millis(1));
}

}  // namespace
}  // namespace tern
