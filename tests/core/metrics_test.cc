#include "core/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/support/eventually.h"
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

// A connection to "127.0.0.1:port" that sends `first` (maybe nothing) and
// then stays silent until destroyed.
class SilentClient {
 public:
  SilentClient(const std::string& address, const std::string& first = "") {
    const auto port = static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 &&
                 (first.empty() || write(fd_, first.data(), first.size()) == static_cast<ssize_t>(first.size()));
  }
  ~SilentClient() { close(fd_); }
  SilentClient(const SilentClient&) = delete;
  SilentClient& operator=(const SilentClient&) = delete;
  bool connected() const { return connected_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// A GET on a thread of its own, so the test can wait for its answer with a
// deadline instead of blocking on it.
class Scrape {
 public:
  Scrape(const std::string& address, const std::string& path)
      : thread_([this, address, path] {
          std::string got = testing::http_get(address, path);
          std::lock_guard lock(mu_);
          response_ = std::move(got);
          done_ = true;
        }) {}
  ~Scrape() { thread_.join(); }
  bool done() const {
    std::lock_guard lock(mu_);
    return done_;
  }
  std::string response() const {
    std::lock_guard lock(mu_);
    return response_;
  }

 private:
  mutable std::mutex mu_;
  bool done_ = false;
  std::string response_;
  std::thread thread_;
};

// `idle` clients connect and say nothing (every other one half a request
// when `half_requests`); a scrape after them must still be answered.
void expect_scrape_answered_despite(int idle, bool half_requests) {
  Metrics m;
  m.counter("tern_up_total", "Up.").fetch_add(1);
  MetricsHttpServer server(m);
  auto addr = server.start("127.0.0.1:0");
  ASSERT_TRUE(addr.ok()) << addr.status();
  std::vector<std::unique_ptr<SilentClient>> clients;
  for (int i = 0; i < idle; ++i) {
    clients.push_back(std::make_unique<SilentClient>(*addr, half_requests && i % 2 == 1 ? "GET /metr" : ""));
    ASSERT_TRUE(clients.back()->connected());
  }
  Scrape scrape(*addr, "/metrics");
  ASSERT_TRUE(testing::eventually([&] { return scrape.done(); }, std::chrono::seconds(10)))
      << "the scrape waited behind the idle clients";
  EXPECT_NE(scrape.response().find("tern_up_total 1"), std::string::npos) << scrape.response();
  server.stop();
}

// Clients that connect and say nothing (or half a request) must not hold
// up a scrape: each would otherwise stall the next one by its read timeout.
TEST(MetricsTest, IdleAndSlowClientsDoNotHoldUpAScrape) { expect_scrape_answered_despite(10, true); }

// The server holds a bounded number of connections; more idle clients than
// that still cannot lock a scrape out.
TEST(MetricsTest, MoreIdleClientsThanItHoldsCannotLockAScrapeOut) { expect_scrape_answered_despite(100, false); }

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

TEST(MetricsTest, HistogramsRenderCumulativeBucketsSumAndCount) {
  Metrics m;
  auto& h = m.histogram("op_seconds", "How long.", "kind=\"a\"", {0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(0.5);
  h.observe(7);
  const std::string text = m.render();
  EXPECT_NE(text.find("# TYPE op_seconds histogram\n"), std::string::npos) << text;
  EXPECT_NE(text.find("op_seconds_bucket{kind=\"a\",le=\"0.1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("op_seconds_bucket{kind=\"a\",le=\"1\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("op_seconds_bucket{kind=\"a\",le=\"+Inf\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("op_seconds_sum{kind=\"a\"} 8.05\n"), std::string::npos) << text;
  EXPECT_NE(text.find("op_seconds_count{kind=\"a\"} 4\n"), std::string::npos) << text;
  EXPECT_EQ(&h, &m.histogram("op_seconds", "How long.", "kind=\"a\"", {0.1, 1})) << "one cell per label set";
}

TEST(MetricsTest, ACellCountedInMicrosecondsRendersInSeconds) {
  Metrics m;
  m.counter("cpu_seconds_total", "CPU.", "", 1e-6).store(1'500'000);
  m.counter("whole_seconds_total", "Whole.", "", 1e-6).store(3'000'000);
  const std::string text = m.render();
  EXPECT_NE(text.find("cpu_seconds_total 1.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("whole_seconds_total 3\n"), std::string::npos) << text;
}

TEST(MetricsTest, ProcessMetricsAreTheProcesssOwn) {
  Metrics m;
  add_process_metrics(m, "test");
  const std::string text = m.render();
  EXPECT_NE(text.find("tern_build_info{version=\""), std::string::npos) << text;
  EXPECT_NE(text.find("daemon=\"test\"} 1\n"), std::string::npos) << text;
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                           "process_max_fds", "process_start_time_seconds", "process_virtual_memory_bytes"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name), std::string::npos) << name;
  }
  EXPECT_EQ(text.find("process_resident_memory_bytes 0\n"), std::string::npos) << "read from /proc/self: " << text;
}

}  // namespace
}  // namespace tern
