// The agent's counts of a canary split, from scripted /metrics answers.
#include "agent/canary_sampler.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/service_spec.h"

namespace tern {
namespace {

constexpr uint16_t kCanary = 9002, kBaseline = 9001;

tern::v1::ServiceSpec spec_with_metrics() {
  auto spec = parse_service_spec(R"(
name: web
ports: [{name: http, public: 8080, blue: 9001, green: 9002}]
argv: [app]
analysis:
  metrics:
    - {name: errors, kind: ratio, bad: 'http_requests_total{code=~"5.."}', total: http_requests_total}
    - {name: latency, kind: latency, histogram: 'http_request_duration_seconds{route="/"}'}
)", "web.yaml");
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

// Exposition text for an app that has served `ok` 200s and `errors` 500s,
// `slow` of all of them in 0.01-0.1s and `slower` above 0.1s.
std::string metrics(int ok, int errors, int slow, int slower = 0) {
  std::string out = "# TYPE http_requests_total counter\n";
  if (ok > 0) absl::StrAppend(&out, "http_requests_total{code=\"200\"} ", ok, "\n");
  if (errors > 0) absl::StrAppend(&out, "http_requests_total{code=\"500\"} ", errors, "\n");
  const int all = ok + errors;
  absl::StrAppend(&out, "# TYPE http_request_duration_seconds histogram\n",
                  "http_request_duration_seconds_bucket{route=\"/\",le=\"0.01\"} ", all - slow - slower, "\n",
                  "http_request_duration_seconds_bucket{route=\"/\",le=\"0.1\"} ", all - slower, "\n",
                  "http_request_duration_seconds_bucket{route=\"/\",le=\"1\"} ", all, "\n",
                  "http_request_duration_seconds_bucket{route=\"/\",le=\"+Inf\"} ", all, "\n",
                  "http_request_duration_seconds_count{route=\"/\"} ", all, "\n");
  return out;
}

class CanarySamplerTest : public ::testing::Test {
 protected:
  CanarySampler make() {
    auto s = CanarySampler::create(spec_with_metrics(), kCanary, kBaseline,
                                   [this](uint16_t port, const std::string& path) -> absl::StatusOr<std::string> {
                                     EXPECT_EQ(path, "/metrics");
                                     auto it = answers_.find(port);
                                     if (it == answers_.end()) return absl::UnavailableError("connection refused");
                                     return it->second;
                                   });
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }
  std::map<uint16_t, std::string> answers_;
};

TEST_F(CanarySamplerTest, TheFirstScrapeIsTheBaselineThenCountsPerIntervalForBothSides) {
  auto sampler = make();
  // Blue has a long history: 10,000 requests, 2% of them slower than 0.01s
  // (its p99 is in the bucket up to 0.1s). Green is new and has no 500
  // series yet.
  answers_[kBaseline] = metrics(10'000, 0, 200);
  answers_[kCanary] = metrics(10, 0, 0);
  EXPECT_FALSE(sampler.sample()) << "a baseline has no counts";
  answers_[kBaseline] = metrics(10'900, 0, 218, 9);
  answers_[kCanary] = metrics(100, 5, 0, 20);  // the first 500s create their series
  auto counts = sampler.sample();
  ASSERT_TRUE(counts);
  ASSERT_EQ(counts->size(), 2u);
  const auto& errors = (*counts)[0];
  EXPECT_EQ(errors.name(), "errors");
  EXPECT_TRUE(errors.no_data().empty()) << errors.no_data();
  EXPECT_EQ(errors.canary_bad(), 5u) << "a series first seen now counts from zero";
  EXPECT_EQ(errors.canary_total(), 95u);
  EXPECT_EQ(errors.baseline_bad(), 0u);
  EXPECT_EQ(errors.baseline_total(), 900u);
  const auto& latency = (*counts)[1];
  EXPECT_TRUE(latency.no_data().empty()) << latency.no_data();
  EXPECT_DOUBLE_EQ(latency.threshold(), 0.1) << "the shared bound at blue's p99";
  EXPECT_EQ(latency.canary_bad(), 20u);
  EXPECT_EQ(latency.canary_total(), 95u);
  EXPECT_EQ(latency.baseline_bad(), 9u);
  EXPECT_EQ(latency.baseline_total(), 900u);
}

TEST_F(CanarySamplerTest, ARestartedCanaryIsAResetNotANegativeCount) {
  auto sampler = make();
  answers_[kBaseline] = metrics(1000, 0, 0);
  answers_[kCanary] = metrics(500, 10, 0);
  EXPECT_FALSE(sampler.sample());
  answers_[kBaseline] = metrics(1100, 0, 0);
  answers_[kCanary] = metrics(40, 2, 0);  // the process restarted: counters from 0
  auto counts = sampler.sample();
  ASSERT_TRUE(counts);
  EXPECT_EQ((*counts)[0].canary_bad(), 2u);
  EXPECT_EQ((*counts)[0].canary_total(), 42u);
}

TEST_F(CanarySamplerTest, AFailedScrapeOnEitherSideIsNoDataAndBothSidesStartOver) {
  auto sampler = make();
  answers_[kBaseline] = metrics(1000, 0, 0);
  answers_[kCanary] = metrics(100, 0, 0);
  EXPECT_FALSE(sampler.sample());
  answers_.erase(kCanary);
  auto failed = sampler.sample();
  ASSERT_TRUE(failed);
  for (const auto& c : *failed) {
    EXPECT_NE(c.no_data().find("canary: connection refused"), std::string::npos) << c.no_data();
    EXPECT_EQ(c.canary_total() + c.baseline_total(), 0u) << "no data is never zero counts";
  }
  // Back: a new baseline first, so the two sides cover the same interval.
  answers_[kCanary] = metrics(300, 0, 0);
  answers_[kBaseline] = metrics(3000, 0, 0);
  EXPECT_FALSE(sampler.sample());
  answers_[kCanary] = metrics(310, 0, 0);
  answers_[kBaseline] = metrics(3090, 0, 0);
  auto counts = sampler.sample();
  ASSERT_TRUE(counts);
  EXPECT_EQ((*counts)[0].canary_total(), 10u);
  EXPECT_EQ((*counts)[0].baseline_total(), 90u);
  answers_[kCanary] = "this is not prometheus text {";
  auto garbage = sampler.sample();
  ASSERT_TRUE(garbage);
  EXPECT_NE((*garbage)[0].no_data().find("canary: /metrics on port 9002"), std::string::npos)
      << (*garbage)[0].no_data();
}

TEST_F(CanarySamplerTest, CountsThatCouldNotBeSentAreAddedToTheNext) {
  std::vector<tern::v1::MetricCounts> pending;
  tern::v1::MetricCounts a, b, none;
  a.set_name("errors");
  a.set_canary_bad(1);
  a.set_canary_total(10);
  a.set_baseline_total(90);
  b = a;
  none.set_name("errors");
  none.set_no_data("canary: refused");
  accumulate_counts(pending, {a});
  accumulate_counts(pending, {none});
  accumulate_counts(pending, {b});
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].canary_bad(), 2u);
  EXPECT_EQ(pending[0].canary_total(), 20u);
  EXPECT_EQ(pending[0].baseline_total(), 180u);
  EXPECT_TRUE(pending[0].no_data().empty());
  std::vector<tern::v1::MetricCounts> only_none;
  accumulate_counts(only_none, {none});
  accumulate_counts(only_none, {a});
  EXPECT_TRUE(only_none[0].no_data().empty()) << "data replaces no data";
  EXPECT_EQ(only_none[0].canary_total(), 10u);
}

TEST(CanarySamplerSpecTest, ASelectorTheSpecCheckWouldRefuseIsRefusedHereToo) {
  auto spec = spec_with_metrics();
  spec.mutable_analysis()->mutable_metrics(0)->set_bad("http_requests_total{code=~\"(\"}");
  auto s = CanarySampler::create(spec, kCanary, kBaseline, nullptr);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.status().message()).find("errors.bad"), std::string::npos) << s.status();
}

}  // namespace
}  // namespace tern
