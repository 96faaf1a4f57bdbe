#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
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
};

// Serves GET /metrics (and GET /healthz) over plain HTTP/1.1 on one thread.
// Deliberately tiny: scrapes are rare and small.
class MetricsHttpServer {
 public:
  explicit MetricsHttpServer(const Metrics& metrics) : metrics_(metrics) {}
  ~MetricsHttpServer();

  // Binds "host:port" (port 0 picks a free one) and starts serving. Returns
  // the bound "host:port".
  absl::StatusOr<std::string> start(const std::string& listen);
  void stop();

 private:
  void serve();
  void handle(int fd);

  const Metrics& metrics_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::thread thread_;
};

// Splits "host:port" / "[v6]:port". Port must be 0-65535.
absl::StatusOr<std::pair<std::string, uint16_t>> split_host_port(const std::string& address);

}  // namespace tern
