#pragma once

#include <string>

#include "absl/status/status.h"
#include "core/status_fmt.h"

namespace tern {

// Sets up the process-wide spdlog logger on stderr (journald picks it up
// under systemd). `level` is trace, debug, info, warn, error or off.
absl::Status init_logging(const std::string& program, const std::string& level);

}  // namespace tern
