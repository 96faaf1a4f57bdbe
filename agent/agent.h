#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "agent/config.h"
#include "agent/coordinator_link.h"

namespace tern {

// The agent process minus flag parsing: identity, the coordinator link and
// (as they land) the slot supervisors and port mapper.
class Agent {
 public:
  Agent(AgentConfig config, std::string host_id);
  ~Agent();

  absl::Status start();
  void stop();
  const CoordinatorLink& link() const { return *link_; }

 private:
  tern::v1::Hello build_hello() const;
  void handle_command(const tern::v1::Command& cmd);

  AgentConfig config_;
  std::string host_id_;
  std::unique_ptr<CoordinatorLink> link_;
};

}  // namespace tern
