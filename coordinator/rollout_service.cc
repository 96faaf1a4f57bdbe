#include "coordinator/rollout_service.h"

#include "absl/strings/str_cat.h"
#include "core/grpc_status.h"

#include <google/protobuf/util/time_util.h>
#include "core/rollout_spec.h"
#include "coordinator/serve.h"
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
  return serve_unary(ctx, auth_, loop_, Rpc::kPlanRollout, [this, req, resp]() -> absl::Status {
    auto spec = checked(req->spec());
    if (!spec.ok()) return spec.status();
    return reply(control_.plan_rollout(*spec), resp);
  });
}

grpc::ServerUnaryReactor* RolloutServiceImpl::StartRollout(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::StartRolloutRequest* req,
                                                           tern::v1::Rollout* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kStartRollout, [this, req, resp]() -> absl::Status {
    auto spec = checked(req->spec());
    if (!spec.ok()) return spec.status();
    return reply(control_.start_rollout(*spec), resp);
  });
}

grpc::ServerUnaryReactor* RolloutServiceImpl::GetRollout(grpc::CallbackServerContext* ctx,
                                                         const tern::v1::GetRolloutRequest* req,
                                                         tern::v1::Rollout* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kGetRollout,
                     [this, req, resp] { return reply(control_.get_rollout(req->id()), resp); });
}

grpc::ServerUnaryReactor* RolloutServiceImpl::ListRollouts(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::ListRolloutsRequest* req,
                                                           tern::v1::ListRolloutsResponse* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kListRollouts, [this, req, resp]() -> absl::Status {
    auto rs = control_.list_rollouts(req->service(), req->active_only());
    if (!rs.ok()) return rs.status();
    for (auto& r : *rs) *resp->add_rollouts() = std::move(r);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RolloutServiceImpl::GetRolloutHistory(grpc::CallbackServerContext* ctx,
                                                                const tern::v1::GetRolloutRequest* req,
                                                                tern::v1::RolloutHistory* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kGetRolloutHistory, [this, req, resp]() -> absl::Status {
    if (auto r = control_.get_rollout(req->id()); !r.ok()) return r.status();
    auto evs = control_.rollout_events(req->id(), 0);
    if (!evs.ok()) return evs.status();
    for (auto& e : *evs) *resp->add_events() = std::move(e);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RolloutServiceImpl::GetRolloutAnalysis(grpc::CallbackServerContext* ctx,
                                                                 const tern::v1::GetRolloutAnalysisRequest* req,
                                                                 tern::v1::RolloutAnalysisReport* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kGetRolloutAnalysis, [this, req, resp]() -> absl::Status {
    auto report = control_.rollout_analysis(req->id(), req->replay(), req->host());
    if (!report.ok()) return report.status();
    *resp = *std::move(report);
    return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<tern::v1::RolloutEvent>* RolloutServiceImpl::WatchRollout(
    grpc::CallbackServerContext* ctx, const tern::v1::WatchRolloutRequest* req) {
  if (auto p = auth_.authorize(*ctx, Rpc::kWatchRollout); !p.ok()) {
    return new RefusedWriter<tern::v1::RolloutEvent>(to_grpc(p.status()));
  }
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
      end.set_kind(tern::v1::ROLLOUT_EVENT_KIND_END);
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

grpc::ServerUnaryReactor* RolloutServiceImpl::run_command(grpc::CallbackServerContext* ctx, Rpc rpc,
                                                          const tern::v1::RolloutCommandRequest* req,
                                                          tern::v1::Rollout* resp, RolloutCommand cmd) {
  return serve_unary(ctx, auth_, loop_, rpc, [this, req, resp, cmd](const tern::v1::Principal& who) {
    // The history says who did it.
    const std::string reason = who.via() == "insecure" ? req->reason()
                               : req->reason().empty()  ? absl::StrCat("by ", who.name())
                                                        : absl::StrCat(req->reason(), ", by ", who.name());
    return reply(control_.rollout_command(req->id(), req->generation(), cmd, reason), resp);
  });
}

grpc::ServerUnaryReactor* RolloutServiceImpl::PauseRollout(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::RolloutCommandRequest* req,
                                                           tern::v1::Rollout* resp) {
  return run_command(ctx, Rpc::kPauseRollout, req, resp, RolloutCommand::kPause);
}
grpc::ServerUnaryReactor* RolloutServiceImpl::ResumeRollout(grpc::CallbackServerContext* ctx,
                                                            const tern::v1::RolloutCommandRequest* req,
                                                            tern::v1::Rollout* resp) {
  return run_command(ctx, Rpc::kResumeRollout, req, resp, RolloutCommand::kResume);
}
grpc::ServerUnaryReactor* RolloutServiceImpl::PromoteRollout(grpc::CallbackServerContext* ctx,
                                                             const tern::v1::RolloutCommandRequest* req,
                                                             tern::v1::Rollout* resp) {
  return run_command(ctx, Rpc::kPromoteRollout, req, resp, RolloutCommand::kPromote);
}
grpc::ServerUnaryReactor* RolloutServiceImpl::AbortRollout(grpc::CallbackServerContext* ctx,
                                                           const tern::v1::RolloutCommandRequest* req,
                                                           tern::v1::Rollout* resp) {
  return run_command(ctx, Rpc::kAbortRollout, req, resp, RolloutCommand::kAbort);
}
grpc::ServerUnaryReactor* RolloutServiceImpl::RollbackRollout(grpc::CallbackServerContext* ctx,
                                                              const tern::v1::RolloutCommandRequest* req,
                                                              tern::v1::Rollout* resp) {
  return run_command(ctx, Rpc::kRollbackRollout, req, resp, RolloutCommand::kRollback);
}
grpc::ServerUnaryReactor* RolloutServiceImpl::ExtendRollout(grpc::CallbackServerContext* ctx,
                                                            const tern::v1::RolloutCommandRequest* req,
                                                            tern::v1::Rollout* resp) {
  return serve_unary(ctx, auth_, loop_, Rpc::kExtendRollout, [this, req, resp](const tern::v1::Principal& who) {
    const std::string reason = who.via() == "insecure" ? req->reason()
                               : req->reason().empty()  ? absl::StrCat("by ", who.name())
                                                        : absl::StrCat(req->reason(), ", by ", who.name());
    const Millis by(google::protobuf::util::TimeUtil::DurationToMilliseconds(req->extend_by()));
    return reply(control_.extend_rollout(req->id(), req->generation(), by, reason), resp);
  });
}

}  // namespace tern
