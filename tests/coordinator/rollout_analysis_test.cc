// Canary analysis in the rollout engine: counts from agents, verdicts on a
// fake clock, and what each verdict does to the rollout.
#include <google/protobuf/util/time_util.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <utility>
#include <string>
#include <vector>

#include "coordinator/rollout_engine.h"
#include "core/rollout_spec.h"
#include "core/words.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;
using tern::v1::Rollout;

class RolloutAnalysisTest : public ::testing::Test {
 protected:
  RolloutAnalysisTest()
      : engine_(clock_, RolloutEffects{[this](const Rollout&, const std::string& host, const tern::v1::ReleaseRef&,
                                              uint32_t) { deploys_.push_back(host); },
                                       [this](const Rollout&, const std::string& host) { rollbacks_.push_back(host); },
                                       [this](const Rollout&, tern::v1::RolloutEventKind kind, const std::string& m) {
                                         events_.push_back(word(kind));
                                         messages_.push_back(m);
                                       }}) {
    auto* errors = metrics_.add_metrics();
    errors->set_name("errors");
    errors->set_kind("ratio");
    errors->set_bad("http_requests_total{code=\"500\"}");
    errors->set_total("http_requests_total");
    errors->set_max_ratio(1.5);
    errors->set_min_excess(0.001);
  }

  // Analysis every 10s, 30s warm-up, at least `min`, at most 10m; hosts
  // h0..hN-1; `extra` more YAML.
  void start(const std::string& waves, int hosts, const std::string& extra = "", const std::string& min = "1m") {
    auto spec = parse_rollout_spec("service: web\nrelease: '2'\nwaves: " + waves +
                                       "\nanalysis: {interval: 10s, warmup: 30s, min_duration: " + min +
                                       ", max_duration: 10m}\n" + extra,
                                   "r.yaml");
    ASSERT_TRUE(spec.ok()) << spec.status();
    std::vector<PlanHost> fleet;
    for (int i = 0; i < hosts; ++i) fleet.push_back({"h" + std::to_string(i), {}});
    auto plan = plan_rollout(*spec, fleet);
    ASSERT_TRUE(plan.ok()) << plan.status();
    tern::v1::ReleaseRef rel, prev;
    rel.set_version("2");
    prev.set_version("1");
    ASSERT_TRUE(engine_.start("r1", *spec, *plan, rel, prev, {}, metrics_).ok());
  }
  const Rollout& r() { return *engine_.find("r1"); }
  void ok(const std::string& host) { engine_.on_host_deployed("r1", host, true, {}, "done"); }
  bool saw(const std::string& kind) { return std::find(events_.begin(), events_.end(), kind) != events_.end(); }

  // One 10s interval from `host`: `n` requests per side, `canary_bad` and
  // `baseline_bad` of them errors. Advances the clock by the interval.
  WaveAnalysis::Taken interval(const std::string& host, uint64_t n, uint64_t canary_bad, uint64_t baseline_bad,
                               uint64_t split = 7) {
    auto& seq = sequences_[host];
    ++seq;
    tern::v1::AnalysisSample s;
    s.set_service("web");
    s.set_canary_version("2");
    s.set_baseline_version("1");
    s.set_weight(50);
    s.set_split_id(split);
    s.set_sequence(seq);
    *s.mutable_since_split() = TimeUtil::MillisecondsToDuration(static_cast<int64_t>(seq) * 10'000);
    auto* m = s.add_metrics();
    m->set_name("errors");
    m->set_canary_total(n);
    m->set_canary_bad(canary_bad);
    m->set_baseline_total(n);
    m->set_baseline_bad(baseline_bad);
    if (auto it = connections_.find(host); it != connections_.end()) {
      s.mutable_connections()->set_canary(it->second.first);
      s.mutable_connections()->set_baseline(it->second.second);
    }
    return engine_.on_sample(host, s);
  }
  void look() {
    clock_.advance(Millis(10'000));
    engine_.tick();
  }

  FakeClock clock_;
  RolloutEngine engine_;
  tern::v1::ServiceAnalysis metrics_;
  std::vector<std::string> deploys_, rollbacks_, events_, messages_;
  std::map<std::string, uint64_t> sequences_;
  // New connections (canary, baseline) each interval() of a host reports.
  std::map<std::string, std::pair<uint64_t, uint64_t>> connections_;
};

TEST_F(RolloutAnalysisTest, AnEqualCanaryPassesAfterTheMinimumAndTheRolloutMovesOn) {
  start("[{hosts: 1, weight: 50}, {percent: 100}]", 3);
  ok("h0");
  EXPECT_EQ(r().wave_step(), tern::v1::WAVE_STEP_ANALYZING);
  EXPECT_TRUE(saw("wave_analyzing"));
  EXPECT_EQ(r().analysis().verdict(), "RUNNING");
  // Warm-up: three intervals that are not judged, however bad.
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(interval("h0", 1000, 900, 0), WaveAnalysis::Taken::kWarmingUp);
    look();
  }
  // 1% errors on both sides: no FAIL, and no PASS before warm-up + 1m.
  int looks = 0;
  while (r().wave_step() == tern::v1::WAVE_STEP_ANALYZING && looks < 60) {
    EXPECT_EQ(interval("h0", 5000, 50, 50), WaveAnalysis::Taken::kCounted);
    look();
    ++looks;
    if (clock_.now() - from_unix_millis(TimeUtil::TimestampToMilliseconds(r().analysis().started())) <
        Millis(90'000)) {
      EXPECT_EQ(r().wave_step(), tern::v1::WAVE_STEP_ANALYZING) << "no PASS before warm-up + min_duration";
    }
  }
  EXPECT_EQ(r().analysis().verdict(), "PASS") << r().analysis().message();
  EXPECT_TRUE(saw("analysis_verdict"));
  EXPECT_EQ(r().current_wave(), 1u) << "on to the next wave";
  EXPECT_TRUE(rollbacks_.empty());
  ASSERT_EQ(r().analysis().metrics_size(), 1);
  EXPECT_EQ(r().analysis().metrics(0).verdict(), "PASS");
  EXPECT_GT(r().analysis().metrics(0).canary_total(), 5000u);
  EXPECT_LT(r().analysis().metrics(0).ratio_low(), 1.0);
  EXPECT_DOUBLE_EQ(r().analysis().canary_share(), 0.5) << "as many requests on each side";
  EXPECT_DOUBLE_EQ(r().analysis().expected_share(), 0.5) << "the samples' weight, 50";
  EXPECT_GT(r().analysis().metrics(0).ratio_high(), 1.0);
}

TEST_F(RolloutAnalysisTest, TheHostsConnectionCountsCheckTheSplitAndNameAHostWhereItIsOff) {
  start("[{hosts: 2, weight: 50}, {percent: 100}]", 3, "", "9m");
  ok("h0");
  ok("h1");
  connections_["h0"] = {52, 48};
  connections_["h1"] = {49, 51};
  for (int i = 0; i < 6; ++i) {
    interval("h0", 1000, 10, 10);
    interval("h1", 1000, 10, 10);
    look();
  }
  EXPECT_EQ(r().analysis().connections(), 4u * 200u) << "four intervals from the 30s warm-up on, both hosts";
  EXPECT_NEAR(r().analysis().connection_share(), 0.505, 1e-9);
  EXPECT_EQ(r().analysis().split_warning(), "") << "a 50/50 split that the kernel counted as 50.5%";
  EXPECT_FALSE(saw("split_off"));

  // h1's NAT sends green almost nothing: the warning names the host.
  connections_["h1"] = {2, 98};
  for (int i = 0; i < 6; ++i) {
    interval("h0", 1000, 10, 10);
    interval("h1", 1000, 10, 10);
    look();
  }
  EXPECT_NE(r().analysis().split_warning().find("the split is off on 1 host(s): h1 (green got"), std::string::npos)
      << r().analysis().split_warning();
  EXPECT_TRUE(saw("split_off"));
  EXPECT_EQ(std::count(events_.begin(), events_.end(), "split_off"), 1) << "said once, not every interval";
  EXPECT_EQ(r().wave_step(), tern::v1::WAVE_STEP_ANALYZING) << "a warning, not a verdict";
}

TEST_F(RolloutAnalysisTest, ACanaryFiveTimesWorseFailsAndItsHostAloneFlipsBackWithinTheBudget) {
  start("[{hosts: 2, weight: 50}, {percent: 100}]", 4, "failure_budget: {max_failed_hosts: 1}\n");
  ok("h0");
  ok("h1");
  for (int i = 0; i < 3; ++i) interval("h0", 1000, 0, 0), interval("h1", 1000, 0, 0);  // warm-up
  // h0's canary fails 5% of its requests, blue 1%: it fails on its own
  // counts, at once, before any minimum duration.
  for (int i = 0; i < 30 && rollbacks_.empty(); ++i) {
    interval("h0", 1000, 50, 10);
    interval("h1", 1000, 10, 10);
  }
  ASSERT_EQ(rollbacks_, (std::vector<std::string>{"h0"})) << "flipped back at once, the others stay";
  EXPECT_TRUE(saw("host_failed"));
  const auto it = std::find(events_.begin(), events_.end(), "host_failed");
  const std::string msg = messages_[static_cast<std::size_t>(it - events_.begin())];
  EXPECT_NE(msg.find("analysis: errors FAIL"), std::string::npos) << msg;
  EXPECT_EQ(r().analysis().hosts_failed(), 1u);
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_RUNNING) << "within the budget: the wave goes on without h0";
  engine_.on_host_rolled_back("r1", "h0", true, "back on 1");
  EXPECT_EQ(r().hosts(0).state(), tern::v1::HOST_ROLLOUT_STATE_ROLLED_BACK);
}

TEST_F(RolloutAnalysisTest, AHostFailOverTheBudgetRollsTheFleetBack) {
  start("[{hosts: 2, weight: 50}, {percent: 100}]", 4);
  ok("h0");
  ok("h1");
  for (int i = 0; i < 3; ++i) interval("h0", 1000, 0, 0), interval("h1", 1000, 0, 0);
  for (int i = 0; i < 30 && rollbacks_.empty(); ++i) interval("h0", 1000, 50, 10), interval("h1", 1000, 10, 10);
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK) << "the budget is 0 failed hosts";
  EXPECT_EQ(rollbacks_, (std::vector<std::string>{"h0", "h1"}));
  // What shows is the failing host's own numbers, and the verdict.
  EXPECT_EQ(r().analysis().verdict(), "FAIL");
  ASSERT_EQ(r().analysis().metrics_size(), 1);
  EXPECT_EQ(r().analysis().metrics(0).verdict(), "FAIL");
  EXPECT_GT(r().analysis().metrics(0).canary_bad(), 0u);
  EXPECT_NE(r().analysis().message().find("h0 failed on its own counts"), std::string::npos) << r().analysis().message();
}

TEST_F(RolloutAnalysisTest, APooledFailActsEvenAfterThePassWhileTheWaveWaitsAtItsGate) {
  // Two hosts within budget; the wave passes, waits at a manual gate, and a
  // later FAIL (pooled) still rolls back.
  start("[{hosts: 2, weight: 50, gate: manual}, {percent: 100}]", 3, "", "0s");
  ok("h0");
  ok("h1");
  for (int i = 0; i < 3; ++i) interval("h0", 1000, 0, 0), interval("h1", 1000, 0, 0);
  for (int i = 0; i < 80 && r().wave_step() == tern::v1::WAVE_STEP_ANALYZING; ++i) {
    interval("h0", 2000, 10, 10);
    interval("h1", 2000, 10, 10);
    look();
  }
  ASSERT_EQ(r().analysis().verdict(), "PASS") << r().analysis().message();
  ASSERT_EQ(r().wave_step(), tern::v1::WAVE_STEP_AWAITING_APPROVAL);
  for (int i = 0; i < 60 && r().phase() != tern::v1::ROLLOUT_PHASE_ROLLING_BACK; ++i) {
    interval("h0", 2000, 60, 10);
    interval("h1", 2000, 60, 10);
    look();
  }
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK) << r().message();
  EXPECT_EQ(r().analysis().verdict(), "FAIL");
}

TEST_F(RolloutAnalysisTest, NoTrafficEndsInconclusiveAndPausesThenExtendAndPromoteAreAPersonsCalls) {
  start("[{hosts: 1, weight: 10}, {percent: 100}]", 2);
  ok("h0");
  for (int i = 0; i < 64 && r().phase() == tern::v1::ROLLOUT_PHASE_RUNNING; ++i) {
    interval("h0", 0, 0, 0);
    look();
  }
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_PAUSED);
  EXPECT_EQ(r().analysis().verdict(), "INCONCLUSIVE");
  EXPECT_NE(r().message().find("ternctl rollout promote r1"), std::string::npos) << r().message();
  EXPECT_TRUE(rollbacks_.empty()) << "inconclusive never rolls back";
  EXPECT_EQ(r().current_wave(), 0u) << "and never passes";

  // Extend: the same test runs on, for 5 more minutes.
  auto extended = engine_.extend_analysis("r1", r().generation(), Millis(300'000), "more traffic coming");
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_RUNNING);
  EXPECT_EQ(r().analysis().verdict(), "RUNNING");
  EXPECT_EQ(engine_.extend_analysis("r1", r().generation() - 1, Millis(1000), "").status().code(),
            absl::StatusCode::kFailedPrecondition)
      << "a stale generation";
  for (int i = 0; i < 40 && r().phase() == tern::v1::ROLLOUT_PHASE_RUNNING; ++i) look();
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_PAUSED) << "still nothing to judge";

  // Promote accepts the wave.
  auto promoted = engine_.command("r1", r().generation(), RolloutCommand::kPromote, "accepted by alice");
  ASSERT_TRUE(promoted.ok()) << promoted.status();
  EXPECT_EQ(r().analysis().verdict(), "PROMOTED");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_RUNNING);
  EXPECT_EQ(r().current_wave(), 1u);
  EXPECT_TRUE(saw("promoted"));
}

TEST_F(RolloutAnalysisTest, OnFailPauseKeepsTheHostsAndWaits) {
  start("[{hosts: 8, weight: 50}, {percent: 100}]", 9, "", "1m, on_fail: pause");
  for (int h = 0; h < 8; ++h) ok("h" + std::to_string(h));
  for (int i = 0; i < 3; ++i) {
    for (int h = 0; h < 8; ++h) interval("h" + std::to_string(h), 250, 0, 0);
  }
  // Every host a little worse: too little for any one host to fail on its
  // own (its alpha is divided by the wave's 8), enough for the pooled wave.
  for (int i = 0; i < 90 && r().phase() == tern::v1::ROLLOUT_PHASE_RUNNING; ++i) {
    for (int h = 0; h < 8; ++h) interval("h" + std::to_string(h), 250, i % 2 == 0 ? 6 : 5, i % 4 == 0 ? 3 : 2);
    look();
  }
  EXPECT_TRUE(rollbacks_.empty()) << "no host failed on its own";
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_PAUSED) << r().message();
  EXPECT_EQ(r().analysis().verdict(), "FAIL");
  EXPECT_NE(r().message().find("on_fail: pause"), std::string::npos) << r().message();
}

TEST_F(RolloutAnalysisTest, SamplesThatDoNotBelongAreNotCounted) {
  start("[{hosts: 1, weight: 50}, {percent: 100}]", 3);
  EXPECT_EQ(interval("h0", 1000, 0, 0), WaveAnalysis::Taken::kStale) << "still deploying";
  ok("h0");
  EXPECT_EQ(interval("h2", 1000, 0, 0), WaveAnalysis::Taken::kStale) << "a later wave's host";
  tern::v1::AnalysisSample other;
  other.set_service("web");
  other.set_canary_version("3");
  other.add_metrics()->set_name("errors");
  EXPECT_EQ(engine_.on_sample("h0", other), WaveAnalysis::Taken::kStale) << "another release";
  other.set_canary_version("2");
  other.mutable_metrics(0)->set_name("latency");
  EXPECT_EQ(engine_.on_sample("h0", other), WaveAnalysis::Taken::kMismatch);
  EXPECT_EQ(interval("h0", 1'000'000'000, 0, 0), WaveAnalysis::Taken::kImplausible)
      << "one host cannot outweigh the wave with made-up totals";
  EXPECT_EQ(interval("h0", 10, 20, 0), WaveAnalysis::Taken::kImplausible) << "more bad than requests";
  sequences_["h0"] = 1;
  EXPECT_EQ(interval("h0", 1000, 0, 0), WaveAnalysis::Taken::kWarmingUp);
  sequences_["h0"] = 1;
  EXPECT_EQ(interval("h0", 1000, 0, 0), WaveAnalysis::Taken::kStale) << "a repeated sequence";
}

// The stored counts decide again as the engine decided: an equal canary
// passes once the minimum has passed, a worse host fails on its own.
TEST(ReplayWaveTest, StoredCountsGiveTheSameVerdictsAgain) {
  tern::v1::ServiceAnalysis metrics;
  auto* m = metrics.add_metrics();
  m->set_name("errors");
  m->set_max_ratio(1.5);
  m->set_min_excess(0.001);
  tern::v1::AnalysisPolicy policy;
  *policy.mutable_interval() = TimeUtil::MillisecondsToDuration(10'000);
  *policy.mutable_warmup() = TimeUtil::MillisecondsToDuration(20'000);
  *policy.mutable_min_duration() = TimeUtil::MillisecondsToDuration(60'000);
  *policy.mutable_max_duration() = TimeUtil::MillisecondsToDuration(600'000);
  policy.set_confidence(0.99);
  std::vector<std::pair<std::string, tern::v1::AnalysisSample>> samples;
  std::vector<int64_t> times;
  for (uint64_t seq = 1; seq <= 60; ++seq) {
    for (const char* host : {"h0", "h1"}) {
      tern::v1::AnalysisSample s;
      s.set_split_id(1);
      s.set_sequence(seq);
      *s.mutable_since_split() = TimeUtil::MillisecondsToDuration(static_cast<int64_t>(seq) * 10'000);
      auto* c = s.add_metrics();
      c->set_name("errors");
      c->set_canary_total(5000);
      c->set_baseline_total(5000);
      c->set_baseline_bad(50);
      c->set_canary_bad(std::string(host) == "h1" && seq > 2 ? 250 : 50);
      samples.emplace_back(host, s);
      times.push_back(1'000'000 + static_cast<int64_t>(seq) * 10'000);
    }
  }
  auto replayed = replay_wave(0, metrics, policy, 2, samples, times);
  ASSERT_FALSE(replayed.empty());
  EXPECT_EQ(replayed[0].host(), "h1");
  EXPECT_EQ(replayed[0].verdict(), "FAIL");
  EXPECT_NE(replayed[0].message().find("errors FAIL"), std::string::npos) << replayed[0].message();
  ASSERT_GE(replayed.size(), 2u);
  EXPECT_EQ(replayed[1].verdict(), "PASS") << replayed[1].message();
  EXPECT_GE(TimeUtil::TimestampToMilliseconds(replayed[1].time()), 1'000'000 + 20'000 + 60'000)
      << "no PASS before warm-up + min_duration";
}

}  // namespace
}  // namespace tern
