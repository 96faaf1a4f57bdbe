#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tern/v1/admin.pb.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/common.pb.h"
#include "tern/v1/rollout.pb.h"

namespace tern {

// The one place where each enum that crosses a process boundary becomes the
// word people read: in logs, tables, errors, metrics labels and the
// journal. Every function is total: a value it does not know (a newer peer's)
// gets "unknown" rather than a crash.
const char* word(tern::v1::SlotColor c);          // "blue", "green"
const char* word(tern::v1::SlotPhase p);          // "healthy", "crashed", ...
const char* word(tern::v1::HostState s);          // "connected", "unreachable", ...
const char* word(tern::v1::Role r);               // "viewer", "operator", "admin", "agent"
const char* word(tern::v1::RolloutPhase p);       // "running", "rolling back", ...
const char* word(tern::v1::WaveStep s);           // "baking", "awaiting approval", ...
const char* word(tern::v1::HostRolloutState s);   // "on new", "agent gone", ...
const char* word(tern::v1::RolloutEventKind k);   // "wave_started", "rolling back", ...
const char* word(tern::v1::AgentEventKind k);     // "slot_crashed", "progress", ...

// The inverses, for words read back from storage or from older peers.
std::optional<tern::v1::RolloutEventKind> rollout_event_kind(std::string_view word);
std::optional<tern::v1::AgentEventKind> agent_event_kind(std::string_view word);
std::optional<tern::v1::Role> role(std::string_view word);

// An agent event of `kind`, with its word filled in too, which is all that
// coordinators from before AgentEventKind read.
tern::v1::AgentEvent agent_event(tern::v1::AgentEventKind kind, const std::string& service,
                                 const std::string& message);

// The rollout event a phase change raises.
tern::v1::RolloutEventKind entered(tern::v1::RolloutPhase p);

// A traffic weight as the agent applies it: the share of new connections,
// in percent, that goes to the slot. 0 means "unset", which is all of them.
// Validating the range (1-100) is the caller's.
inline uint32_t effective_weight(uint32_t weight) { return weight == 0 ? 100 : weight; }

}  // namespace tern
