#pragma once

// What every process a service spec makes the agent start (a slot, an exec
// health probe) runs as: the spec's user and that user's groups, no
// capabilities (none effective, permitted, inheritable or ambient, and an
// empty bounding set, for root too), no_new_privs (so a setuid binary cannot
// win them back), its own process group, and only the environment it is
// given. The agent itself runs as root with its capabilities; none of that
// reaches what a spec names.

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tern {

struct RunAs {
  std::string user;  // as the spec names it; "root" when it names none
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::string home;
  // The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap).
  int last_cap = 40;
};

// Looks `user` up ("": the agent's own user, root in production).
// FAILED_PRECONDITION naming the user when the host has no such user.
absl::StatusOr<RunAs> resolve_run_as(const std::string& user);

// For a forked child, before exec: async-signal-safe calls only. Drops the
// bounding set, switches to the groups, gid and uid, clears every capability
// and sets no_new_privs. false (errno set) when any step fails: the caller
// must then exit without exec'ing.
bool confine_child(const RunAs& as);

}  // namespace tern
