#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tern {

// A Prometheus-style registry of counters and gauges. Metrics are created
// once at wiring time and updated lock-free afterwards; render() may run on
// any thread.
class Metrics {
 public:
  using Value = std::atomic<int64_t>;

  // Returns the cell for name{labels}; the same cell on every call. `labels`
  // is the rendered label set, e.g. R"(state="connected")", or empty.
  Value& counter(const std::string& name, const std::string& help, const std::string& labels = "");
  Value& gauge(const std::string& name, const std::string& help, const std::string& labels = "");

  // Called at the start of every render(), outside the registry's lock, to
  // bring cells that mirror someone else's state up to date (the agent's
  // per-slot connection counts, read from the kernel on each scrape). Set
  // once, before the registry is served.
  void set_collector(std::function<void()> collect) { collect_ = std::move(collect); }

  // Prometheus text exposition format 0.0.4.
  std::string render() const;

 private:
  struct Family {
    std::string type;
    std::string help;
    std::map<std::string, std::unique_ptr<Value>> cells;
  };
  Value& cell(const std::string& name, const std::string& type, const std::string& help,
              const std::string& labels);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  std::function<void()> collect_;
};

// Serves GET /metrics (and GET /healthz) over plain HTTP/1.1, one request
// per connection, with Boost.Beast on one thread of its own. No client holds
// up another: each connection waits for its own request and answer, for at
// most kRequestTimeout each, and at most kMaxConnections are held at once;
// a connection beyond that takes the place of the oldest one still waiting
// for its request, so idle or slow clients cannot lock a scrape out.
// start() and stop() are for one thread (the owner's).
class MetricsHttpServer {
 public:
  static constexpr size_t kMaxConnections = 32;
  static constexpr std::chrono::seconds kRequestTimeout{10};

  explicit MetricsHttpServer(const Metrics& metrics);
  ~MetricsHttpServer();

  // Binds "host:port" (port 0 picks a free one) and starts serving. Returns
  // the bound "host:port".
  absl::StatusOr<std::string> start(const std::string& listen);
  // Closes every connection and the listening socket; idempotent.
  void stop();

 private:
  struct Impl;
  const Metrics& metrics_;
  std::unique_ptr<Impl> impl_;
};

// Splits "host:port" / "[v6]:port". Port must be 0-65535.
absl::StatusOr<std::pair<std::string, uint16_t>> split_host_port(const std::string& address);

}  // namespace tern
