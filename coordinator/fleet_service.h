#pragma once

#include <cstdint>
#include <functional>

#include <grpcpp/grpcpp.h>

#include "core/event_loop.h"
#include "coordinator/fleet_control.h"
#include "tern/v1/fleet.grpc.pb.h"

#include "coordinator/auth.h"

namespace tern {

// FleetService: the hosts, and one-host operations. Each call is handed to the event loop
// that owns the registry and finished from there; no gRPC thread blocks.
class FleetServiceImpl final : public tern::v1::FleetService::CallbackService {
 public:
  FleetServiceImpl(EventLoop& loop, FleetControl& fleet, const Authenticator& auth)
      : loop_(loop), fleet_(fleet), auth_(auth) {}

  grpc::ServerUnaryReactor* ListHosts(grpc::CallbackServerContext* ctx, const tern::v1::ListHostsRequest* req,
                                      tern::v1::ListHostsResponse* resp) override;
  grpc::ServerUnaryReactor* GetHost(grpc::CallbackServerContext* ctx, const tern::v1::GetHostRequest* req,
                                    tern::v1::Host* resp) override;
  grpc::ServerUnaryReactor* GetHostHistory(grpc::CallbackServerContext* ctx,
                                           const tern::v1::GetHostHistoryRequest* req,
                                           tern::v1::GetHostHistoryResponse* resp) override;
  grpc::ServerUnaryReactor* CordonHost(grpc::CallbackServerContext* ctx, const tern::v1::CordonHostRequest* req,
                                       tern::v1::Host* resp) override;
  grpc::ServerUnaryReactor* GetVersion(grpc::CallbackServerContext* ctx, const tern::v1::GetVersionRequest* req,
                                       tern::v1::VersionInfo* resp) override;
  grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* DeployHost(
      grpc::CallbackServerContext* ctx, const tern::v1::DeployHostRequest* req) override;
  grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* RollbackHost(
      grpc::CallbackServerContext* ctx, const tern::v1::RollbackHostRequest* req) override;

 private:
  // A one-host operation streamed to the caller: authorized by `rpc`, then
  // `op` runs on the loop with an observer that feeds the stream.
  grpc::ServerWriteReactor<tern::v1::HostOperationUpdate>* operate(grpc::CallbackServerContext* ctx, Rpc rpc,
                                                                   std::function<absl::Status(CommandObserver)> op);

  EventLoop& loop_;
  FleetControl& fleet_;
  const Authenticator& auth_;
};

}  // namespace tern
