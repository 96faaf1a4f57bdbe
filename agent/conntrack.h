#pragma once

// Moving existing UDP flows after a port-mapping switch. A redirected UDP
// "connection" is a conntrack entry; until it times out, its packets keep
// going to the backend chosen for its first packet. Deleting the entries for a
// public port makes the next packet of every flow take the new mapping.
// (TCP connections are left alone: they drain on the slot they started on.)

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "agent/port_mapper.h"

namespace tern {

// The public UDP ports whose traffic split differs between `before` and
// `after`: a route added, removed, or with other backends or weights (a
// backend with weight 0 counts as absent, and order does not matter), or
// whose flows are now assigned a side another way (by client instead of at
// random, or the client split's buckets laid out in another order). Sorted.
std::vector<uint16_t> udp_ports_to_reset(const DesiredMapping& before, const DesiredMapping& after);

// The TCP backends that stop receiving new connections between `before` and
// `after` (live, weight > 0, then weight 0 or gone), as (public port,
// backend port) pairs. Sorted.
std::vector<std::pair<uint16_t, uint16_t>> tcp_backends_left(const DesiredMapping& before, const DesiredMapping& after);

// Deletes the conntrack entries of connection attempts to those backends
// that are still unanswered (state SYN_SENT: the SYN was dropped, say by a
// full SYN queue, and the client will retransmit it). Otherwise the
// retransmitted SYN follows the old entry to the old slot, which is about to
// stop, and the client is refused; deleted, it takes the new mapping.
// Answered attempts and established connections are left alone (they drain
// where they are). Never fails, like delete_udp_flows.
void delete_unanswered_tcp_flows(const std::string& conntrack_bin,
                                 const std::vector<std::pair<uint16_t, uint16_t>>& backends);

// Runs `conntrack -D -p udp --orig-port-dst <port>` for each port. Never
// fails: a missing conntrack binary (empty `conntrack_bin`) or a failed run is
// logged as a warning, since the switch itself has already happened and the
// flows only stay on the old backend until their entries time out.
void delete_udp_flows(const std::string& conntrack_bin, const std::vector<uint16_t>& ports);

}  // namespace tern
