#include "agent/port_mapper.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/iptables_mapper.h"
#include "agent/nft_mapper.h"

namespace tern {
namespace {

bool valid_service_name(const std::string& name) {
  if (name.empty() || name.size() > 32) return false;
  auto lower_or_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_or_digit(name[0])) return false;
  for (char c : name) {
    if (!lower_or_digit(c) && c != '-') return false;
  }
  return true;
}

std::string label(const PortRoute& route) {
  return absl::StrCat("route \"", route.service, "\" ", route.protocol, "/", route.public_port);
}

absl::Status invalid(const PortRoute& route, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat("port mapping refused: ", label(route), ": ", reason));
}

}  // namespace

absl::Status validate(const DesiredMapping& mapping) {
  std::map<std::pair<std::string, uint16_t>, std::string> owner;  // (protocol, public port) -> service
  for (const auto& route : mapping.routes) {
    if (!valid_service_name(route.service)) {
      return invalid(route,
                     "the service name must be 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit");
    }
    if (route.protocol != "tcp" && route.protocol != "udp") {
      return invalid(route, "the protocol must be \"tcp\" or \"udp\"");
    }
    if (route.public_port == 0) return invalid(route, "the public port must be 1-65535");
    auto [it, inserted] = owner.emplace(std::make_pair(route.protocol, route.public_port), route.service);
    if (!inserted) {
      return invalid(route, absl::StrCat("public port ", route.public_port, "/", route.protocol,
                                         " is already mapped by service \"", it->second,
                                         "\"; each public port can be mapped once per protocol"));
    }
    if (route.backends.size() > 2) {
      return invalid(route, absl::StrCat("it has ", route.backends.size(),
                                         " backends; at most 2 (the blue and green slot) are allowed"));
    }
    uint64_t total = 0;
    std::set<uint16_t> ports;
    for (const auto& b : route.backends) {
      if (b.port == 0) return invalid(route, "a backend port must be 1-65535");
      if (b.port == route.public_port) {
        return invalid(route, absl::StrCat("backend port ", b.port,
                                           " is the public port itself; a slot must listen on a port of its own"));
      }
      if (!ports.insert(b.port).second) {
        return invalid(route, absl::StrCat("backend port ", b.port, " is listed twice"));
      }
      if (b.weight > 100) {
        return invalid(route, absl::StrCat("backend port ", b.port, " has weight ", b.weight, "; weights are 0-100"));
      }
      total += b.weight;
    }
    if (!route.backends.empty() && total != 100) {
      return invalid(route, absl::StrCat("the backend weights sum to ", total, "; they must sum to 100"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PortMapper>> make_port_mapper(const PortMapperOptions& options) {
  if (options.backend == "nftables") return make_nft_mapper(options);
  if (options.backend == "iptables") return make_iptables_mapper(options);
  return absl::InvalidArgumentError(absl::StrCat("unknown port mapper backend \"", options.backend,
                                                 "\": use \"nftables\" (or \"iptables\" on hosts without nft)"));
}

uint64_t CounterCarry::observe(const std::string& name, uint64_t now) {
  uint64_t& last = last_[name];
  uint64_t& carried = carried_[name];
  if (now < last) carried += last;
  last = now;
  return carried + now;
}

void CounterCarry::rewriting(const std::map<std::string, uint64_t>& last) {
  for (auto& [name, seen] : last_) {
    auto it = last.find(name);
    carried_[name] += std::max(seen, it == last.end() ? 0 : it->second);
  }
  for (const auto& [name, packets] : last) {
    if (!last_.contains(name)) carried_[name] += packets;
  }
  last_.clear();
}

}  // namespace tern
