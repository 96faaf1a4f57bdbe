#include "core/prom_text.h"

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

// What a Go service instrumented with client_golang serves, cut down: the
// shapes an agent meets in practice.
constexpr char kGoClientText[] = R"(# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.3302e-05
go_gc_duration_seconds{quantile="0.5"} 4.1e-05
go_gc_duration_seconds{quantile="1"} 0.000212345
go_gc_duration_seconds_sum 0.012345678
go_gc_duration_seconds_count 187
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
# HELP http_requests_total Requests served, by code and method.
# TYPE http_requests_total counter
http_requests_total{code="200",method="get"} 10234
http_requests_total{method="post",code="200"} 312
http_requests_total{code="500",method="get"} 7
http_requests_total{code="503",method="get"} 2
http_requests_total{code="404",method="get"} 55
# HELP http_request_duration_seconds Request latency.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{method="get",le="0.005"} 100
http_request_duration_seconds_bucket{method="get",le="0.05"} 900
http_request_duration_seconds_bucket{method="get",le="0.5"} 990
http_request_duration_seconds_bucket{method="get",le="+Inf"} 1000
http_request_duration_seconds_sum{method="get"} 12.5
http_request_duration_seconds_count{method="get"} 1000
http_request_duration_seconds_bucket{method="post",le="0.005"} 1
http_request_duration_seconds_bucket{method="post",le="0.05"} 5
http_request_duration_seconds_bucket{method="post",le="0.5"} 9
http_request_duration_seconds_bucket{method="post",le="+Inf"} 10
http_request_duration_seconds_sum{method="post"} 1.25
http_request_duration_seconds_count{method="post"} 10
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.71234567891e+09
)";

PromSelector selector(const std::string& text) {
  auto s = parse_prom_selector(text);
  EXPECT_TRUE(s.ok()) << text << ": " << s.status();
  return s.ok() ? *s : PromSelector{};
}

std::string parse_error(const std::string& text) {
  auto parsed = parse_prom_text(text);
  EXPECT_FALSE(parsed.ok()) << text;
  return parsed.ok() ? "" : std::string(parsed.status().message());
}

TEST(PromTextTest, ReadsAGoClientExposition) {
  PromFamilyTypes types;
  auto samples = parse_prom_text(kGoClientText, &types);
  ASSERT_TRUE(samples.ok()) << samples.status();
  EXPECT_EQ(samples->size(), 24u);
  EXPECT_EQ(samples->front().name, "go_gc_duration_seconds");
  EXPECT_THAT(samples->front().labels, ElementsAre(Pair("quantile", "0")));
  EXPECT_DOUBLE_EQ(samples->front().value, 2.3302e-05);
  EXPECT_DOUBLE_EQ(samples->back().value, 1.71234567891e+09);
  // Labels come sorted by name, whatever order the app wrote them in.
  const PromSample& post = (*samples)[7];
  EXPECT_EQ(post.name, "http_requests_total");
  EXPECT_THAT(post.labels, ElementsAre(Pair("code", "200"), Pair("method", "post")));
  ASSERT_NE(post.label("method"), nullptr);
  EXPECT_EQ(*post.label("method"), "post");
  EXPECT_EQ(post.label("le"), nullptr);

  EXPECT_THAT(types, ElementsAre(Pair("go_gc_duration_seconds", PromType::kSummary),
                                 Pair("go_goroutines", PromType::kGauge),
                                 Pair("http_request_duration_seconds", PromType::kHistogram),
                                 Pair("http_requests_total", PromType::kCounter),
                                 Pair("process_start_time_seconds", PromType::kGauge)));
  EXPECT_EQ(prom_type_name(types["http_requests_total"]), "counter");
}

TEST(PromTextTest, ValuesInEveryFormTheFormatAllows) {
  auto samples = parse_prom_text(
      "a +Inf\nb -Inf\nc NaN\nd 1e3\ne -2.5E-3\nf .5\ng 7.\nh +12\ni inf\nj 0\nk 1e-400\nl 3 1712345678901\n"
      "m -1 -5\n");
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 13u);
  const auto& s = *samples;
  EXPECT_EQ(s[0].value, std::numeric_limits<double>::infinity());
  EXPECT_EQ(s[1].value, -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(s[2].value));
  EXPECT_EQ(s[3].value, 1000);
  EXPECT_EQ(s[4].value, -0.0025);
  EXPECT_EQ(s[5].value, 0.5);
  EXPECT_EQ(s[6].value, 7);
  EXPECT_EQ(s[7].value, 12);
  EXPECT_EQ(s[8].value, std::numeric_limits<double>::infinity());
  EXPECT_EQ(s[9].value, 0);
  EXPECT_EQ(s[10].value, 0) << "below the smallest double is 0, as Go reads it";
  EXPECT_EQ(s[11].value, 3) << "a timestamp is read and dropped";
  EXPECT_EQ(s[12].value, -1);
}

TEST(PromTextTest, LabelValueEscapesAndOddButValidLayout) {
  auto samples = parse_prom_text(
      "\n"
      "   \t\n"
      "# a comment that is neither HELP nor TYPE\n"
      "#\n"
      "msg{path=\"C:\\\\dir\",quote=\"say \\\"hi\\\"\",text=\"two\\nlines\",utf=\"caf\xc3\xa9\"} 1   \t\n"
      "  spaced { a = \"1\" , b=\"\" , } 2\r\n"
      "empty{} 3\n"
      "last 4");  // no newline at the end
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 4u);
  EXPECT_THAT((*samples)[0].labels, ElementsAre(Pair("path", "C:\\dir"), Pair("quote", "say \"hi\""),
                                                Pair("text", "two\nlines"), Pair("utf", "caf\xc3\xa9")));
  EXPECT_THAT((*samples)[1].labels, ElementsAre(Pair("a", "1"), Pair("b", "")));
  EXPECT_EQ((*samples)[1].value, 2);
  EXPECT_TRUE((*samples)[2].labels.empty());
  EXPECT_EQ((*samples)[3].value, 4);
}

TEST(PromTextTest, FormatReadsBackToTheSameSamples) {
  auto samples = parse_prom_text(std::string(kGoClientText) +
                                 "esc{v=\"a\\\\b\\\"c\\nd\"} NaN\nneg -0.1\ntiny 5e-324\nbig 1.7976931348623157e308\n");
  ASSERT_TRUE(samples.ok()) << samples.status();
  std::string text;
  for (const PromSample& s : *samples) absl::StrAppend(&text, format_prom_sample(s), "\n");
  auto again = parse_prom_text(text);
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << text;
  ASSERT_EQ(again->size(), samples->size());
  for (std::size_t i = 0; i < samples->size(); ++i) {
    const PromSample& a = (*samples)[i];
    const PromSample& b = (*again)[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.labels, b.labels);
    EXPECT_TRUE(a.value == b.value || (std::isnan(a.value) && std::isnan(b.value))) << format_prom_sample(a);
  }
  EXPECT_EQ(format_prom_series((*samples)[7]), "http_requests_total{code=\"200\",method=\"post\"}");
  EXPECT_EQ(format_prom_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_prom_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_prom_value(0.005), "0.005");
}

TEST(PromTextTest, ErrorsNameTheLineAndWhatIsWrong) {
  struct Case {
    std::string text;
    std::string line;
    std::string what;
  };
  const Case cases[] = {
      {"ok 1\n9bad 1\n", "line 2:", "expected a metric name"},
      {"ok 1\n\nx{a=\"1\" 2\n", "line 3:", "expected ',' or '}'"},
      {"x{a=1} 2\n", "line 1:", "must be in double quotes"},
      {"x{a=\"1} 2\n", "line 1:", "no closing quote"},
      {"x{a=\"\\t\"} 2\n", "line 1:", "unknown escape"},
      {"x{a=\"\xff\"} 2\n", "line 1:", "not UTF-8"},
      {"x{a=\"1\",a=\"2\"} 2\n", "line 1:", "label \"a\" appears twice"},
      {"x{__name__=\"y\"} 2\n", "line 1:", "reserved"},
      {"x{9=\"1\"} 2\n", "line 1:", "expected a label name"},
      {"x\n", "line 1:", "has no value"},
      {"x one\n", "line 1:", "\"one\" is not a value"},
      {"x 0x1A\n", "line 1:", "is not a value"},
      {"x 1e999\n", "line 1:", "out of range"},
      {"x 1 12.5\n", "line 1:", "is not a timestamp"},
      {"x 1 99999999999999999999\n", "line 1:", "is not a timestamp"},
      {"x 1 2 3\n", "line 1:", "after the timestamp"},
      {"a 1\nx{a=\"1\"} 2\nx{a=\"1\"} 3\n", "line 3:", "already appeared on line 2"},
      {"# TYPE x countr\n", "line 1:", "\"countr\" is not a metric type"},
      {"# TYPE x\n", "line 1:", "is not a metric type"},
      {"# TYPE x counter extra\n", "line 1:", "after the type"},
      {"# TYPE\n", "line 1:", "needs a metric name"},
      {"# HELP 1x text\n", "line 1:", "needs a metric name"},
      {"# HELP x a\n# HELP x b\n", "line 2:", "a second # HELP line for x"},
      {"# TYPE x gauge\n# TYPE x counter\n", "line 2:", "a second # TYPE line for x"},
      {"x 1\n# TYPE x gauge\n", "line 2:", "comes after its samples"},
      {"h_bucket{le=\"1\"} 1\n# TYPE h histogram\n", "line 2:", "comes after its samples"},
      {"# TYPE h histogram\nh_bucket 1\n", "line 2:", "without an \"le\" label"},
      {"# TYPE h histogram\nh_bucket{le=\"fast\"} 1\n", "line 2:", "is not a bound"},
  };
  for (const Case& c : cases) {
    std::string message = parse_error(c.text);
    EXPECT_THAT(message, HasSubstr(c.line)) << c.text;
    EXPECT_THAT(message, HasSubstr(c.what)) << c.text;
  }
}

TEST(PromTextTest, CapsAreRefusedWithAClearError) {
  std::string big(kMaxPromTextBytes + 1, '\n');
  auto too_big = parse_prom_text(big);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(too_big.status().message(), HasSubstr("over the limit of 8388608"));

  std::string many;
  for (std::size_t i = 0; i <= kMaxPromSamples; ++i) absl::StrAppend(&many, "s{i=\"", i, "\"} 1\n");
  ASSERT_LE(many.size(), kMaxPromTextBytes);
  auto too_many = parse_prom_text(many);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(too_many.status().message(), HasSubstr(absl::StrCat("line ", kMaxPromSamples + 1, ": more than 100000 samples")));

  auto labels = [](std::size_t n) {
    std::string line = "wide{";
    for (std::size_t i = 0; i < n; ++i) absl::StrAppend(&line, i ? "," : "", "l", i, "=\"v\"");
    return line + "} 1\n";
  };
  EXPECT_TRUE(parse_prom_text(labels(kMaxPromLabels)).ok());
  auto too_wide = parse_prom_text(labels(kMaxPromLabels + 1));
  ASSERT_FALSE(too_wide.ok());
  EXPECT_EQ(too_wide.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(too_wide.status().message(), HasSubstr("line 1: more than 64 labels"));
}

TEST(PromSelectorTest, AllFourMatchersWithPrometheusMeaning) {
  auto samples = parse_prom_text(kGoClientText);
  ASSERT_TRUE(samples.ok());
  EXPECT_EQ(sum(selector("http_requests_total"), *samples), 10234 + 312 + 7 + 2 + 55);
  EXPECT_EQ(sum(selector("http_requests_total{}"), *samples), 10610);
  EXPECT_EQ(sum(selector(R"(http_requests_total{code=~"5.."})"), *samples), 9);
  EXPECT_EQ(sum(selector(R"(http_requests_total{code="200", method="get"})"), *samples), 10234);
  EXPECT_EQ(sum(selector(R"(http_requests_total{code!="200"})"), *samples), 64);
  EXPECT_EQ(sum(selector(R"(http_requests_total{code!~"2..|404"})"), *samples), 9);
  EXPECT_EQ(sum(selector(R"(http_requests_total{code=~"5..",code!="503"})"), *samples), 7) << "matchers combine";
  EXPECT_EQ(sum(selector(R"(http_requests_total{code="418"})"), *samples), 0) << "nothing matches: 0";
  EXPECT_EQ(sum(selector("go_goroutines"), *samples), 42);
}

TEST(PromSelectorTest, RegexesAreAnchoredAndMissingLabelsAreEmpty) {
  PromSample s500{"http_requests_total", {{"code", "500"}}, 1};
  PromSample bare{"http_requests_total", {}, 1};
  EXPECT_FALSE(matches(selector(R"(http_requests_total{code=~"5"})"), s500)) << "fully anchored";
  EXPECT_FALSE(matches(selector(R"(http_requests_total{code=~"50"})"), s500));
  EXPECT_FALSE(matches(selector(R"(http_requests_total{code=~"00"})"), s500));
  EXPECT_TRUE(matches(selector(R"(http_requests_total{code=~"5.*"})"), s500));
  EXPECT_TRUE(matches(selector(R"(http_requests_total{code=~"4..|5.."})"), s500)) << "the alternation is anchored whole";
  EXPECT_TRUE(matches(selector(R"(http_requests_total{code!~"5"})"), s500));
  EXPECT_FALSE(matches(selector(R"(other{code="500"})"), s500)) << "the name must match";

  EXPECT_TRUE(matches(selector(R"(http_requests_total{x!="y"})"), bare)) << "absent is \"\", which is not y";
  EXPECT_TRUE(matches(selector(R"(http_requests_total{x=""})"), bare));
  EXPECT_FALSE(matches(selector(R"(http_requests_total{code=~"5.."})"), bare));
  EXPECT_TRUE(matches(selector(R"(http_requests_total{code=~".*"})"), bare));
  EXPECT_TRUE(matches(selector(R"(http_requests_total{code!~"5.."})"), bare));

  PromSample multiline{"m", {{"v", "a\nb"}}, 1};
  EXPECT_TRUE(matches(selector(R"(m{v=~"a.b"})"), multiline)) << "'.' matches a newline, as in Prometheus";
}

TEST(PromSelectorTest, ParsesQuotesEscapesAndSpacesAndPrintsCanonically) {
  PromSelector s = selector(" http_requests_total { code =~ '5\\\\d\\\\d' ,path=\"/a\\\"b\", } ");
  EXPECT_EQ(s.name, "http_requests_total");
  ASSERT_EQ(s.matchers.size(), 2u);
  EXPECT_EQ(s.matchers[0].label(), "code");
  EXPECT_EQ(s.matchers[0].op(), PromMatchOp::kRegexMatch);
  EXPECT_EQ(s.matchers[0].value(), "5\\d\\d");
  EXPECT_EQ(s.matchers[1].value(), "/a\"b");
  EXPECT_EQ(s.to_string(), R"(http_requests_total{code=~"5\\d\\d", path="/a\"b"})");
  auto again = parse_prom_selector(s.to_string());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->to_string(), s.to_string());
  EXPECT_TRUE(matches(s, PromSample{"http_requests_total", {{"code", "503"}, {"path", "/a\"b"}}, 1}));
  EXPECT_EQ(selector("up").to_string(), "up");
}

TEST(PromSelectorTest, RefusesWhatItCannotRead) {
  for (const char* bad : {"", "{code=\"500\"}", "5xx", "x{code}", "x{code=500}", "x{code=\"500\"", "x{code==\"5\"}",
                          "x{code=~\"(\"}", "x{code=\"\\d\"}", "x{1a=\"b\"}", "x{a=\"b\"} extra", "x y",
                          "x{a=\"b\" c=\"d\"}"}) {
    auto s = parse_prom_selector(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr("invalid metric selector")) << bad;
  }
  EXPECT_THAT(parse_prom_selector("x{code=~\"(\"}").status().message(), HasSubstr("missing )"));
  EXPECT_FALSE(parse_prom_selector(std::string(kMaxPromSelectorBytes + 1, 'x')).ok());
  std::string many = "x{";
  for (std::size_t i = 0; i <= kMaxPromMatchers; ++i) absl::StrAppend(&many, "a=\"", i, "\",");
  EXPECT_THAT(parse_prom_selector(many + "}").status().message(), HasSubstr("more than 64 matchers"));
}

TEST(PromHistogramTest, BucketsAreSummedPerBoundAcrossOtherLabels) {
  auto samples = parse_prom_text(kGoClientText);
  ASSERT_TRUE(samples.ok());
  const double inf = std::numeric_limits<double>::infinity();
  auto all = histogram_buckets(*samples, "http_request_duration_seconds");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(*all, ElementsAre(Pair(0.005, 101u), Pair(0.05, 905u), Pair(0.5, 999u), Pair(inf, 1010u)));

  auto post = histogram_buckets(*samples, "http_request_duration_seconds", selector(R"(x{method="post"})").matchers);
  ASSERT_TRUE(post.ok()) << post.status();
  EXPECT_THAT(*post, ElementsAre(Pair(0.005, 1u), Pair(0.05, 5u), Pair(0.5, 9u), Pair(inf, 10u)));

  auto none = histogram_buckets(*samples, "no_such_histogram");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty()) << "no buckets is no data, not an error";
}

TEST(PromHistogramTest, BoundsSortNumericallyWhateverTheTextOrder) {
  auto samples = parse_prom_text(
      "# TYPE h histogram\n"
      "h_bucket{le=\"+Inf\"} 9\nh_bucket{le=\"10\"} 8\nh_bucket{le=\"2.5\"} 4\nh_bucket{le=\"1e-3\"} 1\n");
  ASSERT_TRUE(samples.ok()) << samples.status();
  auto buckets = histogram_buckets(*samples, "h");
  ASSERT_TRUE(buckets.ok()) << buckets.status();
  EXPECT_THAT(*buckets, ElementsAre(Pair(0.001, 1u), Pair(2.5, 4u), Pair(10, 8u),
                                    Pair(std::numeric_limits<double>::infinity(), 9u)));
}

TEST(PromHistogramTest, RefusesBucketsThatCannotBeCounted) {
  auto error = [](const std::string& text) {
    auto samples = parse_prom_text(text);  // untyped: the parser lets these through
    EXPECT_TRUE(samples.ok()) << samples.status();
    auto buckets = histogram_buckets(*samples, "h");
    EXPECT_FALSE(buckets.ok()) << text;
    return std::string(buckets.status().message());
  };
  EXPECT_THAT(error("h_bucket 1\n"), HasSubstr("no numeric \"le\""));
  EXPECT_THAT(error("h_bucket{le=\"NaN\"} 1\n"), HasSubstr("no numeric \"le\""));
  EXPECT_THAT(error("h_bucket{le=\"+Inf\"} 1.5\n"), HasSubstr("not a whole number"));
  EXPECT_THAT(error("h_bucket{le=\"+Inf\"} -1\n"), HasSubstr("not a whole number"));
  EXPECT_THAT(error("h_bucket{le=\"+Inf\"} NaN\n"), HasSubstr("not a whole number"));
  EXPECT_THAT(error("h_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 1\n"), HasSubstr("twice"));
  EXPECT_THAT(error("h_bucket{le=\"1\"} 1\n"), HasSubstr("no +Inf bucket"));
}

}  // namespace
}  // namespace tern
