#pragma once

#include <map>
#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"
#include "core/clock.h"
#include "core/yaml_config.h"

namespace tern {

// Where a daemon or ternctl finds its TLS material (PEM files). All three are
// needed for mutual TLS; `ca` verifies the other side.
struct TlsFiles {
  std::string ca;
  std::string cert;
  std::string key;
  // Name to expect in the coordinator's certificate when the dialled
  // address is not in it (e.g. dialling an IP the certificate does not list).
  std::string server_name;

  bool empty() const { return ca.empty() && cert.empty() && key.empty(); }
};

// Reads a config's `tls:` mapping (ca, cert, key and, for a client, the
// server_name it expects) into `out`; absent: `out` is left as it is. Errors
// surface through `m`'s finish(), like every other key.
void read_tls(YamlMap& m, TlsFiles& out, bool client);

// The same files, read.
struct TlsMaterial {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
  std::string server_name;
};

// Reads the files. `need_cert`: a certificate and key are required, not just
// the CA (agents; ternctl may use a token instead). Errors name the file and
// say what to do (`what` is "agent", "coordinator", "ternctl").
absl::StatusOr<TlsMaterial> load_tls(const TlsFiles& files, bool need_cert, const std::string& what);

// What a peer would refuse of our own certificate, found before any
// connection: a key that is not the certificate's, a certificate expired or
// not yet valid, or one the CA file did not sign (a peer checks it against
// the same fleet CA). UNAUTHENTICATED naming the file and what to do; OK
// without a certificate.
absl::Status check_own_certificate(const TlsMaterial& m, const TlsFiles& files);

// Who a certificate names: CN and OU of its subject, and its validity.
struct CertIdentity {
  std::string common_name;
  std::string org_unit;
  // From URI subject alternative names "tern:label:KEY=VALUE" (tern-pki
  // agent DIR HOST KEY=VALUE...): the labels an admin gave the host.
  std::map<std::string, std::string> labels;
  // Lower-case hex without leading zeros, as `openssl x509 -noout -serial`
  // prints it (there in upper case).
  std::string serial;
  TimePoint not_before;
  TimePoint not_after;
};
absl::StatusOr<CertIdentity> cert_identity(const std::string& pem);

// Client credentials for the coordinator's address, presenting our
// certificate when there is one.
std::shared_ptr<grpc::ChannelCredentials> tls_channel_credentials(const TlsMaterial& tls);
// Channel arguments that go with them (the server-name override).
grpc::ChannelArguments tls_channel_args(const TlsMaterial& tls);

// Server credentials: our certificate; clients' certificates verified
// against the CA when they present one. Whether a call needs one is the
// caller's policy (agents must; operators may use a token).
std::shared_ptr<grpc::ServerCredentials> tls_server_credentials(const TlsMaterial& tls);

}  // namespace tern
