#include "core/signals.h"

#include <pthread.h>

namespace tern {

StopSignals::StopSignals() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  // A peer that goes away mid-write (a pipe to nft, a probe socket) must be
  // an error return, never the death of the daemon.
  signal(SIGPIPE, SIG_IGN);
}

const char* StopSignals::wait() {
  int sig = 0;
  sigwait(&set_, &sig);
  return sig == SIGTERM ? "SIGTERM" : "SIGINT";
}

}  // namespace tern
