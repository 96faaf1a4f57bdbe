#include "coordinator/rollout_driver.h"

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_fmt.h"
#include "core/words.h"
#include "core/label_selector.h"

namespace tern {

using google::protobuf::util::TimeUtil;
namespace {

tern::v1::HostRolloutState failure_state(const tern::v1::CommandResult& r) {
  const auto code = static_cast<grpc::StatusCode>(r.code());
  if (code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE;
  }
  return tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE;
}

}  // namespace

RolloutDriver::RolloutDriver(const Clock& clock, EventLoop& loop, const HostRegistry& registry,
                             ServiceCatalog& catalog, HostCommands& commands, RolloutStore& store, Metrics& metrics)
    : clock_(clock),
      loop_(loop),
      registry_(registry),
      catalog_(catalog),
      commands_(commands),
      store_(store),
      metrics_(metrics),
      rollouts_active_(metrics.gauge("tern_rollouts_active", "Rollouts not yet in a final phase.")),
      engine_(std::make_unique<RolloutEngine>(clock, effects())) {
  // Every verdict's counter exists from the start, so increase() sees the first.
  for (const char* v : {"PASS", "FAIL", "INCONCLUSIVE", "PROMOTED"}) analysis_verdict(v);
  // So do the events' and the durations'.
  for (int k = tern::v1::RolloutEventKind_MIN; k <= tern::v1::RolloutEventKind_MAX; ++k) {
    const auto kind = static_cast<tern::v1::RolloutEventKind>(k);
    if (!tern::v1::RolloutEventKind_IsValid(k) || kind == tern::v1::ROLLOUT_EVENT_KIND_UNSPECIFIED ||
        kind == tern::v1::ROLLOUT_EVENT_KIND_END) {
      continue;
    }
    event_counter(kind);
  }
  for (auto phase : {tern::v1::ROLLOUT_PHASE_SUCCEEDED, tern::v1::ROLLOUT_PHASE_FAILED,
                     tern::v1::ROLLOUT_PHASE_ROLLED_BACK, tern::v1::ROLLOUT_PHASE_ABORTED}) {
    rollout_duration(phase);
  }
  deploy_duration(true);
  deploy_duration(false);
}

Metrics::Value& RolloutDriver::event_counter(tern::v1::RolloutEventKind kind) {
  // Kinds are a small fixed set, so the label stays bounded.
  std::string label = word(kind);
  std::replace(label.begin(), label.end(), ' ', '_');
  return metrics_.counter("tern_rollout_events_total", "Rollout transitions recorded, by kind.",
                          absl::StrCat("kind=\"", label, "\""));
}

Metrics::Histogram& RolloutDriver::rollout_duration(tern::v1::RolloutPhase outcome) {
  std::string label = word(outcome);
  std::replace(label.begin(), label.end(), ' ', '_');
  return metrics_.histogram("tern_rollout_duration_seconds",
                            "From a rollout's start to its final phase, by that phase (its outcome).",
                            absl::StrCat("outcome=\"", label, "\""), Metrics::slow_buckets());
}

Metrics::Histogram& RolloutDriver::deploy_duration(bool ok) {
  return metrics_.histogram("tern_host_deploy_duration_seconds",
                            "From a rollout's deploy command to a host until its answer (staging, start, probes, "
                            "switch), by outcome.",
                            ok ? "outcome=\"succeeded\"" : "outcome=\"failed\"", Metrics::slow_buckets());
}

void RolloutDriver::export_service(const tern::v1::Rollout& r, int64_t now_ms) {
  // Per service, its latest rollout: bounded by the services, not by every
  // rollout there ever was.
  const std::string svc = absl::StrCat("service=\"", r.spec().service(), "\"");
  for (int p = tern::v1::ROLLOUT_PHASE_PENDING; p <= tern::v1::ROLLOUT_PHASE_ABORTED; ++p) {
    std::string label = word(static_cast<tern::v1::RolloutPhase>(p));
    std::replace(label.begin(), label.end(), ' ', '_');
    metrics_
        .gauge("tern_service_rollout_phase", "1 for the phase of the service's latest rollout, 0 for the others.",
               absl::StrCat(svc, ",phase=\"", label, "\""))
        .store(r.phase() == p ? 1 : 0, std::memory_order_relaxed);
  }
  metrics_.gauge("tern_service_rollout_wave", "The wave (from 1) the service's latest rollout is in.", svc)
      .store(r.current_wave() + 1, std::memory_order_relaxed);
  metrics_
      .gauge("tern_service_rollout_failed_hosts",
             "Hosts the service's latest rollout counted against its failure budget.", svc)
      .store(r.failed_hosts(), std::memory_order_relaxed);
  metrics_
      .gauge("tern_service_rollout_step_started_timestamp_seconds",
             "When the current step (deploying, baking, analyzing, a gate) of the service's latest rollout began.",
             svc)
      .store(r.has_step_started() ? r.step_started().seconds() : now_ms / 1000, std::memory_order_relaxed);
}

RolloutDriver::~RolloutDriver() {
  {
    std::lock_guard lock(prometheus_mu_);
    prometheus_stop_ = true;
  }
  prometheus_cv_.notify_all();
  if (prometheus_thread_.joinable()) prometheus_thread_.join();
}

void RolloutDriver::set_prometheus(std::unique_ptr<PrometheusSource> source) {
  prometheus_ = std::move(source);
  if (prometheus_ && !prometheus_thread_.joinable()) prometheus_thread_ = std::thread([this] { prometheus_worker(); });
}

void RolloutDriver::set_webhooks(std::unique_ptr<WebhookOutbox> outbox, std::function<void()> committed) {
  webhooks_ = std::move(outbox);
  webhooks_committed_ = std::move(committed);
}

namespace {

// "ipv4:198.18.0.7:51234" -> "198.18.0.7"; "ipv6:[::1]:5" -> "[::1]".
std::string peer_address(const std::string& peer) {
  std::string p = peer;
  for (const char* scheme : {"ipv4:", "ipv6:"}) {
    if (p.rfind(scheme, 0) == 0) p = p.substr(std::string(scheme).size());
  }
  const auto colon = p.rfind(':');
  return colon == std::string::npos ? p : p.substr(0, colon);
}

}  // namespace

void RolloutDriver::ask_prometheus() {
  if (!prometheus_ || prometheus_busy_) return;
  const TimePoint now = clock_.now();
  std::map<std::string, TimePoint> next_asks;
  for (const auto* r : engine_->list()) {
    if (auto it = prometheus_next_.find(r->id()); it != prometheus_next_.end()) next_asks.insert(*it);
  }
  prometheus_next_.swap(next_asks);  // forget rollouts the engine no longer holds
  for (const auto* r : engine_->list()) {
    if (!r->has_analysis() || r->spec().analysis().source() != "prometheus") continue;
    if (r->analysis().wave() != r->current_wave() || r->wave_step() == tern::v1::WAVE_STEP_DONE ||
        r->wave_step() == tern::v1::WAVE_STEP_DEPLOYING) {
      continue;  // the wave whose test runs (a PASS is judged on while its wave holds)
    }
    if (r->wave_step() != tern::v1::WAVE_STEP_ANALYZING && r->analysis().verdict() != "PASS") continue;
    if (r->phase() != tern::v1::ROLLOUT_PHASE_RUNNING && r->phase() != tern::v1::ROLLOUT_PHASE_PAUSED) continue;
    const int64_t interval_ms = std::max<int64_t>(100, TimeUtil::DurationToMilliseconds(r->spec().analysis().interval()));
    auto& next = prometheus_next_[r->id()];
    if (next == TimePoint{}) next = now + Millis(interval_ms);  // a whole window first
    if (now < next) continue;
    next = now + Millis(interval_ms);
    const int64_t started_ms = TimeUtil::TimestampToMilliseconds(r->analysis().started());
    std::vector<PromAsk> asks;
    for (const auto& h : r->hosts()) {
      if (h.wave() != r->current_wave() || h.state() != tern::v1::HOST_ROLLOUT_STATE_ON_NEW) continue;
      // Which slot holds the canary, from what the host last reported.
      uint32_t canary_port = 0, baseline_port = 0;
      for (const auto& st : catalog_.host_services(h.host_id())) {
        if (st.service() != r->spec().service()) continue;
        for (const auto& slot : st.slots()) {
          if (slot.active() && slot.release().version() == r->spec().release().version()) canary_port = slot.port();
          else if (!slot.active()) baseline_port = slot.port();
        }
      }
      if (canary_port == 0 || baseline_port == 0) continue;
      const auto* entry = registry_.find(h.host_id());
      PromAsk ask;
      ask.host = h.host_id();
      auto& s = ask.sample;
      s.set_service(r->spec().service());
      s.set_canary_version(r->spec().release().version());
      s.set_baseline_version(h.previous_version());
      s.set_weight(h.weight());
      s.set_split_id(std::hash<std::string>()(absl::StrCat(r->id(), "/", r->current_wave())));
      // From the wave's analysis start, so a restarted coordinator goes on
      // numbering where the journal left off.
      s.set_sequence(static_cast<uint64_t>(std::max<int64_t>(0, to_unix_millis(now) - started_ms) / interval_ms) + 1);
      const int64_t since = to_unix_millis(now) - TimeUtil::TimestampToMilliseconds(h.updated());
      *s.mutable_since_split() = TimeUtil::MillisecondsToDuration(std::max<int64_t>(0, since));
      std::map<std::string, std::string> vars{{"host", h.host_id()},
                                              {"address", entry ? peer_address(entry->record.peer) : std::string()},
                                              {"interval", absl::StrCat(interval_ms, "ms")},
                                              {"service", r->spec().service()}};
      ask.canary_vars = vars;
      ask.canary_vars["port"] = std::to_string(canary_port);
      ask.canary_vars["slot"] = "canary";
      ask.baseline_vars = std::move(vars);
      ask.baseline_vars["port"] = std::to_string(baseline_port);
      ask.baseline_vars["slot"] = "baseline";
      asks.push_back(std::move(ask));
    }
    if (asks.empty()) continue;
    {
      std::lock_guard lock(prometheus_mu_);
      prometheus_batch_.emplace(r->analysis_metrics(), std::move(asks));
    }
    prometheus_busy_ = true;
    prometheus_cv_.notify_all();
    return;  // one batch in flight; other rollouts at the next tick
  }
}

void RolloutDriver::prometheus_worker() {
  for (;;) {
    std::pair<tern::v1::ServiceAnalysis, std::vector<PromAsk>> batch;
    {
      std::unique_lock lock(prometheus_mu_);
      prometheus_cv_.wait(lock, [this] { return prometheus_stop_ || prometheus_batch_.has_value(); });
      if (prometheus_stop_) return;
      batch = std::move(*prometheus_batch_);
      prometheus_batch_.reset();
    }
    std::vector<std::pair<std::string, tern::v1::AnalysisSample>> answers;
    for (auto& ask : batch.second) {
      {
        // A shutdown does not wait for the rest of a batch (each query may
        // take up to the source's timeout).
        std::lock_guard lock(prometheus_mu_);
        if (prometheus_stop_) return;
      }
      for (const auto& m : batch.first.metrics()) {
        auto counts = prometheus_->counts(m.name(), m.bad_query(), m.total_query(), ask.canary_vars, ask.baseline_vars);
        if (counts.ok()) {
          *ask.sample.add_metrics() = *std::move(counts);
        } else {
          auto* c = ask.sample.add_metrics();
          c->set_name(m.name());
          c->set_no_data(std::string(counts.status().message()));
        }
      }
      answers.emplace_back(std::move(ask.host), std::move(ask.sample));
    }
    loop_.post([this, answers = std::move(answers)] {
      prometheus_busy_ = false;
      for (const auto& [host, sample] : answers) on_sample(host, sample);
    });
  }
}

Metrics::Value& RolloutDriver::analysis_verdict(const std::string& verdict) {
  return metrics_.counter("tern_analysis_verdicts_total",
                          "Canary analysis verdicts of waves (PROMOTED: accepted by a person), by verdict.",
                          absl::StrCat("verdict=\"", verdict, "\""));
}

void RolloutDriver::export_analysis() {
  // The current wave's pooled counts per service and metric (bounded: the
  // services and their at most 8 metrics); the ratio is a PromQL division.
  for (const auto* r : engine_->list()) {
    if (!r->has_analysis() || RolloutEngine::is_terminal(r->phase())) continue;
    for (const auto& m : r->analysis().metrics()) {
      const std::pair<const char*, uint64_t> cells[] = {{"release=\"canary\",kind=\"bad\"", m.canary_bad()},
                                                        {"release=\"canary\",kind=\"total\"", m.canary_total()},
                                                        {"release=\"baseline\",kind=\"bad\"", m.baseline_bad()},
                                                        {"release=\"baseline\",kind=\"total\"", m.baseline_total()}};
      for (const auto& [labels, v] : cells) {
        metrics_
            .gauge("tern_analysis_requests",
                   "Requests counted by the current canary analysis of a service's rollout, pooled over the wave.",
                   absl::StrCat("service=\"", r->spec().service(), "\",metric=\"", m.name(), "\",", labels))
            .store(static_cast<int64_t>(v), std::memory_order_relaxed);
      }
    }
  }
}

absl::Status RolloutDriver::load() {
  auto active = store_.load_active();
  if (!active.ok()) return active.status();
  to_resume_ = *std::move(active);
  return absl::OkStatus();
}

void RolloutDriver::resume() {
  // Hosts that are still reconnecting get their commands when they say hello.
  for (const auto& r : std::exchange(to_resume_, {})) {
    spdlog::info("resuming rollout {} ({} {}) from its journal", r.id(), r.spec().service(),
                 r.spec().release().version());
    std::vector<std::pair<std::string, tern::v1::AnalysisSample>> samples;
    if (r.has_analysis() && r.analysis().wave() == r.current_wave()) {
      auto rows = store_.samples(r.id(), r.analysis().wave());
      if (!rows.ok()) {
        spdlog::error("rollout {}: cannot read its analysis samples ({}); its test starts over", r.id(),
                      rows.status().message());
      } else {
        for (auto& row : *rows) samples.emplace_back(std::move(row.host), std::move(row.sample));
        spdlog::info("rollout {}: {} analysis sample(s) of wave {} read back", r.id(), samples.size(),
                     r.analysis().wave() + 1);
      }
    }
    engine_->restore(r, samples);
  }
}

RolloutEffects RolloutDriver::effects() {
  RolloutEffects e;
  // Commands to agents go out only after the transitions that led to them
  // are in the journal (flush): a restart never finds a host flipped or
  // deployed that its journal does not know it asked for.
  e.deploy = [this](const tern::v1::Rollout& r, const std::string& host, const tern::v1::ReleaseRef& release,
                    uint32_t weight) {
    deferred_effects_.push_back([this, id = r.id(), host, release, weight] {
      if (const auto* x = engine_->find(id)) deploy(*x, host, release, weight);
    });
    dirty_rollouts_.insert(r.id());  // the host's new state is written before the command goes out
    schedule_flush();
  };
  e.rollback = [this](const tern::v1::Rollout& r, const std::string& host) {
    deferred_effects_.push_back([this, id = r.id(), host] {
      if (const auto* x = engine_->find(id)) rollback(*x, host);
    });
    dirty_rollouts_.insert(r.id());
    schedule_flush();
  };
  e.ask_gate = [this](const tern::v1::Rollout& r, uint32_t wave, const std::string& webhook) {
    // Asked after the wait is journaled; the answer comes back on the loop.
    deferred_effects_.push_back([this, id = r.id(), wave, webhook] {
      const auto* x = engine_->find(id);
      if (x == nullptr) return;
      auto answer = [this](const std::string& rid, uint32_t w, bool allowed, const std::string& message) {
        loop_.post([this, rid, w, allowed, message] { engine_->on_gate_answer(rid, w, allowed, message); });
      };
      if (gates_ == nullptr) {
        answer(id, wave, false, "the coordinator has no webhooks configured");
        return;
      }
      // One id per ask: the generation moves with every resume, and stays
      // across a restart, so a receiver sees a repeated ask as one.
      gates_->ask(WebhookGates::Ask{webhook, *x, wave, x->generation()},
                  [answer](const WebhookGates::Ask& a, const WebhookGates::Answer& ans) {
                    answer(a.rollout.id(), a.wave, ans.allowed, ans.message);
                  });
    });
    dirty_rollouts_.insert(r.id());
    schedule_flush();
  };
  e.changed = [this](const tern::v1::Rollout& r, tern::v1::RolloutEventKind kind, const std::string& message) {
    changed(r, kind, message);
  };
  return e;
}

bool RolloutDriver::unreachable(const std::string& host) const {
  const auto* entry = registry_.find(host);
  return entry != nullptr && entry->record.state == HostState::kUnreachable;
}

void RolloutDriver::host_returned(const std::string& host) {
  // Rollout commands it missed while away.
  if (auto owed = owed_deploys_.find(host); owed != owed_deploys_.end()) {
    OwedDeploy d = owed->second;
    owed_deploys_.erase(owed);
    if (const auto* r = engine_->find(d.rollout_id)) deploy(*r, host, d.release, d.weight);
  }
  engine_->on_host_back(host);
}

void RolloutDriver::host_unhealthy(const std::string& service, const std::string& host, const std::string& message) {
  engine_->on_host_unhealthy(service, host, message);
}

const tern::v1::Rollout* RolloutDriver::active_rollout_with(const std::string& service,
                                                           const std::string& host) const {
  for (const auto* r : engine_->list()) {
    if (r->spec().service() != service || RolloutEngine::is_terminal(r->phase())) continue;
    if (engine_->host(r->id(), host) != nullptr) return r;
  }
  return nullptr;
}

void RolloutDriver::host_changed_by_hand(const std::string& id, const std::string& host, const std::string& what) {
  if (auto st = engine_->on_host_changed_by_hand(id, host, what); !st.ok()) {
    spdlog::warn("rollout {}: {}", id, st.message());
  }
  flush();  // in the history before the command goes out
}

void RolloutDriver::deploy(const tern::v1::Rollout& r, const std::string& host, const tern::v1::ReleaseRef& release,
                           uint32_t weight) {
  const std::string id = r.id();
  const auto* svc = catalog_.find(r.spec().service());
  if (svc == nullptr) {
    loop_.post([this, id, host] {
      engine_->on_host_deployed(id, host, false, tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE, "the service was deleted");
    });
    return;
  }
  catalog_.push_spec(host, *svc);
  tern::v1::Command cmd;
  auto* d = cmd.mutable_deploy();
  d->set_service(r.spec().service());
  *d->mutable_release() = release;
  d->set_switch_on_healthy(true);
  d->set_weight(weight);
  d->set_spec_generation(svc->generation());
  // For the service's hooks (TERN_ROLLOUT_ID, TERN_WAVE): waves counted from 1.
  d->set_rollout_id(id);
  if (const auto* h = engine_->host(id, host); h != nullptr) d->set_wave(h->wave() + 1);
  // The wave under way names the split its weight is made with (a raise of
  // an earlier wave's hosts happens in the last wave, with its split).
  if (static_cast<int>(r.current_wave()) < r.spec().waves_size()) {
    d->set_split(r.spec().waves(static_cast<int>(r.current_wave())).split());
  }
  // A wave that is judged: the agent counts the split it makes.
  if (const auto* h = engine_->host(id, host);
      h != nullptr && static_cast<int>(h->wave()) < r.spec().waves_size() &&
      r.spec().waves(static_cast<int>(h->wave())).analyze() && effective_weight(weight) < 100 &&
      r.spec().analysis().source() != "prometheus") {
    *d->mutable_analysis_interval() = r.spec().analysis().interval();
  }
  auto done = [this, id, host, r_service = r.spec().service(), version = release.version(), weight,
               sent = std::chrono::steady_clock::now()](const tern::v1::CommandResult& res) {
    bool ok = res.outcome() == tern::v1::COMMAND_OUTCOME_SUCCEEDED;
    deploy_duration(ok).observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count());
    std::string message = res.message();
    if (res.outcome() != tern::v1::COMMAND_OUTCOME_REFUSED) {
      catalog_.set_desired(host, r_service, version, weight);  // what the host should now serve
    }
    if (ok) {
      // "Succeeded" counts only as far as the host's own status bears it out:
      // the release active, healthy, at the wave's weight.
      const std::string why =
          res.has_service() ? drift(res.service(), version, weight) : "its agent reported no status";
      if (!why.empty()) {
        ok = false;
        message = absl::StrCat("its agent said the deploy succeeded, but it reports otherwise: ", why);
      }
    }
    engine_->on_host_deployed(id, host, ok,
                              ok ? tern::v1::HOST_ROLLOUT_STATE_UNSPECIFIED
                              : res.outcome() == tern::v1::COMMAND_OUTCOME_SUCCEEDED
                                  ? tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE
                                  : failure_state(res),
                              message);
    journal_answer(id);
  };
  auto st = commands_.send(host, std::move(cmd), CommandObserver{nullptr, std::move(done)});
  if (st.ok()) return;
  if (unreachable(host)) {
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

void RolloutDriver::rollback(const tern::v1::Rollout& r, const std::string& host) {
  const std::string id = r.id();
  const auto* progress = engine_->host(id, host);
  const std::string to_version = progress != nullptr ? progress->previous_version() : "";
  owed_deploys_.erase(host);
  tern::v1::Command cmd;
  cmd.mutable_rollback()->set_service(r.spec().service());
  cmd.mutable_rollback()->set_to_version(to_version);
  auto st = commands_.send(host, std::move(cmd),
                           CommandObserver{nullptr, [this, id, host, to_version](const tern::v1::CommandResult& res) {
                             rolled_back(id, host, to_version, res);
                           }});
  if (st.ok() && !to_version.empty()) catalog_.set_desired(host, r.spec().service(), to_version, 100);
  if (!st.ok()) {
    // Flipped when it returns (the engine resends on its hello).
    loop_.post([this, host, why = std::string(st.message())] { engine_->on_host_gone(host, why); });
  }
}

void RolloutDriver::rolled_back(const std::string& id, const std::string& host, const std::string& to_version,
                                const tern::v1::CommandResult& res) {
  bool ok = res.outcome() == tern::v1::COMMAND_OUTCOME_SUCCEEDED;
  std::string message = res.message();
  if (!ok && failure_state(res) == tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE) engine_->on_host_gone(host, message);
  if (ok && !to_version.empty()) {
    // "Rolled back" only as far as the host's own status bears it out.
    const std::string why = res.has_service() ? drift(res.service(), to_version, 100) : "its agent reported no status";
    if (!why.empty()) {
      ok = false;
      message = absl::StrCat("its agent said the rollback succeeded, but it reports otherwise: ", why);
    }
  }
  engine_->on_host_rolled_back(id, host, ok, message);
  journal_answer(id);
}

void RolloutDriver::changed(const tern::v1::Rollout& r, tern::v1::RolloutEventKind kind, const std::string& message) {
  RolloutStore::Event ev;
  ev.summary = rollout_summary(r);
  ev.kind = kind;
  ev.message = message;
  ev.time_ms = to_unix_millis(clock_.now());
  journal_.push_back(std::move(ev));
  dirty_rollouts_.insert(r.id());
  schedule_flush();
}

void RolloutDriver::journal_answer(const std::string& rollout_id) {
  // A late deploy failing during a rollback, say, raises no event but
  // changes the host's row.
  dirty_rollouts_.insert(rollout_id);
  schedule_flush();
}

void RolloutDriver::schedule_flush() {
  if (flush_posted_) return;
  flush_posted_ = true;
  // After whatever is already queued: a burst of agent results is written
  // in one transaction, and the batch grows by itself when writing is slow.
  loop_.post([this] { flush(); });
}

void RolloutDriver::flush() {
  flush_posted_ = false;
  auto events = std::exchange(journal_, {});
  auto ids = std::exchange(dirty_rollouts_, {});
  auto effects = std::exchange(deferred_effects_, {});
  auto samples = std::exchange(samples_, {});
  if (!events.empty() || !ids.empty() || !samples.empty()) {
    std::vector<RolloutStore::RolloutWrite> rollouts;
    for (const auto& id : ids) {
      const auto* x = engine_->find(id);
      if (x == nullptr) continue;
      auto changed = engine_->take_changed(id);
      rollouts.push_back({x, std::move(changed.positions), changed.all});
    }
    int deliveries = 0;
    RolloutStore::AlsoRecord also;
    if (webhooks_) {
      also = [&](const RolloutStore::Event& ev, uint64_t sequence) -> absl::Status {
        auto added = webhooks_->add(ev.kind, ev.summary, ev.message, ev.time_ms, sequence);
        if (!added.ok()) return added.status();
        deliveries += *added;
        return absl::OkStatus();
      };
    }
    auto seqs = store_.record_batch(events, rollouts, to_unix_millis(clock_.now()), samples, also);
    if (!seqs.ok()) {
      // The journal is what a restart resumes from; without it the rollout
      // could redo or skip steps. Crash loudly before acting on it; systemd
      // restarts us and the rollout resumes from the last recorded step.
      spdlog::critical("cannot record {} rollout event(s): {}", events.size(), seqs.status().message());
      std::abort();
    }
    if (deliveries > 0 && webhooks_committed_) webhooks_committed_();
    count_active();
    publish(std::move(events), *seqs);
  }
  for (auto& fn : effects) fn();
}

void RolloutDriver::publish(std::vector<RolloutStore::Event> events, const std::vector<uint64_t>& sequences) {
  for (std::size_t i = 0; i < events.size(); ++i) {
    auto& ev = events[i];
    event_counter(ev.kind).fetch_add(1, std::memory_order_relaxed);
    export_service(ev.summary, ev.time_ms);
    const bool outcome = ev.kind == tern::v1::ROLLOUT_EVENT_KIND_SUCCEEDED ||
                         ev.kind == tern::v1::ROLLOUT_EVENT_KIND_FAILED ||
                         ev.kind == tern::v1::ROLLOUT_EVENT_KIND_ROLLED_BACK ||
                         ev.kind == tern::v1::ROLLOUT_EVENT_KIND_ABORTED;
    if (outcome && ev.summary.has_created()) {
      const int64_t created = google::protobuf::util::TimeUtil::TimestampToMilliseconds(ev.summary.created());
      rollout_duration(ev.summary.phase()).observe(static_cast<double>(std::max<int64_t>(0, ev.time_ms - created)) / 1e3);
    }
    if ((ev.kind == tern::v1::ROLLOUT_EVENT_KIND_ANALYSIS_VERDICT ||
         (ev.kind == tern::v1::ROLLOUT_EVENT_KIND_PROMOTED && ev.summary.analysis().verdict() == "PROMOTED")) &&
        ev.summary.has_analysis()) {
      analysis_verdict(ev.summary.analysis().verdict()).fetch_add(1, std::memory_order_relaxed);
    }
    // One line per host would drown the log of a large fleet.
    if (ev.kind == tern::v1::ROLLOUT_EVENT_KIND_HOST_ON_NEW ||
        ev.kind == tern::v1::ROLLOUT_EVENT_KIND_HOST_ROLLED_BACK) {
      spdlog::debug("rollout {}: {}", ev.summary.id(), ev.message);
    } else {
      spdlog::info("rollout {}: {}", ev.summary.id(), ev.message);
    }
    tern::v1::RolloutEvent e;
    e.set_sequence(sequences[i]);
    e.set_rollout_id(ev.summary.id());
    *e.mutable_time() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(ev.time_ms);
    e.set_kind(ev.kind);
    e.set_message(ev.message);
    *e.mutable_rollout() = std::move(ev.summary);
    // A watcher may unwatch from inside its callback.
    std::vector<std::function<void(const tern::v1::RolloutEvent&)>> fns;
    for (const auto& [token, w] : watchers_) {
      if (w.rollout_id == e.rollout_id()) fns.push_back(w.fn);
    }
    for (auto& fn : fns) fn(e);
  }
}

void RolloutDriver::count_active() {
  int64_t active = 0;
  for (const auto* r : engine_->list()) active += !RolloutEngine::is_terminal(r->phase());
  rollouts_active_.store(active);
}

void RolloutDriver::tick() {
  // Hosts past the grace count as gone for the rollouts they are in.
  for (const auto* r : engine_->list()) {
    if (RolloutEngine::is_terminal(r->phase())) continue;
    std::vector<std::string> gone;
    for (const auto& h : r->hosts()) {
      if (unreachable(h.host_id())) gone.push_back(h.host_id());
    }
    for (const auto& host : gone) engine_->on_host_gone(host, "the host is unreachable (no word past the grace)");
  }
  engine_->tick();
  count_active();
  export_analysis();
  ask_prometheus();
}

absl::StatusOr<std::vector<PlanHost>> RolloutDriver::eligible_hosts(const tern::v1::ServiceRecord& svc,
                                                                    const tern::v1::RolloutSpec& spec) {
  auto svc_sel = LabelSelector::parse(svc.spec().selector());
  if (!svc_sel.ok()) return svc_sel.status();
  auto sel = LabelSelector::parse(spec.selector());
  if (!sel.ok()) return sel.status();
  std::vector<PlanHost> out;
  std::vector<std::string> cordoned;
  for (const auto* e : registry_.list(*svc_sel)) {
    if (!sel->matches(e->record.labels)) continue;
    if (e->record.cordoned) {
      cordoned.push_back(e->record.host_id);
      continue;
    }
    out.push_back(PlanHost{e->record.host_id, e->record.labels});
  }
  last_cordoned_ = std::move(cordoned);
  return out;
}

void RolloutDriver::warn_cordoned(std::vector<std::string>& warnings) const {
  if (last_cordoned_.empty()) return;
  constexpr size_t kNamed = 5;
  std::vector<std::string> named(last_cordoned_.begin(),
                                 last_cordoned_.begin() + static_cast<std::ptrdiff_t>(std::min(kNamed, last_cordoned_.size())));
  warnings.push_back(absl::StrCat(last_cordoned_.size(), " cordoned host(s) left out: ", absl::StrJoin(named, ", "),
                                  last_cordoned_.size() > kNamed ? ", ..." : "",
                                  " (`ternctl host uncordon HOST` lets one back in)"));
}

absl::Status RolloutDriver::check_gates(const tern::v1::RolloutSpec& spec) const {
  for (int i = 0; i < spec.waves_size(); ++i) {
    const std::string& name = spec.waves(i).gate_webhook();
    if (name.empty() || (gates_ != nullptr && gates_->has(name))) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        "field waves[", i, "].gate_webhook: \"", name, "\" is not a webhook of the coordinator's config (",
        gates_ == nullptr ? std::string("it has none")
                          : absl::StrCat("it has ", absl::StrJoin(gates_->names(), ", ")),
        "); an admin declares webhooks under webhooks: in the coordinator's config"));
  }
  return absl::OkStatus();
}

absl::StatusOr<tern::v1::RolloutPlan> RolloutDriver::plan_rollout(const tern::v1::RolloutSpec& spec) {
  if (auto st = check_gates(spec); !st.ok()) return st;
  auto svc = catalog_.get_service(spec.service());
  if (!svc.ok()) return svc.status();
  auto hosts = eligible_hosts(*svc, spec);
  if (!hosts.ok()) return hosts.status();
  auto plan = tern::plan_rollout(spec, *std::move(hosts));
  if (!plan.ok()) return plan.status();
  warn_cordoned(plan->warnings);
  tern::v1::RolloutPlan out;
  for (std::size_t i = 0; i < plan->waves.size(); ++i) {
    auto* w = out.add_waves();
    w->set_index(static_cast<uint32_t>(i));
    for (const auto& h : plan->waves[i].host_ids) w->add_host_ids(h);
  }
  for (const auto& warning : plan->warnings) out.add_warnings(warning);
  return out;
}

absl::StatusOr<tern::v1::Rollout> RolloutDriver::start_rollout(const tern::v1::RolloutSpec& spec) {
  if (auto st = check_gates(spec); !st.ok()) return st;
  auto svc = catalog_.get_service(spec.service());
  if (!svc.ok()) return svc.status();
  auto release = catalog_.release(spec.service(), spec.release().version());
  if (!release.ok()) return release.status();
  auto hosts = eligible_hosts(*svc, spec);
  if (!hosts.ok()) return hosts.status();
  auto plan = tern::plan_rollout(spec, *hosts);
  if (!plan.ok()) return plan.status();
  warn_cordoned(plan->warnings);
  // What each host runs now is what a rollback returns it to.
  std::map<std::string, std::string> previous;
  std::map<std::string, int> votes;
  for (const auto& h : *hosts) {
    for (const auto& st : catalog_.host_services(h.host_id)) {
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
    if (unreachable(h.host_id)) engine_->on_host_gone(h.host_id, "unreachable");
  }
  auto n = store_.next_number();
  if (!n.ok()) return n.status();
  const std::string id = absl::StrCat(spec.service(), "-", *n);
  const bool analyzed =
      std::any_of(spec.waves().begin(), spec.waves().end(), [](const tern::v1::Wave& w) { return w.analyze(); });
  if (analyzed && svc->spec().analysis().metrics_size() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the rollout analyzes a wave, but service ", spec.service(), " names no analysis metrics: add analysis.metrics "
        "(and metrics_endpoint) to its spec (see examples/web.yaml), or start the rollout without analysis"));
  }
  if (analyzed) {
    const bool from_prometheus = spec.analysis().source() == "prometheus";
    if (from_prometheus && !prometheus_) {
      return absl::FailedPreconditionError(
          "the rollout's analysis.source is prometheus, but this coordinator has no Prometheus server: set "
          "prometheus.address in its config (or --prometheus), or use source: agent");
    }
    for (const auto& m : svc->spec().analysis().metrics()) {
      if (from_prometheus) {
        for (const auto* q : {&m.bad_query(), &m.total_query()}) {
          if (auto st = check_canary_query(*q); !st.ok() || q->empty()) {
            return absl::FailedPreconditionError(absl::StrCat(
                "metric ", m.name(), " of service ", spec.service(), " cannot be asked of Prometheus: ",
                q->empty() ? std::string("it has no bad_query and total_query") : std::string(st.message())));
          }
        }
      } else if (m.kind() == "ratio" && (m.bad().empty() || m.total().empty())) {
        return absl::FailedPreconditionError(absl::StrCat(
            "metric ", m.name(), " of service ", spec.service(),
            " has only Prometheus queries: its agents cannot count it; use analysis.source: prometheus"));
      }
    }
  }
  auto r = engine_->start(id, spec, *plan, *release, prev, previous, svc->spec().analysis());
  if (!r.ok()) return r.status();
  flush();  // durable before the caller hears of it
  tern::v1::Rollout out = *engine_->find(id);
  for (const auto& warning : plan->warnings) out.add_warnings(warning);
  return out;
}

absl::StatusOr<tern::v1::Rollout> RolloutDriver::get_rollout(const std::string& id) {
  if (const auto* r = engine_->find(id)) return *r;
  return store_.get(id);
}

absl::StatusOr<std::vector<tern::v1::Rollout>> RolloutDriver::list_rollouts(const std::string& service,
                                                                            bool active_only) {
  auto all = store_.list(service, 200);
  if (!all.ok()) return all.status();
  std::vector<tern::v1::Rollout> out;
  for (auto& r : *all) {
    if (const auto* live = engine_->find(r.id())) r = rollout_summary(*live);
    if (active_only && RolloutEngine::is_terminal(r.phase())) continue;
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::vector<tern::v1::RolloutEvent>> RolloutDriver::rollout_events(const std::string& id,
                                                                                  uint64_t after_sequence) {
  return store_.events(id, after_sequence);
}

absl::StatusOr<tern::v1::Rollout> RolloutDriver::rollout_command(const std::string& id, uint64_t generation,
                                                                 RolloutCommand cmd, const std::string& reason) {
  if (engine_->find(id) == nullptr) {
    auto r = get_rollout(id);
    if (!r.ok()) return r.status();
    engine_->restore(*r);  // a finished rollout can still be rolled back
  }
  auto r = engine_->command(id, generation, cmd, reason);
  flush();  // durable before the caller hears of it
  return r;
}

absl::StatusOr<tern::v1::Rollout> RolloutDriver::extend_rollout(const std::string& id, uint64_t generation, Millis by,
                                                                const std::string& reason) {
  if (engine_->find(id) == nullptr) {
    auto r = get_rollout(id);
    if (!r.ok()) return r.status();
    return absl::FailedPreconditionError(absl::StrCat("cannot extend rollout ", id, ": it is ", word(r->phase())));
  }
  auto r = engine_->extend_analysis(id, generation, by, reason);
  flush();
  return r;
}

absl::StatusOr<tern::v1::RolloutAnalysisReport> RolloutDriver::rollout_analysis(const std::string& id, bool replay,
                                                                                const std::string& host) {
  auto r = get_rollout(id);
  if (!r.ok()) return r.status();
  tern::v1::RolloutAnalysisReport report;
  if (r->has_analysis()) *report.mutable_current() = r->analysis();
  if (!host.empty()) {
    auto mine = engine_->host_analysis(id, host);
    if (!mine.ok()) return mine.status();
    for (auto& m : *mine) *report.add_host_metrics() = std::move(m);
  }
  if (!replay) return report;
  for (int w = 0; w < r->spec().waves_size(); ++w) {
    if (!r->spec().waves(w).analyze()) continue;
    auto rows = store_.samples(id, static_cast<uint32_t>(w));
    if (!rows.ok()) return rows.status();
    if (rows->empty()) continue;
    uint32_t wave_hosts = 0;
    for (const auto& h : r->hosts()) wave_hosts += h.wave() == static_cast<uint32_t>(w);
    std::vector<std::pair<std::string, tern::v1::AnalysisSample>> samples;
    std::vector<int64_t> times;
    for (auto& row : *rows) {
      times.push_back(row.time_ms);
      samples.emplace_back(std::move(row.host), std::move(row.sample));
    }
    report.set_samples(report.samples() + samples.size());
    for (auto& v : replay_wave(static_cast<uint32_t>(w), r->analysis_metrics(), r->spec().analysis(), wave_hosts,
                               samples, times)) {
      *report.add_replayed() = std::move(v);
    }
  }
  return report;
}

void RolloutDriver::on_sample(const std::string& host, const tern::v1::AnalysisSample& sample) {
  const auto* before = engine_->active_for(sample.service());
  const std::string id = before ? before->id() : std::string();
  const uint32_t wave = before ? before->current_wave() : 0;
  const auto taken = engine_->on_sample(host, sample);
  if (taken == WaveAnalysis::Taken::kMismatch) {
    spdlog::warn("host {}: analysis counts for {} name other metrics than the rollout's; not counted", host,
                 sample.service());
  }
  if (taken == WaveAnalysis::Taken::kImplausible) {
    spdlog::warn("host {}: analysis counts for {} are implausible (more bad requests than requests, or over {} in "
                 "one interval); not counted",
                 host, sample.service(), WaveAnalysis::kMaxRequestsPerInterval);
  }
  if (taken != WaveAnalysis::Taken::kCounted && taken != WaveAnalysis::Taken::kWarmingUp) return;
  samples_.push_back({id, wave, host, to_unix_millis(clock_.now()), sample});
  journal_answer(id);
  schedule_flush();
}

uint64_t RolloutDriver::watch(const std::string& id, std::function<void(const tern::v1::RolloutEvent&)> fn) {
  const uint64_t token = next_watcher_++;
  watchers_[token] = Watcher{id, std::move(fn)};
  return token;
}

void RolloutDriver::unwatch(uint64_t token) { watchers_.erase(token); }

}  // namespace tern
