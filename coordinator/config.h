#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/clock.h"
#include "core/tls.h"

namespace tern {

// tern-coordinator settings. Every field has a default, so the coordinator
// runs with no config file at all (the local demo does).
struct CoordinatorConfig {
  // gRPC address agents and ternctl dial. Port 0 picks a free port.
  std::string listen = "127.0.0.1:7400";
  // Prometheus /metrics; empty disables it.
  std::string metrics_listen = "127.0.0.1:9400";
  // Where the package's unit lets the coordinator write (StateDirectory=).
  std::string database = "/var/lib/tern-coordinator/coordinator.db";
  // A host silent for longer than this is marked unreachable.
  Millis unreachable_after{30'000};
  // Told to agents in HelloAck.
  Millis heartbeat_interval{5'000};
  std::string log_level = "info";
  // A stream that has not said hello by then is closed.
  Millis hello_timeout{10'000};
  // Artifact blobs; empty: "artifacts" beside the database file.
  std::string artifact_dir;
  uint64_t max_artifact_bytes = 2ULL << 30;
  // A host command with no result by then is reported as failed.
  Millis command_timeout{600'000};
  // How long the audit trail and the hosts' histories keep rows (whichever
  // limit comes first; 0 turns one off).
  Millis audit_max_age{365LL * 24 * 3600 * 1000};
  int64_t audit_max_rows = 1'000'000;
  Millis host_history_max_age{90LL * 24 * 3600 * 1000};
  int64_t host_history_max_rows = 1'000'000;
  // Canary analyses' counts (a row per host and interval) of settled
  // rollouts, kept for `ternctl rollout analysis --replay`.
  Millis analysis_samples_max_age{14LL * 24 * 3600 * 1000};
  int64_t analysis_samples_max_rows = 2'000'000;
  // A Prometheus server for rollouts whose analysis.source is prometheus
  // (`prometheus:` in the config); empty address: none.
  struct Prometheus {
    std::string address;
    std::string bearer_token_file;
    std::string ca_file;
    Millis timeout{5'000};
  } prometheus;
  // Receivers told of rollout events (`webhooks:`), declared here only: the
  // API names them, it never gives the coordinator a URL to call.
  struct Webhook {
    std::string name;
    std::string url;  // http:// or https://
    // The HMAC-SHA256 key that signs each body; read at start.
    std::string secret_file;
    // Event words (as core/words.cc names them, spaces written as "_");
    // empty: every rollout-level event (webhook_default_events()).
    std::vector<std::string> events;
    std::string ca_file;  // empty: the system's CAs
    Millis timeout{10'000};
  };
  std::vector<Webhook> webhooks;
  // A delivery its receiver has not taken by then is given up (logged and
  // counted as result="given_up").
  Millis webhook_max_age{24LL * 3600 * 1000};
  // Mutual TLS: the coordinator's certificate and key, and the fleet CA that
  // signed agents' and operators' certificates. Required unless `insecure`.
  TlsFiles tls;
  // Plaintext, no authentication: every caller is an admin and agents are
  // who they say they are. Only for a local demo.
  bool insecure = false;
  // Under TLS a host's labels come from its certificate; true takes them
  // from what the agent says (any agent key can then join any service).
  bool trust_hello_labels = false;
};

// artifact_dir, or its default beside the database.
std::string effective_artifact_dir(const CoordinatorConfig& cfg);

// Reads a YAML file over the defaults. Unknown keys and wrong types are
// errors naming the file, line and key.
absl::StatusOr<CoordinatorConfig> load_coordinator_config(const std::string& path);
absl::Status validate(const CoordinatorConfig& cfg);

}  // namespace tern
