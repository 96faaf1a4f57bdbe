#pragma once

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace tern {

// A crash point for tests of the real binary: with TERN_FAILPOINT=<name> in
// its environment the agent kills itself (SIGKILL, as `kill -9` would: no
// cleanup, no state write) when it reaches failpoint(<name>). Without the
// variable it does nothing. Points: "after_slot_start" (a slot process runs,
// its pid is not recorded yet).
inline void failpoint(const char* name) {
  const char* armed = std::getenv("TERN_FAILPOINT");
  if (armed == nullptr || std::strcmp(armed, name) != 0) return;
  spdlog::critical("failpoint {}: the agent kills itself (TERN_FAILPOINT)", name);
  spdlog::default_logger()->flush();
  ::kill(::getpid(), SIGKILL);
}

}  // namespace tern
