#include "coordinator/coordinator.h"

#include <google/protobuf/util/time_util.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include "core/status_fmt.h"
#include "core/tls.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/duration.h"
#include "core/grpc_status.h"
#include "core/service_spec.h"
#include "core/sha256.h"
#include <google/protobuf/util/message_differencer.h>
#include "core/version.h"

namespace tern {

Coordinator::Coordinator(CoordinatorConfig config, const Clock& clock)
    : config_(std::move(config)),
      clock_(clock),
      messages_in_(metrics_.counter("tern_agent_messages_received_total", "Messages received on agent streams.")),
      messages_out_(metrics_.counter("tern_agent_messages_sent_total", "Messages sent on agent streams.")),
      agents_connected_(metrics_.gauge("tern_agents_connected", "Agent streams that completed their hello.")),
      streams_opened_(metrics_.counter("tern_agent_streams_opened_total", "Agent streams accepted since start.")),
      rollouts_active_(metrics_.gauge("tern_rollouts_active", "Rollouts not yet in a final phase.")) {}

Coordinator::~Coordinator() { shutdown(); }

absl::Status Coordinator::start() {
  if (auto st = validate(config_); !st.ok()) return st;
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (config_.insecure) {
    spdlog::warn("insecure: plaintext and no authentication; every caller is an admin (local demos only)");
    creds = grpc::InsecureServerCredentials();
  } else {
    if (config_.tls.empty()) {
      return absl::FailedPreconditionError(
          "no TLS configured: set tls.ca, tls.cert and tls.key (--tls-ca, --tls-cert, --tls-key; "
          "scripts/tern-pki.sh makes a CA and certificates), or pass --insecure for a local demo");
    }
    auto tls = load_tls(config_.tls, /*need_cert=*/true, "coordinator");
    if (!tls.ok()) return tls.status();
    creds = tls_server_credentials(*tls);
  }
  auth_ = std::make_unique<Authenticator>(config_.insecure);
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

  auto svc_store = ServiceStore::open(*db_);
  if (!svc_store.ok()) return svc_store.status();
  service_store_ = *std::move(svc_store);
  auto services = service_store_->load_services();
  if (!services.ok()) return services.status();
  for (auto& r : *services) services_[r.spec().name()] = std::move(r);
  artifacts_ = std::make_unique<ArtifactStore>(effective_artifact_dir(config_));
  if (auto st = artifacts_->init(); !st.ok()) return st;
  auto rstore = RolloutStore::open(*db_);
  if (!rstore.ok()) return rstore.status();
  rollout_store_ = *std::move(rstore);
  auto active = rollout_store_->load_active();
  if (!active.ok()) return active.status();
  engine_ = std::make_unique<RolloutEngine>(clock_, rollout_effects());

  registry_ = std::make_unique<HostRegistry>(*store_, clock_,
                                             HostRegistry::Options{.unreachable_after = config_.unreachable_after},
                                             &metrics_);
  if (auto st = registry_->load(); !st.ok()) return st;

  auto admin = AdminStore::open(*db_);
  if (!admin.ok()) return admin.status();
  admin_store_ = *std::move(admin);
  agent_service_ = std::make_unique<AgentServiceImpl>(*this, &messages_out_, artifacts_.get(), auth_.get());
  fleet_service_ = std::make_unique<FleetServiceImpl>(loop_, *registry_, *store_, *this, epoch_, started_, *auth_);
  service_service_ =
      std::make_unique<ServiceServiceImpl>(loop_, *this, *artifacts_, config_.max_artifact_bytes, *auth_);
  rollout_service_ = std::make_unique<RolloutServiceImpl>(loop_, *this, *auth_);
  admin_service_ = std::make_unique<AdminServiceImpl>(loop_, *admin_store_, *auth_);
  if (auto st = admin_service_->refresh_tokens(); !st.ok()) return st;

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  // gRPC sets SO_REUSEPORT by default, which would let a second coordinator
  // bind the same port and silently split the fleet between two processes.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(config_.listen, creds, &port);
  builder.RegisterService(agent_service_.get());
  builder.RegisterService(fleet_service_.get());
  builder.RegisterService(service_service_.get());
  builder.RegisterService(rollout_service_.get());
  builder.RegisterService(admin_service_.get());
  // Every mutating call, allowed or refused, lands in the audit trail.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<AuditInterceptorFactory>(*auth_, [this](tern::v1::AuditEntry e) {
    loop_.post([this, e = std::move(e)] {
      if (auto st = admin_store_->record(e); !st.ok()) spdlog::error("cannot record an audit entry: {}", st.message());
      spdlog::info("audit: {} ({}) {} -> {}", e.principal().name(), role_name(e.principal().role()), e.method(),
                   e.code());
    });
  }));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // Artifact chunks are 64 KiB; specs and statuses are small. 16 MiB leaves room.
  builder.SetMaxReceiveMessageSize(16 << 20);
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
  // Rollouts resume from their journal; hosts that are still reconnecting
  // get their commands when they say hello.
  loop_.post([this, rollouts = *std::move(active)] {
    for (const auto& r : rollouts) {
      spdlog::info("resuming rollout {} ({} {}) from its journal", r.id(), r.spec().service(),
                   r.spec().release().version());
      engine_->restore(r);
    }
  });
  loop_.every(Millis(500), [this] { rollout_tick(); });
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
  // Any message is a sign of life; one that ends a silence brings the host
  // back into the rollouts that owe it something.
  if (registry_->on_heartbeat(session->id(), info.host_id)) host_returned(info.host_id);
  switch (msg.body_case()) {
    case tern::v1::AgentMessage::kHeartbeat:
      break;
    case tern::v1::AgentMessage::kResult:
      handle_result(info.host_id, msg.result());
      break;
    case tern::v1::AgentMessage::kEvent:
      handle_event(info.host_id, msg.event());
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
  if (!info.session->certified_host().empty() && info.session->certified_host() != hello.host_id()) {
    return refuse(grpc::StatusCode::PERMISSION_DENIED,
                  absl::StrCat("this agent's certificate is for host \"", info.session->certified_host(),
                               "\", not \"", hello.host_id(), "\"; a host can only speak for itself"));
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
  auto& known = host_services_[hello.host_id()];
  known.clear();
  for (const auto& s : hello.services()) known[s.service()] = s;
  // Specs the host should run (or run a newer generation of).
  for (const auto& [name, svc] : services_) push_spec(hello.host_id(), svc, false);
  host_returned(hello.host_id());
}

void Coordinator::host_returned(const std::string& host) {
  // Rollout commands it missed while away.
  if (auto owed = owed_deploys_.find(host); owed != owed_deploys_.end()) {
    OwedDeploy d = owed->second;
    owed_deploys_.erase(owed);
    if (const auto* r = engine_->find(d.rollout_id)) rollout_deploy(*r, host, d.release, d.weight);
  }
  engine_->on_host_back(host);
}

void Coordinator::handle_done(const std::shared_ptr<AgentSession>& session, const std::string& reason) {
  auto it = sessions_.find(session->id());
  if (it == sessions_.end()) return;
  fail_pending(session->id(), absl::StrCat("the agent on ", it->second.host_id, " disconnected (", reason,
                                           ") before reporting the outcome; check `ternctl host status ",
                                           it->second.host_id, "` once it is back"));
  if (!it->second.host_id.empty()) {
    if (auto st = registry_->on_stream_closed(session->id(), it->second.host_id, reason); !st.ok()) {
      spdlog::error("host {}: cannot record disconnect: {}", it->second.host_id, st.message());
    }
  }
  sessions_.erase(it);
  agents_connected_.store(static_cast<int64_t>(registry_->connected_count()));
}

// ---- commands ----

absl::Status Coordinator::send_command(const std::string& host_id, tern::v1::Command cmd, CommandObserver observer) {
  const auto* entry = registry_->find(host_id);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("no host \"", host_id, "\" in the registry; `ternctl hosts` lists them"));
  }
  auto it = entry->session != 0 ? sessions_.find(entry->session) : sessions_.end();
  if (it == sessions_.end()) {
    return absl::UnavailableError(absl::StrCat("host ", host_id, " is ", host_state_name(entry->record.state),
                                               "; its agent must be running and connected"));
  }
  // Ids rise across restarts because the epoch does.
  const uint64_t id = (epoch_ << 32) | ++command_seq_;
  cmd.set_command_id(id);
  cmd.set_epoch(epoch_);
  *cmd.mutable_deadline() = google::protobuf::util::TimeUtil::MillisecondsToDuration(config_.command_timeout.count());
  tern::v1::CoordinatorMessage msg;
  *msg.mutable_command() = std::move(cmd);
  if (!it->second.session->send(std::move(msg))) {
    return absl::UnavailableError(absl::StrCat("host ", host_id, " disconnected just now; try again"));
  }
  pending_[id] = Pending{host_id, entry->session, std::move(observer)};
  loop_.post_after(config_.command_timeout, [this, id] {
    auto p = pending_.find(id);
    if (p == pending_.end()) return;
    auto obs = std::move(p->second.observer);
    const std::string host = p->second.host_id;
    pending_.erase(p);
    tern::v1::CommandResult r;
    r.set_command_id(id);
    r.set_outcome(tern::v1::COMMAND_OUTCOME_FAILED);
    r.set_code(static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED));
    r.set_message(absl::StrCat("no result from ", host, " within ", format_duration(config_.command_timeout),
                               "; check `ternctl host status ", host, "`"));
    if (obs.done) obs.done(r);
  });
  return absl::OkStatus();
}

void Coordinator::fail_pending(uint64_t session_id, const std::string& why) {
  std::vector<std::pair<uint64_t, CommandObserver>> failed;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.session == session_id) {
      failed.emplace_back(it->first, std::move(it->second.observer));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [id, obs] : failed) {
    tern::v1::CommandResult r;
    r.set_command_id(id);
    r.set_outcome(tern::v1::COMMAND_OUTCOME_FAILED);
    r.set_code(static_cast<int>(grpc::StatusCode::UNAVAILABLE));
    r.set_message(why);
    if (obs.done) obs.done(r);
  }
}

void Coordinator::handle_result(const std::string& host_id, const tern::v1::CommandResult& result) {
  if (result.has_service() && !result.service().service().empty()) {
    host_services_[host_id][result.service().service()] = result.service();
  }
  auto it = pending_.find(result.command_id());
  if (it == pending_.end()) {
    spdlog::debug("host {}: result for command {} nobody waits for: {}", host_id, result.command_id(), result.message());
    return;
  }
  auto obs = std::move(it->second.observer);
  pending_.erase(it);
  if (obs.done) obs.done(result);
}

void Coordinator::handle_event(const std::string& host_id, const tern::v1::AgentEvent& event) {
  if (event.has_status() && !event.status().service().empty()) {
    host_services_[host_id][event.status().service()] = event.status();
  }
  if (event.kind() != "progress") {
    spdlog::info("host {}: {} {}: {}", host_id, event.service(), event.kind(), event.message());
  }
  // A host's own policy or trusted keys turned something down: part of its
  // history (`ternctl host history`), not only a log line.
  if (event.kind() == "refused") {
    if (const auto* entry = registry_->find(host_id)) {
      HostEventRecord rec{host_id, clock_.now(), "refused", absl::StrCat(event.service(), ": ", event.message())};
      if (auto st = store_->save(entry->record, &rec); !st.ok()) {
        spdlog::error("host {}: cannot record a refusal: {}", host_id, st.message());
      }
    }
  }
  // The active slot turning unhealthy or dying counts against a rollout.
  if ((event.kind() == "health_changed" || event.kind() == "slot_crashed") && event.has_status()) {
    for (const auto& slot : event.status().slots()) {
      if (slot.active() && (slot.phase() == tern::v1::SLOT_PHASE_UNHEALTHY || slot.phase() == tern::v1::SLOT_PHASE_CRASHED)) {
        engine_->on_host_unhealthy(event.service(), host_id, event.message());
      }
    }
  }
  if (event.command_id() == 0) return;
  auto it = pending_.find(event.command_id());
  if (it != pending_.end() && it->second.observer.progress) it->second.observer.progress(event);
}

// ---- services ----

absl::StatusOr<tern::v1::ApplyServiceResponse> Coordinator::apply_service(const tern::v1::ApplyServiceRequest& req) {
  const auto& spec = req.spec();
  tern::v1::ApplyServiceResponse resp;
  auto it = services_.find(spec.name());
  const uint64_t have = it == services_.end() ? 0 : it->second.generation();
  if (req.expected_generation() != 0 && req.expected_generation() != have) {
    return absl::FailedPreconditionError(absl::StrCat("service ", spec.name(), " is at generation ", have,
                                                      ", not ", req.expected_generation(),
                                                      "; someone changed it meanwhile: re-read and apply again"));
  }
  if (it != services_.end() && google::protobuf::util::MessageDifferencer::Equals(it->second.spec(), spec)) {
    *resp.mutable_service() = it->second;
    resp.set_changed(false);
    return resp;
  }
  tern::v1::ServiceRecord rec;
  if (it != services_.end()) rec = it->second;
  *rec.mutable_spec() = spec;
  rec.set_generation(have + 1);
  *rec.mutable_updated() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(to_unix_millis(clock_.now()));
  if (auto st = service_store_->save_service(rec); !st.ok()) return st;
  services_[spec.name()] = rec;
  spdlog::info("service {} applied (generation {})", spec.name(), rec.generation());
  for (const auto& [sid, info] : sessions_) {
    if (!info.host_id.empty()) push_spec(info.host_id, rec, false);
  }
  *resp.mutable_service() = rec;
  resp.set_changed(true);
  return resp;
}

absl::StatusOr<tern::v1::ServiceRecord> Coordinator::get_service(const std::string& name) {
  auto it = services_.find(name);
  if (it == services_.end()) {
    return absl::NotFoundError(absl::StrCat("no service \"", name, "\"; `ternctl service list` shows them"));
  }
  return it->second;
}

std::vector<tern::v1::ServiceRecord> Coordinator::list_services() {
  std::vector<tern::v1::ServiceRecord> out;
  for (const auto& [name, r] : services_) out.push_back(r);
  return out;
}

absl::Status Coordinator::delete_service(const std::string& name) {
  if (services_.count(name) == 0) return absl::NotFoundError(absl::StrCat("no service \"", name, "\""));
  if (auto st = service_store_->delete_service(name); !st.ok()) return st;
  services_.erase(name);
  for (auto& [host, svcs] : host_services_) {
    if (svcs.count(name) == 0) continue;
    tern::v1::Command cmd;
    cmd.mutable_remove_service()->set_service(name);
    const std::string h = host;
    auto st = send_command(h, cmd, CommandObserver{nullptr, [this, h, name](const tern::v1::CommandResult& r) {
                                                     if (r.outcome() == tern::v1::COMMAND_OUTCOME_SUCCEEDED) {
                                                       host_services_[h].erase(name);
                                                     }
                                                   }});
    if (!st.ok()) spdlog::warn("service {} deleted, but host {} could not be told: {}", name, host, st.message());
  }
  return absl::OkStatus();
}

absl::StatusOr<tern::v1::Artifact> Coordinator::register_artifact(const tern::v1::Artifact& artifact,
                                                                  const std::string& file_name) {
  if (services_.count(artifact.service()) == 0) {
    return absl::FailedPreconditionError(absl::StrCat("no service \"", artifact.service(),
                                                      "\"; apply its spec before pushing artifacts"));
  }
  auto existing = service_store_->find_artifact(artifact.service(), artifact.version());
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) {
    const auto& [have, name] = **existing;
    if (have.sha256() == artifact.sha256()) return have;  // the same bytes again: nothing to do
    return absl::AlreadyExistsError(absl::StrCat(artifact.service(), " ", artifact.version(),
                                                 " already exists with sha256 ", have.sha256().substr(0, 12),
                                                 "; versions are immutable, push this build as a new version"));
  }
  tern::v1::Artifact a = artifact;
  *a.mutable_created() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(to_unix_millis(clock_.now()));
  a.set_file_name(file_name);
  if (auto st = service_store_->save_artifact(a, file_name); !st.ok()) return st;
  spdlog::info("artifact {} {} stored ({} bytes, sha256 {})", a.service(), a.version(), a.size(), a.sha256());
  return a;
}

absl::StatusOr<std::vector<tern::v1::Artifact>> Coordinator::list_artifacts(const std::string& service) {
  return service_store_->list_artifacts(service);
}

std::vector<tern::v1::ServiceStatus> Coordinator::host_services(const std::string& host_id) {
  std::vector<tern::v1::ServiceStatus> out;
  auto it = host_services_.find(host_id);
  if (it == host_services_.end()) return out;
  for (const auto& [name, s] : it->second) out.push_back(s);
  return out;
}

void Coordinator::push_spec(const std::string& host_id, const tern::v1::ServiceRecord& svc, bool force) {
  const auto* entry = registry_->find(host_id);
  if (entry == nullptr) return;
  auto sel = LabelSelector::parse(svc.spec().selector());
  if (!sel.ok() || !sel->matches(entry->record.labels)) return;
  auto& known = host_services_[host_id];
  if (!force) {
    auto k = known.find(svc.spec().name());
    if (k != known.end() && k->second.spec_generation() == svc.generation()) return;
  }
  tern::v1::Command cmd;
  *cmd.mutable_apply_service()->mutable_spec() = svc.spec();
  cmd.mutable_apply_service()->set_spec_generation(svc.generation());
  const std::string name = svc.spec().name();
  auto st = send_command(host_id, std::move(cmd),
                         CommandObserver{nullptr, [host_id, name](const tern::v1::CommandResult& r) {
                                           if (r.outcome() != tern::v1::COMMAND_OUTCOME_SUCCEEDED) {
                                             spdlog::warn("host {} refused the spec of {}: {}", host_id, name,
                                                          r.message());
                                           }
                                         }});
  if (!st.ok()) spdlog::debug("spec of {} not pushed to {}: {}", name, host_id, st.message());
}

absl::Status Coordinator::check_host_for(const std::string& host_id, const tern::v1::ServiceRecord& svc) {
  const auto* entry = registry_->find(host_id);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("no host \"", host_id, "\" in the registry; `ternctl hosts` lists them"));
  }
  auto sel = LabelSelector::parse(svc.spec().selector());
  if (!sel.ok() || !sel->matches(entry->record.labels)) {
    return absl::FailedPreconditionError(absl::StrCat("host ", host_id, " is not selected by service ",
                                                      svc.spec().name(), " (selector \"", svc.spec().selector(),
                                                      "\"); change its labels or the selector"));
  }
  if (entry->session == 0) {
    return absl::UnavailableError(absl::StrCat("host ", host_id, " is ", host_state_name(entry->record.state),
                                               "; its agent must be running and connected"));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::deploy_host(const tern::v1::DeployHostRequest& req, CommandObserver observer) {
  auto svc = get_service(req.service());
  if (!svc.ok()) return svc.status();
  if (auto st = check_host_for(req.host_id(), *svc); !st.ok()) return st;
  if (req.weight() > 100) return absl::InvalidArgumentError(absl::StrCat("weight ", req.weight(), " is not 1-100"));
  tern::v1::ReleaseRef release;
  if (!req.release().url().empty()) {
    release = req.release();
    if (release.version().empty() || !is_sha256_hex(release.sha256())) {
      return absl::InvalidArgumentError("a release by URL needs a version and the sha256 of the file");
    }
  } else {
    if (req.version().empty()) return absl::InvalidArgumentError("give the version to deploy");
    auto found = service_store_->find_artifact(req.service(), req.version());
    if (!found.ok()) return found.status();
    if (!found->has_value()) {
      return absl::NotFoundError(absl::StrCat("no artifact for ", req.service(), " ", req.version(),
                                              "; push it first: ternctl artifact push FILE --service ", req.service(),
                                              " --version ", req.version()));
    }
    const auto& [a, name] = **found;
    release.set_version(a.version());
    release.set_sha256(a.sha256());
    release.set_kind(a.kind());
    release.set_name(name);
    release.set_signature(a.signature());
  }
  // The agent runs the newest spec before it deploys (same stream, in order).
  push_spec(req.host_id(), *svc, false);
  tern::v1::Command cmd;
  auto* d = cmd.mutable_deploy();
  d->set_service(req.service());
  *d->mutable_release() = release;
  d->set_switch_on_healthy(!req.no_switch());
  d->set_weight(req.weight() == 0 ? 100 : req.weight());
  spdlog::info("deploying {} {} to {}", req.service(), release.version(), req.host_id());
  return send_command(req.host_id(), std::move(cmd), std::move(observer));
}

absl::Status Coordinator::rollback_host(const tern::v1::RollbackHostRequest& req, CommandObserver observer) {
  auto svc = get_service(req.service());
  if (!svc.ok()) return svc.status();
  if (auto st = check_host_for(req.host_id(), *svc); !st.ok()) return st;
  tern::v1::Command cmd;
  cmd.mutable_rollback()->set_service(req.service());
  spdlog::info("rolling back {} on {}", req.service(), req.host_id());
  return send_command(req.host_id(), std::move(cmd), std::move(observer));
}

void Coordinator::add_liveness_ping(std::chrono::milliseconds period, std::function<void()> ping) {
  loop_.every(period, std::move(ping));
}

// ---- rollouts ----

RolloutEffects Coordinator::rollout_effects() {
  RolloutEffects e;
  // Commands to agents go out only after the transitions that led to them
  // are in the journal (flush_journal): a restart never finds a host flipped
  // or deployed that its journal does not know it asked for.
  e.deploy = [this](const tern::v1::Rollout& r, const std::string& host, const tern::v1::ReleaseRef& release,
                    uint32_t weight) {
    deferred_effects_.push_back([this, id = r.id(), host, release, weight] {
      if (const auto* x = engine_->find(id)) rollout_deploy(*x, host, release, weight);
    });
    dirty_rollouts_.insert(r.id());  // the host's new state is written before the command goes out
    schedule_journal_flush();
  };
  e.rollback = [this](const tern::v1::Rollout& r, const std::string& host) {
    deferred_effects_.push_back([this, id = r.id(), host] {
      if (const auto* x = engine_->find(id)) rollout_rollback(*x, host);
    });
    dirty_rollouts_.insert(r.id());
    schedule_journal_flush();
  };
  e.changed = [this](const tern::v1::Rollout& r, const std::string& kind, const std::string& message) {
    rollout_changed(r, kind, message);
  };
  return e;
}

namespace {

tern::v1::HostRolloutState failure_state(const tern::v1::CommandResult& r) {
  const auto code = static_cast<grpc::StatusCode>(r.code());
  if (code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE;
  }
  return tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE;
}

}  // namespace

void Coordinator::rollout_deploy(const tern::v1::Rollout& r, const std::string& host,
                                 const tern::v1::ReleaseRef& release, uint32_t weight) {
  const std::string id = r.id();
  auto svc = services_.find(r.spec().service());
  if (svc == services_.end()) {
    loop_.post([this, id, host] {
      engine_->on_host_deployed(id, host, false, tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE, "the service was deleted");
    });
    return;
  }
  push_spec(host, svc->second, false);
  tern::v1::Command cmd;
  auto* d = cmd.mutable_deploy();
  d->set_service(r.spec().service());
  *d->mutable_release() = release;
  d->set_switch_on_healthy(true);
  d->set_weight(weight);
  auto st = send_command(host, std::move(cmd),
                         CommandObserver{nullptr, [this, id, host](const tern::v1::CommandResult& res) {
                           const bool ok = res.outcome() == tern::v1::COMMAND_OUTCOME_SUCCEEDED;
                           engine_->on_host_deployed(id, host, ok, ok ? tern::v1::HOST_ROLLOUT_STATE_UNSPECIFIED
                                                                      : failure_state(res),
                                                     res.message());
                           journal_answer(id);
                         }});
  if (!st.ok()) {
    const auto* entry = registry_->find(host);
    if (entry != nullptr && entry->record.state == HostState::kUnreachable) {
      loop_.post([this, id, host] {
        engine_->on_host_deployed(id, host, false, tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE,
                                  "unreachable when its turn came");
      });
      return;
    }
    // Away for a moment (e.g. still reconnecting after our restart): sent on
    // its hello; the progress deadline bounds the wait.
    spdlog::info("rollout {}: {} is not connected; its deploy waits for it ({})", id, host, st.message());
    owed_deploys_[host] = OwedDeploy{id, release, weight};
  }
}

void Coordinator::rollout_rollback(const tern::v1::Rollout& r, const std::string& host) {
  const std::string id = r.id();
  const auto* progress = engine_->host(id, host);
  const std::string to_version = progress != nullptr ? progress->previous_version() : "";
  owed_deploys_.erase(host);
  tern::v1::Command cmd;
  cmd.mutable_rollback()->set_service(r.spec().service());
  cmd.mutable_rollback()->set_to_version(to_version);
  auto st = send_command(host, std::move(cmd), CommandObserver{nullptr, [this, id, host](const tern::v1::CommandResult& res) {
                           const bool ok = res.outcome() == tern::v1::COMMAND_OUTCOME_SUCCEEDED;
                           if (!ok && failure_state(res) == tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE) {
                             engine_->on_host_gone(host, res.message());
                           }
                           engine_->on_host_rolled_back(id, host, ok, res.message());
                           journal_answer(id);
                         }});
  if (!st.ok()) {
    // Flipped when it returns (the engine resends on its hello).
    loop_.post([this, host, why = std::string(st.message())] { engine_->on_host_gone(host, why); });
  }
}

void Coordinator::rollout_changed(const tern::v1::Rollout& r, const std::string& kind, const std::string& message) {
  RolloutStore::Event ev;
  ev.summary = rollout_summary(r);
  ev.kind = kind;
  ev.message = message;
  ev.time_ms = to_unix_millis(clock_.now());
  journal_.push_back(std::move(ev));
  dirty_rollouts_.insert(r.id());
  schedule_journal_flush();
}

void Coordinator::journal_answer(const std::string& rollout_id) {
  // What an agent's answer changed is written even when it raised no event
  // (a late deploy failing during a rollback, say).
  dirty_rollouts_.insert(rollout_id);
  schedule_journal_flush();
}

void Coordinator::schedule_journal_flush() {
  if (flush_posted_) return;
  flush_posted_ = true;
  // After whatever is already queued: a burst of agent results is written
  // in one transaction, and the batch grows by itself when writing is slow.
  loop_.post([this] { flush_journal(); });
}

void Coordinator::flush_journal() {
  flush_posted_ = false;
  auto events = std::exchange(journal_, {});
  auto ids = std::exchange(dirty_rollouts_, {});
  auto effects = std::exchange(deferred_effects_, {});
  if (!events.empty() || !ids.empty()) {
    std::vector<RolloutStore::RolloutWrite> rollouts;
    for (const auto& id : ids) {
      const auto* x = engine_->find(id);
      if (x == nullptr) continue;
      auto changed = engine_->take_changed(id);
      rollouts.push_back({x, std::move(changed.positions), changed.all});
    }
    const int64_t now = to_unix_millis(clock_.now());
    auto seqs = rollout_store_->record_batch(events, rollouts, now);
    if (!seqs.ok()) {
      // The journal is what a restart resumes from; without it the rollout
      // could redo or skip steps. Crash loudly before acting on it; systemd
      // restarts us and the rollout resumes from the last recorded step.
      spdlog::critical("cannot record {} rollout event(s): {}", events.size(), seqs.status().message());
      std::abort();
    }
    int64_t active = 0;
    for (const auto* x : engine_->list()) active += !RolloutEngine::is_terminal(x->phase());
    rollouts_active_.store(active);
    for (std::size_t i = 0; i < events.size(); ++i) {
      auto& ev = events[i];
      // Kinds are a small fixed set of engine words, so the label stays bounded.
      std::string label = ev.kind;
      std::replace(label.begin(), label.end(), ' ', '_');
      metrics_.counter("tern_rollout_events_total", "Rollout transitions recorded, by kind.",
                       absl::StrCat("kind=\"", label, "\""))
          .fetch_add(1, std::memory_order_relaxed);
      // One line per host would drown the log of a large fleet.
      if (ev.kind == "host_on_new" || ev.kind == "host_rolled_back") {
        spdlog::debug("rollout {}: {}", ev.summary.id(), ev.message);
      } else {
        spdlog::info("rollout {}: {}", ev.summary.id(), ev.message);
      }
      tern::v1::RolloutEvent e;
      e.set_sequence((*seqs)[i]);
      e.set_rollout_id(ev.summary.id());
      *e.mutable_time() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(ev.time_ms);
      e.set_kind(ev.kind);
      e.set_message(ev.message);
      *e.mutable_rollout() = std::move(ev.summary);
      std::vector<std::function<void(const tern::v1::RolloutEvent&)>> fns;
      for (const auto& [token, w] : watchers_) {
        if (w.rollout_id == e.rollout_id()) fns.push_back(w.fn);
      }
      for (auto& fn : fns) fn(e);
    }
  }
  for (auto& fn : effects) fn();
}

void Coordinator::rollout_tick() {
  // Hosts past the grace count as gone for the rollouts they are in.
  for (const auto* r : engine_->list()) {
    if (RolloutEngine::is_terminal(r->phase())) continue;
    std::vector<std::string> gone;
    for (const auto& h : r->hosts()) {
      const auto* entry = registry_->find(h.host_id());
      if (entry != nullptr && entry->record.state == HostState::kUnreachable) gone.push_back(h.host_id());
    }
    for (const auto& host : gone) engine_->on_host_gone(host, "the host is unreachable (no word past the grace)");
  }
  engine_->tick();
  int64_t active = 0;
  for (const auto* r : engine_->list()) active += !RolloutEngine::is_terminal(r->phase());
  rollouts_active_.store(active);
}

absl::StatusOr<std::vector<PlanHost>> Coordinator::eligible_hosts(const tern::v1::ServiceRecord& svc,
                                                                  const tern::v1::RolloutSpec& spec) {
  auto svc_sel = LabelSelector::parse(svc.spec().selector());
  if (!svc_sel.ok()) return svc_sel.status();
  auto sel = LabelSelector::parse(spec.selector());
  if (!sel.ok()) return sel.status();
  std::vector<PlanHost> out;
  for (const auto* e : registry_->list(*svc_sel)) {
    if (!sel->matches(e->record.labels)) continue;
    out.push_back(PlanHost{e->record.host_id, e->record.labels});
  }
  return out;
}

absl::StatusOr<tern::v1::RolloutPlan> Coordinator::plan_rollout(const tern::v1::RolloutSpec& spec) {
  auto svc = get_service(spec.service());
  if (!svc.ok()) return svc.status();
  auto hosts = eligible_hosts(*svc, spec);
  if (!hosts.ok()) return hosts.status();
  auto plan = tern::plan_rollout(spec, *std::move(hosts));
  if (!plan.ok()) return plan.status();
  tern::v1::RolloutPlan out;
  for (std::size_t i = 0; i < plan->waves.size(); ++i) {
    auto* w = out.add_waves();
    w->set_index(static_cast<uint32_t>(i));
    for (const auto& h : plan->waves[i].host_ids) w->add_host_ids(h);
  }
  for (const auto& warning : plan->warnings) out.add_warnings(warning);
  return out;
}

absl::StatusOr<tern::v1::Rollout> Coordinator::start_rollout(const tern::v1::RolloutSpec& spec) {
  auto svc = get_service(spec.service());
  if (!svc.ok()) return svc.status();
  auto found = service_store_->find_artifact(spec.service(), spec.release().version());
  if (!found.ok()) return found.status();
  if (!found->has_value()) {
    return absl::NotFoundError(absl::StrCat("no artifact for ", spec.service(), " ", spec.release().version(),
                                            "; push it first: ternctl artifact push FILE --service ", spec.service(),
                                            " --version ", spec.release().version()));
  }
  const auto& [artifact, name] = **found;
  tern::v1::ReleaseRef release;
  release.set_version(artifact.version());
  release.set_sha256(artifact.sha256());
  release.set_kind(artifact.kind());
  release.set_name(name);
  release.set_signature(artifact.signature());
  auto hosts = eligible_hosts(*svc, spec);
  if (!hosts.ok()) return hosts.status();
  auto plan = tern::plan_rollout(spec, *hosts);
  if (!plan.ok()) return plan.status();
  // What each host runs now is what a rollback returns it to.
  std::map<std::string, std::string> previous;
  std::map<std::string, int> votes;
  for (const auto& h : *hosts) {
    for (const auto& st : host_services(h.host_id)) {
      if (st.service() != spec.service()) continue;
      for (const auto& slot : st.slots()) {
        if (slot.active()) previous[h.host_id] = slot.release().version(), ++votes[slot.release().version()];
      }
    }
  }
  tern::v1::ReleaseRef prev;
  int best = 0;
  for (const auto& [v, n] : votes) {
    if (n > best) best = n, prev.set_version(v);
  }
  // Hosts already past the grace are known gone before the first wave.
  for (const auto& h : *hosts) {
    const auto* entry = registry_->find(h.host_id);
    if (entry != nullptr && entry->record.state == HostState::kUnreachable) {
      engine_->on_host_gone(h.host_id, "unreachable");
    }
  }
  auto n = rollout_store_->next_number();
  if (!n.ok()) return n.status();
  const std::string id = absl::StrCat(spec.service(), "-", *n);
  tern::v1::RolloutSpec full = spec;
  auto r = engine_->start(id, full, *plan, release, prev, previous);
  if (!r.ok()) return r.status();
  flush_journal();  // durable before the caller hears of it
  return *engine_->find(id);
}

absl::StatusOr<tern::v1::Rollout> Coordinator::get_rollout(const std::string& id) {
  if (const auto* r = engine_->find(id)) return *r;
  return rollout_store_->get(id);
}

absl::StatusOr<std::vector<tern::v1::Rollout>> Coordinator::list_rollouts(const std::string& service,
                                                                          bool active_only) {
  auto all = rollout_store_->list(service, 200);
  if (!all.ok()) return all.status();
  std::vector<tern::v1::Rollout> out;
  for (auto& r : *all) {
    if (const auto* live = engine_->find(r.id())) r = rollout_summary(*live);
    if (active_only && RolloutEngine::is_terminal(r.phase())) continue;
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::vector<tern::v1::RolloutEvent>> Coordinator::rollout_events(const std::string& id,
                                                                                uint64_t after_sequence) {
  return rollout_store_->events(id, after_sequence);
}

absl::StatusOr<tern::v1::Rollout> Coordinator::rollout_command(const std::string& id, uint64_t generation,
                                                               RolloutCommand cmd, const std::string& reason) {
  if (engine_->find(id) == nullptr) {
    auto r = get_rollout(id);
    if (!r.ok()) return r.status();
    engine_->restore(*r);  // a finished rollout can still be rolled back
  }
  auto r = engine_->command(id, generation, cmd, reason);
  flush_journal();  // durable before the caller hears of it
  return r;
}

uint64_t Coordinator::watch(const std::string& id, std::function<void(const tern::v1::RolloutEvent&)> fn) {
  const uint64_t token = next_watcher_++;
  watchers_[token] = Watcher{id, std::move(fn)};
  return token;
}

void Coordinator::unwatch(uint64_t token) { watchers_.erase(token); }

}  // namespace tern
