#include "agent/confine.h"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"

namespace tern {

absl::StatusOr<RunAs> resolve_run_as(const std::string& user) {
  RunAs as;
  std::vector<char> buf(16384);
  struct passwd pw;
  struct passwd* res = nullptr;
  if (user.empty()) {
    // The agent's own user (root in production), by uid.
    if (getpwuid_r(::geteuid(), &pw, buf.data(), buf.size(), &res) != 0 || res == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("the agent's uid ", ::geteuid(), " has no passwd entry"));
    }
    as.user = pw.pw_name;
  } else {
    as.user = user;
  }
  if (!user.empty() && (getpwnam_r(as.user.c_str(), &pw, buf.data(), buf.size(), &res) != 0 || res == nullptr)) {
    return absl::FailedPreconditionError(absl::StrCat("run-as user \"", as.user,
                                                      "\" does not exist on this host; create it or change the "
                                                      "spec's user"));
  }
  as.uid = pw.pw_uid;
  as.gid = pw.pw_gid;
  as.home = pw.pw_dir ? pw.pw_dir : "/";
  int n = 64;
  as.groups.resize(static_cast<std::size_t>(n));
  if (getgrouplist(as.user.c_str(), as.gid, as.groups.data(), &n) < 0) {
    as.groups.resize(static_cast<std::size_t>(n));
    getgrouplist(as.user.c_str(), as.gid, as.groups.data(), &n);
  }
  as.groups.resize(static_cast<std::size_t>(n));
  std::ifstream last("/proc/sys/kernel/cap_last_cap");
  int cap = 0;
  if (last >> cap && cap > 0 && cap < 64) as.last_cap = cap;
  return as;
}

bool confine_child(const RunAs& as) {
  if (::geteuid() != 0) {
    // An unprivileged agent (a developer's) can only run things as itself.
    if (as.uid != ::geteuid()) {
      errno = EPERM;
      return false;
    }
  } else {
    // The bounding set first, while CAP_SETPCAP is still held.
    for (int cap = 0; cap <= as.last_cap; ++cap) {
      if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return false;
    }
    if (::setgroups(as.groups.size(), as.groups.data()) != 0 || ::setgid(as.gid) != 0 || ::setuid(as.uid) != 0) {
      return false;
    }
  }
  // setuid() to another user cleared the capability sets already; root
  // keeps them, so they are cleared here for both.
  (void)::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &header, data) != 0) return false;
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
}

}  // namespace tern
