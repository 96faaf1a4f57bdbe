#pragma once

#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include "absl/status/statusor.h"
#include "tern/v1/admin.pb.h"

namespace tern {

// What a call needs.
enum class Permission {
  kAnyone,   // any authenticated caller, agents included
  kRead,     // viewer, operator, admin
  kOperate,  // operator, admin: rollouts, host deploys
  kAdmin,    // admin: services, artifacts, tokens, the audit trail
  kAgent,    // agents only: the agent stream and artifact downloads
};

// Every method the coordinator serves. The enum names a method in code;
// rule() says what it needs. Handlers authorize by their Rpc, the audit
// interceptor finds the rule by the method's path: one table for both.
enum class Rpc {
  kConnect, kFetchArtifact,
  kListHosts, kGetHost, kGetHostHistory, kGetVersion, kDeployHost, kRollbackHost, kCordonHost,
  kApplyService, kGetService, kListServices, kDeleteService, kUploadArtifact, kListArtifacts, kRegisterArtifact,
  kPlanRollout, kStartRollout, kGetRollout, kListRollouts, kWatchRollout, kGetRolloutHistory,
  kPauseRollout, kResumeRollout, kPromoteRollout, kAbortRollout, kRollbackRollout, kExtendRollout, kGetRolloutAnalysis,
  kWhoAmI, kCreateToken, kRevokeToken, kListTokens, kListAudit,
  kDenyCertificate, kAllowCertificate, kListDeniedCertificates,
};
struct MethodRule {
  Rpc rpc;
  const char* path;  // as gRPC names it: "/tern.v1.FleetService/DeployHost"
  Permission permission;
  // Changes state: every call, allowed or refused, lands in the audit trail.
  bool audited;
};
const MethodRule& rule(Rpc rpc);
const std::vector<MethodRule>& method_rules();
// The rule for a method path; null for methods Tern does not define
// (health, reflection).
const MethodRule* find_rule(std::string_view path);

absl::StatusOr<tern::v1::Role> parse_role(const std::string& name);

// A bearer token as the coordinator keeps it: only the secret's sha256.
struct TokenRecord {
  tern::v1::TokenInfo info;
  std::string secret_sha256;
};

// Who is calling, and may they. A caller proves who it is with a client
// certificate from the fleet CA (CN: name or host id, OU: its role) or a
// bearer token ("authorization: Bearer <secret>"). With `insecure` (the
// local demo, plaintext) there is no proof: every caller is an anonymous
// admin, and agents are who they say they are.
//
// Thread-safe: gRPC threads authenticate while the event loop changes the
// tokens.
class Authenticator {
 public:
  explicit Authenticator(bool insecure) : insecure_(insecure) {}

  bool insecure() const { return insecure_; }
  absl::StatusOr<tern::v1::Principal> authenticate(const grpc::ServerContextBase& ctx) const;
  // The principal if it may do `p`; UNAUTHENTICATED or PERMISSION_DENIED
  // (saying who, what was asked, and what would allow it) otherwise.
  absl::StatusOr<tern::v1::Principal> authorize(const grpc::ServerContextBase& ctx, Permission p) const;
  // The same, for what rule(rpc) asks.
  absl::StatusOr<tern::v1::Principal> authorize(const grpc::ServerContextBase& ctx, Rpc rpc) const {
    return authorize(ctx, rule(rpc).permission);
  }

  void set_tokens(std::vector<TokenRecord> tokens);
  // The token an "authorization: Bearer <secret>" header names, if live.
  absl::StatusOr<tern::v1::Principal> token_principal(std::string_view header) const;
  // Client certificates refused from now on, by serial or CN.
  void set_denied(const std::vector<tern::v1::DeniedCertificate>& denied);
  // Tokens that authenticated a call since the last take, with when (unix ms).
  std::map<std::string, int64_t> take_last_used() const;
  // A fresh random secret ("tern_" + 64 hex digits) and its sha256.
  static std::pair<std::string, std::string> new_secret();

 private:
  const bool insecure_;
  mutable std::shared_mutex mu_;
  std::map<std::string, tern::v1::TokenInfo> by_hash_;  // live tokens by secret sha256
  std::map<std::string, std::string> denied_serials_, denied_names_;  // -> reason
  mutable std::mutex used_mu_;
  mutable std::map<std::string, int64_t> last_used_;
};

// Under TLS, turns away every call that presents neither a client
// certificate from the fleet CA nor a live token, from its headers alone,
// before any request message is read or parsed: an anonymous client costs
// the coordinator a TLS handshake and a header, never a 16 MiB parse.
// `on_refused(method)` is told of each refusal (it must not block). What
// a caller may do is still decided per call by Authenticator::authorize.
class CredentialGate final : public grpc::AuthMetadataProcessor {
 public:
  CredentialGate(const Authenticator& auth, std::function<void(const std::string& method)> on_refused)
      : auth_(auth), on_refused_(std::move(on_refused)) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata, OutputMetadata* response_metadata) override;

 private:
  const Authenticator& auth_;
  std::function<void(const std::string& method)> on_refused_;
};

// A finished refusal, for handlers that must return a reactor.
grpc::ServerUnaryReactor* refuse_unary(grpc::CallbackServerContext* ctx, const absl::Status& st);
template <class T>
class RefusedWriter final : public grpc::ServerWriteReactor<T> {
 public:
  explicit RefusedWriter(grpc::Status st) { this->Finish(std::move(st)); }
  void OnDone() override { delete this; }
};
template <class T>
class RefusedReader final : public grpc::ServerReadReactor<T> {
 public:
  explicit RefusedReader(grpc::Status st) { this->Finish(std::move(st)); }
  void OnDone() override { delete this; }
};

// Hands every audited call (who, what, when, result; the request as
// audit_request_text() shortens and redacts it) to `sink`, which must not
// block (it posts to the event loop). `authenticated` is false when nobody
// proved who they are: such a call is counted, not stored.
class AuditInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  using Sink = std::function<void(tern::v1::AuditEntry, bool authenticated)>;
  AuditInterceptorFactory(const Authenticator& auth, Sink sink) : auth_(auth), sink_(std::move(sink)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;

 private:
  const Authenticator& auth_;
  Sink sink_;
};

}  // namespace tern
