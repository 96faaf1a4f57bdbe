#include "core/words.h"

#include <set>
#include <string>

#include <gtest/gtest.h>

namespace tern {
namespace {

// Every value of an enum that crosses a process boundary has a word of its
// own: a kind added to the proto without one would show as "unknown".
template <class Enum>
void expect_distinct_words(const google::protobuf::EnumDescriptor* d) {
  std::set<std::string> seen;
  for (int i = 0; i < d->value_count(); ++i) {
    const auto* v = d->value(i);
    if (v->number() == 0) continue;  // UNSPECIFIED
    const std::string w = word(static_cast<Enum>(v->number()));
    EXPECT_NE(w, "unknown") << v->full_name();
    EXPECT_TRUE(seen.insert(w).second) << v->full_name() << " shares the word \"" << w << "\"";
  }
}

TEST(WordsTest, EveryEnumValueHasItsOwnWord) {
  expect_distinct_words<tern::v1::SlotColor>(tern::v1::SlotColor_descriptor());
  expect_distinct_words<tern::v1::SlotPhase>(tern::v1::SlotPhase_descriptor());
  expect_distinct_words<tern::v1::HostState>(tern::v1::HostState_descriptor());
  expect_distinct_words<tern::v1::Role>(tern::v1::Role_descriptor());
  expect_distinct_words<tern::v1::RolloutPhase>(tern::v1::RolloutPhase_descriptor());
  expect_distinct_words<tern::v1::WaveStep>(tern::v1::WaveStep_descriptor());
  expect_distinct_words<tern::v1::HostRolloutState>(tern::v1::HostRolloutState_descriptor());
  expect_distinct_words<tern::v1::RolloutEventKind>(tern::v1::RolloutEventKind_descriptor());
  expect_distinct_words<tern::v1::AgentEventKind>(tern::v1::AgentEventKind_descriptor());
}

TEST(WordsTest, EventKindsReadBackFromTheirWords) {
  for (int i = 1; i < tern::v1::RolloutEventKind_descriptor()->value_count(); ++i) {
    const auto k = static_cast<tern::v1::RolloutEventKind>(tern::v1::RolloutEventKind_descriptor()->value(i)->number());
    EXPECT_EQ(rollout_event_kind(word(k)), k) << word(k);
  }
  for (int i = 1; i < tern::v1::AgentEventKind_descriptor()->value_count(); ++i) {
    const auto k = static_cast<tern::v1::AgentEventKind>(tern::v1::AgentEventKind_descriptor()->value(i)->number());
    EXPECT_EQ(agent_event_kind(word(k)), k) << word(k);
  }
  EXPECT_EQ(rollout_event_kind("no such kind"), std::nullopt);
  // The words the journal has always held, and agents before the enum sent.
  EXPECT_EQ(rollout_event_kind("rolling back"), tern::v1::ROLLOUT_EVENT_KIND_ROLLING_BACK);
  EXPECT_EQ(agent_event_kind("slot_crashed"), tern::v1::AGENT_EVENT_KIND_SLOT_CRASHED);
}

TEST(WordsTest, APhaseChangeRaisesTheEventNamedAfterThePhase) {
  EXPECT_EQ(entered(tern::v1::ROLLOUT_PHASE_ROLLING_BACK), tern::v1::ROLLOUT_EVENT_KIND_ROLLING_BACK);
  EXPECT_EQ(entered(tern::v1::ROLLOUT_PHASE_SUCCEEDED), tern::v1::ROLLOUT_EVENT_KIND_SUCCEEDED);
  EXPECT_STREQ(word(entered(tern::v1::ROLLOUT_PHASE_PAUSED)), word(tern::v1::ROLLOUT_PHASE_PAUSED));
}

TEST(WordsTest, AgentEventsCarryTheWordForOlderCoordinators) {
  auto e = agent_event(tern::v1::AGENT_EVENT_KIND_HEALTH_CHANGED, "web", "green is now unhealthy");
  EXPECT_EQ(e.kind(), tern::v1::AGENT_EVENT_KIND_HEALTH_CHANGED);
  EXPECT_EQ(e.kind_word(), "health_changed");
  EXPECT_EQ(e.service(), "web");
}

TEST(WordsTest, WeightZeroMeansAllOfIt) {
  EXPECT_EQ(effective_weight(0), 100u);
  EXPECT_EQ(effective_weight(20), 20u);
  EXPECT_EQ(effective_weight(100), 100u);
}

}  // namespace
}  // namespace tern
