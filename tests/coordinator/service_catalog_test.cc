#include "coordinator/service_catalog.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

tern::v1::ServiceStatus reported(const std::string& active_version, tern::v1::SlotPhase phase, uint32_t weight) {
  tern::v1::ServiceStatus s;
  s.set_service("web");
  auto* idle = s.add_slots();
  idle->set_color(tern::v1::SLOT_COLOR_BLUE);
  idle->mutable_release()->set_version("1.0");
  auto* active = s.add_slots();
  active->set_color(tern::v1::SLOT_COLOR_GREEN);
  active->set_active(true);
  active->mutable_release()->set_version(active_version);
  active->set_phase(phase);
  active->set_weight(weight);
  return s;
}

// Also what a rollout checks an agent's "succeeded" against.
TEST(DriftTest, NoneWhenTheOrderedReleaseServesHealthyAtItsWeight) {
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 100), "2.0", 100), "");
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 30), "2.0", 30), "");
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 100), "2.0", 0), "") << "weight 0 is 100";
}

TEST(DriftTest, SaysWhatTheHostDoesInstead) {
  EXPECT_EQ(drift(reported("1.0", tern::v1::SLOT_PHASE_HEALTHY, 100), "2.0", 100), "runs 1.0, not 2.0");
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_CRASHED, 100), "2.0", 100), "2.0 is crashed");
  EXPECT_EQ(drift(reported("2.0", tern::v1::SLOT_PHASE_HEALTHY, 77), "2.0", 100),
            "2.0 gets 77% of new connections, not 100%");
  tern::v1::ServiceStatus nothing;
  EXPECT_EQ(drift(nothing, "2.0", 100), "nothing is active, not 2.0");
}

TEST(DesiredStoreTest, WhatHostsShouldRunSurvivesAReopenAndGoesWithItsService) {
  auto db = Database::open(":memory:");
  ASSERT_TRUE(db.ok());
  auto store = ServiceStore::open(**db);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->save_desired({"h1", "web", "1.0", 100}).ok());
  ASSERT_TRUE((*store)->save_desired({"h1", "web", "2.0", 20}).ok()) << "a new order replaces the old";
  ASSERT_TRUE((*store)->save_desired({"h2", "api", "3.0", 100}).ok());
  auto again = ServiceStore::open(**db);
  ASSERT_TRUE(again.ok());
  auto all = (*again)->load_desired();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  for (const auto& d : *all) {
    if (d.host_id == "h1") {
      EXPECT_TRUE(d.service == "web" && d.version == "2.0" && d.weight == 20u);
    }
  }
  ASSERT_TRUE((*again)->delete_service("web").ok());
  all = (*again)->load_desired();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().service, "api");
}

}  // namespace
}  // namespace tern
