#include "agent/coordinator_link.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include "core/status_fmt.h"

#include "core/duration.h"
#include "core/grpc_limits.h"

namespace tern {
namespace {

// Byte-for-byte comparable: deterministic serialization of each status in order.
std::string fingerprint(const google::protobuf::RepeatedPtrField<tern::v1::ServiceStatus>& services) {
  std::string out;
  for (const auto& s : services) {
    std::string one;
    {
      google::protobuf::io::StringOutputStream raw(&one);
      google::protobuf::io::CodedOutputStream coded(&raw);
      coded.SetSerializationDeterministic(true);
      s.SerializeToCodedStream(&coded);
    }
    out += std::to_string(one.size());
    out += ':';
    out += one;
  }
  return out;
}

}  // namespace

CoordinatorLink::CoordinatorLink(Options options, HelloBuilder hello, CommandHandler on_command)
    : options_(std::move(options)),
      hello_(std::move(hello)),
      on_command_(std::move(on_command)),
      backoff_(options_.backoff) {}

CoordinatorLink::~CoordinatorLink() { stop(); }

void CoordinatorLink::start() { thread_ = std::thread([this] { run(); }); }

void CoordinatorLink::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (stream_ != nullptr && connected_ && !writes_done_) {
      writes_done_ = true;
      stream_->WritesDone();
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(1), [this] { return active_ctx_ == nullptr; });
    if (active_ctx_ != nullptr) active_ctx_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

bool CoordinatorLink::wait_for(Millis d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stopping_; });
  return !stopping_;
}

bool CoordinatorLink::send(const tern::v1::AgentMessage& msg) {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (stream_ == nullptr || !connected_ || writes_done_) return false;
  return stream_->Write(msg);
}

void CoordinatorLink::run() {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    session();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
    }
    const Millis delay = backoff_.next_delay();
    spdlog::info("reconnecting to coordinator {} in {} (attempt {})", options_.target, format_duration(delay),
                 backoff_.attempts());
    if (!wait_for(delay)) return;
  }
}

void CoordinatorLink::session() {
  grpc::ChannelArguments args;
  // A private subchannel per link: our own backoff decides when to redial,
  // not a subchannel shared with (and backed off by) an earlier attempt.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // gRPC's default receive limit (4 MiB) is below what the coordinator may send.
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  if (!options_.server_name.empty()) args.SetSslTargetNameOverride(options_.server_name);
  auto channel = grpc::CreateCustomChannel(
      options_.target, options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials(), args);
  auto stub = tern::v1::AgentService::NewStub(channel);

  grpc::ClientContext ctx;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    active_ctx_ = &ctx;
  }
  auto stream = stub->Connect(&ctx);
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    stream_ = stream.get();
    writes_done_ = false;
  }

  tern::v1::AgentMessage hello;
  *hello.mutable_hello() = hello_();
  tern::v1::CoordinatorMessage msg;
  std::thread heartbeats;
  bool ok = stream->Write(hello) && stream->Read(&msg);
  if (ok && !msg.has_hello_ack()) {
    spdlog::error("coordinator {} answered the hello with something else; dropping the stream", options_.target);
    ctx.TryCancel();
    ok = false;
  }
  if (!ok) ++failed_attempts_;
  if (ok) {
    const auto& ack = msg.hello_ack();
    backoff_.reset();
    connected_ = true;
    epoch_ = ack.epoch();
    ++connections_;
    Millis interval = options_.heartbeat_interval;
    if (ack.has_heartbeat_interval()) {
      interval = Millis(google::protobuf::util::TimeUtil::DurationToMilliseconds(ack.heartbeat_interval()));
    }
    spdlog::info("connected to coordinator {} (version {}, epoch {}, heartbeat every {})", options_.target,
                 ack.coordinator_version(), ack.epoch(), format_duration(interval));
    heartbeats = std::thread(
        [this, interval, reported = fingerprint(hello.hello().services())] { heartbeat_loop(interval, reported); });
    while (stream->Read(&msg)) {
      if (msg.has_command()) {
        on_command_(msg.command());
      } else if (msg.has_hello_ack()) {
        spdlog::warn("coordinator sent a second hello ack; ignoring it");
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    connected_ = false;
  }
  cv_.notify_all();  // wakes the heartbeat thread
  if (heartbeats.joinable()) heartbeats.join();
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    stream_ = nullptr;
  }
  grpc::Status status = stream->Finish();
  bool stopping;
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_ctx_ = nullptr;
    stopping = stopping_;
  }
  cv_.notify_all();  // stop() waits for this
  if (stopping) return;
  spdlog::warn("stream to coordinator {} ended: {} ({})", options_.target,
               status.ok() ? "closed by the coordinator" : status.error_message(),
               static_cast<int>(status.error_code()));
}

void CoordinatorLink::heartbeat_loop(Millis interval, std::string reported) {
  uint64_t seq = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, interval, [this] { return stopping_ || !connected_; });
      if (stopping_ || !connected_) return;
    }
    tern::v1::AgentMessage hb;
    hb.mutable_heartbeat()->set_sequence(++seq);
    // A snapshot taken before a result that changed the state may arrive
    // after it; the next heartbeat then differs from this one and corrects it.
    tern::v1::Hello now = hello_();
    std::string state = fingerprint(now.services());
    const bool changed = state != reported;
    if (changed) *hb.mutable_heartbeat()->mutable_report()->mutable_services() = std::move(*now.mutable_services());
    if (usage_) {
      for (auto& u : usage_()) *hb.mutable_heartbeat()->add_usage() = std::move(u);
    }
    if (!send(hb)) return;
    ++heartbeats_sent_;
    if (changed) {
      ++reports_sent_;
      reported = std::move(state);
    }
    spdlog::trace("heartbeat {}{}", seq, changed ? " with the changed state" : "");
  }
}

}  // namespace tern
