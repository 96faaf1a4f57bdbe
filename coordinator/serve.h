#pragma once

#include <type_traits>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/event_loop.h"
#include "core/grpc_status.h"
#include "coordinator/auth.h"
#include "tern/v1/admin.pb.h"

namespace tern {

// The shape of every unary handler: authorize the call by its rule (see
// rule()), then run `work` on the event loop, which owns the state, and
// finish with the status it returns. `work` may take the caller's
// Principal. A refused call never reaches the loop; no gRPC thread blocks.
template <class Work>
grpc::ServerUnaryReactor* serve_unary(grpc::CallbackServerContext* ctx, const Authenticator& auth, EventLoop& loop,
                                      Rpc rpc, Work work) {
  auto who = auth.authorize(*ctx, rpc);
  if (!who.ok()) return refuse_unary(ctx, who.status());
  auto* reactor = ctx->DefaultReactor();
  loop.post([reactor, work = std::move(work), who = *std::move(who)]() mutable {
    absl::Status st;
    if constexpr (std::is_invocable_v<Work&, const tern::v1::Principal&>) {
      st = work(std::as_const(who));
    } else {
      st = work();
    }
    reactor->Finish(to_grpc(st));
  });
  return reactor;
}

// Moves a result into the response: `*out = *value`, or the error.
template <class T>
absl::Status reply(absl::StatusOr<T> value, T* out) {
  if (!value.ok()) return value.status();
  *out = *std::move(value);
  return absl::OkStatus();
}

}  // namespace tern
