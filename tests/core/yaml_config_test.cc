#include "core/yaml_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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
  auto path = std::filesystem::temp_directory_path() / ("tern-yaml-" + std::to_string(getpid()) + ".yaml");
  std::ofstream(path) << "name: from-file\n";
  auto r = load_yaml_file(path.string());
  std::filesystem::remove(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)["name"].Scalar(), "from-file");
}

}  // namespace
}  // namespace tern
