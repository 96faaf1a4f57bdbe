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
