#include "coordinator/auth.h"

#include "coordinator/audit_trail.h"

#include <google/protobuf/message.h>
#include <google/protobuf/util/time_util.h>
#include <openssl/rand.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/clock.h"
#include "core/sha256.h"
#include "core/tls.h"
#include "core/words.h"

namespace tern {
namespace {

using tern::v1::Principal;
using tern::v1::Role;

bool allows(Role r, Permission p) {
  switch (p) {
    case Permission::kAnyone: return true;
    case Permission::kRead: return r == tern::v1::ROLE_VIEWER || r == tern::v1::ROLE_OPERATOR || r == tern::v1::ROLE_ADMIN;
    case Permission::kOperate: return r == tern::v1::ROLE_OPERATOR || r == tern::v1::ROLE_ADMIN;
    case Permission::kAdmin: return r == tern::v1::ROLE_ADMIN;
    case Permission::kAgent: return r == tern::v1::ROLE_AGENT;
  }
  return false;
}

const char* needs(Permission p) {
  switch (p) {
    case Permission::kAnyone: return "credentials";
    case Permission::kRead: return "the viewer, operator or admin role";
    case Permission::kOperate: return "the operator or admin role";
    case Permission::kAdmin: return "the admin role";
    case Permission::kAgent: return "an agent certificate (OU=agent)";
  }
  return "?";
}

std::string first(const grpc::AuthContext& ctx, const char* property) {
  auto v = ctx.FindPropertyValues(property);
  return v.empty() ? "" : std::string(v.front().data(), v.front().size());
}

}  // namespace

absl::StatusOr<Role> parse_role(const std::string& name) {
  if (auto r = role(name)) return *r;
  return absl::InvalidArgumentError(absl::StrCat("role \"", name, "\" must be viewer, operator, admin or agent"));
}

absl::StatusOr<Principal> Authenticator::authenticate(const grpc::ServerContextBase& ctx) const {
  Principal p;
  if (insecure_) {
    p.set_name("anonymous");
    p.set_role(tern::v1::ROLE_ADMIN);
    p.set_via("insecure");
    return p;
  }
  auto auth = ctx.auth_context();
  const std::string pem = auth ? first(*auth, "x509_pem_cert") : "";
  if (!pem.empty()) {
    // gRPC has verified the chain against the fleet CA and its validity.
    auto id = cert_identity(pem);
    if (!id.ok()) return absl::UnauthenticatedError(absl::StrCat("unreadable client certificate: ", id.status().message()));
    auto role = parse_role(id->org_unit);
    if (!role.ok() || id->common_name.empty()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "client certificate \"", id->common_name, "\" names no Tern role (OU must be viewer, operator, admin or "
          "agent); issue one with scripts/tern-pki.sh"));
    }
    {
      std::shared_lock lock(mu_);
      auto by_serial = denied_serials_.find(id->serial);
      auto by_name = denied_names_.find(id->common_name);
      if (by_serial != denied_serials_.end() || by_name != denied_names_.end()) {
        const std::string& why = by_serial != denied_serials_.end() ? by_serial->second : by_name->second;
        return absl::UnauthenticatedError(absl::StrCat(
            "client certificate \"", id->common_name, "\" (serial ", id->serial, ") was revoked by an admin",
            why.empty() ? "" : absl::StrCat(": ", why), "; ask an admin for a new one"));
      }
    }
    p.set_name(id->common_name);
    p.set_role(*role);
    p.set_via("certificate");
    p.set_cert_serial(id->serial);
    p.mutable_labels()->insert(id->labels.begin(), id->labels.end());
    return p;
  }
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError(
        "no client certificate and no token: give ternctl --cert/--key (or --token), "
        "or set TERN_CERT/TERN_KEY or TERN_TOKEN");
  }
  return token_principal(std::string_view(it->second.data(), it->second.size()));
}

absl::StatusOr<Principal> Authenticator::token_principal(std::string_view header) const {
  Principal p;
  // "Bearer <token>"; the scheme is case-insensitive (RFC 7235 section 2.1)
  // and one or more spaces may follow it.
  const absl::string_view value(header.data(), header.size());
  const absl::string_view secret =
      absl::StartsWithIgnoreCase(value, "bearer ") ? absl::StripLeadingAsciiWhitespace(value.substr(7)) : "";
  if (secret.empty()) {
    return absl::UnauthenticatedError("the authorization header must be \"Bearer <token>\"");
  }
  const std::string hash = sha256_hex(std::string(secret));
  std::shared_lock lock(mu_);
  auto t = by_hash_.find(hash);
  if (t == by_hash_.end()) {
    return absl::UnauthenticatedError("unknown or revoked token; ask an admin for a new one (ternctl token create)");
  }
  const int64_t now = to_unix_millis(SystemClock::instance().now());
  if (t->second.has_expires() && google::protobuf::util::TimeUtil::TimestampToMilliseconds(t->second.expires()) <= now) {
    return absl::UnauthenticatedError(absl::StrCat("token \"", t->second.name(), "\" expired at ",
                                                   google::protobuf::util::TimeUtil::ToString(t->second.expires()),
                                                   "; ask an admin for a new one (ternctl token create)"));
  }
  p.set_name(t->second.name());
  p.set_role(t->second.role());
  p.set_via("token");
  {
    std::lock_guard used(used_mu_);
    last_used_[t->second.name()] = now;
  }
  return p;
}

grpc::Status CredentialGate::Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                                     OutputMetadata*, OutputMetadata*) {
  if (context != nullptr && !first(*context, "x509_pem_cert").empty()) return grpc::Status::OK;
  std::string why = "no client certificate and no token: give ternctl --cert/--key (or --token-file), "
                    "or set TERN_CERT/TERN_KEY or TERN_TOKEN";
  if (auto it = auth_metadata.find("authorization"); it != auth_metadata.end()) {
    auto p = auth_.token_principal(std::string_view(it->second.data(), it->second.size()));
    if (p.ok()) return grpc::Status::OK;
    why = std::string(p.status().message());
  }
  std::string method;
  if (auto it = auth_metadata.find(":path"); it != auth_metadata.end()) method.assign(it->second.data(), it->second.size());
  if (on_refused_) on_refused_(method);
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, why);
}

absl::StatusOr<Principal> Authenticator::authorize(const grpc::ServerContextBase& ctx, Permission perm) const {
  auto p = authenticate(ctx);
  if (!p.ok()) return p.status();
  // Without authentication anyone may do anything, agents included.
  if (insecure_) {
    if (perm == Permission::kAgent) p->set_role(tern::v1::ROLE_AGENT);
    return p;
  }
  if (!allows(p->role(), perm)) {
    return absl::PermissionDeniedError(absl::StrCat(p->name(), " (", word(p->role()), ", by ", p->via(),
                                                    ") may not do this: it needs ", needs(perm)));
  }
  return p;
}

void Authenticator::set_tokens(std::vector<TokenRecord> tokens) {
  std::map<std::string, tern::v1::TokenInfo> m;
  for (auto& t : tokens) {
    if (!t.info.revoked()) m[t.secret_sha256] = t.info;
  }
  std::unique_lock lock(mu_);
  by_hash_ = std::move(m);
}

void Authenticator::set_denied(const std::vector<tern::v1::DeniedCertificate>& denied) {
  std::map<std::string, std::string> serials, names;
  for (const auto& d : denied) {
    if (!d.serial().empty()) serials[d.serial()] = d.reason();
    if (!d.common_name().empty()) names[d.common_name()] = d.reason();
  }
  std::unique_lock lock(mu_);
  denied_serials_ = std::move(serials);
  denied_names_ = std::move(names);
}

std::map<std::string, int64_t> Authenticator::take_last_used() const {
  std::lock_guard used(used_mu_);
  return std::exchange(last_used_, {});
}

std::pair<std::string, std::string> Authenticator::new_secret() {
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof(raw)) != 1) std::abort();  // no randomness: nothing safe to hand out
  static const char* digits = "0123456789abcdef";
  std::string secret = "tern_";
  for (unsigned char c : raw) secret += digits[c >> 4], secret += digits[c & 15];
  return {secret, sha256_hex(secret)};
}

grpc::ServerUnaryReactor* refuse_unary(grpc::CallbackServerContext* ctx, const absl::Status& st) {
  auto* r = ctx->DefaultReactor();
  r->Finish(grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message())));
  return r;
}

// ---- who may call what ----

namespace {

constexpr Permission kAnyone = Permission::kAnyone, kRead = Permission::kRead, kOperate = Permission::kOperate,
                     kAdmin = Permission::kAdmin, kAgent = Permission::kAgent;
constexpr bool kAudited = true, kNotAudited = false;

// One row per Rpc; tests/coordinator/auth_rules_test.cc holds it against the protos.
const std::vector<MethodRule> kRules = {
    {Rpc::kConnect, "/tern.v1.AgentService/Connect", kAgent, kNotAudited},
    {Rpc::kFetchArtifact, "/tern.v1.AgentService/FetchArtifact", kAgent, kNotAudited},
    {Rpc::kListHosts, "/tern.v1.FleetService/ListHosts", kRead, kNotAudited},
    {Rpc::kGetHost, "/tern.v1.FleetService/GetHost", kRead, kNotAudited},
    {Rpc::kGetHostHistory, "/tern.v1.FleetService/GetHostHistory", kRead, kNotAudited},
    {Rpc::kGetVersion, "/tern.v1.FleetService/GetVersion", kRead, kNotAudited},
    {Rpc::kDeployHost, "/tern.v1.FleetService/DeployHost", kOperate, kAudited},
    {Rpc::kRollbackHost, "/tern.v1.FleetService/RollbackHost", kOperate, kAudited},
    {Rpc::kCordonHost, "/tern.v1.FleetService/CordonHost", kOperate, kAudited},
    {Rpc::kApplyService, "/tern.v1.ServiceService/ApplyService", kAdmin, kAudited},
    {Rpc::kGetService, "/tern.v1.ServiceService/GetService", kRead, kNotAudited},
    {Rpc::kListServices, "/tern.v1.ServiceService/ListServices", kRead, kNotAudited},
    {Rpc::kDeleteService, "/tern.v1.ServiceService/DeleteService", kAdmin, kAudited},
    {Rpc::kUploadArtifact, "/tern.v1.ServiceService/UploadArtifact", kAdmin, kAudited},
    {Rpc::kListArtifacts, "/tern.v1.ServiceService/ListArtifacts", kRead, kNotAudited},
    {Rpc::kRegisterArtifact, "/tern.v1.ServiceService/RegisterArtifact", kAdmin, kAudited},
    {Rpc::kPlanRollout, "/tern.v1.RolloutService/PlanRollout", kRead, kNotAudited},
    {Rpc::kStartRollout, "/tern.v1.RolloutService/StartRollout", kOperate, kAudited},
    {Rpc::kGetRollout, "/tern.v1.RolloutService/GetRollout", kRead, kNotAudited},
    {Rpc::kListRollouts, "/tern.v1.RolloutService/ListRollouts", kRead, kNotAudited},
    {Rpc::kWatchRollout, "/tern.v1.RolloutService/WatchRollout", kRead, kNotAudited},
    {Rpc::kGetRolloutHistory, "/tern.v1.RolloutService/GetRolloutHistory", kRead, kNotAudited},
    {Rpc::kPauseRollout, "/tern.v1.RolloutService/PauseRollout", kOperate, kAudited},
    {Rpc::kResumeRollout, "/tern.v1.RolloutService/ResumeRollout", kOperate, kAudited},
    {Rpc::kPromoteRollout, "/tern.v1.RolloutService/PromoteRollout", kOperate, kAudited},
    {Rpc::kAbortRollout, "/tern.v1.RolloutService/AbortRollout", kOperate, kAudited},
    {Rpc::kRollbackRollout, "/tern.v1.RolloutService/RollbackRollout", kOperate, kAudited},
    {Rpc::kExtendRollout, "/tern.v1.RolloutService/ExtendRollout", kOperate, kAudited},
    {Rpc::kGetRolloutAnalysis, "/tern.v1.RolloutService/GetRolloutAnalysis", kRead, kNotAudited},
    {Rpc::kWhoAmI, "/tern.v1.AdminService/WhoAmI", kAnyone, kNotAudited},
    {Rpc::kCreateToken, "/tern.v1.AdminService/CreateToken", kAdmin, kAudited},
    {Rpc::kRevokeToken, "/tern.v1.AdminService/RevokeToken", kAdmin, kAudited},
    {Rpc::kListTokens, "/tern.v1.AdminService/ListTokens", kAdmin, kNotAudited},
    {Rpc::kListAudit, "/tern.v1.AdminService/ListAudit", kAdmin, kNotAudited},
    {Rpc::kDenyCertificate, "/tern.v1.AdminService/DenyCertificate", kAdmin, kAudited},
    {Rpc::kAllowCertificate, "/tern.v1.AdminService/AllowCertificate", kAdmin, kAudited},
    {Rpc::kListDeniedCertificates, "/tern.v1.AdminService/ListDeniedCertificates", kAdmin, kNotAudited},
};

}  // namespace

const std::vector<MethodRule>& method_rules() { return kRules; }

const MethodRule& rule(Rpc rpc) {
  for (const auto& r : kRules) {
    if (r.rpc == rpc) return r;
  }
  std::abort();  // an Rpc without a row: the table test names it
}

const MethodRule* find_rule(std::string_view path) {
  for (const auto& r : kRules) {
    if (path == r.path) return &r;
  }
  return nullptr;
}

// ---- audit ----

namespace {

const char* code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    default: return "UNKNOWN";
  }
}

class AuditInterceptor final : public grpc::experimental::Interceptor {
 public:
  AuditInterceptor(grpc::experimental::ServerRpcInfo* info, const Authenticator& auth,
                   const AuditInterceptorFactory::Sink& sink)
      : info_(info), auth_(auth), sink_(sink) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) && request_.empty()) {
      // The first message: the request (for an upload, its metadata).
      if (auto* m = static_cast<const google::protobuf::Message*>(methods->GetRecvMessage())) {
        request_ = audit_request_text(*m);
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      tern::v1::AuditEntry e;
      *e.mutable_time() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(
          to_unix_millis(SystemClock::instance().now()));
      auto* ctx = info_->server_context();
      bool authenticated = false;
      if (auto p = auth_.authenticate(*ctx); p.ok()) {
        *e.mutable_principal() = *p;
        authenticated = true;
      } else {
        e.mutable_principal()->set_name("unauthenticated");
      }
      e.set_method(info_->method());
      e.set_request(request_);
      const grpc::Status st = methods->GetSendStatus();
      e.set_code(code_name(st.error_code()));
      e.set_message(st.error_message());
      e.set_peer(ctx->peer());
      sink_(std::move(e), authenticated);
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  const Authenticator& auth_;
  const AuditInterceptorFactory::Sink& sink_;
  std::string request_;
};

}  // namespace

grpc::experimental::Interceptor* AuditInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  if (info->method() == nullptr) return nullptr;
  const auto* r = find_rule(info->method());
  if (r == nullptr || !r->audited) return nullptr;
  return new AuditInterceptor(info, auth_, sink_);
}

}  // namespace tern
