#include "agent/config.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/metrics.h"
#include "core/yaml_config.h"

namespace tern {

absl::StatusOr<AgentConfig> load_agent_config(const std::string& path) {
  AgentConfig cfg;
  auto root = load_yaml_file(path);
  if (!root.ok()) return root.status();
  YamlMap m(*root, path);
  m.get("coordinator", cfg.coordinator);
  m.get("host_id", cfg.host_id);
  m.get("labels", cfg.labels);
  m.get("state_dir", cfg.state_dir);
  m.get("log_level", cfg.log_level);
  m.get("heartbeat_interval", cfg.heartbeat_interval);
  m.get("reconcile_interval", cfg.reconcile_interval);
  if (auto pm = m.child("port_mapper")) {
    pm->get("backend", cfg.port_mapper.backend);
    pm->get("table", cfg.port_mapper.table);
    m.absorb(pm->finish());
  }
  if (auto r = m.child("reconnect")) {
    r->get("initial", cfg.reconnect.initial);
    r->get("max", cfg.reconnect.max);
    m.absorb(r->finish());
  }
  if (auto st = m.finish(); !st.ok()) return st;
  if (auto st = validate(cfg); !st.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  return cfg;
}

absl::Status validate(const AgentConfig& cfg) {
  if (auto hp = split_host_port(cfg.coordinator); !hp.ok() || hp->second == 0) {
    return absl::InvalidArgumentError(absl::StrCat("key \"coordinator\": \"", cfg.coordinator,
                                                   "\" is not host:port with a non-zero port"));
  }
  if (!cfg.host_id.empty() && !is_valid_host_id(cfg.host_id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key \"host_id\": \"", cfg.host_id,
        "\" must be 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"));
  }
  for (const auto& [k, v] : cfg.labels) {
    if (!is_valid_label_key(k) || !is_valid_label_value(v)) {
      return absl::InvalidArgumentError(absl::StrCat("key \"labels\": \"", k, ": ", v,
                                                     "\" uses characters other than letters, digits, '-', '_', '.', '/'"));
    }
  }
  if (cfg.heartbeat_interval < Millis(10)) {
    return absl::InvalidArgumentError("key \"heartbeat_interval\": must be at least 10ms");
  }
  if (cfg.reconnect.initial <= Millis(0) || cfg.reconnect.max < cfg.reconnect.initial) {
    return absl::InvalidArgumentError("key \"reconnect\": need 0 < initial <= max");
  }
  if (cfg.port_mapper.backend != "nftables" && cfg.port_mapper.backend != "iptables") {
    return absl::InvalidArgumentError(absl::StrCat("key \"port_mapper.backend\": \"", cfg.port_mapper.backend,
                                                   "\" must be nftables or iptables"));
  }
  if (cfg.port_mapper.table.empty() || cfg.port_mapper.table.size() > 16) {
    return absl::InvalidArgumentError("key \"port_mapper.table\": must be 1-16 characters");
  }
  for (char c : cfg.port_mapper.table) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') {
      return absl::InvalidArgumentError("key \"port_mapper.table\": only letters, digits and '_'");
    }
  }
  if (cfg.reconcile_interval < Millis(100)) {
    return absl::InvalidArgumentError("key \"reconcile_interval\": must be at least 100ms");
  }
  if (cfg.state_dir.empty()) return absl::InvalidArgumentError("key \"state_dir\": must not be empty");
  return absl::OkStatus();
}

absl::StatusOr<std::string> resolve_host_id(const AgentConfig& cfg, const std::string& machine_id_path) {
  if (!cfg.host_id.empty()) return cfg.host_id;
  std::ifstream in(machine_id_path);
  std::string id;
  if (!in || !std::getline(in, id)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no host_id configured and cannot read ", machine_id_path, "; set host_id in the agent config"));
  }
  id = std::string(absl::StripAsciiWhitespace(id));
  if (!is_valid_host_id(id)) {
    return absl::FailedPreconditionError(
        absl::StrCat(machine_id_path, " does not hold a usable id; set host_id in the agent config"));
  }
  return id;
}

}  // namespace tern
