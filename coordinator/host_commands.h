#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "coordinator/agent_stream.h"
#include "coordinator/fleet_control.h"
#include "coordinator/host_registry.h"
#include "tern/v1/agent.pb.h"

namespace tern {

// Commands to agents, and the coordinator's side of their outcome. A command
// goes out on the host's current stream with an id and the epoch; its
// observer hears the agent's progress and exactly one outcome: the agent's
// result, or a synthetic failure when the stream ends (UNAVAILABLE) or the
// deadline passes (DEADLINE_EXCEEDED) first.
//
// Not thread-safe: owned by the coordinator's event loop, like the registry
// it reads; every method and every observer callback runs on that thread.
class HostCommands {
 public:
  // The open stream with this session id, or null.
  using SessionLookup = std::function<std::shared_ptr<AgentSession>(uint64_t session_id)>;

  HostCommands(EventLoop& loop, const HostRegistry& registry, SessionLookup session_of, uint64_t epoch,
               Millis timeout)
      : loop_(loop), registry_(registry), session_of_(std::move(session_of)), epoch_(epoch), timeout_(timeout) {}

  // Sends `cmd` to a connected host. NOT_FOUND for a host the registry does
  // not know, UNAVAILABLE for one without an open stream; the observer is
  // then never called.
  absl::Status send(const std::string& host_id, tern::v1::Command cmd, CommandObserver observer);

  // An agent's result: ends the command it names. Results nobody waits for
  // (late, or after a timeout) are dropped.
  void on_result(const std::string& host_id, const tern::v1::CommandResult& result);
  // An agent's step on the way to a result.
  void on_progress(const tern::v1::AgentEvent& event);
  // The stream ended: every command sent on it fails with `why`.
  void fail_session(uint64_t session_id, const std::string& why);

 private:
  struct Pending {
    std::string host_id;
    uint64_t session = 0;
    CommandObserver observer;
  };
  void time_out(uint64_t id);

  EventLoop& loop_;
  const HostRegistry& registry_;
  SessionLookup session_of_;
  const uint64_t epoch_;
  const Millis timeout_;
  std::map<uint64_t, Pending> pending_;
  uint64_t seq_ = 0;
};

}  // namespace tern
