#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tern {

// Ed25519 signatures over artifacts (OpenSSL). What is signed is the text
// "tern-artifact-v1:" followed by the artifact's lower-case hex sha256, so a
// signature can be made without Tern, from the file's checksum:
//
//   printf 'tern-artifact-v1:%s' "$(sha256sum app | cut -d' ' -f1)" >msg
//   openssl pkeyutl -sign -inkey release-key.pem -rawin -in msg -out app.sig
//
// Keys are PEM files: a private key to sign (openssl genpkey -algorithm
// ed25519), public keys to verify (openssl pkey -pubout).
std::string artifact_signing_message(const std::string& sha256_hex);

absl::StatusOr<std::string> sign_artifact(const std::string& private_key_pem_path, const std::string& sha256_hex);

// Public keys an agent trusts, read once at start.
class TrustedKeys {
 public:
  static absl::StatusOr<TrustedKeys> load(const std::vector<std::string>& public_key_pem_paths);
  bool empty() const { return keys_.empty(); }
  std::size_t size() const { return keys_.size(); }
  // OK when any trusted key made `signature` over this artifact;
  // PERMISSION_DENIED (unsigned, or signed by someone else) otherwise.
  absl::Status verify(const std::string& sha256_hex, const std::string& signature) const;

 private:
  std::vector<std::string> keys_;  // raw 32-byte ed25519 public keys
  std::vector<std::string> names_;
};

}  // namespace tern
