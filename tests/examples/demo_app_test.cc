// The demo app behaves as the demo, the swap tests and the benchmarks rely on.

#include <signal.h>

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

TEST_F(DemoAppTest, StopsCleanlyOnSigterm) {
  start({});
  app_->signal(SIGTERM);
  EXPECT_EQ(app_->wait(), 0) << app_->log();
}

}  // namespace
}  // namespace tern::testing
