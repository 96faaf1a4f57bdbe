#include "coordinator/config.h"

#include "absl/strings/str_cat.h"
#include "core/metrics.h"
#include "core/yaml_config.h"

namespace tern {

absl::StatusOr<CoordinatorConfig> load_coordinator_config(const std::string& path) {
  CoordinatorConfig cfg;
  auto root = load_yaml_file(path);
  if (!root.ok()) return root.status();
  YamlMap m(*root, path);
  m.get("listen", cfg.listen);
  m.get("metrics_listen", cfg.metrics_listen);
  m.get("database", cfg.database);
  m.get("unreachable_after", cfg.unreachable_after);
  m.get("heartbeat_interval", cfg.heartbeat_interval);
  m.get("log_level", cfg.log_level);
  m.get("hello_timeout", cfg.hello_timeout);
  if (auto st = m.finish(); !st.ok()) return st;
  if (auto st = validate(cfg); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  }
  return cfg;
}

absl::Status validate(const CoordinatorConfig& cfg) {
  if (auto hp = split_host_port(cfg.listen); !hp.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("key \"listen\": ", hp.status().message()));
  }
  if (!cfg.metrics_listen.empty()) {
    if (auto hp = split_host_port(cfg.metrics_listen); !hp.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("key \"metrics_listen\": ", hp.status().message()));
    }
  }
  if (cfg.database.empty()) return absl::InvalidArgumentError("key \"database\": must not be empty");
  if (cfg.heartbeat_interval < Millis(10)) {
    return absl::InvalidArgumentError("key \"heartbeat_interval\": must be at least 10ms");
  }
  if (cfg.hello_timeout < Millis(10)) {
    return absl::InvalidArgumentError("key \"hello_timeout\": must be at least 10ms");
  }
  if (cfg.unreachable_after <= cfg.heartbeat_interval) {
    return absl::InvalidArgumentError(
        "key \"unreachable_after\": must be longer than heartbeat_interval, or every host flaps");
  }
  return absl::OkStatus();
}

}  // namespace tern
