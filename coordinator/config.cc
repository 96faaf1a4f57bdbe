#include "coordinator/config.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/metrics.h"
#include "core/yaml_config.h"
#include "coordinator/webhook.h"

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
  m.get("artifact_dir", cfg.artifact_dir);
  m.get("command_timeout", cfg.command_timeout);
  m.get("audit_max_age", cfg.audit_max_age);
  m.get("audit_max_rows", cfg.audit_max_rows);
  m.get("host_history_max_age", cfg.host_history_max_age);
  m.get("host_history_max_rows", cfg.host_history_max_rows);
  m.get("analysis_samples_max_age", cfg.analysis_samples_max_age);
  m.get("analysis_samples_max_rows", cfg.analysis_samples_max_rows);
  int64_t max_bytes = static_cast<int64_t>(cfg.max_artifact_bytes);
  m.get("max_artifact_bytes", max_bytes);
  cfg.max_artifact_bytes = static_cast<uint64_t>(std::max<int64_t>(max_bytes, 0));
  m.get("insecure", cfg.insecure);
  m.get("trust_hello_labels", cfg.trust_hello_labels);
  read_tls(m, cfg.tls, /*client=*/false);
  if (auto p = m.child("prometheus")) {
    p->get("address", cfg.prometheus.address);
    p->get("bearer_token_file", cfg.prometheus.bearer_token_file);
    p->get("ca_file", cfg.prometheus.ca_file);
    p->get("timeout", cfg.prometheus.timeout);
    m.absorb(p->finish());
  }
  m.get("webhook_max_age", cfg.webhook_max_age);
  for (auto& w : m.children("webhooks")) {
    auto& hook = cfg.webhooks.emplace_back();
    w.get("name", hook.name);
    w.get("url", hook.url);
    w.get("secret_file", hook.secret_file);
    w.get("events", hook.events);
    w.get("ca_file", hook.ca_file);
    w.get("timeout", hook.timeout);
    m.absorb(w.finish());
  }
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
  if (cfg.max_artifact_bytes == 0) return absl::InvalidArgumentError("key \"max_artifact_bytes\": must be positive");
  if (cfg.command_timeout < Millis(100)) {
    return absl::InvalidArgumentError("key \"command_timeout\": must be at least 100ms");
  }
  if (cfg.hello_timeout < Millis(10)) {
    return absl::InvalidArgumentError("key \"hello_timeout\": must be at least 10ms");
  }
  if (cfg.insecure && !cfg.tls.empty()) {
    return absl::InvalidArgumentError("keys \"insecure\" and \"tls\": choose one (insecure turns TLS off)");
  }
  for (const auto& [key, rows] : {std::pair{"audit_max_rows", cfg.audit_max_rows},
                                   std::pair{"host_history_max_rows", cfg.host_history_max_rows},
                                   std::pair{"analysis_samples_max_rows", cfg.analysis_samples_max_rows}}) {
    if (rows < 0) return absl::InvalidArgumentError(absl::StrCat("key \"", key, "\": must be 0 (no limit) or more"));
  }
  if (auto st = validate_webhooks(cfg); !st.ok()) return st;
  if (cfg.unreachable_after <= cfg.heartbeat_interval) {
    return absl::InvalidArgumentError(
        "key \"unreachable_after\": must be longer than heartbeat_interval, or every host flaps");
  }
  return absl::OkStatus();
}

std::string effective_artifact_dir(const CoordinatorConfig& cfg) {
  if (!cfg.artifact_dir.empty()) return cfg.artifact_dir;
  if (cfg.database == ":memory:") return (std::filesystem::temp_directory_path() / "tern-artifacts").string();
  auto parent = std::filesystem::path(cfg.database).parent_path();
  return (parent.empty() ? std::filesystem::path("artifacts") : parent / "artifacts").string();
}

}  // namespace tern
