#pragma once

// A coordinator and one agent inside a fresh network namespace, plus the demo
// app packaged as release bundles, for the one-host swap tests.

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tern/v1/agent_state.pb.h"
#include "tern/v1/fleet.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/netns.h"

namespace tern::testing {

inline constexpr uint16_t kPublicPort = 8080;
inline constexpr uint16_t kAgentMetricsPort = 9401;
inline constexpr uint16_t kBluePort = 9001;
inline constexpr uint16_t kGreenPort = 9002;

class OneHostFixture : public ::testing::Test {
 protected:
  void set_up(const std::string& backend, bool keep_warm) {
    backend_ = backend;
    skip_reason_ = netns_unavailable_reason();
    if (!skip_reason_.empty()) return;
    if (backend == "iptables" && run_cmd({"iptables", "--version"}).code != 0) {
      skip_reason_ = "iptables is not installed";
      return;
    }
    ns_ = std::make_unique<NetNs>();
    ASSERT_TRUE(ns_->ok()) << ns_->error();
    make_bundles();
    start_coordinator();
    write_spec(keep_warm);
    start_agent();
    ASSERT_TRUE(eventually([&] {
      auto h = host_status();
      return h && h->state() == tern::v1::HOST_STATE_CONNECTED;
    })) << agent_->log();
    auto r = ctl({"service", "apply", "-f", dir_.file("web.yaml")});
    ASSERT_EQ(r.code, 0) << r.err;
  }

  void TearDown() override {
    if (agent_) agent_->signal(SIGKILL);
    if (coordinator_) coordinator_->signal(SIGKILL);
    ns_.reset();  // kills what is left inside (the slots) and removes it
  }

  bool skipped() const { return !skip_reason_.empty(); }
  const std::string& skip_reason() const { return skip_reason_; }

  // A long-running program inside the namespace.
  std::unique_ptr<Process> spawn_in_ns(const std::vector<std::string>& argv, const std::string& log) const {
    auto full = with_ns(argv);
    return std::make_unique<Process>(full.front(), std::vector<std::string>(full.begin() + 1, full.end()), log);
  }

  std::vector<std::string> with_ns(std::vector<std::string> argv) const {
    auto out = ns_->exec_prefix();
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }

  CommandResult ctl(std::vector<std::string> args) const {
    std::vector<std::string> argv{TERN_CTL_BIN, "--insecure", "--coordinator", address_};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_cmd(with_ns(argv));
  }

  void push(const std::string& version, const std::string& bundle) {
    auto r = ctl({"artifact", "push", bundle, "--service", "web", "--version", version});
    ASSERT_EQ(r.code, 0) << r.err;
  }

  void deploy_ok(const std::string& version, bool push_first = true) {
    if (push_first) {
      ASSERT_NO_FATAL_FAILURE(push(version, good_bundle_));
    }
    auto r = ctl({"host", "deploy", "h1", "web", "--version", version});
    ASSERT_EQ(r.code, 0) << r.out << r.err << "\nagent log:\n" << agent_->log();
  }

  // A release bundle of `files` (path in the release -> content); "app" is
  // the demo app itself.
  std::string bundle(const std::string& name, const std::vector<std::pair<std::string, std::string>>& files) {
    const std::filesystem::path d = dir_.path() / ("bundle-" + name);
    std::vector<std::string> argv{"tar", "-czf", dir_.file(name + ".tar.gz"), "-C", d.string()};
    for (const auto& [path, content] : files) {
      std::filesystem::create_directories((d / path).parent_path());
      if (path == "app") {
        std::filesystem::copy_file(TERN_DEMO_APP_BIN, d / path, std::filesystem::copy_options::overwrite_existing);
      } else {
        std::ofstream(d / path) << content;
      }
      argv.push_back(path);
    }
    auto r = run_cmd(argv);
    EXPECT_EQ(r.code, 0) << r.err;
    return dir_.file(name + ".tar.gz");
  }

  // The agent's /metrics body.
  std::string agent_metrics() const {
    std::string body;
    ns_->run([&] {
      std::string resp = http_get("127.0.0.1:" + std::to_string(kAgentMetricsPort), "/metrics");
      auto p = resp.find("\r\n\r\n");
      if (p != std::string::npos) body = resp.substr(p + 4);
    });
    return body;
  }

  // What a new client connection to the public port gets: "<version> <slot>".
  std::string serving() const {
    std::string body;
    ns_->run([&] {
      std::string resp = http_get("127.0.0.1:" + std::to_string(kPublicPort), "/");
      auto p = resp.find("\r\n\r\n");
      if (p != std::string::npos) body = resp.substr(p + 4);
    });
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    return body;
  }

  std::optional<tern::v1::Host> host_status() const {
    auto r = ctl({"host", "status", "h1", "-o", "json"});
    if (r.code != 0) return std::nullopt;
    tern::v1::Host h;
    if (!google::protobuf::util::JsonStringToMessage(r.out, &h).ok()) return std::nullopt;
    return h;
  }

  int64_t slot_pid(tern::v1::SlotColor color) const {
    auto h = host_status();
    if (!h || h->services_size() == 0) return -1;
    for (const auto& s : h->services(0).slots()) {
      if (s.color() == color) return s.pid();
    }
    return -1;
  }

  std::optional<tern::v1::AgentState> agent_state() const {
    std::string json = read_file(dir_.file("agent/agent-state.json"));
    if (json.empty()) return std::nullopt;
    tern::v1::AgentState st;
    if (!google::protobuf::util::JsonStringToMessage(json, &st).ok()) return std::nullopt;
    return st;
  }

  void start_agent() {
    std::ofstream(dir_.file("agent.yaml")) << "coordinator: " << address_ << "\n"
                                           << "host_id: h1\n"
                                           << "labels: {role: web}\n"
                                           << "state_dir: " << dir_.file("agent") << "\n"
                                           << "log_level: debug\n"
                                           << "heartbeat_interval: 200ms\n"
                                           << "reconcile_interval: 200ms\n"
                                           << "reconnect: {initial: 50ms, max: 500ms}\n"
                                           << "port_mapper: {backend: " << backend_ << ", table: terntest}\n"
                                           // The artifact server of the URL test listens on 127.0.0.1.
                                           << "downloads: {allow_loopback: true}\n"
                                           << "insecure: true\n"
                                           // Its own network namespace: the port is free.
                                           << "metrics_listen: 127.0.0.1:" << kAgentMetricsPort << "\n"
                                           // The package's tern-app is not on a test machine.
                                           << "policy: {default_user: nobody}\n"
                                           << extra_agent_config_;
    auto argv = with_ns({TERN_AGENT_BIN, "-c", dir_.file("agent.yaml")});
    argv.insert(argv.begin(), agent_wrapper_.begin(), agent_wrapper_.end());
    agent_ = std::make_unique<Process>(argv.front(), std::vector<std::string>(argv.begin() + 1, argv.end()),
                                       dir_.file("agent.log"));
  }

  // More of the service spec (YAML lines), set before set_up().
  std::string extra_spec_;
  // More of the agent's config (YAML lines), set before start_agent().
  std::string extra_agent_config_;
  // A command the agent's `ip netns exec` runs under (an argv prefix).
  std::vector<std::string> agent_wrapper_;
  TempDir dir_;
  std::unique_ptr<NetNs> ns_;
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<Process> agent_;
  std::string address_;
  std::string backend_;
  std::string skip_reason_;
  std::string good_bundle_, bad_bundle_, slow_bundle_;

 private:
  void start_coordinator() {
    coordinator_ = spawn_in_ns(
        {TERN_COORDINATOR_BIN, "--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--database",
                 dir_.file("coordinator.db"), "--ready-file", dir_.file("ready.json"), "--heartbeat-interval", "200ms",
                 "--log-level", "debug"},
        dir_.file("coordinator.log"));
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir_.file("ready.json")); })) << coordinator_->log();
    std::string ready = read_file(dir_.file("ready.json"));
    auto k = ready.find("\"grpc\": \"");
    address_ = ready.substr(k + 9, ready.find('"', k + 9) - (k + 9));
  }

  // Release bundles: the demo app as is, one whose health always fails and
  // one that takes a while to listen.
  void make_bundles() {
    auto bundle = [&](const std::string& name, const std::string& extra_args) {
      auto d = dir_.path() / ("bundle-" + name);
      std::filesystem::create_directories(d);
      if (extra_args.empty()) {
        std::filesystem::copy_file(TERN_DEMO_APP_BIN, d / "app");
      } else {
        std::ofstream(d / "app") << "#!/bin/sh\nexec " << TERN_DEMO_APP_BIN << " \"$@\" " << extra_args << "\n";
        std::filesystem::permissions(d / "app", std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                                    std::filesystem::perms::others_read |
                                                    std::filesystem::perms::group_exec |
                                                    std::filesystem::perms::others_exec);
      }
      const std::string out = dir_.file(name + ".tar.gz");
      auto r = run_cmd({"tar", "-czf", out, "-C", d.string(), "app"});
      EXPECT_EQ(r.code, 0) << r.err;
      return out;
    };
    good_bundle_ = bundle("good", "");
    bad_bundle_ = bundle("bad", "--fail-health");
    slow_bundle_ = bundle("slow", "--start-delay 1500ms");
  }

  void write_spec(bool keep_warm) {
    std::ofstream(dir_.file("web.yaml"))
        << "name: web\n"
        << "selector: role=web\n"
        << "ports: [{name: http, protocol: tcp, public: " << kPublicPort << ", blue: " << kBluePort
        << ", green: " << kGreenPort << "}]\n"
        << "argv: [\"{release_dir}/app\", \"--port\", \"{port}\", \"--version\", \"{version}\", \"--color\", "
           "\"{slot}\", \"--drain\", \"500ms\"]\n"
        << "health: {http: {path: /healthz}, interval: 100ms, timeout: 1s, healthy_deadline: 4s}\n"
        << "drain: 2s\n"
        << "grace: 3s\n"
        << "keep_warm: " << (keep_warm ? "true" : "false") << "\n"
        << extra_spec_;
  }
};

}  // namespace tern::testing
