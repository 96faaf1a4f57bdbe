#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tern/v1/service.pb.h"

namespace tern {

// What ServiceService asks of the coordinator: service specs and the
// artifact catalogue. Every method runs on the coordinator's event-loop thread.
class ServiceControl {
 public:
  virtual ~ServiceControl() = default;

  virtual absl::StatusOr<tern::v1::ApplyServiceResponse> apply_service(const tern::v1::ApplyServiceRequest& req) = 0;
  virtual absl::StatusOr<tern::v1::ServiceRecord> get_service(const std::string& name) = 0;
  virtual std::vector<tern::v1::ServiceRecord> list_services() = 0;
  virtual absl::Status delete_service(const std::string& name) = 0;
  // Records an uploaded blob as a version of a service.
  virtual absl::StatusOr<tern::v1::Artifact> register_artifact(const tern::v1::Artifact& artifact,
                                                               const std::string& file_name) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::Artifact>> list_artifacts(const std::string& service) = 0;
};

}  // namespace tern
