#include "agent/conntrack.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "agent/exec.h"
#include "core/status_fmt.h"

namespace tern {
namespace {

// How a UDP port's new flows are split: the live backends (weight > 0) with
// their weights, and, when there are two, how a flow is assigned a side.
struct Split {
  TrafficSplit kind = TrafficSplit::kConnection;
  std::vector<std::pair<uint16_t, uint32_t>> live;  // (port, weight)
  friend bool operator==(const Split&, const Split&) = default;
};

std::map<uint16_t, Split> udp_splits(const DesiredMapping& mapping) {
  std::map<uint16_t, Split> out;
  for (const auto& route : mapping.routes) {
    if (route.protocol != "udp") continue;
    Split split;
    for (const auto& b : route.backends) {
      if (b.weight > 0) split.live.emplace_back(b.port, b.weight);
    }
    if (split.live.empty()) continue;
    // A client split gives each backend the buckets its place in the list
    // says, so there the order matters; a random draw, or a single backend,
    // does not care.
    if (split.live.size() > 1) split.kind = route.split;
    if (split.kind == TrafficSplit::kConnection) std::sort(split.live.begin(), split.live.end());
    out[route.public_port] = std::move(split);
  }
  return out;
}

}  // namespace

std::vector<uint16_t> udp_ports_to_reset(const DesiredMapping& before, const DesiredMapping& after) {
  auto old_splits = udp_splits(before);
  auto new_splits = udp_splits(after);
  std::vector<uint16_t> ports;
  for (const auto& [port, split] : new_splits) {
    auto it = old_splits.find(port);
    if (it == old_splits.end() || it->second != split) ports.push_back(port);
  }
  for (const auto& [port, split] : old_splits) {
    if (!new_splits.contains(port)) ports.push_back(port);
  }
  std::sort(ports.begin(), ports.end());
  return ports;
}

std::vector<std::pair<uint16_t, uint16_t>> tcp_backends_left(const DesiredMapping& before, const DesiredMapping& after) {
  auto live = [](const DesiredMapping& m) {
    std::set<std::pair<uint16_t, uint16_t>> out;
    for (const auto& route : m.routes) {
      if (route.protocol != "tcp") continue;
      for (const auto& b : route.backends) {
        if (b.weight > 0) out.emplace(route.public_port, b.port);
      }
    }
    return out;
  };
  const auto was = live(before), is = live(after);
  std::vector<std::pair<uint16_t, uint16_t>> out;
  std::set_difference(was.begin(), was.end(), is.begin(), is.end(), std::back_inserter(out));
  return out;
}

void delete_unanswered_tcp_flows(const std::string& conntrack_bin,
                                 const std::vector<std::pair<uint16_t, uint16_t>>& backends) {
  if (backends.empty()) return;
  if (conntrack_bin.empty()) {
    spdlog::debug("conntrack is not installed: a connection attempt whose SYN was dropped before a switch retries "
                  "on its old backend");
    return;
  }
  for (const auto& [public_port, backend] : backends) {
    std::vector<std::string> argv{conntrack_bin,     "-D", "-p", "tcp", "--state", "SYN_SENT", "--orig-port-dst",
                                  std::to_string(public_port), "--reply-port-src", std::to_string(backend)};
    auto result = run_command(argv, {}, Millis(10'000));
    const bool nothing_to_delete =
        result.ok() && result->exit_code == 1 && absl::StrContains(result->err, "0 flow entries");
    if (!result.ok()) {
      spdlog::warn("cannot delete unanswered connection attempts to port {} (behind {}): {}", backend, public_port,
                   result.status().message());
    } else if (!result->success() && !nothing_to_delete) {
      spdlog::warn("cannot delete unanswered connection attempts to port {} (behind {}): {}", backend, public_port,
                   describe_failure(argv, *result));
    }
  }
}

void delete_udp_flows(const std::string& conntrack_bin, const std::vector<uint16_t>& ports) {
  if (ports.empty()) return;
  if (conntrack_bin.empty()) {
    spdlog::warn(
        "conntrack is not installed: existing UDP flows to {} port(s) stay on their old backend until their "
        "conntrack entries time out; install the conntrack package to move them at once",
        ports.size());
    return;
  }
  for (uint16_t port : ports) {
    std::vector<std::string> argv{conntrack_bin, "-D", "-p", "udp", "--orig-port-dst", std::to_string(port)};
    auto result = run_command(argv, {}, Millis(10'000));
    if (!result.ok()) {
      spdlog::warn("cannot delete the conntrack entries of UDP port {}: {}; its flows stay on the old backend "
                   "until they time out",
                   port, result.status().message());
      continue;
    }
    // conntrack exits 1 when there was nothing to delete.
    bool nothing_to_delete = result->exit_code == 1 && absl::StrContains(result->err, "0 flow entries");
    if (!result->success() && !nothing_to_delete) {
      spdlog::warn("cannot delete the conntrack entries of UDP port {}: {}; its flows stay on the old backend "
                   "until they time out",
                   port, describe_failure(argv, *result));
    }
  }
}

}  // namespace tern
