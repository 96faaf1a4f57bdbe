// One host, end to end: a coordinator, an agent and the demo app inside a
// network namespace the test creates, with real nftables (and the same suite
// on iptables), driven through ternctl as an operator would.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <cstring>
#include <set>
#include <regex>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "tern/v1/agent_state.pb.h"
#include "tern/v1/fleet.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/netns.h"
#include "tests/integration/one_host.h"
#include "tests/support/http_server.h"

namespace tern::testing {
namespace {

class OneHostTest : public OneHostFixture, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override { OneHostFixture::set_up(GetParam(), /*keep_warm=*/false); }

  // Tells the demo app in a slot to fail its health check from now on (a
  // release that goes bad after the switch), and waits until the agent sees it.
  void go_bad(tern::v1::SlotColor color) {
    const uint16_t port = color == tern::v1::SLOT_COLOR_BLUE ? kBluePort : kGreenPort;
    ns_->run([&] { http_get("127.0.0.1:" + std::to_string(port), "/admin/fail-health"); });
    ASSERT_TRUE(eventually([&] {
      auto h = host_status();
      if (!h || h->services_size() != 1) return false;
      for (const auto& s : h->services(0).slots()) {
        if (s.color() == color) return s.phase() == tern::v1::SLOT_PHASE_UNHEALTHY;
      }
      return false;
    })) << agent_->log();
  }

  std::string last_good() const {
    auto h = host_status();
    return h && h->services_size() == 1 ? h->services(0).last_good().version() : "";
  }
};

TEST_P(OneHostTest, DeployTwoVersionsThenRollBack) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  EXPECT_EQ(serving(), "v1 blue");
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v2"));
  EXPECT_EQ(serving(), "v2 green");
  // keep_warm is off: blue was drained and stopped.
  auto h = host_status();
  ASSERT_TRUE(h);
  const auto& slots = h->services(0).slots();
  EXPECT_EQ(slots[0].phase(), tern::v1::SLOT_PHASE_STOPPED);
  EXPECT_TRUE(slots[1].active());
  EXPECT_EQ(slots[1].weight(), 100u);
  EXPECT_GT(slots[1].pid(), 0);
  EXPECT_EQ(h->services(0).last_good().version(), "v2");
  EXPECT_EQ(h->services(0).desired_version(), "v2");
  EXPECT_EQ(h->services(0).drift(), "") << "it serves what was ordered";

  // v2 goes bad while it serves: v1 is the last known-good release again, and
  // rollback restarts it (stopped) first, then flips.
  ASSERT_NO_FATAL_FAILURE(go_bad(tern::v1::SLOT_COLOR_GREEN));
  EXPECT_EQ(last_good(), "v1");
  EXPECT_EQ(host_status()->services(0).drift(), "v2 is unhealthy") << "shown as drifted, not as fine";
  {
    const std::string at = ready_address(read_file(dir_.file("ready.json")), "metrics");
    std::string m;
    ns_->run([&] { m = http_body(http_get(at, "/metrics")); });
    EXPECT_NE(m.find("tern_service_hosts_drifted{service=\"web\"} 1\n"), std::string::npos) << m;
  }
  auto listed = ctl({"hosts"});
  EXPECT_NE(listed.out.find("web: v2 is unhealthy"), std::string::npos) << listed.out;
  auto r = ctl({"host", "rollback", "h1", "web"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(serving(), "v1 blue");
  auto table = ctl({"host", "status", "h1"});
  EXPECT_NE(table.out.find("v1"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("web: last known-good release v1"), std::string::npos) << table.out;
  EXPECT_EQ(host_status()->services(0).desired_version(), "v1") << "what it serves after the rollback is wanted";
  EXPECT_EQ(host_status()->services(0).drift(), "");
}

TEST_P(OneHostTest, WeightedCanaryThenPromotion) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  push("v2", good_bundle_);
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "v2", "--weight", "30"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  int v1 = 0, v2 = 0;
  for (int i = 0; i < 300; ++i) {
    std::string got = serving();
    v1 += got == "v1 blue";
    v2 += got == "v2 green";
  }
  EXPECT_EQ(v1 + v2, 300);
  // 30% of 300 is 90; the band is wide enough never to flake.
  EXPECT_GT(v2, 40);
  EXPECT_LT(v2, 150);
  auto h = host_status();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->services(0).slots(1).weight(), 30u);
  EXPECT_EQ(h->services(0).slots(0).weight(), 70u);
  // The agent's /metrics: the kernel's count of each slot's new connections
  // through the public port (health probes go to the slot's own port and
  // are not counted), and the split.
  const std::string m = agent_metrics();
  EXPECT_NE(m.find("tern_agent_slot_new_connections_total{service=\"web\",slot=\"green\"} " + std::to_string(v2) +
                   "\n"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("tern_agent_slot_weight_percent{service=\"web\",slot=\"green\"} 30\n"), std::string::npos) << m;
  EXPECT_NE(m.find("tern_agent_slot_weight_percent{service=\"web\",slot=\"blue\"} 70\n"), std::string::npos) << m;

  // Deploying the same release again promotes it: all traffic, old slot drained and stopped.
  r = ctl({"host", "deploy", "h1", "web", "--version", "v2"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(serving(), "v2 green");
  h = host_status();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->services(0).slots(1).weight(), 100u);
  EXPECT_EQ(h->services(0).slots(0).phase(), tern::v1::SLOT_PHASE_STOPPED);
}

TEST_P(OneHostTest, OldSlotDrainsItsOpenConnectionsBeforeItStops) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  push("v2", good_bundle_);
  // A keep-alive client on blue, open across the switch.
  int fd = -1;
  auto request = [&] {
    std::string got;
    ns_->run([&] {
      const std::string req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
      if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) < 0) return;
      char buf[1024];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) got.assign(buf, static_cast<std::size_t>(n));
    });
    auto p = got.find("\r\n\r\n");
    return p == std::string::npos ? std::string() : got.substr(p + 4, got.find('\n', p + 4) - p - 4);
  };
  ns_->run([&] {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(kPublicPort);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  });
  ASSERT_EQ(request(), "v1 blue");
  auto deploy = spawn_in_ns({TERN_CTL_BIN, "--insecure", "--coordinator", address_, "host", "deploy", "h1", "web", "--version", "v2"},
                            dir_.file("deploy.log"));
  // Switched, and blue is draining because our connection is still open.
  ASSERT_TRUE(eventually([&] {
    auto st = agent_state();
    return st && st->services_size() == 1 && st->services(0).active() == tern::v1::SLOT_COLOR_GREEN &&
           st->services(0).blue().phase() == tern::v1::SLOT_PHASE_DRAINING;
  })) << agent_->log();
  EXPECT_EQ(serving(), "v2 green") << "new connections go to green";
  EXPECT_EQ(request(), "v1 blue") << "the open connection finishes on blue";
  ::close(fd);  // the last connection ends: the drain is over before its 2s limit
  EXPECT_EQ(deploy->wait(), 0) << deploy->log();
  auto h = host_status();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->services(0).slots(0).phase(), tern::v1::SLOT_PHASE_STOPPED);
  EXPECT_NE(deploy->log().find("blue drained"), std::string::npos) << deploy->log();
}

TEST_P(OneHostTest, SlotsRunAsTheSpecsUser) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  // The release dir must be reachable for the unprivileged user.
  std::filesystem::permissions(dir_.path(), std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                                std::filesystem::perms::group_exec |
                                                std::filesystem::perms::others_read |
                                                std::filesystem::perms::others_exec);
  std::ofstream(dir_.file("web.yaml"), std::ios::app) << "user: nobody\n";
  auto r = ctl({"service", "apply", "-f", dir_.file("web.yaml")});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("generation 2"), std::string::npos) << r.out;
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  const int64_t pid = slot_pid(tern::v1::SLOT_COLOR_BLUE);
  std::string status = read_file("/proc/" + std::to_string(pid) + "/status");
  auto uid = status.find("Uid:");
  ASSERT_NE(uid, std::string::npos);
  EXPECT_EQ(status.substr(uid, status.find('\n', uid) - uid).find("65534"), 5u) << status.substr(uid, 40);
  // No capabilities, none to win back through a setuid binary.
  EXPECT_NE(status.find("CapEff:\t0000000000000000\n"), std::string::npos) << status;
  EXPECT_NE(status.find("CapBnd:\t0000000000000000\n"), std::string::npos) << status;
  EXPECT_NE(status.find("NoNewPrivs:\t1\n"), std::string::npos) << status;
  EXPECT_EQ(serving(), "v1 blue");
}

TEST_P(OneHostTest, GreenThatNeverTurnsHealthyLeavesBlueServing) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  const int64_t blue_pid = slot_pid(tern::v1::SLOT_COLOR_BLUE);
  push("v2-bad", bad_bundle_);
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "v2-bad"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("did not turn healthy"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("active slot was not touched"), std::string::npos) << r.err;
  EXPECT_EQ(serving(), "v1 blue");
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_BLUE), blue_pid);
  auto h = host_status();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->services(0).slots(1).pid(), 0) << "the failed green must be stopped";
  EXPECT_EQ(h->services(0).slots(1).phase(), tern::v1::SLOT_PHASE_CRASHED);
}

TEST_P(OneHostTest, CorruptArtifactIsRefusedAndNothingStarts) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  push("v2", good_bundle_);
  // Damage the stored blob: the agent must notice and install nothing.
  std::string sha;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path() / "artifacts" / "sha256")) {
    std::filesystem::resize_file(e.path(), std::filesystem::file_size(e.path()) / 2);
    sha = e.path().filename();
  }
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "v2"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_TRUE(r.err.find("checksum") != std::string::npos || r.err.find("truncated") != std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "agent" / "web" / "releases" / "v2"));
  EXPECT_EQ(serving(), "v1 blue");
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_GREEN), 0);
}

TEST_P(OneHostTest, SlotPortAlreadyTakenGivesAClearError) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  // Someone else listens on green's port.
  int fd = -1;
  ns_->run([&] {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(kGreenPort);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ::listen(fd, 8);
  });
  push("v2", good_bundle_);
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "v2"});
  ::close(fd);
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("already in use"), std::string::npos) << r.err;
  EXPECT_EQ(serving(), "v1 blue");
}

// Processes running the release staged under the agent's state dir (the demo
// app as the slots run it), zombies aside.
std::vector<pid_t> slot_processes(const std::string& state_dir) {
  std::vector<pid_t> out;
  const std::string releases = state_dir + "/web/releases/";
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string argv0 = read_file(e.path().string() + "/cmdline");
    argv0 = argv0.substr(0, argv0.find('\0'));
    std::string stat = read_file(e.path().string() + "/stat");
    const auto close = stat.rfind(") ");
    if (argv0.rfind(releases, 0) == 0 && close != std::string::npos && stat[close + 2] != 'Z') {
      out.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return out;
}

// A process that exists and is not a zombie.
bool alive(int64_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(") ");
  return close != std::string::npos && stat[close + 2] != 'Z';
}

// --wait running out is a timeout (exit 7) that says the deploy goes on,
// not "cannot reach the coordinator" (exit 3).
TEST_P(OneHostTest, ADeployThatOutlastsItsWaitIsATimeoutNotAnOutage) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  push("v2-slow", slow_bundle_);
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "v2-slow", "--wait", "300ms"});
  EXPECT_EQ(r.code, 7) << r.out << r.err;
  EXPECT_NE(r.err.find("still running after --wait 300ms; the host goes on with it"), std::string::npos) << r.err;
  EXPECT_TRUE(eventually([&] { return serving() == "v2-slow green"; })) << "and it did: " << agent_->log();
  // Waiting for it all, the operator sees how the probes go.
  push("v3-slow", slow_bundle_);
  auto full = ctl({"host", "deploy", "h1", "web", "--version", "v3-slow"});
  ASSERT_EQ(full.code, 0) << full.out << full.err;
  EXPECT_NE(full.out.find("probing blue (v3-slow): not healthy yet: "), std::string::npos) << full.out;
  EXPECT_NE(full.out.find("healthy deadline)"), std::string::npos) << full.out;
}

// Both /metrics endpoints, after a rollout, pass `promtool check metrics`,
// and every metric the shipped alert rules and Grafana dashboard use is
// there: the monitoring files cannot drift from what the daemons export.
TEST_P(OneHostTest, BothMetricsEndpointsPassPromtoolAndExportWhatTheAlertsAndDashboardUse) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  if (run_cmd({"promtool", "--version"}).code != 0) GTEST_SKIP() << "promtool is not installed (scripts/setup.sh)";
  push("v1", good_bundle_);
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "1m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const std::string ready = read_file(dir_.file("ready.json"));
  const std::string coordinator_metrics_at = ready_address(ready, "metrics");
  std::string coordinator;
  ns_->run([&] { coordinator = http_body(http_get(coordinator_metrics_at, "/metrics")); });
  std::string agent;
  ASSERT_TRUE(eventually([&] {
    agent = agent_metrics();
    return agent.find("tern_agent_slot_healthy{service=\"web\",slot=\"blue\"} 1") != std::string::npos;
  })) << agent;
  for (const auto& [who, text] : {std::pair{"coordinator", coordinator}, std::pair{"agent", agent}}) {
    std::ofstream(dir_.file(std::string(who) + ".prom")) << text;
    auto check = run_cmd({"sh", "-c", "promtool check metrics < \"$0\"", dir_.file(std::string(who) + ".prom")});
    EXPECT_EQ(check.code, 0) << who << ":\n" << check.out << check.err;
  }
  EXPECT_NE(coordinator.find("tern_build_info{version=\""), std::string::npos);
  EXPECT_NE(agent.find("daemon=\"agent\"} 1"), std::string::npos);
  EXPECT_NE(coordinator.find("tern_service_rollout_phase{service=\"web\",phase=\"succeeded\"} 1"), std::string::npos)
      << coordinator;
  EXPECT_NE(coordinator.find("tern_rollout_duration_seconds_count{outcome=\"succeeded\"} 1"), std::string::npos)
      << coordinator;
  EXPECT_EQ(agent.find("tern_agent_swap_duration_seconds_count 0\n"), std::string::npos) << "the swap was timed";

  // Every metric the alerts and the dashboard name.
  std::set<std::string> used;
  for (const char* file : {"/monitoring/tern-alerts.yml", "/monitoring/tern-dashboard.json"}) {
    const std::string text = read_file(std::string(TERN_SOURCE_DIR) + file);
    static const std::regex name(R"(\b((tern|process)_[a-z_]+))");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator(); ++it) {
      std::string n = (*it)[1];
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        if (n.size() > std::strlen(suffix) && n.compare(n.size() - std::strlen(suffix), std::string::npos, suffix) == 0) {
          n.resize(n.size() - std::strlen(suffix));
        }
      }
      used.insert(n);
    }
  }
  EXPECT_GT(used.size(), 10u);
  for (const auto& n : used) {
    if (n == "tern_webhook_pending" || n == "tern_webhook_deliveries_total") continue;  // only with webhooks
    EXPECT_TRUE(coordinator.find("# TYPE " + n + " ") != std::string::npos ||
                agent.find("# TYPE " + n + " ") != std::string::npos)
        << n << " is used by the monitoring files but exported by neither daemon";
  }
}

// On a terminal (a pseudo-terminal made by script(1)), `rollout start
// --watch` draws the live view: the wave's bar, the bake counting down, the
// outcome; off a terminal the same watch is the plain log, with no escapes.
TEST_P(OneHostTest, RolloutWatchOnATerminalIsALiveViewAndElsewhereAPlainLog) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  if (run_cmd({"script", "--version"}).code != 0) GTEST_SKIP() << "script(1) is not installed";
  push("v1", good_bundle_);
  const std::string cmd = absl::StrCat(TERN_CTL_BIN, " --insecure --coordinator ", address_,
                                       " rollout start web --version v1 --waves 100% --bake 3s --watch -y");
  auto r = run_cmd(with_ns({"env", "TERM=xterm", "NO_COLOR=1", "script", "-qfec", cmd, "/dev/null"}));
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("\x1b[J"), std::string::npos) << "redrawn in place: " << r.out;
  EXPECT_NE(r.out.find("wave 1/1  100%"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[####################] 1/1 on v1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("baking, "), std::string::npos) << "the bake counts down: " << r.out;
  EXPECT_NE(r.out.find("succeeded"), std::string::npos) << r.out;
  auto plain = ctl({"rollout", "watch", "web-1"});
  EXPECT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(plain.out.find("\x1b["), std::string::npos) << plain.out;
  EXPECT_NE(plain.out.find("succeeded: "), std::string::npos) << plain.out;
}

// The web dashboard in a real browser (headless Chromium from Debian): it
// loads, shows the fleet and a running rollout waiting at its gate, polls
// (several updates in one load), and shows the rollout's end after the
// promote.
TEST_P(OneHostTest, TheDashboardShowsTheFleetAndARolloutInARealBrowser) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  if (GetParam() != "nftables") GTEST_SKIP() << "the dashboard does not depend on the backend";
  if (run_cmd({"chromium", "--version"}).code != 0) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh)";
  push("v1", good_bundle_);
  std::ofstream(dir_.file("rollout.yaml"))
      << "service: web\nrelease: v1\nwaves: [{percent: 100, gate: manual}]\n";
  auto started = ctl({"rollout", "start", "-f", dir_.file("rollout.yaml"), "-y"});
  ASSERT_EQ(started.code, 0) << started.err;
  ASSERT_TRUE(eventually([&] {
    return ctl({"rollout", "status", "web-1"}).out.find("awaiting approval") != std::string::npos;
  })) << agent_->log();
  const std::string at = ready_address(read_file(dir_.file("ready.json")), "metrics");
  std::filesystem::create_directories(dir_.file("chrome-home"));
  auto browse = [&](const std::vector<std::string>& extra, const std::string& query) {
    std::vector<std::string> argv{"env", "HOME=" + dir_.file("chrome-home"), "chromium", "--headless", "--no-sandbox",
                                  "--disable-gpu", "--user-data-dir=" + dir_.file("chrome-profile"),
                                  "--virtual-time-budget=5000", "--window-size=1280,1000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("http://" + at + "/dashboard" + query);
    return run_cmd(with_ns(argv));
  };
  auto dom = browse({"--dump-dom"}, "?every=500");
  ASSERT_EQ(dom.code, 0) << dom.err;
  for (const char* want : {"web-1: web", "awaiting approval", "1/1 on v1", "h1", "connected: 1", "role=web",
                           "wave started", "web-1: running, wave 1 awaiting approval"}) {
    EXPECT_NE(dom.out.find(want), std::string::npos) << want << " is not on the page:\n" << dom.out;
  }
  static const std::regex updates(R"(id="updates">(\d+)<)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(dom.out, m, updates)) << dom.out;
  EXPECT_GE(std::stoi(m[1]), 3) << "the page polls and redraws while it is open";
  auto shot = browse({"--screenshot=" + dir_.file("dashboard.png")}, "");
  EXPECT_EQ(shot.code, 0) << shot.err;
  EXPECT_GT(std::filesystem::file_size(dir_.file("dashboard.png")), 10'000u) << "a real rendering";
  if (const char* keep = std::getenv("TERN_DASHBOARD_SCREENSHOT")) {
    std::filesystem::copy_file(dir_.file("dashboard.png"), keep, std::filesystem::copy_options::overwrite_existing);
  }

  ASSERT_EQ(ctl({"rollout", "promote", "web-1"}).code, 0);
  ASSERT_TRUE(eventually([&] { return ctl({"rollout", "status", "web-1"}).out.find("succeeded") != std::string::npos; }));
  auto after = browse({"--dump-dom"}, "");
  ASSERT_EQ(after.code, 0) << after.err;
  EXPECT_NE(after.out.find("web-1: web v1, succeeded"), std::string::npos) << after.out;
  EXPECT_NE(after.out.find("promoted"), std::string::npos) << after.out;
}

TEST_P(OneHostTest, AServiceCanBeReadComparedWithAFileAndDeleted) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  auto got = ctl({"service", "get", "web"});
  ASSERT_EQ(got.code, 0) << got.err;
  EXPECT_NE(got.out.find("service web, generation 1"), std::string::npos) << got.out;
  EXPECT_NE(got.out.find("\"keep_warm\""), std::string::npos) << got.out;
  auto same = ctl({"service", "diff", "-f", dir_.file("web.yaml")});
  EXPECT_EQ(same.code, 0) << same.out << same.err;
  EXPECT_NE(same.out.find("is what is stored (generation 1)"), std::string::npos) << same.out;
  std::ofstream(dir_.file("web2.yaml")) << read_file(dir_.file("web.yaml")) << "env: {MODE: canary}\n";
  auto changed = ctl({"service", "diff", "-f", dir_.file("web2.yaml")});
  EXPECT_EQ(changed.code, 1) << changed.out << changed.err;
  EXPECT_NE(changed.out.find("differs from generation 1"), std::string::npos) << changed.out;
  EXPECT_NE(changed.out.find("env"), std::string::npos) << changed.out;
  auto del = ctl({"service", "delete", "web", "--yes"});
  ASSERT_EQ(del.code, 0) << del.out << del.err;
  EXPECT_EQ(ctl({"service", "get", "web"}).code, 4) << "gone: not found";
}

TEST_P(OneHostTest, AgentKilledWhileProbingANewReleaseUndoesItsStart) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  const int64_t blue_pid = slot_pid(tern::v1::SLOT_COLOR_BLUE);
  push("v2-slow", slow_bundle_);
  // The deploy is under way (green started, still probing) when the agent dies.
  auto deploy = spawn_in_ns({TERN_CTL_BIN, "--insecure", "--coordinator", address_, "host", "deploy", "h1", "web", "--version",
                             "v2-slow"},
                            dir_.file("deploy.log"));
  ASSERT_TRUE(eventually([&] {
    auto st = agent_state();
    return st && st->services_size() == 1 && st->services(0).green().pid() > 0;
  })) << agent_->log();
  EXPECT_EQ(agent_state()->services(0).starting_slot(), tern::v1::SLOT_COLOR_GREEN);
  const int64_t half_started = agent_state()->services(0).green().pid();
  agent_->signal(SIGKILL);
  agent_->wait();
  EXPECT_EQ(deploy->wait(), 1) << deploy->log();  // the caller learns the agent went away
  EXPECT_EQ(serving(), "v1 blue") << "blue must serve throughout";
  ASSERT_TRUE(alive(half_started)) << "green runs on while the agent is away";

  start_agent();
  // The half-started green is stopped (keep_warm is off), blue is adopted,
  // and what the agent reports says so.
  ASSERT_TRUE(eventually([&] {
    auto h = host_status();
    return h && h->state() == tern::v1::HOST_STATE_CONNECTED && h->services_size() == 1 &&
           h->services(0).slots(1).phase() == tern::v1::SLOT_PHASE_STOPPED;
  })) << agent_->log();
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_GREEN), 0);
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_BLUE), blue_pid);
  EXPECT_TRUE(eventually([&] { return !alive(half_started); })) << "the half-started v2-slow was stopped";
  EXPECT_TRUE(alive(blue_pid));
  auto st = agent_state();
  ASSERT_TRUE(st && st->services_size() == 1);
  EXPECT_EQ(st->services(0).starting_slot(), tern::v1::SLOT_COLOR_UNSPECIFIED);
  EXPECT_EQ(st->services(0).operation(), "");
  EXPECT_EQ(st->services(0).green().phase(), tern::v1::SLOT_PHASE_STOPPED);
  EXPECT_EQ(serving(), "v1 blue");

  // Deploying it again works from the start.
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v2-slow", /*push_first=*/false));
  EXPECT_EQ(serving(), "v2-slow green");
  const int64_t green_pid = slot_pid(tern::v1::SLOT_COLOR_GREEN);

  // Killed again after the switch: the mapping it recorded is the one in force.
  agent_->signal(SIGKILL);
  agent_->wait();
  start_agent();
  ASSERT_TRUE(eventually([&] {
    auto h = host_status();
    return h && h->state() == tern::v1::HOST_STATE_CONNECTED && h->services_size() == 1;
  }));
  EXPECT_EQ(serving(), "v2-slow green");
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_GREEN), green_pid);
}

// How long the hanging hook sleeps: a number of this test process's own, so
// that tests running side by side (the other backend's) do not see each
// other's sleep in running_cmdline().
std::string hang_seconds() { return std::to_string(100000 + ::getpid()); }

// A release bundle of the demo app with hook scripts beside it: one that
// prints a line and fails, one that never ends.
std::string hooks_bundle(const TempDir& dir) {
  auto d = dir.path() / "bundle-hooks";
  std::filesystem::create_directories(d / "hooks");
  std::filesystem::copy_file(TERN_DEMO_APP_BIN, d / "app", std::filesystem::copy_options::overwrite_existing);
  std::ofstream(d / "hooks" / "smoke") << "#!/bin/sh\necho \"smoke: GET $1 returned 503 on $TERN_SLOT ($TERN_HOOK of "
                                          "$TERN_RELEASE after $TERN_PREVIOUS_RELEASE)\"\nexit 3\n";
  std::ofstream(d / "hooks" / "hang") << "#!/bin/sh\necho hanging\nexec sleep " << hang_seconds() << "\n";
  for (const char* f : {"hooks/smoke", "hooks/hang"}) {
    std::filesystem::permissions(d / f, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                            std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                            std::filesystem::perms::others_exec);
  }
  const std::string out = dir.file("hooks.tar.gz");
  auto r = run_cmd({"tar", "-czf", out, "-C", d.string(), "app", "hooks"});
  EXPECT_EQ(r.code, 0) << r.err;
  return out;
}

// A process whose command line is exactly `argv` runs on this machine.
bool running_cmdline(const std::vector<std::string>& argv) {
  std::string want;
  for (const auto& a : argv) want += a + std::string(1, '\0');
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (read_file(e.path().string() + "/cmdline") == want && alive(std::stoll(name))) return true;
  }
  return false;
}

TEST_P(OneHostTest, AFailingPreTrafficHookLeavesBlueServingAndAHungOneTimesOut) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  const int64_t blue_pid = slot_pid(tern::v1::SLOT_COLOR_BLUE);
  const std::string bundle = hooks_bundle(dir_);
  ASSERT_NO_FATAL_FAILURE(push("v2", bundle));
  ASSERT_NO_FATAL_FAILURE(push("v3", bundle));
  auto apply_hook = [&](const std::string& hook_line) {
    std::ofstream(dir_.file("web-hooks.yaml")) << read_file(dir_.file("web.yaml")) << "hooks:\n  " << hook_line << "\n";
    auto r = ctl({"service", "apply", "-f", dir_.file("web-hooks.yaml")});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  };

  // The smoke test fails: green is stopped, blue never stopped serving, and
  // the error carries what the hook printed.
  ASSERT_NO_FATAL_FAILURE(
      apply_hook("pre_traffic: {argv: [\"{release_dir}/hooks/smoke\", \"http://127.0.0.1:{port}/\"], timeout: 20s}"));
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "v2"});
  EXPECT_NE(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("hook pre_traffic (v2, green) failed: it exited with status 3; its output: smoke: GET "
                       "http://127.0.0.1:9002/ returned 503 on green (pre_traffic of v2 after v1)"),
            std::string::npos)
      << r.out << r.err << "\nagent log:\n" << agent_->log();
  EXPECT_NE(r.err.find("green was stopped and traffic stays on blue"), std::string::npos) << r.err;
  EXPECT_EQ(serving(), "v1 blue");
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_BLUE), blue_pid);
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_GREEN), 0);
  auto h = host_status();
  ASSERT_TRUE(h && h->services_size() == 1);
  EXPECT_EQ(h->services(0).slots(1).phase(), tern::v1::SLOT_PHASE_STOPPED);
  // Kept in the host's history.
  auto history = ctl({"host", "history", "h1"});
  EXPECT_NE(history.out.find("hook_failed"), std::string::npos) << history.out;
  EXPECT_NE(history.out.find("returned 503 on green"), std::string::npos) << history.out;
  // And in green's log.
  EXPECT_NE(read_file(dir_.file("agent/logs/web-green.log")).find("returned 503 on green"), std::string::npos)
      << "hook output missing from the slot's log";

  // A hook that never ends is killed, with what it runs, at its timeout.
  ASSERT_NO_FATAL_FAILURE(apply_hook("pre_traffic: {argv: [\"{release_dir}/hooks/hang\"], timeout: 2s}"));
  r = ctl({"host", "deploy", "h1", "web", "--version", "v3"});
  EXPECT_NE(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("hook pre_traffic (v3, green) failed: it did not finish within 2s and was killed; its output: "
                       "hanging"),
            std::string::npos)
      << r.out << r.err << "\nagent log:\n" << agent_->log();
  EXPECT_FALSE(running_cmdline({"sleep", hang_seconds()})) << "the hook's child outlived its process group";
  EXPECT_EQ(serving(), "v1 blue");
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_BLUE), blue_pid);
}

TEST_P(OneHostTest, AnAgentKilledWhileAHookRunsFailsTheDeployAndLeavesNoHookBehind) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  const int64_t blue_pid = slot_pid(tern::v1::SLOT_COLOR_BLUE);
  ASSERT_NO_FATAL_FAILURE(push("v2", hooks_bundle(dir_)));
  std::ofstream(dir_.file("web-hooks.yaml"))
      << read_file(dir_.file("web.yaml"))
      << "hooks:\n  pre_traffic: {argv: [\"{release_dir}/hooks/hang\"], timeout: 1h, idempotent: true}\n";
  auto applied = ctl({"service", "apply", "-f", dir_.file("web-hooks.yaml")});
  ASSERT_EQ(applied.code, 0) << applied.out << applied.err;
  auto deploy = spawn_in_ns(
      {TERN_CTL_BIN, "--insecure", "--coordinator", address_, "host", "deploy", "h1", "web", "--version", "v2"},
      dir_.file("deploy.log"));
  // The hook runs (recorded with its pid) when the agent dies.
  ASSERT_TRUE(eventually([&] {
    auto st = agent_state();
    return st && st->services_size() == 1 && st->services(0).hook().name() == "pre_traffic" &&
           st->services(0).hook().pid() > 0;
  })) << agent_->log();
  const int64_t hook_pid = agent_state()->services(0).hook().pid();
  const int64_t green_pid = agent_state()->services(0).green().pid();
  agent_->signal(SIGKILL);
  agent_->wait();
  EXPECT_EQ(deploy->wait(), 1) << deploy->log();
  ASSERT_TRUE(alive(hook_pid)) << "the hook runs on while the agent is away";
  EXPECT_EQ(serving(), "v1 blue");

  start_agent();
  // A guard is never run again: the deploy failed, green (which never passed
  // it) is stopped, and the hook's process is gone.
  ASSERT_TRUE(eventually([&] {
    auto h = host_status();
    return h && h->state() == tern::v1::HOST_STATE_CONNECTED && h->services_size() == 1 &&
           h->services(0).slots(1).phase() == tern::v1::SLOT_PHASE_STOPPED;
  })) << agent_->log();
  EXPECT_TRUE(eventually([&] { return !alive(hook_pid); })) << "the interrupted hook was left running";
  EXPECT_FALSE(alive(green_pid));
  EXPECT_FALSE(running_cmdline({"sleep", hang_seconds()}));
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_BLUE), blue_pid);
  EXPECT_EQ(serving(), "v1 blue");
  auto st = agent_state();
  ASSERT_TRUE(st && st->services_size() == 1);
  EXPECT_FALSE(st->services(0).has_hook());
  EXPECT_TRUE(eventually([&] {
    return ctl({"host", "history", "h1"}).out.find("the agent restarted while hook pre_traffic ran") !=
           std::string::npos;
  })) << ctl({"host", "history", "h1"}).out;
}

TEST_P(OneHostTest, AnAgentKilledBetweenStartingASlotAndRecordingItLeavesNoOrphan) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  // This agent dies (as kill -9 would) right after it starts a slot process,
  // before it writes that process down.
  agent_->signal(SIGKILL);
  agent_->wait();
  ::setenv("TERN_FAILPOINT", "after_slot_start", 1);
  start_agent();
  ::unsetenv("TERN_FAILPOINT");
  ASSERT_TRUE(eventually([&] {
    auto h = host_status();
    return h && h->state() == tern::v1::HOST_STATE_CONNECTED;
  })) << agent_->log();
  push("v1", good_bundle_);
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "v1"});
  EXPECT_NE(r.code, 0) << r.out << r.err;
  EXPECT_EQ(agent_->wait(), 128 + SIGKILL) << agent_->log();
  auto st = agent_state();
  ASSERT_TRUE(st && st->services_size() == 1);
  EXPECT_EQ(st->services(0).blue().pid(), 0) << "the start was never recorded";
  const std::vector<pid_t> orphans = slot_processes(dir_.file("agent"));
  ASSERT_EQ(orphans.size(), 1u) << "the app runs on, holding blue's port";

  // The next agent finds it, and blue can be deployed again.
  start_agent();
  ASSERT_TRUE(eventually([&] {
    auto h = host_status();
    return h && h->state() == tern::v1::HOST_STATE_CONNECTED;
  })) << agent_->log();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1", /*push_first=*/false));
  EXPECT_EQ(serving(), "v1 blue");
  const std::vector<pid_t> now = slot_processes(dir_.file("agent"));
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0], orphans[0]) << "the orphan was stopped, blue runs a process the agent recorded";
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_BLUE), now[0]);
}

TEST_P(OneHostTest, RulesFlushedBySomeoneElseAreRestored) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  // A foreign table that must survive everything the agent does.
  ASSERT_EQ(run_cmd(with_ns({"nft", "add", "table", "ip", "foreign"})).code, 0);
  if (GetParam() == "nftables") {
    ASSERT_EQ(run_cmd(with_ns({"nft", "flush", "ruleset"})).code, 0);
    ASSERT_EQ(run_cmd(with_ns({"nft", "add", "table", "ip", "foreign"})).code, 0);
  } else {
    ASSERT_EQ(run_cmd(with_ns({"iptables", "-w", "-t", "nat", "-F", "PREROUTING"})).code, 0);
    ASSERT_EQ(run_cmd(with_ns({"iptables", "-w", "-t", "nat", "-F", "OUTPUT"})).code, 0);
  }
  EXPECT_TRUE(eventually([&] { return serving() == "v1 blue"; }, std::chrono::seconds(10)))
      << "the mapping was not restored; agent log:\n" << agent_->log();
  EXPECT_EQ(run_cmd(with_ns({"nft", "list", "table", "ip", "foreign"})).code, 0);
}

TEST_P(OneHostTest, ARegisteredReleaseFromAnHttpUrlIsCheckedAgainstItsSha256) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  // A plain artifact repository: python's http.server in the namespace.
  auto server = spawn_in_ns({"python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                             dir_.path().string()},
                            dir_.file("http.log"));
  std::string port;
  ASSERT_TRUE(eventually([&] {
    std::string log = server->log();
    auto p = log.find(" port ");
    if (p == std::string::npos) return false;
    port = log.substr(p + 6, log.find(' ', p + 6) - p - 6);
    return !port.empty();
  })) << server->log();
  const std::string url = "http://127.0.0.1:" + port + "/good.tar.gz";
  const std::string wrong(64, 'a');
  auto r = ctl({"artifact", "register", "--url", url, "--sha256", wrong, "--service", "web", "--version", "v3-bad"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  r = ctl({"host", "deploy", "h1", "web", "--version", "v3-bad"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("failed its checksum"), std::string::npos) << r.err;
  EXPECT_EQ(serving(), "v1 blue");
  auto sha = run_cmd({"sha256sum", dir_.file("good.tar.gz")});
  ASSERT_EQ(sha.code, 0);
  r = ctl({"artifact", "register", "--url", url, "--sha256", sha.out.substr(0, 64), "--service", "web", "--version",
           "v3"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto listed = ctl({"artifact", "list", "--service", "web"});
  EXPECT_NE(listed.out.find(url), std::string::npos) << listed.out;
  r = ctl({"host", "deploy", "h1", "web", "--version", "v3"});
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(serving(), "v3 green");
  // A version names one release for good: the same version at another URL is refused.
  r = ctl({"artifact", "register", "--url", url + "?x", "--sha256", sha.out.substr(0, 64), "--service", "web",
           "--version", "v3"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("immutable"), std::string::npos) << r.err;
}

TEST_P(OneHostTest, ASlotThatDiesIsRestartedByItsPolicy) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  const int64_t pid = slot_pid(tern::v1::SLOT_COLOR_BLUE);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(static_cast<pid_t>(pid), SIGKILL), 0);
  ASSERT_TRUE(eventually([&] {
    auto st = agent_state();
    return st && st->services_size() == 1 && st->services(0).blue().restarts() == 1 &&
           st->services(0).blue().pid() > 0 && st->services(0).blue().phase() == tern::v1::SLOT_PHASE_HEALTHY;
  })) << agent_->log();
  EXPECT_NE(slot_pid(tern::v1::SLOT_COLOR_BLUE), pid);
  EXPECT_EQ(serving(), "v1 blue");
}

TEST_P(OneHostTest, RemoteClientsFollowTheMappingThroughPrerouting) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  // A veth pair from this (the test's) namespace into the host's: clients
  // here are remote to it, so their connections take the prerouting path.
  // 198.18.0.0/15 is reserved for benchmarks and never routed for real.
  const int n = ::getpid() % 60000;
  const std::string outer = "tv" + std::to_string(n) + "o", inner = "tv" + std::to_string(n) + "i";
  const std::string net = "198.18." + std::to_string(n % 250) + ".";
  ASSERT_EQ(run_cmd({"ip", "link", "add", outer, "type", "veth", "peer", "name", inner}).code, 0);
  struct Cleanup {
    std::string link;
    ~Cleanup() { run_cmd({"ip", "link", "del", link}); }
  } cleanup{outer};
  ASSERT_EQ(run_cmd({"ip", "link", "set", inner, "netns", ns_->name()}).code, 0);
  ASSERT_EQ(run_cmd({"ip", "addr", "add", net + "1/30", "dev", outer}).code, 0);
  ASSERT_EQ(run_cmd({"ip", "link", "set", outer, "up"}).code, 0);
  ASSERT_EQ(run_cmd(with_ns({"ip", "addr", "add", net + "2/30", "dev", inner})).code, 0);
  ASSERT_EQ(run_cmd(with_ns({"ip", "link", "set", inner, "up"})).code, 0);
  auto remote = [&] {
    std::string resp = http_get(net + "2:" + std::to_string(kPublicPort), "/");
    auto p = resp.find("\r\n\r\n");
    std::string body = p == std::string::npos ? "" : resp.substr(p + 4);
    while (!body.empty() && body.back() == '\n') body.pop_back();
    return body;
  };
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  EXPECT_TRUE(eventually([&] { return remote() == "v1 blue"; }, std::chrono::seconds(5))) << remote();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v2"));
  EXPECT_EQ(remote(), "v2 green");
  ASSERT_NO_FATAL_FAILURE(go_bad(tern::v1::SLOT_COLOR_GREEN));
  ASSERT_EQ(ctl({"host", "rollback", "h1", "web"}).code, 0);
  EXPECT_EQ(remote(), "v1 blue");
}

TEST_P(OneHostTest, RolloutsThroughTheEngineSucceedAndRollBack) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  push("v1", good_bundle_);
  push("v2", good_bundle_);
  push("v3-bad", bad_bundle_);
  // On one host the default canary waves (1,10%,50%,100%) add no hosts after
  // the first: refused, saying so.
  auto refused = ctl({"rollout", "plan", "web", "--version", "v1"});
  EXPECT_NE(refused.code, 0);
  EXPECT_NE(refused.err.find("adds no hosts"), std::string::npos) << refused.err;
  auto plan = ctl({"rollout", "plan", "web", "--version", "v1", "--waves", "100%", "-o", "json"});
  ASSERT_EQ(plan.code, 0) << plan.err;
  EXPECT_NE(plan.out.find("h1"), std::string::npos) << plan.out;
  auto r = ctl({"rollout", "start", "web", "--version", "v1", "--waves", "100%", "--watch", "--wait", "1m"});
  ASSERT_EQ(r.code, 0) << r.out << r.err << agent_->log();
  EXPECT_EQ(serving(), "v1 blue");
  r = ctl({"rollout", "start", "web", "--version", "v2", "--waves", "100%", "--watch"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(serving(), "v2 green");
  // A fleet rollback of the succeeded v2 rollout returns the host to v1.
  auto list = ctl({"rollout", "list", "-o", "json"});
  ASSERT_EQ(list.code, 0);
  EXPECT_NE(list.out.find("web-2"), std::string::npos) << list.out;
  r = ctl({"rollout", "rollback", "web-2", "--reason", "test"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_TRUE(eventually([&] { return serving() == "v1 blue"; }, std::chrono::seconds(10))) << agent_->log();
  EXPECT_TRUE(eventually([&] {
    return ctl({"rollout", "history", "web-2"}).out.find("host_rolled_back") != std::string::npos;
  }));
  // A release that never turns healthy fails its wave; v1 keeps serving.
  r = ctl({"rollout", "start", "web", "--version", "v3-bad", "--waves", "100%", "--watch"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("rolled back"), std::string::npos) << r.out;
  EXPECT_EQ(serving(), "v1 blue");
}

// keep_warm: the release traffic left stays running in the idle slot.
class OneHostWarmTest : public OneHostTest {
 protected:
  void SetUp() override { OneHostFixture::set_up(GetParam(), /*keep_warm=*/true); }
};

TEST_P(OneHostWarmTest, RollbackReturnsToTheLastGoodReleaseAndNeverToTheBadOneLeftWarm) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v2"));
  EXPECT_EQ(last_good(), "v2");
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v3"));  // into blue, in place of v1
  EXPECT_EQ(serving(), "v3 blue");
  // v3 goes bad after the switch and is rolled back: a flip to the warm v2.
  ASSERT_NO_FATAL_FAILURE(go_bad(tern::v1::SLOT_COLOR_BLUE));
  EXPECT_EQ(last_good(), "v2");
  auto r = ctl({"host", "rollback", "h1", "web"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(serving(), "v2 green");
  // v3 stays warm (and unhealthy) in blue. Rolling back again must not
  // move traffic onto it: v2 is the last known-good release and stays.
  r = ctl({"host", "rollback", "h1", "web"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("already active"), std::string::npos) << r.out;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(serving(), "v2 green");
  auto h = host_status();
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->services(0).slots(1).active());
  EXPECT_EQ(h->services(0).slots(1).weight(), 100u);
  EXPECT_EQ(h->services(0).slots(0).phase(), tern::v1::SLOT_PHASE_UNHEALTHY);
  EXPECT_EQ(h->services(0).last_good().version(), "v2");
}

TEST_P(OneHostWarmTest, ADeployNeverStopsTheLastGoodReleaseToMakeRoom) {
  if (skipped()) GTEST_SKIP() << skip_reason();
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v1"));
  ASSERT_NO_FATAL_FAILURE(deploy_ok("v2"));
  // v2 goes bad while it serves: v1, warm in blue, is the last good again.
  ASSERT_NO_FATAL_FAILURE(go_bad(tern::v1::SLOT_COLOR_GREEN));
  EXPECT_EQ(last_good(), "v1");
  const int64_t blue_pid = slot_pid(tern::v1::SLOT_COLOR_BLUE);
  push("v3-bad", bad_bundle_);
  auto r = ctl({"host", "deploy", "h1", "web", "--version", "v3-bad"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("last known-good release"), std::string::npos) << r.err;
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_BLUE), blue_pid) << "v1 still runs, untouched";
  // So the way back is still a flip to the same process.
  r = ctl({"host", "rollback", "h1", "web"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_EQ(serving(), "v1 blue");
  EXPECT_EQ(slot_pid(tern::v1::SLOT_COLOR_BLUE), blue_pid);
}

INSTANTIATE_TEST_SUITE_P(Backends, OneHostWarmTest, ::testing::Values("nftables", "iptables"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

INSTANTIATE_TEST_SUITE_P(Backends, OneHostTest, ::testing::Values("nftables", "iptables"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace tern::testing
