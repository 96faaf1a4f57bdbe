#include "agent/coordinator_link.h"

#include <gtest/gtest.h>

#include <functional>
#include <mutex>
#include <thread>

#include "coordinator/coordinator.h"
#include "core/grpc_limits.h"
#include "core/version.h"
#include "tern/v1/agent.grpc.pb.h"
#include "tern/v1/fleet.grpc.pb.h"
#include "tests/support/eventually.h"

namespace tern {
namespace {

using testing::eventually;

CoordinatorConfig test_config(const std::string& listen) {
  CoordinatorConfig cfg;
  cfg.listen = listen;
  cfg.insecure = true;
  cfg.metrics_listen = "";
  cfg.database = ":memory:";
  cfg.heartbeat_interval = Millis(50);
  cfg.unreachable_after = Millis(5000);
  return cfg;
}

tern::v1::Hello hello() {
  tern::v1::Hello h;
  h.set_host_id("link-test");
  h.set_agent_version(kVersion);
  h.set_protocol(kProtocolRevision);
  return h;
}

TEST(CoordinatorLinkTest, ConnectsAndReconnectsAfterTheCoordinatorRestarts) {
  auto first = std::make_unique<Coordinator>(test_config("127.0.0.1:0"), SystemClock::instance());
  ASSERT_TRUE(first->start().ok());
  const std::string address = first->grpc_address();

  CoordinatorLink link({address, {.initial = Millis(20), .max = Millis(200)}, Millis(50), nullptr, ""}, hello,
                       [](const tern::v1::Command&) {});
  link.start();
  ASSERT_TRUE(eventually([&] { return link.connected(); }));
  EXPECT_EQ(link.connections(), 1u);
  const uint64_t first_epoch = link.epoch();

  first->shutdown();
  ASSERT_TRUE(eventually([&] { return !link.connected(); }));

  // Same address, fresh process state (a new :memory: database starts at epoch 1 too).
  Coordinator second(test_config(address), SystemClock::instance());
  ASSERT_TRUE(second.start().ok());
  ASSERT_TRUE(eventually([&] { return link.connected() && link.connections() == 2; }));
  EXPECT_EQ(link.epoch(), first_epoch);
  link.stop();
  second.shutdown();
}

TEST(CoordinatorLinkTest, KeepsRetryingWhileNothingListensAndStopsPromptly) {
  // Reserve a port, then free it so nothing listens there.
  std::string address;
  {
    Coordinator probe(test_config("127.0.0.1:0"), SystemClock::instance());
    ASSERT_TRUE(probe.start().ok());
    address = probe.grpc_address();
  }
  CoordinatorLink link({address, {.initial = Millis(10), .max = Millis(50)}, Millis(50), nullptr, ""}, hello,
                       [](const tern::v1::Command&) {});
  link.start();
  ASSERT_TRUE(eventually([&] { return link.failed_attempts() >= 3; }));
  EXPECT_FALSE(link.connected());
  EXPECT_EQ(link.connections(), 0u);
  link.stop();  // returns although no stream ever opened (ctest's timeout catches a hang)
}

// A bare AgentService.Connect stream, for speaking to the coordinator the way
// a broken or hostile client would.
struct RawAgentStream {
  explicit RawAgentStream(const std::string& address)
      : stub(tern::v1::AgentService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    stream = stub->Connect(&ctx);
  }
  // Reads until the coordinator ends the stream; returns its status.
  grpc::Status closed_with() {
    tern::v1::CoordinatorMessage msg;
    EXPECT_FALSE(stream->Read(&msg)) << "the coordinator sent something instead of closing";
    return stream->Finish();
  }

  std::unique_ptr<tern::v1::AgentService::Stub> stub;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<tern::v1::AgentMessage, tern::v1::CoordinatorMessage>> stream;
};

TEST(CoordinatorLinkTest, AStreamThatNeverSaysHelloIsClosed) {
  CoordinatorConfig cfg = test_config("127.0.0.1:0");
  cfg.hello_timeout = Millis(100);
  Coordinator coordinator(cfg, SystemClock::instance());
  ASSERT_TRUE(coordinator.start().ok());
  RawAgentStream raw(coordinator.grpc_address());
  grpc::Status st = raw.closed_with();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  EXPECT_NE(st.error_message().find("no hello"), std::string::npos) << st.error_message();
  coordinator.shutdown();
}

TEST(CoordinatorLinkTest, AHelloWithABadHostIdIsRefused) {
  Coordinator coordinator(test_config("127.0.0.1:0"), SystemClock::instance());
  ASSERT_TRUE(coordinator.start().ok());
  RawAgentStream raw(coordinator.grpc_address());
  tern::v1::AgentMessage bad;
  *bad.mutable_hello() = hello();
  bad.mutable_hello()->set_host_id("../etc/passwd");
  ASSERT_TRUE(raw.stream->Write(bad));
  grpc::Status st = raw.closed_with();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("invalid host id"), std::string::npos) << st.error_message();
  coordinator.shutdown();
}

TEST(CoordinatorLinkTest, HeartbeatsCarryTheStateOnlyWhenItChanged) {
  Coordinator coordinator(test_config("127.0.0.1:0"), SystemClock::instance());
  ASSERT_TRUE(coordinator.start().ok());
  std::mutex mu;
  std::string running = "1.0";
  auto build = [&] {
    tern::v1::Hello h = hello();
    std::lock_guard lock(mu);
    auto* s = h.add_services();
    s->set_service("web");
    auto* slot = s->add_slots();
    slot->set_color(tern::v1::SLOT_COLOR_BLUE);
    slot->set_phase(tern::v1::SLOT_PHASE_HEALTHY);
    slot->set_active(true);
    slot->mutable_release()->set_version(running);
    return h;
  };
  CoordinatorLink link(
      {coordinator.grpc_address(), {.initial = Millis(20), .max = Millis(200)}, Millis(50), nullptr, ""}, build,
      [](const tern::v1::Command&) {});
  link.start();
  ASSERT_TRUE(eventually([&] { return link.connected(); }));

  auto channel = grpc::CreateChannel(coordinator.grpc_address(), grpc::InsecureChannelCredentials());
  auto fleet = tern::v1::FleetService::NewStub(channel);
  auto reported = [&]() -> std::string {
    grpc::ClientContext ctx;
    tern::v1::GetHostRequest req;
    req.set_host_id("link-test");
    tern::v1::Host host;
    if (!fleet->GetHost(&ctx, req, &host).ok() || host.services_size() != 1) return "";
    for (const auto& slot : host.services(0).slots()) {
      if (slot.active()) return slot.release().version();
    }
    return "";
  };
  ASSERT_TRUE(eventually([&] { return reported() == "1.0"; }));

  // Nothing changed: heartbeats go out bare.
  const uint64_t beats = link.heartbeats_sent();
  ASSERT_TRUE(eventually([&] { return link.heartbeats_sent() >= beats + 5; }));
  EXPECT_EQ(link.reports_sent(), 0u);

  // A change no command or event announced reaches the coordinator with the
  // next heartbeat, once.
  {
    std::lock_guard lock(mu);
    running = "2.0";
  }
  ASSERT_TRUE(eventually([&] { return reported() == "2.0"; }));
  const uint64_t after = link.heartbeats_sent();
  ASSERT_TRUE(eventually([&] { return link.heartbeats_sent() >= after + 5; }));
  EXPECT_EQ(link.reports_sent(), 1u);
  link.stop();
  coordinator.shutdown();
}

// A coordinator that answers the hello and then sends one command of
// `command_bytes`, and counts the hellos (each a new stream).
class BigCommandCoordinator final : public tern::v1::AgentService::Service {
 public:
  explicit BigCommandCoordinator(size_t command_bytes) : command_bytes_(command_bytes) {}

  grpc::Status Connect(grpc::ServerContext* ctx,
                       grpc::ServerReaderWriter<tern::v1::CoordinatorMessage, tern::v1::AgentMessage>* stream) override {
    tern::v1::AgentMessage in;
    if (!stream->Read(&in) || !in.has_hello()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no hello");
    ++hellos_;
    tern::v1::CoordinatorMessage ack;
    ack.mutable_hello_ack()->set_epoch(1);
    if (!stream->Write(ack)) return grpc::Status::OK;
    tern::v1::CoordinatorMessage big;
    big.mutable_command()->set_command_id(1);
    auto* spec = big.mutable_command()->mutable_apply_service()->mutable_spec();
    spec->set_name("web");
    (*spec->mutable_env())["BLOB"] = std::string(command_bytes_, 'x');
    if (!stream->Write(big)) return grpc::Status::OK;
    while (stream->Read(&in) && !ctx->IsCancelled()) {
    }
    return grpc::Status::OK;
  }

  int hellos() const { return hellos_; }

 private:
  const size_t command_bytes_;
  std::atomic<int> hellos_{0};
};

// Whatever the coordinator may send, the agent can receive: a message over
// the agent's limit would break the stream, and the agent would reconnect to
// be sent it again, forever.
TEST(CoordinatorLinkTest, ReceivesTheLargestMessageTheCoordinatorMaySend) {
  BigCommandCoordinator coordinator(kMaxGrpcMessageBytes - (64 << 10));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&coordinator);
  builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  auto server = builder.BuildAndStart();
  ASSERT_TRUE(server && port != 0);

  std::atomic<int> commands{0};
  CoordinatorLink link({"127.0.0.1:" + std::to_string(port), {.initial = Millis(20), .max = Millis(200)},
                        Millis(50), nullptr, ""},
                       hello, [&](const tern::v1::Command& cmd) {
                         if (cmd.has_apply_service()) ++commands;
                       });
  link.start();
  EXPECT_TRUE(eventually([&] { return commands.load() >= 1 || coordinator.hellos() >= 3; }));
  EXPECT_EQ(commands.load(), 1) << "the link dropped the stream " << coordinator.hellos() << " times";
  EXPECT_EQ(coordinator.hellos(), 1);
  link.stop();
  server->Shutdown();
}

}  // namespace
}  // namespace tern
