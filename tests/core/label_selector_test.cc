#include "core/label_selector.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(LabelSelectorTest, EmptyMatchesEverything) {
  auto s = LabelSelector::parse("");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->matches({}));
  EXPECT_TRUE(s->matches({{"zone", "a"}}));
}

TEST(LabelSelectorTest, AllTermsMustHold) {
  auto s = LabelSelector::parse("role=web, zone!=c,canary,!drained");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->matches({{"role", "web"}, {"zone", "a"}, {"canary", ""}}));
  EXPECT_TRUE(s->matches({{"role", "web"}, {"canary", "yes"}}));  // zone absent is != c
  EXPECT_FALSE(s->matches({{"role", "web"}, {"zone", "c"}, {"canary", ""}}));
  EXPECT_FALSE(s->matches({{"role", "db"}, {"canary", ""}}));
  EXPECT_FALSE(s->matches({{"role", "web"}}));
  EXPECT_FALSE(s->matches({{"role", "web"}, {"canary", ""}, {"drained", "1"}}));
  EXPECT_EQ(s->to_string(), "role=web,zone!=c,canary,!drained");
}

TEST(LabelSelectorTest, RefusesMalformedTerms) {
  for (const char* bad : {"=a", "zone=a b", "zo ne", "!", "a=b=c"}) {
    auto s = LabelSelector::parse(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.status().message().find("k=v"), absl::string_view::npos);
  }
}

TEST(LabelSelectorTest, HostIdsAreSafeNames) {
  for (const char* ok : {"web-1", "0123456789abcdef0123456789abcdef", "db.zone-a_2"}) {
    EXPECT_TRUE(is_valid_host_id(ok)) << ok;
  }
  for (const char* bad : {"", "../etc", "a/b", ".hidden", "-x", "with space", "x\n"}) {
    EXPECT_FALSE(is_valid_host_id(bad)) << bad;
  }
  EXPECT_FALSE(is_valid_host_id(std::string(64, 'a')));
}

TEST(LabelSelectorTest, ParsesAssignments) {
  auto l = parse_label_assignments({"zone=a", "rack=r12"});
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(format_labels(*l), "rack=r12,zone=a");
  EXPECT_FALSE(parse_label_assignments({"zone"}).ok());
  EXPECT_FALSE(parse_label_assignments({"=a"}).ok());
}

}  // namespace
}  // namespace tern
