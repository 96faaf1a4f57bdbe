#include "agent/process_launcher.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <algorithm>
#include <chrono>
#include <thread>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/confine.h"

namespace tern {
namespace bp = boost::process;

namespace {

// The fields of /proc/<pid>/stat from field 3 (the state) on; empty if gone.
std::vector<std::string> stat_fields(int64_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!in || !std::getline(in, line)) return {};
  // comm may hold spaces and parentheses: fields resume after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 > line.size()) return {};
  std::istringstream rest(line.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

// Field n (1-based, as proc(5) counts) of stat_fields(), as a number.
std::optional<uint64_t> stat_number(const std::vector<std::string>& fields, std::size_t n) {
  if (fields.size() < n - 2) return std::nullopt;
  try {
    return std::stoull(fields[n - 3]);
  } catch (...) {
    return std::nullopt;
  }
}

bool gone_or_zombie(const std::vector<std::string>& fields) {
  return fields.empty() || fields[0] == "Z" || fields[0] == "X";
}

// The value of `name` in a process's initial environment (/proc/<pid>/environ).
std::optional<std::string> environ_value(int64_t pid, const std::string& name) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/environ"), std::ios::binary);
  const std::string prefix = name + "=";
  for (std::string entry; std::getline(in, entry, '\0');) {
    if (entry.rfind(prefix, 0) == 0) return entry.substr(prefix.size());
  }
  return std::nullopt;
}

}  // namespace

std::optional<uint64_t> process_start_time(int64_t pid) {
  const auto fields = stat_fields(pid);
  if (gone_or_zombie(fields)) return std::nullopt;
  return stat_number(fields, 22);
}

namespace {

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
  return "ended";
}

// The processes whose session (stat field 6) is `sid`: a slot's, without cgroups.
std::vector<int64_t> session_members(int64_t sid) {
  std::vector<int64_t> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const int64_t pid = std::stoll(name);
    const auto fields = stat_fields(pid);
    if (!gone_or_zombie(fields) && stat_number(fields, 6) == static_cast<uint64_t>(sid)) out.push_back(pid);
  }
  return out;
}

class SystemProcessLauncher final : public ProcessLauncher {
 public:
  SystemProcessLauncher(std::shared_ptr<const SlotCgroups> cgroups, std::string placement)
      : cgroups_(std::move(cgroups)), placement_(std::move(placement)) {}

  absl::StatusOr<ProcessHandle> start(const LaunchSpec& spec) override {
    if (spec.argv.empty() || spec.argv[0].empty()) return absl::InvalidArgumentError("empty argv");
    if (spec.limits.any() && (!cgroups_ || spec.cgroup.empty())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the spec sets resource limits (memory_max, cpu_max or tasks_max), but slots on this host run in ",
          placement_, ", which cannot enforce them; run the agent where cgroup v2 is available (cgroup_parent in "
                      "its config) or remove the limits from the spec"));
    }
    auto run_as = resolve_run_as(spec.user);
    if (!run_as.ok()) return run_as.status();
    const RunAs& as = *run_as;
    boost::filesystem::path exe = spec.argv[0];
    if (spec.argv[0].find('/') == std::string::npos) {
      exe = bp::search_path(spec.argv[0]);
      if (exe.empty()) {
        return absl::NotFoundError(absl::StrCat("cannot start ", spec.argv[0], ": not found in PATH"));
      }
    } else if (::access(spec.argv[0].c_str(), X_OK) != 0) {
      return absl::NotFoundError(absl::StrCat("cannot start ", spec.argv[0], ": ", std::strerror(errno)));
    }
    int log_fd = -1;
    if (!spec.log_path.empty()) {
      log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
      if (log_fd < 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("cannot open slot log ", spec.log_path, ": ", std::strerror(errno)));
      }
      (void)::fchown(log_fd, as.uid, as.gid);
    }
    // The child joins its cgroup before it execs (writing "0" to
    // cgroup.procs moves the writer), so nothing it starts is ever outside.
    int procs_fd = -1;
    if (cgroups_ && !spec.cgroup.empty()) {
      if (auto st = cgroups_->prepare(spec.cgroup, spec.limits); !st.ok()) {
        if (log_fd >= 0) ::close(log_fd);
        return st;
      }
      const std::string procs = cgroups_->path(spec.cgroup) + "/cgroup.procs";
      procs_fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
      if (procs_fd < 0) {
        const int err = errno;
        if (log_fd >= 0) ::close(log_fd);
        return absl::FailedPreconditionError(absl::StrCat("cannot open ", procs, ": ", std::strerror(err)));
      }
    }
    bp::environment env;
    for (const auto& [k, v] : spec.env) env[k] = v;
    if (!spec.slot_id.empty()) env["TERN_SLOT_ID"] = spec.slot_id;
    std::vector<std::string> args(spec.argv.begin() + 1, spec.argv.end());
    const std::string dir = spec.working_dir.empty() ? "/" : spec.working_dir;

    // Runs in the forked child before exec: only async-signal-safe calls.
    auto setup = [log_fd, procs_fd, &as](auto& /*executor*/) {
      if (procs_fd >= 0 && ::write(procs_fd, "0", 1) != 1) ::_exit(125);
      ::setsid();
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the agent blocks its stop signals
      ::signal(SIGPIPE, SIG_DFL);
      if (log_fd >= 0) {
        ::dup2(log_fd, STDOUT_FILENO);
        ::dup2(log_fd, STDERR_FILENO);
      }
      // Nothing else of the agent's goes across exec: Asio's and libcurl's
      // sockets are not all close-on-exec, and a slot holding the agent's
      // /metrics listener would keep a restarted agent from binding it.
      // (Marked, not closed: Boost.Process reports a failed exec through a
      // close-on-exec pipe of its own.)
      ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
      if (!confine_child(as)) ::_exit(126);
    };
    std::error_code ec;
    int64_t pid = 0;
    try {
      bp::child child(bp::exe = exe, bp::args = args, bp::env = env, bp::start_dir = dir, bp::std_in < bp::null,
                      bp::extend::on_exec_setup = setup, ec);
      if (!ec) {
        pid = child.id();
        child.detach();  // reaped by poll(); the child object must not kill it
      }
    } catch (const std::exception& e) {
      ec = std::make_error_code(std::errc::io_error);
      if (log_fd >= 0) ::close(log_fd);
      if (procs_fd >= 0) ::close(procs_fd);
      return absl::InternalError(absl::StrCat("cannot start ", spec.argv[0], ": ", e.what()));
    }
    if (log_fd >= 0) ::close(log_fd);
    if (procs_fd >= 0) ::close(procs_fd);
    if (ec) return absl::InternalError(absl::StrCat("cannot start ", spec.argv[0], ": ", ec.message()));
    ProcessHandle h{pid, process_start_time(pid).value_or(0)};
    {
      std::lock_guard lock(mu_);
      children_.insert(pid);
    }
    return h;
  }

  std::optional<ExitInfo> poll(const ProcessHandle& h) override {
    if (h.pid <= 0) return ExitInfo{"never started", false};
    bool ours;
    {
      std::lock_guard lock(mu_);
      ours = children_.count(h.pid) > 0;
    }
    if (ours) {
      int status = 0;
      pid_t r = ::waitpid(static_cast<pid_t>(h.pid), &status, WNOHANG);
      if (r == 0) return std::nullopt;
      std::lock_guard lock(mu_);
      children_.erase(h.pid);
      if (r == h.pid) return ExitInfo{describe_wait_status(status), WIFEXITED(status) && WEXITSTATUS(status) == 0};
      return ExitInfo{"gone", false};
    }
    auto st = process_start_time(h.pid);
    if (st && (h.start_time == 0 || *st == h.start_time)) return std::nullopt;
    return ExitInfo{"gone (it was adopted after an agent restart; its exit status went to init)", false};
  }

  void signal_group(const ProcessHandle& h, int sig) override {
    if (h.pid <= 0 || poll(h)) return;
    // The slot leads its own group (setsid); fall back to the pid alone if
    // it left it.
    if (::kill(-static_cast<pid_t>(h.pid), sig) != 0) ::kill(static_cast<pid_t>(h.pid), sig);
  }

  bool recover(const ProcessHandle& h) override {
    if (h.pid <= 0) return false;
    auto st = process_start_time(h.pid);
    return st.has_value() && *st == h.start_time;
  }

  std::vector<Orphan> find_orphans(const std::string& scope, const std::vector<ProcessHandle>& known) override {
    std::vector<Orphan> out;
    if (scope.empty()) return out;
    auto is_known = [&](int64_t pid) {
      return std::any_of(known.begin(), known.end(), [&](const ProcessHandle& h) { return h.pid == pid; });
    };
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string name = e.path().filename().string();
      if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
      const int64_t pid = std::stoll(name);
      auto id = environ_value(pid, "TERN_SLOT_ID");
      if (!id || (*id != scope && id->rfind(scope + "/", 0) != 0)) continue;
      const auto fields = stat_fields(pid);
      if (gone_or_zombie(fields) || stat_number(fields, 5) != static_cast<uint64_t>(pid)) continue;  // pgrp
      const auto start_time = stat_number(fields, 22);
      if (!start_time) continue;
      const ProcessHandle h{pid, *start_time};
      if (std::find(known.begin(), known.end(), h) != known.end()) continue;
      // A known slot's own child that made a group of its own is still the slot's.
      bool under_known = false;
      for (int64_t p = pid, hops = 0; p > 1 && hops < 64 && !under_known; ++hops) {
        const auto parent = stat_number(stat_fields(p), 4);
        if (!parent) break;
        p = static_cast<int64_t>(*parent);
        under_known = is_known(p);
      }
      if (!under_known) out.push_back(Orphan{h, *id});
    }
    return out;
  }

 std::string placement() const override { return placement_; }

  void signal_slot(const ProcessHandle& h, const std::string& cgroup, int sig) override {
    signal_group(h, sig);
    if (in_cgroup(cgroup)) cgroups_->signal(cgroup, sig);
  }

  bool slot_ended(const ProcessHandle& h, const std::string& cgroup) override {
    if (h.pid > 0 && !poll(h)) return false;
    return !in_cgroup(cgroup) || !cgroups_->populated(cgroup);
  }

  void kill_slot(const ProcessHandle& h, const std::string& cgroup) override {
    signal_group(h, SIGKILL);
    if (in_cgroup(cgroup)) cgroups_->kill(cgroup);
  }

  int kill_leftovers(const std::string& cgroup) override {
    if (!in_cgroup(cgroup)) return 0;
    const int n = static_cast<int>(cgroups_->pids(cgroup).size());
    if (n == 0) return 0;
    cgroups_->kill(cgroup);
    for (int i = 0; i < 500 && cgroups_->populated(cgroup); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return n;
  }

  void release(const std::string& cgroup) override {
    if (in_cgroup(cgroup)) cgroups_->remove(cgroup);
  }

  absl::StatusOr<int> adopt(const ProcessHandle& h, const std::string& cgroup, const CgroupLimits& limits) override {
    if (!in_cgroup(cgroup) || h.pid <= 0) return 0;
    if (auto st = cgroups_->prepare(cgroup, limits); !st.ok()) return st;
    if (cgroups_->contains(cgroup, h.pid)) return 0;
    int moved = 0;
    for (int64_t pid : session_members(h.pid)) {
      if (cgroups_->move(cgroup, pid).ok()) ++moved;
    }
    return moved;
  }

  std::optional<ResourceUsage> usage(const ProcessHandle& h, const std::string& cgroup) override {
    if (in_cgroup(cgroup)) return cgroups_->usage(cgroup);
    if (h.pid <= 0) return std::nullopt;
    ResourceUsage u;
    const uint64_t tick_usec = 1'000'000 / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
    for (int64_t pid : session_members(h.pid)) {
      const auto fields = stat_fields(pid);
      u.cpu_usec += (stat_number(fields, 14).value_or(0) + stat_number(fields, 15).value_or(0)) * tick_usec;
      u.memory_bytes += process_rss_bytes(pid);
      ++u.processes;
    }
    if (u.processes == 0) return std::nullopt;
    return u;
  }

  std::vector<std::string> slot_cgroups() override {
    if (!cgroups_) return {};
    return cgroups_->children();
  }

 private:
  bool in_cgroup(const std::string& cgroup) const { return cgroups_ && !cgroup.empty(); }

  const std::shared_ptr<const SlotCgroups> cgroups_;
  const std::string placement_;
  std::mutex mu_;
  std::set<int64_t> children_;
};

}  // namespace

std::unique_ptr<ProcessLauncher> make_system_process_launcher(std::shared_ptr<const SlotCgroups> cgroups,
                                                              std::string placement) {
  return std::make_unique<SystemProcessLauncher>(std::move(cgroups), std::move(placement));
}

}  // namespace tern
