// PrometheusSource against a real Prometheus (Debian's `prometheus`, started
// here on a free port with its own config and storage in a temp dir; the
// tests skip when it is not installed): two real demo apps, one failing a
// known share of requests, scraped every second; the counts Prometheus gives
// back must be the requests the test sent.
//
// The bearer token is checked in the unit tests against a fake server:
// Prometheus' own --web.config.file checks basic auth only, never bearer
// tokens. TLS is checked here, with Prometheus serving https.

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "coordinator/prometheus_source.h"
#include "tests/integration/harness.h"
#include "tests/support/http_server.h"

namespace tern::testing {
namespace {

using ::testing::HasSubstr;

// The prometheus binary: $TERN_PROMETHEUS_BIN, else the first in PATH; empty
// when there is none.
std::string prometheus_bin() {
  if (const char* bin = std::getenv("TERN_PROMETHEUS_BIN"); bin != nullptr && *bin != 0) return bin;
  std::stringstream path(std::getenv("PATH") != nullptr ? std::getenv("PATH") : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(path, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/prometheus";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// A port nothing listens on: bound, read back, closed.
uint16_t closed_port() {
  uint16_t port = 0;
  {
    FakeHttpServer gone([](const std::string&) { return std::string(); });
    port = gone.port();
  }
  return port;
}

PrometheusSourceConfig at(const std::string& address, const std::string& ca_file = "") {
  PrometheusSourceConfig c;
  c.address = address;
  c.ca_file = ca_file;
  c.timeout = Millis(2000);
  return c;
}

class RealPrometheusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bin_ = prometheus_bin();
    if (bin_.empty()) {
      GTEST_SKIP() << "prometheus is not installed (apt-get install prometheus, as scripts/setup.sh does; or set "
                      "TERN_PROMETHEUS_BIN)";
    }
  }

  // A demo app on a free port; its port.
  std::string start_app(const std::string& name, std::vector<std::string> args) {
    args.insert(args.begin(), {"--port", "0"});
    apps_.push_back(std::make_unique<Process>(TERN_DEMO_APP_BIN, args, dir_.file(name + ".log")));
    Process& app = *apps_.back();
    std::string port;
    EXPECT_TRUE(eventually([&] {
      const std::string log = app.log();
      const auto k = log.find("listening on port ");
      if (k == std::string::npos) return false;
      port = log.substr(k + 18, log.find('\n', k) - k - 18);
      return true;
    })) << app.log();
    return port;
  }

  // Prometheus on 127.0.0.1:0 with `config` (and `web_config`, when given,
  // for TLS); "127.0.0.1:port" from its log.
  std::string start_prometheus(const std::string& config, const std::string& web_config = "") {
    std::vector<std::string> args{"--config.file=" + dir_.write("prometheus.yml", config),
                                  "--storage.tsdb.path=" + dir_.file("data"), "--web.listen-address=127.0.0.1:0"};
    if (!web_config.empty()) args.push_back("--web.config.file=" + dir_.write("web.yml", web_config));
    prometheus_ = std::make_unique<Process>(bin_, args, dir_.file("prometheus.log"));
    std::string address;
    EXPECT_TRUE(eventually([&] {
      const std::string log = prometheus_->log();
      const std::string mark = "msg=\"Listening on\" address=";
      const auto k = log.find(mark);
      if (k == std::string::npos) return false;
      address = log.substr(k + mark.size(), log.find_first_of(" \n", k + mark.size()) - k - mark.size());
      return true;
    })) << prometheus_->log();
    return address;
  }

  PrometheusSource source(const PrometheusSourceConfig& config) {
    auto s = PrometheusSource::create(config);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }

  static void send(const std::string& port, int requests) {
    for (int i = 0; i < requests; ++i) {
      ASSERT_NE(http_get("127.0.0.1:" + port, "/").find("HTTP/1.1"), std::string::npos) << "request " << i;
    }
  }

  TempDir dir_;  // first: outlives the processes that write into it
  std::string bin_;
  std::vector<std::unique_ptr<Process>> apps_;
  std::unique_ptr<Process> prometheus_;
};

std::map<std::string, std::string> vars(const std::string& port, const std::string& slot) {
  return {{"host", "h1"},         {"address", "127.0.0.1"}, {"port", port},
          {"slot", slot},         {"interval", "1m"},        {"service", "web"}};
}

// The counters as they stand: exact.
const std::string kRawBad =
    R"(sum(http_requests_total{instance="{address}:{port}",code=~"5.."}))"
    R"( or 0 * sum(http_requests_total{instance="{address}:{port}"}))";
const std::string kRawTotal = R"(sum(http_requests_total{instance="{address}:{port}"}))";
// What a team would write: the change over the interval.
const std::string kIncreaseBad =
    R"(sum(increase(http_requests_total{instance="{address}:{port}",code=~"5.."}[{interval}])))"
    R"( or 0 * sum(increase(http_requests_total{instance="{address}:{port}"}[{interval}])))";
const std::string kIncreaseTotal = R"(sum(increase(http_requests_total{instance="{address}:{port}"}[{interval}])))";

TEST_F(RealPrometheusTest, CountsAreTheRequestsTheAppsServed) {
  // The canary fails every 4th request to / (deterministic: the 4th, 8th,
  // ...); the baseline none.
  const std::string canary = start_app("canary", {"--version", "v2", "--error-rate", "0.25"});
  const std::string baseline = start_app("baseline", {"--version", "v1"});
  // Before Prometheus' first scrape, so every series it will ever see
  // already exists (increase() ignores a series' first value): 3 x 200 and
  // 1 x 500 on the canary, 4 x 200 on the baseline.
  send(canary, 4);
  send(baseline, 4);
  const std::string prom = start_prometheus(
      "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
      "scrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: ['127.0.0.1:" +
      canary + "', '127.0.0.1:" + baseline + "']\n");
  ASSERT_FALSE(prom.empty());
  const PrometheusSource s = source(at("http://" + prom));
  const auto canary_vars = vars(canary, "canary");
  const auto baseline_vars = vars(baseline, "baseline");

  auto raw = [&] {
    auto c = s.counts("errors", kRawBad, kRawTotal, canary_vars, baseline_vars);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : tern::v1::MetricCounts();
  };
  // The four queries are four evaluations: a scrape that lands between
  // them shows in the later ones only, so wait for all four numbers at
  // once. Counters never pass their final values, so this is the exact check.
  tern::v1::MetricCounts c;
  ASSERT_TRUE(eventually([&] {
    c = raw();
    return c.no_data().empty() && c.canary_bad() == 1 && c.canary_total() == 4 && c.baseline_bad() == 0 &&
           c.baseline_total() == 4;
  })) << c.ShortDebugString() << "\n" << prometheus_->log();
  // (baseline_bad: no 5xx series at all, so zero through `or 0 * total`, not no data.)

  send(canary, 100);  // requests 5..104: the 8th, ..., 104th fail: 25 more
  send(baseline, 100);
  ASSERT_TRUE(eventually([&] {
    c = raw();
    return c.canary_bad() == 26 && c.canary_total() == 104 && c.baseline_bad() == 0 && c.baseline_total() == 104;
  })) << c.ShortDebugString();
  std::printf("raw counters: canary %llu/%llu, baseline %llu/%llu\n",
              static_cast<unsigned long long>(c.canary_bad()), static_cast<unsigned long long>(c.canary_total()),
              static_cast<unsigned long long>(c.baseline_bad()), static_cast<unsigned long long>(c.baseline_total()));

  // increase() over a 1m window (longer than this test has run, so it holds
  // every sample of every series) is the change from each series' first
  // sample to its last, 100 requests of which 25 failed, stretched towards
  // the window's ends: by at most 1.1 average scrape intervals on each side
  // (Prometheus' extrapolatedRate), so by a factor in [1, 1 + 2.2 / (n - 1)]
  // with n samples per series. Wait for n >= 8 so the range is narrow.
  double samples = 0;
  ASSERT_TRUE(eventually([&] {
    auto n = s.query(R"(min(count_over_time(http_requests_total{job="demo"}[1m])))");
    samples = n.ok() ? *n : 0;
    return samples >= 8;
  })) << samples;
  c = *s.counts("errors", kIncreaseBad, kIncreaseTotal, canary_vars, baseline_vars);
  // The samples only grow until counts() evaluates, which narrows the range.
  const double stretch = 1 + 2.2 / (samples - 1);
  std::printf("increase over 1m (%g+ samples a series, stretch <= %.3f): canary %llu/%llu, baseline %llu/%llu\n",
              samples, stretch, static_cast<unsigned long long>(c.canary_bad()),
              static_cast<unsigned long long>(c.canary_total()), static_cast<unsigned long long>(c.baseline_bad()),
              static_cast<unsigned long long>(c.baseline_total()));
  ASSERT_EQ(c.no_data(), "");
  EXPECT_GE(c.canary_bad(), 25u);
  EXPECT_LE(c.canary_bad(), static_cast<uint64_t>(std::lround(25 * stretch)));
  EXPECT_GE(c.canary_total(), 100u);
  EXPECT_LE(c.canary_total(), static_cast<uint64_t>(std::lround(100 * stretch)));
  EXPECT_EQ(c.baseline_bad(), 0u);
  EXPECT_GE(c.baseline_total(), 100u);
  EXPECT_LE(c.baseline_total(), static_cast<uint64_t>(std::lround(100 * stretch)));

  // A selector that matches nothing is no data, never zero.
  auto none = s.counts("errors", R"(sum(http_requests_total{instance="{address}:{port}",code="404"}))", kRawTotal,
                       canary_vars, baseline_vars);
  ASSERT_TRUE(none.ok()) << none.status();
  std::printf("no series: %s\n", none->no_data().c_str());
  EXPECT_THAT(none->no_data(), HasSubstr("canary bad: Prometheus http://" + prom));
  EXPECT_THAT(none->no_data(), HasSubstr("no data: no series matched (an empty vector)"));
  EXPECT_EQ(none->canary_bad() + none->canary_total() + none->baseline_bad() + none->baseline_total(), 0u);

  // Real answers of every shape.
  EXPECT_EQ(*s.query("1 + 2"), 3) << "a scalar";
  EXPECT_EQ(s.query("0 / 0").status().code(), absl::StatusCode::kNotFound) << "NaN";
  EXPECT_EQ(s.query("vector(1) / 0").status().code(), absl::StatusCode::kNotFound) << "+Inf";
  auto bad = s.query("sum(");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  EXPECT_THAT(bad.status().message(), HasSubstr("Prometheus says bad_data: "));
  std::printf("a broken query: %s\n", std::string(bad.status().message()).c_str());
  EXPECT_EQ(s.query("http_requests_total[1m]").status().code(), absl::StatusCode::kInvalidArgument)
      << "a range vector";

  // Nothing listening, or not Prometheus' API there: no data with the reason.
  const std::string gone = "http://127.0.0.1:" + std::to_string(closed_port());
  auto refused = source(at(gone)).counts("errors", kRawBad, kRawTotal, canary_vars, baseline_vars);
  ASSERT_TRUE(refused.ok()) << refused.status();
  std::printf("nothing listening: %s\n", refused->no_data().c_str());
  EXPECT_THAT(refused->no_data(), HasSubstr("canary bad: Prometheus " + gone + ": "));
  EXPECT_THAT(refused->no_data(), HasSubstr("Failed to connect"));
  auto wrong_path = source(at("http://" + prom + "/nope")).counts("errors", kRawBad, kRawTotal, canary_vars, baseline_vars);
  ASSERT_TRUE(wrong_path.ok());
  std::printf("wrong path: %s\n", wrong_path->no_data().c_str());
  EXPECT_THAT(wrong_path->no_data(), HasSubstr("HTTP 404"));
}

TEST_F(RealPrometheusTest, HttpsIsVerifiedAgainstTheGivenCa) {
  auto pki = [&](const std::vector<std::string>& args) {
    auto r = run(TERN_PKI_SCRIPT, args);
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  };
  const std::string ca_dir = dir_.file("pki");
  const std::string rogue_dir = dir_.file("rogue");
  pki({"init", ca_dir});
  pki({"coordinator", ca_dir, "prometheus"});  // a server certificate for 127.0.0.1 and localhost
  pki({"init", rogue_dir});
  const std::string prom = start_prometheus("global:\n  scrape_interval: 1s\nscrape_configs: []\n",
                                            "tls_server_config:\n  cert_file: " + ca_dir + "/coordinator.crt\n"
                                            "  key_file: " + ca_dir + "/coordinator.key\n");
  ASSERT_FALSE(prom.empty());

  const PrometheusSource s = source(at("https://" + prom, ca_dir + "/ca.crt"));
  absl::StatusOr<double> v;
  ASSERT_TRUE(eventually([&] {
    v = s.query("vector(7)");
    return v.ok();
  })) << v.status() << "\n" << prometheus_->log();
  EXPECT_EQ(*v, 7);

  auto system_cas = source(at("https://" + prom)).query("vector(7)");
  EXPECT_EQ(system_cas.status().code(), absl::StatusCode::kFailedPrecondition) << system_cas.status();
  EXPECT_THAT(system_cas.status().message(), HasSubstr("set ca_file"));
  auto rogue = source(at("https://" + prom, rogue_dir + "/ca.crt")).query("vector(7)");
  EXPECT_EQ(rogue.status().code(), absl::StatusCode::kFailedPrecondition) << rogue.status();
  std::printf("another CA: %s\n", std::string(rogue.status().message()).c_str());
  auto plain = source(at("http://" + prom)).query("vector(7)");
  EXPECT_FALSE(plain.ok()) << "plain HTTP to an https server";
}

}  // namespace
}  // namespace tern::testing
