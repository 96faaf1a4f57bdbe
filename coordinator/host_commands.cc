#include "coordinator/host_commands.h"

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/duration.h"

namespace tern {
namespace {

tern::v1::CommandResult failed(uint64_t id, grpc::StatusCode code, std::string why) {
  tern::v1::CommandResult r;
  r.set_command_id(id);
  r.set_outcome(tern::v1::COMMAND_OUTCOME_FAILED);
  r.set_code(static_cast<int>(code));
  r.set_message(std::move(why));
  return r;
}

constexpr const char* kRejectedHelp =
    "Command results and progress from agents that were dropped: for a command not sent on that stream to "
    "that host (reason=\"foreign\"), or already answered or timed out (reason=\"late\").";

}  // namespace

HostCommands::HostCommands(EventLoop& loop, const HostRegistry& registry, Streams streams, uint64_t epoch,
                           Millis timeout, Metrics& metrics)
    : loop_(loop),
      registry_(registry),
      streams_(std::move(streams)),
      epoch_(epoch),
      timeout_(timeout),
      rejected_foreign_(metrics.counter("tern_agent_results_rejected_total", kRejectedHelp, "reason=\"foreign\"")),
      rejected_late_(metrics.counter("tern_agent_results_rejected_total", kRejectedHelp, "reason=\"late\"")),
      sent_to_(kRemembered) {}

bool HostCommands::was_sent_to(uint64_t id, const std::string& host_id) const {
  const uint64_t seq = id & 0xffffffffu;
  if ((id >> 32) != epoch_ || seq == 0 || seq > seq_ || seq_ - seq >= kRemembered) return false;
  return sent_to_[seq % kRemembered] == host_id;
}

absl::Status HostCommands::send(const std::string& host_id, tern::v1::Command cmd, CommandObserver observer) {
  const auto* entry = registry_.find(host_id);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("no host \"", host_id, "\" in the registry; `ternctl hosts` lists them"));
  }
  const auto unavailable = [&] {
    return absl::UnavailableError(absl::StrCat("host ", host_id, " is ", host_state_name(entry->record.state),
                                               "; its agent must be running and connected"));
  };
  if (entry->session == 0) return unavailable();
  // Ids rise across restarts because the epoch does.
  const uint64_t id = (epoch_ << 32) | ++seq_;
  cmd.set_command_id(id);
  cmd.set_epoch(epoch_);
  *cmd.mutable_deadline() = google::protobuf::util::TimeUtil::MillisecondsToDuration(timeout_.count());
  tern::v1::CoordinatorMessage msg;
  *msg.mutable_command() = std::move(cmd);
  if (!streams_.send(entry->session, std::move(msg))) {
    return absl::UnavailableError(absl::StrCat("host ", host_id, " disconnected just now; try again"));
  }
  pending_[id] = Pending{host_id, entry->session, std::move(observer)};
  sent_to_[seq_ % kRemembered] = host_id;
  loop_.post_after(timeout_, [this, id] { time_out(id); });
  return absl::OkStatus();
}

void HostCommands::time_out(uint64_t id) {
  auto p = pending_.find(id);
  if (p == pending_.end()) return;
  auto obs = std::move(p->second.observer);
  const std::string host = p->second.host_id;
  pending_.erase(p);
  if (obs.done) {
    obs.done(failed(id, grpc::StatusCode::DEADLINE_EXCEEDED,
                    absl::StrCat("no result from ", host, " within ", format_duration(timeout_),
                                 "; check `ternctl host status ", host, "`")));
  }
}

void HostCommands::fail_session(uint64_t session, const std::string& why) {
  foreign_.erase(session);
  std::vector<std::pair<uint64_t, CommandObserver>> gone;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.session == session) {
      gone.emplace_back(it->first, std::move(it->second.observer));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  // Observers run after the table is consistent: they may send new commands.
  for (auto& [id, obs] : gone) {
    if (obs.done) obs.done(failed(id, grpc::StatusCode::UNAVAILABLE, why));
  }
}

HostCommands::Pending* HostCommands::accept(uint64_t session, const std::string& host_id, uint64_t id,
                                            const char* what) {
  auto it = pending_.find(id);
  if (it != pending_.end() && it->second.session == session && it->second.host_id == host_id) return &it->second;
  if (was_sent_to(id, host_id)) {
    // The host's own, answered already, timed out, or sent on a stream it
    // has since replaced: the agent is slower than we waited.
    rejected_late_.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("host {}: {} for command {}, which is no longer waited for", host_id, what, id);
    return nullptr;
  }
  rejected_foreign_.fetch_add(1, std::memory_order_relaxed);
  int& foreign = foreign_[session];
  if (++foreign == 1) {
    spdlog::warn("host {}: dropped a {} for command {}, which was not sent to this host on this stream", host_id,
                 what, id);
  }
  if (foreign == kMaxForeignResults) {
    spdlog::warn("host {}: closing its stream after {} results for commands it never got", host_id, foreign);
    streams_.close(session, grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                         "results for commands this host was never sent; reconnect"));
  }
  return nullptr;
}

void HostCommands::on_result(uint64_t session, const std::string& host_id, const tern::v1::CommandResult& result) {
  Pending* p = accept(session, host_id, result.command_id(), "result");
  if (p == nullptr) return;
  auto obs = std::move(p->observer);
  pending_.erase(result.command_id());
  if (obs.done) obs.done(result);
}

void HostCommands::on_progress(uint64_t session, const std::string& host_id, const tern::v1::AgentEvent& event) {
  if (event.command_id() == 0) return;
  Pending* p = accept(session, host_id, event.command_id(), "progress event");
  if (p != nullptr && p->observer.progress) p->observer.progress(event);
}

}  // namespace tern
