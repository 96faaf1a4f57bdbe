#include "core/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "core/status_fmt.h"

#include "absl/strings/str_cat.h"

namespace tern {

absl::Status init_logging(const std::string& program, const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  // from_str() maps anything unknown to "off"; only accept that when asked.
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown log level \"", level, "\": use trace, debug, info, warn, error or off"));
  }
  auto logger = spdlog::stderr_logger_mt(program);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%L%$ %n: %v");
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return absl::OkStatus();
}

}  // namespace tern
