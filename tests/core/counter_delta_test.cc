#include "core/counter_delta.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"

namespace tern {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

const double kInf = std::numeric_limits<double>::infinity();

std::vector<PromSample> scrape(const std::string& text) {
  auto samples = parse_prom_text(text);
  EXPECT_TRUE(samples.ok()) << samples.status();
  return samples.ok() ? *samples : std::vector<PromSample>{};
}

PromSelector selector(const std::string& text) {
  auto s = parse_prom_selector(text);
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

PromSelector all_requests() { return selector("http_requests_total"); }
PromSelector errors() { return selector(R"(http_requests_total{code=~"5.."})"); }

TEST(CounterDeltaTest, TheFirstScrapeIsTheBaseline) {
  CounterDelta delta;
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 100\n")).ok());
  EXPECT_FALSE(delta.has_delta());
  EXPECT_TRUE(delta.increases().empty());
  EXPECT_EQ(delta.increase(all_requests()), 0);
  EXPECT_EQ(delta.tracked_series(), 1u);

  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 130\n")).ok());
  EXPECT_TRUE(delta.has_delta());
  EXPECT_EQ(delta.increase(all_requests()), 30);
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 130\n")).ok());
  EXPECT_TRUE(delta.has_delta());
  EXPECT_EQ(delta.increase(all_requests()), 0) << "no traffic is an interval with zero requests";
}

TEST(CounterDeltaTest, ASeriesThatAppearsLaterCountsFromZero) {
  CounterDelta delta;
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 100\n")).ok());
  // The first 5xx creates code="500": all three of its errors are new.
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 110\nhttp_requests_total{code=\"500\"} 3\n")).ok());
  EXPECT_EQ(delta.increase(errors()), 3);
  EXPECT_EQ(delta.increase(all_requests()), 13);
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 120\nhttp_requests_total{code=\"500\"} 4\n")).ok());
  EXPECT_EQ(delta.increase(errors()), 1);
  EXPECT_EQ(delta.increase(all_requests()), 11);
  EXPECT_EQ(delta.resets(), 0u);
}

TEST(CounterDeltaTest, ACounterThatWentDownWasReset) {
  CounterDelta delta;
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 1000\nhttp_requests_total{code=\"500\"} 9\n")).ok());
  // The process restarted between scrapes and has served 40 since.
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 38\nhttp_requests_total{code=\"500\"} 9\n")).ok());
  EXPECT_EQ(delta.increase(all_requests()), 38) << "the 200s reset to 0 and counted 38; the 500s did not move";
  EXPECT_EQ(delta.resets(), 1u);
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 50\nhttp_requests_total{code=\"500\"} 9\n")).ok());
  EXPECT_EQ(delta.increase(all_requests()), 12);
  EXPECT_EQ(delta.resets(), 0u) << "resets() is per interval";
}

TEST(CounterDeltaTest, DisappearingSeriesAreDroppedAndComeBackAsNew) {
  CounterDelta delta;
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 10\nhttp_requests_total{code=\"500\"} 5\n")).ok());
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 12\n")).ok());
  EXPECT_EQ(delta.tracked_series(), 1u) << "the 500 series is forgotten";
  EXPECT_EQ(delta.increase(errors()), 0);
  EXPECT_EQ(delta.increases().size(), 1u);
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 13\nhttp_requests_total{code=\"500\"} 2\n")).ok());
  EXPECT_EQ(delta.increase(errors()), 2) << "back after a gap (a restart): counted from zero";
}

TEST(CounterDeltaTest, RestartMakesTheNextScrapeABaselineAgain) {
  CounterDelta delta;
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 500\n")).ok());
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 520\n")).ok());
  EXPECT_EQ(delta.increase(all_requests()), 20);
  delta.restart();  // the agent restarted the slot itself
  EXPECT_FALSE(delta.has_delta());
  EXPECT_EQ(delta.increase(all_requests()), 0);
  EXPECT_EQ(delta.tracked_series(), 0u);
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 7\n")).ok());
  EXPECT_FALSE(delta.has_delta()) << "7 requests before the first scrape of the new process are not this interval's";
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 9\n")).ok());
  EXPECT_EQ(delta.increase(all_requests()), 2);
}

TEST(CounterDeltaTest, HistogramBucketIncreasesPerBound) {
  CounterDelta delta;
  const std::string head = "# TYPE d histogram\n";
  ASSERT_TRUE(delta.observe(scrape(head +
                                   "d_bucket{m=\"a\",le=\"0.1\"} 10\nd_bucket{m=\"a\",le=\"+Inf\"} 12\n"
                                   "d_bucket{m=\"b\",le=\"0.1\"} 1\nd_bucket{m=\"b\",le=\"+Inf\"} 1\n"))
                  .ok());
  ASSERT_TRUE(delta.observe(scrape(head +
                                   "d_bucket{m=\"a\",le=\"0.1\"} 15\nd_bucket{m=\"a\",le=\"+Inf\"} 20\n"
                                   "d_bucket{m=\"b\",le=\"0.1\"} 1\nd_bucket{m=\"b\",le=\"+Inf\"} 4\n"))
                  .ok());
  auto buckets = delta.increase_buckets("d");
  ASSERT_TRUE(buckets.ok()) << buckets.status();
  EXPECT_THAT(*buckets, ElementsAre(Pair(0.1, 5u), Pair(kInf, 11u)));
  auto only_b = delta.increase_buckets("d", selector("d{m=\"b\"}").matchers);
  ASSERT_TRUE(only_b.ok());
  EXPECT_THAT(*only_b, ElementsAre(Pair(0.1, 0u), Pair(kInf, 3u)));
}

TEST(CounterDeltaTest, ValuesThatAreNotCountsGiveNoData) {
  CounterDelta delta;
  ASSERT_TRUE(delta.observe(scrape("c{k=\"a\"} 1\nc{k=\"b\"} NaN\nc{k=\"c\"} 5\n")).ok());
  ASSERT_TRUE(delta.observe(scrape("c{k=\"a\"} 2\nc{k=\"b\"} 3\nc{k=\"c\"} +Inf\n")).ok());
  EXPECT_EQ(delta.increase(selector("c{k=\"a\"}")), 1);
  EXPECT_TRUE(std::isnan(delta.increase(selector("c{k=\"b\"}")))) << "the previous value was NaN";
  EXPECT_TRUE(std::isnan(delta.increase(selector("c{k=\"c\"}"))));
  EXPECT_TRUE(std::isnan(delta.increase(selector("c")))) << "a sum with no data in it is no data";
}

TEST(CounterDeltaTest, TracksOnlyWhatItIsToldAndRefusesPastItsCap) {
  CounterDelta::Options options;
  options.max_series = 2;
  options.track = {all_requests()};
  CounterDelta delta(options);
  const std::string noise = "go_goroutines 12\nprocess_open_fds 9\nprocess_cpu_seconds_total 1.5\n";
  ASSERT_TRUE(delta.observe(scrape(noise + "http_requests_total{code=\"200\"} 1\n")).ok());
  ASSERT_TRUE(delta.observe(scrape(noise + "http_requests_total{code=\"200\"} 2\nhttp_requests_total{code=\"500\"} 1\n"))
                  .ok());
  EXPECT_EQ(delta.tracked_series(), 2u) << "other metrics are not kept";
  EXPECT_EQ(delta.increases().size(), 2u);
  EXPECT_EQ(delta.increase(all_requests()), 2);

  absl::Status over = delta.observe(scrape(noise +
                                           "http_requests_total{code=\"200\"} 3\nhttp_requests_total{code=\"500\"} 1\n"
                                           "http_requests_total{code=\"503\"} 1\n"));
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), HasSubstr("more than 2 series"));
  EXPECT_FALSE(delta.has_delta()) << "a refused scrape is no interval";
  EXPECT_EQ(delta.tracked_series(), 0u);

  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 4\n")).ok());
  EXPECT_FALSE(delta.has_delta()) << "and the next scrape is a baseline, not counts across the gap";
  ASSERT_TRUE(delta.observe(scrape("http_requests_total{code=\"200\"} 6\n")).ok());
  EXPECT_EQ(delta.increase(all_requests()), 2);
}

TEST(CounterDeltaTest, ASeriesGivenTwiceIsRefused) {
  CounterDelta delta;
  PromSample s{"c", {{"k", "a"}}, 1};
  absl::Status twice = delta.observe({s, s});
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(twice.message(), HasSubstr("c{k=\"a\"} twice"));
}

}  // namespace
}  // namespace tern
