#pragma once

#include <grpcpp/grpcpp.h>

#include "core/event_loop.h"
#include "coordinator/artifact_store.h"
#include "coordinator/service_control.h"
#include "tern/v1/service.grpc.pb.h"

#include "coordinator/auth.h"

namespace tern {

// ServiceService: specs and artifacts. Calls are finished from the event
// loop; artifact bytes are written to the store from the gRPC threads (one
// upload's chunks in order), never buffered whole.
class ServiceServiceImpl final : public tern::v1::ServiceService::CallbackService {
 public:
  ServiceServiceImpl(EventLoop& loop, ServiceControl& control, ArtifactStore& artifacts, uint64_t max_artifact_bytes,
                     const Authenticator& auth)
      : loop_(loop), control_(control), artifacts_(artifacts), max_artifact_bytes_(max_artifact_bytes), auth_(auth) {}

  grpc::ServerUnaryReactor* ApplyService(grpc::CallbackServerContext* ctx, const tern::v1::ApplyServiceRequest* req,
                                         tern::v1::ApplyServiceResponse* resp) override;
  grpc::ServerUnaryReactor* GetService(grpc::CallbackServerContext* ctx, const tern::v1::GetServiceRequest* req,
                                       tern::v1::ServiceRecord* resp) override;
  grpc::ServerUnaryReactor* ListServices(grpc::CallbackServerContext* ctx, const tern::v1::ListServicesRequest* req,
                                         tern::v1::ListServicesResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteService(grpc::CallbackServerContext* ctx, const tern::v1::DeleteServiceRequest* req,
                                          tern::v1::DeleteServiceResponse* resp) override;
  grpc::ServerReadReactor<tern::v1::UploadArtifactRequest>* UploadArtifact(grpc::CallbackServerContext* ctx,
                                                                            tern::v1::Artifact* resp) override;
  grpc::ServerUnaryReactor* ListArtifacts(grpc::CallbackServerContext* ctx, const tern::v1::ListArtifactsRequest* req,
                                          tern::v1::ListArtifactsResponse* resp) override;
  grpc::ServerUnaryReactor* RegisterArtifact(grpc::CallbackServerContext* ctx,
                                             const tern::v1::RegisterArtifactRequest* req,
                                             tern::v1::Artifact* resp) override;

 private:
  EventLoop& loop_;
  ServiceControl& control_;
  ArtifactStore& artifacts_;
  uint64_t max_artifact_bytes_;
  const Authenticator& auth_;
};

}  // namespace tern
