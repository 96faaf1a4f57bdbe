#pragma once

#include <signal.h>

namespace tern {

// Daemon stop handling: block SIGINT and SIGTERM in every thread (call this
// before any thread starts), then wait for one on the main thread.
class StopSignals {
 public:
  StopSignals();
  // Blocks until SIGINT or SIGTERM arrives; returns its name.
  const char* wait();

 private:
  sigset_t set_;
};

}  // namespace tern
