#include "core/signing.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"

namespace tern {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

absl::StatusOr<Pkey> read_key(const std::string& path, bool private_key) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read the ", private_key ? "signing" : "trusted",
                                                      " key ", path, ": no such file or not readable"));
  }
  EVP_PKEY* k = private_key ? PEM_read_PrivateKey(f, nullptr, nullptr, nullptr)
                            : PEM_read_PUBKEY(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (k == nullptr || EVP_PKEY_id(k) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(k);
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a PEM ed25519 ", private_key ? "private" : "public",
        " key (make one: openssl genpkey -algorithm ed25519 -out key.pem; openssl pkey -in key.pem -pubout)"));
  }
  return Pkey(k);
}

}  // namespace

std::string artifact_signing_message(const std::string& sha256_hex) { return "tern-artifact-v1:" + sha256_hex; }

absl::StatusOr<std::string> sign_artifact(const std::string& private_key_pem_path, const std::string& sha256_hex) {
  auto key = read_key(private_key_pem_path, true);
  if (!key.ok()) return key.status();
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  const std::string msg = artifact_signing_message(sha256_hex);
  std::string sig(64, '\0');
  size_t len = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key->get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) != 1) {
    return absl::InternalError(absl::StrCat("signing with ", private_key_pem_path, " failed"));
  }
  sig.resize(len);
  return sig;
}

absl::StatusOr<TrustedKeys> TrustedKeys::load(const std::vector<std::string>& paths) {
  TrustedKeys t;
  for (const auto& p : paths) {
    auto key = read_key(p, false);
    if (!key.ok()) return key.status();
    std::string raw(32, '\0');
    size_t len = raw.size();
    if (EVP_PKEY_get_raw_public_key(key->get(), reinterpret_cast<unsigned char*>(raw.data()), &len) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(p, ": cannot read the ed25519 public key"));
    }
    raw.resize(len);
    t.keys_.push_back(raw);
    t.names_.push_back(p);
  }
  return t;
}

absl::Status TrustedKeys::verify(const std::string& sha256_hex, const std::string& signature) const {
  if (signature.empty()) {
    return absl::PermissionDeniedError(
        "the artifact is not signed, and this agent only runs artifacts signed by a key it trusts "
        "(push it with `ternctl artifact push --sign-key KEY`)");
  }
  const std::string msg = artifact_signing_message(sha256_hex);
  for (const auto& raw : keys_) {
    Pkey key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(raw.data()),
                                         raw.size()));
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    if (!key || !ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1) continue;
    if (EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                         reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) == 1) {
      return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "the artifact's signature was not made by any of the ", keys_.size(),
      " key(s) this agent trusts; re-sign it with a trusted key or add its public key to trusted_keys"));
}

}  // namespace tern
