#include "agent/nft_mapper.h"

#include <linux/netfilter.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/conntrack.h"
#include "agent/exec.h"
#include "agent/nft_netlink.h"
#include "core/status_fmt.h"

namespace tern {
namespace {

constexpr Millis kNftTimeout{30'000};

bool valid_table_name(const std::string& name) {
  if (name.empty() || name.size() > 16) return false;
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!letter(name[0])) return false;
  for (char c : name) {
    if (!letter(c) && !(c >= '0' && c <= '9') && c != '_') return false;
  }
  return true;
}

using RouteKey = std::tuple<std::string, std::string, uint16_t>;  // service, protocol, public port

RouteKey key_of(const PortRoute& r) { return {r.service, r.protocol, r.public_port}; }

// The routes that get a rule and a map (those with backends), with their
// element layout.
std::map<RouteKey, std::pair<const PortRoute*, std::array<uint16_t, 100>>> mapped_routes(const DesiredMapping& m) {
  std::map<RouteKey, std::pair<const PortRoute*, std::array<uint16_t, 100>>> out;
  for (const auto& r : m.routes) {
    if (!r.backends.empty()) out[key_of(r)] = {&r, weight_slots(r)};
  }
  return out;
}

// The generation that a single commit after `g` produces (the kernel skips 0).
uint32_t next_generation(uint32_t g) { return g + 1 == 0 ? 1 : g + 1; }

class NftMapper final : public PortMapper {
 public:
  NftMapper(std::string table, std::string nft_bin, std::string conntrack_bin, std::unique_ptr<NftNetlink> netlink)
      : table_(std::move(table)),
        nft_bin_(std::move(nft_bin)),
        conntrack_bin_(std::move(conntrack_bin)),
        netlink_(std::move(netlink)) {}

  absl::Status apply(const DesiredMapping& desired) override {
    if (auto st = validate(desired); !st.ok()) return st;
    auto old_routes = mapped_routes(current_);
    auto new_routes = mapped_routes(desired);
    // Only the maps change in place; new routes or backends need new rules
    // and counters.
    bool same_routes = in_force_ && old_routes.size() == new_routes.size();
    for (auto it = old_routes.begin(), jt = new_routes.begin(); same_routes && it != old_routes.end(); ++it, ++jt) {
      // A different split is a different rule, not different map elements.
      same_routes = it->first == jt->first && backend_ports(*it->second.first) == backend_ports(*jt->second.first) &&
                    it->second.first->split == jt->second.first->split;
    }

    const DesiredMapping before = in_force_ ? current_ : DesiredMapping{};
    if (same_routes && !ruleset_untouched_since_our_last_change()) {
      // Someone else changed the ruleset, maybe our table: updating maps in
      // place would leave their change in force, so rewrite it all.
      spdlog::info("nftables: the ruleset changed since tern-agent last wrote table inet {}; rewriting the whole "
                   "table rather than updating it in place",
                   table_);
      same_routes = false;
    }
    if (same_routes) {
      std::vector<NftMapContents> changed;
      for (const auto& [key, entry] : new_routes) {
        const auto& [route, slots] = entry;
        if (old_routes.at(key).second == slots) continue;
        NftMapContents contents{nft_map_name(*route), {}};
        contents.elements.reserve(slots.size());
        for (uint32_t i = 0; i < slots.size(); ++i) contents.elements.emplace_back(i, slots[i]);
        changed.push_back(std::move(contents));
      }
      if (changed.empty()) {
        current_ = desired;
        return absl::OkStatus();
      }
      auto st = netlink_->replace_map_elements(NFPROTO_INET, table_, changed);
      if (st.ok()) {
        record_generation_after_commit(generation_);
        current_ = desired;
        delete_udp_flows(conntrack_bin_, udp_ports_to_reset(before, desired));
        delete_unanswered_tcp_flows(conntrack_bin_, tcp_backends_left(before, desired));
        return absl::OkStatus();
      }
      // Someone deleted our table or a map just now; the full rewrite below
      // restores everything in one transaction.
      spdlog::warn("nftables: updating {} map(s) of table inet {} in place failed ({}); rewriting the whole table",
                   changed.size(), table_, st.message());
    }

    if (auto st = write_table(desired); !st.ok()) return st;
    current_ = desired;
    delete_udp_flows(conntrack_bin_, udp_ports_to_reset(before, desired));
    delete_unanswered_tcp_flows(conntrack_bin_, tcp_backends_left(before, desired));
    return absl::OkStatus();
  }

  absl::StatusOr<bool> reconcile() override {
    if (!in_force_) return false;
    auto gen = netlink_->get_generation();
    if (!gen.ok()) {
      return absl::Status(gen.status().code(), absl::StrCat("nftables: cannot check whether table inet ", table_,
                                                            " is intact: ", gen.status().message()));
    }
    if (*gen == generation_ && !foreign_commit_suspected_) return false;
    spdlog::info(
        "nftables: the ruleset changed since tern-agent last wrote table inet {} (generation {} -> {}); "
        "re-applying the table in case those changes touched it",
        table_, generation_, *gen);
    if (auto st = write_table(current_); !st.ok()) return st;
    return true;
  }

  absl::Status remove_all() override {
    std::string script = absl::StrCat("table inet ", table_, " {}\ndelete table inet ", table_, "\n");
    if (auto st = run_nft(script, "removing table inet " + table_); !st.ok()) return st;
    DesiredMapping before = std::move(current_);
    current_ = {};
    in_force_ = false;
    foreign_commit_suspected_ = false;
    delete_udp_flows(conntrack_bin_, udp_ports_to_reset(before, current_));
    delete_unanswered_tcp_flows(conntrack_bin_, tcp_backends_left(before, current_));
    return absl::OkStatus();
  }

  const DesiredMapping& current() const override { return current_; }
  std::string name() const override { return "nftables"; }

  absl::StatusOr<std::vector<BackendConnections>> connection_counts() override {
    std::map<std::string, uint64_t> kernel;
    if (in_force_) {
      auto read = netlink_->counter_packets(NFPROTO_INET, table_);
      if (!read.ok()) {
        return absl::Status(read.status().code(), absl::StrCat("nftables: cannot read the connection counters of "
                                                               "table inet ", table_, ": ", read.status().message()));
      }
      kernel = *std::move(read);
    }
    std::vector<BackendConnections> out;
    for (const auto& route : current_.routes) {
      for (const auto& b : route.backends) {
        const std::string name = nft_counter_name(route, b.port);
        auto now = kernel.find(name);
        out.push_back({route.service, route.protocol, route.public_port, b.port,
                       counters_.observe(name, now == kernel.end() ? 0 : now->second)});
      }
    }
    return out;
  }

 private:
  // Whether no one but us has committed since our last change (a cheap
  // NFT_MSG_GETGEN round trip).
  bool ruleset_untouched_since_our_last_change() {
    if (foreign_commit_suspected_) return false;
    auto gen = netlink_->get_generation();
    return gen.ok() && *gen == generation_;
  }

  static std::set<uint16_t> backend_ports(const PortRoute& r) {
    std::set<uint16_t> out;
    for (const auto& b : r.backends) out.insert(b.port);
    return out;
  }

  // Replaces the whole table atomically and records the generation. The
  // counters start over in the new table: what they counted is carried.
  absl::Status write_table(const DesiredMapping& mapping) {
    if (in_force_) {
      auto counts = netlink_->counter_packets(NFPROTO_INET, table_);
      counters_.rewriting(counts.ok() ? *counts : std::map<std::string, uint64_t>{});
    }
    auto before = netlink_->get_generation();
    auto st = run_nft(nft_ruleset(table_, mapping), absl::StrCat("writing table inet ", table_));
    if (!st.ok()) return st;
    in_force_ = true;
    foreign_commit_suspected_ = false;
    if (before.ok()) {
      record_generation_after_commit(*before);
    } else {
      mark_generation_unknown(before.status());
    }
    return absl::OkStatus();
  }

  absl::Status run_nft(const std::string& script, const std::string& what) {
    std::vector<std::string> argv{nft_bin_, "-f", "-"};
    auto result = run_command(argv, script, kNftTimeout);
    if (!result.ok()) {
      return absl::Status(result.status().code(),
                          absl::StrCat("nftables: ", what, " failed: ", result.status().message()));
    }
    if (!result->success()) {
      return absl::InternalError(absl::StrCat("nftables: ", what, " failed (nothing was changed): ",
                                              describe_failure(argv, *result)));
    }
    return absl::OkStatus();
  }

  // Called after one commit of ours that followed generation `previous`. When
  // the generation moved by more than that one commit, someone else committed
  // in between, possibly after us: reconcile() must look again.
  void record_generation_after_commit(uint32_t previous) {
    auto gen = netlink_->get_generation();
    if (!gen.ok()) {
      mark_generation_unknown(gen.status());
      return;
    }
    if (*gen != next_generation(previous)) foreign_commit_suspected_ = true;
    generation_ = *gen;
  }

  void mark_generation_unknown(const absl::Status& why) {
    spdlog::warn("nftables: cannot read the ruleset generation ({}); the next reconcile will rewrite table inet {}",
                 why.message(), table_);
    foreign_commit_suspected_ = true;
  }

  const std::string table_;
  const std::string nft_bin_;
  const std::string conntrack_bin_;  // empty: not installed
  std::unique_ptr<NftNetlink> netlink_;

  DesiredMapping current_;
  // Whether our table, as written for current_, is believed to be in force.
  bool in_force_ = false;
  // The ruleset generation right after our last change.
  uint32_t generation_ = 0;
  // Someone else may have committed between our last change and generation_.
  bool foreign_commit_suspected_ = false;
  CounterCarry counters_;
};

}  // namespace

std::array<uint16_t, 100> weight_slots(const PortRoute& route) {
  std::array<uint16_t, 100> slots{};
  size_t next = 0;
  for (const auto& b : route.backends) {
    for (uint32_t i = 0; i < b.weight && next < slots.size(); ++i) slots[next++] = b.port;
  }
  // validate() guarantees the weights sum to 100; fill any rest with the last
  // backend rather than leave port 0 in the map.
  for (; next < slots.size() && !route.backends.empty(); ++next) slots[next] = route.backends.back().port;
  return slots;
}

std::string nft_map_name(const PortRoute& route) {
  return absl::StrCat(route.protocol, "_", route.public_port, "_", route.service);
}

std::string nft_counter_name(const PortRoute& route, uint16_t backend_port) {
  return absl::StrCat("c_", nft_map_name(route), "_", backend_port);
}

std::string nft_ruleset(const std::string& table, const DesiredMapping& mapping) {
  // Creating the table first makes the delete succeed when it does not exist;
  // nft runs the whole script as one transaction.
  std::string out = absl::StrCat("table inet ", table, " {}\n", "delete table inet ", table, "\n", "table inet ",
                                 table, " {\n", "  comment \"managed by tern-agent; do not edit\"\n");
  std::string rules, counting;
  for (const auto& route : mapping.routes) {
    if (route.backends.empty()) continue;
    const std::string map_name = nft_map_name(route);
    for (const auto& b : route.backends) {
      const std::string counter = nft_counter_name(route, b.port);
      absl::StrAppend(&out, "  counter ", counter, " {}\n");
      absl::StrAppend(&counting, "    meta l4proto ", route.protocol, " ct state new ct original proto-dst ",
                      route.public_port, " ", route.protocol, " dport ", b.port, " counter name \"", counter, "\"\n");
    }
    // The key type is the same 32-bit host-order integer whichever
    // expression looks the map up (jhash too), so both splits share one map
    // declaration, and the netlink path writes both alike. (`typeof jhash
    // ...` would say the same, but nft 1.0.6 crashes listing such a map.)
    absl::StrAppend(&out, "  map ", map_name, " {\n", "    typeof numgen random mod 100 : ", route.protocol, " dport\n",
                    "    elements = {");
    auto slots = weight_slots(route);
    for (size_t i = 0; i < slots.size(); ++i) absl::StrAppend(&out, i == 0 ? " " : ", ", i, " : ", slots[i]);
    absl::StrAppend(&out, " }\n  }\n");
    const std::string match = absl::StrCat(route.protocol, " dport ", route.public_port, " fib daddr type local");
    switch (route.split) {
      case TrafficSplit::kConnection:
        absl::StrAppend(&rules, "    ", match, " redirect to :numgen random mod 100 map @", map_name, "\n");
        break;
      case TrafficSplit::kClient:
        // One rule per address family, since the hash reads the address
        // itself; each hashes only the source address, with a fixed seed,
        // so a client's bucket survives rewrites, restarts and reboots.
        absl::StrAppend(&rules, "    meta nfproto ipv4 ", match, " redirect to :jhash ip saddr mod 100 seed ",
                        kNftClientHashSeed, " map @", map_name, "\n");
        absl::StrAppend(&rules, "    meta nfproto ipv6 ", match, " redirect to :jhash ip6 saddr mod 100 seed ",
                        kNftClientHashSeed, " map @", map_name, "\n");
        break;
    }
  }
  absl::StrAppend(&out, "  chain prerouting {\n", "    type nat hook prerouting priority dstnat; policy accept;\n",
                  rules, "  }\n");
  absl::StrAppend(&out, "  chain output {\n", "    type nat hook output priority -100; policy accept;\n", rules,
                  "  }\n");
  // Every redirected connection ends in input (the redirect sends it to
  // this host), once, whether it came from outside (prerouting) or from
  // here (output, then prerouting again on lo); there its destination is the
  // backend the nat chains chose.
  absl::StrAppend(&out, "  chain count {\n", "    type filter hook input priority filter; policy accept;\n", counting,
                  "  }\n}\n");
  return out;
}

absl::StatusOr<std::unique_ptr<PortMapper>> make_nft_mapper(const PortMapperOptions& options) {
  if (!valid_table_name(options.table)) {
    return absl::InvalidArgumentError(absl::StrCat("port mapper table name \"", options.table,
                                                   "\" is invalid: use 1-16 letters, digits and '_', "
                                                   "starting with a letter"));
  }
  auto nft = find_executable(options.nft_bin);
  if (!nft) {
    return absl::FailedPreconditionError(absl::StrCat(
        "nftables port mapper: cannot find the nft program \"", options.nft_bin,
        "\" (searched PATH, /usr/local/sbin, /usr/sbin, /sbin); install the nftables package, or set the "
        "port mapper backend to iptables"));
  }
  std::string conntrack = find_executable(options.conntrack_bin).value_or("");
  auto netlink = NftNetlink::open();
  if (!netlink.ok()) {
    return absl::Status(netlink.status().code(),
                        absl::StrCat("nftables port mapper: ", netlink.status().message()));
  }
  if (auto gen = (*netlink)->get_generation(); !gen.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "nftables port mapper: the kernel does not answer nf_tables requests (", gen.status().message(),
        "); load nf_tables or set the port mapper backend to iptables"));
  }
  return std::unique_ptr<PortMapper>(
      new NftMapper(options.table, *nft, std::move(conntrack), std::move(*netlink)));
}

}  // namespace tern
