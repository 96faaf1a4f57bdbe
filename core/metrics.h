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

  // A histogram of durations in seconds, with fixed bucket bounds. observe()
  // is lock-free.
  class Histogram {
   public:
    explicit Histogram(std::vector<double> bounds);
    void observe(double seconds);

   private:
    friend class Metrics;
    std::vector<double> bounds_;
    std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // one per bound, not cumulative
    std::atomic<uint64_t> count_{0};
    std::atomic<uint64_t> sum_micros_{0};
  };
  // Bounds for operations that take seconds to an hour (deploys, rollouts).
  static const std::vector<double>& slow_buckets();
  // Bounds for operations that take microseconds to a second (a swap).
  static const std::vector<double>& fast_buckets();

  // Returns the cell for name{labels}; the same cell on every call. `labels`
  // is the rendered label set, e.g. R"(state="connected")", or empty.
  // `unit`: what one step of the cell's integer is in the family's unit, for
  // a family in seconds counted in microseconds (1e-6); 1 for plain counts.
  Value& counter(const std::string& name, const std::string& help, const std::string& labels = "",
                 double unit = 1);
  Value& gauge(const std::string& name, const std::string& help, const std::string& labels = "", double unit = 1);
  Histogram& histogram(const std::string& name, const std::string& help, const std::string& labels,
                       const std::vector<double>& bounds);

  // Called at the start of every render(), outside the registry's lock, to
  // bring cells that mirror someone else's state up to date (the agent's
  // per-slot connection counts, read from the kernel on each scrape; the
  // process's own figures). Added before the registry is served.
  void add_collector(std::function<void()> collect) { collectors_.push_back(std::move(collect)); }

  // Prometheus text exposition format 0.0.4.
  std::string render() const;

 private:
  struct Family {
    std::string type;
    std::string help;
    double unit = 1;
    std::map<std::string, std::unique_ptr<Value>> cells;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Value& cell(const std::string& name, const std::string& type, const std::string& help,
              const std::string& labels, double unit);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  std::vector<std::function<void()>> collectors_;
};

// The families every Tern daemon exports about itself, kept current on each
// render: tern_build_info{version,daemon} (always 1) and the standard
// process_* ones (CPU seconds, resident and virtual memory, open and maximum
// file descriptors, start time), read from /proc/self.
void add_process_metrics(Metrics& metrics, const std::string& daemon);

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

  // More than /metrics: GET requests whose path starts with a route's prefix
  // go to its handler (the longest prefix wins), on the server's thread.
  struct Request {
    std::string path;
    std::string query;
    std::string authorization;  // the Authorization header, as sent
  };
  struct Reply {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
  };
  using Handler = std::function<Reply(const Request&)>;
  // Before start().
  void route(std::string prefix, Handler handler) { routes_.emplace(std::move(prefix), std::move(handler)); }

  // Binds "host:port" (port 0 picks a free one) and starts serving. Returns
  // the bound "host:port".
  absl::StatusOr<std::string> start(const std::string& listen);
  // Closes every connection and the listening socket; idempotent.
  void stop();

 private:
  struct Impl;
  const Metrics& metrics_;
  std::map<std::string, Handler> routes_;
  std::unique_ptr<Impl> impl_;
};

// Splits "host:port" / "[v6]:port". Port must be 0-65535.
absl::StatusOr<std::pair<std::string, uint16_t>> split_host_port(const std::string& address);

}  // namespace tern
