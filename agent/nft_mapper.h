#pragma once

// The nftables PortMapper: one table (family inet, so IPv4 and IPv6) that
// holds, per mapped route, a map from a bucket 0..99 to a backend port and a
// redirect rule in a prerouting and an output nat chain that looks the bucket
// up: `numgen random mod 100` for a per-connection split, `jhash ip saddr mod
// 100` (and `ip6 saddr`, in a rule of its own) for a per-client one.
//
// apply() writes the whole table with one `nft -f -` run when routes appear or
// disappear or a route's split changes, and otherwise (a swap or re-weighting: the hot path) rewrites only
// the changed maps in one netlink transaction, without forking. After each
// change it records the ruleset generation. reconcile() (and the hot path)
// compare the kernel's generation with it: when anyone committed anything
// since -- to any table, so also unrelated changes by docker or firewalld --
// the whole table is rewritten (atomically; established connections keep
// their NAT). A UDP route whose split changed gets its conntrack entries
// deleted (see conntrack.h).
//
// Each backend of a route (weight 0 included) also has a named counter, which
// a filter chain on the input hook bumps for each new connection redirected
// to it: the kernel's count of the split (connection_counts()).
//
// The mapper works in the network namespace of the thread that creates it
// (its netlink socket is bound there); call it from that thread's namespace.

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/port_mapper.h"

namespace tern {

// Errors: FAILED_PRECONDITION when the nft binary is missing or the kernel has
// no nf_tables; INVALID_ARGUMENT for a bad table name.
absl::StatusOr<std::unique_ptr<PortMapper>> make_nft_mapper(const PortMapperOptions& options);

// --- The pure parts, exposed for tests. ---

// The seed of the client split's jhash. Fixed, so that a client hashes to the
// same bucket whenever and wherever the table is written: across rewrites,
// agent restarts, and on every host of the fleet.
inline constexpr char kNftClientHashSeed[] = "0x7465726e";

// The backend port for each bucket 0..99 of a route with backends: the
// backends in order take consecutive runs of keys as long as their weights
// (weights 30, 70 on A, B: keys 0..29 -> A, 30..99 -> B).
std::array<uint16_t, 100> weight_slots(const PortRoute& route);

// The map of a route: "<protocol>_<public port>_<service>", e.g. tcp_8080_web
// (the protocol first, since nft names cannot start with a digit and a service
// name can).
std::string nft_map_name(const PortRoute& route);

// The counter of one backend of a route: "c_<map>_<backend port>".
std::string nft_counter_name(const PortRoute& route, uint16_t backend_port);

// The `nft -f` script that replaces table `table` (family inet) with the one
// for `mapping` in one transaction.
std::string nft_ruleset(const std::string& table, const DesiredMapping& mapping);

}  // namespace tern
