// tern-coordinator: flag parsing and wiring only; the logic is in tern_coordinator_lib.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <tuple>

#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "core/runtime_init.h"
#include "core/status_fmt.h"

#include "core/duration.h"
#include "core/logging.h"
#include "core/signals.h"
#include "core/systemd_notify.h"
#include "core/version.h"
#include "coordinator/coordinator.h"

namespace {

// Written atomically so a script polling for it never reads half a file.
bool write_ready_file(const std::string& path, const tern::Coordinator& c) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "{\"grpc\": \"" << c.grpc_address() << "\", \"metrics\": \"" << c.metrics_address()
        << "\", \"pid\": " << getpid() << "}\n";
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

namespace {

// Agent streams and downloads each hold a descriptor; the soft limit is
// often 1,024. An exhausted table stops gRPC 1.51's listener for good, so
// take what the hard limit allows (systemd's LimitNOFILE sets that).
void raise_fd_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur >= r.rlim_max) return;
  const rlim_t before = r.rlim_cur;
  r.rlim_cur = r.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &r) == 0) {
    spdlog::info("open file limit raised from {} to {}", before, r.rlim_cur);
  }
}

}  // namespace

int main(int argc, char** argv) {
  tern::init_runtime();
  CLI::App app{"tern-coordinator: drives blue/green and canary rollouts across a fleet of tern agents"};
  std::string config_path, listen, metrics_listen, database, log_level, ready_file, unreachable_after,
      heartbeat_interval;
  app.add_option("-c,--config", config_path, "YAML config file (every setting has a built-in default)");
  app.add_option("--listen", listen, "gRPC listen address (default 127.0.0.1:7400; port 0 picks one)");
  app.add_option("--metrics-listen", metrics_listen, "Prometheus /metrics address (default 127.0.0.1:9400; \"\" disables)");
  app.add_option("--database", database,
                 absl::StrCat("SQLite database file (default ", tern::CoordinatorConfig().database, ")"));
  app.add_option("--unreachable-after", unreachable_after, "grace before a silent host is unreachable (e.g. 30s)");
  app.add_option("--heartbeat-interval", heartbeat_interval, "heartbeat interval told to agents (e.g. 5s)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  app.add_option("--ready-file", ready_file, "write the bound addresses as JSON here once serving");
  std::string prometheus;
  app.add_option("--prometheus", prometheus,
                 "Prometheus server for rollouts with analysis.source: prometheus (e.g. http://127.0.0.1:9090)");
  std::string tls_ca, tls_cert, tls_key;
  bool insecure = false;
  app.add_option("--tls-ca", tls_ca, "fleet CA certificate (PEM) that signed agents' and operators' certificates");
  app.add_option("--tls-cert", tls_cert, "the coordinator's certificate (PEM)");
  app.add_option("--tls-key", tls_key, "the coordinator's private key (PEM)");
  app.add_flag("--insecure", insecure, "plaintext, no authentication (local demos only)");
  app.add_flag_callback("--version", [] {
    std::cout << "tern-coordinator " << tern::kVersion << "\n";
    std::exit(0);
  }, "print the version and exit");
  CLI11_PARSE(app, argc, argv);

  tern::CoordinatorConfig cfg;
  if (!config_path.empty()) {
    auto loaded = tern::load_coordinator_config(config_path);
    if (!loaded.ok()) {
      std::cerr << "tern-coordinator: " << loaded.status().message() << "\n";
      return 2;
    }
    cfg = *loaded;
  }
  if (app.count("--listen")) cfg.listen = listen;
  if (app.count("--tls-ca")) cfg.tls.ca = tls_ca;
  if (app.count("--tls-cert")) cfg.tls.cert = tls_cert;
  if (app.count("--tls-key")) cfg.tls.key = tls_key;
  if (insecure) cfg.insecure = true;
  if (app.count("--metrics-listen")) cfg.metrics_listen = metrics_listen;
  if (app.count("--database")) cfg.database = database;
  if (app.count("--prometheus")) cfg.prometheus.address = prometheus;
  if (app.count("--log-level")) cfg.log_level = log_level;
  for (auto [flag, text, out] : {std::tuple{"--unreachable-after", &unreachable_after, &cfg.unreachable_after},
                                 std::tuple{"--heartbeat-interval", &heartbeat_interval, &cfg.heartbeat_interval}}) {
    if (!app.count(flag)) continue;
    auto d = tern::parse_duration(*text);
    if (!d.ok()) {
      std::cerr << "tern-coordinator: " << flag << ": " << d.status().message() << "\n";
      return 2;
    }
    *out = *d;
  }
  if (auto st = tern::init_logging("coordinator", cfg.log_level); !st.ok()) {
    std::cerr << "tern-coordinator: " << st.message() << "\n";
    return 2;
  }

  tern::StopSignals stop_signals;

  raise_fd_limit();
  tern::Coordinator coordinator(cfg, tern::SystemClock::instance());
  if (auto st = coordinator.start(); !st.ok()) {
    spdlog::error("cannot start: {}", st.message());
    return 1;
  }
  if (!ready_file.empty() && !write_ready_file(ready_file, coordinator)) {
    spdlog::error("cannot write ready file {}", ready_file);
    return 1;
  }
  tern::SystemdNotifier systemd;
  if (auto interval = systemd.watchdog_interval()) {
    coordinator.add_liveness_ping(*interval, [&systemd] { systemd.watchdog_ping(); });
  }
  systemd.ready("serving on " + coordinator.grpc_address());
  spdlog::info("received {}, shutting down", stop_signals.wait());
  systemd.stopping();
  coordinator.shutdown();
  return 0;
}
