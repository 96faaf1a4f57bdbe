#include "agent/config.h"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <optional>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/metrics.h"
#include "core/yaml_config.h"

namespace tern {

namespace {

absl::StatusOr<std::pair<uint32_t, uint32_t>> parse_port_range(const std::string& r) {
  auto dash = r.find('-');
  auto num = [](const std::string& t) -> std::optional<uint32_t> {
    if (t.empty() || t.size() > 5 || !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
    uint32_t v = static_cast<uint32_t>(std::stoul(t));
    if (v == 0 || v > 65535) return std::nullopt;
    return v;
  };
  auto lo = num(dash == std::string::npos ? r : r.substr(0, dash));
  auto hi = dash == std::string::npos ? lo : num(r.substr(dash + 1));
  if (!lo || !hi || *hi < *lo) {
    return absl::InvalidArgumentError(absl::StrCat("\"", r, "\" is not a port or a range like 8000-8999"));
  }
  return std::make_pair(*lo, *hi);
}

}  // namespace

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
  m.get("insecure", cfg.insecure);
  m.get("metrics_listen", cfg.metrics_listen);
  m.get("cgroup_parent", cfg.cgroup_parent);
  read_tls(m, cfg.tls, /*client=*/true);
  m.get("trusted_keys", cfg.trusted_keys);
  if (auto p = m.child("policy")) {
    p->get("services", cfg.policy.services);
    p->get("users", cfg.policy.users);
    p->get("ports", cfg.policy.ports);
    p->get("privileged_ports", cfg.policy.privileged_ports);
    p->get("default_user", cfg.policy.default_user);
    p->get("allow_root", cfg.policy.allow_root);
    m.absorb(p->finish());
  }
  if (auto d = m.child("downloads")) {
    d->get("max_mib", cfg.downloads.max_mib);
    d->get("allow_loopback", cfg.downloads.allow_loopback);
    m.absorb(d->finish());
  }
  if (auto r = m.child("releases")) {
    r->get("keep", cfg.releases.keep);
    r->get("min_free_mib", cfg.releases.min_free_mib);
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
  if (cfg.cgroup_parent != "auto" && cfg.cgroup_parent != "off" &&
      (cfg.cgroup_parent.empty() || cfg.cgroup_parent.front() != '/')) {
    return absl::InvalidArgumentError(absl::StrCat("key \"cgroup_parent\": \"", cfg.cgroup_parent,
                                                   "\" is not auto, off or an absolute path in a cgroup v2 mount"));
  }
  if (!cfg.metrics_listen.empty()) {
    if (auto hp = split_host_port(cfg.metrics_listen); !hp.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("key \"metrics_listen\": ", hp.status().message()));
    }
  }
  if (cfg.insecure && !cfg.tls.empty()) {
    return absl::InvalidArgumentError("keys \"insecure\" and \"tls\": choose one (insecure turns TLS off)");
  }
  for (const auto& r : cfg.policy.ports) {
    if (auto st = parse_port_range(r); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("key \"policy.ports\": ", st.status().message()));
    }
  }
  for (const auto& r : cfg.policy.privileged_ports) {
    auto range = parse_port_range(r);
    if (!range.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("key \"policy.privileged_ports\": ", range.status().message()));
    }
    if (range->second >= kFirstUnprivilegedPort) {
      return absl::InvalidArgumentError(absl::StrCat("key \"policy.privileged_ports\": \"", r,
                                                     "\" is not below 1024; ports from 1024 up need no "
                                                     "permission here (limit them with policy.ports)"));
    }
  }
  if (cfg.downloads.max_mib == 0) {
    return absl::InvalidArgumentError("key \"downloads.max_mib\": must be at least 1 (the largest artifact, in MiB)");
  }
  if (cfg.releases.keep == 0) {
    return absl::InvalidArgumentError(
        "key \"releases.keep\": must be at least 1 (releases in use are kept besides these)");
  }
  return absl::OkStatus();
}

namespace {

// Whether `user` (empty: the agent's own) is uid 0 on this host, by its
// passwd entry, so that an alias of root is root too. A name the host does
// not know is not root: starting it fails later, saying the user is missing.
bool runs_as_root(const std::string& user) {
  if (user.empty()) return ::geteuid() == 0;
  if (user == "root") return true;
  std::vector<char> buf(16384);
  struct passwd pw;
  struct passwd* res = nullptr;
  return getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &res) == 0 && res != nullptr && pw.pw_uid == 0;
}

std::string own_user_name() {
  std::vector<char> buf(16384);
  struct passwd pw;
  struct passwd* res = nullptr;
  if (getpwuid_r(::geteuid(), &pw, buf.data(), buf.size(), &res) != 0 || res == nullptr) {
    return absl::StrCat("uid ", ::geteuid());
  }
  return pw.pw_name;
}

}  // namespace

std::string run_as_user(const AgentPolicy& policy, const tern::v1::ServiceSpec& spec) {
  if (!spec.user().empty()) return spec.user();
  return ::geteuid() == 0 ? policy.default_user : std::string();
}

absl::Status check_policy(const AgentPolicy& policy, const tern::v1::ServiceSpec& spec) {
  std::vector<std::pair<uint32_t, uint32_t>> ranges, privileged;
  for (const auto& r : policy.ports) {
    auto range = parse_port_range(r);
    if (!range.ok()) return range.status();
    ranges.push_back(*range);
  }
  for (const auto& r : policy.privileged_ports) {
    auto range = parse_port_range(r);
    if (!range.ok()) return range.status();
    privileged.push_back(*range);
  }
  auto within = [](const std::vector<std::pair<uint32_t, uint32_t>>& in, uint32_t port) {
    return std::any_of(in.begin(), in.end(), [port](const auto& r) { return port >= r.first && port <= r.second; });
  };
  const std::string why = " by this host's agent policy (policy: in its config); change the spec or the policy";
  if (!policy.services.empty() &&
      std::find(policy.services.begin(), policy.services.end(), spec.name()) == policy.services.end()) {
    return absl::PermissionDeniedError(absl::StrCat("service \"", spec.name(), "\" is not allowed", why));
  }
  const std::string user = run_as_user(policy, spec);
  const std::string name = user.empty() ? own_user_name() : user;
  const std::string shown = absl::StrCat("\"", name, "\"");
  const char* whose = spec.user().empty() ? " (no user in the spec: the policy's default_user)" : "";
  if (!policy.users.empty() && std::find(policy.users.begin(), policy.users.end(), name) == policy.users.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("service ", spec.name(), " runs as ", shown, whose, ", which is not allowed", why));
  }
  if (!policy.allow_root && runs_as_root(user)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "service ", spec.name(), " runs as ", shown, whose,
        ", which is uid 0, and this host's agent policy does not allow root (policy.allow_root in its config); set "
        "user: in the spec to an unprivileged user, or set policy.allow_root: true on hosts that must run it as "
        "root"));
  }
  for (const auto& pm : spec.ports()) {
    for (uint32_t port : {pm.public_port(), pm.blue_port(), pm.green_port()}) {
      if (port < kFirstUnprivilegedPort && !within(privileged, port)) {
        return absl::PermissionDeniedError(absl::StrCat(
            "service ", spec.name(), " uses port ", port,
            ", below 1024, which this host's agent policy does not allow (a port below 1024 must be listed in "
            "policy.privileged_ports in its config); use a port from 1024 up, or allow it there"));
      }
      if (!ranges.empty() && !within(ranges, port)) {
        return absl::PermissionDeniedError(
            absl::StrCat("service ", spec.name(), " uses port ", port, ", which is not allowed", why));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<AgentIdentity> resolve_identity(const AgentConfig& cfg, const std::string& machine_id_path) {
  AgentIdentity out;
  if (cfg.insecure) {
    auto id = resolve_host_id(cfg, machine_id_path);
    if (!id.ok()) return id.status();
    out.host_id = *id;
    return out;
  }
  if (cfg.tls.empty()) {
    return absl::FailedPreconditionError(
        "no TLS configured: set tls.ca, tls.cert and tls.key (--tls-ca, --tls-cert, --tls-key; "
        "scripts/tern-pki.sh makes them), or --insecure for a local demo");
  }
  auto tls = load_tls(cfg.tls, /*need_cert=*/true, "agent");
  if (!tls.ok()) return tls.status();
  auto cert = cert_identity(tls->cert_pem);
  if (!cert.ok() || cert->common_name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(cfg.tls.cert, ": the certificate has no CN (the host id)"));
  }
  if (!cfg.host_id.empty() && cfg.host_id != cert->common_name) {
    return absl::InvalidArgumentError(absl::StrCat("host_id \"", cfg.host_id, "\" differs from the certificate's \"",
                                                   cert->common_name, "\" (", cfg.tls.cert,
                                                   "); drop host_id or use this host's certificate"));
  }
  if (!is_valid_host_id(cert->common_name)) {
    return absl::InvalidArgumentError(absl::StrCat(cfg.tls.cert, ": CN \"", cert->common_name,
                                                   "\" is not a valid host id"));
  }
  out.host_id = cert->common_name;
  out.credentials = tls_channel_credentials(*tls);
  return out;
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
