#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "agent/process_launcher.h"
#include "core/clock.h"
#include "tern/v1/service.pb.h"

namespace tern {

struct ProbeResult {
  bool ok = false;
  // One line for status and logs: "HTTP 503 from GET /healthz", "connect: refused", ...
  std::string detail;
};

// Runs one health check of a slot once. Implementations are thread-safe and
// never block longer than `timeout` (plus a few ms).
//   http: GET <path> on 127.0.0.1:<port>, healthy on 2xx
//   tcp:  connect to 127.0.0.1:<port>
//   exec: argv (no shell; "{port}" substituted) exits 0, run as the slot's
//         process is (`as`: its user, environment and working directory),
//         confined as agent/confine.h says: never with the agent's rights
//   grpc: grpc.health.v1.Health/Check for `service`, healthy on SERVING
class Prober {
 public:
  virtual ~Prober() = default;
  virtual ProbeResult probe(const tern::v1::HealthCheck& check, uint16_t port, Millis timeout,
                            const LaunchSpec& as) = 0;
};

std::unique_ptr<Prober> make_system_prober();

// Effective probe parameters, with defaults filled in for unset fields.
struct HealthParams {
  Millis interval{1'000};
  Millis timeout{1'000};
  uint32_t success_threshold = 1;
  uint32_t failure_threshold = 3;
  Millis min_healthy_time{0};
  Millis healthy_deadline{60'000};
};
HealthParams health_params(const tern::v1::HealthCheck& check);

// Turns a series of probe results into a verdict, by the thresholds above.
// Pure logic on an injected time; not thread-safe.
//
// Starting: the slot starts in kStarting. It becomes kHealthy once
// `success_threshold` consecutive probes passed AND the first of them passed at
// least `min_healthy_time` ago (a run broken by a failure starts over). If it
// is not healthy by `started + healthy_deadline`, it is kFailed (terminal).
// Running: a healthy slot becomes kUnhealthy after `failure_threshold`
// consecutive failures and healthy again after `success_threshold` passes.
// A tracker made with kHealthy starts there, for a slot already known to be
// healthy (adopted after an agent restart, or just verified by a deploy).
class HealthTracker {
 public:
  enum class State { kStarting, kHealthy, kUnhealthy, kFailed };

  // `initial`: kStarting or kHealthy.
  HealthTracker(HealthParams params, TimePoint started, State initial = State::kStarting);

  // Records one probe result taken at `now`; returns the new state.
  State observe(const ProbeResult& result, TimePoint now);
  // Advances time without a probe (to notice the deadline); returns the state.
  State tick(TimePoint now);

  State state() const { return state_; }
  // The last probe's detail, for status messages.
  const std::string& last_detail() const { return last_detail_; }
  const HealthParams& params() const { return params_; }

 private:
  HealthParams params_;
  TimePoint started_;
  State state_ = State::kStarting;
  uint32_t successes_ = 0;
  uint32_t failures_ = 0;
  TimePoint run_started_{};
  std::string last_detail_;
};

const char* to_string(HealthTracker::State s);

}  // namespace tern
