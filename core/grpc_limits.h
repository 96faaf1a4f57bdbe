#pragma once

namespace tern {

// The largest gRPC message any Tern process sends or accepts, on every
// channel and server: the coordinator's (ternctl's requests, the agent
// streams, artifact fetches) and the agent's (its link and its artifact
// fetches). One number for both sides, so an agent can always receive what
// the coordinator may send it: a message one side may send and the other
// may not receive would break the stream and, on the agent link, make the
// agent reconnect to receive it again, forever.
//
// What travels is far smaller: artifact chunks are 64 KiB and service specs
// at most kMaxServiceSpecBytes (core/service_spec.h); statuses and host
// lists grow with the fleet, hence the headroom.
inline constexpr int kMaxGrpcMessageBytes = 16 << 20;

// The largest message the coordinator accepts: requests, agent messages
// (at most 256 KiB, see coordinator/agent_stream.h), upload chunks (64 KiB)
// and specs (kMaxServiceSpecBytes). Receiving is what costs the
// coordinator; it still sends up to kMaxGrpcMessageBytes.
inline constexpr int kMaxCoordinatorRequestBytes = 1 << 20;

}  // namespace tern
