#include "coordinator/host_commands.h"

#include <google/protobuf/util/time_util.h>
#include <spdlog/spdlog.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status_fmt.h"
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

}  // namespace

absl::Status HostCommands::send(const std::string& host_id, tern::v1::Command cmd, CommandObserver observer) {
  const auto* entry = registry_.find(host_id);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("no host \"", host_id, "\" in the registry; `ternctl hosts` lists them"));
  }
  auto session = entry->session != 0 ? session_of_(entry->session) : nullptr;
  if (session == nullptr) {
    return absl::UnavailableError(absl::StrCat("host ", host_id, " is ", host_state_name(entry->record.state),
                                               "; its agent must be running and connected"));
  }
  // Ids rise across restarts because the epoch does.
  const uint64_t id = (epoch_ << 32) | ++seq_;
  cmd.set_command_id(id);
  cmd.set_epoch(epoch_);
  *cmd.mutable_deadline() = google::protobuf::util::TimeUtil::MillisecondsToDuration(timeout_.count());
  tern::v1::CoordinatorMessage msg;
  *msg.mutable_command() = std::move(cmd);
  if (!session->send(std::move(msg))) {
    return absl::UnavailableError(absl::StrCat("host ", host_id, " disconnected just now; try again"));
  }
  pending_[id] = Pending{host_id, entry->session, std::move(observer)};
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

void HostCommands::fail_session(uint64_t session_id, const std::string& why) {
  std::vector<std::pair<uint64_t, CommandObserver>> gone;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.session == session_id) {
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

void HostCommands::on_result(const std::string& host_id, const tern::v1::CommandResult& result) {
  auto it = pending_.find(result.command_id());
  if (it == pending_.end()) {
    spdlog::debug("host {}: result for command {} nobody waits for: {}", host_id, result.command_id(), result.message());
    return;
  }
  auto obs = std::move(it->second.observer);
  pending_.erase(it);
  if (obs.done) obs.done(result);
}

void HostCommands::on_progress(const tern::v1::AgentEvent& event) {
  if (event.command_id() == 0) return;
  auto it = pending_.find(event.command_id());
  if (it != pending_.end() && it->second.observer.progress) it->second.observer.progress(event);
}

}  // namespace tern
