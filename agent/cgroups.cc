#include "agent/cgroups.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace tern {
namespace {

namespace fs = std::filesystem;

// Where a cgroup v2 host (Debian 12's default) mounts its one hierarchy.
constexpr char kUnifiedMount[] = "/sys/fs/cgroup";

// The controllers a slot's limits and usage need.
constexpr const char* kWanted[] = {"memory", "cpu", "pids"};

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes `value` in one write(2), as cgroupfs wants; the errno on failure.
int write_file(const std::string& path, const std::string& value) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const ssize_t n = ::write(fd, value.data(), value.size());
  const int err = n < 0 ? errno : 0;
  ::close(fd);
  return err;
}

std::set<std::string> words_of(const std::string& path) {
  std::set<std::string> out;
  if (auto text = read_file(path)) {
    for (absl::string_view w : absl::StrSplit(*text, absl::ByAnyChar(" \n"), absl::SkipEmpty())) out.emplace(w);
  }
  return out;
}

// mountinfo escapes blanks in paths as octal (\040).
std::string unescape(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool octal = s[i] == '\\' && i + 3 < s.size() &&
                       std::all_of(s.begin() + i + 1, s.begin() + i + 4, [](char d) { return d >= '0' && d <= '7'; });
    if (octal) {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

struct Mounts {
  std::vector<std::string> v2;  // cgroup2 mount points
  bool v1 = false;              // any cgroup v1 hierarchy
};

Mounts read_mounts(const std::string& mountinfo) {
  Mounts m;
  std::ifstream in(mountinfo);
  for (std::string line; std::getline(in, line);) {
    // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::vector<absl::string_view> head = absl::StrSplit(absl::string_view(line).substr(0, dash), ' ');
    std::vector<absl::string_view> tail = absl::StrSplit(absl::string_view(line).substr(dash + 3), ' ');
    if (head.size() < 5 || tail.empty()) continue;
    if (tail[0] == "cgroup2") m.v2.push_back(unescape(head[4]));
    if (tail[0] == "cgroup") m.v1 = true;
  }
  return m;
}

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

uint64_t process_rss_bytes(int64_t pid) {
  auto text = read_file(absl::StrCat("/proc/", pid, "/statm"));
  if (!text) return 0;
  std::vector<absl::string_view> f = absl::StrSplit(*text, ' ', absl::SkipEmpty());
  uint64_t pages = 0;
  if (f.size() < 2 || !absl::SimpleAtoi(f[1], &pages)) return 0;
  return pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

absl::StatusOr<SlotCgroups::Choice> SlotCgroups::choose(const std::string& setting, const std::string& mountinfo) {
  Choice c;
  if (setting == "off") {
    c.placement = "process groups (cgroup_parent is off in the agent's config)";
    return c;
  }
  const Mounts mounts = read_mounts(mountinfo);
  if (setting.empty() || setting == "auto") {
    if (mounts.v2.empty()) {
      c.placement = "process groups (this host has no cgroup v2 hierarchy mounted)";
      return c;
    }
    if (mounts.v1) {
      c.placement = absl::StrCat(
          "process groups (this host mounts cgroup v1 controllers beside cgroup v2, a hybrid hierarchy; set "
          "cgroup_parent to a directory under ",
          mounts.v2.front(), " for slots in cgroups without limits)");
      return c;
    }
    // Only the host's own unified hierarchy: another cgroup2 mount (a
    // container runtime's, a test's) is nobody's choice for slots.
    if (std::find(mounts.v2.begin(), mounts.v2.end(), kUnifiedMount) == mounts.v2.end()) {
      c.placement = absl::StrCat("process groups (cgroup v2 is not mounted at ", kUnifiedMount,
                                 "; set cgroup_parent to a directory under ", mounts.v2.front(),
                                 " to use that hierarchy)");
      return c;
    }
    const std::string parent = std::string(kUnifiedMount) + "/tern";
    auto tree = open(kUnifiedMount, parent);
    if (!tree.ok()) {
      c.placement = absl::StrCat("process groups (", tree.status().message(), ")");
      return c;
    }
    c.tree = *std::move(tree);
    c.placement = c.tree->describe();
    return c;
  }
  if (setting.front() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("key \"cgroup_parent\": \"", setting, "\" is not auto, off or an absolute path"));
  }
  const std::string parent = fs::path(setting).lexically_normal().string();
  std::string mount;
  for (const auto& m : mounts.v2) {
    if (parent.rfind(m + "/", 0) == 0 && m.size() > mount.size()) mount = m;
  }
  if (mount.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cgroup_parent ", parent, " is not inside a cgroup v2 mount (",
        mounts.v2.empty() ? "this host has none" : absl::StrCat("this host has ", absl::StrJoin(mounts.v2, ", ")),
        "); give a directory under one, auto or off"));
  }
  auto tree = open(mount, parent);
  if (!tree.ok()) return tree.status();
  c.tree = *std::move(tree);
  c.placement = c.tree->describe();
  return c;
}

absl::StatusOr<std::unique_ptr<SlotCgroups>> SlotCgroups::open(const std::string& mount, const std::string& parent) {
  if (parent.size() <= mount.size() + 1 || parent.rfind(mount + "/", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cgroup_parent ", parent, " must be a directory below ", mount,
                                                   ", not the hierarchy's root"));
  }
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("cannot make cgroup ", parent, ": ", ec.message()));
  if (::access((parent + "/cgroup.procs").c_str(), W_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write to cgroup ", parent, ": ", errno_text(errno),
                     " (the agent needs root and a writable /sys/fs/cgroup: no ProtectControlGroups= in its unit)"));
  }
  // Each level must pass a controller down to the next: from the mount to
  // the parent, then to the slots below it.
  std::vector<std::string> levels{mount};
  const std::string rel = parent.substr(mount.size() + 1);
  for (absl::string_view part : absl::StrSplit(rel, '/', absl::SkipEmpty())) {
    levels.push_back(absl::StrCat(levels.back(), "/", part));
  }
  for (const std::string& dir : levels) {
    const auto offered = words_of(dir + "/cgroup.controllers");
    const auto enabled = words_of(dir + "/cgroup.subtree_control");
    for (const char* want : kWanted) {
      // Best effort: a level that holds processes of its own (the no-internal-
      // process rule) refuses; the controller is then missing below it.
      if (offered.count(want) && !enabled.count(want)) (void)write_file(dir + "/cgroup.subtree_control", absl::StrCat("+", want));
    }
  }
  std::set<std::string> have;
  const auto enabled = words_of(parent + "/cgroup.subtree_control");
  for (const char* want : kWanted) {
    if (enabled.count(want)) have.insert(want);
  }
  return std::unique_ptr<SlotCgroups>(new SlotCgroups(mount, parent, std::move(have)));
}

std::string SlotCgroups::describe() const {
  std::vector<std::string> have, missing;
  for (const char* want : kWanted) (controllers_.count(want) ? have : missing).push_back(want);
  if (missing.empty()) return absl::StrCat("cgroup v2 at ", parent_, " (", absl::StrJoin(have, ", "), ")");
  return absl::StrCat("cgroup v2 at ", parent_, " (", have.empty() ? "" : absl::StrCat(absl::StrJoin(have, ", "), "; "),
                      "no ", absl::StrJoin(missing, ", "), " controller",
                      missing.size() > 1 ? "s" : "", ": limits on ", missing.size() > 1 ? "them" : "it",
                      " cannot be set)");
}

std::string SlotCgroups::slot_name(const std::string& service, const std::string& color) {
  return absl::StrCat(service, ".", color);
}

absl::Status SlotCgroups::prepare(const std::string& name, const CgroupLimits& limits) const {
  const std::string dir = path(name);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat("cannot make the slot's cgroup ", dir, ": ", errno_text(errno)));
  }
  struct Limit {
    const char* key;         // the spec's key
    const char* controller;  // what enforces it
    const char* file;
    bool set;
    std::string value;
  };
  const Limit all[] = {
      {"memory_max", "memory", "memory.max", limits.memory_max > 0,
       limits.memory_max > 0 ? std::to_string(limits.memory_max) : "max"},
      {"cpu_max", "cpu", "cpu.max", limits.cpu_quota_us > 0,
       absl::StrCat(limits.cpu_quota_us > 0 ? std::to_string(limits.cpu_quota_us) : "max", " 100000")},
      {"tasks_max", "pids", "pids.max", limits.tasks_max > 0,
       limits.tasks_max > 0 ? std::to_string(limits.tasks_max) : "max"},
  };
  for (const Limit& l : all) {
    if (!controllers_.count(l.controller)) {
      if (!l.set) continue;
      return absl::FailedPreconditionError(absl::StrCat(
          "the spec sets ", l.key, ", but slots on this host run in ", describe(), ", without the ", l.controller,
          " controller to enforce it; enable it for ", parent_, " (cgroup.subtree_control) or remove ", l.key,
          " from the spec"));
    }
    if (int err = write_file(absl::StrCat(dir, "/", l.file), l.value); err != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot set ", l.file, " of ", dir, " to ", l.value, " (", l.key, "): ", errno_text(err)));
    }
  }
  return absl::OkStatus();
}

std::vector<int64_t> SlotCgroups::pids(const std::string& name) const {
  std::vector<int64_t> out;
  auto text = read_file(path(name) + "/cgroup.procs");
  if (!text) return out;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    int64_t pid = 0;
    if (absl::SimpleAtoi(line, &pid) && pid > 0) out.push_back(pid);
  }
  return out;
}

bool SlotCgroups::contains(const std::string& name, int64_t pid) const {
  auto text = read_file(absl::StrCat("/proc/", pid, "/cgroup"));
  if (!text) return false;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "0::")) return mount_ + std::string(line) == path(name);
  }
  return false;
}

absl::Status SlotCgroups::move(const std::string& name, int64_t pid) const {
  if (int err = write_file(path(name) + "/cgroup.procs", std::to_string(pid)); err != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot move process ", pid, " into cgroup ", path(name), ": ", errno_text(err)));
  }
  return absl::OkStatus();
}

void SlotCgroups::signal(const std::string& name, int sig) const {
  for (int64_t pid : pids(name)) ::kill(static_cast<pid_t>(pid), sig);
}

void SlotCgroups::kill(const std::string& name) const {
  if (write_file(path(name) + "/cgroup.kill", "1") == 0) return;
  // Before Linux 5.14: kill what is there until nothing is (a fork racing
  // the kill lands in the cgroup and is found on the next round).
  for (int round = 0; round < 100; ++round) {
    const auto left = pids(name);
    if (left.empty()) return;
    for (int64_t pid : left) ::kill(static_cast<pid_t>(pid), SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void SlotCgroups::remove(const std::string& name) const { (void)::rmdir(path(name).c_str()); }

std::optional<ResourceUsage> SlotCgroups::usage(const std::string& name) const {
  const std::string dir = path(name);
  auto stat = read_file(dir + "/cpu.stat");
  if (!stat) return std::nullopt;
  ResourceUsage u;
  for (absl::string_view line : absl::StrSplit(*stat, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "usage_usec ")) (void)absl::SimpleAtoi(line, &u.cpu_usec);
  }
  const auto members = pids(name);
  u.processes = static_cast<uint32_t>(members.size());
  if (auto current = read_file(dir + "/memory.current")) {
    (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(*current), &u.memory_bytes);
  } else {
    for (int64_t pid : members) u.memory_bytes += process_rss_bytes(pid);
  }
  return u;
}

bool SlotCgroups::is_slot_name(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0 || dot > 32) return false;
  const std::string color = name.substr(dot + 1);
  if (color != "blue" && color != "green") return false;
  return std::all_of(name.begin(), name.begin() + static_cast<std::ptrdiff_t>(dot), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

std::vector<std::string> SlotCgroups::children() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent_, ec)) {
    std::string name = e.path().filename().string();
    if (e.is_directory(ec) && is_slot_name(name)) out.push_back(std::move(name));
  }
  return out;
}

}  // namespace tern
