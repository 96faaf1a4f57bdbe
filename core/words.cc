#include "core/words.h"

#include <utility>

namespace tern {
namespace {

using tern::v1::AgentEventKind;
using tern::v1::RolloutEventKind;

constexpr std::pair<RolloutEventKind, const char*> kRolloutEventWords[] = {
    {tern::v1::ROLLOUT_EVENT_KIND_RUNNING, "running"},
    {tern::v1::ROLLOUT_EVENT_KIND_PAUSED, "paused"},
    {tern::v1::ROLLOUT_EVENT_KIND_SUCCEEDED, "succeeded"},
    {tern::v1::ROLLOUT_EVENT_KIND_FAILED, "failed"},
    {tern::v1::ROLLOUT_EVENT_KIND_ROLLING_BACK, "rolling back"},
    {tern::v1::ROLLOUT_EVENT_KIND_ROLLED_BACK, "rolled back"},
    {tern::v1::ROLLOUT_EVENT_KIND_ABORTED, "aborted"},
    {tern::v1::ROLLOUT_EVENT_KIND_STARTED, "started"},
    {tern::v1::ROLLOUT_EVENT_KIND_RESUMED_AFTER_RESTART, "resumed_after_restart"},
    {tern::v1::ROLLOUT_EVENT_KIND_WAVE_STARTED, "wave_started"},
    {tern::v1::ROLLOUT_EVENT_KIND_WAVE_BAKING, "wave_baking"},
    {tern::v1::ROLLOUT_EVENT_KIND_AWAITING_APPROVAL, "awaiting_approval"},
    {tern::v1::ROLLOUT_EVENT_KIND_PROMOTED, "promoted"},
    {tern::v1::ROLLOUT_EVENT_KIND_HOST_ON_NEW, "host_on_new"},
    {tern::v1::ROLLOUT_EVENT_KIND_HOST_FAILED, "host_failed"},
    {tern::v1::ROLLOUT_EVENT_KIND_HOST_BACK, "host_back"},
    {tern::v1::ROLLOUT_EVENT_KIND_HOST_ROLLED_BACK, "host_rolled_back"},
    {tern::v1::ROLLOUT_EVENT_KIND_HOST_ROLLBACK_FAILED, "host_rollback_failed"},
    {tern::v1::ROLLOUT_EVENT_KIND_HOST_CHANGED_BY_HAND, "host_changed_by_hand"},
    {tern::v1::ROLLOUT_EVENT_KIND_WAVE_ANALYZING, "wave_analyzing"},
    {tern::v1::ROLLOUT_EVENT_KIND_ANALYSIS_VERDICT, "analysis_verdict"},
    {tern::v1::ROLLOUT_EVENT_KIND_ANALYSIS_EXTENDED, "analysis_extended"},
    {tern::v1::ROLLOUT_EVENT_KIND_SPLIT_OFF, "split_off"},
    {tern::v1::ROLLOUT_EVENT_KIND_GATE_WAITING, "gate_waiting"},
    {tern::v1::ROLLOUT_EVENT_KIND_GATE_PASSED, "gate_passed"},
    {tern::v1::ROLLOUT_EVENT_KIND_END, "end"},
};

constexpr std::pair<AgentEventKind, const char*> kAgentEventWords[] = {
    {tern::v1::AGENT_EVENT_KIND_PROGRESS, "progress"},
    {tern::v1::AGENT_EVENT_KIND_SWITCHED, "switched"},
    {tern::v1::AGENT_EVENT_KIND_SLOT_CRASHED, "slot_crashed"},
    {tern::v1::AGENT_EVENT_KIND_SLOT_RESTARTED, "slot_restarted"},
    {tern::v1::AGENT_EVENT_KIND_HEALTH_CHANGED, "health_changed"},
    {tern::v1::AGENT_EVENT_KIND_MAPPING_RESTORED, "mapping_restored"},
    {tern::v1::AGENT_EVENT_KIND_OPERATION_INTERRUPTED, "operation_interrupted"},
    {tern::v1::AGENT_EVENT_KIND_REFUSED, "refused"},
    {tern::v1::AGENT_EVENT_KIND_HOOK_FAILED, "hook_failed"},
};

constexpr std::pair<tern::v1::Role, const char*> kRoleWords[] = {
    {tern::v1::ROLE_VIEWER, "viewer"},
    {tern::v1::ROLE_OPERATOR, "operator"},
    {tern::v1::ROLE_ADMIN, "admin"},
    {tern::v1::ROLE_AGENT, "agent"},
};

template <class E, std::size_t N>
const char* lookup(const std::pair<E, const char*> (&table)[N], E value) {
  for (const auto& [e, w] : table) {
    if (e == value) return w;
  }
  return "unknown";
}

template <class E, std::size_t N>
std::optional<E> reverse(const std::pair<E, const char*> (&table)[N], std::string_view word) {
  for (const auto& [e, w] : table) {
    if (word == w) return e;
  }
  return std::nullopt;
}

}  // namespace

const char* word(tern::v1::SlotColor c) {
  switch (c) {
    case tern::v1::SLOT_COLOR_BLUE: return "blue";
    case tern::v1::SLOT_COLOR_GREEN: return "green";
    default: return "none";
  }
}

const char* word(tern::v1::SlotPhase p) {
  switch (p) {
    case tern::v1::SLOT_PHASE_EMPTY: return "empty";
    case tern::v1::SLOT_PHASE_STAGING: return "staging";
    case tern::v1::SLOT_PHASE_STARTING: return "starting";
    case tern::v1::SLOT_PHASE_HEALTHY: return "healthy";
    case tern::v1::SLOT_PHASE_UNHEALTHY: return "unhealthy";
    case tern::v1::SLOT_PHASE_DRAINING: return "draining";
    case tern::v1::SLOT_PHASE_STOPPED: return "stopped";
    case tern::v1::SLOT_PHASE_CRASHED: return "crashed";
    default: return "unknown";
  }
}

const char* word(tern::v1::HostState s) {
  switch (s) {
    case tern::v1::HOST_STATE_CONNECTED: return "connected";
    case tern::v1::HOST_STATE_DISCONNECTED: return "disconnected";
    case tern::v1::HOST_STATE_UNREACHABLE: return "unreachable";
    default: return "unknown";
  }
}

const char* word(tern::v1::Role r) {
  if (r == tern::v1::ROLE_UNSPECIFIED) return "none";
  return lookup(kRoleWords, r);
}

const char* word(tern::v1::RolloutPhase p) {
  switch (p) {
    case tern::v1::ROLLOUT_PHASE_PENDING: return "pending";
    case tern::v1::ROLLOUT_PHASE_RUNNING: return "running";
    case tern::v1::ROLLOUT_PHASE_PAUSED: return "paused";
    case tern::v1::ROLLOUT_PHASE_SUCCEEDED: return "succeeded";
    case tern::v1::ROLLOUT_PHASE_FAILED: return "failed";
    case tern::v1::ROLLOUT_PHASE_ROLLING_BACK: return "rolling back";
    case tern::v1::ROLLOUT_PHASE_ROLLED_BACK: return "rolled back";
    case tern::v1::ROLLOUT_PHASE_ABORTED: return "aborted";
    default: return "unknown";
  }
}

const char* word(tern::v1::WaveStep s) {
  switch (s) {
    case tern::v1::WAVE_STEP_DEPLOYING: return "deploying";
    case tern::v1::WAVE_STEP_BAKING: return "baking";
    case tern::v1::WAVE_STEP_ANALYZING: return "analyzing";
    case tern::v1::WAVE_STEP_AWAITING_APPROVAL: return "awaiting approval";
    case tern::v1::WAVE_STEP_DONE: return "done";
    case tern::v1::WAVE_STEP_AWAITING_GATE: return "awaiting gate";
    default: return "unknown";
  }
}

const char* word(tern::v1::HostRolloutState s) {
  switch (s) {
    case tern::v1::HOST_ROLLOUT_STATE_WAITING: return "waiting";
    case tern::v1::HOST_ROLLOUT_STATE_DEPLOYING: return "deploying";
    case tern::v1::HOST_ROLLOUT_STATE_ON_NEW: return "on new";
    case tern::v1::HOST_ROLLOUT_STATE_FAILED_STAGE: return "failed";
    case tern::v1::HOST_ROLLOUT_STATE_UNHEALTHY: return "unhealthy";
    case tern::v1::HOST_ROLLOUT_STATE_UNREACHABLE: return "unreachable";
    case tern::v1::HOST_ROLLOUT_STATE_AGENT_GONE: return "agent gone";
    case tern::v1::HOST_ROLLOUT_STATE_ROLLED_BACK: return "rolled back";
    default: return "unknown";
  }
}

const char* word(RolloutEventKind k) { return lookup(kRolloutEventWords, k); }
const char* word(AgentEventKind k) { return lookup(kAgentEventWords, k); }

std::optional<RolloutEventKind> rollout_event_kind(std::string_view w) { return reverse(kRolloutEventWords, w); }
std::optional<AgentEventKind> agent_event_kind(std::string_view w) { return reverse(kAgentEventWords, w); }
std::optional<tern::v1::Role> role(std::string_view w) { return reverse(kRoleWords, w); }

tern::v1::AgentEvent agent_event(AgentEventKind kind, const std::string& service, const std::string& message) {
  tern::v1::AgentEvent e;
  e.set_service(service);
  e.set_kind(kind);
  e.set_kind_word(word(kind));
  e.set_message(message);
  return e;
}

RolloutEventKind entered(tern::v1::RolloutPhase p) {
  switch (p) {
    case tern::v1::ROLLOUT_PHASE_RUNNING: return tern::v1::ROLLOUT_EVENT_KIND_RUNNING;
    case tern::v1::ROLLOUT_PHASE_PAUSED: return tern::v1::ROLLOUT_EVENT_KIND_PAUSED;
    case tern::v1::ROLLOUT_PHASE_SUCCEEDED: return tern::v1::ROLLOUT_EVENT_KIND_SUCCEEDED;
    case tern::v1::ROLLOUT_PHASE_FAILED: return tern::v1::ROLLOUT_EVENT_KIND_FAILED;
    case tern::v1::ROLLOUT_PHASE_ROLLING_BACK: return tern::v1::ROLLOUT_EVENT_KIND_ROLLING_BACK;
    case tern::v1::ROLLOUT_PHASE_ROLLED_BACK: return tern::v1::ROLLOUT_EVENT_KIND_ROLLED_BACK;
    case tern::v1::ROLLOUT_PHASE_ABORTED: return tern::v1::ROLLOUT_EVENT_KIND_ABORTED;
    default: return tern::v1::ROLLOUT_EVENT_KIND_UNSPECIFIED;
  }
}

}  // namespace tern
