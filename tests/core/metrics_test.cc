#include "core/metrics.h"

#include <gtest/gtest.h>

#include "tests/support/http.h"

namespace tern {
namespace {

using testing::http_get;

TEST(MetricsTest, RendersPrometheusText) {
  Metrics m;
  m.counter("tern_x_total", "Things.").fetch_add(3);
  m.gauge("tern_hosts", "Hosts.", "state=\"connected\"").store(2);
  std::string text = m.render();
  EXPECT_NE(text.find("# TYPE tern_x_total counter\ntern_x_total 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tern_hosts{state=\"connected\"} 2\n"), std::string::npos) << text;
}

TEST(MetricsTest, ServesOverHttpOnAPickedPort) {
  Metrics m;
  m.counter("tern_up_total", "Up.").fetch_add(1);
  MetricsHttpServer server(m);
  auto addr = server.start("127.0.0.1:0");
  ASSERT_TRUE(addr.ok()) << addr.status();
  std::string resp = http_get(*addr, "/metrics");
  EXPECT_NE(resp.find("200 OK"), std::string::npos);
  EXPECT_NE(resp.find("tern_up_total 1"), std::string::npos);
  EXPECT_NE(http_get(*addr, "/nope").find("404"), std::string::npos);
  server.stop();
}

TEST(MetricsTest, PortInUseIsAClearError) {
  Metrics m;
  MetricsHttpServer a(m), b(m);
  auto addr = a.start("127.0.0.1:0");
  ASSERT_TRUE(addr.ok());
  auto again = b.start(*addr);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find(*addr), absl::string_view::npos);
}

TEST(MetricsTest, SplitsAddresses) {
  EXPECT_EQ(split_host_port("127.0.0.1:80")->second, 80);
  EXPECT_EQ(split_host_port("[::1]:9400")->first, "::1");
  EXPECT_EQ(split_host_port(":7400")->first, "0.0.0.0");
  EXPECT_FALSE(split_host_port("localhost").ok());
  EXPECT_FALSE(split_host_port("h:99999").ok());
}

}  // namespace
}  // namespace tern
