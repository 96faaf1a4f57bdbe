#include "agent/iptables_mapper.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "agent/conntrack.h"
#include "agent/exec.h"
#include "core/status_fmt.h"

namespace tern {
namespace {

constexpr Millis kIptablesTimeout{30'000};
// iptables chain names are at most 28 characters (XT_EXTENSION_MAXNAMELEN - 1).
constexpr size_t kMaxChainName = 28;
constexpr char kJumpComment[] = "tern-agent";

bool valid_table_name(const std::string& name) {
  if (name.empty() || name.size() > 16) return false;
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!letter(name[0])) return false;
  for (char c : name) {
    if (!letter(c) && !(c >= '0' && c <= '9') && c != '_') return false;
  }
  return true;
}

uint32_t fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

// Splits an `iptables -S` line into words. A "quoted string" is one word;
// inside it a backslash escapes the next character (iptables prints comments
// that way).
std::vector<std::string> words(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false, quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '\\' && i + 1 < line.size()) {
        cur += line[++i];
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) out.push_back(std::move(cur));
      cur.clear();
      in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (in_word) out.push_back(std::move(cur));
  return out;
}

// "-A CHAIN rest" -> "rest".
std::string rule_spec(const std::string& line, const std::string& chain) {
  return line.substr(std::min(line.size(), 3 + chain.size() + 1));
}

// The probability as iptables prints it back: the kernel keeps it as a 31-bit
// fraction (libxt_statistic: lround(0x80000000 * p)), printed with %.11f, so
// 0.3 reads back as 0.29999999981. Writing that form keeps what we write and
// what we read back identical.
std::string probability(uint32_t percent) {
  constexpr double kScale = 2147483648.0;
  double fixed = static_cast<double>(std::lround(kScale * percent / 100.0));
  return absl::StrFormat("%.11f", fixed / kScale);
}

// Whether expected_iptables_nat(mapping) has a cluster match.
bool uses_cluster_match(const DesiredMapping& mapping) {
  for (const auto& route : mapping.routes) {
    if (route.split != TrafficSplit::kClient) continue;
    if (std::count_if(route.backends.begin(), route.backends.end(), [](const auto& b) { return b.weight > 0; }) > 1) {
      return true;
    }
  }
  return false;
}

class IptablesMapper final : public PortMapper {
 public:
  IptablesMapper(std::string prefix, std::string iptables_bin, std::string restore_bin, std::string conntrack_bin)
      : prefix_(std::move(prefix)),
        iptables_bin_(std::move(iptables_bin)),
        restore_bin_(std::move(restore_bin)),
        conntrack_bin_(std::move(conntrack_bin)) {}

  absl::Status apply(const DesiredMapping& desired) override {
    if (auto st = validate(desired); !st.ok()) return st;
    auto changed = sync(expected_iptables_nat(prefix_, desired));
    if (!changed.ok()) {
      if (!uses_cluster_match(desired) || !absl::StrContains(changed.status().message(), "cluster")) {
        return changed.status();
      }
      return absl::Status(changed.status().code(),
                          absl::StrCat(changed.status().message(), " (a client split needs the kernel's cluster match, "
                                       "xt_cluster: check `modprobe xt_cluster`, or use the nftables backend)"));
    }
    DesiredMapping before = in_force_ ? std::move(current_) : DesiredMapping{};
    current_ = desired;
    in_force_ = true;
    delete_udp_flows(conntrack_bin_, udp_ports_to_reset(before, current_));
    delete_unanswered_tcp_flows(conntrack_bin_, tcp_backends_left(before, current_));
    return absl::OkStatus();
  }

  absl::StatusOr<bool> reconcile() override {
    if (!in_force_) return false;
    auto changed = sync(expected_iptables_nat(prefix_, current_));
    if (!changed.ok()) return changed.status();
    if (*changed) {
      spdlog::info("iptables: the nat rules of tern-agent (chains {}-*) were changed by someone else; restored them",
                   prefix_);
    }
    return *changed;
  }

  absl::Status remove_all() override {
    auto changed = sync(IptablesNatState{});
    if (!changed.ok()) return changed.status();
    DesiredMapping before = std::move(current_);
    current_ = {};
    in_force_ = false;
    delete_udp_flows(conntrack_bin_, udp_ports_to_reset(before, current_));
    delete_unanswered_tcp_flows(conntrack_bin_, tcp_backends_left(before, current_));
    return absl::OkStatus();
  }

  const DesiredMapping& current() const override { return current_; }
  std::string name() const override { return "iptables"; }

  absl::StatusOr<std::vector<BackendConnections>> connection_counts() override {
    std::map<std::string, uint64_t> kernel;
    if (in_force_) {
      auto read = read_state(&kernel);
      if (!read.ok()) return read.status();
    }
    std::vector<BackendConnections> out;
    for (const auto& route : current_.routes) {
      const std::string chain = iptables_route_chain(prefix_, route);
      for (const auto& b : route.backends) {
        const std::string name = absl::StrCat(chain, ":", b.port);
        auto now = kernel.find(name);
        out.push_back({route.service, route.protocol, route.public_port, b.port,
                       counters_.observe(name, now == kernel.end() ? 0 : now->second)});
      }
    }
    return out;
  }

 private:
  absl::StatusOr<IptablesNatState> read_state(std::map<std::string, uint64_t>* redirects = nullptr) {
    std::vector<std::string> argv{iptables_bin_, "-w", "-t", "nat", "-S", "-v"};
    auto result = run_command(argv, {}, kIptablesTimeout);
    if (!result.ok()) {
      return absl::Status(result.status().code(),
                          absl::StrCat("iptables: cannot list the nat table: ", result.status().message()));
    }
    if (!result->success()) {
      return absl::UnavailableError(
          absl::StrCat("iptables: cannot list the nat table: ", describe_failure(argv, *result)));
    }
    std::map<std::string, uint64_t> counts;
    std::string listing = strip_iptables_counters(prefix_, result->out, counts);
    if (redirects) *redirects = std::move(counts);
    return parse_iptables_nat(prefix_, listing);
  }

  // Makes our part of the nat table equal `wanted`; returns whether it had
  // to change anything.
  absl::StatusOr<bool> sync(const IptablesNatState& wanted) {
    std::map<std::string, uint64_t> counts;
    auto actual = read_state(&counts);
    if (!actual.ok()) return actual.status();
    if (*actual == wanted) return false;
    // Rewritten chains count from zero.
    counters_.rewriting(counts);
    std::vector<std::string> argv{restore_bin_, "--noflush", "-w"};
    auto result = run_command(argv, iptables_restore_script(*actual, wanted), kIptablesTimeout);
    if (!result.ok()) {
      return absl::Status(result.status().code(),
                          absl::StrCat("iptables: updating the nat rules failed: ", result.status().message()));
    }
    if (!result->success()) {
      return absl::InternalError(absl::StrCat("iptables: updating the nat rules failed (nothing was changed): ",
                                              describe_failure(argv, *result)));
    }
    return true;
  }

  const std::string prefix_;
  const std::string iptables_bin_;
  const std::string restore_bin_;
  const std::string conntrack_bin_;  // empty: not installed

  DesiredMapping current_;
  // Whether the rules for current_ are believed to be in force.
  bool in_force_ = false;
  CounterCarry counters_;
};

}  // namespace

std::string iptables_chain_prefix(const std::string& table) { return absl::AsciiStrToUpper(table); }

std::string iptables_route_chain(const std::string& prefix, const PortRoute& route) {
  std::string full = absl::StrCat(prefix, "-", route.service, "-", route.protocol, "-", route.public_port);
  if (full.size() <= kMaxChainName) return full;
  std::string hash = absl::StrFormat("%08x", fnv1a(absl::StrCat(route.service, "/", route.protocol, "/",
                                                                 route.public_port)));
  size_t budget = kMaxChainName - prefix.size() - 1 - 1 - hash.size();
  return absl::StrCat(prefix, "-", route.service.substr(0, budget), "-", hash);
}

std::string strip_iptables_counters(const std::string& prefix, const std::string& listing,
                                    std::map<std::string, uint64_t>& redirects) {
  const std::string ours = prefix + "-";
  // " -c <digits> <digits>", followed by a space or the end of the line.
  auto counters_at = [](const std::string& line, size_t at, uint64_t& packets) -> size_t {
    size_t i = at + 4, p0 = i;
    while (i < line.size() && absl::ascii_isdigit(static_cast<unsigned char>(line[i]))) ++i;
    if (i == p0 || i >= line.size() || line[i] != ' ') return 0;
    if (!absl::SimpleAtoi(absl::string_view(line).substr(p0, i - p0), &packets)) return 0;
    size_t b0 = ++i;
    while (i < line.size() && absl::ascii_isdigit(static_cast<unsigned char>(line[i]))) ++i;
    if (i == b0 || (i < line.size() && line[i] != ' ')) return 0;
    return i - at;
  };
  std::string out;
  for (absl::string_view raw : absl::StrSplit(listing, '\n', absl::SkipWhitespace())) {
    std::string line(absl::StripTrailingAsciiWhitespace(raw));
    // iptables prints the counters after the matches (a quoted comment among
    // them) and before the target, so they are the last such words.
    std::optional<uint64_t> packets;
    for (size_t at = line.rfind(" -c "); at != std::string::npos;) {
      uint64_t p = 0;
      if (size_t len = counters_at(line, at, p); len > 0) {
        line.erase(at, len);
        packets = p;
        break;
      }
      at = at == 0 ? std::string::npos : line.rfind(" -c ", at - 1);
    }
    auto w = words(line);
    if (packets && w.size() >= 2 && w[0] == "-A" && absl::StartsWith(w[1], ours)) {
      for (size_t i = 2; i + 1 < w.size(); ++i) {
        if (w[i] == "--to-ports") redirects[absl::StrCat(w[1], ":", w[i + 1])] += *packets;
      }
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

IptablesNatState parse_iptables_nat(const std::string& prefix, const std::string& listing) {
  const std::string ours = prefix + "-";
  IptablesNatState state;
  for (absl::string_view raw : absl::StrSplit(listing, '\n', absl::SkipWhitespace())) {
    std::string line(absl::StripTrailingAsciiWhitespace(raw));
    auto w = words(line);
    if (w.size() < 2) continue;
    const std::string& chain = w[1];
    bool our_chain = absl::StartsWith(chain, ours);
    if (w[0] == "-N" && our_chain) {
      state.chains[chain];
    } else if (w[0] == "-A") {
      if (our_chain) {
        state.chains[chain].push_back(line);
        continue;
      }
      for (size_t i = 2; i + 1 < w.size(); ++i) {
        if ((w[i] == "-j" || w[i] == "-g") && absl::StartsWith(w[i + 1], ours)) {
          state.jumps.push_back(line);
          break;
        }
      }
    }
  }
  std::sort(state.jumps.begin(), state.jumps.end());
  return state;
}

std::vector<std::string> iptables_client_matches(uint32_t percent) {
  // 25 coarse buckets of 4 points each, then, within the coarse bucket that
  // is only partly in, 4 fine ones of a point: the share is exact to the
  // point. One coarse bucket per rule: see iptables_restorable() for why
  // masks of several are not used.
  constexpr uint32_t kCoarse = 25, kFine = 4;
  static_assert(kCoarse * kFine == 100 && kCoarse <= 32, "xt_cluster takes at most 32 nodes");
  auto cluster = [](uint32_t mask, uint32_t nodes, const char* seed) {
    return absl::StrFormat("-m cluster --cluster-local-nodemask 0x%08x --cluster-total-nodes %u --cluster-hash-seed %s",
                           mask, nodes, seed);
  };
  percent = std::min<uint32_t>(percent, 100);
  const uint32_t whole = percent / kFine, part = percent % kFine;
  std::vector<std::string> out;
  for (uint32_t node = 0; node < whole; ++node) out.push_back(cluster(1u << node, kCoarse, kIptablesClientHashSeed));
  if (part > 0) {
    out.push_back(absl::StrCat(cluster(1u << whole, kCoarse, kIptablesClientHashSeed), " ",
                               cluster((1u << part) - 1, kFine, kIptablesClientFineHashSeed)));
  }
  return out;
}

std::string iptables_restorable(const std::string& rule) {
  const std::string kMask = "--cluster-local-nodemask ";
  std::string out;
  size_t from = 0;
  for (size_t at = rule.find(kMask); at != std::string::npos; at = rule.find(kMask, from)) {
    const size_t value = at + kMask.size();
    const size_t stop = std::min(rule.find(' ', value), rule.size());
    uint32_t mask = 0;
    absl::StrAppend(&out, absl::string_view(rule).substr(from, at - from));
    if (absl::SimpleHexAtoi(absl::string_view(rule).substr(value, stop - value), &mask) && mask > 32 &&
        std::has_single_bit(mask)) {
      absl::StrAppend(&out, "--cluster-local-node ", std::countr_zero(mask) + 1);
    } else {
      absl::StrAppend(&out, absl::string_view(rule).substr(at, stop - at));
    }
    from = stop;
  }
  absl::StrAppend(&out, absl::string_view(rule).substr(from));
  return out;
}

IptablesNatState expected_iptables_nat(const std::string& prefix, const DesiredMapping& mapping) {
  IptablesNatState state;
  const std::string pre = prefix + "-PREROUTING";
  const std::string out = prefix + "-OUTPUT";
  auto& pre_rules = state.chains[pre];
  auto& out_rules = state.chains[out];
  for (const auto& route : mapping.routes) {
    if (route.backends.empty()) continue;
    const std::string chain = iptables_route_chain(prefix, route);
    const std::string& p = route.protocol;
    std::string match = absl::StrCat("-p ", p, " -m ", p, " --dport ", route.public_port,
                                     " -m addrtype --dst-type LOCAL -j ", chain);
    pre_rules.push_back(absl::StrCat("-A ", pre, " ", match));
    out_rules.push_back(absl::StrCat("-A ", out, " ", match));

    std::vector<PortRoute::Backend> live;
    for (const auto& b : route.backends) {
      if (b.weight > 0) live.push_back(b);
    }
    auto& rules = state.chains[chain];
    if (live.size() == 2 && route.split == TrafficSplit::kClient) {
      for (const auto& cluster : iptables_client_matches(live[0].weight)) {
        rules.push_back(absl::StrCat("-A ", chain, " -p ", p, " ", cluster, " -j REDIRECT --to-ports ", live[0].port));
      }
      rules.push_back(absl::StrCat("-A ", chain, " -p ", p, " -j REDIRECT --to-ports ", live[1].port));
      continue;
    }
    if (live.size() == 2) {
      rules.push_back(absl::StrCat("-A ", chain, " -p ", p, " -m statistic --mode random --probability ",
                                   probability(live[1].weight), " -j REDIRECT --to-ports ", live[1].port));
    }
    rules.push_back(absl::StrCat("-A ", chain, " -p ", p, " -j REDIRECT --to-ports ", live[0].port));
  }
  for (const char* builtin : {"PREROUTING", "OUTPUT"}) {
    state.jumps.push_back(absl::StrCat("-A ", builtin, " -m comment --comment ", kJumpComment, " -j ", prefix, "-",
                                       builtin));
  }
  std::sort(state.jumps.begin(), state.jumps.end());
  return state;
}

std::string iptables_restore_script(const IptablesNatState& actual, const IptablesNatState& wanted) {
  std::string out = "*nat\n";
  // Declaring a chain under --noflush creates it or flushes it.
  for (const auto& [chain, rules] : wanted.chains) absl::StrAppend(&out, ":", chain, " - [0:0]\n");
  std::vector<std::string> stale;
  for (const auto& [chain, rules] : actual.chains) {
    if (!wanted.chains.contains(chain)) {
      stale.push_back(chain);
      absl::StrAppend(&out, ":", chain, " - [0:0]\n");
    }
  }
  for (const auto& [chain, rules] : wanted.chains) {
    for (const auto& rule : rules) absl::StrAppend(&out, iptables_restorable(rule), "\n");
  }
  // Jump rules: delete surplus ones (before the chains they point to go),
  // insert missing ones at the top.
  std::map<std::string, int> have, want;
  for (const auto& j : actual.jumps) ++have[j];
  for (const auto& j : wanted.jumps) ++want[j];
  for (const auto& [line, n] : have) {
    auto w = words(line);
    for (int i = want.contains(line) ? want[line] : 0; i < n; ++i) {
      absl::StrAppend(&out, "-D ", w[1], " ", rule_spec(line, w[1]), "\n");
    }
  }
  for (const auto& [line, n] : want) {
    auto w = words(line);
    for (int i = have.contains(line) ? have[line] : 0; i < n; ++i) {
      absl::StrAppend(&out, "-I ", w[1], " 1 ", rule_spec(line, w[1]), "\n");
    }
  }
  for (const auto& chain : stale) absl::StrAppend(&out, "-X ", chain, "\n");
  absl::StrAppend(&out, "COMMIT\n");
  return out;
}

absl::StatusOr<std::unique_ptr<PortMapper>> make_iptables_mapper(const PortMapperOptions& options) {
  if (!valid_table_name(options.table)) {
    return absl::InvalidArgumentError(absl::StrCat("port mapper table name \"", options.table,
                                                   "\" is invalid: use 1-16 letters, digits and '_', "
                                                   "starting with a letter (it becomes the iptables chain prefix)"));
  }
  auto find = [](const std::string& name) -> absl::StatusOr<std::string> {
    auto path = find_executable(name);
    if (!path) {
      return absl::FailedPreconditionError(absl::StrCat(
          "iptables port mapper: cannot find the program \"", name,
          "\" (searched PATH, /usr/local/sbin, /usr/sbin, /sbin); install the iptables package"));
    }
    return *path;
  };
  auto iptables = find(options.iptables_bin);
  if (!iptables.ok()) return iptables.status();
  auto restore = find(options.iptables_restore_bin);
  if (!restore.ok()) return restore.status();
  std::string conntrack = find_executable(options.conntrack_bin).value_or("");

  std::vector<std::string> argv{*iptables, "-w", "-t", "nat", "-S"};
  auto probe = run_command(argv, {}, kIptablesTimeout);
  if (!probe.ok() || !probe->success()) {
    std::string why = probe.ok() ? describe_failure(argv, *probe) : std::string(probe.status().message());
    return absl::FailedPreconditionError(
        absl::StrCat("iptables port mapper: the nat table is not usable on this host: ", why));
  }
  return std::unique_ptr<PortMapper>(
      new IptablesMapper(iptables_chain_prefix(options.table), *iptables, *restore, std::move(conntrack)));
}

}  // namespace tern
