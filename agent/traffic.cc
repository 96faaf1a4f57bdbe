#include "agent/traffic.h"

#include "core/words.h"

namespace tern {

std::vector<PortRoute> routes_for(const tern::v1::ServiceState& state) {
  std::vector<PortRoute> out;
  if (state.active() == tern::v1::SLOT_COLOR_UNSPECIFIED) return out;
  const bool blue_active = state.active() == tern::v1::SLOT_COLOR_BLUE;
  const uint32_t w = std::min<uint32_t>(effective_weight(state.active_weight()), 100);
  for (const auto& p : state.spec().ports()) {
    PortRoute r;
    r.service = state.spec().name();
    r.protocol = p.protocol().empty() ? "tcp" : p.protocol();
    r.public_port = static_cast<uint16_t>(p.public_port());
    r.split = state.split().empty() ? traffic_split(state.spec())
                                    : parse_traffic_split(state.split()).value_or(traffic_split(state.spec()));
    const auto active_port = static_cast<uint16_t>(blue_active ? p.blue_port() : p.green_port());
    const auto other_port = static_cast<uint16_t>(blue_active ? p.green_port() : p.blue_port());
    // The other slot is listed at weight 0 too, so that its new
    // connections are counted whatever the split.
    r.backends.push_back({active_port, w});
    if (other_port != 0 && other_port != active_port) r.backends.push_back({other_port, 100 - w});
    out.push_back(std::move(r));
  }
  return out;
}

SlotConnections slot_connections(const tern::v1::ServiceSpec& spec, const std::vector<BackendConnections>& counts) {
  SlotConnections out;
  for (const auto& pm : spec.ports()) {
    const std::string protocol = pm.protocol().empty() ? "tcp" : pm.protocol();
    for (const auto& c : counts) {
      if (c.public_port != pm.public_port() || c.protocol != protocol) continue;
      if (c.backend_port == pm.blue_port()) {
        out.blue += c.connections;
        out.counted = true;
      } else if (c.backend_port == pm.green_port()) {
        out.green += c.connections;
        out.counted = true;
      }
    }
  }
  return out;
}

DesiredMapping TrafficMap::build() const {
  DesiredMapping m;
  for (const auto& [svc, routes] : routes_) {
    for (const auto& r : routes) m.routes.push_back(r);
  }
  return m;
}

absl::Status TrafficMap::set_routes(const std::string& service, std::vector<PortRoute> routes) {
  std::lock_guard lock(mu_);
  auto previous = routes_;
  if (routes.empty()) {
    routes_.erase(service);
  } else {
    routes_[service] = std::move(routes);
  }
  const auto began = std::chrono::steady_clock::now();
  auto st = mapper_->apply(build());
  if (!st.ok()) routes_ = std::move(previous);
  if (st.ok() && swap_seconds_ != nullptr) {
    swap_seconds_->observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
  }
  return st;
}

absl::StatusOr<bool> TrafficMap::reconcile() {
  std::lock_guard lock(mu_);
  return mapper_->reconcile();
}

absl::StatusOr<std::vector<BackendConnections>> TrafficMap::connection_counts(const std::string& service) {
  std::lock_guard lock(mu_);
  auto all = mapper_->connection_counts();
  if (!all.ok()) return all.status();
  std::vector<BackendConnections> out;
  for (auto& c : *all) {
    if (c.service == service) out.push_back(std::move(c));
  }
  return out;
}

DesiredMapping TrafficMap::desired() const {
  std::lock_guard lock(mu_);
  return build();
}

}  // namespace tern
