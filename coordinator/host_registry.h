#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/clock.h"
#include "core/label_selector.h"
#include "core/metrics.h"
#include "coordinator/host_store.h"
#include "tern/v1/common.pb.h"

namespace tern {

// The fleet registry: which hosts exist, which are connected, and when each
// was last heard from. Every state change is written to the store (with a
// history event) before it is visible.
//
// Transitions:
//   (new) / disconnected / unreachable --hello--> connected
//   connected --stream closed--> disconnected
//   connected | disconnected --silent longer than the grace--> unreachable
//   (coordinator restart) connected --load--> disconnected
//
// Not thread-safe: owned by the coordinator's event loop. Streams are named
// by a session id so that a late close of a superseded stream cannot mark a
// freshly reconnected host as disconnected.
class HostRegistry {
 public:
  struct Options {
    // A host silent for longer than this is unreachable.
    Millis unreachable_after{30'000};
    // How stale the persisted last_seen of a heartbeating host may get.
    Millis last_seen_flush{10'000};
  };

  HostRegistry(HostStore& store, const Clock& clock, Options options, Metrics* metrics = nullptr);

  // Loads the persisted fleet; hosts recorded as connected become
  // disconnected (their streams died with the previous process) and every
  // host gets a full grace from now to reconnect.
  absl::Status load();

  struct HelloResult {
    // The session this host was using before, which the caller should close.
    std::optional<uint64_t> superseded_session;
  };
  absl::StatusOr<HelloResult> on_hello(uint64_t session, const std::string& host_id, const Labels& labels,
                                       const std::string& agent_version, const std::string& peer);
  // True when this heartbeat brought the host back from unreachable (a
  // stream that went silent, e.g. a partition, and recovered).
  bool on_heartbeat(uint64_t session, const std::string& host_id);
  // What the host's agent says about itself beyond its record, kept in
  // memory only: how it runs slots (from its hello) and what they use (from
  // its last heartbeat).
  void set_slot_placement(const std::string& host_id, const std::string& placement);
  // Cordons a host (left out of rollouts started from now on) or lets it
  // back in, recorded with a host event. NOT_FOUND for an unknown host.
  absl::Status set_cordon(const std::string& host_id, bool cordoned, const std::string& reason,
                          const std::string& by);
  void set_usage(uint64_t session, const std::string& host_id,
                 const google::protobuf::RepeatedPtrField<tern::v1::SlotUsage>& usage);
  absl::Status on_stream_closed(uint64_t session, const std::string& host_id, const std::string& reason);
  // Marks silent hosts unreachable and flushes stale last_seen values.
  absl::Status tick();

  struct Entry {
    HostRecord record;
    uint64_t session = 0;  // 0: no open stream
    TimePoint heard_from{};  // last sign of life, never older than our start
    TimePoint persisted_last_seen{};
    bool counted = false;  // included in state_counts_
    std::string slot_placement;
    std::vector<tern::v1::SlotUsage> usage;  // cleared when the stream closes
  };
  std::vector<const Entry*> list(const LabelSelector& selector) const;
  const Entry* find(const std::string& host_id) const;
  size_t connected_count() const;

 private:
  absl::Status transition(Entry& e, HostState to, const std::string& kind, const std::string& detail);
  void publish_gauges();

  HostStore& store_;
  const Clock& clock_;
  Options options_;
  Metrics* metrics_;
  std::map<std::string, Entry> hosts_;
  // Hosts per state, kept incrementally so a reconnect storm stays O(1) per host.
  int64_t state_counts_[3] = {0, 0, 0};
  Metrics::Value* state_gauges_[3] = {nullptr, nullptr, nullptr};
};

}  // namespace tern
