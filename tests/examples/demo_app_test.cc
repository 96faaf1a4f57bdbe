// The demo app behaves as the demo, the swap tests and the benchmarks rely on.

#include <signal.h>

#include <gtest/gtest.h>

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

  TempDir dir_;
  int starts_ = 0;
  std::unique_ptr<Process> app_;
};

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

TEST_F(DemoAppTest, StopsCleanlyOnSigterm) {
  start({});
  app_->signal(SIGTERM);
  EXPECT_EQ(app_->wait(), 0) << app_->log();
}

}  // namespace
}  // namespace tern::testing
