// tern-agent: flag parsing and wiring only; the logic is in tern_agent_lib.
#include <iostream>


#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "core/runtime_init.h"
#include "core/status_fmt.h"

#include "agent/agent.h"
#include "core/duration.h"
#include "core/logging.h"
#include "core/signals.h"
#include "core/systemd_notify.h"
#include "core/version.h"

int main(int argc, char** argv) {
  tern::init_runtime();
  CLI::App app{"tern-agent: runs an app's blue and green slots on this host for the tern coordinator"};
  std::string config_path, coordinator, host_id, state_dir, log_level, heartbeat;
  std::vector<std::string> labels;
  app.add_option("-c,--config", config_path, "YAML config file (e.g. /etc/tern/agent.yaml)");
  app.add_option("--coordinator", coordinator, "coordinator address host:port (default 127.0.0.1:7400)");
  app.add_option("--host-id", host_id, "host id (with TLS: the CN of the agent's certificate, which this must match; without: default /etc/machine-id)");
  app.add_option("-l,--label", labels, "label key=value; repeatable; replaces the config's labels");
  app.add_option("--state-dir", state_dir, "state directory (default /var/lib/tern)");
  app.add_option("--heartbeat-interval", heartbeat, "heartbeat interval until the coordinator sets one");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  std::string tls_ca, tls_cert, tls_key;
  bool insecure = false;
  app.add_option("--tls-ca", tls_ca, "fleet CA certificate (PEM) that signed the coordinator's certificate");
  app.add_option("--tls-cert", tls_cert, "this host's certificate (PEM; its CN is the host id)");
  app.add_option("--tls-key", tls_key, "this host's private key (PEM)");
  app.add_flag("--insecure", insecure, "plaintext to the coordinator (local demos only)");
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "Prometheus /metrics address host:port, e.g. 127.0.0.1:9401 (default: none)");
  std::string default_user;
  bool allow_root = false;
  app.add_option("--default-user", default_user,
                 "who a spec without user: runs as (default tern-app, the package's unprivileged user)");
  app.add_flag("--allow-root", allow_root, "let specs run as root (user: root); refused by default");
  app.add_flag_callback("--version", [] {
    std::cout << "tern-agent " << tern::kVersion << "\n";
    std::exit(0);
  }, "print the version and exit");
  CLI11_PARSE(app, argc, argv);

  tern::AgentConfig cfg;
  if (!config_path.empty()) {
    auto loaded = tern::load_agent_config(config_path);
    if (!loaded.ok()) {
      std::cerr << "tern-agent: " << loaded.status().message() << "\n";
      return 2;
    }
    cfg = *loaded;
  }
  if (app.count("--coordinator")) cfg.coordinator = coordinator;
  if (app.count("--tls-ca")) cfg.tls.ca = tls_ca;
  if (app.count("--tls-cert")) cfg.tls.cert = tls_cert;
  if (app.count("--tls-key")) cfg.tls.key = tls_key;
  if (insecure) cfg.insecure = true;
  if (app.count("--metrics-listen")) cfg.metrics_listen = metrics_listen;
  if (app.count("--default-user")) cfg.policy.default_user = default_user;
  if (allow_root) cfg.policy.allow_root = true;
  if (app.count("--host-id")) cfg.host_id = host_id;
  if (app.count("--state-dir")) cfg.state_dir = state_dir;
  if (app.count("--log-level")) cfg.log_level = log_level;
  if (app.count("--label")) {
    auto parsed = tern::parse_label_assignments(labels);
    if (!parsed.ok()) {
      std::cerr << "tern-agent: --label: " << parsed.status().message() << "\n";
      return 2;
    }
    cfg.labels = *parsed;
  }
  if (app.count("--heartbeat-interval")) {
    auto d = tern::parse_duration(heartbeat);
    if (!d.ok()) {
      std::cerr << "tern-agent: --heartbeat-interval: " << d.status().message() << "\n";
      return 2;
    }
    cfg.heartbeat_interval = *d;
  }
  if (auto st = tern::validate(cfg); !st.ok()) {
    std::cerr << "tern-agent: " << st.message() << "\n";
    return 2;
  }
  if (auto st = tern::init_logging("agent", cfg.log_level); !st.ok()) {
    std::cerr << "tern-agent: " << st.message() << "\n";
    return 2;
  }
  auto id = tern::resolve_identity(cfg);
  if (!id.ok()) {
    spdlog::error("{}", id.status().message());
    return 2;
  }

  tern::StopSignals stop_signals;

  tern::SystemdNotifier systemd;
  tern::Agent agent(cfg, id->host_id);
  agent.set_credentials(id->credentials);
  if (auto interval = systemd.watchdog_interval()) {
    agent.set_liveness_ping(*interval, [&systemd] { systemd.watchdog_ping(); });
  }
  if (auto st = agent.start(); !st.ok()) {
    spdlog::error("cannot start: {}", st.message());
    return 1;
  }
  // Ready once the recorded slots are adopted and the mapping re-applied;
  // the coordinator link connects (and reconnects) on its own.
  systemd.ready("host " + id->host_id + ", coordinator " + cfg.coordinator);
  spdlog::info("received {}, stopping", stop_signals.wait());
  systemd.stopping();
  agent.stop();
  return 0;
}
