// A coordinator and three agents, all real binaries on loopback, driven and
// observed through ternctl as an operator would.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include "tern/v1/fleet.pb.h"
#include "tests/integration/harness.h"

namespace tern::testing {
namespace {

using google::protobuf::util::TimeUtil;

// Runs `exe args` on a fresh pseudo-terminal, as a person at a shell would;
// once `prompt` appears, types `answer` and a newline. Returns the exit code
// and everything the terminal showed.
CommandResult run_at_terminal(const std::string& exe, const std::vector<std::string>& args, const std::string& prompt,
                              const std::string& answer) {
  CommandResult res;
  int master = -1;
  int slave = -1;
  if (::openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) {
    ADD_FAILURE() << "openpty: " << std::strerror(errno);
    return res;
  }
  ChildArgv argv(exe, args);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(master);
    ::setsid();
    ::ioctl(slave, TIOCSCTTY, 0);
    ::dup2(slave, STDIN_FILENO);
    exec_child(argv, slave, slave);
  }
  ::close(slave);
  bool answered = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    pollfd p{master, POLLIN, 0};
    if (::poll(&p, 1, 200) > 0) {
      char buf[4096];
      const ssize_t n = ::read(master, buf, sizeof buf);
      if (n <= 0) break;  // EIO: the child closed the terminal
      res.out.append(buf, static_cast<size_t>(n));
    }
    if (!answered && res.out.find(prompt) != std::string::npos) {
      const std::string line = answer + "\n";
      EXPECT_EQ(::write(master, line.data(), line.size()), static_cast<ssize_t>(line.size()));
      answered = true;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "the command did not finish at the terminal; it showed:\n" << res.out;
      ::kill(pid, SIGKILL);
      break;
    }
  }
  ::close(master);
  int status = 0;
  ::waitpid(pid, &status, 0);
  res.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return res;
}

class FleetTest : public ::testing::Test {
 protected:
  void start_coordinator(const std::string& listen) {
    std::filesystem::remove(dir_.file("ready.json"));
    coordinator_ = std::make_unique<Process>(
        TERN_COORDINATOR_BIN,
        std::vector<std::string>{"--insecure", "--listen", listen, "--metrics-listen", "127.0.0.1:0", "--database",
                                 dir_.file("coordinator.db"), "--ready-file", dir_.file("ready.json"),
                                 "--heartbeat-interval", "100ms", "--unreachable-after", "3s",
                                 "--log-level", "debug"},
        dir_.file("coordinator.log"));
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir_.file("ready.json")); }))
        << coordinator_->log();
    const std::string ready = read_file(dir_.file("ready.json"));
    address_ = ready_address(ready, "grpc");
    metrics_ = ready_address(ready, "metrics");
  }

  void start_agent(const std::string& id, const std::string& zone) {
    agents_[id] = std::make_unique<Process>(
        TERN_AGENT_BIN,
        std::vector<std::string>{"--insecure", "--coordinator", address_, "--host-id", id, "--label", "zone=" + zone,
                                 "--label", "role=web", "--state-dir", dir_.file("state-" + id), "--log-level",
                                 "debug", "--default-user", "nobody"},
        dir_.file("agent-" + id + ".log"));
  }

  // `ternctl hosts -o json`, parsed with the API's own message type.
  std::optional<tern::v1::ListHostsResponse> hosts(const std::string& selector = "") {
    std::vector<std::string> args{"--insecure", "--coordinator", address_, "--timeout", "5s", "hosts", "-o", "json"};
    if (!selector.empty()) {
      args.push_back("-l");
      args.push_back(selector);
    }
    CommandResult r = run(TERN_CTL_BIN, args);
    if (r.code != 0) return std::nullopt;
    tern::v1::ListHostsResponse resp;
    if (!google::protobuf::util::JsonStringToMessage(r.out, &resp).ok()) {
      ADD_FAILURE() << "ternctl printed JSON the API type cannot read: " << r.out;
      return std::nullopt;
    }
    return resp;
  }

  std::map<std::string, tern::v1::Host> by_id() {
    std::map<std::string, tern::v1::Host> out;
    if (auto h = hosts()) {
      for (const auto& host : h->hosts()) out[host.host_id()] = host;
    }
    return out;
  }

  bool all_connected(size_t n, uint64_t connect_count) {
    auto m = by_id();
    if (m.size() != n) return false;
    for (const auto& [id, h] : m) {
      if (h.state() != tern::v1::HOST_STATE_CONNECTED || h.connect_count() != connect_count) return false;
    }
    return true;
  }

  std::string logs() {
    std::string all = "--- coordinator\n" + coordinator_->log();
    for (auto& [id, p] : agents_) all += "--- agent " + id + "\n" + p->log();
    return all;
  }

  TempDir dir_;
  std::unique_ptr<Process> coordinator_;
  std::map<std::string, std::unique_ptr<Process>> agents_;
  std::string address_;
  std::string metrics_;
};

TEST_F(FleetTest, RolloutStartAsksAtATerminalBeforeAPlanThatTakesMostHostsAtOnce) {
  start_coordinator("127.0.0.1:0");
  start_agent("web-1", "a");
  start_agent("web-2", "b");
  ASSERT_TRUE(eventually([&] { return all_connected(2, 1); })) << logs();
  const std::vector<std::string> conn{"--insecure", "--coordinator", address_, "--timeout", "5s"};
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), conn.begin(), conn.end());
    return run(TERN_CTL_BIN, args);
  };
  std::ofstream(dir_.file("web.yaml")) << "name: web\nselector: role=web\nports: [{public: 8080, blue: 9001, "
                                          "green: 9002}]\nargv: [\"{release_dir}/app\", \"{port}\"]\n";
  std::ofstream(dir_.file("app")) << "#!/bin/sh\nexit 0\n";
  ASSERT_EQ(ctl({"service", "apply", "-f", dir_.file("web.yaml")}).code, 0);
  auto pushed = ctl({"artifact", "push", dir_.file("app"), "--service", "web", "--version", "2"});
  ASSERT_EQ(pushed.code, 0) << pushed.err;

  std::vector<std::string> start = conn;
  for (const char* a : {"rollout", "start", "web", "--version", "2", "--waves", "100%", "--bake", "1m"}) {
    start.emplace_back(a);
  }
  const std::string prompt = "Start rolling web out to 2? [y/N]";
  // "No" (or just Enter) starts nothing.
  auto no = run_at_terminal(TERN_CTL_BIN, start, prompt, "n");
  EXPECT_EQ(no.code, 1) << no.out;
  EXPECT_NE(no.out.find("the first wave already takes 2 of 2 hosts"), std::string::npos) << no.out;
  EXPECT_NE(no.out.find("not started"), std::string::npos) << no.out;
  auto listed = ctl({"rollout", "list", "-o", "json"});
  ASSERT_EQ(listed.code, 0) << listed.err;
  EXPECT_EQ(listed.out.find("\"id\""), std::string::npos) << "a rollout started after \"n\": " << listed.out;

  // "y" starts it.
  auto yes = run_at_terminal(TERN_CTL_BIN, start, prompt, "y");
  EXPECT_EQ(yes.code, 0) << yes.out;
  EXPECT_NE(yes.out.find("started rollout"), std::string::npos) << yes.out;
  listed = ctl({"rollout", "list", "-o", "json"});
  EXPECT_NE(listed.out.find("\"id\""), std::string::npos) << listed.out;
}

// A cordoned host is left out of the rollouts planned or started after it,
// says so in `hosts`, its status and its history, and survives a
// coordinator restart; uncordoned, it is taken again.
TEST_F(FleetTest, ACordonedHostIsLeftOutOfNewRolloutsUntilUncordoned) {
  start_coordinator("127.0.0.1:0");
  start_agent("web-1", "a");
  start_agent("web-2", "b");
  ASSERT_TRUE(eventually([&] { return all_connected(2, 1); })) << logs();
  auto ctl = [&](std::vector<std::string> args) {
    const std::vector<std::string> conn{"--insecure", "--coordinator", address_, "--timeout", "5s"};
    args.insert(args.begin(), conn.begin(), conn.end());
    return run(TERN_CTL_BIN, args);
  };
  std::ofstream(dir_.file("web.yaml")) << "name: web\nselector: role=web\nports: [{public: 8080, blue: 9001, "
                                          "green: 9002}]\nargv: [\"{release_dir}/app\", \"{port}\"]\n";
  ASSERT_EQ(ctl({"service", "apply", "-f", dir_.file("web.yaml")}).code, 0);
  auto cordoned = ctl({"host", "cordon", "web-2", "--reason", "disk failing"});
  ASSERT_EQ(cordoned.code, 0) << cordoned.err;
  EXPECT_NE(cordoned.out.find("host web-2 cordoned"), std::string::npos) << cordoned.out;
  EXPECT_EQ(ctl({"host", "cordon", "web-9"}).code, 4) << "an unknown host is not found";

  auto plan = ctl({"rollout", "plan", "web", "--version", "2", "--waves", "100%"});
  ASSERT_EQ(plan.code, 0) << plan.err;
  EXPECT_NE(plan.out.find("web-1"), std::string::npos) << plan.out;
  EXPECT_EQ(plan.out.find("web-2 "), std::string::npos) << plan.out;
  EXPECT_NE((plan.out + plan.err).find("1 cordoned host(s) left out: web-2"), std::string::npos)
      << plan.out << plan.err;
  EXPECT_NE(ctl({"hosts"}).out.find("connected, cordoned"), std::string::npos);
  EXPECT_NE(ctl({"host", "status", "web-2"}).out.find("cordoned: left out of new rollouts (disk failing)"),
            std::string::npos);
  EXPECT_NE(ctl({"host", "history", "web-2"}).out.find("cordoned"), std::string::npos);

  // It is recorded: a restarted coordinator still leaves it out.
  coordinator_->signal(SIGKILL);
  coordinator_->wait();
  start_coordinator(address_);
  ASSERT_TRUE(eventually([&] { return all_connected(2, 2); })) << logs();
  plan = ctl({"rollout", "plan", "web", "--version", "2", "--waves", "100%"});
  EXPECT_EQ(plan.out.find("web-2 "), std::string::npos) << plan.out;

  ASSERT_EQ(ctl({"host", "uncordon", "web-2"}).code, 0);
  plan = ctl({"rollout", "plan", "web", "--version", "2", "--waves", "100%"});
  EXPECT_NE(plan.out.find("web-2"), std::string::npos) << plan.out;
  EXPECT_EQ((plan.out + plan.err).find("cordoned"), std::string::npos) << plan.out << plan.err;
}

TEST_F(FleetTest, ThreeAgentsRegisterSurviveACoordinatorCrashAndAreMarkedWhenGone) {
  start_coordinator("127.0.0.1:0");
  start_agent("web-1", "a");
  start_agent("web-2", "b");
  start_agent("web-3", "c");

  // 1. All three register and are listed, with their labels.
  ASSERT_TRUE(eventually([&] { return all_connected(3, 1); })) << logs();
  auto before = by_id();
  EXPECT_EQ(before["web-2"].labels().at("zone"), "b");
  EXPECT_EQ(before["web-2"].agent_version(), "0.1.0");
  auto zone_b = hosts("zone=b");
  ASSERT_TRUE(zone_b);
  ASSERT_EQ(zone_b->hosts_size(), 1);
  EXPECT_EQ(zone_b->hosts(0).host_id(), "web-2");
  EXPECT_EQ(hosts("role=db")->hosts_size(), 0);
  ASSERT_TRUE(eventually([&] {
    return http_get(metrics_, "/metrics").find("tern_agents_connected 3") != std::string::npos;
  })) << http_get(metrics_, "/metrics");

  // 2. kill -9 the coordinator; restart it on the same database and port.
  coordinator_->signal(SIGKILL);
  EXPECT_EQ(coordinator_->wait(), 128 + SIGKILL);
  CommandResult down = run(TERN_CTL_BIN, {"--insecure", "--coordinator", address_, "--timeout", "2s", "hosts"});
  EXPECT_EQ(down.code, 3) << "ternctl's documented exit code for an unreachable coordinator";
  EXPECT_NE(down.err.find(address_), std::string::npos) << down.err;
  start_coordinator(address_);

  // The agents come back by themselves; the hosts keep their history.
  ASSERT_TRUE(eventually([&] { return all_connected(3, 2); })) << logs();
  auto after = by_id();
  for (const auto& [id, h] : before) {
    EXPECT_EQ(TimeUtil::TimestampToMilliseconds(after[id].first_seen()),
              TimeUtil::TimestampToMilliseconds(h.first_seen()))
        << id << " keeps its first_seen across the crash";
  }
  CommandResult version = run(TERN_CTL_BIN, {"--insecure", "--coordinator", address_, "version", "-o", "json"});
  EXPECT_EQ(version.code, 0);
  EXPECT_NE(version.out.find("\"epoch\": \"2\""), std::string::npos) << version.out;

  // 3. Stop one agent: disconnected at once, unreachable after the grace.
  agents_["web-3"]->signal(SIGTERM);
  EXPECT_EQ(agents_["web-3"]->wait(), 0) << agents_["web-3"]->log();
  ASSERT_TRUE(eventually([&] {
    auto m = by_id();
    return m["web-3"].state() == tern::v1::HOST_STATE_DISCONNECTED ||
           m["web-3"].state() == tern::v1::HOST_STATE_UNREACHABLE;
  })) << logs();
  // The 3 s grace is far longer than one poll, so the disconnected state is seen first.
  EXPECT_EQ(by_id()["web-3"].state(), tern::v1::HOST_STATE_DISCONNECTED);
  ASSERT_TRUE(eventually([&] { return by_id()["web-3"].state() == tern::v1::HOST_STATE_UNREACHABLE; })) << logs();
  auto final_view = by_id();
  EXPECT_EQ(final_view["web-1"].state(), tern::v1::HOST_STATE_CONNECTED);
  EXPECT_EQ(final_view["web-2"].state(), tern::v1::HOST_STATE_CONNECTED);
  ASSERT_TRUE(eventually([&] {
    std::string m = http_get(metrics_, "/metrics");
    return m.find("tern_hosts{state=\"unreachable\"} 1") != std::string::npos &&
           m.find("tern_agents_connected 2") != std::string::npos;
  })) << http_get(metrics_, "/metrics");

  // 4. The table view works too and the coordinator stops cleanly.
  CommandResult table = run(TERN_CTL_BIN, {"--insecure", "--coordinator", address_, "hosts"});
  EXPECT_EQ(table.code, 0);
  EXPECT_NE(table.out.find("unreachable"), std::string::npos) << table.out;
  coordinator_->signal(SIGTERM);
  EXPECT_EQ(coordinator_->wait(), 0) << coordinator_->log();
}

TEST_F(FleetTest, CoordinatorRefusesAPortInUseWithAClearError) {
  start_coordinator("127.0.0.1:0");
  Process second(TERN_COORDINATOR_BIN,
                 {"--insecure", "--listen", address_, "--metrics-listen", "", "--database", dir_.file("other.db")},
                 dir_.file("second.log"));
  EXPECT_EQ(second.wait(), 1);
  EXPECT_NE(second.log().find("cannot listen on " + address_), std::string::npos) << second.log();
}

TEST_F(FleetTest, ASecondCoordinatorOnTheSameDatabaseRefusesToStart) {
  start_coordinator("127.0.0.1:0");
  Process second(TERN_COORDINATOR_BIN,
                 {"--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--database",
                  dir_.file("coordinator.db")},
                 dir_.file("second.log"));
  ASSERT_TRUE(eventually([&] { return !second.running(); })) << "a second coordinator runs on the same database";
  EXPECT_EQ(second.wait(), 1);
  EXPECT_NE(second.log().find("in use by another tern-coordinator (pid " + std::to_string(coordinator_->pid()) + ")"),
            std::string::npos)
      << second.log();
  // The first one carries on.
  CommandResult version = run(TERN_CTL_BIN, {"--insecure", "--coordinator", address_, "version", "-o", "json"});
  EXPECT_EQ(version.code, 0) << version.err;
  // Once it has stopped, the database is free again.
  coordinator_->signal(SIGTERM);
  ASSERT_EQ(coordinator_->wait(), 0) << coordinator_->log();
  start_coordinator("127.0.0.1:0");
}

TEST_F(FleetTest, AgentWithABadConfigSaysWhichFileAndKey) {
  std::string path = dir_.file("agent.yaml");
  std::ofstream(path) << "coordinator: 127.0.0.1:7400\nlabels:\n  zone: a\nheartbeat: 5s\n";
  Process agent(TERN_AGENT_BIN, {"--config", path}, dir_.file("bad-agent.log"));
  EXPECT_EQ(agent.wait(), 2);
  std::string log = agent.log();
  EXPECT_NE(log.find(path + ":4:1"), std::string::npos) << log;
  EXPECT_NE(log.find("unknown key \"heartbeat\""), std::string::npos) << log;
}

TEST_F(FleetTest, AnAgentWhoseMetricsPortIsTakenSaysSoAndStartsNothing) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string taken = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  std::string path = dir_.file("agent-metrics.yaml");
  std::ofstream(path) << "coordinator: " << address_ << "\nhost_id: m1\nstate_dir: " << dir_.file("m1")
                      << "\ninsecure: true\npolicy: {default_user: nobody}\nmetrics_listen: " << taken << "\n";
  Process agent(TERN_AGENT_BIN, {"--config", path}, dir_.file("metrics-agent.log"));
  EXPECT_EQ(agent.wait(), 1);
  close(fd);
  std::string log = agent.log();
  EXPECT_NE(log.find("cannot serve /metrics on " + taken + " (metrics_listen)"), std::string::npos) << log;
  EXPECT_NE(log.find("pick a free address"), std::string::npos) << log;
}

}  // namespace
}  // namespace tern::testing
