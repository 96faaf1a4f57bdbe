#pragma once

// Deterministic stand-ins for the host pieces the agent's logic takes through
// interfaces: processes, probes, the port mapping, artifact bytes, and time
// with the host's sockets. One copy for every agent test.

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agent/artifact_stager.h"
#include "agent/health.h"
#include "agent/host_os.h"
#include "agent/port_mapper.h"
#include "agent/process_launcher.h"
#include "core/clock.h"

namespace tern::testing {

// Processes that live until signalled (SIGTERM or SIGKILL) or crash()ed; pids
// from 100 up, start time 1. A pid in `ignore_sigterm` only dies of SIGKILL.
// find_orphans() reports the live ones started with a slot_id.
class FakeLauncher final : public ProcessLauncher {
 public:
  absl::StatusOr<ProcessHandle> start(const LaunchSpec& spec) override {
    std::lock_guard lock(mu);
    ProcessHandle h{next_pid++, 1};
    started.push_back(spec);
    if (auto it = writes.find(spec.argv.empty() ? "" : spec.argv[0]); it != writes.end() && !spec.log_path.empty()) {
      std::ofstream(spec.log_path, std::ios::app) << it->second;
    }
    // A command that finishes at once, as told.
    if (auto it = finishes.find(spec.argv.empty() ? "" : spec.argv[0]); it != finishes.end()) {
      if (it->second) clean_exits.insert(h.pid);
      return h;
    }
    alive.insert(h.pid);
    if (!spec.slot_id.empty()) slot_ids[h.pid] = spec.slot_id;
    return h;
  }
  std::optional<ExitInfo> poll(const ProcessHandle& h) override {
    std::lock_guard lock(mu);
    if (alive.count(h.pid)) return std::nullopt;
    if (clean_exits.count(h.pid)) return ExitInfo{"exited with status 0", true};
    return ExitInfo{"exited with status 1", false};
  }
  void signal_group(const ProcessHandle& h, int sig) override {
    std::lock_guard lock(mu);
    signals.emplace_back(h.pid, sig);
    // TERM, INT and QUIT end a process that does not ignore them; others
    // (a drain signal) do not.
    const bool polite_stop = sig == SIGTERM || sig == SIGINT || sig == SIGQUIT;
    if (sig == SIGKILL || (polite_stop && !ignore_sigterm.count(h.pid))) alive.erase(h.pid);
  }
  bool recover(const ProcessHandle& h) override {
    std::lock_guard lock(mu);
    return alive.count(h.pid) > 0;
  }
  std::vector<Orphan> find_orphans(const std::string& scope, const std::vector<ProcessHandle>& known) override {
    std::lock_guard lock(mu);
    std::vector<Orphan> out;
    for (const auto& [pid, id] : slot_ids) {
      const ProcessHandle h{pid, 1};
      if (!alive.count(pid) || std::find(known.begin(), known.end(), h) != known.end()) continue;
      if (id == scope || id.rfind(scope + "/", 0) == 0) out.push_back(Orphan{h, id});
    }
    return out;
  }
  void crash(int64_t pid) {
    std::lock_guard lock(mu);
    alive.erase(pid);
  }
  std::mutex mu;
  int64_t next_pid = 100;
  std::set<int64_t> alive;
  std::set<int64_t> ignore_sigterm;  // and every other polite stop signal
  // Programs (argv[0]) that exit at once: cleanly (true) or with status 1.
  std::map<std::string, bool> finishes;
  // Programs (argv[0]) that write this to their log when they start.
  std::map<std::string, std::string> writes;
  std::set<int64_t> clean_exits;
  std::vector<LaunchSpec> started;
  std::map<int64_t, std::string> slot_ids;
  std::vector<std::pair<int64_t, int>> signals;  // (pid, signal) in the order sent
};

// Every port is healthy unless listed in `unhealthy` ("HTTP 503").
class FakeProber final : public Prober {
 public:
  ProbeResult probe(const tern::v1::HealthCheck&, uint16_t port, Millis, const LaunchSpec&) override {
    std::lock_guard lock(mu);
    ++probes;
    bool ok = !unhealthy.count(port);
    return {ok, ok ? "ok" : "HTTP 503"};
  }
  std::mutex mu;
  std::set<uint16_t> unhealthy;
  int probes = 0;
};

// Keeps the last mapping applied; `fail_next` fails the next apply() once.
class FakeMapper final : public PortMapper {
 public:
  absl::Status apply(const DesiredMapping& desired) override {
    if (!fail_next.ok()) return std::exchange(fail_next, absl::OkStatus());
    current_ = desired;
    ++applies;
    return absl::OkStatus();
  }
  absl::StatusOr<bool> reconcile() override { return false; }
  absl::Status remove_all() override {
    current_ = {};
    return absl::OkStatus();
  }
  const DesiredMapping& current() const override { return current_; }
  std::string name() const override { return "fake"; }
  absl::StatusOr<std::vector<BackendConnections>> connection_counts() override { return connections; }
  std::vector<BackendConnections> connections;
  // The port new connections go to (weight 100), or 0.
  uint16_t target() const {
    if (current_.routes.empty() || current_.routes[0].backends.empty()) return 0;
    return current_.routes[0].backends[0].port;
  }
  DesiredMapping current_;
  absl::Status fail_next;
  int applies = 0;
};

// Serves `bytes` for any source, optionally cut short at `cut_at`. With
// `says_size` it tells FetchOptions::on_size the size first, as an HTTP
// server with a Content-Length does.
class FakeFetcher final : public ArtifactFetcher {
 public:
  absl::Status fetch(const std::string& source, const Sink& sink) override {
    ++calls;
    last_source = source;
    const std::size_t n = std::min(bytes.size(), cut_at);
    if (auto st = sink(bytes.data(), n); !st.ok()) return st;
    if (n < bytes.size()) return absl::DataLossError("stream broke off");
    return absl::OkStatus();
  }
  absl::Status fetch_to_file(const std::string& source, const std::string& path,
                             const FetchOptions& options) override {
    last_options = options;
    if (says_size && options.on_size) {
      if (auto st = options.on_size(bytes.size()); !st.ok()) {
        ++calls;
        return st;
      }
    }
    return ArtifactFetcher::fetch_to_file(source, path, options);
  }
  std::string bytes = "app";
  std::size_t cut_at = std::string::npos;
  bool says_size = false;
  int calls = 0;
  std::string last_source;
  FetchOptions last_options;
};

// The host on a FakeClock. A wait or a sleep moves the clock by the time
// asked (a wait first lets a notify through for a real millisecond, so an idle
// loop on this clock neither spins nor misses a wake-up). Ports are free
// unless in `taken`; a port's sockets are what `sockets` says (none).
class FakeHostOs final : public HostOs {
 public:
  const Clock& clock() const override { return fake_clock; }
  bool wait_for(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Millis d,
                const std::function<bool()>& done) override {
    if (done()) return true;
    fake_clock.advance(d);
    cv.wait_for(lock, std::chrono::milliseconds(1), done);
    return done();
  }
  void sleep_for(Millis d) override {
    fake_clock.advance(d);
    std::this_thread::yield();
  }
  bool port_in_use(uint16_t port, const std::string&) override {
    std::lock_guard lock(mu);
    return taken.count(port) > 0;
  }
  PortSockets port_sockets(uint16_t port) override {
    std::lock_guard lock(mu);
    auto it = sockets.find(port);
    return it == sockets.end() ? PortSockets{} : it->second;
  }
  FakeClock fake_clock;
  std::mutex mu;
  std::set<uint16_t> taken;
  std::map<uint16_t, PortSockets> sockets;
};

}  // namespace tern::testing
