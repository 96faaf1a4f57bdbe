#pragma once

#include <functional>
#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "coordinator/rollout_control.h"
#include "core/event_loop.h"
#include "tern/v1/rollout.grpc.pb.h"

#include "coordinator/auth.h"

namespace tern {

class RolloutServiceImpl final : public tern::v1::RolloutService::CallbackService {
 public:
  RolloutServiceImpl(EventLoop& loop, RolloutControl& control, const Authenticator& auth)
      : loop_(loop), control_(control), auth_(auth) {}

  grpc::ServerUnaryReactor* PlanRollout(grpc::CallbackServerContext* ctx, const tern::v1::StartRolloutRequest* req,
                                        tern::v1::RolloutPlan* resp) override;
  grpc::ServerUnaryReactor* StartRollout(grpc::CallbackServerContext* ctx, const tern::v1::StartRolloutRequest* req,
                                         tern::v1::Rollout* resp) override;
  grpc::ServerUnaryReactor* GetRollout(grpc::CallbackServerContext* ctx, const tern::v1::GetRolloutRequest* req,
                                       tern::v1::Rollout* resp) override;
  grpc::ServerUnaryReactor* ListRollouts(grpc::CallbackServerContext* ctx, const tern::v1::ListRolloutsRequest* req,
                                         tern::v1::ListRolloutsResponse* resp) override;
  grpc::ServerWriteReactor<tern::v1::RolloutEvent>* WatchRollout(grpc::CallbackServerContext* ctx,
                                                                 const tern::v1::WatchRolloutRequest* req) override;
  grpc::ServerUnaryReactor* GetRolloutHistory(grpc::CallbackServerContext* ctx,
                                              const tern::v1::GetRolloutRequest* req,
                                              tern::v1::RolloutHistory* resp) override;
  grpc::ServerUnaryReactor* PauseRollout(grpc::CallbackServerContext* ctx,
                                         const tern::v1::RolloutCommandRequest* req, tern::v1::Rollout* resp) override;
  grpc::ServerUnaryReactor* ResumeRollout(grpc::CallbackServerContext* ctx,
                                          const tern::v1::RolloutCommandRequest* req, tern::v1::Rollout* resp) override;
  grpc::ServerUnaryReactor* GetRolloutAnalysis(grpc::CallbackServerContext* ctx,
                                               const tern::v1::GetRolloutAnalysisRequest* req,
                                               tern::v1::RolloutAnalysisReport* resp) override;
  grpc::ServerUnaryReactor* ExtendRollout(grpc::CallbackServerContext* ctx,
                                          const tern::v1::RolloutCommandRequest* req, tern::v1::Rollout* resp) override;
  grpc::ServerUnaryReactor* PromoteRollout(grpc::CallbackServerContext* ctx,
                                           const tern::v1::RolloutCommandRequest* req,
                                           tern::v1::Rollout* resp) override;
  grpc::ServerUnaryReactor* AbortRollout(grpc::CallbackServerContext* ctx,
                                         const tern::v1::RolloutCommandRequest* req, tern::v1::Rollout* resp) override;
  grpc::ServerUnaryReactor* RollbackRollout(grpc::CallbackServerContext* ctx,
                                            const tern::v1::RolloutCommandRequest* req,
                                            tern::v1::Rollout* resp) override;

 private:
  grpc::ServerUnaryReactor* run_command(grpc::CallbackServerContext* ctx, Rpc rpc,
                                        const tern::v1::RolloutCommandRequest* req, tern::v1::Rollout* resp,
                                        RolloutCommand cmd);
  EventLoop& loop_;
  RolloutControl& control_;
  const Authenticator& auth_;
};

}  // namespace tern
