#include "core/tls.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <memory>
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

namespace {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr read_cert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return nullptr;
  X509Ptr x(PEM_read_bio_X509(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return x;
}

// "2024-05-01 09:30:12 UTC".
std::string asn1_date(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "an unreadable date";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

}  // namespace

absl::Status check_own_certificate(const TlsMaterial& m, const TlsFiles& files) {
  if (m.cert_pem.empty()) return absl::OkStatus();
  X509Ptr cert = read_cert(m.cert_pem);
  if (cert == nullptr) return absl::UnauthenticatedError(absl::StrCat(files.cert, ": not a PEM X.509 certificate"));
  const std::string who = absl::StrCat(files.cert, " (CN=", name_entry(X509_get_subject_name(cert.get()), NID_commonName), ")");
  {
    BIO* bio = BIO_new_mem_buf(m.key_pem.data(), static_cast<int>(m.key_pem.size()));
    EVP_PKEY* key = bio == nullptr ? nullptr : PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    if (bio != nullptr) BIO_free(bio);
    const bool matches = key != nullptr && X509_check_private_key(cert.get(), key) == 1;
    EVP_PKEY_free(key);
    ERR_clear_error();
    if (!matches) {
      return absl::UnauthenticatedError(absl::StrCat(files.key, " is not the private key of ", who,
                                                     ": give the key that was made with that certificate"));
    }
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) <= 0) {
    return absl::UnauthenticatedError(absl::StrCat(who, " expired on ", asn1_date(X509_get0_notAfter(cert.get())),
                                                   "; the coordinator refuses it. Get a new certificate from the "
                                                   "fleet CA (scripts/tern-pki.sh operator DIR NAME ROLE)"));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) >= 0) {
    return absl::UnauthenticatedError(absl::StrCat(who, " is not valid before ",
                                                   asn1_date(X509_get0_notBefore(cert.get())),
                                                   "; check this machine's clock"));
  }
  // Signed by the fleet CA the coordinator trusts (the --ca file)?
  X509_STORE* store = X509_STORE_new();
  BIO* bio = BIO_new_mem_buf(m.ca_pem.data(), static_cast<int>(m.ca_pem.size()));
  int cas = 0;
  while (X509* ca = bio == nullptr ? nullptr : PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, ca);
    X509_free(ca);
    ++cas;
  }
  if (bio != nullptr) BIO_free(bio);
  ERR_clear_error();
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  int ok = 0, err = X509_V_OK;
  if (cas > 0 && ctx != nullptr && X509_STORE_CTX_init(ctx, store, cert.get(), nullptr) == 1) {
    ok = X509_verify_cert(ctx);
    err = X509_STORE_CTX_get_error(ctx);
  }
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  ERR_clear_error();
  if (ok != 1) {
    return absl::UnauthenticatedError(absl::StrCat(
        who, " is not signed by the CA in ", files.ca, " (", X509_verify_cert_error_string(err), "; its issuer is ",
        name_entry(X509_get_issuer_name(cert.get()), NID_commonName),
        "); the coordinator trusts only its fleet CA: use a certificate from that CA, or the CA file that signed "
        "this one"));
  }
  return absl::OkStatus();
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
