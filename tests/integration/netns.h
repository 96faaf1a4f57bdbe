#pragma once

// Network namespaces for tests that change the host's packet path: each test
// gets its own namespace (loopback up), created by the test and always
// removed, so real nftables / iptables rules never touch the machine.

#include <functional>
#include <string>
#include <vector>

namespace tern::testing {

class NetNs {
 public:
  // Creates "tern-test-<pid>-<n>"; check ok() (needs root).
  NetNs();
  ~NetNs();
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const std::string& name() const { return name_; }
  // argv prefix that runs a program inside: {"ip", "netns", "exec", name}.
  std::vector<std::string> exec_prefix() const;
  // Runs `fn` on a thread that has joined the namespace, and waits for it.
  void run(const std::function<void()>& fn) const;
  // Joins the calling thread to the namespace (for long-lived worker threads).
  bool enter() const;

 private:
  std::string name_;
  bool ok_ = false;
  std::string error_;
};

// Why namespaced tests cannot run here, or empty when they can.
std::string netns_unavailable_reason();

}  // namespace tern::testing
