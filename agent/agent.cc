#include "agent/agent.h"

#include <spdlog/spdlog.h>

#include "core/status_fmt.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/label_selector.h"
#include "core/version.h"

namespace tern {

Agent::Agent(AgentConfig config, std::string host_id) : config_(std::move(config)), host_id_(std::move(host_id)) {}

Agent::~Agent() { stop(); }

absl::Status Agent::start() {
  std::error_code ec;
  std::filesystem::create_directories(config_.state_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create state dir ", config_.state_dir, ": ",
                                                      ec.message(), " (set state_dir to a writable directory)"));
  }
  link_ = std::make_unique<CoordinatorLink>(
      CoordinatorLink::Options{config_.coordinator, config_.reconnect, config_.heartbeat_interval},
      [this] { return build_hello(); }, [this](const tern::v1::Command& cmd) { handle_command(cmd); });
  link_->start();
  spdlog::info("tern-agent {} started as host {} (labels {}), coordinator {}", kVersion, host_id_,
               format_labels(config_.labels).empty() ? "none" : format_labels(config_.labels), config_.coordinator);
  return absl::OkStatus();
}

void Agent::stop() {
  if (link_) link_->stop();
}

tern::v1::Hello Agent::build_hello() const {
  tern::v1::Hello hello;
  hello.set_host_id(host_id_);
  hello.mutable_labels()->insert(config_.labels.begin(), config_.labels.end());
  hello.set_agent_version(kVersion);
  hello.set_protocol(kProtocolRevision);
  return hello;
}

void Agent::handle_command(const tern::v1::Command& cmd) {
  // No command is implemented by this agent yet: say so rather than stay silent.
  spdlog::warn("command {} ({}) is not supported by this agent version", cmd.command_id(),
               static_cast<int>(cmd.action_case()));
  tern::v1::AgentMessage reply;
  auto* result = reply.mutable_result();
  result->set_command_id(cmd.command_id());
  result->set_outcome(tern::v1::COMMAND_OUTCOME_REFUSED);
  result->set_code(static_cast<int>(grpc::StatusCode::UNIMPLEMENTED));
  result->set_message(absl::StrCat("tern-agent ", kVersion, " does not implement this command"));
  link_->send(reply);
}

}  // namespace tern
