#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tern {

// Incremental SHA-256 (OpenSSL EVP). Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, std::size_t len);
  // Lower-case hex digest; the hasher is spent afterwards.
  std::string hex_digest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Hashes a whole file in 64 KiB reads.
absl::StatusOr<std::string> sha256_file(const std::string& path);
bool is_sha256_hex(const std::string& s);
// The lower-case hex sha256 of a string.
std::string sha256_hex(const std::string& data);

}  // namespace tern
