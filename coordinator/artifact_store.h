#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/sha256.h"

namespace tern {

// Content-addressed blobs on disk: <dir>/sha256/<hex>. A blob appears under
// its name only complete and verified (written to a temp file, hashed while
// it streams in, fsynced, renamed). Thread-safe.
class ArtifactStore {
 public:
  explicit ArtifactStore(std::string dir);
  absl::Status init();

  // One upload in progress; abandoned uploads remove their temp file.
  class Upload {
   public:
    ~Upload();
    absl::Status write(const std::string& data);
    uint64_t size() const { return size_; }

   private:
    friend class ArtifactStore;
    Upload(int fd, std::string tmp) : fd_(fd), tmp_(std::move(tmp)) {}
    int fd_;
    std::string tmp_;
    Sha256 hash_;
    uint64_t size_ = 0;
    bool committed_ = false;
  };

  absl::StatusOr<std::unique_ptr<Upload>> begin();
  // Verifies (when `expected_sha256` is set) and publishes; returns the sha256.
  absl::StatusOr<std::string> commit(Upload& upload, const std::string& expected_sha256);

  std::string path(const std::string& sha256) const;
  // Size of a stored blob; NOT_FOUND when absent.
  absl::StatusOr<uint64_t> size(const std::string& sha256) const;

 private:
  std::string dir_;
};

}  // namespace tern
