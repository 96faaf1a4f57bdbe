#pragma once

#include <functional>
#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "coordinator/rollout_engine.h"
#include "core/event_loop.h"
#include "tern/v1/rollout.grpc.pb.h"

#include "coordinator/auth.h"

namespace tern {

// What RolloutService asks of the coordinator; every method runs on the
// coordinator's event loop.
class RolloutControl {
 public:
  virtual ~RolloutControl() = default;
  virtual absl::StatusOr<tern::v1::RolloutPlan> plan_rollout(const tern::v1::RolloutSpec& spec) = 0;
  virtual absl::StatusOr<tern::v1::Rollout> start_rollout(const tern::v1::RolloutSpec& spec) = 0;
  virtual absl::StatusOr<tern::v1::Rollout> get_rollout(const std::string& id) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::Rollout>> list_rollouts(const std::string& service,
                                                                       bool active_only) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::RolloutEvent>> rollout_events(const std::string& id,
                                                                             uint64_t after_sequence) = 0;
  virtual absl::StatusOr<tern::v1::Rollout> rollout_command(const std::string& id, uint64_t generation,
                                                            RolloutCommand cmd, const std::string& reason) = 0;
  // Live events of one rollout; returns a token for unwatch().
  virtual uint64_t watch(const std::string& id, std::function<void(const tern::v1::RolloutEvent&)> fn) = 0;
  virtual void unwatch(uint64_t token) = 0;
};

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
  grpc::ServerUnaryReactor* PromoteRollout(grpc::CallbackServerContext* ctx,
                                           const tern::v1::RolloutCommandRequest* req,
                                           tern::v1::Rollout* resp) override;
  grpc::ServerUnaryReactor* AbortRollout(grpc::CallbackServerContext* ctx,
                                         const tern::v1::RolloutCommandRequest* req, tern::v1::Rollout* resp) override;
  grpc::ServerUnaryReactor* RollbackRollout(grpc::CallbackServerContext* ctx,
                                            const tern::v1::RolloutCommandRequest* req,
                                            tern::v1::Rollout* resp) override;

 private:
  grpc::ServerUnaryReactor* run_command(grpc::CallbackServerContext* ctx, const tern::v1::RolloutCommandRequest* req,
                                        tern::v1::Rollout* resp, RolloutCommand cmd);
  EventLoop& loop_;
  RolloutControl& control_;
  const Authenticator& auth_;
};

}  // namespace tern
