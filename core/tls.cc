#include "core/tls.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <fstream>
#include <sstream>
#include <string_view>

#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace tern {
namespace {

absl::StatusOr<std::string> read_pem(const std::string& path, const std::string& what, const char* role) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read the ", what, "'s TLS ", role, " ", path,
                                                      ": no such file or not readable (scripts/tern-pki.sh makes "
                                                      "a CA and certificates for a test fleet)"));
  }
  std::ostringstream s;
  s << in.rdbuf();
  if (s.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("the ", what, "'s TLS ", role, " ", path, " is not a PEM file"));
  }
  return s.str();
}

std::string name_entry(X509_NAME* name, int nid) {
  int idx = X509_NAME_get_index_by_NID(name, nid, -1);
  if (idx < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

TimePoint asn1_time(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return TimePoint{};
  return from_unix_millis(static_cast<int64_t>(timegm(&tm)) * 1000);
}

}  // namespace

void read_tls(YamlMap& m, TlsFiles& out, bool client) {
  auto t = m.child("tls");
  if (!t) return;
  t->get("ca", out.ca);
  t->get("cert", out.cert);
  t->get("key", out.key);
  if (client) t->get("server_name", out.server_name);
  m.absorb(t->finish());
}

absl::StatusOr<TlsMaterial> load_tls(const TlsFiles& files, bool need_cert, const std::string& what) {
  if (files.ca.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the ", what, "'s TLS settings need `ca` (the CA certificate ",
                                                   "that signed the other side)"));
  }
  if (need_cert && (files.cert.empty() || files.key.empty())) {
    return absl::InvalidArgumentError(absl::StrCat("the ", what, "'s TLS settings need `cert` and `key` as well as `ca`"));
  }
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the ", what, "'s TLS settings need both `cert` and `key`, or neither"));
  }
  TlsMaterial m;
  m.server_name = files.server_name;
  auto ca = read_pem(files.ca, what, "CA certificate");
  if (!ca.ok()) return ca.status();
  m.ca_pem = *std::move(ca);
  if (!files.cert.empty()) {
    auto cert = read_pem(files.cert, what, "certificate");
    if (!cert.ok()) return cert.status();
    auto key = read_pem(files.key, what, "key");
    if (!key.ok()) return key.status();
    m.cert_pem = *std::move(cert);
    m.key_pem = *std::move(key);
    auto id = cert_identity(m.cert_pem);
    if (!id.ok()) return absl::InvalidArgumentError(absl::StrCat(files.cert, ": ", id.status().message()));
  }
  return m;
}

absl::StatusOr<CertIdentity> cert_identity(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return absl::ResourceExhaustedError("out of memory reading a certificate");
  X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (x == nullptr) return absl::InvalidArgumentError("not a PEM X.509 certificate");
  CertIdentity id;
  X509_NAME* subject = X509_get_subject_name(x);
  id.common_name = name_entry(subject, NID_commonName);
  id.org_unit = name_entry(subject, NID_organizationalUnitName);
  if (auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr))) {
    constexpr std::string_view kPrefix = "tern:label:";
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
      if (n->type != GEN_URI) continue;
      const auto* s = n->d.uniformResourceIdentifier;
      std::string_view uri(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                           static_cast<std::size_t>(ASN1_STRING_length(s)));
      if (uri.substr(0, kPrefix.size()) != kPrefix) continue;
      uri.remove_prefix(kPrefix.size());
      const auto eq = uri.find('=');
      if (eq == std::string_view::npos) continue;
      id.labels[std::string(uri.substr(0, eq))] = std::string(uri.substr(eq + 1));
    }
    GENERAL_NAMES_free(sans);
  }
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), nullptr)) {
    if (char* hex = BN_bn2hex(bn)) {
      id.serial = absl::AsciiStrToLower(hex);
      OPENSSL_free(hex);
      // BN_bn2hex writes whole bytes ("0a1b"): no leading zeros, as the
      // deny list keeps serials, whatever tool printed them.
      const auto first = id.serial.find_first_not_of('0');
      id.serial = first == std::string::npos ? "0" : id.serial.substr(first);
    }
    BN_free(bn);
  }
  id.not_before = asn1_time(X509_get0_notBefore(x));
  id.not_after = asn1_time(X509_get0_notAfter(x));
  X509_free(x);
  return id;
}

std::shared_ptr<grpc::ChannelCredentials> tls_channel_credentials(const TlsMaterial& tls) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = tls.ca_pem;
  o.pem_cert_chain = tls.cert_pem;
  o.pem_private_key = tls.key_pem;
  return grpc::SslCredentials(o);
}

grpc::ChannelArguments tls_channel_args(const TlsMaterial& tls) {
  grpc::ChannelArguments args;
  if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
  return args;
}

std::shared_ptr<grpc::ServerCredentials> tls_server_credentials(const TlsMaterial& tls) {
  grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  o.pem_root_certs = tls.ca_pem;
  o.pem_key_cert_pairs.push_back({tls.key_pem, tls.cert_pem});
  return grpc::SslServerCredentials(o);
}

}  // namespace tern
