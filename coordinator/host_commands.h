#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>
#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/event_loop.h"
#include "core/metrics.h"
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
// A result or progress event counts only on the stream the command was sent
// on, from the host it was sent to: command ids are easy to guess, and one
// stolen agent key must not finish another host's command. Anything else is
// dropped and counted (tern_agent_results_rejected_total). One for a command
// this host was never sent is logged once per stream, and a stream that
// sends kMaxForeignResults of them is closed. A late or repeated answer to a
// command the host did get (after its timeout, or on a stream that has since
// been replaced) is only dropped.
//
// Not thread-safe: owned by the coordinator's event loop, like the registry
// it reads; every method and every observer callback runs on that thread.
class HostCommands {
 public:
  // How commands reach agent streams, by session id: send() is false when
  // the stream is gone; close() ends it with a status.
  struct Streams {
    std::function<bool(uint64_t session, tern::v1::CoordinatorMessage msg)> send;
    std::function<void(uint64_t session, grpc::Status status)> close;
  };
  static constexpr int kMaxForeignResults = 3;

  HostCommands(EventLoop& loop, const HostRegistry& registry, Streams streams, uint64_t epoch, Millis timeout,
               Metrics& metrics);

  // Sends `cmd` to a connected host. NOT_FOUND for a host the registry does
  // not know, UNAVAILABLE for one without an open stream; the observer is
  // then never called.
  absl::Status send(const std::string& host_id, tern::v1::Command cmd, CommandObserver observer);

  // What arrived on stream `session` from `host_id`: a result ends the
  // command it names, a progress event goes to its observer, if the command
  // was sent there.
  void on_result(uint64_t session, const std::string& host_id, const tern::v1::CommandResult& result);
  void on_progress(uint64_t session, const std::string& host_id, const tern::v1::AgentEvent& event);
  // The stream ended: every command sent on it fails with `why`.
  void fail_session(uint64_t session, const std::string& why);

 private:
  struct Pending {
    std::string host_id;
    uint64_t session = 0;
    CommandObserver observer;
  };
  // Which host each of the last kRemembered commands went to (by sequence
  // number), so that a late answer is told apart from a forged one.
  static constexpr uint64_t kRemembered = 1 << 16;
  bool was_sent_to(uint64_t id, const std::string& host_id) const;

  void time_out(uint64_t id);
  // The pending command `id` if it was sent on `session` to `host_id`;
  // otherwise null, after counting (and maybe closing the stream).
  Pending* accept(uint64_t session, const std::string& host_id, uint64_t id, const char* what);

  EventLoop& loop_;
  const HostRegistry& registry_;
  Streams streams_;
  const uint64_t epoch_;
  const Millis timeout_;
  Metrics::Value& rejected_foreign_;
  Metrics::Value& rejected_late_;
  std::map<uint64_t, Pending> pending_;
  std::vector<std::string> sent_to_;     // kRemembered entries, indexed by sequence % kRemembered
  std::map<uint64_t, int> foreign_;       // by session: results for commands the host never got
  uint64_t seq_ = 0;
};

}  // namespace tern
