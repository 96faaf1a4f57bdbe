#pragma once

// Moving existing UDP flows after a port-mapping switch. A redirected UDP
// "connection" is a conntrack entry; until it times out, its packets keep
// going to the backend chosen for its first packet. Deleting the entries for a
// public port makes the next packet of every flow take the new mapping.
// (TCP connections are left alone: they drain on the slot they started on.)

#include <cstdint>
#include <string>
#include <vector>

#include "agent/port_mapper.h"

namespace tern {

// The public UDP ports whose traffic split differs between `before` and
// `after`: a route added, removed, or with other backends or weights (a
// backend with weight 0 counts as absent, and order does not matter), or
// whose flows are now assigned a side another way (by client instead of at
// random, or the client split's buckets laid out in another order). Sorted.
std::vector<uint16_t> udp_ports_to_reset(const DesiredMapping& before, const DesiredMapping& after);

// Runs `conntrack -D -p udp --orig-port-dst <port>` for each port. Never
// fails: a missing conntrack binary (empty `conntrack_bin`) or a failed run is
// logged as a warning, since the switch itself has already happened and the
// flows only stay on the old backend until their entries time out.
void delete_udp_flows(const std::string& conntrack_bin, const std::vector<uint16_t>& ports);

}  // namespace tern
