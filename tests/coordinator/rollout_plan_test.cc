#include "coordinator/rollout_plan.h"

#include <gtest/gtest.h>

#include "core/rollout_spec.h"

namespace tern {
namespace {

tern::v1::RolloutSpec spec_of(const std::string& waves, const std::string& extra = "") {
  auto s = parse_rollout_spec("service: web\nrelease: '2.0'\nwaves: " + waves + "\n" + extra, "r.yaml");
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : tern::v1::RolloutSpec();
}

std::vector<PlanHost> fleet(int n, const std::vector<std::string>& zones = {}) {
  std::vector<PlanHost> out;
  for (int i = 0; i < n; ++i) {
    PlanHost h;
    h.host_id = "h" + std::string(i < 10 ? "0" : "") + std::to_string(i);
    if (!zones.empty()) h.labels["zone"] = zones[static_cast<std::size_t>(i) % zones.size()];
    out.push_back(h);
  }
  return out;
}

const char* kCanary = "[{hosts: 1}, {percent: 10}, {percent: 50}, {percent: 100}]";

TEST(WaveTargetsTest, CumulativeWithPercentRoundingUp) {
  auto s = spec_of(kCanary);
  EXPECT_EQ(wave_targets(s, 40), (std::vector<uint32_t>{1, 4, 20, 40}));
  EXPECT_EQ(wave_targets(s, 15), (std::vector<uint32_t>{1, 2, 8, 15}));   // 1.5 -> 2, 7.5 -> 8
  EXPECT_EQ(wave_targets(s, 1000), (std::vector<uint32_t>{1, 100, 500, 1000}));
}

TEST(WaveTargetsTest, TinyFleets) {
  auto s = spec_of(kCanary);
  EXPECT_EQ(wave_targets(s, 1), (std::vector<uint32_t>{1, 1, 1, 1}));
  EXPECT_EQ(wave_targets(s, 2), (std::vector<uint32_t>{1, 1, 1, 2}));
  EXPECT_EQ(wave_targets(s, 3), (std::vector<uint32_t>{1, 1, 2, 3}));
}

TEST(WaveTargetsTest, NeverShrinksAndTheLastWaveTakesTheRest) {
  auto s = spec_of("[{hosts: 5}, {percent: 10}, {percent: 60}]");
  EXPECT_EQ(wave_targets(s, 20), (std::vector<uint32_t>{5, 5, 20}));
}

TEST(PlanRolloutTest, EveryHostExactlyOnceInOrder) {
  auto plan = plan_rollout(spec_of(kCanary), fleet(20));
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->waves.size(), 4u);
  EXPECT_EQ(plan->waves[0].host_ids, (std::vector<std::string>{"h00"}));
  EXPECT_EQ(plan->waves[1].host_ids, (std::vector<std::string>{"h01"}));
  EXPECT_EQ(plan->waves[2].host_ids.size(), 8u);
  EXPECT_EQ(plan->waves[3].host_ids.size(), 10u);
  EXPECT_TRUE(plan->warnings.empty());
}

// A wave that adds no hosts on this fleet is refused, not run as an empty
// bake: on 10 hosts 10% is the one host the first wave already took.
TEST(PlanRolloutTest, AWaveThatAddsNoHostsIsRefusedSayingWhy) {
  auto plan = plan_rollout(spec_of(kCanary), fleet(10));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("waves[1] (10%) adds no hosts"), std::string::npos) << plan.status();
  EXPECT_NE(plan.status().message().find("already reach 1"), std::string::npos) << plan.status();
  // The same waves on a fleet large enough are fine.
  EXPECT_TRUE(plan_rollout(spec_of(kCanary), fleet(11)).ok());
}

TEST(PlanRolloutTest, SpreadTakesOneHostPerZoneFirst) {
  auto s = spec_of("[{hosts: 3}, {percent: 100}]", "spread_label: zone\n");
  auto plan = plan_rollout(s, fleet(9, {"a", "a", "b"}));  // zones: a a b a a b a a b
  ASSERT_TRUE(plan.ok());
  std::set<std::string> zones;
  auto hosts = fleet(9, {"a", "a", "b"});
  for (const auto& id : plan->waves[0].host_ids) {
    for (const auto& h : hosts) {
      if (h.host_id == id) zones.insert(h.labels.at("zone"));
    }
  }
  EXPECT_EQ(zones, (std::set<std::string>{"a", "b"}));
}

TEST(PlanRolloutTest, UnlabelledHostsComeLastInEachRound) {
  std::vector<PlanHost> hosts = fleet(4, {"a"});
  hosts[1].labels.clear();
  auto order = spread_order(hosts, "zone");
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0].host_id, "h00");
  EXPECT_EQ(order[1].host_id, "h01");  // the unlabelled group's first host, after zone a's first
}

TEST(PlanRolloutTest, NoEligibleHostsIsAClearError) {
  auto plan = plan_rollout(spec_of(kCanary), {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(plan.status().message()).find("no hosts"), std::string::npos);
}

TEST(RolloutSpecTest, TheShippedExampleIsValid) {
  auto s = load_rollout_spec_file(TERN_SOURCE_DIR "/examples/rollout.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->waves_size(), 4);
  EXPECT_EQ(s->waves(2).gate(), tern::v1::WAVE_GATE_MANUAL);
}

TEST(RolloutSpecTest, DefaultsAndFields) {
  auto s = parse_rollout_spec(
      "service: web\nrelease: '2.0'\nwaves: [{hosts: 1, bake: 30s, gate: manual, weight: 10}]\n"
      "failure_budget: {max_failed_hosts: 2}\non_failure: pause\nspread_label: zone\n",
      "r.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->waves(0).gate(), tern::v1::WAVE_GATE_MANUAL);
  EXPECT_EQ(s->waves(0).weight(), 10u);
  EXPECT_EQ(s->waves(0).bake().seconds(), 30);
  EXPECT_EQ(s->on_failure(), tern::v1::ON_FAILURE_PAUSE);
  EXPECT_EQ(s->progress_deadline().seconds(), 600);
  auto minimal = parse_rollout_spec("service: web\nrelease: '3'\n", "r.yaml");
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  EXPECT_EQ(minimal->waves(0).percent(), 100u);
  EXPECT_EQ(minimal->on_failure(), tern::v1::ON_FAILURE_ROLLBACK);
}

TEST(RolloutSpecTest, BadSpecsNameTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {"service: Web\nrelease: '1'\n", "field service"},
      {"service: web\n", "field release"},
      {"service: web\nrelease: '1'\nwaves: [{percent: 120}]\n", "waves[0].percent: 120"},
      {"service: web\nrelease: '1'\nwaves: [{hosts: 0}]\n", "waves[0].hosts"},
      {"service: web\nrelease: '1'\nwaves: [{bake: 1m}]\n", "hosts: N or percent: P"},
      {"service: web\nrelease: '1'\nwaves: [{hosts: 1, percent: 5}]\n", "not both"},
      {"service: web\nrelease: '1'\nwaves: [{hosts: 1, gate: later}]\n", "auto or manual"},
      {"service: web\nrelease: '1'\non_failure: panic\n", "rollback or pause"},
      {"service: web\nrelease: '1'\nfailure_budget: {max_failed_percent: 101}\n", "max_failed_percent"},
      {"service: web\nrelease: '1'\nwavez: []\n", "unknown key"},
  };
  for (const auto& [yaml, expect] : cases) {
    auto s = parse_rollout_spec(yaml, "r.yaml");
    ASSERT_FALSE(s.ok()) << yaml;
    EXPECT_NE(std::string(s.status().message()).find(expect), std::string::npos) << yaml << " -> " << s.status();
  }
}

}  // namespace
}  // namespace tern
