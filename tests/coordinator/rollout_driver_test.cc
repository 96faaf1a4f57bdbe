#include "coordinator/rollout_driver.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

tern::v1::CommandResult reported(const std::string& active_version, tern::v1::SlotPhase phase, uint32_t weight) {
  tern::v1::CommandResult r;
  r.set_outcome(tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  auto* svc = r.mutable_service();
  svc->set_service("web");
  auto* idle = svc->add_slots();
  idle->set_color(tern::v1::SLOT_COLOR_BLUE);
  idle->mutable_release()->set_version("1.0");
  idle->set_phase(tern::v1::SLOT_PHASE_HEALTHY);
  auto* active = svc->add_slots();
  active->set_color(tern::v1::SLOT_COLOR_GREEN);
  active->set_active(true);
  active->mutable_release()->set_version(active_version);
  active->set_phase(phase);
  active->set_weight(weight);
  return r;
}

TEST(ShortOfDeployedTest, TheReleaseActiveHealthyAtTheWavesWeightIsADeploy) {
  EXPECT_EQ(short_of_deployed(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 100), "2.0", 100), "");
  EXPECT_EQ(short_of_deployed(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 20), "2.0", 20), "");
  // Weight 0 on either side means all of it.
  EXPECT_EQ(short_of_deployed(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 100), "2.0", 0), "");
}

TEST(ShortOfDeployedTest, AnythingElseSaysWhatTheHostReported) {
  EXPECT_EQ(short_of_deployed(reported("1.0", tern::v1::SLOT_PHASE_HEALTHY, 100), "2.0", 100),
            "it reports 1.0 active, not 2.0");
  EXPECT_EQ(short_of_deployed(reported("2.0", tern::v1::SLOT_PHASE_UNHEALTHY, 100), "2.0", 100),
            "it reports 2.0 unhealthy");
  EXPECT_EQ(short_of_deployed(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 20), "2.0", 100),
            "it sends 20% of new connections to 2.0, not 100%");
  tern::v1::CommandResult bare;
  bare.set_outcome(tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(short_of_deployed(bare, "2.0", 100), "its agent reported no status");
  auto none_active = reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 100);
  none_active.mutable_service()->mutable_slots(1)->set_active(false);
  EXPECT_EQ(short_of_deployed(none_active, "2.0", 100), "it reports no active slot");
}

}  // namespace
}  // namespace tern
