#include "core/yaml_config.h"

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace tern {
namespace {

struct Sample {
  std::string name = "default";
  uint32_t count = 1;
  bool enabled = false;
  Millis every{1000};
  std::map<std::string, std::string> labels;
  std::vector<std::string> argv;
  std::string nested_value;
};

absl::Status read(const std::string& text, Sample& s) {
  auto root = load_yaml_string(text, "sample.yaml");
  if (!root.ok()) return root.status();
  YamlMap m(*root, "sample.yaml");
  m.get("name", s.name);
  m.get("count", s.count);
  m.get("enabled", s.enabled);
  m.get("every", s.every);
  m.get("labels", s.labels);
  m.get("argv", s.argv);
  if (auto n = m.child("nested")) {
    n->get("value", s.nested_value);
    m.absorb(n->finish());
  }
  return m.finish();
}

TEST(YamlConfigTest, ReadsEveryTypeAndKeepsDefaultsForAbsentKeys) {
  Sample s;
  ASSERT_TRUE(read("count: 3\nenabled: true\nevery: 250ms\nlabels: {zone: a}\nargv: [x, '{port}']\n"
                   "nested: {value: v}\n",
                   s)
                  .ok());
  EXPECT_EQ(s.name, "default");
  EXPECT_EQ(s.count, 3u);
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.every, Millis(250));
  EXPECT_EQ(s.labels.at("zone"), "a");
  EXPECT_EQ(s.argv, (std::vector<std::string>{"x", "{port}"}));
  EXPECT_EQ(s.nested_value, "v");
}

TEST(YamlConfigTest, EmptyDocumentIsAllDefaults) {
  Sample s;
  EXPECT_TRUE(read("", s).ok());
  EXPECT_EQ(s.count, 1u);
}

TEST(YamlConfigTest, UnknownKeyNamesFileLineAndKey) {
  Sample s;
  absl::Status st = read("name: x\ncuont: 3\n", s);
  ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("sample.yaml:2:1"), absl::string_view::npos) << st.message();
  EXPECT_NE(st.message().find("unknown key \"cuont\""), absl::string_view::npos) << st.message();
  EXPECT_NE(st.message().find("count"), absl::string_view::npos) << "lists the known keys";
}

TEST(YamlConfigTest, UnknownNestedKeyIsNamedWithItsPath) {
  Sample s;
  absl::Status st = read("nested:\n  valeu: 1\n", s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("\"nested.valeu\""), absl::string_view::npos) << st.message();
}

TEST(YamlConfigTest, WrongTypesAreRefusedWithTheKey) {
  struct Case {
    const char* yaml;
    const char* key;
  };
  for (const Case& c : {Case{"count: many\n", "count"}, Case{"count: -1\n", "count"},
                        Case{"enabled: perhaps\n", "enabled"}, Case{"every: 5\n", "every"},
                        Case{"labels: [a, b]\n", "labels"}, Case{"argv: x\n", "argv"},
                        Case{"name: [1]\n", "name"}, Case{"nested: 3\n", "nested"}}) {
    Sample s;
    absl::Status st = read(c.yaml, s);
    ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_NE(st.message().find(std::string("key \"") + c.key + "\""), absl::string_view::npos) << st.message();
    EXPECT_NE(st.message().find("sample.yaml:1:"), absl::string_view::npos) << st.message();
  }
}

TEST(YamlConfigTest, SyntaxErrorGivesThePosition) {
  Sample s;
  absl::Status st = read("name: [unclosed\n", s);
  ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("sample.yaml:"), absl::string_view::npos);
  EXPECT_NE(st.message().find("not valid YAML"), absl::string_view::npos) << st.message();
}

TEST(YamlConfigTest, TopLevelMustBeAMapping) {
  Sample s;
  EXPECT_EQ(read("- a\n- b\n", s).code(), absl::StatusCode::kInvalidArgument);
}

TEST(YamlConfigTest, MissingFileIsNamed) {
  auto r = load_yaml_file("/nonexistent/tern/agent.yaml");
  ASSERT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/tern/agent.yaml"), absl::string_view::npos);
}

TEST(YamlConfigTest, ReadsARealFile) {
  testing::TempDir dir;
  auto r = load_yaml_file(dir.write("sample.yaml", "name: from-file\n"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)["name"].Scalar(), "from-file");
}

// --- hostile documents -------------------------------------------------------

// The message names the file and line, and the reason.
void expect_refused(const std::string& text, absl::string_view position, absl::string_view reason) {
  Sample s;
  absl::Status st = read(text, s);
  ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << text.substr(0, 80);
  EXPECT_NE(st.message().find(position), absl::string_view::npos) << st.message();
  EXPECT_NE(st.message().find(reason), absl::string_view::npos) << st.message();
}

TEST(YamlConfigTest, RefusesAliasesSoABillionLaughsNeverExpands) {
  // Nine levels of ten aliases each: 10^9 strings for whoever walks the tree.
  std::string bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n";
  for (char c = 'b'; c <= 'i'; ++c) {
    const char prev = static_cast<char>(c - 1);
    bomb += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) bomb += std::string(i ? "," : "") + "*" + prev;
    bomb += "]\n";
  }
  expect_refused(bomb, "sample.yaml:1:", "aliases (*name) are not allowed in tern files");
}

TEST(YamlConfigTest, RefusesAnchorsAliasesAndMergeKeysWithTheirLine) {
  expect_refused("name: x\nlabels: &l {zone: a}\n", "sample.yaml:2:", "aliases (*name) are not allowed in tern files");
  expect_refused("argv: [&x a]\n", "sample.yaml:1:", "anchors (&name)");
  expect_refused("nested: {value: v}\nlabels:\n  <<: *base\n", "sample.yaml:3:", "not valid YAML");  // undefined
  expect_refused("base: &b {zone: a}\nlabels:\n  <<: *b\n", "sample.yaml:1:", "aliases (*name) are not allowed");
}

TEST(YamlConfigTest, RefusesDeepNesting) {
  std::string deep = "nested: " + std::string(kMaxYamlDepth + 5, '[') + std::string(kMaxYamlDepth + 5, ']') + "\n";
  expect_refused(deep, "sample.yaml:1:", "nested deeper than");
  // Far past yaml-cpp's own recursion guard: still a clean error, no crash.
  std::string deeper = "nested: " + std::string(100'000, '[') + "\n";
  Sample s;
  EXPECT_EQ(read(deeper, s).code(), absl::StatusCode::kInvalidArgument);
  std::string maps;
  for (std::size_t i = 0; i < kMaxYamlDepth + 1; ++i) maps += std::string(2 * i, ' ') + "k:\n";
  expect_refused(maps, "sample.yaml:", "nested deeper than");
}

TEST(YamlConfigTest, RefusesOversizedDocuments) {
  std::string big = "name: x\n" + std::string(kMaxYamlBytes, '#') + "\n";
  expect_refused(big, "sample.yaml", "at most 1048576 bytes");

  std::string padded = "name: x\n";
  for (int i = 0; i < 100'000; ++i) padded += "# padding padding padding\n";
  testing::TempDir dir;
  const std::string path = dir.write("big.yaml", padded);
  auto r = load_yaml_file(path);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(path), absl::string_view::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("larger than"), absl::string_view::npos) << r.status().message();
}

TEST(YamlConfigTest, RefusesARepeatedKey) {
  expect_refused("name: a\ncount: 2\nname: b\n", "sample.yaml:3:1", "key \"name\" appears twice");
  expect_refused("nested: {value: a, value: b}\n", "sample.yaml:1:", "key \"value\" appears twice");
  // The same key in different mappings is fine.
  Sample s;
  EXPECT_TRUE(read("name: a\nnested: {value: b}\nlabels: {name: c}\n", s).ok());
}

TEST(YamlConfigTest, RefusesASecondDocument) {
  expect_refused("name: a\n---\nname: b\n", "sample.yaml", "more than one YAML document");
  Sample s;
  EXPECT_TRUE(read("---\nname: a\n", s).ok()) << "one document with a start marker is fine";
}

TEST(YamlConfigTest, RefusesValuesThatAreNotUtf8OrHoldNul) {
  expect_refused("name: ok\nargv: [\"a\xff\"]\n", "sample.yaml:2:", "not valid UTF-8");
  expect_refused("name: \xc0\xaf\n", "sample.yaml:1:", "not valid UTF-8");          // overlong '/'
  expect_refused("name: \xed\xa0\x80\n", "sample.yaml:1:", "not valid UTF-8");      // a surrogate
  expect_refused("name: \"a\\0b\"\n", "sample.yaml:1:", "NUL");
  Sample s;
  ASSERT_TRUE(read("name: \"gr\xc3\xbc\xc3\x9f" "e \xe2\x9c\x93 \xf0\x9f\x9a\x80\"\n", s).ok());
  EXPECT_EQ(s.name, "gr\xc3\xbc\xc3\x9f" "e \xe2\x9c\x93 \xf0\x9f\x9a\x80");
}

TEST(YamlConfigTest, RefusesDurationsTooLongToMean) {
  expect_refused("every: 10000000000m\n", "sample.yaml:1:", "longer than 8760h");
  expect_refused("every: 1000000000000h1000000000000h1000000000000h\n", "sample.yaml:1:", "at most 32 characters");
  Sample s;
  ASSERT_TRUE(read("every: 8760h\n", s).ok());
  EXPECT_EQ(s.every, kMaxYamlDuration);
}

TEST(YamlConfigTest, UnknownKeysAreRefusedAtEveryLevelEvenOddOnes) {
  expect_refused("? [a, b]\n: 1\n", "sample.yaml:1:", "unknown key");
  expect_refused("nested: {value: v, \"\": 1}\n", "sample.yaml:1:", "unknown key \"nested.\"");
}

}  // namespace
}  // namespace tern
