// The rollout journal in a real SQLite file, with the engine writing to it
// and a "restart" that reopens the file and restores from it.
#include "coordinator/rollout_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "coordinator/rollout_engine.h"
#include "core/rollout_spec.h"

namespace tern {
namespace {

using tern::v1::Rollout;

class RolloutStoreTest : public ::testing::Test {
 protected:
  RolloutStoreTest()
      : path_(std::filesystem::temp_directory_path() /
              ("tern-rollout-store-" + std::to_string(::getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".db")) {
    std::filesystem::remove(path_);
  }
  ~RolloutStoreTest() override {
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_.string() + suffix);
  }

  // A coordinator's life: the database opened, the engine journaling into it.
  struct Life {
    std::unique_ptr<Database> db;
    std::unique_ptr<RolloutStore> store;
    std::unique_ptr<RolloutEngine> engine;
    std::vector<std::string> rollbacks;
  };
  std::unique_ptr<Life> boot() {
    auto life = std::make_unique<Life>();
    auto db = Database::open(path_.string());
    EXPECT_TRUE(db.ok()) << db.status();
    life->db = *std::move(db);
    auto store = RolloutStore::open(*life->db);
    EXPECT_TRUE(store.ok()) << store.status();
    life->store = *std::move(store);
    Life* l = life.get();
    life->engine = std::make_unique<RolloutEngine>(
        clock_, RolloutEffects{nullptr, [l](const Rollout&, const std::string& host) { l->rollbacks.push_back(host); },
                               [l, this](const Rollout& r, const std::string& kind, const std::string& message) {
                                 // One event per transaction here; the coordinator batches.
                                 const int64_t now = to_unix_millis(clock_.now());
                                 auto seq = l->store->record_batch({{r, kind, message, now}}, {&r}, now);
                                 ASSERT_TRUE(seq.ok()) << seq.status();
                               }});
    auto active = life->store->load_active();
    EXPECT_TRUE(active.ok()) << active.status();
    for (const auto& r : *active) life->engine->restore(r);
    return life;
  }

  std::filesystem::path path_;
  FakeClock clock_;
};

TEST_F(RolloutStoreTest, ARolloutOwingAnAbsentHostItsRollbackSurvivesRestartsUntilItIsFlipped) {
  auto life = boot();
  auto spec = parse_rollout_spec("service: web\nrelease: '2'\nwaves: [{percent: 100}]\n", "r.yaml");
  ASSERT_TRUE(spec.ok());
  auto plan = plan_rollout(*spec, {{"h0", {}}, {"h1", {}}, {"h2", {}}});
  ASSERT_TRUE(plan.ok());
  ASSERT_TRUE(life->engine->start("web-1", *spec, *plan, {}, {}).ok());
  life->engine->on_host_deployed("web-1", "h0", true, {}, "");
  life->engine->on_host_deployed("web-1", "h1", true, {}, "");
  life->engine->on_host_gone("h1", "link down");  // over the (empty) budget: rollback; h1 is away
  life->engine->on_host_rolled_back("web-1", "h0", true, "");
  life->engine->on_host_rolled_back("web-1", "h2", true, "");  // its deploy was in flight: flipped too
  ASSERT_EQ(life->engine->find("web-1")->phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK);

  // kill -9: nothing but the file survives.
  life.reset();
  life = boot();
  const Rollout* r = life->engine->find("web-1");
  ASSERT_NE(r, nullptr) << "a rolled-back rollout that still owes h1 is loaded again";
  EXPECT_EQ(r->phase(), tern::v1::ROLLOUT_PHASE_ROLLED_BACK);
  EXPECT_TRUE(life->rollbacks.empty()) << "h1 is not here yet";
  life->engine->on_host_back("h1");
  EXPECT_EQ(life->rollbacks, (std::vector<std::string>{"h1"}));
  life->engine->on_host_rolled_back("web-1", "h1", true, "");

  life.reset();
  life = boot();
  EXPECT_EQ(life->engine->find("web-1"), nullptr) << "settled: nothing left to resume";
  auto all = life->store->list("web", 10);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  for (const auto& h : (*all)[0].hosts()) EXPECT_FALSE(h.rollback_pending()) << h.host_id();
}

TEST_F(RolloutStoreTest, EventsReplayInOrderAfterASequence) {
  auto life = boot();
  auto spec = parse_rollout_spec("service: web\nrelease: '2'\nwaves: [{hosts: 1}, {percent: 100}]\n", "r.yaml");
  auto plan = plan_rollout(*spec, {{"h0", {}}, {"h1", {}}});
  ASSERT_TRUE(life->engine->start("web-1", *spec, *plan, {}, {}).ok());
  life->engine->on_host_deployed("web-1", "h0", true, {}, "");
  life->engine->tick();
  life->engine->on_host_deployed("web-1", "h1", true, {}, "");
  auto all = life->store->events("web-1", 0);
  ASSERT_TRUE(all.ok());
  ASSERT_GE(all->size(), 5u);
  EXPECT_EQ(all->front().kind(), "started");
  EXPECT_EQ(all->back().kind(), "succeeded");
  for (std::size_t i = 1; i < all->size(); ++i) EXPECT_GT((*all)[i].sequence(), (*all)[i - 1].sequence());
  auto tail = life->store->events("web-1", (*all)[2].sequence());
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->size(), all->size() - 3);
  EXPECT_EQ(tail->front().sequence(), (*all)[3].sequence());
  EXPECT_EQ(*life->store->next_number(), 1u);
  EXPECT_EQ(*life->store->next_number(), 2u) << "ids never repeat";
}

}  // namespace
}  // namespace tern
