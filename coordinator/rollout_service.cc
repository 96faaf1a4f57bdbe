#include "coordinator/rollout_service.h"

#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"
#include "core/rollout_spec.h"
#include "coordinator/update_stream.h"

namespace tern {

namespace {

// Validates a spec from the wire (defaults first, as for YAML).
absl::StatusOr<tern::v1::RolloutSpec> checked(const tern::v1::RolloutSpec& in) {
  tern::v1::RolloutSpec spec = in;
  apply_rollout_defaults(spec);
  if (auto st = validate_rollout_spec(spec); !st.ok()) return st;
  return spec;
}

}  // namespace

grpc::ServerUnaryReactor* RolloutServiceImpl::PlanRollout(grpc::CallbackServerContext* ctx,
                                                          const tern::v1::StartRolloutRequest* req,
                                                          tern::v1::RolloutPlan* resp) {
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
  auto* reactor = ctx->DefaultReactor();
  auto spec = checked(req->spec());
  if (!spec.ok()) {
    reactor->Finish(to_grpc(spec.status()));
    return reactor;
  }
  loop_.post([this, reactor, resp, s = *spec] {
    auto plan = control_.plan_rollout(s);
    if (!plan.ok()) return reactor->Finish(to_grpc(plan.status()));
    *resp = *plan;
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* RolloutServiceImpl::StartRollout(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::StartRolloutRequest* req,
                                                           tern::v1::Rollout* resp) {
  if (auto p = auth_.authorize(*ctx, Permission::kOperate); !p.ok()) return refuse_unary(ctx, p.status());
  auto* reactor = ctx->DefaultReactor();
  auto spec = checked(req->spec());
  if (!spec.ok()) {
    reactor->Finish(to_grpc(spec.status()));
    return reactor;
  }
  loop_.post([this, reactor, resp, s = *spec] {
    auto r = control_.start_rollout(s);
    if (!r.ok()) return reactor->Finish(to_grpc(r.status()));
    *resp = *r;
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* RolloutServiceImpl::GetRollout(grpc::CallbackServerContext* ctx,
                                                         const tern::v1::GetRolloutRequest* req,
                                                         tern::v1::Rollout* resp) {
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
  auto* reactor = ctx->DefaultReactor();
  loop_.post([this, reactor, req, resp] {
    auto r = control_.get_rollout(req->id());
    if (!r.ok()) return reactor->Finish(to_grpc(r.status()));
    *resp = *r;
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* RolloutServiceImpl::ListRollouts(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::ListRolloutsRequest* req,
                                                           tern::v1::ListRolloutsResponse* resp) {
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
  auto* reactor = ctx->DefaultReactor();
  loop_.post([this, reactor, req, resp] {
    auto rs = control_.list_rollouts(req->service(), req->active_only());
    if (!rs.ok()) return reactor->Finish(to_grpc(rs.status()));
    for (auto& r : *rs) *resp->add_rollouts() = std::move(r);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* RolloutServiceImpl::GetRolloutHistory(grpc::CallbackServerContext* ctx,
                                                                const tern::v1::GetRolloutRequest* req,
                                                                tern::v1::RolloutHistory* resp) {
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return refuse_unary(ctx, p.status());
  auto* reactor = ctx->DefaultReactor();
  loop_.post([this, reactor, req, resp] {
    if (auto r = control_.get_rollout(req->id()); !r.ok()) return reactor->Finish(to_grpc(r.status()));
    auto evs = control_.rollout_events(req->id(), 0);
    if (!evs.ok()) return reactor->Finish(to_grpc(evs.status()));
    for (auto& e : *evs) *resp->add_events() = std::move(e);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerWriteReactor<tern::v1::RolloutEvent>* RolloutServiceImpl::WatchRollout(
    grpc::CallbackServerContext* ctx, const tern::v1::WatchRolloutRequest* req) {
  if (auto p = auth_.authorize(*ctx, Permission::kRead); !p.ok()) return new RefusedWriter<tern::v1::RolloutEvent>(to_grpc(p.status()));
  using Stream = UpdateStream<tern::v1::RolloutEvent>;
  auto* stream = new Stream();
  auto sink = stream->sink();
  loop_.post([this, sink, id = req->id(), after = req->after_sequence()] {
    auto current = control_.get_rollout(id);
    if (!current.ok()) return sink->fail(current.status());
    // The journal first, then live events, with nothing lost in between:
    // both happen on the loop, which is the only writer.
    auto past = control_.rollout_events(id, after);
    if (!past.ok()) return sink->fail(past.status());
    uint64_t last_seq = after;
    for (auto& e : *past) {
      last_seq = e.sequence();
      sink->push(std::move(e));
    }
    if (RolloutEngine::is_terminal(current->phase())) {
      tern::v1::RolloutEvent end;
      end.set_rollout_id(id);
      end.set_kind("end");
      end.set_message("the rollout has finished");
      *end.mutable_rollout() = *current;
      sink->push(std::move(end), /*last=*/true);
      return;
    }
    auto token = std::make_shared<uint64_t>(0);
    *token = control_.watch(id, [this, sink, token, last_seq](const tern::v1::RolloutEvent& e) {
      if (e.sequence() <= last_seq) return;
      const bool last = RolloutEngine::is_terminal(e.rollout().phase());
      sink->push(e, last);
      if (last || !sink->alive()) {
        const uint64_t t = *token;
        loop_.post([this, t] { control_.unwatch(t); });
      }
    });
  });
  return stream;
}

grpc::ServerUnaryReactor* RolloutServiceImpl::run_command(grpc::CallbackServerContext* ctx,
                                                          const tern::v1::RolloutCommandRequest* req,
                                                          tern::v1::Rollout* resp, RolloutCommand cmd) {
  auto who = auth_.authorize(*ctx, Permission::kOperate);
  if (!who.ok()) return refuse_unary(ctx, who.status());
  auto* reactor = ctx->DefaultReactor();
  // The history says who did it.
  std::string reason = who->via() == "insecure" ? req->reason()
                       : req->reason().empty()  ? absl::StrCat("by ", who->name())
                                                : absl::StrCat(req->reason(), ", by ", who->name());
  loop_.post([this, reactor, req, resp, cmd, reason] {
    auto r = control_.rollout_command(req->id(), req->generation(), cmd, reason);
    if (!r.ok()) return reactor->Finish(to_grpc(r.status()));
    *resp = *r;
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* RolloutServiceImpl::PauseRollout(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::RolloutCommandRequest* req,
                                                           tern::v1::Rollout* resp) {
  return run_command(ctx, req, resp, RolloutCommand::kPause);
}
grpc::ServerUnaryReactor* RolloutServiceImpl::ResumeRollout(grpc::CallbackServerContext* ctx,
                                                            const tern::v1::RolloutCommandRequest* req,
                                                            tern::v1::Rollout* resp) {
  return run_command(ctx, req, resp, RolloutCommand::kResume);
}
grpc::ServerUnaryReactor* RolloutServiceImpl::PromoteRollout(grpc::CallbackServerContext* ctx,
                                                             const tern::v1::RolloutCommandRequest* req,
                                                             tern::v1::Rollout* resp) {
  return run_command(ctx, req, resp, RolloutCommand::kPromote);
}
grpc::ServerUnaryReactor* RolloutServiceImpl::AbortRollout(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::RolloutCommandRequest* req,
                                                           tern::v1::Rollout* resp) {
  return run_command(ctx, req, resp, RolloutCommand::kAbort);
}
grpc::ServerUnaryReactor* RolloutServiceImpl::RollbackRollout(grpc::CallbackServerContext* ctx,
                                                              const tern::v1::RolloutCommandRequest* req,
                                                              tern::v1::Rollout* resp) {
  return run_command(ctx, req, resp, RolloutCommand::kRollback);
}

}  // namespace tern
