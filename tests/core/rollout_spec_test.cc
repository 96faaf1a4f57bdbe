#include "core/rollout_spec.h"

#include <gtest/gtest.h>
#include <google/protobuf/util/message_differencer.h>

#include <string>

namespace tern {
namespace {

using google::protobuf::util::MessageDifferencer;

TEST(WaveListTest, HostCountsAndPercentagesInOrder) {
  auto waves = parse_wave_list("1,10%,50%,100%");
  ASSERT_TRUE(waves.ok()) << waves.status();
  ASSERT_EQ(waves->size(), 4u);
  EXPECT_EQ((*waves)[0].size_case(), tern::v1::Wave::kHosts);
  EXPECT_EQ((*waves)[0].hosts(), 1u);
  EXPECT_EQ((*waves)[1].percent(), 10u);
  EXPECT_EQ((*waves)[2].percent(), 50u);
  EXPECT_EQ((*waves)[3].percent(), 100u);
  for (const auto& w : *waves) {
    EXPECT_FALSE(w.has_bake()) << "bake, gate and weight are the caller's";
    EXPECT_EQ(w.gate(), tern::v1::WAVE_GATE_UNSPECIFIED);
    EXPECT_EQ(w.weight(), 0u);
  }
}

TEST(WaveListTest, OneWave) {
  auto waves = parse_wave_list("3");
  ASSERT_TRUE(waves.ok()) << waves.status();
  ASSERT_EQ(waves->size(), 1u);
  EXPECT_EQ((*waves)[0].hosts(), 3u);
}

TEST(WaveListTest, RefusesWhatIsNotACountOrAPercentageAndNamesIt) {
  for (const char* bad : {"", "1,,50%", "1,", "x", "10%%", "%", "-1", "1.5", " 1", "1 ,2", "+3", "1234567", "50%,y%"}) {
    auto waves = parse_wave_list(bad);
    ASSERT_FALSE(waves.ok()) << "\"" << bad << "\" was accepted";
    EXPECT_EQ(waves.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(waves.status().message()).find("is not a host count or a percentage"), std::string::npos)
        << waves.status();
  }
  auto waves = parse_wave_list("1,ten%,100%");
  ASSERT_FALSE(waves.ok());
  EXPECT_NE(std::string(waves.status().message()).find("\"ten%\""), std::string::npos)
      << "names the part that is wrong: " << waves.status();
}

// A wave list as a spec from the CLI: parsed, defaulted, validated.
absl::Status check_waves(const char* text) {
  auto waves = parse_wave_list(text);
  if (!waves.ok()) return waves.status();
  tern::v1::RolloutSpec spec;
  spec.set_service("web");
  spec.mutable_release()->set_version("2.0");
  for (const auto& w : *waves) *spec.add_waves() = w;
  apply_rollout_defaults(spec);
  return validate_rollout_spec(spec);
}

// The list grammar checks syntax; the range of a size is the spec's rule,
// the same for a list and for YAML.
TEST(WaveListTest, SizesOutOfRangeAreRefusedByTheSpecCheck) {
  for (const char* text : {"0", "1,0%", "150%"}) {
    auto st = check_waves(text);
    ASSERT_FALSE(st.ok()) << text;
    EXPECT_NE(std::string(st.message()).find("field waves["), std::string::npos) << st;
  }
}

// Sizes are cumulative: a wave no larger than an earlier one in the same
// unit is a typo ("1,10%,5%" used to finish on every host at once).
TEST(WaveListTest, WavesMustGrowWithinEachUnit) {
  for (const char* good : {"1,10%,50%,100%", "2,5,100%", "5,10%,50", "100%"}) {
    EXPECT_TRUE(check_waves(good).ok()) << good << ": " << check_waves(good);
  }
  const std::pair<const char*, const char*> bad[] = {
      {"1,10%,5%", "waves[2].percent: 5% is not more than waves[1] (10%)"},
      {"1,10%,10%", "waves[2].percent: 10% is not more than waves[1] (10%)"},
      {"5,10%,3", "waves[2].hosts: 3 is not more than waves[0] (5)"},
      {"2,2", "waves[1].hosts: 2 is not more than waves[0] (2)"},
  };
  for (const auto& [text, why] : bad) {
    auto st = check_waves(text);
    ASSERT_FALSE(st.ok()) << text << " was accepted";
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(st.message()).find(why), std::string::npos) << st;
  }
}

TEST(WaveListTest, SameWavesAsTheYamlForm) {
  auto from_yaml = parse_rollout_spec(
      "service: web\nrelease: '2.0'\nwaves:\n  - {hosts: 1}\n  - {percent: 10}\n  - {percent: 100}\n", "test.yaml");
  ASSERT_TRUE(from_yaml.ok()) << from_yaml.status();
  auto waves = parse_wave_list("1,10%,100%");
  ASSERT_TRUE(waves.ok()) << waves.status();
  tern::v1::RolloutSpec from_list;
  from_list.set_service("web");
  from_list.mutable_release()->set_version("2.0");
  for (const auto& w : *waves) *from_list.add_waves() = w;
  apply_rollout_defaults(from_list);
  ASSERT_TRUE(validate_rollout_spec(from_list).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(*from_yaml, from_list))
      << from_yaml->DebugString() << "\n---\n" << from_list.DebugString();
}

TEST(RolloutSpecTest, YamlWaveWithBothSizesIsRefused) {
  auto spec = parse_rollout_spec("service: web\nrelease: '2.0'\nwaves:\n  - {hosts: 1, percent: 10}\n", "test.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(std::string(spec.status().message()).find("waves[0]"), std::string::npos) << spec.status();
}

// A rollout judges the waves that keep a split; timing defaults are the
// careful operator's.
TEST(RolloutSpecTest, AnalysisJudgesTheSplitWavesWithCarefulDefaults) {
  auto spec = parse_rollout_spec(R"(
service: web
release: "2.0"
waves: [{hosts: 1, weight: 10}, {percent: 50, weight: 50}, {percent: 100}]
analysis: {interval: 5s}
)", "r.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->waves(0).analyze());
  EXPECT_TRUE(spec->waves(1).analyze());
  EXPECT_FALSE(spec->waves(2).analyze()) << "weight 100 has no blue to compare with";
  const auto& a = spec->analysis();
  EXPECT_EQ(a.interval().seconds(), 5);
  EXPECT_EQ(a.warmup().seconds(), 60);
  EXPECT_EQ(a.min_duration().seconds(), 120);
  EXPECT_EQ(a.max_duration().seconds(), 1800);
  EXPECT_DOUBLE_EQ(a.confidence(), 0.99);
  EXPECT_EQ(a.on_fail(), tern::v1::ON_FAILURE_ROLLBACK);
  EXPECT_EQ(a.source(), "agent") << "each host's agent counts, by default";

  auto chosen = parse_rollout_spec(R"(
service: web
release: "2.0"
waves: [{hosts: 1, weight: 10}, {percent: 50, weight: 50, analyze: true}, {percent: 100}]
analysis: {on_fail: pause, confidence: 0.995}
)", "r.yaml");
  ASSERT_TRUE(chosen.ok()) << chosen.status();
  EXPECT_FALSE(chosen->waves(0).analyze()) << "a wave that says analyze chooses";
  EXPECT_TRUE(chosen->waves(1).analyze());
  EXPECT_EQ(chosen->analysis().on_fail(), tern::v1::ON_FAILURE_PAUSE);

  auto none = parse_rollout_spec("service: web\nrelease: \"2.0\"\n", "r.yaml");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_analysis()) << "no analysis unless asked";
}

TEST(RolloutSpecTest, BadAnalysisIsRefusedNamingTheFieldAndTheReason) {
  const std::pair<const char*, const char*> cases[] = {
      {"waves: [{hosts: 1, analyze: true}, {percent: 100}]\n", "waves[0].analyze: a wave at weight 100"},
      {"waves: [{hosts: 1}, {percent: 100}]\nanalysis: {}\n", "field analysis: no wave keeps a split"},
      {"waves: [{hosts: 1, weight: 10}]\nanalysis: {interval: 10ms}\n", "analysis.interval: must be at least 100ms"},
      {"waves: [{hosts: 1, weight: 10}]\nanalysis: {min_duration: 10m, max_duration: 5m}\n", "analysis.max_duration"},
      {"waves: [{hosts: 1, weight: 10}]\nanalysis: {confidence: 1.5}\n", "analysis.confidence"},
      {"waves: [{hosts: 1, weight: 10}]\nanalysis: {on_fail: explode}\n", "analysis.on_fail"},
      {"waves: [{hosts: 1, weight: 10}]\nanalysis: {source: datadog}\n", "analysis.source: \"datadog\" must be agent or prometheus"},
      {"waves: [{hosts: 1, weight: 10}]\nanalysis: {surprise: 1}\n", "unknown key"},
  };
  for (const auto& [yaml, expect] : cases) {
    auto spec = parse_rollout_spec(std::string("service: web\nrelease: \"2.0\"\n") + yaml, "r.yaml");
    ASSERT_FALSE(spec.ok()) << yaml;
    EXPECT_NE(std::string(spec.status().message()).find(expect), std::string::npos) << spec.status();
  }
}

TEST(RolloutSpecTest, AWaveMayNameItsSplitAndItsGateWebhook) {
  auto spec = parse_rollout_spec(
      "service: web\nrelease: '2'\nwaves: [{hosts: 1, weight: 10, split: client}, {percent: 100, gate_webhook: cab}]\n",
      "r.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->waves(0).split(), "client");
  EXPECT_EQ(spec->waves(1).split(), "");
  EXPECT_EQ(spec->waves(1).gate_webhook(), "cab");
  auto bad = parse_rollout_spec("service: web\nrelease: '2'\nwaves: [{percent: 100, split: sticky}]\n", "r.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("waves[0].split"), std::string::npos) << bad.status();
  auto gate = parse_rollout_spec("service: web\nrelease: '2'\nwaves: [{percent: 100, gate_webhook: \"a b\"}]\n",
                                 "r.yaml");
  ASSERT_FALSE(gate.ok());
  EXPECT_NE(gate.status().message().find("waves[0].gate_webhook"), std::string::npos) << gate.status();
}

}  // namespace
}  // namespace tern
