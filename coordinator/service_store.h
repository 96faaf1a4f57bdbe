#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/database.h"
#include "tern/v1/service.pb.h"

namespace tern {

// Services (their specs, versioned by a generation) and artifact metadata in
// the coordinator's SQLite database. The blobs themselves live in the
// ArtifactStore. Same thread rules as Database.
class ServiceStore {
 public:
  static absl::StatusOr<std::unique_ptr<ServiceStore>> open(Database& db);

  absl::StatusOr<std::vector<tern::v1::ServiceRecord>> load_services();
  absl::Status save_service(const tern::v1::ServiceRecord& record);
  // Also forgets what hosts were told to run of it.
  absl::Status delete_service(const std::string& name);

  // What the coordinator last ordered a host to run of a service.
  struct Desired {
    std::string host_id, service, version;
    uint32_t weight = 100;
  };
  absl::Status save_desired(const Desired& d);
  absl::StatusOr<std::vector<Desired>> load_desired();

  absl::Status save_artifact(const tern::v1::Artifact& artifact, const std::string& file_name);
  // nullopt when the service has no such version.
  absl::StatusOr<std::optional<std::pair<tern::v1::Artifact, std::string>>> find_artifact(const std::string& service,
                                                                                          const std::string& version);
  absl::StatusOr<std::vector<tern::v1::Artifact>> list_artifacts(const std::string& service);
  absl::StatusOr<bool> has_blob(const std::string& sha256);

 private:
  explicit ServiceStore(Database& db) : db_(db) {}
  Database& db_;
};

}  // namespace tern
