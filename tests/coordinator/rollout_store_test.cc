// The rollout journal in a real SQLite file, with the engine writing to it
// and a "restart" that reopens the file and restores from it.
#include "core/words.h"
#include "coordinator/rollout_store.h"

#include <gtest/gtest.h>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include "coordinator/rollout_engine.h"
#include "core/rollout_spec.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

using tern::v1::Rollout;

class RolloutStoreTest : public ::testing::Test {
 protected:
  // A fresh directory per test; every boot() reopens the same file in it.
  testing::TempDir dir_;
  const std::string path_ = dir_.file("rollouts.db");

  // A coordinator's life: the database opened, the engine journaling into it.
  struct Life {
    std::unique_ptr<Database> db;
    std::unique_ptr<RolloutStore> store;
    std::unique_ptr<RolloutEngine> engine;
    std::vector<std::string> rollbacks;
  };
  std::unique_ptr<Life> boot() {
    auto life = std::make_unique<Life>();
    auto db = Database::open(path_);
    EXPECT_TRUE(db.ok()) << db.status();
    life->db = *std::move(db);
    auto store = RolloutStore::open(*life->db);
    EXPECT_TRUE(store.ok()) << store.status();
    life->store = *std::move(store);
    Life* l = life.get();
    life->engine = std::make_unique<RolloutEngine>(
        clock_, RolloutEffects{nullptr, [l](const Rollout&, const std::string& host) { l->rollbacks.push_back(host); },
                               [l, this](const Rollout& r, tern::v1::RolloutEventKind kind, const std::string& message) {
                                 // One event per transaction here; the coordinator batches.
                                 const int64_t now = to_unix_millis(clock_.now());
                                 auto changed = l->engine->take_changed(r.id());
                                 auto seq = l->store->record_batch({{rollout_summary(r), kind, message, now}},
                                                                   {{&r, changed.positions, changed.all}}, now);
                                 ASSERT_TRUE(seq.ok()) << seq.status();
                               }});
    auto active = life->store->load_active();
    EXPECT_TRUE(active.ok()) << active.status();
    for (const auto& r : *active) life->engine->restore(r);
    return life;
  }

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
  EXPECT_EQ((*all)[0].hosts_size(), 0) << "lists carry summaries";
  auto stored = life->store->get("web-1");
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->hosts_size(), 3);
  for (const auto& h : stored->hosts()) EXPECT_FALSE(h.rollback_pending()) << h.host_id();
  EXPECT_EQ(life->store->get("web-9").status().code(), absl::StatusCode::kNotFound);
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
  EXPECT_EQ(word(all->front().kind()), std::string("started"));
  EXPECT_EQ(word(all->back().kind()), std::string("succeeded"));
  for (std::size_t i = 1; i < all->size(); ++i) EXPECT_GT((*all)[i].sequence(), (*all)[i - 1].sequence());
  auto tail = life->store->events("web-1", (*all)[2].sequence());
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->size(), all->size() - 3);
  EXPECT_EQ(tail->front().sequence(), (*all)[3].sequence());
  EXPECT_EQ(*life->store->next_number(), 1u);
  EXPECT_EQ(*life->store->next_number(), 2u) << "ids never repeat";
}

// What the coordinator does: after each turn of its loop, the turn's
// events and every changed host in one batch. After every step the stored
// rollout must equal the one in memory, which catches a host changed
// without being marked for the journal.
TEST_F(RolloutStoreTest, TheStoredRolloutEqualsTheLiveOneAfterEveryBatch) {
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok()) << db.status();
  auto store = RolloutStore::open(**db);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<RolloutStore::Event> pending;
  std::vector<std::string> deploys, flips;
  RolloutEngine engine(clock_, RolloutEffects{
                                   [&](const Rollout&, const std::string& h, const tern::v1::ReleaseRef&, uint32_t) {
                                     deploys.push_back(h);
                                   },
                                   [&](const Rollout&, const std::string& h) { flips.push_back(h); },
                                   [&](const Rollout& r, tern::v1::RolloutEventKind kind, const std::string& message) {
                                     pending.push_back({rollout_summary(r), kind, message, 0});
                                   }});
  auto flush_and_compare = [&](const char* step) {
    const auto* live = engine.find("web-1");
    ASSERT_NE(live, nullptr);
    auto changed = engine.take_changed("web-1");
    auto seqs = (*store)->record_batch(pending, {{live, changed.positions, changed.all}}, 0);
    ASSERT_TRUE(seqs.ok()) << seqs.status();
    pending.clear();
    auto stored = (*store)->get("web-1");
    ASSERT_TRUE(stored.ok()) << stored.status();
    std::string diff;
    google::protobuf::util::MessageDifferencer d;
    d.ReportDifferencesToString(&diff);
    EXPECT_TRUE(d.Compare(*live, *stored)) << "after " << step << ": " << diff;
  };
  auto spec = parse_rollout_spec(
      "service: web\nrelease: '2'\nwaves: [{hosts: 2}, {percent: 100}]\nmax_parallel: 3\n"
      "failure_budget: {max_failed_hosts: 2}\n",
      "r.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::vector<PlanHost> fleet;
  for (int i = 0; i < 8; ++i) fleet.push_back({"h" + std::to_string(i), {}});
  auto plan = plan_rollout(*spec, fleet);
  ASSERT_TRUE(plan.ok());
  ASSERT_TRUE(engine.start("web-1", *spec, *plan, {}, {}).ok());
  flush_and_compare("start");
  engine.on_host_deployed("web-1", deploys[0], true, {}, "ok");
  flush_and_compare("one deploy");
  engine.on_host_deployed("web-1", deploys[1], false, tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE, "no");
  flush_and_compare("a failed deploy (next wave starts)");
  engine.on_host_gone(deploys[2], "link down");
  flush_and_compare("a host gone mid-deploy");
  engine.on_host_deployed("web-1", deploys[3], true, {}, "ok");
  flush_and_compare("a deploy frees a slot");
  clock_.advance(Millis(3'600'000));
  engine.tick();
  flush_and_compare("deploys past the progress deadline (over budget: rollback)");
  ASSERT_EQ(engine.find("web-1")->phase(), tern::v1::ROLLOUT_PHASE_ROLLING_BACK);
  ASSERT_FALSE(flips.empty());
  engine.on_host_rolled_back("web-1", flips[0], false, "refused");
  flush_and_compare("a failed flip");
  for (std::size_t i = 1; i < flips.size(); ++i) engine.on_host_rolled_back("web-1", flips[i], true, "");
  flush_and_compare("the other flips");
  engine.on_host_back(deploys[2]);
  flush_and_compare("the away host is back");
}

TEST_F(RolloutStoreTest, ARolloutWrittenWithItsHostsInlineIsReadAndSplitOnItsNextWrite) {
  auto life = boot();
  // A row as the journal wrote it before per-host rows: the whole rollout
  // in rollout_json.
  Rollout old;
  old.set_id("web-1");
  old.set_generation(2);
  old.mutable_spec()->set_service("web");
  old.mutable_spec()->add_waves()->set_percent(100);
  old.set_phase(tern::v1::ROLLOUT_PHASE_RUNNING);
  old.set_wave_step(tern::v1::WAVE_STEP_DEPLOYING);
  old.set_total_hosts(2);
  for (const char* h : {"h0", "h1"}) {
    auto* p = old.add_hosts();
    p->set_host_id(h);
    p->set_state(tern::v1::HOST_ROLLOUT_STATE_ON_NEW);
  }
  old.mutable_hosts(1)->set_state(tern::v1::HOST_ROLLOUT_STATE_DEPLOYING);
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(old, &json).ok());
  auto ins = life->db->prepare(
      "INSERT INTO rollouts (id, service, terminal, rollout_json, created_ms, updated_ms) VALUES ('web-1', 'web', 0, ?1, 1, 1)");
  ASSERT_TRUE(ins.ok());
  ASSERT_TRUE(ins->bind(1, json).run().ok());

  life.reset();
  life = boot();  // restores it and asks h1 again; the write splits the row
  const Rollout* r = life->engine->find("web-1");
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->hosts_size(), 2);
  life->engine->on_host_deployed("web-1", "h1", true, {}, "");
  EXPECT_EQ(life->engine->find("web-1")->phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  auto stored = life->store->get("web-1");
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->hosts_size(), 2);
  EXPECT_EQ(stored->hosts(1).state(), tern::v1::HOST_ROLLOUT_STATE_ON_NEW);
  auto row = life->db->prepare("SELECT rollout_json FROM rollouts WHERE id = 'web-1'");
  ASSERT_TRUE(row.ok() && row->step());
  EXPECT_EQ(row->text_at(0).find("\"hosts\""), std::string::npos) << "the summary row no longer holds the hosts";
}

TEST_F(RolloutStoreTest, AJournalFromBeforeBinarySummariesIsUpgradedAndStillReadable) {
  {
    auto db = Database::open(path_);
    ASSERT_TRUE(db.ok()) << db.status();
    // The event table as it was: summaries as JSON only.
    ASSERT_TRUE((*db)->exec(R"sql(
      CREATE TABLE rollout_events (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        rollout_id TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        rollout_json TEXT NOT NULL);
      INSERT INTO rollout_events (rollout_id, time_ms, kind, message, rollout_json)
        VALUES ('web-1', 5, 'started', 'rolling', '{"id":"web-1","phase":"ROLLOUT_PHASE_RUNNING","totalHosts":3}');
    )sql").ok());
  }
  auto db = Database::open(path_);
  ASSERT_TRUE(db.ok()) << db.status();
  auto store = RolloutStore::open(**db);
  ASSERT_TRUE(store.ok()) << store.status();
  Rollout r;
  r.set_id("web-1");
  r.set_phase(tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  ASSERT_TRUE((*store)->record_batch({{r, tern::v1::ROLLOUT_EVENT_KIND_SUCCEEDED, "done", 9}}, {}, 9).ok());
  auto events = (*store)->events("web-1", 0);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].rollout().total_hosts(), 3u) << "the old row, from its JSON";
  EXPECT_EQ((*events)[0].rollout().phase(), tern::v1::ROLLOUT_PHASE_RUNNING);
  EXPECT_EQ((*events)[1].rollout().phase(), tern::v1::ROLLOUT_PHASE_SUCCEEDED) << "the new row, binary";
  // Opening again does not try to add the column twice.
  EXPECT_TRUE(RolloutStore::open(**db).ok());
}

// The counts an analysis took are written with the batch and read back per
// wave, in the order they were taken, after a restart.
TEST_F(RolloutStoreTest, AnalysisSamplesAreJournaledWithTheBatchAndReadBackPerWaveInOrder) {
  {
    auto l = boot();
    std::vector<RolloutStore::SampleRow> rows;
    for (uint64_t seq = 1; seq <= 3; ++seq) {
      RolloutStore::SampleRow row{"web-1", seq == 3 ? 1u : 0u, "h" + std::to_string(seq), static_cast<int64_t>(seq), {}};
      row.sample.set_service("web");
      row.sample.set_sequence(seq);
      row.sample.add_metrics()->set_canary_total(100 * seq);
      rows.push_back(row);
    }
    ASSERT_TRUE(l->store->record_batch({}, {}, 1, rows).ok());
  }
  auto l = boot();
  auto wave0 = l->store->samples("web-1", 0);
  ASSERT_TRUE(wave0.ok()) << wave0.status();
  ASSERT_EQ(wave0->size(), 2u);
  EXPECT_EQ((*wave0)[0].host, "h1");
  EXPECT_EQ((*wave0)[1].sample.sequence(), 2u);
  EXPECT_EQ((*wave0)[1].sample.metrics(0).canary_total(), 200u);
  auto wave1 = l->store->samples("web-1", 1);
  ASSERT_TRUE(wave1.ok());
  EXPECT_EQ(wave1->size(), 1u);
  EXPECT_TRUE(l->store->samples("web-2", 0)->empty());
  // Retention spares a rollout that may still resume from its samples...
  auto none = l->store->prune_samples(Millis(1), 1, 1'000'000);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);
  EXPECT_EQ(l->store->samples("web-1", 0)->size(), 2u);
  // ...and prunes a settled one's by rows, oldest first, then by age.
  Rollout settled;
  settled.set_id("web-1");
  settled.set_phase(tern::v1::ROLLOUT_PHASE_SUCCEEDED);
  ASSERT_TRUE(l->store->record_batch({}, {{&settled, {}, false}}, 2).ok());
  auto by_rows = l->store->prune_samples(Millis(0), 2, 1'000'000);
  ASSERT_TRUE(by_rows.ok());
  EXPECT_EQ(*by_rows, 1);
  EXPECT_EQ(l->store->samples("web-1", 0)->size(), 1u);
  EXPECT_EQ(l->store->samples("web-1", 0)->front().host, "h2") << "the oldest went";
  auto by_age = l->store->prune_samples(Millis(10), 0, 1'000'000);
  ASSERT_TRUE(by_age.ok());
  EXPECT_EQ(*by_age, 2);
  EXPECT_TRUE(l->store->samples("web-1", 1)->empty());
}

TEST(RolloutSummaryTest, CopiesEveryFieldButTheHosts) {
  // Field by field for speed, so a field added to Rollout must be added
  // there too; this fails until it is.
  Rollout r;
  const auto* d = r.GetDescriptor();
  const auto* refl = r.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->is_repeated()) {
      if (f->name() == "hosts") continue;
      ASSERT_EQ(f->name(), "warnings") << "a new repeated field in Rollout: copy it in rollout_summary";
      refl->AddString(&r, f, "x" + f->name());
      continue;
    }
    switch (f->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_STRING: refl->SetString(&r, f, "x" + f->name()); break;
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT32: refl->SetUInt32(&r, f, 7 + i); break;
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT64: refl->SetUInt64(&r, f, 7 + i); break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT32: refl->SetInt32(&r, f, 7 + i); break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT64: refl->SetInt64(&r, f, 7 + i); break;
      case google::protobuf::FieldDescriptor::CPPTYPE_BOOL: refl->SetBool(&r, f, true); break;
      case google::protobuf::FieldDescriptor::CPPTYPE_ENUM:
        refl->SetEnumValue(&r, f, f->enum_type()->value(f->enum_type()->value_count() - 1)->number());
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE: {
        // Any non-empty content will do: its first scalar field.
        auto* m = refl->MutableMessage(&r, f);
        const auto* md = m->GetDescriptor();
        for (int j = 0; j < md->field_count(); ++j) {
          const auto* mf = md->field(j);
          if (mf->is_repeated()) continue;
          if (mf->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_STRING) {
            m->GetReflection()->SetString(m, mf, "y");
            break;
          }
          if (mf->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_INT64) {
            m->GetReflection()->SetInt64(m, mf, 42);
            break;
          }
        }
        break;
      }
      default: FAIL() << "unexpected field type in Rollout: " << f->name();
    }
  }
  r.add_hosts()->set_host_id("h0");
  Rollout expected = r;
  expected.clear_hosts();
  std::string diff;
  google::protobuf::util::MessageDifferencer md;
  md.ReportDifferencesToString(&diff);
  EXPECT_TRUE(md.Compare(expected, rollout_summary(r))) << diff;
}

}  // namespace
}  // namespace tern
