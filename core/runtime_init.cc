#include "core/runtime_init.h"

#include <cerrno>

#include "absl/base/internal/sysinfo.h"
#include "absl/synchronization/mutex.h"

namespace tern {

void init_runtime() {
  static const bool done = [] {
    const int saved = errno;
    (void)absl::base_internal::NominalCPUFrequency();
    // Debian builds abseil without NDEBUG, which leaves absl::Mutex's
    // deadlock detector on: every lock and unlock inside gRPC then updates a
    // global lock graph. It is a debugging aid; in production it is a few
    // percent of the coordinator's CPU under fleet load.
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    errno = saved;
    return true;
  }();
  (void)done;
}

}  // namespace tern
