#include "coordinator/audit_trail.h"

#include <gtest/gtest.h>

#include "coordinator/admin_service.h"
#include "coordinator/database.h"
#include "tern/v1/fleet.pb.h"
#include "tern/v1/service.pb.h"

namespace tern {
namespace {

TEST(AuditRequestTextTest, EnvironmentValuesAndSignaturesNeverReachTheTrail) {
  tern::v1::ApplyServiceRequest req;
  req.mutable_spec()->set_name("db");
  (*req.mutable_spec()->mutable_env())["DB_PASSWORD"] = "hunter2";
  (*req.mutable_spec()->mutable_env())["MODE"] = "primary";
  const std::string text = audit_request_text(req);
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
  EXPECT_EQ(text.find("primary"), std::string::npos) << text;
  EXPECT_NE(text.find("DB_PASSWORD"), std::string::npos) << "keys stay, so the trail says what changed: " << text;
  EXPECT_NE(text.find("<redacted>"), std::string::npos) << text;

  tern::v1::DeployHostRequest deploy;
  deploy.set_host_id("web-1");
  deploy.mutable_release()->set_signature(std::string(64, '\x01'));
  const std::string d = audit_request_text(deploy);
  EXPECT_NE(d.find("<64 bytes>"), std::string::npos) << d;
  EXPECT_NE(d.find("web-1"), std::string::npos) << d;
}

TEST(AuditRequestTextTest, IsOneShortLine) {
  tern::v1::ApplyServiceRequest req;
  req.mutable_spec()->set_name("web");
  for (int i = 0; i < 500; ++i) req.mutable_spec()->add_argv(std::string(100, 'x'));
  const std::string text = audit_request_text(req);
  EXPECT_LE(text.size(), 256u + 3);
  EXPECT_EQ(text.find('\n'), std::string::npos);
}

class PruneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = Database::open(":memory:");
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    ASSERT_TRUE(db_->exec("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL)").ok());
    for (int64_t ms = 1; ms <= 100; ++ms) {
      ASSERT_TRUE(db_->exec("INSERT INTO t (time_ms) VALUES (" + std::to_string(ms * 1000) + ")").ok());
    }
  }
  int64_t count() {
    auto q = db_->prepare("SELECT COUNT(*), MIN(time_ms) FROM t");
    EXPECT_TRUE(q.ok() && q->step());
    oldest_ = q->int_at(1);
    return q->int_at(0);
  }
  std::unique_ptr<Database> db_;
  int64_t oldest_ = 0;
};

TEST_F(PruneTest, ByAgeThenByRows) {
  // Now is 100 s; keep 30 s: rows at 70..100 s stay.
  auto removed = prune_table(*db_, "t", "id", "time_ms", Retention{Millis(30'000), 0}, 100'000);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 69);
  EXPECT_EQ(count(), 31);
  EXPECT_EQ(oldest_, 70'000);
  // Then at most 10 rows: the newest.
  removed = prune_table(*db_, "t", "id", "time_ms", Retention{Millis(0), 10}, 100'000);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 21);
  EXPECT_EQ(count(), 10);
  EXPECT_EQ(oldest_, 91'000);
  // Limits off: nothing goes.
  removed = prune_table(*db_, "t", "id", "time_ms", Retention{}, 100'000);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 0);
}

TEST(AuditTrailTest, UnauthenticatedCallsAreCountedNotStoredAndTheRestIsWrittenInBatches) {
  auto db = Database::open(":memory:");
  ASSERT_TRUE(db.ok());
  auto store = AdminStore::open(**db);
  ASSERT_TRUE(store.ok());
  Metrics metrics;
  FakeClock clock;
  AuditTrail trail(**store, metrics, clock);
  for (int i = 0; i < 1000; ++i) trail.refused_unauthenticated("ipv4:10.0.0.9:5000", "/tern.v1.X/Y");
  trail.flush();
  auto stored = (*store)->audit(10'000);
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(stored->empty());
  EXPECT_NE(metrics.render().find("tern_api_unauthenticated_calls_total 1000"), std::string::npos)
      << metrics.render();

  for (int i = 0; i < 3; ++i) {
    tern::v1::AuditEntry e;
    e.mutable_principal()->set_name("alice");
    e.set_method("/tern.v1.ServiceService/ApplyService");
    trail.record(e);
  }
  EXPECT_EQ(trail.queued(), 3u);
  EXPECT_TRUE((*store)->audit(10)->empty()) << "written by flush, not one by one";
  trail.flush();
  EXPECT_EQ((*store)->audit(10)->size(), 3u);
  EXPECT_EQ(trail.queued(), 0u);
}

}  // namespace
}  // namespace tern
