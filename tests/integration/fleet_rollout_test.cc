// The fleet: a coordinator and six hosts, each a network namespace on a
// bridge with its own agent, slots and real nftables, driven by rollouts
// through ternctl while a client load runs against every host.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tern/v1/rollout.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/netns.h"

namespace tern::testing {
namespace {

constexpr int kHosts = 6;

class FleetRolloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    skip_ = netns_unavailable_reason();
    if (!skip_.empty()) return;
    // Unique names per test: a namespace deleted by the previous test may
    // linger (with its veth) until the kernel has reaped it.
    static int counter = 0;
    const int n = ::getpid() % 200;
    bridge_ = "tfb" + std::to_string(::getpid() % 100000) + "x" + std::to_string(counter++ % 10);
    net_ = "198.19." + std::to_string(n) + ".";
    ASSERT_EQ(run_cmd({"ip", "link", "add", bridge_, "type", "bridge"}).code, 0);
    ASSERT_EQ(run_cmd({"ip", "addr", "add", net_ + "1/24", "dev", bridge_}).code, 0);
    ASSERT_EQ(run_cmd({"ip", "link", "set", bridge_, "up"}).code, 0);
    for (int i = 0; i < kHosts; ++i) {
      auto ns = std::make_unique<NetNs>();
      ASSERT_TRUE(ns->ok()) << ns->error();
      const std::string veth = bridge_ + "v" + std::to_string(i);
      ASSERT_EQ(run_cmd({"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns->name()}).code,
                0);
      ASSERT_EQ(run_cmd({"ip", "link", "set", veth, "master", bridge_, "up"}).code, 0);
      ASSERT_EQ(run_cmd({"ip", "-n", ns->name(), "addr", "add", ip(i) + "/24", "dev", "eth0"}).code, 0);
      ASSERT_EQ(run_cmd({"ip", "-n", ns->name(), "link", "set", "eth0", "up"}).code, 0);
      veths_.push_back(veth);
      ns_.push_back(std::move(ns));
    }
    make_bundles();
    start_coordinator(net_ + "1:0");
    for (int i = 0; i < kHosts; ++i) start_agent(i);
    ASSERT_TRUE(eventually([&] {
      auto r = ctl({"hosts", "-o", "json"});
      int connected = 0;
      for (std::size_t p = 0; (p = r.out.find("HOST_STATE_CONNECTED", p)) != std::string::npos; ++p) ++connected;
      return connected == kHosts;
    })) << read_file(dir_.file("coordinator.log"));
    std::ofstream(dir_.file("web.yaml"))
        << "name: web\nselector: role=web\nports: [{public: 8080, blue: 9001, green: 9002}]\n"
        << "argv: [\"{release_dir}/app\", \"--port\", \"{port}\", \"--version\", \"{version}\", \"--drain\", \"200ms\"]\n"
        << "health: {http: {path: /healthz}, interval: 100ms, timeout: 1s, failure_threshold: 2, "
           "healthy_deadline: 4s}\n"
        << "drain: 1s\ngrace: 2s\nkeep_warm: true\n";
    ASSERT_EQ(ctl({"service", "apply", "-f", dir_.file("web.yaml")}).code, 0);
    for (const char* v : {"v1", "v2", "v3"}) {
      auto r = ctl({"artifact", "push", good_bundle_, "--service", "web", "--version", v});
      ASSERT_EQ(r.code, 0) << r.err;
    }
  }

  void TearDown() override {
    for (auto& a : agents_) {
      if (a) a->signal(SIGKILL);
    }
    if (coordinator_) coordinator_->signal(SIGKILL);
    for (const auto& v : veths_) run_cmd({"ip", "link", "del", v});
    ns_.clear();
    if (!bridge_.empty()) run_cmd({"ip", "link", "del", bridge_});
  }

  std::string ip(int i) const { return net_ + std::to_string(10 + i); }

  CommandResult ctl(std::vector<std::string> args) const {
    std::vector<std::string> argv{TERN_CTL_BIN, "--insecure", "--coordinator", address_};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_cmd(argv);
  }

  std::string version_on(int i) const {
    std::string resp = http_get(ip(i) + ":8080", "/");
    auto p = resp.find("\r\n\r\n");
    if (p == std::string::npos) return "";
    std::string body = resp.substr(p + 4);
    return body.substr(0, body.find_first_of(" \n"));
  }

  bool all_on(const std::string& v) const {
    for (int i = 0; i < kHosts; ++i) {
      if (version_on(i) != v) return false;
    }
    return true;
  }

  std::optional<tern::v1::Rollout> rollout(const std::string& id) const {
    auto r = ctl({"rollout", "status", id, "-o", "json"});
    if (r.code != 0) return std::nullopt;
    tern::v1::Rollout out;
    if (!google::protobuf::util::JsonStringToMessage(r.out, &out).ok()) return std::nullopt;
    return out;
  }

  // Waits until rollout `id` bakes its first wave with `n` hosts on the new
  // release; returns their indexes (empty on timeout).
  std::vector<int> baking_canaries(const std::string& id, std::size_t n) const {
    std::vector<int> canaries;
    bool ok = eventually([&] {
      auto ro = rollout(id);
      if (!ro || ro->wave_step() != tern::v1::WAVE_STEP_BAKING) return false;
      canaries.clear();
      for (const auto& h : ro->hosts()) {
        if (h.state() == tern::v1::HOST_ROLLOUT_STATE_ON_NEW) canaries.push_back(std::stoi(h.host_id().substr(5)));
      }
      return canaries.size() == n;
    }, std::chrono::seconds(30));
    return ok ? canaries : std::vector<int>{};
  }

  void start_coordinator(const std::string& listen, const std::vector<std::string>& extra = {}) {
    std::filesystem::remove(dir_.file("ready.json"));
    std::vector<std::string> args{"--insecure", "--listen", listen, "--metrics-listen", "127.0.0.1:0", "--database",
                                  dir_.file("coordinator.db"), "--ready-file", dir_.file("ready.json"),
                                  "--heartbeat-interval", "200ms", "--unreachable-after", "2s"};
    args.insert(args.end(), extra.begin(), extra.end());
    coordinator_ = std::make_unique<Process>(TERN_COORDINATOR_BIN, args, dir_.file("coordinator.log"));
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir_.file("ready.json")); }))
        << coordinator_->log();
    const std::string ready = read_file(dir_.file("ready.json"));
    address_ = ready_address(ready, "grpc");
    metrics_ = ready_address(ready, "metrics");
  }

  void start_agent(int i) {
    const std::string id = "host-" + std::to_string(i);
    const std::string zone = std::string(1, static_cast<char>('a' + i % 3));
    std::ofstream(dir_.file(id + ".yaml")) << "coordinator: " << address_ << "\nhost_id: " << id
                                           << "\nlabels: {role: web, zone: " << zone << "}\nstate_dir: "
                                           << dir_.file(id) << "\nheartbeat_interval: 200ms\n"
                                           << "reconnect: {initial: 100ms, max: 500ms}\ninsecure: true\n"
                                           << "policy: {default_user: nobody}\n"
                                           // Each agent has a network namespace of its own.
                                           << "metrics_listen: 127.0.0.1:9401\n";
    if (agents_.size() <= static_cast<std::size_t>(i)) agents_.resize(static_cast<std::size_t>(i) + 1);
    agents_[static_cast<std::size_t>(i)] =
        std::make_unique<Process>("ip", std::vector<std::string>{"netns", "exec", ns_[static_cast<std::size_t>(i)]->name(),
                                                                 TERN_AGENT_BIN, "-c", dir_.file(id + ".yaml")},
                                  dir_.file(id + ".log"));
  }

  // Agent i's /metrics body.
  std::string agent_metrics(int i) const {
    std::string body;
    ns_[static_cast<std::size_t>(i)]->run([&] {
      std::string resp = http_get("127.0.0.1:9401", "/metrics");
      auto p = resp.find("\r\n\r\n");
      if (p != std::string::npos) body = resp.substr(p + 4);
    });
    return body;
  }

  void make_bundles() {
    auto d = dir_.path() / "bundle";
    std::filesystem::create_directories(d);
    std::filesystem::copy_file(TERN_DEMO_APP_BIN, d / "app");
    good_bundle_ = dir_.file("good.tar.gz");
    ASSERT_EQ(run_cmd({"tar", "-czf", good_bundle_, "-C", d.string(), "app"}).code, 0);
    // Healthy by its health check, but one request in 20 to / fails.
    auto b = dir_.path() / "bundle-errors";
    std::filesystem::create_directories(b);
    std::ofstream(b / "app") << "#!/bin/sh\nexec " << TERN_DEMO_APP_BIN << " \"$@\" --error-rate 0.05\n";
    std::filesystem::permissions(b / "app", std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                                std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                                std::filesystem::perms::others_exec);
    errors_bundle_ = dir_.file("errors.tar.gz");
    ASSERT_EQ(run_cmd({"tar", "-czf", errors_bundle_, "-C", b.string(), "app"}).code, 0);
  }

  // The service judged by its canaries' errors, and a rollout that judges
  // its first wave (one host at weight 50) on a short clock.
  void apply_analyzed_service() {
    std::ofstream(dir_.file("web-analyzed.yaml"))
        << "name: web\nselector: role=web\nports: [{public: 8080, blue: 9001, green: 9002}]\n"
        << "argv: [\"{release_dir}/app\", \"--port\", \"{port}\", \"--version\", \"{version}\", \"--drain\", \"200ms\"]\n"
        << "health: {http: {path: /healthz}, interval: 100ms, timeout: 1s, failure_threshold: 2, "
           "healthy_deadline: 4s}\n"
        << "drain: 1s\ngrace: 2s\nkeep_warm: true\n"
        << "analysis:\n  metrics:\n"
        << "    - {name: errors, kind: ratio, bad: 'http_requests_total{code=~\"5..\"}', total: http_requests_total, "
           "pass_below: 1%}\n";
    auto r = ctl({"service", "apply", "-f", dir_.file("web-analyzed.yaml")});
    ASSERT_EQ(r.code, 0) << r.err;
  }
  std::string analyzed_rollout(const std::string& version, const std::string& max_duration = "2m",
                               int weight = 50) {
    const std::string path = dir_.file("rollout-" + version + ".yaml");
    std::ofstream(path) << "service: web\nrelease: \"" << version << "\"\n"
                        << "waves: [{hosts: 1, weight: " << weight << ", analyze: true}, {percent: 100}]\n"
                        << "analysis: {interval: 1s, warmup: 2s, min_duration: 5s, max_duration: " << max_duration
                        << "}\n";
    return path;
  }

  // Constant-rate clients against every host's public port (remote clients:
  // the prerouting path), counting failures until stopped.
  void start_load() {
    load_stop_ = false;
    for (int c = 0; c < 2; ++c) {
      load_.emplace_back([this, c] {
        auto next = std::chrono::steady_clock::now();
        int i = c;
        while (!load_stop_) {
          next += std::chrono::milliseconds(4);
          std::this_thread::sleep_until(next);
          ++requests_;
          if (version_on(i % kHosts).empty()) ++failures_;
          ++i;
        }
      });
    }
  }
  void stop_load() {
    load_stop_ = true;
    for (auto& t : load_) t.join();
    load_.clear();
  }

  std::string skip_;
  TempDir dir_;
  std::string bridge_, net_, address_, metrics_, good_bundle_, errors_bundle_;
  std::vector<std::unique_ptr<NetNs>> ns_;
  std::vector<std::string> veths_;
  std::unique_ptr<Process> coordinator_;
  std::vector<std::unique_ptr<Process>> agents_;
  std::vector<std::thread> load_;
  std::atomic<bool> load_stop_{false};
  std::atomic<long> requests_{0}, failures_{0};
};

TEST_F(FleetRolloutTest, CanaryWavesThenAnUnhealthyCanaryRollsTheFleetBack) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  ASSERT_TRUE(all_on("v1"));
  start_load();
  r = ctl({"rollout", "start", "web", "--version", "v2", "--waves", "1,50%,100%", "--bake", "500ms", "--spread", "zone",
           "--watch"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(all_on("v2"));
  // v3 starts fine on two canaries, then one turns unhealthy while they bake.
  r = ctl({"rollout", "start", "web", "--version", "v3", "--waves", "2,100%", "--bake", "30s"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string id = "web-3";
  const std::vector<int> canaries = baking_canaries(id, 2);
  ASSERT_EQ(canaries.size(), 2u);
  const int sick = canaries[0];
  // Its v3 slot (green: v2 is in blue... whichever slot runs v3) starts failing health.
  for (int port : {9001, 9002}) http_get(ip(sick) + ":" + std::to_string(port), "/admin/fail-health");
  ASSERT_TRUE(eventually([&] {
    auto ro = rollout(id);
    return ro && ro->phase() == tern::v1::ROLLOUT_PHASE_ROLLED_BACK;
  }, std::chrono::seconds(30))) << ctl({"rollout", "history", id}).out;
  stop_load();
  EXPECT_TRUE(all_on("v2")) << "every host is back on v2";
  auto ro = rollout(id);
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->failed_hosts(), 1u);
  EXPECT_EQ(failures_.load(), 0) << "of " << requests_.load() << " requests during the rollouts";
  EXPECT_GT(requests_.load(), 200);
  // Every transition is counted by kind.
  const std::string metrics = http_get(metrics_, "/metrics");
  EXPECT_NE(metrics.find("tern_rollout_events_total{kind=\"rolled_back\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("tern_rollout_events_total{kind=\"succeeded\"} 2"), std::string::npos) << metrics;

  // Both canaries keep v3 in their idle slot (keep_warm): one unhealthy, one
  // healthy. A host rollback returns each to its last known-good release,
  // v2, which a client is then served; it never flips to the v3 left warm.
  for (int c : canaries) {
    r = ctl({"host", "rollback", "host-" + std::to_string(c), "web"});
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("already active"), std::string::npos) << r.out;
    EXPECT_EQ(version_on(c), "v2") << "host-" << c;
  }
}

TEST_F(FleetRolloutTest, HooksSeeTheRolloutAndTheWaveTheirDeployBelongsTo) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  // A post_switch hook that says what it was told and fails (warn): its
  // output lands in each host's history.
  std::ofstream(dir_.file("web-hooks.yaml"))
      << read_file(dir_.file("web.yaml"))
      << "hooks:\n  post_switch: {argv: [/bin/sh, -c, 'echo rollout=$TERN_ROLLOUT_ID wave=$TERN_WAVE; exit 1'], "
         "on_failure: warn}\n";
  auto r = ctl({"service", "apply", "-f", dir_.file("web-hooks.yaml")});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "1,100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  ASSERT_TRUE(all_on("v1"));
  int first = 0, second = 0;
  for (int i = 0; i < kHosts; ++i) {
    const std::string history = ctl({"host", "history", "host-" + std::to_string(i)}).out;
    first += history.find("rollout=web-1 wave=1") != std::string::npos;
    second += history.find("rollout=web-1 wave=2") != std::string::npos;
  }
  EXPECT_EQ(first, 1) << "one canary in wave 1";
  EXPECT_EQ(second, kHosts - 1);
  // A deploy of one host belongs to no rollout.
  r = ctl({"host", "deploy", "host-0", "web", "--version", "v2"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(ctl({"host", "history", "host-0"}).out.find("its output: rollout= wave="), std::string::npos)
      << ctl({"host", "history", "host-0"}).out;
}

TEST_F(FleetRolloutTest, ACoordinatorKilledMidBakeResumesTheRolloutAfterRestart) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  r = ctl({"rollout", "start", "web", "--version", "v2", "--waves", "2,100%", "--bake", "3s"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_TRUE(eventually([&] {
    auto ro = rollout("web-2");
    return ro && ro->wave_step() == tern::v1::WAVE_STEP_BAKING;
  }, std::chrono::seconds(30)));
  // A pause that is over by the time anyone watches: the replayed journal
  // holds it, and a watcher must not stop there.
  ASSERT_EQ(ctl({"rollout", "pause", "web-2"}).code, 0);
  ASSERT_EQ(ctl({"rollout", "resume", "web-2"}).code, 0);
  // A watcher that follows the rollout through the coordinator's restart.
  Process watcher(TERN_CTL_BIN, {"--insecure", "--coordinator", address_, "rollout", "watch", "web-2", "--wait", "2m"},
                  dir_.file("watch.log"));
  ASSERT_TRUE(eventually([&] { return read_file(dir_.file("watch.log")).find("resumed") != std::string::npos; }))
      << read_file(dir_.file("watch.log"));
  coordinator_->signal(SIGKILL);
  coordinator_->wait();
  start_coordinator(address_);  // same database, same address: the agents come back by themselves
  ASSERT_TRUE(eventually([&] {
    auto ro = rollout("web-2");
    return ro && ro->phase() == tern::v1::ROLLOUT_PHASE_SUCCEEDED;
  }, std::chrono::seconds(60))) << ctl({"rollout", "history", "web-2"}).out << read_file(dir_.file("coordinator.log"));
  EXPECT_EQ(watcher.wait(), 0) << "the watch reconnects and exits with the outcome:\n"
                               << read_file(dir_.file("watch.log"));
  const std::string watched = read_file(dir_.file("watch.log"));
  EXPECT_NE(watched.find("resumed_after_restart"), std::string::npos) << watched;
  EXPECT_NE(watched.find("succeeded"), std::string::npos) << watched;
  EXPECT_TRUE(all_on("v2"));
  auto hist = ctl({"rollout", "history", "web-2"});
  EXPECT_NE(hist.out.find("resumed_after_restart"), std::string::npos) << hist.out;
}

TEST_F(FleetRolloutTest, AHostCutOffWhileTheCoordinatorRestartsDeploysOnceItReturns) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // The coordinator restarts while host-4 cannot reach it: that agent's
  // connections (its stream and its artifact channel) are to a process
  // that is gone, and nothing tells it so until its link is back.
  ASSERT_EQ(run_cmd({"ip", "link", "set", veths_[4], "down"}).code, 0);
  coordinator_->signal(SIGKILL);
  coordinator_->wait();
  // As after a crash of the coordinator's machine: its side of host-4's
  // connections is gone without a word reaching host-4 (the kernel would
  // otherwise keep resending the dead process's FIN until the link is up).
  ASSERT_EQ(run_cmd({"ss", "-K", "dst", ip(4)}).code, 0);
  start_coordinator(address_);
  ASSERT_EQ(run_cmd({"ip", "link", "set", veths_[4], "up"}).code, 0);
  ASSERT_TRUE(eventually([&] {
    auto h = ctl({"hosts", "-o", "json"});
    int connected = 0;
    for (std::size_t p = 0; (p = h.out.find("HOST_STATE_CONNECTED", p)) != std::string::npos; ++p) ++connected;
    return connected == kHosts;
  }, std::chrono::seconds(60))) << read_file(dir_.file("coordinator.log"));
  // Its first deploy after that fetches v2 and succeeds: no failure counted,
  // no fleet rollback of a good release.
  r = ctl({"rollout", "start", "web", "--version", "v2", "--waves", "100%", "--watch", "--wait", "2m"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  auto ro = rollout("web-2");
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED) << ctl({"rollout", "history", "web-2"}).out;
  EXPECT_EQ(ro->failed_hosts(), 0u);
  EXPECT_TRUE(all_on("v2"));
}

TEST_F(FleetRolloutTest, AHostCutOffBeforeItsWaveCountsPerPolicyAndStaysConsistent) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // One host's link goes down before its wave; the budget allows one failure.
  ASSERT_EQ(run_cmd({"ip", "link", "set", veths_[5], "down"}).code, 0);
  ASSERT_TRUE(eventually([&] {
    auto h = ctl({"hosts", "-o", "json", "-l", "role=web"});
    return h.out.find("HOST_STATE_UNREACHABLE") != std::string::npos;
  }, std::chrono::seconds(20)));
  r = ctl({"rollout", "start", "web", "--version", "v2", "--waves", "1,100%", "--max-failed", "1", "--watch",
           "--wait", "2m"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  auto ro = rollout("web-2");
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->failed_hosts(), 1u);
  for (const auto& h : ro->hosts()) {
    if (h.host_id() == "host-5") {
      EXPECT_EQ(h.state(), tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE);
    }
  }
  // Back online it still runs v1, consistently (never half-switched), and is
  // reported as such.
  ASSERT_EQ(run_cmd({"ip", "link", "set", veths_[5], "up"}).code, 0);
  EXPECT_TRUE(eventually([&] { return version_on(5) == "v1"; }, std::chrono::seconds(20)));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(version_on(i), "v2");
}


TEST_F(FleetRolloutTest, ACanaryCutOffMidBakeIsRolledBackWhenItReturns) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // No failure budget: losing a canary rolls the fleet back.
  r = ctl({"rollout", "start", "web", "--version", "v2", "--waves", "2,100%", "--bake", "1m"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<int> canaries = baking_canaries("web-2", 2);
  ASSERT_EQ(canaries.size(), 2u);
  const int cut = canaries[0], other = canaries[1];
  ASSERT_EQ(version_on(cut), "v2");
  ASSERT_EQ(run_cmd({"ip", "link", "set", veths_[static_cast<std::size_t>(cut)], "down"}).code, 0);
  // Gone past the grace: counted, and the fleet is rolled back without it;
  // the absent host does not hold the rollout open.
  ASSERT_TRUE(eventually([&] {
    auto ro = rollout("web-2");
    return ro && ro->phase() == tern::v1::ROLLOUT_PHASE_ROLLED_BACK && version_on(other) == "v1";
  }, std::chrono::seconds(30))) << ctl({"rollout", "history", "web-2"}).out;
  auto ro = rollout("web-2");
  ASSERT_TRUE(ro);
  for (const auto& h : ro->hosts()) {
    if (h.host_id() == "host-" + std::to_string(cut)) {
      EXPECT_EQ(h.state(), tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE);
      EXPECT_TRUE(h.rollback_pending()) << "it owes a rollback";
    }
  }
  // Back on the network: it is flipped to v1.
  ASSERT_EQ(run_cmd({"ip", "link", "set", veths_[static_cast<std::size_t>(cut)], "up"}).code, 0);
  ASSERT_TRUE(eventually([&] {
    auto x = rollout("web-2");
    if (!x) return false;
    for (const auto& h : x->hosts()) {
      if (h.host_id() == "host-" + std::to_string(cut)) {
        return h.state() == tern::v1::HOST_ROLLOUT_STATE_ROLLED_BACK && !h.rollback_pending();
      }
    }
    return false;
  }, std::chrono::seconds(30))) << ctl({"rollout", "history", "web-2"}).out;
  EXPECT_TRUE(all_on("v1")) << "no host left mixed";
}


// A weighted canary wave then 100%: when the rollout says "succeeded", every
// new connection to every host reaches the new release, the canary's too.
TEST_F(FleetRolloutTest, AWeightedCanaryIsRaisedToTheLastWavesWeightBeforeSuccess) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  std::ofstream(dir_.file("canary.yaml")) << "service: web\nrelease: v2\n"
                                          << "waves: [{hosts: 1, weight: 20}, {percent: 100}]\n";
  r = ctl({"rollout", "start", "-f", dir_.file("canary.yaml"), "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  for (int i = 0; i < kHosts; ++i) {
    for (int n = 0; n < 20; ++n) ASSERT_EQ(version_on(i), "v2") << "host-" << i << ", new connection " << n;
  }
}

// A host in an active rollout belongs to it: changed by hand only with
// --force, which the rollout records, marking the host drifted.
TEST_F(FleetRolloutTest, AHostInAnActiveRolloutIsChangedByHandOnlyWithForceAndTheRolloutSaysSo) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  r = ctl({"rollout", "start", "web", "--version", "v2", "--waves", "1,100%", "--bake", "10m"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<int> canaries = baking_canaries("web-2", 1);
  ASSERT_EQ(canaries.size(), 1u);
  const std::string canary = "host-" + std::to_string(canaries[0]);

  auto refused = ctl({"host", "rollback", canary, "web"});
  EXPECT_NE(refused.code, 0);
  EXPECT_NE(refused.err.find("is in rollout web-2"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("--force"), std::string::npos) << refused.err;
  EXPECT_EQ(version_on(canaries[0]), "v2") << "a refused rollback changed nothing";
  auto other = ctl({"host", "deploy", canary == "host-0" ? "host-1" : "host-0", "web", "--version", "v2"});
  EXPECT_NE(other.code, 0) << "a host of a later wave belongs to the rollout too";

  auto forced = ctl({"host", "deploy", canary, "web", "--version", "v1", "--force"});
  ASSERT_EQ(forced.code, 0) << forced.out << forced.err;
  EXPECT_EQ(version_on(canaries[0]), "v1");
  auto ro = rollout("web-2");
  ASSERT_TRUE(ro);
  for (const auto& h : ro->hosts()) EXPECT_EQ(h.drifted(), h.host_id() == canary) << h.host_id();
  EXPECT_NE(ctl({"rollout", "history", "web-2"}).out.find("host_changed_by_hand"), std::string::npos);
}

// Ops tooling: a stock gRPC client (Python, Debian's python3-grpcio) starts
// a rollout, watches it to its first bake, aborts it and watches it end.
TEST_F(FleetRolloutTest, APythonClientStartsWatchesAndAbortsARollout) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  if (run_cmd({"/usr/bin/python3", "-c", "import grpc, google.protobuf"}).code != 0) {
    GTEST_SKIP() << "needs python3-grpcio and python3-protobuf (scripts/setup.sh installs them)";
  }
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string client = std::string(TERN_SOURCE_DIR) + "/examples/api/rollout_client.py";
  auto py = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{"env", "XDG_CACHE_HOME=" + dir_.file("cache"), "/usr/bin/python3", client,
                                  "--coordinator", address_, "--insecure"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_cmd(argv);
  };
  auto started = py({"start", "web", "v2", "--waves", "1,100%", "--bake", "10m"});
  ASSERT_EQ(started.code, 0) << started.out << started.err;
  const std::string id = started.out.substr(0, started.out.find('\n'));
  EXPECT_EQ(id, "web-2");
  auto baking = py({"watch", id, "--until", "baking"});
  ASSERT_EQ(baking.code, 0) << baking.out << baking.err;
  EXPECT_NE(baking.out.find("wave_baking"), std::string::npos) << baking.out;
  auto aborted = py({"abort", id, "--reason", "from python"});
  ASSERT_EQ(aborted.code, 0) << aborted.out << aborted.err;
  auto ended = py({"watch", id});
  EXPECT_EQ(ended.code, 1) << "an aborted rollout is not a success: " << ended.out;
  EXPECT_NE(ended.out.find("aborted"), std::string::npos) << ended.out;
  auto ro = rollout(id);
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->phase(), tern::v1::ROLLOUT_PHASE_ABORTED);
  EXPECT_NE(ctl({"rollout", "history", id}).out.find("from python"), std::string::npos);
  // An unknown rollout: NOT_FOUND, exit 4.
  auto again = py({"abort", "web-404"});
  EXPECT_EQ(again.code, 4) << again.err;
}

// A canary that passes its health check but fails 5% of real requests is
// caught by the analysis of green against blue on its host, under a steady
// load, and the fleet rolls back; an equal canary passes and the rollout
// goes on.
TEST_F(FleetRolloutTest, CanaryAnalysisRejectsAnErroringCanaryAndPassesAGoodOne) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  ASSERT_NO_FATAL_FAILURE(apply_analyzed_service());
  ASSERT_EQ(ctl({"artifact", "push", errors_bundle_, "--service", "web", "--version", "bad"}).code, 0);
  start_load();
  // The canary takes 10% of its host's new connections.
  r = ctl({"rollout", "start", "-f", analyzed_rollout("bad", "2m", 10), "--watch", "--wait", "2m"});
  EXPECT_NE(r.code, 0) << r.out << r.err;
  auto ro = rollout("web-2");
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK) << ctl({"rollout", "history", "web-2"}).out;
  auto hist = ctl({"rollout", "history", "web-2"});
  EXPECT_NE(hist.out.find("errors FAIL"), std::string::npos) << hist.out;
  EXPECT_TRUE(eventually([&] { return all_on("v1"); })) << "the canary's host is back on v1";
  auto analysis = ctl({"rollout", "analysis", "web-2"});
  EXPECT_EQ(analysis.code, 0) << analysis.err;
  EXPECT_NE(analysis.out.find("errors"), std::string::npos) << analysis.out;
  // The verdicts again, from the counts the coordinator stored.
  auto replayed = ctl({"rollout", "analysis", "web-2", "--replay"});
  EXPECT_EQ(replayed.code, 0) << replayed.err;
  EXPECT_NE(replayed.out.find("wave 1"), std::string::npos) << replayed.out;
  EXPECT_NE(replayed.out.find("FAIL"), std::string::npos) << replayed.out;
  EXPECT_EQ(replayed.out.find("replayed 0 "), std::string::npos) << replayed.out;
  EXPECT_EQ(ro->analysis().verdict(), "FAIL") << "by its host's counts or by the wave's";
  ASSERT_EQ(ro->analysis().metrics_size(), 1);
  EXPECT_GT(ro->analysis().metrics(0).canary_bad(), 0u) << "the numbers that condemned it stay visible";
  // The canary's host exported what it counted and sent.
  std::string all_metrics;
  for (std::size_t i = 0; i < agents_.size(); ++i) all_metrics += agent_metrics(static_cast<int>(i));
  EXPECT_NE(all_metrics.find("tern_agent_analysis_requests_total{service=\"web\",metric=\"errors\",side=\"canary\","
                             "kind=\"bad\"} "),
            std::string::npos)
      << all_metrics;
  EXPECT_NE(all_metrics.find("tern_agent_slot_new_connections_total{service=\"web\",slot=\"blue\"}"), std::string::npos);

  // The same app without the errors: judged equal to v1, it passes.
  r = ctl({"rollout", "start", "-f", analyzed_rollout("v2"), "--watch", "--wait", "3m"});
  stop_load();
  EXPECT_EQ(r.code, 0) << r.out << r.err << ctl({"rollout", "history", "web-3"}).out;
  ro = rollout("web-3");
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  ASSERT_TRUE(ro->has_analysis());
  EXPECT_EQ(ro->analysis().verdict(), "PASS") << ro->analysis().message();
  ASSERT_EQ(ro->analysis().metrics_size(), 1);
  EXPECT_GT(ro->analysis().metrics(0).canary_total(), 100u) << "counted from the canary's own /metrics";
  // The split itself: a new connection per request, so green's share of the
  // requests is near its weight.
  EXPECT_DOUBLE_EQ(ro->analysis().expected_share(), 0.5);
  EXPECT_GT(ro->analysis().canary_share(), 0.3);
  EXPECT_LT(ro->analysis().canary_share(), 0.7);
  // And as the hosts' NAT counted it: every request of the load is a new
  // connection through the public port.
  EXPECT_GT(ro->analysis().connections(), 100u) << "the agents' kernel counters reached the coordinator";
  EXPECT_GT(ro->analysis().connection_share(), 0.3);
  EXPECT_LT(ro->analysis().connection_share(), 0.7);
  EXPECT_EQ(ro->analysis().split_warning(), "");
  const std::string shown = ctl({"rollout", "analysis", "web-3"}).out;
  EXPECT_NE(shown.find("counted by the hosts' NAT"), std::string::npos) << shown;
  EXPECT_EQ(ro->analysis().metrics(0).canary_bad(), 0u);
  EXPECT_TRUE(all_on("v2"));
  const std::string exported = http_get(metrics_, "/metrics");
  EXPECT_NE(exported.find("tern_analysis_verdicts_total{verdict=\"FAIL\"} 1"), std::string::npos) << exported;
  EXPECT_NE(exported.find("tern_analysis_verdicts_total{verdict=\"PASS\"} 1"), std::string::npos) << exported;
  EXPECT_NE(exported.find("tern_analysis_verdicts_total{verdict=\"INCONCLUSIVE\"} 0"), std::string::npos) << exported;
}

// No traffic: nothing to judge. The wave pauses INCONCLUSIVE at its horizon;
// extend judges on, promote accepts it.
TEST_F(FleetRolloutTest, CanaryAnalysisWithoutTrafficPausesInconclusiveForAPerson) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  ASSERT_NO_FATAL_FAILURE(apply_analyzed_service());
  r = ctl({"rollout", "start", "-f", analyzed_rollout("v2", "6s"), "--watch", "--wait", "2m"});
  EXPECT_EQ(r.code, 5) << "paused: needs an operator\n" << r.out << r.err;
  auto ro = rollout("web-2");
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->phase(), tern::v1::ROLLOUT_PHASE_PAUSED);
  EXPECT_EQ(ro->analysis().verdict(), "INCONCLUSIVE");
  EXPECT_NE(ro->message().find("ternctl rollout promote web-2"), std::string::npos) << ro->message();
  r = ctl({"rollout", "extend", "web-2", "5s", "--reason", "waiting for traffic"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(eventually([&] {
    auto x = rollout("web-2");
    return x && x->phase() == tern::v1::ROLLOUT_PHASE_PAUSED && x->analysis().verdict() == "INCONCLUSIVE";
  }, std::chrono::seconds(30))) << ctl({"rollout", "history", "web-2"}).out;
  r = ctl({"rollout", "promote", "web-2", "--reason", "quiet service, accepted"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  r = ctl({"rollout", "watch", "web-2", "--wait", "2m"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  auto hist = ctl({"rollout", "history", "web-2"});
  EXPECT_NE(hist.out.find("analysis extended by 5s by an operator (waiting for traffic"), std::string::npos)
      << hist.out;
  EXPECT_NE(hist.out.find("accepted by an operator (quiet service, accepted"), std::string::npos) << hist.out;
  EXPECT_TRUE(all_on("v2"));
}

// A coordinator killed mid-analysis resumes the same test: the counts it had
// taken are read back from its journal, and the wave's verdict comes from
// them and what the agents send after the restart.
TEST_F(FleetRolloutTest, ACoordinatorKilledMidAnalysisResumesTheSameTest) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  ASSERT_NO_FATAL_FAILURE(apply_analyzed_service());
  start_load();
  const std::string path = dir_.file("rollout-slow.yaml");
  std::ofstream(path) << "service: web\nrelease: v2\nwaves: [{hosts: 1, weight: 50, analyze: true}, {percent: 100}]\n"
                      << "analysis: {interval: 1s, warmup: 1s, min_duration: 25s, max_duration: 3m}\n";
  r = ctl({"rollout", "start", "-f", path});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  uint64_t before = 0;
  std::string canary;
  ASSERT_TRUE(eventually([&] {
    auto ro = rollout("web-2");
    if (!ro || ro->wave_step() != tern::v1::WAVE_STEP_ANALYZING) return false;
    before = ro->analysis().intervals();
    for (const auto& h : ro->hosts()) {
      if (h.state() == tern::v1::HOST_ROLLOUT_STATE_ON_NEW) canary = h.host_id();
    }
    return before >= 5;
  }, std::chrono::seconds(60))) << ctl({"rollout", "history", "web-2"}).out;
  // One host's own test, as the operator sees it.
  auto mine = ctl({"rollout", "analysis", "web-2", "--host", canary});
  EXPECT_EQ(mine.code, 0) << mine.err;
  EXPECT_NE(mine.out.find(canary + " in the analysis of wave 1"), std::string::npos) << mine.out;
  EXPECT_NE(mine.out.find("errors"), std::string::npos) << mine.out;
  EXPECT_EQ(ctl({"rollout", "analysis", "web-2", "--host", "host-nobody"}).code, 4) << "not found";
  coordinator_->signal(SIGKILL);
  coordinator_->wait();
  start_coordinator(address_);
  // Straight after the restart the test holds at least what it had counted.
  std::optional<tern::v1::Rollout> resumed;
  ASSERT_TRUE(eventually([&] {
    resumed = rollout("web-2");
    return resumed && resumed->analysis().intervals() > 0;
  }, std::chrono::seconds(30))) << read_file(dir_.file("coordinator.log"));
  EXPECT_GE(resumed->analysis().intervals(), before) << "the same test, not a new one";
  EXPECT_NE(read_file(dir_.file("coordinator.log")).find("analysis sample(s) of wave 1 read back"), std::string::npos);
  ASSERT_TRUE(eventually([&] {
    auto ro = rollout("web-2");
    return ro && ro->phase() == tern::v1::ROLLOUT_PHASE_SUCCEEDED;
  }, std::chrono::seconds(120))) << ctl({"rollout", "history", "web-2"}).out;
  stop_load();
  auto ro = rollout("web-2");
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->analysis().verdict(), "PASS");
  EXPECT_TRUE(all_on("v2"));
}

// The counts from a real Prometheus server instead of the agents: it
// scrapes every slot of the fleet, and the coordinator asks it for each
// canary host's errors and requests, green's port against blue's.
TEST_F(FleetRolloutTest, CanaryAnalysisFromARealPrometheusRejectsAnErroringCanary) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  std::string bin;
  if (const char* env = std::getenv("TERN_PROMETHEUS_BIN"); env != nullptr && *env != 0) bin = env;
  for (const char* p : {"/usr/bin/prometheus", "/usr/local/bin/prometheus"}) {
    if (bin.empty() && std::filesystem::exists(p)) bin = p;
  }
  if (bin.empty()) GTEST_SKIP() << "prometheus is not installed (scripts/setup.sh installs it)";
  std::string targets;
  for (int i = 0; i < kHosts; ++i) {
    for (const char* port : {"9001", "9002"}) targets += "'" + ip(i) + ":" + port + "', ";
  }
  std::ofstream(dir_.file("prometheus.yml")) << "global: {scrape_interval: 500ms, scrape_timeout: 400ms}\n"
                                             << "scrape_configs:\n  - job_name: slots\n    static_configs:\n"
                                             << "      - targets: [" << targets << "]\n";
  Process prometheus(bin,
                     {"--config.file=" + dir_.file("prometheus.yml"), "--storage.tsdb.path=" + dir_.file("tsdb"),
                      "--web.listen-address=127.0.0.1:0"},
                     dir_.file("prometheus.log"));
  std::string prom;
  ASSERT_TRUE(eventually([&] {
    const std::string log = prometheus.log();
    const std::string mark = "msg=\"Listening on\" address=";
    const auto k = log.find(mark);
    if (k == std::string::npos) return false;
    prom = log.substr(k + mark.size(), log.find_first_of(" \n", k + mark.size()) - k - mark.size());
    return true;
  })) << prometheus.log();
  coordinator_->signal(SIGKILL);
  coordinator_->wait();
  start_coordinator(address_, {"--prometheus", "http://" + prom});
  ASSERT_TRUE(eventually([&] {
    auto r = ctl({"hosts", "-o", "json"});
    int connected = 0;
    for (std::size_t p = 0; (p = r.out.find("HOST_STATE_CONNECTED", p)) != std::string::npos; ++p) ++connected;
    return connected == kHosts;
  }, std::chrono::seconds(30))) << read_file(dir_.file("coordinator.log"));
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "2m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string on = "instance=\"{address}:{port}\"";
  std::ofstream(dir_.file("web-prom.yaml"))
      << "name: web\nselector: role=web\nports: [{public: 8080, blue: 9001, green: 9002}]\n"
      << "argv: [\"{release_dir}/app\", \"--port\", \"{port}\", \"--version\", \"{version}\", \"--drain\", \"200ms\"]\n"
      << "health: {http: {path: /healthz}, interval: 100ms, timeout: 1s, healthy_deadline: 4s}\n"
      << "drain: 1s\ngrace: 2s\nkeep_warm: true\n"
      << "analysis:\n  metrics:\n    - name: errors\n      kind: ratio\n"
      << "      bad_query: 'sum(increase(http_requests_total{" << on << ",code=~\"5..\"}[{interval}])) or 0 * "
      << "sum(increase(http_requests_total{" << on << "}[{interval}]))'\n"
      << "      total_query: 'sum(increase(http_requests_total{" << on << "}[{interval}]))'\n";
  r = ctl({"service", "apply", "-f", dir_.file("web-prom.yaml")});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  ASSERT_EQ(ctl({"artifact", "push", errors_bundle_, "--service", "web", "--version", "bad"}).code, 0);
  std::ofstream(dir_.file("rollout-prom.yaml"))
      << "service: web\nrelease: bad\nwaves: [{hosts: 1, weight: 50, analyze: true}, {percent: 100}]\n"
      << "analysis: {source: prometheus, interval: 2s, warmup: 2s, min_duration: 10s, max_duration: 2m}\n";
  start_load();
  r = ctl({"rollout", "start", "-f", dir_.file("rollout-prom.yaml"), "--watch", "--wait", "3m"});
  stop_load();
  EXPECT_NE(r.code, 0) << r.out << r.err;
  auto ro = rollout("web-2");
  ASSERT_TRUE(ro);
  EXPECT_EQ(ro->phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK)
      << ctl({"rollout", "history", "web-2"}).out << read_file(dir_.file("coordinator.log"));
  EXPECT_EQ(ro->analysis().verdict(), "FAIL") << ro->analysis().message();
  ASSERT_EQ(ro->analysis().metrics_size(), 1);
  EXPECT_GT(ro->analysis().metrics(0).canary_bad(), 0u) << "counted by Prometheus";
  EXPECT_GT(ro->analysis().metrics(0).baseline_total(), 0u);
  EXPECT_TRUE(eventually([&] { return all_on("v1"); }));
}

}  // namespace
}  // namespace tern::testing
