#include "coordinator/coordinator.h"

#include "coordinator/dashboard.h"

#include "grpc/health/v1/health.grpc.pb.h"

#include <google/protobuf/util/time_util.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/status_fmt.h"
#include "core/duration.h"
#include "core/grpc_limits.h"
#include "core/grpc_status.h"
#include "core/label_selector.h"
#include "core/tls.h"
#include "core/version.h"
#include "core/words.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;

// Agents hold their stream for days: keepalive finds dead peers, and agents
// may ping as often as every 10 s without being cut off.
constexpr int kKeepaliveTimeMs = 30'000;
constexpr int kKeepaliveTimeoutMs = 10'000;
constexpr int kMinAgentPingIntervalMs = 5'000;
constexpr int kMaxStreamsPerConnection = 64;
constexpr int kHandshakeTimeoutMs = 10'000;

}  // namespace

Coordinator::Coordinator(CoordinatorConfig config, const Clock& clock)
    : config_(std::move(config)),
      clock_(clock),
      messages_in_(metrics_.counter("tern_agent_messages_received_total", "Messages received on agent streams.")),
      messages_out_(metrics_.counter("tern_agent_messages_sent_total", "Messages sent on agent streams.")),
      agents_connected_(metrics_.gauge("tern_agents_connected", "Agent streams that completed their hello.")),
      streams_opened_(metrics_.counter("tern_agent_streams_opened_total", "Agent streams accepted since start.")),
      events_dropped_(metrics_.counter("tern_agent_events_dropped_total",
                                       "Agent events dropped because their stream sent them over the rate limit.")) {
  add_process_metrics(metrics_, "coordinator");
}

void Coordinator::export_drift() {
  if (!loop_ready_.load()) return;
  std::map<std::string, int64_t> drifted;  // by service; every stored service listed
  loop_.run_sync([&] {
    for (const auto& svc : catalog_->list_services()) drifted[svc.spec().name()] = 0;
    for (const auto* e : registry_->list(LabelSelector())) {
      for (const auto& st : catalog_->host_services(e->record.host_id)) {
        if (!st.drift().empty()) ++drifted[st.service()];
      }
    }
  });
  for (const auto& [service, n] : drifted) {
    metrics_
        .gauge("tern_service_hosts_drifted",
               "Hosts whose agent reports something else than what Tern last ordered for the service there (an "
               "unhealthy release, another version or weight): they do not serve what Tern says.",
               absl::StrCat("service=\"", service, "\""))
        .store(n, std::memory_order_relaxed);
  }
}

DashboardData Coordinator::dashboard_data() {
  DashboardData d;
  d.on_loop = [this](const std::function<absl::Status()>& read) -> absl::Status {
    if (!loop_ready_.load()) return absl::UnavailableError("the coordinator is starting or stopping; try again");
    absl::Status st = absl::UnavailableError("the coordinator is stopping");
    loop_.run_sync([&] { st = read(); });
    return st;
  };
  d.authorize = [this](const std::string& authorization) -> absl::Status {
    if (config_.insecure) return absl::OkStatus();
    if (authorization.empty()) {
      return absl::UnauthenticatedError(
          "this coordinator needs a token (Authorization: Bearer ...); any role will do: ternctl token create NAME "
          "--role viewer");
    }
    return auth_->token_principal(authorization).status();
  };
  d.hosts = [this](google::protobuf::Message* m) -> absl::Status {
    auto hosts = fleet_->list_hosts("");
    if (!hosts.ok()) return hosts.status();
    auto* out = static_cast<tern::v1::ListHostsResponse*>(m);
    for (auto& h : *hosts) *out->add_hosts() = std::move(h);
    return absl::OkStatus();
  };
  d.rollouts = [this](google::protobuf::Message* m) -> absl::Status {
    auto rs = rollouts_->list_rollouts("", false);
    if (!rs.ok()) return rs.status();
    auto* out = static_cast<tern::v1::ListRolloutsResponse*>(m);
    for (auto& r : *rs) {
      r.clear_hosts();  // a list stays small however large the fleet
      *out->add_rollouts() = std::move(r);
    }
    return absl::OkStatus();
  };
  d.rollout = [this](const std::string& id, google::protobuf::Message* m) -> absl::Status {
    auto r = rollouts_->get_rollout(id);
    if (!r.ok()) return r.status();
    *static_cast<tern::v1::Rollout*>(m) = *std::move(r);
    return absl::OkStatus();
  };
  d.history = [this](const std::string& id, google::protobuf::Message* m) -> absl::Status {
    if (auto r = rollouts_->get_rollout(id); !r.ok()) return r.status();
    auto evs = rollouts_->rollout_events(id, 0);
    if (!evs.ok()) return evs.status();
    auto* out = static_cast<tern::v1::RolloutHistory*>(m);
    for (auto& e : *evs) *out->add_events() = std::move(e);
    return absl::OkStatus();
  };
  return d;
}

Coordinator::~Coordinator() { shutdown(); }

absl::Status Coordinator::open_state() {
  if (config_.database != ":memory:") {
    auto dir = std::filesystem::path(config_.database).parent_path();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    auto lock = DatabaseLock::acquire(config_.database);
    if (!lock.ok()) return lock.status();
    db_lock_ = *std::move(lock);
  }
  auto db = Database::open(config_.database);
  if (!db.ok()) return db.status();
  db_ = *std::move(db);
  auto hosts = HostStore::open(*db_);
  if (!hosts.ok()) return hosts.status();
  host_store_ = *std::move(hosts);
  auto epoch = host_store_->next_epoch();
  if (!epoch.ok()) return epoch.status();
  epoch_ = *epoch;
  auto services = ServiceStore::open(*db_);
  if (!services.ok()) return services.status();
  service_store_ = *std::move(services);
  auto rollouts = RolloutStore::open(*db_);
  if (!rollouts.ok()) return rollouts.status();
  rollout_store_ = *std::move(rollouts);
  auto admin = AdminStore::open(*db_);
  if (!admin.ok()) return admin.status();
  admin_store_ = *std::move(admin);
  audit_ = std::make_unique<AuditTrail>(*admin_store_, metrics_, clock_);
  artifacts_ = std::make_unique<ArtifactStore>(effective_artifact_dir(config_));
  if (auto st = artifacts_->init(); !st.ok()) return st;

  registry_ = std::make_unique<HostRegistry>(
      *host_store_, clock_, HostRegistry::Options{.unreachable_after = config_.unreachable_after}, &metrics_);
  if (auto st = registry_->load(); !st.ok()) return st;
  HostCommands::Streams streams;
  streams.send = [this](uint64_t id, tern::v1::CoordinatorMessage msg) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return false;
    grant_artifacts(it->second.host_id, msg);
    return it->second.session->send(std::move(msg));
  };
  streams.close = [this](uint64_t id, grpc::Status status) {
    if (auto it = sessions_.find(id); it != sessions_.end()) it->second.session->close(std::move(status));
  };
  commands_ = std::make_unique<HostCommands>(loop_, *registry_, std::move(streams), epoch_, config_.command_timeout,
                                             metrics_);
  catalog_ = std::make_unique<ServiceCatalog>(clock_, *service_store_, *registry_, *commands_);
  if (auto st = catalog_->load(); !st.ok()) return st;
  rollouts_ = std::make_unique<RolloutDriver>(clock_, loop_, *registry_, *catalog_, *commands_, *rollout_store_,
                                              metrics_);
  if (!config_.prometheus.address.empty()) {
    auto source = PrometheusSource::create(PrometheusSourceConfig{config_.prometheus.address,
                                                                  config_.prometheus.bearer_token_file,
                                                                  config_.prometheus.ca_file, config_.prometheus.timeout});
    if (!source.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("key \"prometheus\": ", source.status().message()));
    }
    rollouts_->set_prometheus(std::make_unique<PrometheusSource>(*std::move(source)));
    spdlog::info("canary analysis may ask the Prometheus server at {}", config_.prometheus.address);
  }
  if (!config_.webhooks.empty()) {
    auto targets = load_webhook_targets(config_);
    if (!targets.ok()) return targets.status();
    std::vector<WebhookOutbox::Route> routes;
    for (const auto& t : *targets) routes.push_back({t.name, t.events});
    auto outbox = WebhookOutbox::open(*db_, std::move(routes));
    if (!outbox.ok()) return outbox.status();
    // The sender reads and settles deliveries over a connection of its own,
    // so no HTTP call or its bookkeeping ever runs on the event loop.
    auto own = Database::open(config_.database);
    if (!own.ok()) return own.status();
    const auto count = targets->size();
    // Gates: the same webhooks, asked whether a wave may start.
    gates_ = std::make_unique<WebhookGates>(*targets, curl_webhook_transport(), clock_, metrics_);
    rollouts_->set_gates(gates_.get());
    gates_->start();
    auto sender = WebhookSender::create(*std::move(targets), *std::move(own), curl_webhook_transport(), clock_,
                                        metrics_, WebhookSender::Options{.max_age = config_.webhook_max_age});
    if (!sender.ok()) return sender.status();
    webhooks_ = *std::move(sender);
    rollouts_->set_webhooks(*std::move(outbox), [sender = webhooks_.get()] { sender->wake(); });
    webhooks_->start();
    spdlog::info("rollout events go to {} webhook(s)", count);
  }
  fleet_ = std::make_unique<Fleet>(*registry_, *host_store_, *catalog_, *commands_, *rollouts_, epoch_, started_);
  return rollouts_->load();
}

absl::Status Coordinator::start_server(std::shared_ptr<grpc::ServerCredentials> creds) {
  agent_service_ =
      std::make_unique<AgentServiceImpl>(*this, &messages_out_, artifacts_.get(), auth_.get(), &grants_);
  fleet_service_ = std::make_unique<FleetServiceImpl>(loop_, *fleet_, *auth_);
  service_service_ =
      std::make_unique<ServiceServiceImpl>(loop_, *catalog_, *artifacts_, config_.max_artifact_bytes, *auth_);
  rollout_service_ = std::make_unique<RolloutServiceImpl>(loop_, *rollouts_, *auth_);
  admin_service_ =
      std::make_unique<AdminServiceImpl>(loop_, *admin_store_, *auth_, [this] { audit_->flush(); });
  if (auto st = admin_service_->refresh_tokens(); !st.ok()) return st;
  if (auto st = admin_service_->refresh_denied(); !st.ok()) return st;
  // A revoked agent certificate loses the stream it already holds.
  admin_service_->on_denied([this](const tern::v1::DeniedCertificate& d) {
    for (auto& [id, info] : sessions_) {
      const auto& s = *info.session;
      if (s.certified_host().empty()) continue;
      if ((!d.common_name().empty() && s.certified_host() == d.common_name()) ||
          (!d.serial().empty() && s.certified_serial() == d.serial())) {
        spdlog::warn("closing the stream of host {}: its certificate was revoked", s.certified_host());
        info.session->close(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "this agent's certificate was revoked"));
      }
    }
  });

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  // gRPC sets SO_REUSEPORT by default, which would let a second coordinator
  // bind the same port and silently split the fleet between two processes.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(config_.listen, std::move(creds), &port);
  builder.RegisterService(agent_service_.get());
  builder.RegisterService(fleet_service_.get());
  builder.RegisterService(service_service_.get());
  builder.RegisterService(rollout_service_.get());
  builder.RegisterService(admin_service_.get());
  // Every mutating call, allowed or refused, lands in the audit trail.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(
      std::make_unique<AuditInterceptorFactory>(*auth_, [this](tern::v1::AuditEntry e, bool authenticated) {
        loop_.post([this, e = std::move(e), authenticated]() mutable {
          if (authenticated) {
            audit_->record(std::move(e));
          } else {
            audit_->refused_unauthenticated(e.peer(), e.method());
          }
        });
      }));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.SetMaxReceiveMessageSize(kMaxCoordinatorRequestBytes);
  builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, kMinAgentPingIntervalMs);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // A client gets a few streams per connection and a few seconds to finish
  // its TLS handshake (gRPC's defaults: unlimited and 120 s).
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kMaxStreamsPerConnection);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, kHandshakeTimeoutMs);
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
  return absl::OkStatus();
}

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
    // The coordinator's own certificate also serves as a client one
    // (tern-pki gives it clientAuth), for the watchdog's loopback check.
    self_creds_ = tls_channel_credentials(*tls);
    self_name_ = "localhost";
  }
  auth_ = std::make_unique<Authenticator>(config_.insecure);
  if (!config_.insecure) {
    creds->SetAuthMetadataProcessor(std::make_shared<CredentialGate>(*auth_, [this](const std::string& method) {
      loop_.post([this, method] { audit_->refused_unauthenticated("", method); });
    }));
  }
  started_ = clock_.now();
  if (auto st = open_state(); !st.ok()) return st;
  if (auto st = start_server(std::move(creds)); !st.ok()) return st;

  if (!config_.metrics_listen.empty()) {
    metrics_.add_collector([this] { export_drift(); });
    add_dashboard(metrics_server_, dashboard_data());
    auto bound = metrics_server_.start(config_.metrics_listen);
    if (!bound.ok()) {
      shutdown();
      return bound.status();
    }
    metrics_address_ = *bound;
  }

  loop_.start();
  loop_ready_.store(true);
  loop_.post([this] { rollouts_->resume(); });
  loop_.every(Millis(500), [this] { rollouts_->tick(); });
  loop_.every(Millis(200), [this] { audit_->flush(); });
  loop_.every(Millis(60'000), [this] {
    if (auto st = admin_store_->touch_tokens(auth_->take_last_used()); !st.ok()) {
      spdlog::error("cannot record when tokens were last used: {}", st.message());
    }
  });
  loop_.post([this] { prune_history(); });
  loop_.every(Millis(600'000), [this] { prune_history(); });
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

void Coordinator::prune_history() {
  const int64_t now = to_unix_millis(clock_.now());
  for (const auto& [table, id, keep] :
       {std::tuple{"audit", "sequence", Retention{config_.audit_max_age, config_.audit_max_rows}},
        std::tuple{"host_events", "id", Retention{config_.host_history_max_age, config_.host_history_max_rows}}}) {
    auto removed = prune_table(*db_, table, id, "time_ms", keep, now);
    if (!removed.ok()) {
      spdlog::error("cannot prune {}: {}", table, removed.status().message());
    } else if (*removed > 0) {
      spdlog::info("pruned {} row(s) of {} past its retention", *removed, table);
    }
  }
  auto samples = rollout_store_->prune_samples(config_.analysis_samples_max_age, config_.analysis_samples_max_rows, now);
  if (!samples.ok()) {
    spdlog::error("cannot prune analysis_samples: {}", samples.status().message());
  } else if (*samples > 0) {
    spdlog::info("pruned {} row(s) of analysis_samples past its retention", *samples);
  }
}

void Coordinator::shutdown() {
  if (shut_down_.exchange(true)) return;
  stop_prober_.store(true);
  if (accept_prober_.joinable()) accept_prober_.join();
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
    loop_.run_sync([this] { audit_->flush(); });  // the last calls' entries
  }
  if (gates_) gates_->stop();  // before the loop: no answer is posted to a stopped loop
  // The dashboard reads on the loop: no new read, and the last one answered,
  // before the loop stops.
  loop_ready_.store(false);
  metrics_server_.stop();
  loop_.stop();
  if (webhooks_) webhooks_->stop();  // after the loop: nothing wakes it any more
  metrics_server_.stop();
  server_.reset();
  db_lock_.reset();  // nothing writes any more: another coordinator may take the database
  spdlog::info("tern-coordinator stopped");
}

void Coordinator::add_liveness_ping(std::chrono::milliseconds period, std::function<void()> ping) {
  accept_prober_ = std::thread([this, period] {
    std::string target = grpc_address_;
    if (target.rfind("0.0.0.0:", 0) == 0) target = "127.0.0.1:" + target.substr(8);
    if (target.rfind("[::]:", 0) == 0) target = "[::1]:" + target.substr(5);
    bool warned = false;
    while (!stop_prober_.load()) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a new connection: it tests accept()
      if (!self_name_.empty()) args.SetSslTargetNameOverride(self_name_);
      auto channel = grpc::CreateCustomChannel(
          target, self_creds_ ? self_creds_ : grpc::InsecureChannelCredentials(), args);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse resp;
      const grpc::Status st = grpc::health::v1::Health::NewStub(channel)->Check(&ctx, req, &resp);
      if (st.ok()) {
        accepted_at_ms_.store(to_unix_millis(SystemClock::instance().now()));
        accept_checked_.store(true);
      } else if (!accept_checked_.load() && !warned) {
        warned = true;
        spdlog::warn("the watchdog cannot check that {} accepts connections ({}); it watches the event loop only",
                     target, st.error_message());
      }
      for (auto waited = Millis(0); waited < period / 2 && !stop_prober_.load(); waited += Millis(50)) {
        std::this_thread::sleep_for(Millis(50));
      }
    }
  });
  loop_.every(period, [this, period, ping = std::move(ping)] {
    const int64_t now = to_unix_millis(SystemClock::instance().now());
    if (accept_checked_.load() && now - accepted_at_ms_.load() > 3 * period.count()) {
      spdlog::error("no connection accepted for {} ms; withholding the watchdog ping so that systemd restarts us",
                    now - accepted_at_ms_.load());
      return;
    }
    ping();
  });
}

void Coordinator::drain() {
  loop_.run_sync([] {});
}

// ---- agent sessions ----

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
  loop_.post([this, session, peer, msg = std::move(msg)] {
    handle_message(session, peer, msg);
    session->read_next();  // whatever came of it: the stream reads on or is closed
  });
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
  if (registry_->on_heartbeat(session->id(), info.host_id)) rollouts_->host_returned(info.host_id);
  switch (msg.body_case()) {
    case tern::v1::AgentMessage::kHeartbeat:
      if (msg.heartbeat().has_report()) catalog_->on_report(info.host_id, msg.heartbeat().report().services());
      registry_->set_usage(session->id(), info.host_id, msg.heartbeat().usage());
      break;
    case tern::v1::AgentMessage::kResult:
      if (msg.result().has_service()) catalog_->on_status(info.host_id, msg.result().service());
      commands_->on_result(session->id(), info.host_id, msg.result());
      break;
    case tern::v1::AgentMessage::kEvent:
      if (!take_event_token(info)) break;
      handle_event(session->id(), info.host_id, msg.event());
      break;
    case tern::v1::AgentMessage::kSample:
      // One per split and interval from a real agent; the events' bucket
      // bounds a forged flood.
      if (!take_event_token(info)) break;
      rollouts_->on_sample(info.host_id, msg.sample());
      break;
    default:
      spdlog::warn("host {}: ignoring an empty agent message", info.host_id);
  }
}

void Coordinator::grant_artifacts(const std::string& host, const tern::v1::CoordinatorMessage& msg) {
  if (!msg.has_command()) return;
  const auto& cmd = msg.command();
  if (cmd.has_deploy() && !cmd.deploy().release().sha256().empty()) {
    grants_.grant(host, cmd.deploy().release().sha256());
  }
  // A rollback may have to fetch the release again (its directory pruned).
  if (cmd.has_rollback() && !cmd.rollback().to_version().empty()) {
    if (auto r = catalog_->release(cmd.rollback().service(), cmd.rollback().to_version()); r.ok()) {
      grants_.grant(host, r->sha256());
    }
  }
}

bool Coordinator::take_event_token(SessionInfo& info) {
  // A token bucket per stream: bursts of kEventBurst, kEventsPerSecond on
  // average. A real agent sends a handful per deploy.
  constexpr double kEventBurst = 200, kEventsPerSecond = 20;
  constexpr int64_t kDropsBeforeClose = 2000;
  const TimePoint now = clock_.now();
  if (info.refilled == TimePoint{}) {
    info.event_tokens = kEventBurst;
  } else {
    const double seconds = std::chrono::duration<double>(now - info.refilled).count();
    info.event_tokens = std::min(kEventBurst, info.event_tokens + seconds * kEventsPerSecond);
  }
  info.refilled = now;
  if (info.event_tokens >= 1) {
    info.event_tokens -= 1;
    return true;
  }
  events_dropped_.fetch_add(1, std::memory_order_relaxed);
  if (info.events_dropped++ == 0) {
    spdlog::warn("host {}: sends events faster than {}/s; dropping the excess (tern_agent_events_dropped_total)",
                 info.host_id, kEventsPerSecond);
  }
  if (info.events_dropped >= kDropsBeforeClose) {
    info.session->close(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                     absl::StrCat("more than ", kDropsBeforeClose, " events over the rate limit")));
  }
  return false;
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
  // Labels decide which services (their specs, secrets included) and which
  // rollouts reach a host: under TLS a host has the labels its certificate
  // carries, which an admin gave it. What the agent says is a proposal.
  std::string proposed;
  if (!info.session->certified_host().empty() && !config_.trust_hello_labels) {
    const Labels& certified = info.session->certified_labels();
    for (const auto& [k, v] : labels) {
      auto it = certified.find(k);
      if (it == certified.end() || it->second != v) absl::StrAppend(&proposed, proposed.empty() ? "" : ",", k, "=", v);
    }
    labels.clear();
    for (const auto& [k, v] : certified) {
      if (is_valid_label_key(k) && is_valid_label_value(v)) labels[k] = v;
    }
  }
  auto result = registry_->on_hello(info.session->id(), hello.host_id(), labels, hello.agent_version(), peer);
  if (!result.ok()) {
    return refuse(grpc::StatusCode::UNAVAILABLE,
                  absl::StrCat("coordinator could not record the host: ", result.status().message()));
  }
  info.host_id = hello.host_id();
  registry_->set_slot_placement(info.host_id, hello.slot_placement());
  if (!proposed.empty()) {
    spdlog::warn("host {}: its agent proposes labels {} that its certificate does not carry; ignored", info.host_id,
                 proposed);
    if (const auto* entry = registry_->find(info.host_id)) {
      HostEventRecord rec{info.host_id, clock_.now(), "labels_ignored",
                          absl::StrCat("its agent proposed ", proposed, ", which its certificate does not carry; "
                                       "labels come from the certificate (tern-pki agent DIR ", info.host_id,
                                       " KEY=VALUE...)")};
      if (auto st = host_store_->save(entry->record, &rec); !st.ok()) {
        spdlog::error("host {}: cannot record ignored labels: {}", info.host_id, st.message());
      }
    }
  }
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
  *a->mutable_heartbeat_interval() = TimeUtil::MillisecondsToDuration(config_.heartbeat_interval.count());
  info.session->send(std::move(ack));
  agents_connected_.store(static_cast<int64_t>(registry_->connected_count()));
  catalog_->on_hello(hello.host_id(), hello);
  rollouts_->host_returned(hello.host_id());
}

void Coordinator::handle_event(uint64_t session, const std::string& host_id, const tern::v1::AgentEvent& event) {
  if (event.has_status()) catalog_->on_status(host_id, event.status());
  // Agents from before the enum send only the word.
  const tern::v1::AgentEventKind kind =
      event.kind() != tern::v1::AGENT_EVENT_KIND_UNSPECIFIED
          ? event.kind()
          : agent_event_kind(event.kind_word()).value_or(tern::v1::AGENT_EVENT_KIND_UNSPECIFIED);
  if (kind != tern::v1::AGENT_EVENT_KIND_PROGRESS) {
    spdlog::info("host {}: {} {}: {}", host_id, event.service(), word(kind), event.message());
  }
  // A host's own policy or trusted keys turned something down, or a
  // lifecycle hook failed (with the end of its output): part of its history
  // (`ternctl host history`), not only a log line.
  if (kind == tern::v1::AGENT_EVENT_KIND_REFUSED || kind == tern::v1::AGENT_EVENT_KIND_HOOK_FAILED) {
    if (const auto* entry = registry_->find(host_id)) {
      HostEventRecord rec{host_id, clock_.now(), word(kind), absl::StrCat(event.service(), ": ", event.message())};
      if (auto st = host_store_->save(entry->record, &rec); !st.ok()) {
        spdlog::error("host {}: cannot record a {} event: {}", host_id, word(kind), st.message());
      }
    }
  }
  // The active slot turning unhealthy or dying counts against a rollout.
  if ((kind == tern::v1::AGENT_EVENT_KIND_HEALTH_CHANGED || kind == tern::v1::AGENT_EVENT_KIND_SLOT_CRASHED) &&
      event.has_status()) {
    for (const auto& slot : event.status().slots()) {
      if (slot.active() &&
          (slot.phase() == tern::v1::SLOT_PHASE_UNHEALTHY || slot.phase() == tern::v1::SLOT_PHASE_CRASHED)) {
        rollouts_->host_unhealthy(event.service(), host_id, event.message());
      }
    }
  }
  commands_->on_progress(session, host_id, event);
}

void Coordinator::handle_done(const std::shared_ptr<AgentSession>& session, const std::string& reason) {
  auto it = sessions_.find(session->id());
  if (it == sessions_.end()) return;
  const std::string host = it->second.host_id;
  commands_->fail_session(session->id(), absl::StrCat("the agent on ", host, " disconnected (", reason,
                                                      ") before reporting the outcome; check `ternctl host status ",
                                                      host, "` once it is back"));
  if (!host.empty()) {
    if (auto st = registry_->on_stream_closed(session->id(), host, reason); !st.ok()) {
      spdlog::error("host {}: cannot record disconnect: {}", host, st.message());
    }
  }
  sessions_.erase(session->id());
  agents_connected_.store(static_cast<int64_t>(registry_->connected_count()));
}

}  // namespace tern
