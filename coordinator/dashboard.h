#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "core/metrics.h"
#include "google/protobuf/message.h"

namespace tern {

// The coordinator's read-only web dashboard, served beside /metrics:
// GET /dashboard is one self-contained page (no build step, nothing fetched
// from elsewhere) that polls the JSON of /api/v1/... every two seconds and
// shows the fleet by state and label, each host's services and releases,
// and the rollouts with their waves, hosts, analysis and history.
//
//   /api/v1/hosts                    ListHostsResponse
//   /api/v1/rollouts                 ListRolloutsResponse (without per-host progress)
//   /api/v1/rollouts/<id>            Rollout
//   /api/v1/rollouts/<id>/history    RolloutHistory
//
// Every API call needs "Authorization: Bearer <token>" with a live token of
// any role (viewer is enough), unless the coordinator runs --insecure; the
// page asks for the token once and keeps it for the browser tab.
struct DashboardData {
  // Runs `read` on the coordinator's event loop and returns what it wrote;
  // UNAVAILABLE when the loop does not run (starting, stopping).
  std::function<absl::Status(const std::function<absl::Status()>& read)> on_loop;
  // OK for a request the dashboard may answer; UNAUTHENTICATED with why.
  std::function<absl::Status(const std::string& authorization)> authorize;
  std::function<absl::Status(google::protobuf::Message* out)> hosts;
  std::function<absl::Status(google::protobuf::Message* out)> rollouts;
  std::function<absl::Status(const std::string& id, google::protobuf::Message* out)> rollout;
  std::function<absl::Status(const std::string& id, google::protobuf::Message* out)> history;
};

// Adds the page and the API to `server` (before it starts).
void add_dashboard(MetricsHttpServer& server, DashboardData data);

// The page itself.
const std::string& dashboard_page();

}  // namespace tern
