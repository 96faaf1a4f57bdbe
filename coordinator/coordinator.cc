#include "coordinator/coordinator.h"

#include <google/protobuf/util/time_util.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include "core/status_fmt.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/duration.h"
#include "core/version.h"

namespace tern {

Coordinator::Coordinator(CoordinatorConfig config, const Clock& clock)
    : config_(std::move(config)),
      clock_(clock),
      messages_in_(metrics_.counter("tern_agent_messages_received_total", "Messages received on agent streams.")),
      messages_out_(metrics_.counter("tern_agent_messages_sent_total", "Messages sent on agent streams.")),
      agents_connected_(metrics_.gauge("tern_agents_connected", "Agent streams that completed their hello.")),
      streams_opened_(metrics_.counter("tern_agent_streams_opened_total", "Agent streams accepted since start.")) {}

Coordinator::~Coordinator() { shutdown(); }

absl::Status Coordinator::start() {
  if (auto st = validate(config_); !st.ok()) return st;
  started_ = clock_.now();
  if (config_.database != ":memory:") {
    auto dir = std::filesystem::path(config_.database).parent_path();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  }
  auto db = Database::open(config_.database);
  if (!db.ok()) return db.status();
  db_ = *std::move(db);
  auto store = HostStore::open(*db_);
  if (!store.ok()) return store.status();
  store_ = *std::move(store);
  auto epoch = store_->next_epoch();
  if (!epoch.ok()) return epoch.status();
  epoch_ = *epoch;

  registry_ = std::make_unique<HostRegistry>(*store_, clock_,
                                             HostRegistry::Options{.unreachable_after = config_.unreachable_after},
                                             &metrics_);
  if (auto st = registry_->load(); !st.ok()) return st;

  agent_service_ = std::make_unique<AgentServiceImpl>(*this, &messages_out_);
  fleet_service_ = std::make_unique<FleetServiceImpl>(loop_, *registry_, *store_, epoch_, started_);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  // gRPC sets SO_REUSEPORT by default, which would let a second coordinator
  // bind the same port and silently split the fleet between two processes.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(config_.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(agent_service_.get());
  builder.RegisterService(fleet_service_.get());
  // Agents hold their stream for days: keepalive finds dead peers, and agents
  // may ping as often as every 10 s without being cut off.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config_.listen,
                                               ": the address is in use or not local to this machine "
                                               "(choose another with --listen)"));
  }
  auto hp = split_host_port(config_.listen);
  grpc_address_ = absl::StrCat(hp->first.find(':') != std::string::npos ? absl::StrCat("[", hp->first, "]") : hp->first,
                               ":", port);
  server_->GetHealthCheckService()->SetServingStatus(true);

  if (!config_.metrics_listen.empty()) {
    auto bound = metrics_server_.start(config_.metrics_listen);
    if (!bound.ok()) {
      shutdown();
      return bound.status();
    }
    metrics_address_ = *bound;
  }

  loop_.start();
  const Millis tick = std::clamp(config_.unreachable_after / 4, Millis(50), Millis(1000));
  loop_.every(tick, [this] {
    if (auto st = registry_->tick(); !st.ok()) spdlog::error("registry: {}", st.message());
    agents_connected_.store(static_cast<int64_t>(registry_->connected_count()));
  });
  spdlog::info("tern-coordinator {} serving on {} (epoch {}, database {}, metrics {}, unreachable after {})",
               kVersion, grpc_address_, epoch_, config_.database,
               metrics_address_.empty() ? "off" : metrics_address_, format_duration(config_.unreachable_after));
  return absl::OkStatus();
}

void Coordinator::shutdown() {
  if (shut_down_.exchange(true)) return;
  if (server_) {
    // Agents learn why their stream ended and reconnect on their own.
    loop_.run_sync([this] {
      for (auto& [id, info] : sessions_) {
        info.session->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator shutting down"));
      }
    });
    // Calls still queued on the loop finish while the loop runs; the deadline
    // cancels the agent streams, which never end on their own.
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }
  loop_.stop();
  metrics_server_.stop();
  server_.reset();
  spdlog::info("tern-coordinator stopped");
}

void Coordinator::on_agent_stream_open(const std::shared_ptr<AgentSession>& session) {
  loop_.post([this, session] {
    sessions_.try_emplace(session->id(), SessionInfo{session, ""});
    streams_opened_.fetch_add(1, std::memory_order_relaxed);
  });
  // Whatever dialled in must introduce itself; a silent stream is not kept open.
  loop_.post_after(config_.hello_timeout, [this, session] {
    auto it = sessions_.find(session->id());
    if (it != sessions_.end() && it->second.host_id.empty()) {
      spdlog::warn("closing an agent stream that sent no hello within {}", format_duration(config_.hello_timeout));
      session->close(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                  "no hello within " + format_duration(config_.hello_timeout)));
    }
  });
}

void Coordinator::on_agent_message(const std::shared_ptr<AgentSession>& session, const std::string& peer,
                                   tern::v1::AgentMessage msg) {
  messages_in_.fetch_add(1, std::memory_order_relaxed);
  loop_.post([this, session, peer, msg = std::move(msg)] { handle_message(session, peer, msg); });
}

void Coordinator::on_agent_stream_done(const std::shared_ptr<AgentSession>& session, const std::string& reason) {
  loop_.post([this, session, reason] { handle_done(session, reason); });
}

void Coordinator::handle_message(const std::shared_ptr<AgentSession>& session, const std::string& peer,
                                 const tern::v1::AgentMessage& msg) {
  auto it = sessions_.find(session->id());
  if (it == sessions_.end()) return;  // already done
  SessionInfo& info = it->second;
  if (msg.has_hello()) {
    handle_hello(info, peer, msg.hello());
    return;
  }
  if (info.host_id.empty()) {
    session->close(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "the first message on an agent stream must be a hello"));
    return;
  }
  switch (msg.body_case()) {
    case tern::v1::AgentMessage::kHeartbeat:
      registry_->on_heartbeat(session->id(), info.host_id);
      break;
    case tern::v1::AgentMessage::kResult:
    case tern::v1::AgentMessage::kEvent:
      registry_->on_heartbeat(session->id(), info.host_id);
      spdlog::debug("host {}: {}", info.host_id, msg.ShortDebugString());
      break;
    default:
      spdlog::warn("host {}: ignoring an empty agent message", info.host_id);
  }
}

void Coordinator::handle_hello(SessionInfo& info, const std::string& peer, const tern::v1::Hello& hello) {
  auto refuse = [&](grpc::StatusCode code, std::string why) {
    spdlog::warn("refused agent hello from {}: {}", peer, why);
    info.session->close(grpc::Status(code, std::move(why)));
  };
  if (!info.host_id.empty()) {
    return refuse(grpc::StatusCode::FAILED_PRECONDITION, "hello sent twice on one stream");
  }
  if (!is_valid_host_id(hello.host_id())) {
    return refuse(grpc::StatusCode::INVALID_ARGUMENT,
                  absl::StrCat("invalid host id \"", hello.host_id(),
                               "\": use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"));
  }
  if (hello.protocol() != kProtocolRevision) {
    return refuse(grpc::StatusCode::FAILED_PRECONDITION,
                  absl::StrCat("agent speaks protocol ", hello.protocol(), ", this coordinator speaks ",
                               kProtocolRevision, "; upgrade the older side"));
  }
  Labels labels(hello.labels().begin(), hello.labels().end());
  for (const auto& [k, v] : labels) {
    if (!is_valid_label_key(k) || !is_valid_label_value(v)) {
      return refuse(grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat("invalid label \"", k, "=", v, "\""));
    }
  }
  auto result = registry_->on_hello(info.session->id(), hello.host_id(), labels, hello.agent_version(), peer);
  if (!result.ok()) {
    return refuse(grpc::StatusCode::UNAVAILABLE,
                  absl::StrCat("coordinator could not record the host: ", result.status().message()));
  }
  info.host_id = hello.host_id();
  if (result->superseded_session) {
    if (auto old = sessions_.find(*result->superseded_session); old != sessions_.end()) {
      old->second.session->close(grpc::Status(grpc::StatusCode::ABORTED,
                                              "superseded by a newer stream from the same host"));
    }
  }
  tern::v1::CoordinatorMessage ack;
  auto* a = ack.mutable_hello_ack();
  a->set_coordinator_version(kVersion);
  a->set_epoch(epoch_);
  *a->mutable_heartbeat_interval() =
      google::protobuf::util::TimeUtil::MillisecondsToDuration(config_.heartbeat_interval.count());
  info.session->send(std::move(ack));
  agents_connected_.store(static_cast<int64_t>(registry_->connected_count()));
}

void Coordinator::handle_done(const std::shared_ptr<AgentSession>& session, const std::string& reason) {
  auto it = sessions_.find(session->id());
  if (it == sessions_.end()) return;
  if (!it->second.host_id.empty()) {
    if (auto st = registry_->on_stream_closed(session->id(), it->second.host_id, reason); !st.ok()) {
      spdlog::error("host {}: cannot record disconnect: {}", it->second.host_id, st.message());
    }
  }
  sessions_.erase(it);
  agents_connected_.store(static_cast<int64_t>(registry_->connected_count()));
}

}  // namespace tern
