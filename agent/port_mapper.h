#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/service_spec.h"

namespace tern {

// One public port of one service and where its new connections go.
struct PortRoute {
  std::string service;     // service name: [a-z0-9][a-z0-9-]{0,31}
  std::string protocol;    // "tcp" or "udp"
  uint16_t public_port = 0;
  // Up to two backends (the slots). Weights are 0-100 and sum to 100; a
  // backend with weight 0 may be listed or left out. An empty list means the
  // public port is not mapped at all (connections reach whatever listens on it).
  struct Backend {
    uint16_t port = 0;
    uint32_t weight = 0;
    friend bool operator==(const Backend&, const Backend&) = default;
  };
  std::vector<Backend> backends;
  // How the weights divide new connections. Both kinds use the same 100
  // buckets, laid out as weight_slots() says; kConnection draws a bucket at
  // random per connection, kClient takes it from a fixed hash of the client's
  // source address, so a client stays on one backend while the weights hold,
  // and while the first backend's weight only grows it never leaves it.
  TrafficSplit split = TrafficSplit::kConnection;

  friend bool operator==(const PortRoute&, const PortRoute&) = default;
};

// The whole mapping the agent wants in force on this host.
struct DesiredMapping {
  std::vector<PortRoute> routes;
  friend bool operator==(const DesiredMapping&, const DesiredMapping&) = default;
};

absl::Status validate(const DesiredMapping& mapping);

// New connections the kernel sent one backend of one route: counted by the
// mapper's own rules from the first time it wrote them, and carried across
// its rewrites, so the count only grows while the agent runs. (It starts
// over when the agent restarts.)
struct BackendConnections {
  std::string service;
  std::string protocol;
  uint16_t public_port = 0;
  uint16_t backend_port = 0;
  uint64_t connections = 0;
  friend bool operator==(const BackendConnections&, const BackendConnections&) = default;
};

// Turns the kernel's packet counters, which start over whenever the rules
// holding them are rewritten (or removed by someone else), into counts that
// only grow.
class CounterCarry {
 public:
  // Counter `name` reads `now`: the running total. A reading below the last
  // one means the counter started over.
  uint64_t observe(const std::string& name, uint64_t now);
  // The rules are about to be rewritten; `last` holds the counters' final
  // readings (empty when they could not be read).
  void rewriting(const std::map<std::string, uint64_t>& last);

 private:
  std::map<std::string, uint64_t> carried_, last_;
};

// Owns the host's port mapping: new connections to a public port (from remote
// clients through prerouting and from local ones through output) are
// redirected to a slot's port. Implementations touch only rules they created.
//
// apply() is declarative and idempotent: it works out the change from what it
// applied last and makes it in one atomic kernel transaction; calling it twice
// with the same mapping changes nothing. reconcile() re-creates the agent's
// rules if someone else removed or altered them and is cheap when nothing
// changed. Not thread-safe: the owner serialises calls.
class PortMapper {
 public:
  virtual ~PortMapper() = default;
  virtual absl::Status apply(const DesiredMapping& desired) = 0;
  // Returns true when it had to restore the agent's rules.
  virtual absl::StatusOr<bool> reconcile() = 0;
  // Removes everything the agent created (the table or chains and the jump rules).
  virtual absl::Status remove_all() = 0;
  // The mapping last applied successfully.
  virtual const DesiredMapping& current() const = 0;
  // Per backend of every route of current(), including backends at weight 0,
  // the new connections counted (see BackendConnections). An error when the
  // kernel's counters cannot be read.
  virtual absl::StatusOr<std::vector<BackendConnections>> connection_counts() = 0;
  virtual std::string name() const = 0;
};

struct PortMapperOptions {
  std::string backend = "nftables";  // "nftables" or "iptables"
  // nftables: the table name (family inet). iptables: the chain-name prefix.
  std::string table = "tern";
  // Where the nft / iptables-restore / iptables / conntrack binaries are looked up.
  std::string nft_bin = "nft";
  std::string iptables_restore_bin = "iptables-restore";
  std::string iptables_bin = "iptables";
  std::string conntrack_bin = "conntrack";
};

absl::StatusOr<std::unique_ptr<PortMapper>> make_port_mapper(const PortMapperOptions& options);

}  // namespace tern
