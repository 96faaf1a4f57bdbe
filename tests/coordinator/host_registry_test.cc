#include "coordinator/host_registry.h"

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace tern {
namespace {

class HostRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override { open(":memory:"); }

  void open(const std::string& path) {
    registry_.reset();
    store_.reset();
    db_.reset();
    db_ = *Database::open(path);
    store_ = *HostStore::open(*db_);
    registry_ = std::make_unique<HostRegistry>(*store_, clock_, HostRegistry::Options{.unreachable_after = Millis(3000)},
                                               &metrics_);
    ASSERT_TRUE(registry_->load().ok());
  }

  HostState state(const std::string& id) { return registry_->find(id)->record.state; }
  std::vector<std::string> history_kinds(const std::string& id) {
    std::vector<std::string> out;
    auto events = store_->history(id, 100);
    EXPECT_TRUE(events.ok()) << events.status();
    if (!events.ok()) return out;
    for (const auto& e : *events) out.push_back(e.kind);
    return out;
  }
  int64_t gauge(const char* s) {
    return metrics_.gauge("tern_hosts", "", std::string("state=\"") + s + "\"").load();
  }

  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<HostStore> store_;
  std::unique_ptr<HostRegistry> registry_;
};

TEST_F(HostRegistryTest, HelloRegistersAHostAsConnected) {
  auto r = registry_->on_hello(1, "web-1", {{"zone", "a"}}, "0.1.0", "ipv4:10.0.0.1:5000");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->superseded_session);
  const auto* e = registry_->find("web-1");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->record.state, HostState::kConnected);
  EXPECT_EQ(e->record.labels.at("zone"), "a");
  EXPECT_EQ(e->record.connect_count, 1u);
  EXPECT_EQ(e->record.first_seen, clock_.now());
  EXPECT_EQ(history_kinds("web-1"), (std::vector<std::string>{"registered"}));
  EXPECT_EQ(gauge("connected"), 1);
  EXPECT_EQ(registry_->connected_count(), 1u);
}

TEST_F(HostRegistryTest, StreamCloseDisconnectsThenGraceMakesUnreachable) {
  ASSERT_TRUE(registry_->on_hello(1, "web-1", {}, "0.1.0", "p").ok());
  clock_.advance(Millis(500));
  ASSERT_TRUE(registry_->on_stream_closed(1, "web-1", "agent closed the stream").ok());
  EXPECT_EQ(state("web-1"), HostState::kDisconnected);
  EXPECT_EQ(gauge("disconnected"), 1);
  EXPECT_EQ(gauge("connected"), 0);

  clock_.advance(Millis(2900));  // 2.9 s since the last word: within the 3 s grace
  ASSERT_TRUE(registry_->tick().ok());
  EXPECT_EQ(state("web-1"), HostState::kDisconnected);
  clock_.advance(Millis(200));
  ASSERT_TRUE(registry_->tick().ok());
  EXPECT_EQ(state("web-1"), HostState::kUnreachable);
  EXPECT_EQ(gauge("unreachable"), 1);
  EXPECT_EQ(history_kinds("web-1"), (std::vector<std::string>{"registered", "disconnected", "unreachable"}));
}

TEST_F(HostRegistryTest, HeartbeatsKeepAHostConnected) {
  ASSERT_TRUE(registry_->on_hello(1, "web-1", {}, "0.1.0", "p").ok());
  for (int i = 0; i < 10; ++i) {
    clock_.advance(Millis(1000));
    registry_->on_heartbeat(1, "web-1");
    ASSERT_TRUE(registry_->tick().ok());
  }
  EXPECT_EQ(state("web-1"), HostState::kConnected);
  EXPECT_EQ(registry_->find("web-1")->record.last_seen, clock_.now());
}

TEST_F(HostRegistryTest, SilentOpenStreamBecomesUnreachableAndRecoversOnHeartbeat) {
  ASSERT_TRUE(registry_->on_hello(1, "web-1", {}, "0.1.0", "p").ok());
  clock_.advance(Millis(3001));
  ASSERT_TRUE(registry_->tick().ok());
  EXPECT_EQ(state("web-1"), HostState::kUnreachable);
  registry_->on_heartbeat(1, "web-1");
  EXPECT_EQ(state("web-1"), HostState::kConnected);
  EXPECT_EQ(registry_->find("web-1")->record.connect_count, 1u) << "the same stream, not a new connection";
}

TEST_F(HostRegistryTest, ReconnectSupersedesTheOldStreamAndIgnoresItsLateClose) {
  ASSERT_TRUE(registry_->on_hello(1, "web-1", {}, "0.1.0", "p").ok());
  auto r = registry_->on_hello(2, "web-1", {}, "0.1.0", "p");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->superseded_session);
  EXPECT_EQ(*r->superseded_session, 1u);
  // The old stream's close arrives after the new hello: the host stays connected.
  ASSERT_TRUE(registry_->on_stream_closed(1, "web-1", "superseded").ok());
  EXPECT_EQ(state("web-1"), HostState::kConnected);
  registry_->on_heartbeat(1, "web-1");  // stale session: ignored
  EXPECT_EQ(registry_->find("web-1")->record.connect_count, 2u);
  EXPECT_EQ(registry_->connected_count(), 1u);
}

TEST_F(HostRegistryTest, LabelsChangeOnReconnectAndSelectorsFilter) {
  ASSERT_TRUE(registry_->on_hello(1, "web-1", {{"zone", "a"}}, "0.1.0", "p").ok());
  ASSERT_TRUE(registry_->on_hello(2, "web-2", {{"zone", "b"}}, "0.1.0", "p").ok());
  ASSERT_TRUE(registry_->on_stream_closed(1, "web-1", "x").ok());
  ASSERT_TRUE(registry_->on_hello(3, "web-1", {{"zone", "c"}}, "0.2.0", "p").ok());
  EXPECT_EQ(registry_->find("web-1")->record.agent_version, "0.2.0");
  auto zone_c = registry_->list(*LabelSelector::parse("zone=c"));
  ASSERT_EQ(zone_c.size(), 1u);
  EXPECT_EQ(zone_c[0]->record.host_id, "web-1");
  EXPECT_EQ(registry_->list(*LabelSelector::parse("")).size(), 2u);
}

TEST_F(HostRegistryTest, RestartKeepsHistoryAndMarksConnectedHostsDisconnected) {
  testing::TempDir dir;
  const std::string path = dir.file("registry.db");
  open(path);
  ASSERT_TRUE(registry_->on_hello(1, "web-1", {{"zone", "a"}}, "0.1.0", "p").ok());
  ASSERT_TRUE(registry_->on_hello(2, "web-2", {}, "0.1.0", "p").ok());
  ASSERT_TRUE(registry_->on_stream_closed(2, "web-2", "x").ok());
  const TimePoint first_seen = registry_->find("web-1")->record.first_seen;

  // The coordinator dies and comes back much later on the same file.
  clock_.advance(Millis(3'600'000));
  open(path);
  EXPECT_EQ(state("web-1"), HostState::kDisconnected);
  EXPECT_EQ(state("web-2"), HostState::kDisconnected);
  EXPECT_EQ(registry_->find("web-1")->record.first_seen, first_seen);
  EXPECT_EQ(registry_->find("web-1")->record.labels.at("zone"), "a");
  EXPECT_EQ(gauge("disconnected"), 2);
  // A full grace from the restart, not from the old last_seen.
  ASSERT_TRUE(registry_->tick().ok());
  EXPECT_EQ(state("web-1"), HostState::kDisconnected);

  ASSERT_TRUE(registry_->on_hello(7, "web-1", {{"zone", "a"}}, "0.1.0", "p").ok());
  EXPECT_EQ(registry_->find("web-1")->record.connect_count, 2u);
  EXPECT_EQ(history_kinds("web-1"),
            (std::vector<std::string>{"registered", "disconnected", "connected"}));
  clock_.advance(Millis(3001));
  ASSERT_TRUE(registry_->tick().ok());
  EXPECT_EQ(state("web-2"), HostState::kUnreachable);
  registry_.reset();  // closed before its directory goes
  store_.reset();
  db_.reset();
}

TEST_F(HostRegistryTest, HeartbeatLastSeenIsFlushedPeriodically) {
  ASSERT_TRUE(registry_->on_hello(1, "web-1", {}, "0.1.0", "p").ok());
  for (int i = 0; i < 12; ++i) {
    clock_.advance(Millis(1000));
    registry_->on_heartbeat(1, "web-1");
    ASSERT_TRUE(registry_->tick().ok());
  }
  auto all = store_->load_all();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  // Flushed at least once after 10 s of heartbeats, never ahead of memory.
  EXPECT_GT((*all)[0].last_seen, registry_->find("web-1")->record.first_seen);
  EXPECT_LE((*all)[0].last_seen, registry_->find("web-1")->record.last_seen);
}

TEST_F(HostRegistryTest, EpochIncreasesOnEveryStart) {
  auto a = store_->next_epoch();
  auto b = store_->next_epoch();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*b, *a + 1);
}

}  // namespace
}  // namespace tern
