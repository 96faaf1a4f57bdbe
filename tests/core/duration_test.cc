#include "core/duration.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(DurationTest, ParsesUnitsAndCompounds) {
  EXPECT_EQ(*parse_duration("250ms"), Millis(250));
  EXPECT_EQ(*parse_duration("5s"), Millis(5000));
  EXPECT_EQ(*parse_duration("1.5s"), Millis(1500));
  EXPECT_EQ(*parse_duration("1m30s"), Millis(90'000));
  EXPECT_EQ(*parse_duration("2h"), Millis(7'200'000));
  EXPECT_EQ(*parse_duration("0s"), Millis(0));
}

TEST(DurationTest, RefusesWhatItCannotReadWithoutGuessing) {
  for (const char* bad : {"", "5", "5x", "s", "-1s", "1m30", "five seconds"}) {
    auto d = parse_duration(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find("500ms"), absl::string_view::npos) << "says how to write one";
  }
}

TEST(DurationTest, FormatsShortestExactForm) {
  EXPECT_EQ(format_duration(Millis(0)), "0s");
  EXPECT_EQ(format_duration(Millis(250)), "250ms");
  EXPECT_EQ(format_duration(Millis(1500)), "1.5s");
  EXPECT_EQ(format_duration(Millis(60'000)), "1m");
  EXPECT_EQ(format_duration(Millis(90'000)), "1m30s");
  EXPECT_EQ(format_duration(Millis(3'600'000)), "1h");
  for (int64_t ms : {1, 999, 1001, 59'999, 61'500, 3'661'000}) {
    EXPECT_EQ(*parse_duration(format_duration(Millis(ms))), Millis(ms)) << ms;
  }
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

TEST(CheckedDurationTest, RefusesWhatProtobufCallsInvalidBeforeConverting) {
  google::protobuf::Duration d;
  d.set_seconds(2);
  d.set_nanos(1'573'741'824);  // found by the command fuzzer: nanos past a second
  EXPECT_FALSE(checked_duration(d, Millis(86'400'000)).ok());
  d.set_nanos(-5);
  EXPECT_FALSE(checked_duration(d, Millis(86'400'000)).ok()) << "mixed signs";
  d.set_seconds(9'000'000'000'000'000'000);
  d.set_nanos(0);
  auto huge = checked_duration(d, Millis(86'400'000));
  ASSERT_FALSE(huge.ok()) << "must not wrap into a small number";
  EXPECT_NE(std::string(huge.status().message()).find("at most 24h"), std::string::npos) << huge.status();
  d.set_seconds(-1);
  EXPECT_NE(std::string(checked_duration(d, Millis(1000)).status().message()).find("negative"), std::string::npos);
  d.set_seconds(1);
  d.set_nanos(500'000'000);
  EXPECT_EQ(*checked_duration(d, Millis(2000)), Millis(1500));
}

TEST(ParseDurationTest, HugeSumsAreRefusedNotWrapped) {
  EXPECT_FALSE(parse_duration("1000000000000h1000000000000h1000000000000h").ok());
  EXPECT_FALSE(parse_duration("999999999999h").ok());
}

}  // namespace
}  // namespace tern
