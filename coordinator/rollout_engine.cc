#include "coordinator/rollout_engine.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/words.h"
#include "absl/strings/str_join.h"
#include "core/duration.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;
using tern::v1::HostRolloutState;
using tern::v1::Rollout;
using tern::v1::RolloutPhase;

google::protobuf::Timestamp stamp(TimePoint t) { return TimeUtil::MillisecondsToTimestamp(to_unix_millis(t)); }
TimePoint from_stamp(const google::protobuf::Timestamp& t) {
  return from_unix_millis(TimeUtil::TimestampToMilliseconds(t));
}
Millis millis(const google::protobuf::Duration& d) { return Millis(TimeUtil::DurationToMilliseconds(d)); }

bool counts_as_failed(HostRolloutState s) {
  return s == tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE || s == tern::v1::HOST_ROLLOUT_STATE_UNHEALTHY ||
         s == tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE || s == tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE;
}

}  // namespace

const char* to_string(RolloutCommand c) {
  switch (c) {
    case RolloutCommand::kPause: return "pause";
    case RolloutCommand::kResume: return "resume";
    case RolloutCommand::kPromote: return "promote";
    case RolloutCommand::kAbort: return "abort";
    case RolloutCommand::kRollback: return "rollback";
  }
  return "?";
}

RolloutEngine::RolloutEngine(const Clock& clock, RolloutEffects effects) : clock_(clock), effects_(std::move(effects)) {}

bool RolloutEngine::is_terminal(RolloutPhase p) {
  return p == tern::v1::ROLLOUT_PHASE_SUCCEEDED || p == tern::v1::ROLLOUT_PHASE_FAILED ||
         p == tern::v1::ROLLOUT_PHASE_ROLLED_BACK || p == tern::v1::ROLLOUT_PHASE_ABORTED;
}

Rollout* RolloutEngine::mutable_find(const std::string& id) {
  auto it = rollouts_.find(id);
  return it == rollouts_.end() ? nullptr : &it->second.rollout;
}

const Rollout* RolloutEngine::find(const std::string& id) const {
  auto it = rollouts_.find(id);
  return it == rollouts_.end() ? nullptr : &it->second.rollout;
}

const tern::v1::HostProgress* RolloutEngine::host(const std::string& rollout_id, const std::string& host) const {
  auto it = rollouts_.find(rollout_id);
  if (it == rollouts_.end()) return nullptr;
  auto pos = it->second.index.position.find(host);
  return pos == it->second.index.position.end() ? nullptr : &it->second.rollout.hosts(pos->second);
}

std::vector<const Rollout*> RolloutEngine::list() const {
  std::vector<const Rollout*> out;
  for (const auto& [id, e] : rollouts_) out.push_back(&e.rollout);
  return out;
}

const Rollout* RolloutEngine::active_for(const std::string& service) const {
  for (const auto& [id, e] : rollouts_) {
    if (e.rollout.spec().service() == service && !is_terminal(e.rollout.phase())) return &e.rollout;
  }
  return nullptr;
}

RolloutEngine::Index& RolloutEngine::index_of(const Rollout& r) { return rollouts_.at(r.id()).index; }

void RolloutEngine::build_index(const Rollout& r, Index& ix) {
  ix = Index{};
  const std::size_t waves = static_cast<std::size_t>(r.spec().waves_size());
  ix.wave_hosts.resize(waves);
  ix.waiting.assign(waves, 0);
  ix.deploying.assign(waves, 0);
  ix.position.reserve(static_cast<std::size_t>(r.hosts_size()));
  ix.is_changed.assign(static_cast<std::size_t>(r.hosts_size()), false);
  for (int i = 0; i < r.hosts_size(); ++i) {
    const auto& h = r.hosts(i);
    ix.position.emplace(h.host_id(), i);
    if (h.wave() >= waves) continue;  // not in any wave the spec has: never dispatched
    ix.wave_hosts[h.wave()].push_back(i);
    ix.waiting[h.wave()] += h.state() == tern::v1::HOST_ROLLOUT_STATE_WAITING;
    ix.deploying[h.wave()] += h.state() == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING;
  }
}

tern::v1::HostProgress* RolloutEngine::host_of(Rollout& r, const std::string& host) {
  auto& ix = index_of(r);
  auto it = ix.position.find(host);
  return it == ix.position.end() ? nullptr : r.mutable_hosts(it->second);
}

RolloutEngine::ChangedHosts RolloutEngine::take_changed(const std::string& rollout_id) {
  ChangedHosts out;
  auto it = rollouts_.find(rollout_id);
  if (it == rollouts_.end()) return out;
  auto& ix = it->second.index;
  out.all = std::exchange(ix.all_changed, false);
  out.positions = std::exchange(ix.changed, {});
  for (int pos : out.positions) ix.is_changed[static_cast<std::size_t>(pos)] = false;
  if (out.all) out.positions.clear();
  return out;
}

void RolloutEngine::touch(Rollout& r, const tern::v1::HostProgress& h) {
  auto& ix = index_of(r);
  if (ix.all_changed) return;
  auto it = ix.position.find(h.host_id());
  if (it == ix.position.end()) return;
  const auto pos = static_cast<std::size_t>(it->second);
  if (ix.is_changed[pos]) return;
  ix.is_changed[pos] = true;
  ix.changed.push_back(it->second);
}

void RolloutEngine::set_state(Rollout& r, tern::v1::HostProgress& h, HostRolloutState s) {
  touch(r, h);
  auto& ix = index_of(r);
  if (h.wave() < ix.waiting.size()) {
    auto count = [&](HostRolloutState st, int d) {
      if (st == tern::v1::HOST_ROLLOUT_STATE_WAITING) ix.waiting[h.wave()] += d;
      if (st == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING) ix.deploying[h.wave()] += d;
    };
    count(h.state(), -1);
    count(s, +1);
  }
  h.set_state(s);
}

bool RolloutEngine::host_reachable(const std::string& host) const {
  auto it = gone_.find(host);
  return it == gone_.end() || !it->second;
}

void RolloutEngine::emit(Rollout& r, tern::v1::RolloutEventKind kind, const std::string& message) {
  *r.mutable_updated() = stamp(clock_.now());
  r.set_message(message);
  if (effects_.changed) effects_.changed(r, kind, message);
}

void RolloutEngine::set_phase(Rollout& r, RolloutPhase p, const std::string& message) {
  if (r.phase() == p) return;
  r.set_phase(p);
  r.set_generation(r.generation() + 1);
  emit(r, entered(p), message);
}

absl::StatusOr<Rollout> RolloutEngine::start(const std::string& id, const tern::v1::RolloutSpec& spec,
                                             const RolloutPlanResult& plan, const tern::v1::ReleaseRef& release,
                                             const tern::v1::ReleaseRef& previous,
                                             const std::map<std::string, std::string>& previous_versions,
                                             const tern::v1::ServiceAnalysis& analysis_metrics) {
  if (const auto* active = active_for(spec.service())) {
    return absl::FailedPreconditionError(absl::StrCat("service ", spec.service(), " already has rollout ",
                                                      active->id(), " (", word(active->phase()),
                                                      "); wait for it, or abort it first"));
  }
  if (plan.waves.size() != static_cast<std::size_t>(spec.waves_size())) {
    return absl::InternalError("the plan does not match the spec's waves");
  }
  Rollout r;
  r.set_id(id);
  r.set_generation(1);
  *r.mutable_spec() = spec;
  *r.mutable_spec()->mutable_release() = release;
  *r.mutable_previous_release() = previous;
  if (std::any_of(spec.waves().begin(), spec.waves().end(), [](const tern::v1::Wave& w) { return w.analyze(); })) {
    *r.mutable_analysis_metrics() = analysis_metrics;
  }
  r.set_phase(tern::v1::ROLLOUT_PHASE_RUNNING);
  *r.mutable_created() = stamp(clock_.now());
  uint32_t total = 0;
  for (std::size_t w = 0; w < plan.waves.size(); ++w) {
    for (const auto& host : plan.waves[w].host_ids) {
      auto* h = r.add_hosts();
      h->set_host_id(host);
      h->set_wave(static_cast<uint32_t>(w));
      h->set_state(tern::v1::HOST_ROLLOUT_STATE_WAITING);
      *h->mutable_updated() = stamp(clock_.now());
      if (auto it = previous_versions.find(host); it != previous_versions.end()) h->set_previous_version(it->second);
      ++total;
    }
  }
  r.set_total_hosts(total);
  auto [it, fresh] = rollouts_.try_emplace(id);
  if (!fresh) return absl::AlreadyExistsError(absl::StrCat("rollout ", id, " exists"));
  Rollout& ref = it->second.rollout = std::move(r);
  build_index(ref, it->second.index);
  emit(ref, tern::v1::ROLLOUT_EVENT_KIND_STARTED,
       absl::StrCat("rolling ", spec.service(), " out to ", release.version(), " on ", total, " hosts in ",
                    spec.waves_size(), " waves"));
  start_wave(ref, 0);
  return ref;
}

void RolloutEngine::restore(const Rollout& rollout,
                            const std::vector<std::pair<std::string, tern::v1::AnalysisSample>>& samples) {
  auto& entry = rollouts_[rollout.id()];
  entry.rollout = rollout;
  build_index(entry.rollout, entry.index);
  auto& r = entry.rollout;
  if (is_terminal(r.phase())) return;
  // Deploys and rollbacks in flight when the coordinator died are asked
  // again; an agent that already did the work answers at once.
  // A paused rollout's in-flight deploys are asked again when it resumes
  // (their answers died with the old process; waiting for them would only
  // run into the progress deadline).
  const bool forward = r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING || r.phase() == tern::v1::ROLLOUT_PHASE_PAUSED;
  for (auto& h : *r.mutable_hosts()) {
    if (h.state() == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING && forward) {
      set_state(r, h, tern::v1::HOST_ROLLOUT_STATE_WAITING);
    }
    if (r.phase() == tern::v1::ROLLOUT_PHASE_ROLLING_BACK && h.rollback_pending()) send_rollback(r, h);
  }
  if ((r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING || r.phase() == tern::v1::ROLLOUT_PHASE_PAUSED) &&
      r.has_analysis() && r.analysis().wave() == r.current_wave() && r.wave_step() != tern::v1::WAVE_STEP_DONE &&
      r.wave_step() != tern::v1::WAVE_STEP_DEPLOYING) {
    const auto& ix = entry.index;
    const auto n = r.current_wave() < ix.wave_hosts.size() ? ix.wave_hosts[r.current_wave()].size() : 0;
    entry.analysis = std::make_unique<WaveAnalysis>(r.analysis_metrics(), r.spec().analysis(), static_cast<uint32_t>(n));
    // The same test: what it had counted before the restart. Hosts that
    // failed on their counts were journaled as such and are not on the
    // canary any more.
    for (const auto& [host, s] : samples) {
      const auto* h = host_of(r, host);
      if (h == nullptr || h->wave() != r.current_wave() || h->state() != tern::v1::HOST_ROLLOUT_STATE_ON_NEW) continue;
      entry.analysis->add(host, s);
    }
  }
  emit(r, tern::v1::ROLLOUT_EVENT_KIND_RESUMED_AFTER_RESTART,
       "the coordinator restarted; the rollout continues from its journal");
  if (r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING && r.wave_step() == tern::v1::WAVE_STEP_UNSPECIFIED) {
    // Journaled as started, but the first wave's start was not.
    start_wave(r, r.current_wave());
    return;
  }
  if (r.phase() == tern::v1::ROLLOUT_PHASE_ROLLING_BACK) finish_rollback_if_done(r);
  // Its answer died with the old process: ask again (the same request id).
  if (r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING && r.wave_step() == tern::v1::WAVE_STEP_AWAITING_GATE) {
    ask_gate(r);
    return;
  }
  // Journaled a failure but died before acting on the budget. (A rollout an
  // operator resumed while over its budget pauses again here: the cautious
  // reading of a journal that cannot tell the two apart.)
  if (r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING && over_budget(r)) {
    on_budget_exceeded(r, absl::StrCat(r.failed_hosts(), " host(s) failed, over the failure budget"));
    return;
  }
  advance(r);
}

void RolloutEngine::start_wave(Rollout& r, uint32_t wave) {
  if (auto* e = entry_of(r.id())) e->analysis.reset();
  r.set_current_wave(wave);
  r.set_wave_step(tern::v1::WAVE_STEP_DEPLOYING);
  r.set_failed_in_wave(0);
  *r.mutable_step_started() = stamp(clock_.now());
  r.clear_bake_until();
  auto& ix = index_of(r);
  ix.cursor = 0;
  if (!r.spec().waves(static_cast<int>(wave)).gate_webhook().empty()) {
    // Nothing of the wave is deployed before its gate allows it.
    r.set_wave_step(tern::v1::WAVE_STEP_AWAITING_GATE);
    ask_gate(r);
    return;
  }
  deploy_wave(r);
}

void RolloutEngine::deploy_wave(Rollout& r) {
  const uint32_t wave = r.current_wave();
  const auto& ix = index_of(r);
  r.set_wave_step(tern::v1::WAVE_STEP_DEPLOYING);
  *r.mutable_step_started() = stamp(clock_.now());
  const std::size_t n = wave < ix.wave_hosts.size() ? ix.wave_hosts[wave].size() : 0;
  emit(r, tern::v1::ROLLOUT_EVENT_KIND_WAVE_STARTED,
       absl::StrCat("wave ", wave + 1, " of ", r.spec().waves_size(), ": ", n, " host(s)"));
  advance(r);
}

void RolloutEngine::ask_gate(Rollout& r) {
  const uint32_t wave = r.current_wave();
  const std::string& name = r.spec().waves(static_cast<int>(wave)).gate_webhook();
  *r.mutable_step_started() = stamp(clock_.now());
  emit(r, tern::v1::ROLLOUT_EVENT_KIND_GATE_WAITING,
       absl::StrCat("wave ", wave + 1, " waits for webhook ", name, " to allow it"));
  if (effects_.ask_gate) effects_.ask_gate(r, wave, name);
}

void RolloutEngine::on_gate_answer(const std::string& id, uint32_t wave, bool allowed, const std::string& message) {
  Rollout* r = mutable_find(id);
  // An answer the rollout no longer waits for (paused, aborted, rolled back,
  // or asked again meanwhile) changes nothing: a resume asks again.
  if (r == nullptr || r->phase() != tern::v1::ROLLOUT_PHASE_RUNNING ||
      r->wave_step() != tern::v1::WAVE_STEP_AWAITING_GATE || r->current_wave() != wave) {
    return;
  }
  const std::string& name = r->spec().waves(static_cast<int>(wave)).gate_webhook();
  if (!allowed) {
    set_phase(*r, tern::v1::ROLLOUT_PHASE_PAUSED,
              absl::StrCat("paused: webhook ", name, " did not allow wave ", wave + 1, ": ", message,
                           "; `ternctl rollout resume ", id, "` asks it again"));
    return;
  }
  emit(*r, tern::v1::ROLLOUT_EVENT_KIND_GATE_PASSED,
       absl::StrCat("webhook ", name, " allowed wave ", wave + 1, message.empty() ? "" : ": ", message));
  deploy_wave(*r);
}

void RolloutEngine::dispatch(Rollout& r) {
  const uint32_t wave = r.current_wave();
  const uint32_t weight = r.spec().waves(static_cast<int>(wave)).weight();
  auto& ix = index_of(r);
  if (wave >= ix.wave_hosts.size()) return;
  const auto& hosts = ix.wave_hosts[wave];
  const uint32_t limit = r.spec().max_parallel() == 0 ? UINT32_MAX : r.spec().max_parallel();
  // Hosts only ever leave WAITING within a wave, so the cursor never has to
  // look back: dispatching a whole wave is one pass however it is sliced.
  while (ix.waiting[wave] > 0 && ix.deploying[wave] < limit && ix.cursor < hosts.size()) {
    auto& h = *r.mutable_hosts(hosts[ix.cursor]);
    if (h.state() != tern::v1::HOST_ROLLOUT_STATE_WAITING) {
      ++ix.cursor;
      continue;
    }
    if (!host_reachable(h.host_id())) {
      host_failed(r, h, tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE, "unreachable when its turn came");
      if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING) return;
      continue;
    }
    send_deploy(r, h, weight);
  }
}

void RolloutEngine::send_deploy(Rollout& r, tern::v1::HostProgress& h, uint32_t weight) {
  set_state(r, h, tern::v1::HOST_ROLLOUT_STATE_DEPLOYING);
  h.set_weight(effective_weight(weight));
  *h.mutable_sent() = stamp(clock_.now());
  *h.mutable_updated() = h.sent();
  if (effects_.deploy) effects_.deploy(r, h.host_id(), r.spec().release(), weight);
}

bool RolloutEngine::raise_earlier_waves(Rollout& r) {
  const uint32_t last = static_cast<uint32_t>(r.spec().waves_size()) - 1;
  const uint32_t target = effective_weight(r.spec().waves(static_cast<int>(last)).weight());
  auto& ix = index_of(r);
  bool pending = false;
  for (uint32_t w = 0; w < last && w < ix.wave_hosts.size(); ++w) {
    // A wave already given the target has nothing to raise: each answer to a
    // raise comes back here, so only the waves below it are looked through.
    if (effective_weight(r.spec().waves(static_cast<int>(w)).weight()) >= target) continue;
    for (int pos : ix.wave_hosts[w]) {
      auto& h = *r.mutable_hosts(pos);
      // WAITING here: a raise that was in flight when the coordinator restarted.
      const bool behind = (h.state() == tern::v1::HOST_ROLLOUT_STATE_ON_NEW &&
                           effective_weight(h.weight()) < target) ||
                          h.state() == tern::v1::HOST_ROLLOUT_STATE_WAITING;
      if (!behind) continue;
      if (host_reachable(h.host_id())) {
        send_deploy(r, h, target);
      } else if (h.state() == tern::v1::HOST_ROLLOUT_STATE_WAITING) {
        host_failed(r, h, tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE, "unreachable when its weight was to be raised");
      }
      if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING) return true;
    }
    pending = pending || ix.deploying[w] > 0;
  }
  return pending;
}

void RolloutEngine::advance(Rollout& r) {
  // Each pass settles one step; loop while something moved.
  for (int guard = 0; guard < 1000; ++guard) {
    if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING) return;
    const uint32_t wave = r.current_wave();
    const auto& spec_wave = r.spec().waves(static_cast<int>(wave));
    if (r.wave_step() == tern::v1::WAVE_STEP_DEPLOYING) {
      dispatch(r);
      if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING) return;
      const auto& ix = index_of(r);
      if (wave < ix.waiting.size() && ix.waiting[wave] + ix.deploying[wave] > 0) return;
      if (wave + 1 == static_cast<uint32_t>(r.spec().waves_size()) && raise_earlier_waves(r)) return;
      if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING) return;
      if (spec_wave.analyze() && r.analysis_metrics().metrics_size() > 0) {
        begin_analysis(*entry_of(r.id()));
        continue;
      }
      r.set_wave_step(tern::v1::WAVE_STEP_BAKING);
      *r.mutable_step_started() = stamp(clock_.now());
      *r.mutable_bake_until() = stamp(clock_.now() + millis(spec_wave.bake()));
      emit(r, tern::v1::ROLLOUT_EVENT_KIND_WAVE_BAKING,
           absl::StrCat("wave ", wave + 1, " deployed; baking for ", format_duration(millis(spec_wave.bake()))));
      continue;
    }
    if (r.wave_step() == tern::v1::WAVE_STEP_ANALYZING) {
      judge(*entry_of(r.id()));
      if (r.wave_step() == tern::v1::WAVE_STEP_ANALYZING) return;
      continue;
    }
    if (r.wave_step() == tern::v1::WAVE_STEP_BAKING) {
      if (clock_.now() < from_stamp(r.bake_until())) return;
      if (spec_wave.gate() == tern::v1::WAVE_GATE_MANUAL) {
        r.set_wave_step(tern::v1::WAVE_STEP_AWAITING_APPROVAL);
        *r.mutable_step_started() = stamp(clock_.now());
        r.set_generation(r.generation() + 1);
        emit(r, tern::v1::ROLLOUT_EVENT_KIND_AWAITING_APPROVAL,
             absl::StrCat("wave ", wave + 1, " baked; waiting for `ternctl rollout promote ", r.id(), "`"));
        return;
      }
      r.set_wave_step(tern::v1::WAVE_STEP_DONE);
      continue;
    }
    if (r.wave_step() == tern::v1::WAVE_STEP_AWAITING_APPROVAL) return;
    if (r.wave_step() == tern::v1::WAVE_STEP_AWAITING_GATE) return;
    if (r.wave_step() == tern::v1::WAVE_STEP_DONE) {
      if (wave + 1 < static_cast<uint32_t>(r.spec().waves_size())) {
        start_wave(r, wave + 1);
        return;
      }
      uint32_t drifted = 0;
      for (const auto& h : r.hosts()) drifted += h.drifted();
      const uint32_t weight = effective_weight(spec_wave.weight());
      const std::string failed =
          absl::StrCat(weight < 100 ? absl::StrCat(", taking ", weight, "% of new connections as its last wave says")
                                    : "",
                       r.failed_hosts() ? absl::StrCat(" (", r.failed_hosts(), " failed within the budget)") : "");
      set_phase(r, tern::v1::ROLLOUT_PHASE_SUCCEEDED,
                drifted == 0
                    ? absl::StrCat(r.spec().service(), " ", r.spec().release().version(), " is on all ",
                                   r.total_hosts(), " hosts", failed)
                    : absl::StrCat(r.spec().service(), " ", r.spec().release().version(), " went out to ",
                                   r.total_hosts(), " hosts", failed, "; ", drifted,
                                   " of them changed by hand since, and may serve another release"));
      return;
    }
    return;
  }
}

bool RolloutEngine::over_budget(const Rollout& r) const {
  const auto& b = r.spec().failure_budget();
  const uint32_t by_percent = static_cast<uint32_t>(static_cast<uint64_t>(b.max_failed_percent()) * r.total_hosts() / 100);
  const uint32_t allowed = std::max(b.max_failed_hosts(), by_percent);
  if (r.failed_hosts() > allowed) return true;
  return b.max_failed_per_wave() > 0 && r.failed_in_wave() > b.max_failed_per_wave();
}

void RolloutEngine::host_failed(Rollout& r, tern::v1::HostProgress& h, HostRolloutState state,
                                const std::string& message) {
  const bool already = counts_as_failed(h.state());
  set_state(r, h, state);
  h.set_message(message);
  *h.mutable_updated() = stamp(clock_.now());
  if (!already) {
    r.set_failed_hosts(r.failed_hosts() + 1);
    if (h.wave() == r.current_wave()) r.set_failed_in_wave(r.failed_in_wave() + 1);
  }
  emit(r, tern::v1::ROLLOUT_EVENT_KIND_HOST_FAILED, absl::StrCat(h.host_id(), ": ", message));
  if (over_budget(r)) {
    on_budget_exceeded(r, absl::StrCat(r.failed_hosts(), " host(s) failed, over the failure budget (last: ",
                                       h.host_id(), ": ", message, ")"));
  }
}

void RolloutEngine::on_budget_exceeded(Rollout& r, const std::string& why) {
  if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING) return;
  if (r.spec().on_failure() == tern::v1::ON_FAILURE_PAUSE) {
    set_phase(r, tern::v1::ROLLOUT_PHASE_PAUSED, absl::StrCat(why, "; paused (on_failure: pause)"));
    return;
  }
  begin_rollback(r, absl::StrCat(why, "; rolling back every host"));
}

void RolloutEngine::send_rollback(Rollout& r, tern::v1::HostProgress& h) {
  touch(r, h);
  h.set_rollback_pending(true);
  if (!host_reachable(h.host_id())) return;  // flipped when it returns
  if (!index_of(r).flips_in_flight.insert(h.host_id()).second) return;  // already asked
  *h.mutable_sent() = stamp(clock_.now());
  if (effects_.rollback) effects_.rollback(r, h.host_id());
}

void RolloutEngine::begin_rollback(Rollout& r, const std::string& why) {
  // Hosts that reached the new release (or may have: a deploy in flight, a
  // host that turned unhealthy or vanished afterwards) flip back. They are
  // marked before the phase change is journaled, so a restart in between
  // still knows whom it owes a rollback.
  for (auto& h : *r.mutable_hosts()) {
    const auto s = h.state();
    if (s == tern::v1::HOST_ROLLOUT_STATE_ON_NEW || s == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING ||
        s == tern::v1::HOST_ROLLOUT_STATE_UNHEALTHY || s == tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE ||
        s == tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE) {
      if (s == tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE && h.sent().seconds() == 0) continue;  // never reached
      touch(r, h);
      h.set_rollback_pending(true);
    }
  }
  set_phase(r, tern::v1::ROLLOUT_PHASE_ROLLING_BACK, why);
  for (auto& h : *r.mutable_hosts()) {
    if (h.rollback_pending()) send_rollback(r, h);
  }
  finish_rollback_if_done(r);
}

void RolloutEngine::finish_rollback_if_done(Rollout& r) {
  if (r.phase() != tern::v1::ROLLOUT_PHASE_ROLLING_BACK) return;
  // Done when no flip is in flight. Hosts that are away do not hold the
  // rollout (nor the service's next one) open: they stay marked and are
  // flipped when they return. A reachable host whose flip failed ends the
  // rollback as failed, naming it, so a person looks.
  if (!index_of(r).flips_in_flight.empty()) return;
  std::vector<std::string> away, failed;
  for (const auto& h : r.hosts()) {
    if (!h.rollback_pending()) continue;
    (host_reachable(h.host_id()) ? failed : away).push_back(h.host_id());
  }
  const std::string to = r.previous_release().version().empty() ? std::string("its previous release")
                                                                : r.previous_release().version();
  if (!failed.empty()) {
    set_phase(r, tern::v1::ROLLOUT_PHASE_FAILED,
              absl::StrCat("rollback incomplete: ", failed.size(), " host(s) could not be flipped back (",
                           absl::StrJoin(failed, ", "), "); see `ternctl rollout status ", r.id(),
                           "`, fix them, then run `ternctl rollout rollback ", r.id(), "` again"));
    return;
  }
  if (!away.empty()) {
    set_phase(r, tern::v1::ROLLOUT_PHASE_ROLLED_BACK,
              absl::StrCat("every reachable host is back on ", to, "; ", away.size(), " host(s) away (",
                           absl::StrJoin(away, ", "), ") are flipped back when they return"));
    return;
  }
  set_phase(r, tern::v1::ROLLOUT_PHASE_ROLLED_BACK, absl::StrCat("every host is back on ", to));
}

bool RolloutEngine::is_settled(const Rollout& r) {
  if (!is_terminal(r.phase())) return false;
  for (const auto& h : r.hosts()) {
    if (h.rollback_pending()) return false;
  }
  return true;
}

void RolloutEngine::on_host_deployed(const std::string& id, const std::string& host, bool ok,
                                     HostRolloutState failure, const std::string& message) {
  Rollout* r = mutable_find(id);
  if (r == nullptr) return;
  auto* h = host_of(*r, host);
  if (h == nullptr) return;
  if (r->phase() == tern::v1::ROLLOUT_PHASE_ROLLING_BACK) {
    // A deploy that lands after the rollback began is flipped back too.
    if (ok && h->state() == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING) send_rollback(*r, *h);
    if (!ok && h->state() == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING) {
      set_state(*r, *h, failure);
      h->set_message(message);
      h->set_rollback_pending(false);  // never switched: nothing to undo
      finish_rollback_if_done(*r);
    }
    return;
  }
  if (h->state() != tern::v1::HOST_ROLLOUT_STATE_DEPLOYING) return;  // late or duplicate
  if (ok) {
    set_state(*r, *h, tern::v1::HOST_ROLLOUT_STATE_ON_NEW);
    h->set_message(message);
    *h->mutable_updated() = stamp(clock_.now());
    emit(*r, tern::v1::ROLLOUT_EVENT_KIND_HOST_ON_NEW, absl::StrCat(host, " runs ", r->spec().release().version()));
  } else {
    host_failed(*r, *h, failure == tern::v1::HOST_ROLLOUT_STATE_UNSPECIFIED ? tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE
                                                                           : failure,
                message);
  }
  advance(*r);
}

void RolloutEngine::on_host_rolled_back(const std::string& id, const std::string& host, bool ok,
                                        const std::string& message) {
  Rollout* r = mutable_find(id);
  if (r == nullptr) return;
  auto* h = host_of(*r, host);
  if (h == nullptr) return;
  index_of(*r).flips_in_flight.erase(host);
  if (!h->rollback_pending()) {
    // Its deploy failed meanwhile: nothing to undo, but this answer may be
    // the last one the rollback waited for.
    finish_rollback_if_done(*r);
    return;
  }
  if (!ok) {
    touch(*r, *h);
    h->set_message(absl::StrCat("rollback failed: ", message));
    emit(*r, tern::v1::ROLLOUT_EVENT_KIND_HOST_ROLLBACK_FAILED, absl::StrCat(host, ": ", message));
    finish_rollback_if_done(*r);
    return;
  }
  h->set_rollback_pending(false);
  set_state(*r, *h, tern::v1::HOST_ROLLOUT_STATE_ROLLED_BACK);
  h->set_message(message);
  *h->mutable_updated() = stamp(clock_.now());
  emit(*r, tern::v1::ROLLOUT_EVENT_KIND_HOST_ROLLED_BACK, absl::StrCat(host, " is back on the previous release"));
  finish_rollback_if_done(*r);
}

void RolloutEngine::on_host_unhealthy(const std::string& service, const std::string& host,
                                      const std::string& message) {
  for (auto& [id, e] : rollouts_) {
    auto& r = e.rollout;
    if (r.spec().service() != service) continue;
    if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING && r.phase() != tern::v1::ROLLOUT_PHASE_PAUSED) continue;
    auto* h = host_of(r, host);
    if (h == nullptr || h->state() != tern::v1::HOST_ROLLOUT_STATE_ON_NEW) continue;
    host_failed(r, *h, tern::v1::HOST_ROLLOUT_STATE_UNHEALTHY, absl::StrCat("unhealthy on the new release: ", message));
  }
}

absl::Status RolloutEngine::on_host_changed_by_hand(const std::string& id, const std::string& host,
                                                    const std::string& what) {
  Rollout* r = mutable_find(id);
  auto* h = r == nullptr ? nullptr : host_of(*r, host);
  if (h == nullptr) return absl::NotFoundError(absl::StrCat("rollout ", id, " has no host ", host));
  h->set_drifted(true);
  h->set_message(what);
  touch(*r, *h);
  emit(*r, tern::v1::ROLLOUT_EVENT_KIND_HOST_CHANGED_BY_HAND, absl::StrCat(host, ": ", what));
  return absl::OkStatus();
}

void RolloutEngine::on_host_gone(const std::string& host, const std::string& message) {
  gone_[host] = true;
  for (auto& [id, e] : rollouts_) {
    auto& r = e.rollout;
    if (r.phase() == tern::v1::ROLLOUT_PHASE_ROLLING_BACK && host_of(r, host) != nullptr) {
      // Its flip, if it was being sent, will not be answered now; it is
      // owed until the host returns.
      e.index.flips_in_flight.erase(host);
      finish_rollback_if_done(r);
      continue;
    }
    if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING && r.phase() != tern::v1::ROLLOUT_PHASE_PAUSED) continue;
    auto* h = host_of(r, host);
    if (h == nullptr) continue;
    if (h->state() == tern::v1::HOST_ROLLOUT_STATE_ON_NEW || h->state() == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING) {
      host_failed(r, *h, tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE, message);
      advance(r);
    }
  }
}

void RolloutEngine::on_host_back(const std::string& host) {
  gone_[host] = false;
  for (auto& [id, e] : rollouts_) {
    auto& r = e.rollout;
    auto* h = host_of(r, host);
    if (h == nullptr || !h->rollback_pending() || e.index.flips_in_flight.count(host)) continue;
    // A rollback it missed while away: flipped now, whatever the phase.
    emit(r, tern::v1::ROLLOUT_EVENT_KIND_HOST_BACK, absl::StrCat(host, " is back; rolling it back"));
    send_rollback(r, *h);
  }
}

void RolloutEngine::tick() {
  const TimePoint now = clock_.now();
  for (auto& [id, e] : rollouts_) {
    auto& r = e.rollout;
    // The test goes on while the wave holds (after a PASS, paused, gated)
    // and a FAIL then still acts; a running analysis is judged by advance().
    const bool running_analysis =
        r.wave_step() == tern::v1::WAVE_STEP_ANALYZING && r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING;
    if (e.analysis && !running_analysis &&
        (r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING || r.phase() == tern::v1::ROLLOUT_PHASE_PAUSED)) {
      judge(e);
    }
    if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING) continue;
    const Millis deadline = millis(r.spec().progress_deadline());
    // Nothing to time out when no deploy is in flight.
    bool deploying = false;
    for (uint32_t n : e.index.deploying) deploying |= n > 0;
    for (int i = 0; deploying && i < r.hosts_size(); ++i) {
      auto& h = *r.mutable_hosts(i);
      if (h.state() == tern::v1::HOST_ROLLOUT_STATE_DEPLOYING && now - from_stamp(h.sent()) > deadline) {
        host_failed(r, h, tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE,
                    absl::StrCat("no answer within the progress deadline of ", format_duration(deadline)));
        if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING) break;
      }
    }
    advance(r);
  }
}

absl::StatusOr<Rollout> RolloutEngine::command(const std::string& id, uint64_t generation, RolloutCommand cmd,
                                               const std::string& reason) {
  Rollout* r = mutable_find(id);
  if (r == nullptr) return absl::NotFoundError(absl::StrCat("no rollout \"", id, "\""));
  if (generation != r->generation()) {
    return absl::FailedPreconditionError(absl::StrCat(
        to_string(cmd), " ", id, ": the rollout is at generation ", r->generation(), ", not ", generation,
        " (it changed meanwhile: ", word(r->phase()), "); look at it again and repeat if still wanted"));
  }
  const std::string why = reason.empty() ? "" : absl::StrCat(" (", reason, ")");
  const auto phase = r->phase();
  auto refuse = [&](const std::string& state) {
    return absl::FailedPreconditionError(absl::StrCat("cannot ", to_string(cmd), " rollout ", id, ": it is ", state));
  };
  switch (cmd) {
    case RolloutCommand::kPause:
      if (phase == tern::v1::ROLLOUT_PHASE_PAUSED) return *r;
      if (phase != tern::v1::ROLLOUT_PHASE_RUNNING) return refuse(word(phase));
      set_phase(*r, tern::v1::ROLLOUT_PHASE_PAUSED, absl::StrCat("paused by an operator", why));
      return *r;
    case RolloutCommand::kResume:
      if (phase == tern::v1::ROLLOUT_PHASE_RUNNING) return *r;
      if (phase != tern::v1::ROLLOUT_PHASE_PAUSED) return refuse(word(phase));
      set_phase(*r, tern::v1::ROLLOUT_PHASE_RUNNING, absl::StrCat("resumed by an operator", why));
      if (r->wave_step() == tern::v1::WAVE_STEP_AWAITING_GATE) {
        ask_gate(*r);
        return *r;
      }
      // Deploys in flight while paused have finished; the bake clock runs on.
      advance(*r);
      return *r;
    case RolloutCommand::kPromote:
      if (r->wave_step() == tern::v1::WAVE_STEP_ANALYZING &&
          (phase == tern::v1::ROLLOUT_PHASE_RUNNING ||
           (phase == tern::v1::ROLLOUT_PHASE_PAUSED && r->analysis().verdict() == "INCONCLUSIVE"))) {
        // A person accepts the wave whatever the analysis says so far.
        const std::string was = r->analysis().verdict();
        r->mutable_analysis()->set_verdict("PROMOTED");
        if (phase == tern::v1::ROLLOUT_PHASE_PAUSED) {
          set_phase(*r, tern::v1::ROLLOUT_PHASE_RUNNING, absl::StrCat("resumed by an operator's promote", why));
        }
        r->set_wave_step(tern::v1::WAVE_STEP_BAKING);
        *r->mutable_step_started() = stamp(clock_.now());
        *r->mutable_bake_until() = stamp(std::max(
            clock_.now(), from_stamp(r->analysis().started()) +
                              millis(r->spec().waves(static_cast<int>(r->current_wave())).bake())));
        r->set_generation(r->generation() + 1);
        emit(*r, tern::v1::ROLLOUT_EVENT_KIND_PROMOTED,
             absl::StrCat("wave ", r->current_wave() + 1, "'s analysis (", was, ": ", r->analysis().message(),
                          ") accepted by an operator", why));
        advance(*r);
        return *r;
      }
      if (r->wave_step() == tern::v1::WAVE_STEP_AWAITING_GATE) {
        // The gate is a policy the coordinator's admin set: a person cannot
        // wave it through (resume asks it again; abort and rollback remain).
        return refuse(absl::StrCat("waiting for webhook ",
                                   r->spec().waves(static_cast<int>(r->current_wave())).gate_webhook(),
                                   " to allow wave ", r->current_wave() + 1, ", which only it can"));
      }
      if (phase != tern::v1::ROLLOUT_PHASE_RUNNING) return refuse(word(phase));
      if (r->wave_step() != tern::v1::WAVE_STEP_AWAITING_APPROVAL && r->wave_step() != tern::v1::WAVE_STEP_BAKING) {
        return refuse("still deploying its wave");
      }
      r->set_wave_step(tern::v1::WAVE_STEP_DONE);
      r->set_generation(r->generation() + 1);
      emit(*r, tern::v1::ROLLOUT_EVENT_KIND_PROMOTED,
           absl::StrCat("wave ", r->current_wave() + 1, " promoted by an operator", why));
      advance(*r);
      return *r;
    case RolloutCommand::kAbort:
      if (phase == tern::v1::ROLLOUT_PHASE_ABORTED) return *r;
      if (is_terminal(phase) || phase == tern::v1::ROLLOUT_PHASE_ROLLING_BACK) return refuse(word(phase));
      set_phase(*r, tern::v1::ROLLOUT_PHASE_ABORTED,
                absl::StrCat("aborted by an operator", why, "; hosts keep what they run (roll back to undo)"));
      return *r;
    case RolloutCommand::kRollback:
      if (phase == tern::v1::ROLLOUT_PHASE_ROLLING_BACK || phase == tern::v1::ROLLOUT_PHASE_ROLLED_BACK) return *r;
      begin_rollback(*r, absl::StrCat("rollback requested by an operator", why));
      return *r;
  }
  return absl::InternalError("unknown command");
}

RolloutEngine::Entry* RolloutEngine::entry_of(const std::string& id) {
  auto it = rollouts_.find(id);
  return it == rollouts_.end() ? nullptr : &it->second;
}

void RolloutEngine::begin_analysis(Entry& e) {
  Rollout& r = e.rollout;
  const auto& policy = r.spec().analysis();
  const TimePoint now = clock_.now();
  r.set_wave_step(tern::v1::WAVE_STEP_ANALYZING);
  *r.mutable_step_started() = stamp(now);
  auto* a = r.mutable_analysis();
  a->Clear();
  a->set_wave(r.current_wave());
  a->set_verdict("RUNNING");
  *a->mutable_started() = stamp(now);
  *a->mutable_until() = stamp(now + millis(policy.warmup()) + millis(policy.max_duration()));
  const auto& ix = index_of(r);
  const auto n = r.current_wave() < ix.wave_hosts.size() ? ix.wave_hosts[r.current_wave()].size() : 0;
  e.analysis = std::make_unique<WaveAnalysis>(r.analysis_metrics(), policy, static_cast<uint32_t>(n));
  emit(r, tern::v1::ROLLOUT_EVENT_KIND_WAVE_ANALYZING,
       absl::StrCat("wave ", r.current_wave() + 1, " deployed; judging ", r.spec().release().version(), " against ",
                    r.previous_release().version().empty() ? std::string("the previous release")
                                                           : r.previous_release().version(),
                    " on each host (", r.analysis_metrics().metrics_size(), " metric(s); warm-up ",
                    format_duration(millis(policy.warmup())), ", at least ", format_duration(millis(policy.min_duration())),
                    ", at most ", format_duration(millis(policy.max_duration())), ")"));
}

void RolloutEngine::judge(Entry& e) {
  Rollout& r = e.rollout;
  if (!e.analysis || r.analysis().wave() != r.current_wave()) return;
  const auto& policy = r.spec().analysis();
  const TimePoint now = clock_.now();
  std::vector<std::string> hosts;
  const auto& ix = index_of(r);
  if (r.current_wave() < ix.wave_hosts.size()) {
    for (int pos : ix.wave_hosts[r.current_wave()]) {
      const auto& h = r.hosts(pos);
      if (h.state() == tern::v1::HOST_ROLLOUT_STATE_ON_NEW) hosts.push_back(h.host_id());
    }
  }
  const bool deciding = r.wave_step() == tern::v1::WAVE_STEP_ANALYZING && r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING;
  const TimePoint started = from_stamp(r.analysis().started());
  const bool may_pass = deciding && now >= started + millis(policy.warmup()) + millis(policy.min_duration());
  const bool at_horizon = deciding && now >= from_stamp(r.analysis().until());
  const WaveAnalysis::Verdict v = e.analysis->decide(hosts, may_pass, at_horizon);
  auto* a = r.mutable_analysis();
  a->clear_metrics();
  for (const auto& m : v.metrics) *a->add_metrics() = m;
  a->set_hosts_counted(v.hosts_counted);
  a->set_intervals(v.intervals);
  a->set_canary_share(v.canary_share);
  a->set_expected_share(v.expected_share);
  a->set_connections(v.connections);
  a->set_connection_share(v.connection_share);
  if (v.split_warning != a->split_warning()) {
    // Said once when the split goes off; the status keeps the numbers.
    if (a->split_warning().empty()) {
      emit(r, tern::v1::ROLLOUT_EVENT_KIND_SPLIT_OFF,
           absl::StrCat("wave ", r.current_wave() + 1, ": ", v.split_warning,
                        "; the analysis goes on, but check this host's NAT rules"));
    }
    a->set_split_warning(v.split_warning);
  }
  a->set_message(v.summary);
  const std::string wave = absl::StrCat("wave ", r.current_wave() + 1);
  auto act_on_fail = [&] {
    a->set_verdict("FAIL");
    const std::string why = absl::StrCat(wave, ": analysis FAIL: ", v.summary);
    emit(r, tern::v1::ROLLOUT_EVENT_KIND_ANALYSIS_VERDICT, why);
    if (policy.on_fail() == tern::v1::ON_FAILURE_PAUSE) {
      set_phase(r, tern::v1::ROLLOUT_PHASE_PAUSED,
                absl::StrCat(why, "; paused (analysis.on_fail: pause): `ternctl rollout rollback ", r.id(),
                             "` returns every host"));
      return;
    }
    begin_rollback(r, absl::StrCat(why, "; rolling back every host"));
  };
  if (deciding) {
    switch (v.verdict) {
      case CanaryVerdict::kPass:
        a->set_verdict("PASS");
        emit(r, tern::v1::ROLLOUT_EVENT_KIND_ANALYSIS_VERDICT, absl::StrCat(wave, ": analysis PASS: ", v.summary));
        r.set_wave_step(tern::v1::WAVE_STEP_BAKING);
        *r.mutable_step_started() = stamp(now);
        *r.mutable_bake_until() =
            stamp(std::max(now, started + millis(r.spec().waves(static_cast<int>(r.current_wave())).bake())));
        return;
      case CanaryVerdict::kFail:
        act_on_fail();
        return;
      case CanaryVerdict::kInconclusive:
        a->set_verdict("INCONCLUSIVE");
        emit(r, tern::v1::ROLLOUT_EVENT_KIND_ANALYSIS_VERDICT,
             absl::StrCat(wave, ": analysis INCONCLUSIVE: ", v.summary));
        set_phase(r, tern::v1::ROLLOUT_PHASE_PAUSED,
                  absl::StrCat(wave, "'s analysis is inconclusive (", v.summary, "); waiting for a person: `ternctl "
                               "rollout promote ", r.id(), "` accepts the wave, `ternctl rollout extend ", r.id(),
                               " 15m` judges on, `ternctl rollout rollback ", r.id(), "` returns every host"));
        return;
      case CanaryVerdict::kRunning:
        return;
    }
  }
  // After a verdict, paused or gated: only a FAIL acts, and once.
  if (v.verdict == CanaryVerdict::kFail && a->verdict() != "FAIL") act_on_fail();
}

WaveAnalysis::Taken RolloutEngine::on_sample(const std::string& host, const tern::v1::AnalysisSample& s) {
  Rollout* found = nullptr;
  Entry* e = nullptr;
  for (auto& [id, entry] : rollouts_) {
    if (entry.rollout.spec().service() != s.service() || !entry.analysis) continue;
    if (entry.rollout.phase() != tern::v1::ROLLOUT_PHASE_RUNNING &&
        entry.rollout.phase() != tern::v1::ROLLOUT_PHASE_PAUSED) {
      continue;
    }
    found = &entry.rollout;
    e = &entry;
    break;
  }
  if (found == nullptr) return WaveAnalysis::Taken::kStale;
  Rollout& r = *found;
  auto* h = host_of(r, host);
  if (h == nullptr || h->wave() != r.current_wave() || h->state() != tern::v1::HOST_ROLLOUT_STATE_ON_NEW ||
      s.canary_version() != r.spec().release().version()) {
    return WaveAnalysis::Taken::kStale;
  }
  const auto taken = e->analysis->add(host, s);
  if (taken != WaveAnalysis::Taken::kCounted) return taken;
  if (auto why = e->analysis->host_failure(host)) {
    // Its own counts condemn it: out of the pool, counted against the
    // budget, and flipped back now (the rest of the wave goes on).
    auto* a = r.mutable_analysis();
    a->clear_metrics();
    for (auto& m : e->analysis->host_verdicts(host)) *a->add_metrics() = std::move(m);
    a->set_message(absl::StrCat(host, " failed on its own counts: ", *why));
    a->set_hosts_failed(a->hosts_failed() + 1);
    e->analysis->drop(host);
    host_failed(r, *h, tern::v1::HOST_ROLLOUT_STATE_UNHEALTHY, *why);
    // Over the budget: the rollout is over, and this FAIL is its verdict.
    if (r.phase() != tern::v1::ROLLOUT_PHASE_RUNNING && r.phase() != tern::v1::ROLLOUT_PHASE_PAUSED) {
      r.mutable_analysis()->set_verdict("FAIL");
      emit(r, tern::v1::ROLLOUT_EVENT_KIND_ANALYSIS_VERDICT,
           absl::StrCat("wave ", r.current_wave() + 1, ": analysis FAIL: ", r.analysis().message()));
    }
    if (r.phase() != tern::v1::ROLLOUT_PHASE_ROLLING_BACK && !h->rollback_pending()) send_rollback(r, *h);
  }
  return taken;
}

absl::StatusOr<std::vector<tern::v1::MetricVerdict>> RolloutEngine::host_analysis(const std::string& id,
                                                                                  const std::string& host) const {
  auto it = rollouts_.find(id);
  if (it == rollouts_.end() || !it->second.analysis) {
    return absl::NotFoundError(absl::StrCat("rollout ", id, " is not analyzing a wave now"));
  }
  auto verdicts = it->second.analysis->host_verdicts(host);
  if (verdicts.empty()) {
    return absl::NotFoundError(absl::StrCat(host, " has no counts in rollout ", id, "'s current analysis (not in the "
                                            "wave, still warming up, or failed and flipped back)"));
  }
  return verdicts;
}

absl::StatusOr<Rollout> RolloutEngine::extend_analysis(const std::string& id, uint64_t generation, Millis by,
                                                       const std::string& reason) {
  Entry* e = entry_of(id);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("no rollout \"", id, "\""));
  Rollout& r = e->rollout;
  if (generation != r.generation()) {
    return absl::FailedPreconditionError(absl::StrCat("extend ", id, ": the rollout is at generation ", r.generation(),
                                                      ", not ", generation, "; look at it again and repeat if still "
                                                      "wanted"));
  }
  const bool analyzing = e->analysis && r.wave_step() == tern::v1::WAVE_STEP_ANALYZING &&
                         (r.phase() == tern::v1::ROLLOUT_PHASE_RUNNING || r.phase() == tern::v1::ROLLOUT_PHASE_PAUSED);
  if (!analyzing) {
    return absl::FailedPreconditionError(absl::StrCat("cannot extend rollout ", id, ": its wave ", r.current_wave() + 1,
                                                      " is not being analyzed (", word(r.phase()), ", ",
                                                      word(r.wave_step()), ")"));
  }
  if (by <= Millis(0) || by > Millis(24LL * 3600 * 1000)) {
    return absl::InvalidArgumentError("extend by a duration from 1s to 24h, e.g. 15m");
  }
  const std::string why = reason.empty() ? "" : absl::StrCat(" (", reason, ")");
  auto* a = r.mutable_analysis();
  *a->mutable_until() = stamp(std::max(clock_.now(), from_stamp(a->until())) + by);
  a->set_verdict("RUNNING");
  r.set_generation(r.generation() + 1);
  const std::string what = absl::StrCat("wave ", r.current_wave() + 1, "'s analysis extended by ", format_duration(by),
                                        " by an operator", why, "; the same test goes on");
  if (r.phase() == tern::v1::ROLLOUT_PHASE_PAUSED) {
    set_phase(r, tern::v1::ROLLOUT_PHASE_RUNNING, what);
  } else {
    emit(r, tern::v1::ROLLOUT_EVENT_KIND_ANALYSIS_EXTENDED, what);
  }
  advance(r);
  return r;
}

}  // namespace tern
