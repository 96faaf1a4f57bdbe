#pragma once

// The iptables PortMapper, for hosts without nft. IPv4 only (ip6tables is not
// driven). In the nat table it owns every chain whose name starts with
// "<PREFIX>-" (PREFIX: the table option upper-cased, e.g. TERN):
//   <PREFIX>-PREROUTING, <PREFIX>-OUTPUT  one rule per mapped route:
//       -p tcp -m tcp --dport 8080 -m addrtype --dst-type LOCAL -j <route chain>
//   <PREFIX>-<service>-<protocol>-<port>  (the route chain) the split:
//       -p tcp -m statistic --mode random --probability P -j REDIRECT --to-ports <second>
//       -p tcp -j REDIRECT --to-ports <first>
//   or, for a client split (see iptables_client_matches()):
//       -p tcp -m cluster ... -j REDIRECT --to-ports <first>   (one or two rules)
//       -p tcp -j REDIRECT --to-ports <second>
// plus one jump rule each in the built-in PREROUTING and OUTPUT chains
// (comment "tern-agent"), and it deletes any other rule that jumps into its
// chains.
//
// The packet counter of each REDIRECT rule is its backend's count of new
// connections (only a connection's first packet passes the nat table).
//
// Every apply()/reconcile() reads our part of the nat table back
// (`iptables -w -t nat -S`) and, only if it differs from what the mapping
// needs, rewrites it with one `iptables-restore --noflush -w` run: one atomic
// commit that declares (so flushes) and refills our chains, deletes the chains
// of removed routes, and inserts missing or deletes duplicate jump rules.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/port_mapper.h"

namespace tern {

// Errors: FAILED_PRECONDITION when iptables or iptables-restore is missing or
// `iptables -t nat -S` does not work on this host; INVALID_ARGUMENT for a bad
// table name.
absl::StatusOr<std::unique_ptr<PortMapper>> make_iptables_mapper(const PortMapperOptions& options);

// --- The pure parts, exposed for tests. ---

// "tern" -> "TERN".
std::string iptables_chain_prefix(const std::string& table);

// "<PREFIX>-<service>-<protocol>-<port>", or, when that is longer than the 28
// characters iptables allows, "<PREFIX>-<start of service>-<8 hex digits of a
// hash of service/protocol/port>".
std::string iptables_route_chain(const std::string& prefix, const PortRoute& route);

// Our part of the nat table, in the canonical form `iptables -S` prints.
struct IptablesNatState {
  // Each of our chains with its rules ("-A <chain> ..."), in order.
  std::map<std::string, std::vector<std::string>> chains;
  // Rules in other chains that jump to one of ours ("-A PREROUTING ..."), sorted.
  std::vector<std::string> jumps;

  friend bool operator==(const IptablesNatState&, const IptablesNatState&) = default;
};

// `iptables -t nat -S -v` output without its "-c <packets> <bytes>" counters
// (so in the form -S prints), and, into `redirects`, the packets of each
// REDIRECT rule in a chain starting with "<prefix>-", by "<chain>:<to-port>".
std::string strip_iptables_counters(const std::string& prefix, const std::string& listing,
                                    std::map<std::string, uint64_t>& redirects);

// Picks our part out of `iptables -t nat -S` output.
IptablesNatState parse_iptables_nat(const std::string& prefix, const std::string& listing);

// The seeds of the client split's hashes: fixed, so that a client keeps its
// side across rewrites, agent restarts and hosts.
inline constexpr char kIptablesClientHashSeed[] = "0x7465726e";
inline constexpr char kIptablesClientFineHashSeed[] = "0x6e726574";

// The client split: iptables has no hash-to-map lookup like nft's jhash, but
// the cluster match (xt_cluster) hashes a connection's original source
// address (jhash with a seed) into up to 32 buckets and matches a bitmask of
// them. `percent` of the clients (0-100) are matched by the returned
// `-m cluster ...` match sets, each the matches of one REDIRECT rule: one
// rule per bucket of 25 of 4 points, and, within the next bucket, 4 buckets
// of 1 point hashed with another seed. A client matched at some percent is
// matched at every higher one, so a growing weight only adds clients.
std::vector<std::string> iptables_client_matches(uint32_t percent);

// `rule` (in the form -S prints) as iptables-restore takes it back. The two
// differ for the cluster match: iptables 1.8.9 prints the matched buckets as
// `--cluster-local-nodemask 0x...` but refuses a mask above 32 there (it
// checks it as if it were a bucket number), so a mask of one bucket above 32
// is written as `--cluster-local-node <bucket + 1>`, which the kernel keeps
// and -S prints as that same mask.
std::string iptables_restorable(const std::string& rule);

// What `mapping` needs.
IptablesNatState expected_iptables_nat(const std::string& prefix, const DesiredMapping& mapping);

// The iptables-restore input (for --noflush) that turns `actual` into `wanted`.
std::string iptables_restore_script(const IptablesNatState& actual, const IptablesNatState& wanted);

}  // namespace tern
