#include "coordinator/webhook.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "coordinator/database.h"
#include "coordinator/rollout_store.h"
#include "coordinator/webhook_outbox.h"
#include "coordinator/webhook_gate.h"
#include "coordinator/webhook_sender.h"
#include "tests/support/command.h"
#include "tests/support/eventually.h"
#include "tests/support/temp_dir.h"

namespace tern {
namespace {

std::string secret_file(const testing::TempDir& dir, const std::string& name, const std::string& key) {
  auto path = dir.write(name, key);
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return path;
}

absl::StatusOr<CoordinatorConfig> load(const testing::TempDir& dir, const std::string& yaml) {
  return load_coordinator_config(dir.write("coordinator.yaml", "database: " + dir.file("c.db") + "\n" + yaml));
}

TEST(WebhookConfigTest, ReadsTheListWithItsDefaults) {
  testing::TempDir dir;
  auto cfg = load(dir,
                  "webhooks:\n"
                  "  - name: chat\n"
                  "    url: https://hooks.example/tern\n"
                  "    secret_file: /etc/tern/webhooks/chat.key\n"
                  "    events: [paused, failed, rolling_back, rolled back]\n"
                  "    ca_file: /etc/tern/ca.pem\n"
                  "    timeout: 3s\n"
                  "  - name: tickets\n"
                  "    url: http://127.0.0.1:8000/hook\n"
                  "    secret_file: /k\n");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  ASSERT_EQ(cfg->webhooks.size(), 2u);
  EXPECT_EQ(cfg->webhooks[0].name, "chat");
  EXPECT_EQ(cfg->webhooks[0].events.size(), 4u);
  EXPECT_EQ(cfg->webhooks[0].timeout, Millis(3'000));
  EXPECT_EQ(cfg->webhooks[1].timeout, Millis(10'000)) << "the default";
  EXPECT_TRUE(cfg->webhooks[1].events.empty());
  EXPECT_EQ(cfg->webhook_max_age, Millis(24LL * 3'600'000));
}

TEST(WebhookConfigTest, BadEntriesAreRefusedWithTheKeyAndTheReason) {
  testing::TempDir dir;
  const std::string hook = "webhooks:\n  - {name: a, url: 'http://h/x', secret_file: /k}\n";
  struct Case {
    std::string yaml, key, reason;
  };
  for (const auto& c : std::vector<Case>{
           {"webhooks:\n  - {name: a, url: 'http://h/x', secret_file: /k, events: [paused, exploded]}\n",
            "webhooks[0].events", "unknown event \"exploded\""},
           {"webhooks:\n  - {name: a, url: 'ftp://h/x', secret_file: /k}\n", "webhooks[0].url", "http:// or https://"},
           {"webhooks:\n  - {name: a, url: 'https:///x', secret_file: /k}\n", "webhooks[0].url", "names no host"},
           {"webhooks:\n  - {name: a, url: 'https://u:p@h/x', secret_file: /k}\n", "webhooks[0].url", "credentials"},
           {hook + "  - {name: a, url: 'http://h/y', secret_file: /k}\n", "webhooks[1].name", "already declared"},
           {"webhooks:\n  - {name: 'a b', url: 'http://h/x', secret_file: /k}\n", "webhooks[0].name", "letters"},
           {"webhooks:\n  - {name: a, url: 'http://h/x'}\n", "webhooks[0].secret_file", "required"},
           {"webhooks:\n  - {name: a, url: 'http://h/x', secret_file: /k, retries: 3}\n", "retries", "unknown key"},
       }) {
    auto cfg = load(dir, c.yaml);
    ASSERT_FALSE(cfg.ok()) << c.yaml;
    const std::string msg(cfg.status().message());
    EXPECT_NE(msg.find(c.key), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.reason), std::string::npos) << msg;
  }
  // Deliveries live in the database; the sender needs a file it can open too.
  CoordinatorConfig mem;
  mem.database = ":memory:";
  mem.webhooks.push_back({"a", "http://h/x", "/k", {}, "", Millis(1000)});
  EXPECT_FALSE(validate(mem).ok());
}

TEST(WebhookConfigTest, SecretsAreReadAtStartAndAMissingOneIsAnError) {
  testing::TempDir dir;
  CoordinatorConfig cfg;
  cfg.database = dir.file("c.db");
  cfg.webhooks.push_back({"chat", "http://h/x", secret_file(dir, "chat.key", "s3cret\n"), {"paused"}, "", Millis(1000)});
  cfg.webhooks.push_back({"all", "http://h/y", secret_file(dir, "all.key", "k"), {}, "", Millis(1000)});
  auto targets = load_webhook_targets(cfg);
  ASSERT_TRUE(targets.ok()) << targets.status();
  EXPECT_EQ((*targets)[0].secret, "s3cret") << "a trailing newline is not part of the key";
  EXPECT_EQ((*targets)[0].events, std::set{tern::v1::ROLLOUT_EVENT_KIND_PAUSED});
  EXPECT_EQ((*targets)[1].events, webhook_default_events());
  EXPECT_EQ((*targets)[1].events.count(tern::v1::ROLLOUT_EVENT_KIND_HOST_ON_NEW), 0u) << "per-host progress is opt-in";

  cfg.webhooks[1].secret_file = dir.file("absent.key");
  auto missing = load_webhook_targets(cfg);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("webhooks[1].secret_file"), absl::string_view::npos) << missing.status();
  EXPECT_NE(missing.status().message().find("absent.key"), absl::string_view::npos) << missing.status();

  cfg.webhooks[1].secret_file = dir.write("open.key", "k");
  ::chmod(cfg.webhooks[1].secret_file.c_str(), 0644);
  auto open = load_webhook_targets(cfg);
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.status().message().find("readable by everyone"), absl::string_view::npos) << open.status();
}

TEST(WebhookPayloadTest, EventNamesAreTheWordsWithUnderscores) {
  EXPECT_EQ(webhook_event_name(tern::v1::ROLLOUT_EVENT_KIND_ROLLING_BACK), "rolling_back");
  EXPECT_EQ(webhook_event_name(tern::v1::ROLLOUT_EVENT_KIND_WAVE_STARTED), "wave_started");
  for (auto k : webhook_default_events()) EXPECT_EQ(webhook_event_kind(webhook_event_name(k)), k);
  EXPECT_EQ(webhook_event_kind("rolled back"), tern::v1::ROLLOUT_EVENT_KIND_ROLLED_BACK);
  EXPECT_FALSE(webhook_event_kind("rollout_paused").has_value());
}

TEST(WebhookPayloadTest, TheBodyCarriesTheEventAndItsRollout) {
  tern::v1::Rollout r;
  r.set_id("web-7");
  r.mutable_spec()->set_service("web");
  r.mutable_spec()->mutable_release()->set_version("2.1");
  r.set_current_wave(1);
  r.set_phase(tern::v1::ROLLOUT_PHASE_PAUSED);
  const std::string body = webhook_payload(webhook_delivery_id("web-7", 42), tern::v1::ROLLOUT_EVENT_KIND_PAUSED, r,
                                           "paused by \"ann\"\n", 1'700'000'000'123);
  google::protobuf::Struct s;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(body, &s).ok()) << body;
  auto f = [&](const char* k) { return s.fields().at(k); };
  EXPECT_EQ(f("id").string_value(), "web-7:42");
  EXPECT_EQ(f("event").string_value(), "paused");
  EXPECT_EQ(f("rollout").string_value(), "web-7");
  EXPECT_EQ(f("service").string_value(), "web");
  EXPECT_EQ(f("release").string_value(), "2.1");
  EXPECT_EQ(f("wave").number_value(), 1);
  EXPECT_EQ(f("phase").string_value(), "paused");
  EXPECT_EQ(f("message").string_value(), "paused by \"ann\"\n") << "escaped and read back whole";
  EXPECT_EQ(f("time").string_value(), "2023-11-14T22:13:20.123Z");
}

TEST(WebhookPayloadTest, TheSignatureIsHmacSha256OfTheBody) {
  // RFC 4231, test case 2.
  EXPECT_EQ(webhook_signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // And as a receiver would check it with the openssl command line.
  testing::TempDir dir;
  const std::string body = R"({"id":"web-1:3","message":"a \"quoted\" word"})";
  auto path = dir.write("body.json", body);
  auto r = testing::run("openssl", {"dgst", "-sha256", "-hmac", "k3y", "-r", path});
  if (r.code != 0) GTEST_SKIP() << "no openssl command: " << r.err;
  EXPECT_EQ(webhook_signature("k3y", body), "sha256=" + r.out.substr(0, 64));
}

// The outbox rows are part of the journal's transaction.
class WebhookOutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = Database::open(dir_.file("c.db")).value();
    store_ = RolloutStore::open(*db_).value();
    outbox_ = WebhookOutbox::open(*db_, {{"chat", {tern::v1::ROLLOUT_EVENT_KIND_PAUSED}},
                                         {"all", webhook_default_events()}})
                  .value();
  }

  RolloutStore::Event event(tern::v1::RolloutEventKind kind) {
    RolloutStore::Event ev;
    ev.summary.set_id("web-1");
    ev.summary.mutable_spec()->set_service("web");
    ev.kind = kind;
    ev.message = "m";
    ev.time_ms = 1'700'000'000'000;
    return ev;
  }

  absl::StatusOr<std::vector<uint64_t>> record(const std::vector<RolloutStore::Event>& events, bool fail = false) {
    return store_->record_batch(events, {}, 1, {}, [&](const RolloutStore::Event& ev, uint64_t seq) -> absl::Status {
      if (fail) return absl::InternalError("disk full");
      return outbox_->add(ev.kind, ev.summary, ev.message, ev.time_ms, seq).status();
    });
  }

  testing::TempDir dir_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<RolloutStore> store_;
  std::unique_ptr<WebhookOutbox> outbox_;
};

TEST_F(WebhookOutboxTest, EachEventBecomesADeliveryPerWebhookThatTakesIt) {
  auto seqs = record({event(tern::v1::ROLLOUT_EVENT_KIND_STARTED), event(tern::v1::ROLLOUT_EVENT_KIND_PAUSED),
                      event(tern::v1::ROLLOUT_EVENT_KIND_HOST_ON_NEW)});
  ASSERT_TRUE(seqs.ok()) << seqs.status();
  EXPECT_EQ(outbox_->pending().value(), (std::map<std::string, int64_t>{{"all", 2}, {"chat", 1}}));
  auto chat = outbox_->next("chat").value();
  ASSERT_TRUE(chat.has_value());
  EXPECT_EQ(chat->delivery_id, webhook_delivery_id("web-1", (*seqs)[1]));
  EXPECT_NE(chat->body.find("\"event\":\"paused\""), std::string::npos) << chat->body;
  ASSERT_TRUE(outbox_->delivered(chat->row, 5).ok());
  EXPECT_FALSE(outbox_->next("chat").value().has_value()) << "a delivered row is never sent again";
  auto all = outbox_->next("all").value();
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(all->delivery_id, webhook_delivery_id("web-1", (*seqs)[0])) << "in the journal's order";
  ASSERT_TRUE(outbox_->attempt_failed(all->row, "HTTP 503").ok());
  EXPECT_EQ(outbox_->next("all").value()->attempts, 1) << "a failed attempt keeps the row pending";
  ASSERT_TRUE(outbox_->given_up(all->row, "too old", 6).ok());
  EXPECT_EQ(outbox_->pending().value(), (std::map<std::string, int64_t>{{"all", 1}}));
  EXPECT_EQ(outbox_->prune(7).value(), 2) << "settled rows go; the pending one stays";
}

TEST_F(WebhookOutboxTest, AFailedDeliveryRowRollsTheJournalBatchBack) {
  ASSERT_FALSE(record({event(tern::v1::ROLLOUT_EVENT_KIND_PAUSED)}, /*fail=*/true).ok());
  EXPECT_TRUE(store_->events("web-1", 0).value().empty()) << "no event without its deliveries";
  EXPECT_TRUE(outbox_->pending().value().empty());
}

// A receiver that answers from a script, and remembers what it was sent.
class ScriptedTransport final : public WebhookTransport {
 public:
  struct Shared {
    std::mutex mu;
    std::deque<absl::StatusOr<Reply>> script;  // then 200 forever
    std::vector<std::pair<std::vector<std::string>, std::string>> posts;
  };
  explicit ScriptedTransport(std::shared_ptr<Shared> s) : s_(std::move(s)) {}
  absl::StatusOr<Reply> post(const WebhookTarget&, const std::vector<std::string>& headers,
                             const std::string& body) override {
    std::lock_guard lock(s_->mu);
    s_->posts.emplace_back(headers, body);
    if (s_->script.empty()) return Reply{200, "ok"};
    auto r = std::move(s_->script.front());
    s_->script.pop_front();
    return r;
  }

 private:
  std::shared_ptr<Shared> s_;
};

TEST_F(WebhookOutboxTest, TheSenderRetriesUntilTheReceiverTakesItAndCountsTheOutcomes) {
  ASSERT_TRUE(record({event(tern::v1::ROLLOUT_EVENT_KIND_PAUSED), event(tern::v1::ROLLOUT_EVENT_KIND_RUNNING)}).ok());
  auto shared = std::make_shared<ScriptedTransport::Shared>();
  shared->script.push_back(absl::UnavailableError("connection refused"));
  shared->script.push_back(WebhookTransport::Reply{503, "busy"});
  Metrics metrics;
  WebhookSender::Options opts;
  opts.backoff = BackoffPolicy{Millis(10), Millis(40), 2.0, 0.0};
  // The events' own time: well within max_age. Holds back wait on the real clock.
  FakeClock clock(from_unix_millis(1'700'000'000'000));
  auto sender = WebhookSender::create({WebhookTarget{"all", "http://h/", "k", webhook_default_events(), "", Millis(1000)}},
                                      Database::open(dir_.file("c.db")).value(),
                                      std::make_unique<ScriptedTransport>(shared), clock, metrics,
                                      opts)
                    .value();
  EXPECT_NE(metrics.render().find(R"(tern_webhook_deliveries_total{webhook="all",result="delivered"} 0)"),
            std::string::npos)
      << metrics.render();
  sender->start();
  ASSERT_TRUE(testing::eventually([&] {
    clock.advance(Millis(50));  // past each hold-back
    sender->wake();
    return outbox_->pending().value().empty();
  }));
  sender->stop();
  std::lock_guard lock(shared->mu);
  ASSERT_EQ(shared->posts.size(), 4u) << "two failures, then each event once";
  EXPECT_EQ(shared->posts[0].second, shared->posts[2].second) << "a retry sends the same bytes";
  const auto& headers = shared->posts[2].first;
  const std::string id = webhook_delivery_id("web-1", 1);
  EXPECT_NE(std::find(headers.begin(), headers.end(), "X-Tern-Delivery: " + id), headers.end());
  EXPECT_NE(std::find(headers.begin(), headers.end(),
                      "X-Tern-Signature: " + webhook_signature("k", shared->posts[2].second)),
            headers.end());
  const std::string text = metrics.render();
  EXPECT_NE(text.find(R"(tern_webhook_deliveries_total{webhook="all",result="delivered"} 2)"), std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(tern_webhook_deliveries_total{webhook="all",result="failed"} 2)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(tern_webhook_pending{webhook="all"} 0)"), std::string::npos) << text;
}

TEST_F(WebhookOutboxTest, ADeliveryPastItsMaxAgeIsGivenUp) {
  ASSERT_TRUE(record({event(tern::v1::ROLLOUT_EVENT_KIND_PAUSED)}).ok());
  auto shared = std::make_shared<ScriptedTransport::Shared>();
  Metrics metrics;
  FakeClock clock(from_unix_millis(1'700'000'000'000) + Millis(2'000));
  WebhookSender::Options opts;
  opts.max_age = Millis(1'000);
  auto sender = WebhookSender::create({WebhookTarget{"chat", "http://h/", "k", {}, "", Millis(1000)}},
                                      Database::open(dir_.file("c.db")).value(),
                                      std::make_unique<ScriptedTransport>(shared), clock, metrics, opts)
                    .value();
  sender->start();
  ASSERT_TRUE(testing::eventually([&] { return outbox_->pending().value().empty(); }));
  sender->stop();
  EXPECT_TRUE(shared->posts.empty()) << "too old to send";
  EXPECT_NE(metrics.render().find(R"(tern_webhook_deliveries_total{webhook="chat",result="given_up"} 1)"),
            std::string::npos);
}

// Gates: a receiver that does not answer is asked three times in all, then
// counts as a "no"; an answer of any status is final.
TEST(WebhookGatesTest, NoAnswerIsRetriedTwiceThenIsANoAndAnyStatusIsFinal) {
  auto shared = std::make_shared<ScriptedTransport::Shared>();
  Metrics metrics;
  FakeClock clock(from_unix_millis(1'700'000'000'000));
  WebhookGates gates({WebhookTarget{"cab", "http://h/gate", "k", {}, "", Millis(1000)}},
                     std::make_unique<ScriptedTransport>(shared), clock, metrics, Millis(1));
  gates.start();
  std::mutex mu;
  std::vector<WebhookGates::Answer> answers;
  auto ask = [&](uint64_t attempt) {
    tern::v1::Rollout r;
    r.set_id("web-3");
    r.mutable_spec()->set_service("web");
    r.mutable_spec()->add_waves();
    gates.ask(WebhookGates::Ask{"cab", r, 0, attempt}, [&](const WebhookGates::Ask&, const WebhookGates::Answer& a) {
      std::lock_guard lock(mu);
      answers.push_back(a);
    });
  };
  auto answered = [&](size_t n) {
    return testing::eventually([&] {
      std::lock_guard lock(mu);
      return answers.size() >= n;
    });
  };
  {
    std::lock_guard lock(shared->mu);
    shared->script.push_back(absl::UnavailableError("connection refused"));
    shared->script.push_back(absl::DeadlineExceededError("timed out"));
  }
  ask(1);
  ASSERT_TRUE(answered(1));
  EXPECT_TRUE(answers[0].allowed) << "the third attempt was answered 200";
  {
    std::lock_guard lock(shared->mu);
    EXPECT_EQ(shared->posts.size(), 3u);
    for (int i = 0; i < 3; ++i) shared->script.push_back(absl::UnavailableError("connection refused"));
  }
  ask(2);
  ASSERT_TRUE(answered(2));
  EXPECT_FALSE(answers[1].allowed);
  EXPECT_EQ(answers[1].message, "no answer after 3 attempts (connection refused)");
  {
    std::lock_guard lock(shared->mu);
    shared->script.push_back(WebhookTransport::Reply{503, "busy"});
  }
  ask(3);
  ASSERT_TRUE(answered(3));
  EXPECT_FALSE(answers[2].allowed);
  EXPECT_EQ(answers[2].message, "HTTP 503: \"busy\"");
  {
    std::lock_guard lock(shared->mu);
    EXPECT_EQ(shared->posts.size(), 7u) << "3 + 3 + 1: a status is not retried";
    const auto& headers = shared->posts.back().first;
    EXPECT_NE(std::find(headers.begin(), headers.end(), "X-Tern-Delivery: web-3:gate:1:3"), headers.end());
    EXPECT_NE(std::find(headers.begin(), headers.end(), "X-Tern-Event: gate"), headers.end());
  }
  const std::string text = metrics.render();
  EXPECT_NE(text.find(R"(tern_webhook_gate_answers_total{webhook="cab",answer="unanswered"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(tern_webhook_gate_answers_total{webhook="cab",answer="allowed"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(tern_webhook_gate_answers_total{webhook="cab",answer="denied"} 1)"), std::string::npos);
  gates.stop();
}

}  // namespace
}  // namespace tern
