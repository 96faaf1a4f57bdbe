#include "coordinator/artifact_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace tern {

ArtifactStore::ArtifactStore(std::string dir) : dir_(std::move(dir)) {}

absl::Status ArtifactStore::init() {
  std::error_code ec;
  std::filesystem::create_directories(dir_ + "/sha256", ec);
  if (!ec) std::filesystem::create_directories(dir_ + "/tmp", ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create the artifact store ", dir_, ": ", ec.message(),
                                                      " (set artifact_dir to a writable directory)"));
  }
  // Temp files of uploads cut short by a crash.
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/tmp", ec)) {
    std::filesystem::remove(e.path(), ec);
  }
  return absl::OkStatus();
}

ArtifactStore::Upload::~Upload() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

absl::Status ArtifactStore::Upload::write(const std::string& data) {
  const char* p = data.data();
  std::size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ResourceExhaustedError(absl::StrCat("writing the artifact: ", std::strerror(errno)));
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  hash_.update(data.data(), data.size());
  size_ += data.size();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ArtifactStore::Upload>> ArtifactStore::begin() {
  static std::atomic<uint64_t> counter{0};
  std::string tmp = absl::StrCat(dir_, "/tmp/upload-", ::getpid(), "-", counter.fetch_add(1));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  return std::unique_ptr<Upload>(new Upload(fd, tmp));
}

absl::StatusOr<std::string> ArtifactStore::commit(Upload& up, const std::string& expected) {
  const std::string digest = up.hash_.hex_digest();
  if (!expected.empty() && expected != digest) {
    return absl::DataLossError(absl::StrCat("the uploaded bytes have sha256 ", digest, ", not the expected ",
                                            expected, "; the upload was corrupted or the checksum is wrong"));
  }
  if (::fsync(up.fd_) != 0) return absl::InternalError(absl::StrCat("fsync: ", std::strerror(errno)));
  ::close(up.fd_);
  up.fd_ = -1;
  if (::rename(up.tmp_.c_str(), path(digest).c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot publish the artifact: ", std::strerror(errno)));
  }
  up.committed_ = true;
  return digest;
}

std::string ArtifactStore::path(const std::string& sha256) const { return absl::StrCat(dir_, "/sha256/", sha256); }

absl::StatusOr<uint64_t> ArtifactStore::size(const std::string& sha256) const {
  if (!is_sha256_hex(sha256)) return absl::InvalidArgumentError("not a sha256");
  struct stat st;
  if (::stat(path(sha256).c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("no artifact with sha256 ", sha256, " in the store"));
  }
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace tern
