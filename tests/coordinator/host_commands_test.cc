#include "coordinator/host_commands.h"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "tests/support/eventually.h"

namespace tern {
namespace {

using tern::v1::CommandResult;

// Two connected hosts, web-1 on stream 1 and web-2 on stream 2, and the
// commands' side of the coordinator, all on a real event loop.
class HostCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override { make(timeout()); }
  virtual Millis timeout() const { return Millis(60'000); }

  void make(Millis timeout) {
    db_ = *Database::open(":memory:");
    store_ = *HostStore::open(*db_);
    registry_ = std::make_unique<HostRegistry>(*store_, clock_, HostRegistry::Options{}, &metrics_);
    ASSERT_TRUE(registry_->load().ok());
    ASSERT_TRUE(registry_->on_hello(1, "web-1", {}, "0.1.0", "peer-1").ok());
    ASSERT_TRUE(registry_->on_hello(2, "web-2", {}, "0.1.0", "peer-2").ok());
    HostCommands::Streams streams;
    streams.send = [this](uint64_t session, tern::v1::CoordinatorMessage msg) {
      sent_.push_back({session, msg.command()});
      return true;
    };
    streams.close = [this](uint64_t session, grpc::Status st) { closed_.push_back({session, st.error_code()}); };
    commands_ = std::make_unique<HostCommands>(loop_, *registry_, std::move(streams), /*epoch=*/7, timeout, metrics_);
    loop_.start();
  }
  void TearDown() override { loop_.stop(); }

  // Sends a deploy to `host`; its outcome lands in done_[i], progress in progress_.
  uint64_t send(const std::string& host) {
    uint64_t id = 0;
    loop_.run_sync([&] {
      const size_t slot = done_.size();
      done_.emplace_back();
      CommandObserver obs{[this](const tern::v1::AgentEvent& e) { progress_.push_back(e.message()); },
                          [this, slot](const CommandResult& r) { done_[slot] = r; }};
      tern::v1::Command cmd;
      cmd.mutable_deploy()->set_service("web");
      ASSERT_TRUE(commands_->send(host, cmd, std::move(obs)).ok());
      id = sent_.back().second.command_id();
    });
    return id;
  }
  void result(uint64_t session, const std::string& host, uint64_t id, tern::v1::CommandOutcome outcome) {
    CommandResult r;
    r.set_command_id(id);
    r.set_outcome(outcome);
    loop_.run_sync([&] { commands_->on_result(session, host, r); });
  }
  void progress(uint64_t session, const std::string& host, uint64_t id, const std::string& msg) {
    tern::v1::AgentEvent e;
    e.set_command_id(id);
    e.set_message(msg);
    loop_.run_sync([&] { commands_->on_progress(session, host, e); });
  }
  int64_t rejected(const char* reason) {
    return metrics_.counter("tern_agent_results_rejected_total", "", std::string("reason=\"") + reason + "\"").load();
  }

  FakeClock clock_;
  Metrics metrics_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<HostStore> store_;
  std::unique_ptr<HostRegistry> registry_;
  EventLoop loop_{"test"};
  std::unique_ptr<HostCommands> commands_;
  std::vector<std::pair<uint64_t, tern::v1::Command>> sent_;
  std::vector<std::pair<uint64_t, grpc::StatusCode>> closed_;
  std::vector<std::optional<CommandResult>> done_;
  std::vector<std::string> progress_;
};

TEST_F(HostCommandsTest, ACommandGoesOutOnTheHostsStreamWithTheEpoch) {
  const uint64_t id = send("web-2");
  ASSERT_EQ(sent_.size(), 1u);
  EXPECT_EQ(sent_[0].first, 2u);
  EXPECT_EQ(sent_[0].second.epoch(), 7u);
  EXPECT_EQ(id >> 32, 7u);
}

TEST_F(HostCommandsTest, TheResultFromTheStreamThatGotTheCommandEndsIt) {
  const uint64_t id = send("web-1");
  progress(1, "web-1", id, "staging");
  result(1, "web-1", id, tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  ASSERT_TRUE(done_[0]);
  EXPECT_EQ(done_[0]->outcome(), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(progress_, std::vector<std::string>{"staging"});
  EXPECT_EQ(rejected("foreign") + rejected("late"), 0);
}

TEST_F(HostCommandsTest, AnotherHostsForgedResultAndProgressChangeNothing) {
  const uint64_t id = send("web-1");
  // web-2's agent key guesses the id and claims web-1's deploy succeeded.
  progress(2, "web-2", id, "forged step");
  result(2, "web-2", id, tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_FALSE(done_[0]) << "a forged result ended another host's command";
  EXPECT_TRUE(progress_.empty());
  EXPECT_EQ(rejected("foreign"), 2);
  EXPECT_TRUE(closed_.empty()) << "two strikes are not yet enough to close a stream";
  // The real answer still counts.
  result(1, "web-1", id, tern::v1::COMMAND_OUTCOME_FAILED);
  ASSERT_TRUE(done_[0]);
  EXPECT_EQ(done_[0]->outcome(), tern::v1::COMMAND_OUTCOME_FAILED);
}

TEST_F(HostCommandsTest, AResultForACommandNeverSentAnywhereIsForeignToo) {
  result(1, "web-1", (uint64_t{7} << 32) | 999, tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  result(1, "web-1", (uint64_t{6} << 32) | 1, tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(rejected("foreign"), 2);
}

TEST_F(HostCommandsTest, AStreamThatKeepsSendingForeignResultsIsClosed) {
  const uint64_t id = send("web-1");
  for (int i = 0; i < HostCommands::kMaxForeignResults; ++i) {
    result(2, "web-2", id + static_cast<uint64_t>(i), tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  }
  ASSERT_EQ(closed_.size(), 1u);
  EXPECT_EQ(closed_[0].first, 2u);
  EXPECT_EQ(closed_[0].second, grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(done_[0]);
}

TEST_F(HostCommandsTest, ARepeatedOrLateAnswerIsDroppedButNotHeldAgainstTheStream) {
  const uint64_t id = send("web-1");
  result(1, "web-1", id, tern::v1::COMMAND_OUTCOME_FAILED);
  for (int i = 0; i < 2 * HostCommands::kMaxForeignResults; ++i) {
    result(1, "web-1", id, tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  }
  EXPECT_EQ(done_[0]->outcome(), tern::v1::COMMAND_OUTCOME_FAILED) << "the first answer stands";
  EXPECT_EQ(rejected("late"), 2 * HostCommands::kMaxForeignResults);
  EXPECT_EQ(rejected("foreign"), 0);
  EXPECT_TRUE(closed_.empty());
}

TEST_F(HostCommandsTest, AnAnswerOnANewStreamToACommandOfTheOldOneIsLateNotForeign) {
  const uint64_t id = send("web-1");
  loop_.run_sync([&] { commands_->fail_session(1, "the agent on web-1 disconnected"); });
  ASSERT_TRUE(done_[0]);
  EXPECT_EQ(done_[0]->code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
  // web-1 reconnects on stream 3 and reports the outcome it reached meanwhile.
  result(3, "web-1", id, tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(done_[0]->code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
  EXPECT_EQ(rejected("late"), 1);
  EXPECT_EQ(rejected("foreign"), 0);
}

class HostCommandsShortTimeoutTest : public HostCommandsTest {
 protected:
  Millis timeout() const override { return Millis(50); }
};

TEST_F(HostCommandsShortTimeoutTest, ACommandWithoutAnAnswerFailsAtItsDeadline) {
  const uint64_t id = send("web-2");
  auto finished = [&] {
    bool d = false;
    loop_.run_sync([&] { d = done_[0].has_value(); });  // done_ is written on the loop
    return d;
  };
  ASSERT_TRUE(testing::eventually(finished));
  EXPECT_EQ(done_[0]->code(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED));
  // The agent's answer, when it comes, is late, not forged.
  result(2, "web-2", id, tern::v1::COMMAND_OUTCOME_SUCCEEDED);
  EXPECT_EQ(rejected("late"), 1);
  EXPECT_EQ(done_[0]->code(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED));
}

}  // namespace
}  // namespace tern
