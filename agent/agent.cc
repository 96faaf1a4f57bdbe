#include "agent/agent.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "agent/confine.h"
#include "core/label_selector.h"
#include "core/service_spec.h"
#include "core/status_fmt.h"
#include "core/version.h"
#include "core/words.h"

namespace tern {

Agent::Agent(AgentConfig config, std::string host_id) : Agent(std::move(config), std::move(host_id), AgentHost{}) {}

Agent::Agent(AgentConfig config, std::string host_id, AgentHost host)
    : config_(std::move(config)), host_id_(std::move(host_id)), host_(std::move(host)) {}

Agent::~Agent() { stop(); }

absl::Status Agent::start() {
  std::error_code ec;
  const std::string log_dir = config_.state_dir + "/logs";
  std::filesystem::create_directories(log_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create state dir ", config_.state_dir, ": ",
                                                      ec.message(), " (set state_dir to a writable directory)"));
  }
  if (!host_.mapper) {
    auto m = make_port_mapper(config_.port_mapper);
    if (!m.ok()) return m.status();
    host_.mapper = std::move(*m);
  }
  if (!host_.launcher) {
    auto choice = SlotCgroups::choose(config_.cgroup_parent);
    if (!choice.ok()) {
      return absl::Status(choice.status().code(), absl::StrCat("key \"cgroup_parent\": ", choice.status().message()));
    }
    spdlog::info("slots run in {}", choice->placement);
    host_.launcher = make_system_process_launcher(std::shared_ptr<const SlotCgroups>(std::move(choice->tree)),
                                                  choice->placement);
  }
  if (!host_.prober) host_.prober = make_system_prober();
  if (!host_.os) host_.os = make_system_host_os();
  auto trusted = TrustedKeys::load(config_.trusted_keys);
  if (!trusted.ok()) return trusted.status();
  trusted_ = *std::move(trusted);
  if (!trusted_.empty()) spdlog::info("only releases signed by one of {} trusted key(s) are started", trusted_.size());
  if (const std::string user = run_as_user(config_.policy, tern::v1::ServiceSpec()); !user.empty()) {
    if (auto as = resolve_run_as(user); !as.ok()) {
      spdlog::warn("specs without user: run as policy.default_user \"{}\", which does not exist on this host: they "
                   "cannot start until it does (the tern-agent package creates tern-app) or the config names "
                   "another user",
                   user);
    }
  }
  if (!host_.fetcher) {
    host_.fetcher = make_grpc_artifact_fetcher(config_.coordinator, credentials_, config_.tls.server_name);
  }
  traffic_ = std::make_unique<TrafficMap>(host_.mapper.get());
  if (!config_.metrics_listen.empty()) {
    add_process_metrics(metrics_, "agent");
    traffic_->set_swap_histogram(&metrics_.histogram(
        "tern_agent_swap_duration_seconds",
        "How long each change of the host's port mapping took in the kernel (one nftables transaction, or the "
        "iptables restore), switches and canary weights included.",
        "", Metrics::fast_buckets()));
    metrics_.add_collector([this] { collect_metrics(); });
    metrics_http_ = std::make_unique<MetricsHttpServer>(metrics_);
    auto bound = metrics_http_->start(config_.metrics_listen);
    if (!bound.ok()) {
      // Before anything is adopted or dialled: nothing changes.
      return absl::Status(bound.status().code(),
                          absl::StrCat("cannot serve /metrics on ", config_.metrics_listen, " (metrics_listen): ",
                                       bound.status().message(), "; pick a free address, or \"\" for none"));
    }
    metrics_address_ = *bound;
    spdlog::info("serving Prometheus metrics on http://{}/metrics", metrics_address_);
  }
  if (!host_.url_fetcher) {
    host_.url_fetcher = make_url_artifact_fetcher(UrlFetchPolicy{config_.downloads.allow_loopback});
  }
  StagingLimits staging;
  staging.max_url_bytes = uint64_t{config_.downloads.max_mib} << 20;
  staging.free_space_margin = uint64_t{config_.releases.min_free_mib} << 20;
  stager_ = std::make_unique<ArtifactStager>(config_.state_dir, host_.fetcher.get(), BundleLimits(),
                                             host_.url_fetcher.get(), std::move(staging));
  store_ = std::make_unique<StateStore>(config_.state_dir);
  if (int n = stager_->remove_abandoned(); n > 0) {
    spdlog::info("removed {} half-staged release(s) left by an earlier run", n);
  }

  auto state = store_->load();
  if (!state.ok()) return state.status();
  {
    std::lock_guard lock(mu_);
    last_command_id_ = state->last_command_id();
    max_epoch_ = state->epoch();
  }
  // The recorded mapping goes back in (recover) before the agent dials anyone.
  for (const auto& svc : state->services()) {
    auto* sup = add_supervisor(svc);
    if (auto st = sup->recover(); !st.ok()) {
      spdlog::error("{}: re-applying the recorded port mapping failed: {} (will retry)", svc.spec().name(),
                    st.message());
    }
  }
  stop_unknown_slot_processes();
  // Made (not started) before any thread that sends events reads link_.
  link_ = std::make_unique<CoordinatorLink>(
      CoordinatorLink::Options{config_.coordinator, config_.reconnect, config_.heartbeat_interval, credentials_,
                               config_.tls.server_name},
      [this] { return build_hello(); }, [this](const tern::v1::Command& cmd) { handle_command(cmd); });
  link_->set_usage_source([this] { return slot_usage(); });
  for (auto& [name, sup] : supervisors_) sup->start();
  // The policy may have been tightened since these specs came: say so now
  // (the event waits for the link); their deploys are refused.
  for (const auto& svc : state->services()) {
    if (auto st = check_policy(config_.policy, svc.spec()); !st.ok()) {
      spdlog::warn("{}: the stored spec is no longer allowed by this host's policy: {}", svc.spec().name(),
                   st.message());
      send_event(agent_event(tern::v1::AGENT_EVENT_KIND_REFUSED, svc.spec().name(),
                             absl::StrCat("the stored spec is no longer allowed by this host's agent policy: ",
                                          st.message(), "; its running slots are left alone, deploys are refused")));
    }
  }
  if (!state->services().empty()) {
    spdlog::info("restored {} service(s) from {}", state->services_size(), store_->path());
  }
  housekeeping_ = std::thread([this] { housekeeping_loop(); });
  link_->start();
  spdlog::info("tern-agent {} started as host {} (labels {}), coordinator {}, port mapping by {}", kVersion, host_id_,
               format_labels(config_.labels).empty() ? "none" : format_labels(config_.labels), config_.coordinator,
               host_.mapper->name());
  return absl::OkStatus();
}

void Agent::stop() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (metrics_http_) metrics_http_->stop();
  if (link_) link_->stop();
  if (housekeeping_.joinable()) housekeeping_.join();
  // Supervisor threads call persist(), which takes mu_: never join them under it.
  std::vector<ServiceSupervisor*> sups;
  {
    std::lock_guard lock(mu_);
    for (auto& [name, sup] : supervisors_) sups.push_back(sup.get());
  }
  for (auto* sup : sups) sup->shutdown();
  // Slots keep running and the mapping stays: the next agent adopts both.
  if (store_) (void)persist();
  std::lock_guard lock(mu_);
  supervisors_.clear();
}

ServiceSupervisor* Agent::add_supervisor(tern::v1::ServiceState state) {
  const std::string name = state.spec().name();
  SupervisorDeps deps;
  deps.launcher = host_.launcher.get();
  deps.prober = host_.prober.get();
  deps.stager = stager_.get();
  deps.traffic = traffic_.get();
  deps.os = host_.os.get();
  deps.persist = [this] { return persist(); };
  deps.emit = [this](const tern::v1::AgentEvent& e) { send_event(e); };
  deps.log_dir = config_.state_dir + "/logs";
  deps.state_dir = config_.state_dir;
  deps.keep_releases = config_.releases.keep;
  deps.default_user = run_as_user(config_.policy, tern::v1::ServiceSpec());
  deps.send_sample = [this](const tern::v1::AnalysisSample& s) {
    tern::v1::AgentMessage msg;
    *msg.mutable_sample() = s;
    if (!link_ || !link_->send(msg)) return false;
    count_sample(s);
    return true;
  };
  auto sup = std::make_unique<ServiceSupervisor>(std::move(state), std::move(deps));
  auto* raw = sup.get();
  std::lock_guard lock(mu_);
  supervisors_[name] = std::move(sup);
  return raw;
}

void Agent::stop_unknown_slot_processes() {
  std::vector<ProcessHandle> known;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, sup] : supervisors_) {
      const auto st = sup->snapshot();
      for (const auto* s : {&st.blue(), &st.green()}) {
        if (s->pid() > 0) known.push_back(ProcessHandle{s->pid(), s->start_time()});
      }
    }
  }
  // Each supervisor stopped the orphans of its own slots in recover(); what
  // is left belongs to no service the state names, so nothing routes to it.
  for (const Orphan& o : host_.launcher->find_orphans(config_.state_dir, known)) {
    spdlog::warn("slot process {} ({}) belongs to no service in the agent's state; killing its process group",
                 o.handle.pid, o.slot_id);
    host_.launcher->signal_group(o.handle, SIGKILL);
  }
  std::set<std::string> cgroups;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, sup] : supervisors_) {
      for (const char* color : {"blue", "green"}) cgroups.insert(SlotCgroups::slot_name(name, color));
    }
  }
  for (const std::string& cg : host_.launcher->slot_cgroups()) {
    if (cgroups.count(cg)) continue;
    if (int n = host_.launcher->kill_leftovers(cg); n > 0) {
      spdlog::warn("killed {} process(es) in slot cgroup {}, which belongs to no service in the agent's state", n, cg);
    }
    host_.launcher->release(cg);
  }
}

absl::Status Agent::persist() {
  std::lock_guard plock(persist_mu_);
  tern::v1::AgentState state;
  {
    std::lock_guard lock(mu_);
    state.set_last_command_id(last_command_id_);
    state.set_epoch(max_epoch_);
    for (const auto& [name, sup] : supervisors_) {
      if (sup->removed()) continue;
      *state.add_services() = sup->snapshot();
    }
  }
  return store_->save(state);
}

std::vector<tern::v1::ServiceStatus> Agent::services() const {
  std::vector<tern::v1::ServiceStatus> out;
  std::lock_guard lock(mu_);
  for (const auto& [name, sup] : supervisors_) {
    if (!sup->removed()) out.push_back(sup->status());
  }
  return out;
}

tern::v1::Hello Agent::build_hello() const {
  tern::v1::Hello hello;
  hello.set_host_id(host_id_);
  hello.mutable_labels()->insert(config_.labels.begin(), config_.labels.end());
  hello.set_agent_version(kVersion);
  hello.set_protocol(kProtocolRevision);
  for (auto& s : services()) *hello.add_services() = std::move(s);
  std::lock_guard lock(mu_);
  hello.set_last_command_id(last_command_id_);
  hello.set_slot_placement(host_.launcher->placement());
  return hello;
}

void Agent::send_event(const tern::v1::AgentEvent& e) {
  // Enough for every service's recovery; past it the oldest give way.
  constexpr std::size_t kMaxUnsentEvents = 64;
  tern::v1::AgentMessage msg;
  *msg.mutable_event() = e;
  if (link_ && link_->send(msg)) return;
  if (e.kind() == tern::v1::AGENT_EVENT_KIND_PROGRESS) return;
  std::lock_guard lock(events_mu_);
  if (unsent_.size() >= kMaxUnsentEvents) unsent_.pop_front();
  unsent_.push_back(e);
}

void Agent::flush_unsent() {
  if (!link_ || !link_->connected()) return;
  std::deque<tern::v1::AgentEvent> waiting;
  {
    std::lock_guard lock(events_mu_);
    waiting.swap(unsent_);
  }
  for (auto& e : waiting) {
    // The status it was sent with is old news; the hello already told newer.
    {
      std::lock_guard lock(mu_);
      if (auto it = supervisors_.find(e.service()); it != supervisors_.end()) {
        *e.mutable_status() = it->second->status();
      }
    }
    send_event(e);
  }
}

void Agent::reply(const tern::v1::CommandResult& result) {
  {
    std::lock_guard lock(mu_);
    last_command_id_ = std::max(last_command_id_, result.command_id());
  }
  tern::v1::AgentMessage msg;
  *msg.mutable_result() = result;
  if (link_ && !link_->send(msg)) {
    spdlog::warn("command {} finished ({}) while the coordinator was away; the next hello carries the state",
                 result.command_id(), result.message());
  }
}

namespace {

std::string service_of(const tern::v1::Command& cmd) {
  switch (cmd.action_case()) {
    case tern::v1::Command::kApplyService: return cmd.apply_service().spec().name();
    case tern::v1::Command::kDeploy: return cmd.deploy().service();
    case tern::v1::Command::kSwitchTraffic: return cmd.switch_traffic().service();
    case tern::v1::Command::kRollback: return cmd.rollback().service();
    case tern::v1::Command::kStopSlot: return cmd.stop_slot().service();
    case tern::v1::Command::kRemoveService: return cmd.remove_service().service();
    default: return "";
  }
}

tern::v1::CommandResult refusal(const tern::v1::Command& cmd, tern::v1::CommandOutcome outcome, absl::Status st) {
  tern::v1::CommandResult r;
  r.set_command_id(cmd.command_id());
  r.set_outcome(outcome);
  r.set_code(static_cast<int>(st.code()));
  r.set_message(std::string(st.message()));
  return r;
}

}  // namespace

absl::Status Agent::check_own_rules(const tern::v1::Command& cmd, const ServiceSupervisor* sup) const {
  if (cmd.action_case() == tern::v1::Command::kApplyService) {
    return check_policy(config_.policy, cmd.apply_service().spec());
  }
  // A spec stored before the policy was tightened (an agent restarted with a
  // new config) starts nothing more: what the policy no longer allows is
  // refused, whatever was allowed when the spec came.
  const bool starts_or_moves = cmd.action_case() == tern::v1::Command::kDeploy ||
                               cmd.action_case() == tern::v1::Command::kRollback ||
                               cmd.action_case() == tern::v1::Command::kSwitchTraffic;
  if (starts_or_moves && sup != nullptr) {
    const auto stored = sup->snapshot();
    if (auto st = check_policy(config_.policy, stored.spec()); !st.ok()) {
      return absl::PermissionDeniedError(absl::StrCat("the stored spec of ", stored.spec().name(),
                                                      " is no longer allowed here: ", st.message(),
                                                      "; apply a spec the policy allows"));
    }
  }
  // A deploy made for a spec this host refused would run under the older one
  // it kept, which is not what the coordinator holds.
  if (cmd.action_case() == tern::v1::Command::kDeploy && sup != nullptr &&
      cmd.deploy().spec_generation() > sup->snapshot().spec_generation()) {
    std::string why = "it has not received it";
    {
      std::lock_guard lock(mu_);
      if (auto it = refused_specs_.find(cmd.deploy().service()); it != refused_specs_.end()) {
        why = absl::StrCat("it refused it: ", it->second);
      }
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "this host holds generation ", sup->snapshot().spec_generation(), " of ", cmd.deploy().service(),
        "'s spec, older than generation ", cmd.deploy().spec_generation(), " this deploy was made for, because ", why,
        "; nothing was staged or started"));
  }
  if (cmd.action_case() == tern::v1::Command::kDeploy && !trusted_.empty()) {
    const auto& release = cmd.deploy().release();
    if (auto st = trusted_.verify(release.sha256(), release.signature()); !st.ok()) {
      return absl::PermissionDeniedError(absl::StrCat(cmd.deploy().service(), " ", release.version(), ": ",
                                                      st.message(), "; nothing was staged or started"));
    }
  }
  return absl::OkStatus();
}

void Agent::handle_command(const tern::v1::Command& cmd) {
  const std::string service = service_of(cmd);
  ServiceSupervisor* sup = nullptr;
  std::optional<tern::v1::CommandResult> refused;
  {
    std::lock_guard lock(mu_);
    if (cmd.epoch() < max_epoch_) {
      refused = refusal(cmd, tern::v1::COMMAND_OUTCOME_REFUSED,
                        absl::FailedPreconditionError(absl::StrCat("command from coordinator epoch ", cmd.epoch(),
                                                                   ", but epoch ", max_epoch_,
                                                                   " has been seen: refusing a deposed coordinator")));
    } else if (service.empty()) {
      refused = refusal(cmd, tern::v1::COMMAND_OUTCOME_REFUSED,
                        absl::UnimplementedError(absl::StrCat("tern-agent ", kVersion, " does not know this command")));
    } else {
      max_epoch_ = std::max(max_epoch_, cmd.epoch());
      if (auto it = supervisors_.find(service); it != supervisors_.end() && !it->second->removed()) {
        sup = it->second.get();
      }
    }
  }
  if (refused) {
    reply(*refused);
    return;
  }
  // This host's own rules come before anything the coordinator says.
  if (auto st = check_own_rules(cmd, sup); !st.ok()) {
    spdlog::warn("refused {} for {}: {}", cmd.action_case() == tern::v1::Command::kDeploy ? "a deploy" : "a spec",
                 service, st.message());
    if (cmd.action_case() == tern::v1::Command::kApplyService) {
      std::lock_guard lock(mu_);
      refused_specs_[service] = std::string(st.message());
    }
    reply(refusal(cmd, tern::v1::COMMAND_OUTCOME_REFUSED, st));
    auto e = agent_event(tern::v1::AGENT_EVENT_KIND_REFUSED, service, std::string(st.message()));
    e.set_command_id(cmd.command_id());
    send_event(e);
    return;
  }
  if (cmd.action_case() == tern::v1::Command::kApplyService) {
    std::lock_guard lock(mu_);
    refused_specs_.erase(service);
  }
  if (sup == nullptr) {
    if (cmd.action_case() != tern::v1::Command::kApplyService) {
      reply(refusal(cmd, tern::v1::COMMAND_OUTCOME_FAILED,
                    absl::NotFoundError(absl::StrCat("service ", service,
                                                     " is not known on this host; apply its spec first "
                                                     "(ternctl service apply)"))));
      return;
    }
    auto spec = cmd.apply_service().spec();
    if (auto st = validate_service_spec(spec); !st.ok()) {
      reply(refusal(cmd, tern::v1::COMMAND_OUTCOME_REFUSED, st));
      return;
    }
    tern::v1::ServiceState st;
    *st.mutable_spec() = spec;
    st.set_spec_generation(cmd.apply_service().spec_generation());
    {
      // A removed supervisor of the same name is replaced; its thread is done.
      std::unique_ptr<ServiceSupervisor> old;
      {
        std::lock_guard lock(mu_);
        if (auto it = supervisors_.find(service); it != supervisors_.end()) old = std::move(it->second);
        supervisors_.erase(service);
      }
      if (old) old->shutdown();
    }
    sup = add_supervisor(st);
    sup->start();
    (void)persist();
  }
  const uint64_t id = cmd.command_id();
  sup->submit(
      cmd,
      [this, id, service](const std::string& step) {
        spdlog::info("{}: {}", service, step);
        auto e = agent_event(tern::v1::AGENT_EVENT_KIND_PROGRESS, service, step);
        e.set_command_id(id);
        send_event(e);
      },
      [this](const tern::v1::CommandResult& r) {
        reply(r);
        (void)persist();
      });
}

void Agent::set_liveness_ping(std::chrono::milliseconds period, std::function<void()> ping) {
  ping_period_ = period;
  ping_ = std::move(ping);
}

void Agent::housekeeping_loop() {
  using Steady = std::chrono::steady_clock;
  auto next_reconcile = Steady::now() + config_.reconcile_interval;
  for (;;) {
    {
      auto wake = next_reconcile;
      if (ping_) wake = std::min(wake, Steady::now() + ping_period_);
      std::unique_lock lock(stop_mu_);
      if (stop_cv_.wait_until(lock, wake, [&] { return stopping_; })) return;
    }
    if (ping_) ping_();
    flush_unsent();
    if (Steady::now() < next_reconcile) continue;
    next_reconcile = Steady::now() + config_.reconcile_interval;
    auto restored = traffic_->reconcile();
    if (!restored.ok()) {
      spdlog::error("port mapping check failed: {}", restored.status().message());
    } else if (*restored) {
      spdlog::warn("the agent's port mapping had been changed or removed by someone else; restored it");
      send_event(agent_event(tern::v1::AGENT_EVENT_KIND_MAPPING_RESTORED, "",
                             "the port mapping had been changed by someone else; restored"));
    }
    // Drop supervisors of removed services (their threads are idle).
    std::vector<std::unique_ptr<ServiceSupervisor>> gone;
    {
      std::lock_guard lock(mu_);
      for (auto it = supervisors_.begin(); it != supervisors_.end();) {
        if (it->second->removed()) {
          gone.push_back(std::move(it->second));
          it = supervisors_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& g : gone) g->shutdown();
    if (!gone.empty()) (void)persist();
  }
}

void Agent::count_sample(const tern::v1::AnalysisSample& s) {
  if (!metrics_http_) return;
  for (const auto& m : s.metrics()) {
    if (!m.no_data().empty()) continue;
    const std::pair<const char*, uint64_t> cells[] = {{"side=\"canary\",kind=\"bad\"", m.canary_bad()},
                                                      {"side=\"canary\",kind=\"total\"", m.canary_total()},
                                                      {"side=\"baseline\",kind=\"bad\"", m.baseline_bad()},
                                                      {"side=\"baseline\",kind=\"total\"", m.baseline_total()}};
    for (const auto& [labels, v] : cells) {
      metrics_
          .counter("tern_agent_analysis_requests_total",
                   "Requests the canary analysis counted on this host, by service, metric, side (canary: the new "
                   "release) and kind (bad or total), as sent to the coordinator.",
                   absl::StrCat("service=\"", s.service(), "\",metric=\"", m.name(), "\",", labels))
          .fetch_add(static_cast<int64_t>(v), std::memory_order_relaxed);
    }
  }
}

std::vector<tern::v1::SlotUsage> Agent::slot_usage() {
  std::vector<tern::v1::ServiceState> services;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, sup] : supervisors_) services.push_back(sup->snapshot());
  }
  const auto now = std::chrono::steady_clock::now();
  std::vector<tern::v1::SlotUsage> out;
  std::map<std::string, UsageSample> seen;
  std::lock_guard lock(usage_mu_);
  for (const auto& st : services) {
    for (const auto* s : {&st.blue(), &st.green()}) {
      if (s->pid() <= 0) continue;
      const std::string cgroup = SlotCgroups::slot_name(st.spec().name(), word(s->color()));
      auto u = host_.launcher->usage(ProcessHandle{s->pid(), s->start_time()}, cgroup);
      if (!u) continue;
      tern::v1::SlotUsage& su = out.emplace_back();
      su.set_service(st.spec().name());
      su.set_color(s->color());
      su.set_cpu_seconds(static_cast<double>(u->cpu_usec) / 1e6);
      su.set_memory_bytes(u->memory_bytes);
      su.set_processes(u->processes);
      const std::string key = absl::StrCat(cgroup, "/", s->pid());
      if (auto it = last_usage_.find(key); it != last_usage_.end() && now > it->second.at &&
                                             u->cpu_usec >= it->second.cpu_usec) {
        const double wall_usec = std::chrono::duration<double, std::micro>(now - it->second.at).count();
        su.set_cpu_percent(100.0 * static_cast<double>(u->cpu_usec - it->second.cpu_usec) / wall_usec);
      }
      seen.emplace(key, UsageSample{now, u->cpu_usec});
    }
  }
  last_usage_ = std::move(seen);
  return out;
}

void Agent::collect_metrics() {
  std::vector<tern::v1::ServiceState> services;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, sup] : supervisors_) services.push_back(sup->snapshot());
  }
  for (const auto& st : services) {
    const auto& spec = st.spec();
    auto counts = traffic_->connection_counts(spec.name());
    if (!counts.ok()) {
      spdlog::debug("{}: no connection counts for /metrics: {}", spec.name(), counts.status().message());
      continue;
    }
    const SlotConnections by_slot = slot_connections(spec, *counts);
    const uint32_t active_weight = std::min<uint32_t>(effective_weight(st.active_weight()), 100);
    for (const auto color : {tern::v1::SLOT_COLOR_BLUE, tern::v1::SLOT_COLOR_GREEN}) {
      const std::string labels = absl::StrCat("service=\"", spec.name(), "\",slot=\"", word(color), "\"");
      if (by_slot.counted) {
        metrics_
            .counter("tern_agent_slot_new_connections_total",
                     "New connections the host's NAT sent a service's slot through its public ports, counted by the "
                     "kernel since the agent started.",
                     labels)
            .store(static_cast<int64_t>(by_slot.of(color)), std::memory_order_relaxed);
      }
      const uint32_t weight = st.active() == tern::v1::SLOT_COLOR_UNSPECIFIED ? 0
                              : st.active() == color                          ? active_weight
                                                                              : 100 - active_weight;
      metrics_
          .gauge("tern_agent_slot_weight_percent",
                 "The share of a service's new connections the port mapping gives a slot, in percent.", labels)
          .store(weight, std::memory_order_relaxed);
    }
  }
  // What each slot uses (0 for a slot that does not run).
  for (const auto& st : services) {
    for (const auto* s : {&st.blue(), &st.green()}) {
      const std::string labels = absl::StrCat("service=\"", st.spec().name(), "\",slot=\"", word(s->color()), "\"");
      std::optional<ResourceUsage> u;
      if (s->pid() > 0) {
        u = host_.launcher->usage(ProcessHandle{s->pid(), s->start_time()},
                                  SlotCgroups::slot_name(st.spec().name(), word(s->color())));
      }
      metrics_
          .counter("tern_agent_slot_cpu_seconds_total",
                   "CPU time (user and system) a slot's processes used since it started: its cgroup's cpu.stat, or "
                   "its session's processes where slots are process groups.",
                   labels, 1e-6)
          .store(u ? static_cast<int64_t>(u->cpu_usec) : 0, std::memory_order_relaxed);
      metrics_
          .gauge("tern_agent_slot_healthy", "1 while a slot runs and passes its health checks, else 0.", labels)
          .store(s->pid() > 0 && s->phase() == tern::v1::SLOT_PHASE_HEALTHY ? 1 : 0, std::memory_order_relaxed);
      metrics_
          .counter("tern_agent_slot_restarts_total",
                   "Restarts of a slot's release after it crashed (counted again from 0 for each release).", labels)
          .store(s->restarts(), std::memory_order_relaxed);
      metrics_
          .gauge("tern_agent_slot_memory_bytes",
                 "Memory a slot uses: its cgroup's memory.current, or its processes' resident memory where the "
                 "memory controller is not available.",
                 labels)
          .store(u ? static_cast<int64_t>(u->memory_bytes) : 0, std::memory_order_relaxed);
      metrics_.gauge("tern_agent_slot_processes", "Processes in a slot (its cgroup, or its session).", labels)
          .store(u ? u->processes : 0, std::memory_order_relaxed);
    }
  }
}

}  // namespace tern
