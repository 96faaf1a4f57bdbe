// The daemons under systemd's Type=notify protocol, with the test playing
// systemd: a datagram socket in $NOTIFY_SOCKET and a watchdog in
// $WATCHDOG_USEC. The daemons are the real binaries.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/integration/harness.h"

namespace tern::testing {
namespace {

class FakeSystemd {
 public:
  explicit FakeSystemd(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    path.copy(sa.sun_path, sizeof(sa.sun_path) - 1);
    ::unlink(path.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0) << path;
    timeval tv{0, 100'000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~FakeSystemd() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  // Everything received so far, one datagram per entry.
  const std::vector<std::string>& drain() {
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      got_.emplace_back(buf, static_cast<std::size_t>(n));
    }
    return got_;
  }
  int count(const std::string& prefix) {
    int n = 0;
    for (const auto& m : drain()) n += m.rfind(prefix, 0) == 0;
    return n;
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> got_;
};

class SystemdNotifyTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(SystemdNotifyTest, CoordinatorSaysReadyPingsTheWatchdogFromItsLoopAndSaysStopping) {
  FakeSystemd systemd(dir_.file("notify"));
  Process coordinator("env",
                      {"NOTIFY_SOCKET=" + dir_.file("notify"), "WATCHDOG_USEC=400000", TERN_COORDINATOR_BIN,
                       "--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--database", dir_.file("c.db")},
                      dir_.file("coordinator.log"));
  ASSERT_TRUE(eventually([&] { return systemd.count("READY=1") == 1; })) << coordinator.log();
  // WatchdogSec=0.4s: a ping every 200ms.
  ASSERT_TRUE(eventually([&] { return systemd.count("WATCHDOG=1") >= 3; })) << coordinator.log();
  coordinator.signal(SIGTERM);
  EXPECT_EQ(coordinator.wait(), 0);
  EXPECT_EQ(systemd.count("STOPPING=1"), 1);
}

// gRPC 1.51's listener stops accepting for good once accept() fails for
// lack of descriptors. The coordinator then withholds its watchdog pings,
// so systemd restarts it instead of leaving a deaf coordinator running.
TEST_F(SystemdNotifyTest, ACoordinatorThatNoLongerAcceptsConnectionsStopsPingingTheWatchdog) {
  FakeSystemd systemd(dir_.file("notify"));
  Process coordinator("prlimit",
                      {"--nofile=160:160", "env", "NOTIFY_SOCKET=" + dir_.file("notify"), "WATCHDOG_USEC=400000",
                       TERN_COORDINATOR_BIN, "--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "",
                       "--database", dir_.file("c.db"), "--ready-file", dir_.file("ready.json")},
                      dir_.file("coordinator.log"));
  ASSERT_TRUE(eventually([&] { return systemd.count("READY=1") == 1; })) << coordinator.log();
  ASSERT_TRUE(eventually([&] { return systemd.count("WATCHDOG=1") >= 3; })) << coordinator.log();
  const std::string address = ready_address(read_file(dir_.file("ready.json")), "grpc");
  const auto colon = address.rfind(':');
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Raw connections that never speak, until the coordinator's table is full.
  std::vector<int> held;
  for (int i = 0; i < 400; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) break;
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
      ::close(fd);
      break;
    }
    held.push_back(fd);
  }
  EXPECT_TRUE(eventually([&] { return coordinator.log().find("withholding the watchdog ping") != std::string::npos; },
                         std::chrono::seconds(20)))
      << coordinator.log();
  for (int fd : held) ::close(fd);
  coordinator.signal(SIGKILL);
}

TEST_F(SystemdNotifyTest, AgentSaysReadyWithoutWaitingForTheCoordinator) {
  FakeSystemd systemd(dir_.file("notify"));
  // Nothing listens at the coordinator address: the agent still serves what
  // it has, so it is ready, and it keeps pinging while it redials.
  Process agent("env",
                {"NOTIFY_SOCKET=" + dir_.file("notify"), "WATCHDOG_USEC=400000", TERN_AGENT_BIN, "--insecure", "--coordinator",
                 "127.0.0.1:1", "--host-id", "notify-test", "--state-dir", dir_.file("state")},
                dir_.file("agent.log"));
  ASSERT_TRUE(eventually([&] { return systemd.count("READY=1") == 1; })) << agent.log();
  ASSERT_TRUE(eventually([&] { return systemd.count("WATCHDOG=1") >= 3; })) << agent.log();
  agent.signal(SIGTERM);
  EXPECT_EQ(agent.wait(), 0) << agent.log();
  EXPECT_EQ(systemd.count("STOPPING=1"), 1);
}

TEST_F(SystemdNotifyTest, WithoutSystemdNothingIsSentAndNothingBreaks) {
  // No NOTIFY_SOCKET: the same binary runs by hand.
  Process coordinator(TERN_COORDINATOR_BIN,
                      {"--insecure", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--database", dir_.file("c.db"),
                       "--ready-file", dir_.file("ready.json")},
                      dir_.file("coordinator.log"));
  ASSERT_TRUE(eventually([&] { return read_file(dir_.file("ready.json")).find("grpc") != std::string::npos; }));
  coordinator.signal(SIGTERM);
  EXPECT_EQ(coordinator.wait(), 0) << coordinator.log();
}

}  // namespace
}  // namespace tern::testing
