#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace tern::testing {

// Polls `cond` until it holds or `deadline` passes, then asks it once more:
// how tests wait for something another thread or process does, instead of
// sleeping for a guessed time. The deadline only bounds a failure.
inline bool eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds deadline = std::chrono::seconds(20)) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

}  // namespace tern::testing
