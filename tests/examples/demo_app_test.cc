// The demo app behaves as the demo, the swap tests and the benchmarks rely on.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <limits>

#include "core/counter_delta.h"
#include "core/prom_text.h"
#include "tests/integration/harness.h"

namespace tern::testing {
namespace {

class DemoAppTest : public ::testing::Test {
 protected:
  // Starts the app on a free port and returns "127.0.0.1:port".
  std::string start(std::vector<std::string> args) {
    args.insert(args.begin(), {"--port", "0"});
    app_ = std::make_unique<Process>(TERN_DEMO_APP_BIN, args, dir_.file("app-" + std::to_string(++starts_) + ".log"));
    std::string port;
    EXPECT_TRUE(eventually([&] {
      std::string log = app_->log();
      auto at = log.find("listening on port ");
      if (at == std::string::npos) return false;
      port = log.substr(at + 18, log.find('\n', at) - at - 18);
      return true;
    })) << app_->log();
    return "127.0.0.1:" + port;
  }

  // GET /metrics, read with the parser the agent uses.
  std::vector<PromSample> scrape(const std::string& addr, PromFamilyTypes* types = nullptr) {
    std::string resp = http_get(addr, "/metrics");
    EXPECT_NE(resp.find("200 OK"), std::string::npos) << resp;
    EXPECT_NE(resp.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << resp;
    auto at = resp.find("\r\n\r\n");
    auto samples = parse_prom_text(at == std::string::npos ? "" : resp.substr(at + 4), types);
    EXPECT_TRUE(samples.ok()) << samples.status() << "\n" << resp;
    return samples.ok() ? *samples : std::vector<PromSample>{};
  }

  static PromSelector selector(const std::string& text) {
    auto s = parse_prom_selector(text);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : PromSelector{};
  }

  TempDir dir_;
  int starts_ = 0;
  std::unique_ptr<Process> app_;
};

TEST_F(DemoAppTest, ReadsItsVersionAndColorFromAConfigFile) {
  // As a release reads a file Tern rendered for its slot; port 0: any free one.
  std::ofstream(dir_.file("app.conf")) << "# rendered\nport=0\n\nversion=v7\ncolor=blue\n";
  std::string addr = start({"--config", dir_.file("app.conf")});
  std::string resp = http_get(addr, "/");
  EXPECT_NE(resp.find("200 OK"), std::string::npos) << resp;
  EXPECT_NE(resp.find("\r\n\r\nv7 blue\n"), std::string::npos) << resp;
}

TEST_F(DemoAppTest, AnswersWithItsVersionAndColor) {
  std::string addr = start({"--version", "v2", "--color", "green"});
  std::string resp = http_get(addr, "/");
  EXPECT_NE(resp.find("200 OK"), std::string::npos) << resp;
  EXPECT_NE(resp.find("X-Tern-Version: v2"), std::string::npos) << resp;
  EXPECT_NE(resp.find("\r\n\r\nv2 green\n"), std::string::npos) << resp;
}

TEST_F(DemoAppTest, HealthCanBeFailedAtStartOrAtRunTime) {
  std::string addr = start({"--version", "v1"});
  EXPECT_NE(http_get(addr, "/healthz").find("200 OK"), std::string::npos);
  http_get(addr, "/admin/fail-health");
  EXPECT_NE(http_get(addr, "/healthz").find("503"), std::string::npos);
  http_get(addr, "/admin/heal");
  EXPECT_NE(http_get(addr, "/healthz").find("200 OK"), std::string::npos);

  app_.reset();
  std::string bad = start({"--fail-health"});
  EXPECT_NE(http_get(bad, "/healthz").find("503"), std::string::npos);
}

TEST_F(DemoAppTest, HealthCanFailAfterAWhile) {
  std::string addr = start({"--fail-health-after", "2s"});
  EXPECT_NE(http_get(addr, "/healthz").find("200 OK"), std::string::npos) << "healthy at first";
  EXPECT_TRUE(eventually([&] { return http_get(addr, "/healthz").find("503") != std::string::npos; }));
  EXPECT_NE(http_get(addr, "/").find("200 OK"), std::string::npos) << "it still serves";
}

TEST_F(DemoAppTest, CrashesAfterNRequestsAsTold) {
  std::string addr = start({"--crash-after", "2"});
  EXPECT_NE(http_get(addr, "/").find("200 OK"), std::string::npos);
  EXPECT_NE(http_get(addr, "/").find("200 OK"), std::string::npos);
  EXPECT_EQ(http_get(addr, "/"), "");
  EXPECT_EQ(app_->wait(), 128 + SIGABRT);
}

TEST_F(DemoAppTest, ErrorRateOneAlwaysAnswers500) {
  std::string addr = start({"--error-rate", "1"});
  EXPECT_NE(http_get(addr, "/").find("500"), std::string::npos);
  EXPECT_NE(http_get(addr, "/healthz").find("200 OK"), std::string::npos) << "health is separate from errors";
}

TEST_F(DemoAppTest, MetricsCountRequestsToRootByCodeAndNothingElse) {
  std::string addr = start({"--error-rate", "0.25"});
  PromFamilyTypes types;
  std::vector<PromSample> before = scrape(addr, &types);
  EXPECT_THAT(types, ::testing::ElementsAre(::testing::Pair("http_request_duration_seconds", PromType::kHistogram),
                                            ::testing::Pair("http_requests_total", PromType::kCounter)));
  EXPECT_EQ(sum(selector("http_requests_total"), before), 0);
  for (const PromSample& s : before) EXPECT_NE(s.name, "http_requests_total") << "no series before a request";

  // Every 4th request to / fails: the 4th and the 8th.
  std::vector<bool> failed;
  for (int i = 0; i < 8; ++i) failed.push_back(http_get(addr, "/").find("HTTP/1.1 500") == 0);
  EXPECT_EQ(failed, (std::vector<bool>{false, false, false, true, false, false, false, true}));
  for (int i = 0; i < 3; ++i) EXPECT_NE(http_get(addr, "/healthz").find("200 OK"), std::string::npos);
  http_get(addr, "/admin/heal");

  std::vector<PromSample> after = scrape(addr);
  EXPECT_EQ(sum(selector(R"(http_requests_total{code="200"})"), after), 6);
  EXPECT_EQ(sum(selector(R"(http_requests_total{code="500"})"), after), 2);
  EXPECT_EQ(sum(selector(R"(http_requests_total{code!~"200|500"})"), after), 0);
  EXPECT_EQ(sum(selector("http_requests_total"), after), 8) << "health checks, scrapes and admin calls are not counted";
  EXPECT_EQ(sum(selector("http_request_duration_seconds_count"), after), 8);
  auto buckets = histogram_buckets(after, "http_request_duration_seconds");
  ASSERT_TRUE(buckets.ok()) << buckets.status();
  std::vector<double> bounds;
  for (const auto& [bound, count] : *buckets) bounds.push_back(bound);
  EXPECT_EQ(bounds, (std::vector<double>{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                         std::numeric_limits<double>::infinity()}));
  ASSERT_FALSE(buckets->empty());
  EXPECT_EQ(buckets->back().second, 8u);
}

TEST_F(DemoAppTest, ErrorsShowAsANewSeriesWhileHealthStaysGood) {
  std::string addr = start({"--error-rate", "1"});
  CounterDelta delta;
  ASSERT_TRUE(delta.observe(scrape(addr)).ok());  // the baseline: no request yet, no series
  for (int i = 0; i < 5; ++i) EXPECT_EQ(http_get(addr, "/").find("HTTP/1.1 500"), 0u);
  EXPECT_NE(http_get(addr, "/healthz").find("200 OK"), std::string::npos) << "health passes; analysis must catch it";

  std::vector<PromSample> samples = scrape(addr);
  EXPECT_EQ(sum(selector(R"(http_requests_total{code="200"})"), samples), 0);
  for (const PromSample& s : samples) {
    if (s.name == "http_requests_total") {
      EXPECT_EQ(*s.label("code"), "500") << "only codes that occurred";
    }
  }
  ASSERT_TRUE(delta.observe(samples).ok());
  ASSERT_TRUE(delta.has_delta());
  EXPECT_EQ(delta.increase(selector(R"(http_requests_total{code=~"5.."})")), 5) << "code=\"500\" counts from zero";
  EXPECT_EQ(delta.increase(selector("http_requests_total")), 5);
}

TEST_F(DemoAppTest, LatencyShowsInTheHistogram) {
  std::string addr = start({"--latency", "30ms"});
  for (int i = 0; i < 3; ++i) EXPECT_NE(http_get(addr, "/").find("200 OK"), std::string::npos);
  std::vector<PromSample> samples = scrape(addr);
  auto buckets = histogram_buckets(samples, "http_request_duration_seconds");
  ASSERT_TRUE(buckets.ok()) << buckets.status();
  for (const auto& [bound, count] : *buckets) {
    if (bound <= 0.025) {
      EXPECT_EQ(count, 0u) << "le=" << bound << ": each request took at least 30ms";
    }
  }
  ASSERT_FALSE(buckets->empty());
  EXPECT_EQ(buckets->back().second, 3u);
  EXPECT_GE(sum(selector("http_request_duration_seconds_sum"), samples), 0.09);
}

TEST_F(DemoAppTest, RefusesAnErrorRateOutsideZeroToOne) {
  for (const char* bad : {"1.5", "-0.1", "lots"}) {
    Process app(TERN_DEMO_APP_BIN, {"--port", "0", "--error-rate", bad}, dir_.file(std::string("bad-") + bad + ".log"));
    EXPECT_EQ(app.wait(), 2) << bad;
    EXPECT_NE(app.log().find("--error-rate is a share"), std::string::npos) << app.log();
  }
}

// One kept-alive HTTP/1.1 connection.
class KeptAlive {
 public:
  explicit KeptAlive(const std::string& addr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(addr.substr(addr.find(':') + 1))));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~KeptAlive() { ::close(fd_); }
  // The response's head, or "" when the connection was closed first.
  std::string get() {
    const std::string req = "GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n";
    if (!connected_ || ::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return "";
    std::string buf;
    char tmp[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) return "";
      buf.append(tmp, static_cast<std::size_t>(n));
      auto end = buf.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      auto cl = buf.find("Content-Length: ");
      const std::size_t need = end + 4 + std::stoul(buf.substr(cl + 16));
      if (buf.size() >= need) return buf.substr(0, end);
    }
  }
  // Whether the server closed the connection (EOF) within the receive timeout.
  bool closed_by_server() {
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

TEST_F(DemoAppTest, ADrainSignalClosesEachConnectionAfterItsNextResponseAndIdleOnesLater) {
  const std::string addr = start({"--drain-idle", "300ms"});
  KeptAlive busy(addr), idle(addr);
  EXPECT_NE(busy.get().find("Connection: keep-alive"), std::string::npos);
  EXPECT_NE(idle.get().find("Connection: keep-alive"), std::string::npos);
  app_->signal(SIGUSR1);
  ASSERT_TRUE(eventually([&] { return app_->log().find("draining") != std::string::npos; })) << app_->log();
  // The next request on a kept-alive connection is answered, and told to close.
  const std::string head = busy.get();
  EXPECT_NE(head.find("200 OK"), std::string::npos) << head;
  EXPECT_NE(head.find("Connection: close"), std::string::npos) << head;
  EXPECT_TRUE(busy.closed_by_server());
  // A new connection is still served (it may come from a client's pool).
  KeptAlive fresh(addr);
  EXPECT_NE(fresh.get().find("Connection: close"), std::string::npos);
  // The idle one is closed once it has been idle for --drain-idle.
  EXPECT_TRUE(idle.closed_by_server());
  EXPECT_TRUE(app_->running()) << "draining is not stopping";
  app_->signal(SIGTERM);
  EXPECT_EQ(app_->wait(), 0) << app_->log();
}

TEST_F(DemoAppTest, StopsCleanlyOnSigterm) {
  start({});
  app_->signal(SIGTERM);
  EXPECT_EQ(app_->wait(), 0) << app_->log();
}

}  // namespace
}  // namespace tern::testing
