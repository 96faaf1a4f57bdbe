#include "tests/integration/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <signal.h>

#include <atomic>
#include <sstream>
#include <thread>

#include "tests/integration/harness.h"

namespace tern::testing {

std::string netns_unavailable_reason() {
  if (::geteuid() != 0) return "needs root to create network namespaces (CI runs as root)";
  if (::access("/usr/sbin/ip", X_OK) != 0 && ::access("/sbin/ip", X_OK) != 0 && ::access("/bin/ip", X_OK) != 0) {
    return "needs iproute2 (`ip`)";
  }
  return "";
}

NetNs::NetNs() {
  static std::atomic<int> counter{0};
  name_ = "tern-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  auto r = run_cmd({"ip", "netns", "add", name_});
  if (r.code != 0) {
    error_ = "ip netns add " + name_ + ": " + r.err;
    return;
  }
  r = run_cmd({"ip", "-n", name_, "link", "set", "lo", "up"});
  if (r.code != 0) {
    error_ = "ip link set lo up: " + r.err;
    return;
  }
  ok_ = true;
}

NetNs::~NetNs() {
  // Processes still inside would keep the namespace alive; the tests kill
  // theirs first, this removes the name (and with it the last reference).
  auto pids = run_cmd({"ip", "netns", "pids", name_});
  std::istringstream in(pids.out);
  for (pid_t pid; in >> pid;) ::kill(pid, SIGKILL);
  run_cmd({"ip", "netns", "del", name_});
}

std::vector<std::string> NetNs::exec_prefix() const { return {"ip", "netns", "exec", name_}; }

bool NetNs::enter() const {
  int fd = ::open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::setns(fd, CLONE_NEWNET) == 0;
  ::close(fd);
  return ok;
}

void NetNs::run(const std::function<void()>& fn) const {
  std::thread t([&] {
    if (enter()) fn();
  });
  t.join();
}

}  // namespace tern::testing
