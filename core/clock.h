#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace tern {

// Wall-clock time in milliseconds since the Unix epoch. Persisted timestamps
// and every timeout the logic computes use this type, so a fake clock can
// drive all of it.
using Millis = std::chrono::milliseconds;
using TimePoint = std::chrono::time_point<std::chrono::system_clock, Millis>;

// Source of "now". Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override {
    return std::chrono::time_point_cast<Millis>(std::chrono::system_clock::now());
  }
  // A process-wide instance for wiring in main().
  static SystemClock& instance();
};

// A clock that moves only when told to. For tests of time-dependent logic.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start = TimePoint(Millis(1'700'000'000'000))) : now_(start.time_since_epoch().count()) {}
  TimePoint now() const override { return TimePoint(Millis(now_.load())); }
  void advance(Millis d) { now_ += d.count(); }
  void set(TimePoint t) { now_ = t.time_since_epoch().count(); }

 private:
  std::atomic<int64_t> now_;
};

inline int64_t to_unix_millis(TimePoint t) { return t.time_since_epoch().count(); }
inline TimePoint from_unix_millis(int64_t ms) { return TimePoint(Millis(ms)); }

}  // namespace tern
