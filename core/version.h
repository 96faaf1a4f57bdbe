#pragma once

namespace tern {

// Set by CMake from the project version.
inline constexpr const char* kVersion = TERN_VERSION;
// Revision of the agent <-> coordinator protocol spoken over AgentService.Connect.
inline constexpr unsigned kProtocolRevision = 1;

}  // namespace tern
