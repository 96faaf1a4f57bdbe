#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/backoff.h"
#include "core/clock.h"
#include "core/tls.h"
#include "tern/v1/service.pb.h"
#include "agent/port_mapper.h"
#include "core/label_selector.h"

namespace tern {

// tern-agent settings, from /etc/tern/agent.yaml and flags.
// The agent's own limits on what the coordinator may ask of it: which
// services, run-as users and ports. Checked before a spec is applied or a
// release deployed; a refusal is reported and changes nothing.
struct AgentPolicy {
  std::vector<std::string> services;
  std::vector<std::string> users;
  // "8000-8999" or "443"; every public and slot port must fall in one.
  std::vector<std::string> ports;
  // Ports below 1024, the same way ("80", "440-443"): a public or slot port
  // below 1024 must fall in one, and unlike the lists above, empty allows
  // none. `ports`, when set, must allow them too.
  std::vector<std::string> privileged_ports;
  // Who a spec without `user:` runs as (slot, exec probes): an unprivileged
  // system user the tern-agent package creates. An agent not running as root
  // can only run things as itself, so there it is the agent's own user.
  std::string default_user = "tern-app";
  // Whether anything a spec starts may run as uid 0 (`user: root`, or a
  // default_user that is root). Off: such a spec is refused.
  bool allow_root = false;
};

// The user a spec's processes run as on this host: its `user:`, else the
// policy's default_user (empty when the agent is not root: the agent's own).
std::string run_as_user(const AgentPolicy& policy, const tern::v1::ServiceSpec& spec);

// Ports below this are the host's (ssh, dns, its own web server): a spec may
// use one only when AgentPolicy::privileged_ports allows it.
inline constexpr uint32_t kFirstUnprivilegedPort = 1024;

// OK when the spec is within the policy; PERMISSION_DENIED naming the field
// and the policy otherwise. INVALID_ARGUMENT for a malformed port range.
absl::Status check_policy(const AgentPolicy& policy, const tern::v1::ServiceSpec& spec);

// Downloads of releases registered by URL (`downloads:` in the config).
struct DownloadSettings {
  // The largest artifact a URL download may bring, in MiB; the transfer
  // stops there.
  uint32_t max_mib = 2048;
  // Whether a URL may point at this host itself (127.0.0.0/8, ::1). Off:
  // a registered URL cannot reach services that listen only locally. For
  // tests and single-host setups with a local artifact server. Link-local
  // addresses (169.254.0.0/16, fe80::/10) are refused either way.
  bool allow_loopback = false;
};

// Staged releases on disk (`releases:` in the config).
struct ReleaseSettings {
  // Staged releases kept per service after a successful deploy, besides the
  // ones running, warm or known-good (which are never removed).
  uint32_t keep = 5;
  // Free space, in MiB, that staging leaves on the release dir's filesystem
  // beyond the artifact itself.
  uint32_t min_free_mib = 64;
};

struct AgentConfig {
  std::string coordinator = "127.0.0.1:7400";
  // Empty: with TLS, the certificate's CN; insecure, /etc/machine-id.
  std::string host_id;
  Labels labels;
  std::string state_dir = "/var/lib/tern";
  std::string log_level = "info";
  // Until the coordinator says otherwise in its HelloAck.
  Millis heartbeat_interval{5'000};
  BackoffPolicy reconnect;
  // nftables (default) or iptables, and the table / chain prefix the agent owns.
  PortMapperOptions port_mapper;
  // How often the agent checks that its rules are still in force.
  Millis reconcile_interval{5'000};
  // Mutual TLS to the coordinator: the fleet CA, this host's certificate
  // (its CN is the host id) and key. Required unless `insecure`.
  TlsFiles tls;
  bool insecure = false;
  // Ed25519 public keys (PEM): with any, only releases signed by one of them
  // are staged and started.
  std::vector<std::string> trusted_keys;
  // What this host accepts from the coordinator, whatever the coordinator
  // says; empty lists allow everything.
  AgentPolicy policy;
  DownloadSettings downloads;
  ReleaseSettings releases;
  // Prometheus /metrics (and /healthz) over plain HTTP, "host:port"; empty
  // (the default) serves none. The example config and the Ansible role use
  // 127.0.0.1:9401.
  std::string metrics_listen;
  // Where slots get their cgroups (SlotCgroups::choose): "auto" (the
  // default: /sys/fs/cgroup/tern on a cgroup v2 host, else process groups),
  // "off", or a directory inside a cgroup v2 mount.
  std::string cgroup_parent = "auto";
};

absl::StatusOr<AgentConfig> load_agent_config(const std::string& path);
absl::Status validate(const AgentConfig& cfg);

// The host id the agent reports: the configured one, else /etc/machine-id
// (`machine_id_path` is injectable for tests).
absl::StatusOr<std::string> resolve_host_id(const AgentConfig& cfg,
                                            const std::string& machine_id_path = "/etc/machine-id");

// Who the agent is and how it proves it. With TLS the host id is the
// certificate's CN (one host cannot speak for another; a configured host_id
// must match it); `insecure` has no credentials and resolve_host_id's id.
// Errors name the file and say what to do.
struct AgentIdentity {
  std::string host_id;
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // null: plaintext
};
absl::StatusOr<AgentIdentity> resolve_identity(const AgentConfig& cfg,
                                               const std::string& machine_id_path = "/etc/machine-id");

}  // namespace tern
