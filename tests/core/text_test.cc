#include "core/text.h"

#include <gtest/gtest.h>

#include "tern/v1/agent.pb.h"

namespace tern {
namespace {

TEST(PrintableTest, ControlCharactersAreEscapedAndTextIsKept) {
  EXPECT_EQ(printable("green is healthy"), "green is healthy");
  EXPECT_EQ(printable("a\nb\r\tc"), "a\\nb\\r\\tc");
  EXPECT_EQ(printable("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
  EXPECT_EQ(printable(std::string("nul\0here", 8)), "nul\\x00here");
  EXPECT_EQ(printable("del\x7f"), "del\\x7f");
  // C1 CSI (U+009B) acts like ESC [ on many terminals.
  EXPECT_EQ(printable("\xc2\x9b" "31m"), "\\u009b31m");
  EXPECT_EQ(printable("caf\xc3\xa9 \xe2\x9c\x93"), "caf\xc3\xa9 \xe2\x9c\x93") << "printable UTF-8 stays";
}

TEST(PrintableTest, MalformedUtf8CannotSmuggleAControlCharacter) {
  // App output is not checked by protobuf: a lead byte must not swallow
  // the newline or escape after it.
  EXPECT_EQ(printable("a\xc3\nb"), "a\\xc3\\nb");
  EXPECT_EQ(printable("\xf0\x1b[31m"), "\\xf0\\x1b[31m");
  EXPECT_EQ(printable("\x80\xff"), "\\x80\\xff");
  EXPECT_EQ(printable("cut \xe2\x9c"), "cut \\xe2\\x9c");
}

TEST(IsUtf8Test, WellFormedOnly) {
  EXPECT_TRUE(is_utf8(""));
  EXPECT_TRUE(is_utf8("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x90\xa6"));
  EXPECT_TRUE(is_utf8(std::string("nul\0ok", 6)));
  for (const char* bad : {"\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80", "\xff"}) {
    EXPECT_FALSE(is_utf8(bad)) << printable(bad);
  }
}

TEST(PrintableTest, LongTextIsCutOnACharacterBoundary) {
  EXPECT_EQ(printable(std::string(100, 'x'), 10), "xxxxxxxxxx...");
  // "é" is two bytes: a cut never leaves half of it.
  std::string e;
  for (int i = 0; i < 10; ++i) e += "\xc3\xa9";
  const std::string cut = printable(e, 5);
  EXPECT_EQ(cut, "\xc3\xa9\xc3\xa9...");
}

TEST(PrintableTest, MakePrintableReachesNestedStringsButNotBytes) {
  tern::v1::AgentMessage m;
  auto* e = m.mutable_event();
  e->set_message("line one\n2026-11-27 [info] forged line");
  e->mutable_status()->add_slots()->set_message("\x1b]0;title\x07");
  e->mutable_status()->mutable_last_good()->set_signature(std::string("\n\x1b", 2));
  EXPECT_TRUE(make_printable(m));
  EXPECT_EQ(e->message(), "line one\\n2026-11-27 [info] forged line");
  EXPECT_EQ(e->status().slots(0).message(), "\\x1b]0;title\\x07");
  EXPECT_EQ(e->status().last_good().signature(), std::string("\n\x1b", 2)) << "bytes are not text";
  EXPECT_FALSE(make_printable(m)) << "already printable";
}

}  // namespace
}  // namespace tern
