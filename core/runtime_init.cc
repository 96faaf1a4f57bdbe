#include "core/runtime_init.h"

#include <cerrno>

#include "absl/base/internal/sysinfo.h"

namespace tern {

void init_runtime() {
  static const bool done = [] {
    const int saved = errno;
    (void)absl::base_internal::NominalCPUFrequency();
    errno = saved;
    return true;
  }();
  (void)done;
}

}  // namespace tern
