// The rollout state machine with a fake clock and recorded effects.
#include "core/words.h"
#include "coordinator/rollout_engine.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/rollout_spec.h"

namespace tern {
namespace {

using tern::v1::HostRolloutState;
using tern::v1::Rollout;

class RolloutEngineTest : public ::testing::Test {
 protected:
  RolloutEngineTest()
      : engine_(clock_, RolloutEffects{
                            [this](const Rollout&, const std::string& host, const tern::v1::ReleaseRef& rel,
                                   uint32_t weight) {
                              deploys_.push_back(host);
                              last_weight_ = weight;
                              last_version_ = rel.version();
                            },
                            [this](const Rollout&, const std::string& host) { rollbacks_.push_back(host); },
                            [this](const Rollout& r, tern::v1::RolloutEventKind kind, const std::string&) {
                              events_.push_back(word(kind));
                              persisted_ = r;
                            },
                            [this](const Rollout&, uint32_t wave, const std::string& webhook) {
                              gates_asked_.push_back(absl::StrCat(webhook, "@", wave));
                            }}) {}

  const Rollout& start(const std::string& yaml, int hosts) {
    auto spec = parse_rollout_spec("service: web\nrelease: '2'\n" + yaml, "r.yaml");
    EXPECT_TRUE(spec.ok()) << spec.status();
    std::vector<PlanHost> fleet;
    for (int i = 0; i < hosts; ++i) fleet.push_back({"h" + std::to_string(i), {}});
    auto plan = plan_rollout(*spec, fleet);
    EXPECT_TRUE(plan.ok()) << plan.status();
    tern::v1::ReleaseRef rel, prev;
    rel.set_version("2");
    prev.set_version("1");
    auto r = engine_.start("r1", *spec, *plan, rel, prev);
    EXPECT_TRUE(r.ok()) << r.status();
    return *engine_.find("r1");
  }
  const Rollout& r() { return *engine_.find("r1"); }
  void ok(const std::string& host) { engine_.on_host_deployed("r1", host, true, {}, "done"); }
  void fail(const std::string& host) {
    engine_.on_host_deployed("r1", host, false, tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE, "never healthy");
  }
  HostRolloutState state(const std::string& host) {
    for (const auto& h : r().hosts()) {
      if (h.host_id() == host) return h.state();
    }
    return tern::v1::HOST_ROLLOUT_STATE_UNSPECIFIED;
  }
  bool saw(const std::string& kind) { return std::find(events_.begin(), events_.end(), kind) != events_.end(); }

  FakeClock clock_;
  RolloutEngine engine_;
  std::vector<std::string> deploys_, rollbacks_, events_, gates_asked_;
  uint32_t last_weight_ = 0;
  std::string last_version_;
  Rollout persisted_;
};

TEST_F(RolloutEngineTest, WavesBakeThenSucceed) {
  start("waves: [{hosts: 1, bake: 1m}, {percent: 100}]", 4);
  EXPECT_EQ(deploys_, (std::vector<std::string>{"h0"}));
  EXPECT_EQ(last_version_, "2");
  ok("h0");
  EXPECT_EQ(r().wave_step(), tern::v1::WAVE_STEP_BAKING);
  clock_.advance(Millis(59'000));
  engine_.tick();
  EXPECT_EQ(r().current_wave(), 0u) << "still baking";
  clock_.advance(Millis(1'000));
  engine_.tick();
  EXPECT_EQ(r().current_wave(), 1u);
  EXPECT_EQ(deploys_.size(), 4u);
  ok("h1"), ok("h2"), ok("h3");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  EXPECT_TRUE(saw("wave_baking"));
  EXPECT_EQ(persisted_.phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED) << "every transition is persisted";
}

TEST_F(RolloutEngineTest, AGatedWaveDeploysNothingUntilItsWebhookAllowsIt) {
  start("waves: [{hosts: 1}, {percent: 100, gate_webhook: change-freeze}]", 3);
  ok("h0");
  ASSERT_EQ(r().current_wave(), 1u);
  EXPECT_EQ(r().wave_step(), tern::v1::WAVE_STEP_AWAITING_GATE);
  EXPECT_EQ(gates_asked_, (std::vector<std::string>{"change-freeze@1"}));
  EXPECT_EQ(deploys_, (std::vector<std::string>{"h0"})) << "nothing of wave 2 before its gate";
  EXPECT_TRUE(saw("gate_waiting"));
  clock_.advance(Millis(3'600'000));
  engine_.tick();
  EXPECT_EQ(deploys_.size(), 1u) << "a gate has no timer of its own: the webhook's answer decides";
  auto promote = engine_.command("r1", r().generation(), RolloutCommand::kPromote, "");
  EXPECT_EQ(promote.status().code(), absl::StatusCode::kFailedPrecondition) << "only the webhook can allow it";
  engine_.on_gate_answer("r1", 1, true, "");
  EXPECT_TRUE(saw("gate_passed"));
  EXPECT_EQ(r().wave_step(), tern::v1::WAVE_STEP_DEPLOYING);
  EXPECT_EQ(deploys_.size(), 3u);
  ok("h1"), ok("h2");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
}

TEST_F(RolloutEngineTest, AGatesNoPausesTheRolloutAndAResumeAsksAgain) {
  start("waves: [{hosts: 1, gate_webhook: cab}, {percent: 100}]", 2);
  ASSERT_EQ(gates_asked_, (std::vector<std::string>{"cab@0"})) << "a gate holds the first wave too";
  EXPECT_TRUE(deploys_.empty());
  engine_.on_gate_answer("r1", 0, false, "HTTP 403: \"change freeze\"");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_PAUSED);
  EXPECT_NE(r().message().find("webhook cab did not allow wave 1: HTTP 403"), std::string::npos) << r().message();
  EXPECT_TRUE(rollbacks_.empty()) << "a denial never rolls back";
  engine_.on_gate_answer("r1", 0, true, "") ;
  EXPECT_TRUE(deploys_.empty()) << "a late answer to a paused rollout changes nothing";
  auto resumed = engine_.command("r1", r().generation(), RolloutCommand::kResume, "");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(gates_asked_.size(), 2u) << "asked again";
  EXPECT_TRUE(deploys_.empty());
  engine_.on_gate_answer("r1", 0, true, "");
  EXPECT_EQ(deploys_, (std::vector<std::string>{"h0"}));
}

TEST_F(RolloutEngineTest, AGateWaitingWhenTheCoordinatorDiedIsAskedAgain) {
  start("waves: [{hosts: 1}, {percent: 100, gate_webhook: cab}]", 2);
  ok("h0");
  ASSERT_EQ(persisted_.wave_step(), tern::v1::WAVE_STEP_AWAITING_GATE);
  const Rollout journaled = persisted_;
  std::vector<std::string> asked, deployed;
  RolloutEngine fresh(clock_, RolloutEffects{
                                  [&](const Rollout&, const std::string& host, const tern::v1::ReleaseRef&,
                                      uint32_t) { deployed.push_back(host); },
                                  nullptr, [](const Rollout&, tern::v1::RolloutEventKind, const std::string&) {},
                                  [&](const Rollout&, uint32_t wave, const std::string& webhook) {
                                    asked.push_back(absl::StrCat(webhook, "@", wave));
                                  }});
  fresh.restore(journaled);
  EXPECT_EQ(asked, (std::vector<std::string>{"cab@1"}));
  EXPECT_TRUE(deployed.empty());
  fresh.on_gate_answer("r1", 1, true, "");
  EXPECT_EQ(deployed, (std::vector<std::string>{"h1"}));
}

TEST_F(RolloutEngineTest, AHostChangedByHandIsMarkedDriftedAndTheOutcomeSaysSo) {
  start("waves: [{hosts: 1}, {percent: 100}]", 3);
  ok("h0");
  ASSERT_TRUE(engine_.on_host_changed_by_hand("r1", "h0", "rollback web by hand (forced)").ok());
  EXPECT_TRUE(saw("host_changed_by_hand"));
  EXPECT_TRUE(persisted_.hosts(0).drifted()) << "journaled with the host marked";
  EXPECT_EQ(engine_.on_host_changed_by_hand("r1", "h9", "x").code(), absl::StatusCode::kNotFound);
  ok("h1"), ok("h2");
  ASSERT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  EXPECT_EQ(r().message().find("is on all"), std::string::npos) << r().message();
  EXPECT_NE(r().message().find("1 of them changed by hand"), std::string::npos) << r().message();
}

// {hosts: 1, weight: 20} then {percent: 100}: the canary is raised to the
// last wave's weight before the rollout can succeed, not left at 20%.
TEST_F(RolloutEngineTest, TheLastWaveRaisesEarlierWavesToItsWeight) {
  start("waves: [{hosts: 1, weight: 20}, {percent: 100}]", 3);
  ASSERT_EQ(deploys_, (std::vector<std::string>{"h0"}));
  EXPECT_EQ(last_weight_, 20u);
  ok("h0");
  ASSERT_EQ(r().current_wave(), 1u);
  ok("h1"), ok("h2");
  ASSERT_EQ(deploys_.size(), 4u);
  EXPECT_EQ(deploys_.back(), "h0") << "the canary is deployed again";
  EXPECT_EQ(last_weight_, 100u);
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_RUNNING) << "not done while the canary sends 80% elsewhere";
  ok("h0");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  for (const auto& h : r().hosts()) EXPECT_EQ(h.weight(), 100u) << h.host_id();
}

TEST_F(RolloutEngineTest, ALastWaveWithALowerWeightSaysSoAndRaisesNothingAboveIt) {
  start("waves: [{hosts: 1, weight: 10}, {percent: 100, weight: 50}]", 2);
  ok("h0");
  ok("h1");
  ASSERT_EQ(deploys_, (std::vector<std::string>{"h0", "h1", "h0"}));
  EXPECT_EQ(last_weight_, 50u);
  ok("h0");
  ASSERT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  EXPECT_NE(r().message().find("taking 50% of new connections"), std::string::npos) << r().message();
}

TEST_F(RolloutEngineTest, ARaiseInFlightIsSentAgainAfterARestart) {
  start("waves: [{hosts: 1, weight: 20}, {percent: 100}]", 2);
  ok("h0");
  ok("h1");
  ASSERT_EQ(deploys_.back(), "h0");
  const Rollout journaled = persisted_;
  RolloutEngine fresh(clock_, RolloutEffects{[&](const Rollout&, const std::string& host,
                                                 const tern::v1::ReleaseRef&, uint32_t weight) {
                                               deploys_.push_back(host + "@" + std::to_string(weight));
                                             },
                                             nullptr, nullptr});
  fresh.restore(journaled);
  EXPECT_EQ(deploys_.back(), "h0@100");
  fresh.on_host_deployed("r1", "h0", true, {}, "done");
  EXPECT_EQ(fresh.find("r1")->phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
}

TEST_F(RolloutEngineTest, MaxParallelLimitsDeploysInFlight) {
  start("waves: [{percent: 100}]\nmax_parallel: 2", 5);
  EXPECT_EQ(deploys_.size(), 2u);
  ok(deploys_[0]);
  EXPECT_EQ(deploys_.size(), 3u);
  ok(deploys_[1]), ok(deploys_[2]);
  EXPECT_EQ(deploys_.size(), 5u);
  ok(deploys_[3]), ok(deploys_[4]);
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
}

TEST_F(RolloutEngineTest, MaxParallelDispatchesEachHostOnceWhateverOrderAnswersComeIn) {
  start("waves: [{hosts: 2}, {percent: 100}]\nmax_parallel: 3\nfailure_budget: {max_failed_hosts: 5}", 12);
  engine_.on_host_gone("h5", "cut off");  // its turn comes later in the second wave
  ok("h1"), ok("h0");                     // out of order
  ASSERT_EQ(r().current_wave(), 1u);
  // Answer the newest deploy first each time, so the in-flight window moves
  // over the wave unevenly.
  for (int guard = 0; guard < 100 && r().phase() == tern::v1::ROLLOUT_PHASE_RUNNING; ++guard) {
    ok(deploys_.back());
    for (const auto& h : r().hosts()) {
      if (h.state() == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING) ok(h.host_id());
    }
  }
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  std::set<std::string> unique(deploys_.begin(), deploys_.end());
  EXPECT_EQ(unique.size(), deploys_.size()) << "a host was sent its deploy twice";
  EXPECT_EQ(deploys_.size(), 11u) << "every host but the unreachable one";
  EXPECT_EQ(unique.count("h5"), 0u);
  EXPECT_EQ(state("h5"), tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE);
  EXPECT_EQ(r().failed_hosts(), 1u);
}

TEST(RolloutEngineScaleTest, TenThousandHostsRollOutAndBackWithEachHostAskedOnce) {
  // Effects that only count (the fixture's copy of the whole rollout per
  // event would be the slow part here).
  FakeClock clock;
  std::vector<std::string> deploys, rollbacks;
  std::size_t events = 0;
  RolloutEngine engine(clock, RolloutEffects{
                                  [&](const Rollout&, const std::string& host, const tern::v1::ReleaseRef&, uint32_t) {
                                    deploys.push_back(host);
                                  },
                                  [&](const Rollout&, const std::string& host) { rollbacks.push_back(host); },
                                  [&](const Rollout&, tern::v1::RolloutEventKind, const std::string&) { ++events; }});
  auto spec = parse_rollout_spec("service: web\nrelease: '2'\nwaves: [{hosts: 1}, {percent: 10}, {percent: 50}, {percent: 100}]",
                                 "r.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::vector<PlanHost> fleet;
  for (int i = 0; i < 10'000; ++i) fleet.push_back({"h" + std::to_string(i), {}});
  auto plan = plan_rollout(*spec, fleet);
  ASSERT_TRUE(plan.ok()) << plan.status();
  tern::v1::ReleaseRef rel, prev;
  rel.set_version("2");
  prev.set_version("1");
  ASSERT_TRUE(engine.start("r1", *spec, *plan, rel, prev).ok());
  auto phase = [&] { return engine.find("r1")->phase(); };

  for (std::size_t i = 0; i < deploys.size(); ++i) engine.on_host_deployed("r1", deploys[i], true, {}, "");  // grows as waves start
  ASSERT_EQ(phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  EXPECT_EQ(deploys.size(), 10'000u);
  EXPECT_EQ(std::set<std::string>(deploys.begin(), deploys.end()).size(), 10'000u);
  EXPECT_GE(events, 10'000u) << "one event per host on the new release at least";

  ASSERT_TRUE(engine.command("r1", engine.find("r1")->generation(), RolloutCommand::kRollback, "").ok());
  EXPECT_EQ(rollbacks.size(), 10'000u);
  for (std::size_t i = 0; i + 1 < rollbacks.size(); ++i) engine.on_host_rolled_back("r1", rollbacks[i], true, "");
  EXPECT_EQ(phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK) << "one flip still unanswered";
  engine.on_host_rolled_back("r1", rollbacks.back(), true, "");
  EXPECT_EQ(phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK);
  ASSERT_NE(engine.host("r1", "h9999"), nullptr);
  EXPECT_EQ(engine.host("r1", "h9999")->state(), tern::v1::HOST_ROLLOUT_STATE_ROLLED_BACK);
  EXPECT_EQ(engine.host("r1", "h10000"), nullptr);
}

TEST_F(RolloutEngineTest, AFailureOverTheBudgetRollsBackEveryHostOnTheNewRelease) {
  start("waves: [{hosts: 2}, {percent: 100}]", 4);
  ok("h0");
  fail("h1");  // default budget: none
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK);
  EXPECT_EQ(rollbacks_, (std::vector<std::string>{"h0"})) << "only hosts that reached 2 flip back";
  EXPECT_EQ(r().failed_hosts(), 1u);
  engine_.on_host_rolled_back("r1", "h0", true, "flipped");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK);
  EXPECT_EQ(state("h0"), tern::v1::HOST_ROLLOUT_STATE_ROLLED_BACK);
  EXPECT_EQ(state("h2"), tern::v1::HOST_ROLLOUT_STATE_WAITING) << "later waves never started";
}

TEST_F(RolloutEngineTest, FailuresWithinTheBudgetAreCountedNotFatal) {
  start("waves: [{percent: 100}]\nfailure_budget: {max_failed_hosts: 1}", 4);
  fail("h0");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_RUNNING);
  ok("h1"), ok("h2");
  fail("h3");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK);
}

TEST_F(RolloutEngineTest, PercentBudgetRoundsDown) {
  // 10% of 20 hosts: 2 may fail, the third may not.
  start("waves: [{percent: 100}]\nfailure_budget: {max_failed_percent: 10}", 20);
  fail("h0"), fail("h1");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_RUNNING);
  fail("h2");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK);
}

TEST_F(RolloutEngineTest, PerWaveBudget) {
  start("waves: [{hosts: 2}, {percent: 100}]\nfailure_budget: {max_failed_hosts: 5, max_failed_per_wave: 1}", 6);
  fail("h0");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_RUNNING);
  fail("h1");
  // Over the per-wave budget; no host had reached 2, so nothing needs flipping.
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK);
  EXPECT_TRUE(rollbacks_.empty());
}

TEST_F(RolloutEngineTest, OnFailurePausePausesAndResumeContinues) {
  start("waves: [{hosts: 1}, {percent: 100}]\non_failure: pause", 3);
  fail("h0");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_PAUSED);
  auto resumed = engine_.command("r1", r().generation(), RolloutCommand::kResume, "known flake");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(r().current_wave(), 1u);
  ok("h1"), ok("h2");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
}

TEST_F(RolloutEngineTest, UnhealthyDuringBakeCounts) {
  start("waves: [{hosts: 1, bake: 5m}, {percent: 100}]", 3);
  ok("h0");
  engine_.on_host_unhealthy("web", "h0", "HTTP 503");
  EXPECT_EQ(state("h0"), tern::v1::HOST_ROLLOUT_STATE_UNHEALTHY);
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK);
  EXPECT_EQ(rollbacks_, (std::vector<std::string>{"h0"}));
}

TEST_F(RolloutEngineTest, ManualGateWaitsForPromoteAndRefusesAStaleOne) {
  start("waves: [{hosts: 1, gate: manual}, {percent: 100}]", 2);
  ok("h0");
  engine_.tick();
  EXPECT_EQ(r().wave_step(), tern::v1::WAVE_STEP_AWAITING_APPROVAL);
  clock_.advance(Millis(3'600'000));
  engine_.tick();
  EXPECT_EQ(r().wave_step(), tern::v1::WAVE_STEP_AWAITING_APPROVAL) << "a gate waits for a person";
  const uint64_t gen = r().generation();
  auto stale = engine_.command("r1", gen - 1, RolloutCommand::kPromote, "");
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r().wave_step(), tern::v1::WAVE_STEP_AWAITING_APPROVAL) << "refused means unchanged";
  ASSERT_TRUE(engine_.command("r1", gen, RolloutCommand::kPromote, "").ok());
  EXPECT_EQ(r().current_wave(), 1u);
  ok("h1");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
}

TEST_F(RolloutEngineTest, CommandsAreIdempotentAndFenced) {
  start("waves: [{percent: 100}]", 2);
  const uint64_t gen = r().generation();
  ASSERT_TRUE(engine_.command("r1", gen, RolloutCommand::kPause, "").ok());
  const uint64_t paused = r().generation();
  EXPECT_GT(paused, gen);
  ASSERT_TRUE(engine_.command("r1", paused, RolloutCommand::kPause, "").ok()) << "pausing twice is fine";
  EXPECT_EQ(r().generation(), paused);
  EXPECT_FALSE(engine_.command("r1", gen, RolloutCommand::kResume, "").ok()) << "a racing command";
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_PAUSED);
  ok("h0"), ok("h1");  // results still land while paused
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_PAUSED);
  ASSERT_TRUE(engine_.command("r1", paused, RolloutCommand::kResume, "").ok());
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  EXPECT_FALSE(engine_.command("r1", r().generation(), RolloutCommand::kPause, "").ok()) << "nothing to pause";
}

TEST_F(RolloutEngineTest, NoAnswerWithinTheProgressDeadlineCountsAsGone) {
  start("waves: [{percent: 100}]\nprogress_deadline: 30s\nfailure_budget: {max_failed_hosts: 1}", 2);
  ok("h0");
  clock_.advance(Millis(31'000));
  engine_.tick();
  EXPECT_EQ(state("h1"), tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE);
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED) << "one failure was within the budget";
}

TEST_F(RolloutEngineTest, UnreachableHostsAreRolledBackWhenTheyReturn) {
  start("waves: [{hosts: 2, bake: 1m}, {percent: 100}]\nfailure_budget: {max_failed_hosts: 1}", 4);
  ok("h0"), ok("h1");
  engine_.on_host_gone("h1", "agent gone");  // counted: 1, within budget
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_RUNNING);
  ASSERT_TRUE(engine_.command("r1", r().generation(), RolloutCommand::kRollback, "bad metrics").ok());
  EXPECT_EQ(rollbacks_, (std::vector<std::string>{"h0"})) << "h1 cannot be reached yet";
  engine_.on_host_rolled_back("r1", "h0", true, "");
  // An absent host does not hold the rollout (or the service's next one) open.
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK);
  EXPECT_NE(r().message().find("h1"), std::string::npos) << r().message();
  EXPECT_FALSE(RolloutEngine::is_settled(r())) << "h1 still owes its rollback";
  engine_.on_host_back("h1");
  EXPECT_EQ(rollbacks_.back(), "h1");
  engine_.on_host_back("h1");
  EXPECT_EQ(std::count(rollbacks_.begin(), rollbacks_.end(), "h1"), 1) << "one flip in flight at a time";
  engine_.on_host_rolled_back("r1", "h1", true, "");
  EXPECT_EQ(state("h1"), tern::v1::HOST_ROLLOUT_STATE_ROLLED_BACK);
  EXPECT_TRUE(RolloutEngine::is_settled(r()));
}

TEST_F(RolloutEngineTest, AFlipThatFailsOnAReachableHostEndsTheRollbackAsFailedAndCanBeRetried) {
  start("waves: [{percent: 100}]", 3);
  ok("h0"), ok("h1");
  fail("h2");
  ASSERT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK);
  engine_.on_host_rolled_back("r1", "h0", true, "");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK) << "h1's flip is still in flight";
  engine_.on_host_rolled_back("r1", "h1", false, "the previous release would not start");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_FAILED) << "bounded: no waiting forever";
  EXPECT_NE(r().message().find("h1"), std::string::npos) << r().message();
  rollbacks_.clear();
  ASSERT_TRUE(engine_.command("r1", r().generation(), RolloutCommand::kRollback, "fixed h1").ok());
  EXPECT_EQ(rollbacks_, (std::vector<std::string>{"h1"})) << "only the host still owed";
  engine_.on_host_rolled_back("r1", "h1", true, "");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK);
  EXPECT_TRUE(RolloutEngine::is_settled(r()));
}

TEST_F(RolloutEngineTest, ADeployLandingDuringRollbackIsFlippedBackToo) {
  start("waves: [{percent: 100}]", 3);
  ok("h0");
  fail("h1");  // rollback starts while h2 is still deploying
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK);
  engine_.on_host_rolled_back("r1", "h0", true, "");
  engine_.on_host_rolled_back("r1", "h2", true, "nothing to do yet");
  ok("h2");
  EXPECT_EQ(rollbacks_.back(), "h2");
}

TEST_F(RolloutEngineTest, ADeployFailingDuringRollbackDoesNotHoldItOpen) {
  start("waves: [{percent: 100}]", 2);
  fail("h0");  // rollback begins while h1 is deploying; its flip is sent
  ASSERT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK);
  fail("h1");  // then its deploy fails: never switched
  EXPECT_EQ(state("h1"), tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE);
  engine_.on_host_rolled_back("r1", "h1", true, "nothing to flip");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK);
}

TEST_F(RolloutEngineTest, OneActiveRolloutPerService) {
  start("waves: [{percent: 100}]", 2);
  auto spec = parse_rollout_spec("service: web\nrelease: '3'\n", "r.yaml");
  auto plan = plan_rollout(*spec, {{"h0", {}}});
  auto second = engine_.start("r2", *spec, *plan, {}, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(second.status().message()).find("r1"), std::string::npos);
}

TEST_F(RolloutEngineTest, RestoreRedoesOnlyWhatWasInFlight) {
  start("waves: [{hosts: 2}, {percent: 100}]", 4);
  ok("h0");  // h1 still deploying when the coordinator dies
  const Rollout journal = persisted_;
  FakeClock clock2;
  std::vector<std::string> deploys2;
  RolloutEngine after(clock2, RolloutEffects{
                                  [&](const Rollout&, const std::string& host, const tern::v1::ReleaseRef&, uint32_t) {
                                    deploys2.push_back(host);
                                  },
                                  nullptr, nullptr});
  after.restore(journal);
  EXPECT_EQ(deploys2, (std::vector<std::string>{"h1"})) << "h0 finished and is not redone";
  after.on_host_deployed("r1", "h1", true, {}, "");
  EXPECT_EQ(deploys2, (std::vector<std::string>{"h1", "h2", "h3"})) << "the next wave goes on";
}

TEST_F(RolloutEngineTest, AbortFreezesWhereItStands) {
  start("waves: [{hosts: 1, bake: 1m}, {percent: 100}]", 3);
  ok("h0");
  ASSERT_TRUE(engine_.command("r1", r().generation(), RolloutCommand::kAbort, "").ok());
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ABORTED);
  clock_.advance(Millis(120'000));
  engine_.tick();
  EXPECT_EQ(deploys_.size(), 1u) << "an aborted rollout deploys nothing more";
  ASSERT_TRUE(engine_.command("r1", r().generation(), RolloutCommand::kRollback, "").ok());
  EXPECT_EQ(rollbacks_, (std::vector<std::string>{"h0"}));
}


TEST_F(RolloutEngineTest, BudgetsOnTinyFleets) {
  // 50% of 1 host rounds down to none; of 2 hosts, one; of 3 hosts, one.
  struct Case {
    int hosts;
    int failures_allowed;
  };
  for (const Case c : {Case{1, 0}, Case{2, 1}, Case{3, 1}}) {
    FakeClock clock;
    std::vector<std::string> sent;
    RolloutEngine engine(clock, RolloutEffects{[&](const Rollout&, const std::string& host,
                                                   const tern::v1::ReleaseRef&, uint32_t) { sent.push_back(host); },
                                               nullptr, nullptr});
    auto spec = parse_rollout_spec("service: web\nrelease: '2'\nwaves: [{percent: 100}]\n"
                                   "failure_budget: {max_failed_percent: 50}\n",
                                   "r.yaml");
    ASSERT_TRUE(spec.ok()) << spec.status();
    std::vector<PlanHost> fleet;
    for (int i = 0; i < c.hosts; ++i) fleet.push_back({"h" + std::to_string(i), {}});
    auto plan = plan_rollout(*spec, fleet);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_TRUE(engine.start("r", *spec, *plan, {}, {}).ok());
    for (int i = 0; i < c.hosts; ++i) {
      engine.on_host_deployed("r", "h" + std::to_string(i), false, tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE, "x");
      const bool within = i + 1 <= c.failures_allowed;
      EXPECT_EQ(engine.find("r")->phase() == tern::v1::ROLLOUT_PHASE_RUNNING ||
                    engine.find("r")->phase() == tern::v1::ROLLOUT_PHASE_SUCCEEDED,
                within)
          << c.hosts << " hosts, failure " << i + 1;
      if (!within) break;
    }
  }
}

TEST_F(RolloutEngineTest, ARollbackOfASucceededRolloutFlipsEveryHost) {
  start("waves: [{percent: 100}]", 3);
  ok("h0"), ok("h1"), ok("h2");
  ASSERT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  ASSERT_TRUE(engine_.command("r1", r().generation(), RolloutCommand::kRollback, "").ok());
  EXPECT_EQ(rollbacks_, (std::vector<std::string>{"h0", "h1", "h2"})) << "all at once, not wave by wave";
  const uint64_t gen = r().generation();
  ASSERT_TRUE(engine_.command("r1", gen, RolloutCommand::kRollback, "").ok()) << "idempotent";
  EXPECT_EQ(rollbacks_.size(), 3u) << "a repeated rollback sends nothing twice";
  for (const char* h : {"h0", "h1", "h2"}) engine_.on_host_rolled_back("r1", h, true, "");
  EXPECT_EQ(r().phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK);
}

// Restart at every point of the journal: a new engine restored from each
// persisted snapshot finishes the rollout the same way, without deploying
// again to a host that had already finished, and without leaving a host on
// the new release after a rollback.
class RolloutRestartTest : public ::testing::TestWithParam<bool> {};

struct Journal {
  std::vector<Rollout> snapshots;
};

// Runs a rollout over 5 hosts in waves [1, 2, rest] (bake 1m, a manual gate
// after the second wave), answering every deploy; with `failing`, h3 fails
// its stage (no budget: rollback). Records every persisted snapshot.
Journal record_journal(bool failing) {
  Journal j;
  FakeClock clock;
  std::vector<std::string> pending;
  RolloutEngine engine(clock, RolloutEffects{[&](const Rollout&, const std::string& host,
                                                 const tern::v1::ReleaseRef&, uint32_t) { pending.push_back(host); },
                                             [&](const Rollout&, const std::string& host) {
                                               pending.push_back("rollback:" + host);
                                             },
                                             [&](const Rollout& r, tern::v1::RolloutEventKind, const std::string&) {
                                               j.snapshots.push_back(r);
                                             }});
  auto spec = parse_rollout_spec(
      "service: web\nrelease: '2'\nwaves: [{hosts: 1, bake: 1m}, {hosts: 2, gate: manual}, {percent: 100}]\n",
      "r.yaml");
  std::vector<PlanHost> fleet;
  for (int i = 0; i < 5; ++i) fleet.push_back({"h" + std::to_string(i), {}});
  auto plan = plan_rollout(*spec, fleet);
  EXPECT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(engine.start("r", *spec, *plan, {}, {}).ok());
  for (int step = 0; step < 100 && !RolloutEngine::is_terminal(engine.find("r")->phase()); ++step) {
    auto work = std::exchange(pending, {});
    for (const auto& w : work) {
      if (w.rfind("rollback:", 0) == 0) {
        engine.on_host_rolled_back("r", w.substr(9), true, "");
      } else {
        const bool ok = !(failing && w == "h3");
        engine.on_host_deployed("r", w, ok, tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE, "");
      }
    }
    if (engine.find("r")->wave_step() == tern::v1::WAVE_STEP_AWAITING_APPROVAL) {
      EXPECT_TRUE(engine.command("r", engine.find("r")->generation(), RolloutCommand::kPromote, "").ok());
    }
    clock.advance(Millis(30'000));
    engine.tick();
  }
  return j;
}

TEST_P(RolloutRestartTest, EveryJournalSnapshotResumesToTheSameEnd) {
  const bool failing = GetParam();
  const Journal j = record_journal(failing);
  ASSERT_GT(j.snapshots.size(), 8u);
  const auto want = j.snapshots.back().phase();
  ASSERT_EQ(want, failing ? tern::v1::ROLLOUT_PHASE_ROLLED_BACK : tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  for (std::size_t k = 0; k < j.snapshots.size(); ++k) {
    const Rollout& snap = j.snapshots[k];
    SCOPED_TRACE("restored from snapshot " + std::to_string(k) + ": " + snap.message());
    std::set<std::string> finished;  // hosts the snapshot already has on the new release
    for (const auto& h : snap.hosts()) {
      if (h.state() == tern::v1::HOST_ROLLOUT_STATE_ON_NEW) finished.insert(h.host_id());
    }
    FakeClock clock;
    clock.advance(Millis(10'000'000));  // the restart happens later in wall time
    std::vector<std::string> pending;
    std::set<std::string> on_new, rolled_back;
    RolloutEngine engine(clock, RolloutEffects{[&](const Rollout&, const std::string& host,
                                                   const tern::v1::ReleaseRef&,
                                                   uint32_t) { pending.push_back(host); },
                                               [&](const Rollout&, const std::string& host) {
                                                 pending.push_back("rollback:" + host);
                                               },
                                               nullptr});
    engine.restore(snap);
    for (int step = 0; step < 100 && !RolloutEngine::is_terminal(engine.find("r")->phase()); ++step) {
      for (const auto& w : std::exchange(pending, {})) {
        if (w.rfind("rollback:", 0) == 0) {
          rolled_back.insert(w.substr(9));
          on_new.erase(w.substr(9));
          engine.on_host_rolled_back("r", w.substr(9), true, "");
          continue;
        }
        EXPECT_EQ(finished.count(w), 0u) << w << " had finished before the restart and was deployed again";
        const bool ok = !(failing && w == "h3");
        if (ok) on_new.insert(w);
        engine.on_host_deployed("r", w, ok, tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE, "");
      }
      const auto& r = *engine.find("r");
      if (r.wave_step() == tern::v1::WAVE_STEP_AWAITING_APPROVAL && r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING) {
        ASSERT_TRUE(engine.command("r", r.generation(), RolloutCommand::kPromote, "").ok());
      }
      clock.advance(Millis(30'000));
      engine.tick();
    }
    const auto& r = *engine.find("r");
    EXPECT_EQ(r.phase(), want);
    if (failing) {
      for (const auto& h : r.hosts()) {
        EXPECT_NE(h.state(), tern::v1::HOST_ROLLOUT_STATE_ON_NEW) << h.host_id() << " left on the new release";
        EXPECT_FALSE(h.rollback_pending()) << h.host_id();
      }
      for (const auto& host : finished) {
        if (snap.phase() != tern::v1::ROLLOUT_PHASE_ROLLED_BACK) {
          EXPECT_TRUE(rolled_back.count(host) || [&] {
            for (const auto& h : snap.hosts()) {
              if (h.host_id() == host) return !h.rollback_pending() && snap.phase() == tern::v1::ROLLOUT_PHASE_ROLLING_BACK;
            }
            return false;
          }()) << host << " was on the new release and was never flipped back";
        }
      }
    } else {
      for (const auto& h : r.hosts()) EXPECT_EQ(h.state(), tern::v1::HOST_ROLLOUT_STATE_ON_NEW) << h.host_id();
      EXPECT_EQ(finished.size() + on_new.size(), 5u) << "every host deployed exactly once over both lives";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Journal, RolloutRestartTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "FailingRollsBack" : "Succeeds"; });

TEST_F(RolloutEngineTest, APausedRolloutRestoredWithADeployInFlightRedeploysItOnResume) {
  start("waves: [{percent: 100}]\nprogress_deadline: 1m", 2);
  ok("h0");
  ASSERT_TRUE(engine_.command("r1", r().generation(), RolloutCommand::kPause, "").ok());
  const Rollout journal = persisted_;  // h1 still deploying; its answer dies with the coordinator
  FakeClock clock2;
  std::vector<std::string> deploys2;
  RolloutEngine after(clock2, RolloutEffects{[&](const Rollout&, const std::string& host,
                                                 const tern::v1::ReleaseRef&, uint32_t) { deploys2.push_back(host); },
                                             nullptr, nullptr});
  after.restore(journal);
  EXPECT_TRUE(deploys2.empty()) << "paused: nothing is sent";
  clock2.advance(Millis(600'000));
  after.tick();
  ASSERT_TRUE(after.command("r1", after.find("r1")->generation(), RolloutCommand::kResume, "").ok());
  EXPECT_EQ(deploys2, (std::vector<std::string>{"h1"})) << "asked again, not counted as gone";
  after.on_host_deployed("r1", "h1", true, {}, "");
  EXPECT_EQ(after.find("r1")->phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  EXPECT_EQ(after.find("r1")->failed_hosts(), 0u);
}

}  // namespace
}  // namespace tern
