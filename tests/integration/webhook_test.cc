// Webhooks from a real coordinator to a real HTTP receiver in the test: a
// rollout with one real agent raises the events; the receiver checks each
// signature itself and counts deliveries by id, through failures and a
// coordinator killed with SIGKILL while a delivery is still owed.

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "tern/v1/rollout.pb.h"
#include "tests/integration/harness.h"
#include "tests/support/http_server.h"

namespace tern::testing {
namespace {

constexpr const char* kSecret = "an HMAC key only this test knows";

// Computed here with OpenSSL, not with the coordinator's code.
std::string hmac_hex(const std::string& key, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  ::HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(body.data()),
         body.size(), mac, &len);
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned int i = 0; i < len; ++i) (out += kHex[mac[i] >> 4]) += kHex[mac[i] & 0xf];
  return out;
}

// What a receiver that dedups by X-Tern-Delivery sees.
struct Receiver {
  std::mutex mu;
  std::map<std::string, int> attempts;  // by delivery id
  std::map<std::string, int> accepted;  // 2xx answered, by delivery id
  std::map<std::string, std::string> events;  // delivery id -> "event"
  int bad_signatures = 0;
  int refuse_next = 0;      // answer 500 to this many more requests
  bool down = false;        // answer 503 to everything
  // Gate questions (X-Tern-Event: gate): their bodies in order, and the answer.
  std::vector<std::string> gate_asks, gate_ids;
  bool gate_allows = false;

  std::string respond(const std::string& request) {
    const std::string body = http_body(request);
    const std::string id = http_header(request, "X-Tern-Delivery");
    std::lock_guard lock(mu);
    if (http_header(request, "X-Tern-Signature") != "sha256=" + hmac_hex(kSecret, body)) ++bad_signatures;
    if (http_header(request, "X-Tern-Event") == "gate") {
      gate_asks.push_back(body);
      gate_ids.push_back(id);
      return gate_allows ? FakeHttpServer::response(200, "ok", "text/plain")
                         : FakeHttpServer::response(403, "change freeze until Monday", "text/plain");
    }
    ++attempts[id];
    if (down) return FakeHttpServer::response(503, "maintenance", "text/plain");
    if (refuse_next > 0) {
      --refuse_next;
      return FakeHttpServer::response(500, "not now", "text/plain");
    }
    ++accepted[id];
    const auto at = body.find("\"event\":\"");
    if (at != std::string::npos) events[id] = body.substr(at + 9, body.find('"', at + 9) - at - 9);
    return FakeHttpServer::response(200, "", "text/plain");
  }
};

class WebhookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<FakeHttpServer>([this](const std::string& r) { return receiver_.respond(r); });
    const std::string key = dir_.write("chat.key", std::string(kSecret) + "\n");
    std::filesystem::permissions(key, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    std::ofstream(dir_.file("coordinator.yaml"))
        << "webhooks:\n  - name: chat\n    url: " << server_->url() << "/hooks/tern\n    secret_file: " << key
        << "\n    timeout: 5s\n"
        << "  - name: cab\n    url: " << server_->url() << "/gate\n    secret_file: " << key
        << "\n    events: [gate_passed]\n    timeout: 5s\n";
  }

  void start_coordinator() {
    std::filesystem::remove(dir_.file("ready.json"));
    coordinator_ = std::make_unique<Process>(
        TERN_COORDINATOR_BIN,
        std::vector<std::string>{"-c", dir_.file("coordinator.yaml"), "--insecure", "--listen", "127.0.0.1:0",
                                 "--metrics-listen", "127.0.0.1:0", "--database", dir_.file("coordinator.db"),
                                 "--ready-file", dir_.file("ready.json"), "--heartbeat-interval", "100ms",
                                 "--unreachable-after", "3s"},
        dir_.file("coordinator.log"));
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir_.file("ready.json")); })) << coordinator_->log();
    const std::string ready = read_file(dir_.file("ready.json"));
    address_ = ready_address(ready, "grpc");
    metrics_ = ready_address(ready, "metrics");
  }

  void start_agent() {
    agent_ = std::make_unique<Process>(
        TERN_AGENT_BIN,
        std::vector<std::string>{"--insecure", "--coordinator", address_, "--host-id", "host-a", "--label", "role=web",
                                 "--state-dir", dir_.file("state"), "--default-user", "nobody"},
        dir_.file("agent.log"));
  }

  CommandResult ctl(std::vector<std::string> args) const {
    std::vector<std::string> argv{"--insecure", "--coordinator", address_, "--timeout", "5s"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(TERN_CTL_BIN, argv);
  }

  std::optional<tern::v1::Rollout> rollout(const std::string& id) const {
    auto r = ctl({"rollout", "status", id, "-o", "json"});
    tern::v1::Rollout out;
    if (r.code != 0 || !google::protobuf::util::JsonStringToMessage(r.out, &out).ok()) return std::nullopt;
    return out;
  }

  // Delivery ids of the journal's events a webhook with the default events takes.
  std::set<std::string> owed(const std::string& id) const {
    auto r = ctl({"rollout", "history", id, "-o", "json"});
    tern::v1::RolloutHistory h;
    google::protobuf::util::JsonParseOptions opts;
    opts.ignore_unknown_fields = true;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &h, opts).ok()) << r.out << r.err;
    std::set<std::string> out;
    for (const auto& e : h.events()) {
      if (e.kind() == tern::v1::ROLLOUT_EVENT_KIND_HOST_ON_NEW || e.kind() == tern::v1::ROLLOUT_EVENT_KIND_HOST_BACK ||
          e.kind() == tern::v1::ROLLOUT_EVENT_KIND_HOST_ROLLED_BACK ||
          e.kind() == tern::v1::ROLLOUT_EVENT_KIND_HOST_ROLLBACK_FAILED ||
          e.kind() == tern::v1::ROLLOUT_EVENT_KIND_RESUMED_AFTER_RESTART ||
          e.kind() == tern::v1::ROLLOUT_EVENT_KIND_WAVE_BAKING) {
        continue;
      }
      out.insert(id + ":" + std::to_string(e.sequence()));
    }
    return out;
  }

  bool all_accepted(const std::set<std::string>& ids) {
    std::lock_guard lock(receiver_.mu);
    for (const auto& id : ids) {
      if (receiver_.accepted.count(id) == 0) return false;
    }
    return true;
  }

  // Service web, selecting the test's agent, and its release 2, which never
  // comes up: its host fails and a rollout of it pauses (so no port mapping
  // is ever made on this machine).
  void apply_web_with_a_release_that_never_comes_up() {
    std::ofstream(dir_.file("web.yaml")) << "name: web\nselector: role=web\nports: [{public: 8080, blue: 9001, "
                                            "green: 9002}]\nargv: [\"{release_dir}/app\", \"{port}\"]\n";
    std::ofstream(dir_.file("app")) << "#!/bin/sh\nexit 1\n";
    ASSERT_EQ(ctl({"service", "apply", "-f", dir_.file("web.yaml")}).code, 0) << logs();
    auto pushed = ctl({"artifact", "push", dir_.file("app"), "--service", "web", "--version", "2"});
    ASSERT_EQ(pushed.code, 0) << pushed.err;
  }

  std::string metrics_text() const { return http_body(http_get(metrics_, "/metrics")); }

  std::string logs() const {
    return "--- coordinator\n" + read_file(dir_.file("coordinator.log")) + "--- agent\n" +
           read_file(dir_.file("agent.log"));
  }

  TempDir dir_;
  Receiver receiver_;
  std::unique_ptr<FakeHttpServer> server_;
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<Process> agent_;
  std::string address_;
  std::string metrics_;
};

TEST_F(WebhookTest, EveryEventIsDeliveredOnceSignedThroughFailuresAndAKill) {
  start_coordinator();
  // Created at start: increase() counts the first delivery.
  EXPECT_NE(metrics_text().find(R"(tern_webhook_deliveries_total{webhook="chat",result="delivered"} 0)"),
            std::string::npos)
      << metrics_text();
  start_agent();
  ASSERT_TRUE(eventually([&] { return ctl({"hosts"}).out.find("host-a") != std::string::npos; })) << logs();
  ASSERT_NO_FATAL_FAILURE(apply_web_with_a_release_that_never_comes_up());

  // The receiver refuses the first two attempts.
  receiver_.refuse_next = 2;
  auto started = ctl({"rollout", "start", "web", "--version", "2", "--waves", "100%", "--on-failure", "pause", "-y"});
  ASSERT_EQ(started.code, 0) << started.out << started.err;
  const std::string id = "web-1";
  ASSERT_TRUE(eventually([&] {
    auto r = rollout(id);
    return r && r->phase() == tern::v1::ROLLOUT_PHASE_PAUSED;
  }, std::chrono::seconds(60))) << logs();
  std::set<std::string> before = owed(id);
  ASSERT_GE(before.size(), 4u) << "started, wave started, host failed, paused";
  ASSERT_TRUE(eventually([&] { return all_accepted(before); }, std::chrono::seconds(60))) << logs();

  // The receiver goes down; an event is journaled and attempted, not delivered;
  // the coordinator dies before it can be.
  {
    std::lock_guard lock(receiver_.mu);
    receiver_.down = true;
  }
  ASSERT_EQ(ctl({"rollout", "abort", id, "--reason", "webhook test"}).code, 0) << logs();
  std::set<std::string> after = owed(id);
  std::set<std::string> fresh;
  for (const auto& d : after) {
    if (before.count(d) == 0) fresh.insert(d);
  }
  ASSERT_FALSE(fresh.empty()) << "the abort raised no event a webhook takes";
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(receiver_.mu);
    for (const auto& d : fresh) {
      if (receiver_.attempts.count(d) == 0) return false;
    }
    return true;
  }, std::chrono::seconds(30))) << logs();
  coordinator_->signal(SIGKILL);
  coordinator_->wait();
  {
    std::lock_guard lock(receiver_.mu);
    receiver_.down = false;
    for (const auto& d : fresh) EXPECT_EQ(receiver_.accepted.count(d), 0u) << d << " was taken before the kill";
  }

  start_coordinator();
  ASSERT_TRUE(eventually([&] { return all_accepted(after); }, std::chrono::seconds(60))) << logs();
  ASSERT_TRUE(eventually([&] {
    return metrics_text().find(R"(tern_webhook_pending{webhook="chat"} 0)") != std::string::npos;
  })) << metrics_text();

  std::lock_guard lock(receiver_.mu);
  EXPECT_EQ(receiver_.bad_signatures, 0);
  int attempts = 0;
  for (const auto& [d, n] : receiver_.attempts) attempts += n;
  EXPECT_GE(attempts, static_cast<int>(after.size() + 2 + fresh.size()))
      << "the two refused attempts and the one the receiver was down for were retried";
  EXPECT_EQ(receiver_.refuse_next, 0);
  for (const auto& d : after) EXPECT_EQ(receiver_.accepted[d], 1) << d << ": delivered once, never again";
  for (const auto& [d, n] : receiver_.accepted) {
    EXPECT_EQ(n, 1) << d;
    EXPECT_TRUE(after.count(d)) << d << " (" << receiver_.events[d] << ") is not an event of the journal";
  }
  EXPECT_EQ(receiver_.events[*fresh.begin()], "aborted");
  int paused = 0;
  for (const auto& [d, e] : receiver_.events) paused += e == "paused";
  EXPECT_EQ(paused, 1);
}

TEST_F(WebhookTest, AGateWebhookHoldsItsWaveAndItsNoPausesTheRolloutUntilAResumeItAllows) {
  start_coordinator();
  EXPECT_NE(metrics_text().find(R"(tern_webhook_gate_answers_total{webhook="cab",answer="denied"} 0)"),
            std::string::npos)
      << metrics_text();
  start_agent();
  ASSERT_TRUE(eventually([&] { return ctl({"hosts"}).out.find("host-a") != std::string::npos; })) << logs();
  ASSERT_NO_FATAL_FAILURE(apply_web_with_a_release_that_never_comes_up());

  std::ofstream(dir_.file("unknown.yaml"))
      << "service: web\nrelease: '2'\nwaves: [{percent: 100, gate_webhook: nobody}]\n";
  auto unknown = ctl({"rollout", "start", "-f", dir_.file("unknown.yaml"), "-y"});
  EXPECT_NE(unknown.code, 0);
  EXPECT_NE(unknown.err.find("\"nobody\" is not a webhook of the coordinator's config (it has cab, chat)"),
            std::string::npos)
      << unknown.err;

  std::ofstream(dir_.file("rollout.yaml"))
      << "service: web\nrelease: '2'\nwaves: [{percent: 100, gate_webhook: cab}]\non_failure: pause\n";
  auto started = ctl({"rollout", "start", "-f", dir_.file("rollout.yaml"), "-y"});
  ASSERT_EQ(started.code, 0) << started.out << started.err;
  const std::string id = "web-1";
  std::optional<tern::v1::Rollout> r;
  ASSERT_TRUE(eventually([&] {
    r = rollout(id);
    return r && r->phase() == tern::v1::ROLLOUT_PHASE_PAUSED;
  }, std::chrono::seconds(30))) << logs();
  EXPECT_NE(r->message().find("webhook cab did not allow wave 1: HTTP 403: \"change freeze until Monday\""),
            std::string::npos)
      << r->message();
  EXPECT_EQ(r->wave_step(), tern::v1::WAVE_STEP_AWAITING_GATE);
  ASSERT_EQ(r->hosts_size(), 1);
  EXPECT_EQ(r->hosts(0).state(), tern::v1::HOST_ROLLOUT_STATE_WAITING) << "nothing was deployed";
  const std::string staged = dir_.file("state/web/releases/2");
  EXPECT_FALSE(std::filesystem::exists(staged)) << "the host itself never even staged the release";

  {
    std::lock_guard lock(receiver_.mu);
    receiver_.gate_allows = true;
  }
  ASSERT_EQ(ctl({"rollout", "resume", id}).code, 0) << logs();
  ASSERT_TRUE(eventually([&] {
    r = rollout(id);
    return r && r->hosts_size() == 1 && r->hosts(0).state() == tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE;
  }, std::chrono::seconds(60))) << logs();
  EXPECT_TRUE(std::filesystem::exists(staged)) << "allowed, the host staged and tried it";
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(receiver_.mu);
    for (const auto& [d, e] : receiver_.events) {
      if (e == "gate_passed") return true;
    }
    return false;
  })) << "the gate's own events reach it as its events: list says";
  std::lock_guard lock(receiver_.mu);
  EXPECT_EQ(receiver_.bad_signatures, 0);
  ASSERT_EQ(receiver_.gate_asks.size(), 2u) << "asked once, then again on resume";
  EXPECT_NE(receiver_.gate_ids[0], receiver_.gate_ids[1]) << "a new ask has a new id";
  EXPECT_EQ(receiver_.gate_ids[0].rfind("web-1:gate:1:", 0), 0u) << receiver_.gate_ids[0];
  EXPECT_NE(receiver_.gate_asks[0].find("\"event\":\"gate\""), std::string::npos) << receiver_.gate_asks[0];
  EXPECT_NE(receiver_.gate_asks[0].find("\"hosts\":1"), std::string::npos) << receiver_.gate_asks[0];
  const std::string m = metrics_text();
  EXPECT_NE(m.find(R"(tern_webhook_gate_answers_total{webhook="cab",answer="denied"} 1)"), std::string::npos) << m;
  EXPECT_NE(m.find(R"(tern_webhook_gate_answers_total{webhook="cab",answer="allowed"} 1)"), std::string::npos) << m;
}

}  // namespace
}  // namespace tern::testing
