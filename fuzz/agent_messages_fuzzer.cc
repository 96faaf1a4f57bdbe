// libFuzzer target: what agents send the coordinator, handled by a real
// Coordinator (":memory:" database, insecure, no /metrics) through its
// AgentStreamListener, the way AgentStream hands messages on: each
// tern.v1.AgentMessage goes through the stream's checks (the size limit,
// make_printable) and then to the event loop, one at a time.
//
// Input: one flags byte, then messages, each a 2-byte big-endian length and
// that many bytes of a serialized AgentMessage. Flag bit 0: the stream is
// TLS-authenticated as host "web-1" with the label role=web (otherwise it is
// insecure, and the agent's hello is believed). Every input is one stream,
// opened before its first message and ended after its last; as with gRPC, a
// message that does not parse or is too large ends the stream, and so does
// the coordinator closing it.
//
// The coordinator is built once per process, with one service ("web", for
// role=web hosts), so a hello from such a host is sent its spec. A result or
// progress event whose command_id is 1-8 is given the id of that command
// (1 = the first) sent on the stream, if there was one: results then reach
// HostCommands' observers instead of only its forgery checks.
//
// Beyond "no crash": after make_printable no string of the message holds a
// control character (C0, DEL, C1) or is longer than kMaxAgentTextBytes and
// the "..." of a cut; the coordinator acknowledges a hello at most once per
// stream and sends no command before that, and every command carries the
// coordinator's epoch.
//
// Hosts, their reported services and their history stay in the coordinator
// from one input to the next (a new stream for the same host is a
// reconnect), and its timers run on wall time: a crash that needs what
// earlier inputs left may not reproduce from its input alone.

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/stubs/logging.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/service_spec.h"
#include "core/text.h"
#include "coordinator/agent_stream.h"
#include "coordinator/coordinator.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/service.grpc.pb.h"

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "tern fuzz: invariant broken: %s\n", what);
  std::abort();
}

void die(const std::string& why) {
  std::fprintf(stderr, "tern fuzz: cannot set up the coordinator: %s\n", why.c_str());
  std::abort();
}

// Stands in for AgentStream: keeps what the coordinator sends and whether it
// closed the stream. Called on the loop thread; read by the fuzzer's thread
// between drains.
class RecordingSession final : public tern::AgentSession {
 public:
  RecordingSession(uint64_t id, std::string certified_host, std::map<std::string, std::string> certified_labels)
      : AgentSession(id, std::move(certified_host), std::move(certified_labels)) {}

  bool send(tern::v1::CoordinatorMessage msg) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return true;  // queued behind the close, never written: as AgentStream does
    sent_.push_back(std::move(msg));
    return true;
  }
  void close(grpc::Status) override {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  void read_next() override {}

  bool closed() {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }
  std::vector<tern::v1::CoordinatorMessage> sent() {
    std::lock_guard<std::mutex> lock(mu_);
    return sent_;
  }

 private:
  std::mutex mu_;
  bool closed_ = false;
  std::vector<tern::v1::CoordinatorMessage> sent_;
};

constexpr char kServiceSpec[] = R"(
name: web
selector: role=web
ports:
  - {name: http, protocol: tcp, public: 8080, blue: 9001, green: 9002}
argv: ["{release_dir}/app", "--port", "{port}"]
health:
  tcp: {}
)";

struct Harness {
  tern::SystemClock clock;
  std::unique_ptr<tern::Coordinator> coordinator;
  uint64_t next_session = 1;
};

Harness* harness = nullptr;

void set_up() {
  harness = new Harness;  // lives as long as the process; ended by stop() at exit
  tern::CoordinatorConfig config;
  config.listen = "127.0.0.1:0";
  config.metrics_listen = "";
  config.database = ":memory:";
  config.insecure = true;
  harness->coordinator = std::make_unique<tern::Coordinator>(config, harness->clock);
  if (auto st = harness->coordinator->start(); !st.ok()) die(std::string(st.message()));

  auto spec = tern::parse_service_spec(kServiceSpec, "fuzzer");
  if (!spec.ok()) die(std::string(spec.status().message()));
  auto stub = tern::v1::ServiceService::NewStub(
      grpc::CreateChannel(harness->coordinator->grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  tern::v1::ApplyServiceRequest req;
  *req.mutable_spec() = *spec;
  tern::v1::ApplyServiceResponse resp;
  if (auto st = stub->ApplyService(&ctx, req, &resp); !st.ok()) die("ApplyService: " + st.error_message());
}

void check_printable(const std::string& text) {
  require(text.size() <= tern::kMaxAgentTextBytes + 3, "agent text longer than the limit after make_printable");
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    require(c >= 0x20 && c != 0x7f, "a control character in agent text after make_printable");
    if (c == 0xc2 && i + 1 < text.size()) {
      const auto next = static_cast<unsigned char>(text[i + 1]);
      require(next < 0x80 || next > 0x9f, "a C1 control in agent text after make_printable");
    }
  }
}

// Every string field of `m`, nested messages and map entries included.
void check_printable(const google::protobuf::Message& m) {
  using google::protobuf::FieldDescriptor;
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(m, f); ++j) check_printable(r->GetRepeatedMessage(m, f, j));
      } else if (r->HasField(m, f)) {
        check_printable(r->GetMessage(m, f));
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING && f->type() != FieldDescriptor::TYPE_BYTES) {
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(m, f); ++j) check_printable(r->GetRepeatedString(m, f, j));
      } else {
        check_printable(r->GetString(m, f));
      }
    }
  }
}

// The command id the coordinator gave the n-th command (1-based) on this
// stream, or `id` itself.
uint64_t resolve(uint64_t id, const std::vector<uint64_t>& commands) {
  if (id >= 1 && id <= 8 && id <= commands.size()) return commands[id - 1];
  return id;
}

void check_sent(const std::vector<tern::v1::CoordinatorMessage>& sent, std::vector<uint64_t>& commands) {
  bool acked = false;
  commands.clear();
  for (const auto& m : sent) {
    if (m.has_hello_ack()) {
      require(!acked, "a stream was acknowledged twice");
      acked = true;
      require(m.hello_ack().epoch() == harness->coordinator->epoch(), "a hello ack with another epoch");
    } else if (m.has_command()) {
      require(acked, "a command went out on a stream before its hello was acknowledged");
      require(m.command().epoch() == harness->coordinator->epoch(), "a command with another epoch");
      commands.push_back(m.command().command_id());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // protobuf logs every string that is not UTF-8, the coordinator every
  // refusal: formatted (so that code runs), but not printed.
  google::protobuf::SetLogHandler(nullptr);
  auto logger = std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
  logger->set_level(spdlog::level::debug);
  spdlog::set_default_logger(logger);
  set_up();
  // Before the libraries' own statics go: the loop thread and the gRPC
  // server stop first.
  std::atexit([] { harness->coordinator->shutdown(); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const bool certified = (data[0] & 1) != 0;
  std::size_t at = 1;

  tern::Coordinator& coordinator = *harness->coordinator;
  auto session = std::make_shared<RecordingSession>(
      harness->next_session++, certified ? "web-1" : "",
      certified ? std::map<std::string, std::string>{{"role", "web"}} : std::map<std::string, std::string>{});
  coordinator.on_agent_stream_open(session);
  const std::string peer = "ipv4:127.0.0.1:40000";
  std::vector<uint64_t> commands;
  std::string reason = "agent closed the stream";

  while (at + 2 <= size && !session->closed()) {
    const std::size_t len = (std::size_t{data[at]} << 8) | data[at + 1];
    at += 2;
    if (len > size - at) {  // a truncated message
      reason = "stream broken";
      break;
    }
    tern::v1::AgentMessage msg;
    if (!msg.ParseFromArray(data + at, static_cast<int>(len))) {
      reason = "stream broken";
      break;
    }
    at += len;
    // AgentStream::OnReadDone. With 2-byte lengths no message reaches the
    // size limit; the check is here so that the path matches the stream's.
    if (msg.ByteSizeLong() > tern::kMaxAgentMessageBytes) break;
    tern::make_printable(msg, tern::kMaxAgentTextBytes);
    check_printable(msg);

    if (msg.has_result()) {
      msg.mutable_result()->set_command_id(resolve(msg.result().command_id(), commands));
    } else if (msg.has_event()) {
      msg.mutable_event()->set_command_id(resolve(msg.event().command_id(), commands));
    }
    coordinator.on_agent_message(session, peer, std::move(msg));
    coordinator.drain();
    check_sent(session->sent(), commands);
  }
  coordinator.on_agent_stream_done(session, reason);
  coordinator.drain();
  return 0;
}
