#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "tern/v1/agent_state.pb.h"

namespace tern {

// The agent's intended state on disk: <dir>/agent-state.json, replaced
// atomically (write temp, fsync, rename, fsync dir) so a crash at any point
// leaves either the old or the new file, never a torn one. Not thread-safe.
class StateStore {
 public:
  explicit StateStore(std::string dir);

  // An empty state when the file does not exist yet; an error when it exists
  // but cannot be read or parsed (the agent then refuses to start rather than
  // forget what it runs).
  absl::StatusOr<tern::v1::AgentState> load() const;
  absl::Status save(const tern::v1::AgentState& state);
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

}  // namespace tern
