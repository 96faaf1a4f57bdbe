#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/auth.h"
#include "coordinator/database.h"
#include "core/event_loop.h"
#include "tern/v1/admin.grpc.pb.h"

namespace tern {

// Tokens (only their secrets' sha256) and the audit trail, in the
// coordinator's SQLite database. Event-loop thread only, like Database.
class AdminStore {
 public:
  static absl::StatusOr<std::unique_ptr<AdminStore>> open(Database& db);

  absl::StatusOr<std::vector<TokenRecord>> tokens();
  absl::Status add_token(const TokenRecord& t, int64_t created_ms);
  // NOT_FOUND when there is no such token.
  absl::Status revoke_token(const std::string& name);
  // When tokens last authenticated a call (name -> unix ms).
  absl::Status touch_tokens(const std::map<std::string, int64_t>& last_used);
  absl::Status deny(const tern::v1::DeniedCertificate& d);
  // NOT_FOUND when neither is denied.
  absl::Status allow(const std::string& serial, const std::string& common_name);
  absl::StatusOr<std::vector<tern::v1::DeniedCertificate>> denied();
  absl::Status record(const tern::v1::AuditEntry& e);
  // All of `entries`, in one transaction.
  absl::Status record_all(const std::vector<tern::v1::AuditEntry>& entries);
  absl::StatusOr<std::vector<tern::v1::AuditEntry>> audit(uint32_t limit);

 private:
  explicit AdminStore(Database& db) : db_(db) {}
  Database& db_;
};

// AdminService: who am I, tokens, the audit trail. Calls are authorized on
// the gRPC thread, then handed to the event loop that owns the store.
class AdminServiceImpl final : public tern::v1::AdminService::CallbackService {
 public:
  // `before_audit_read` runs on the loop before ListAudit reads the store
  // (it writes the entries still queued, so a reader sees every call that
  // was answered before it asked).
  AdminServiceImpl(EventLoop& loop, AdminStore& store, Authenticator& auth,
                   std::function<void()> before_audit_read = {})
      : loop_(loop), store_(store), auth_(auth), before_audit_read_(std::move(before_audit_read)) {}

  grpc::ServerUnaryReactor* WhoAmI(grpc::CallbackServerContext* ctx, const tern::v1::WhoAmIRequest* req,
                                   tern::v1::Principal* resp) override;
  grpc::ServerUnaryReactor* CreateToken(grpc::CallbackServerContext* ctx, const tern::v1::CreateTokenRequest* req,
                                        tern::v1::CreateTokenResponse* resp) override;
  grpc::ServerUnaryReactor* RevokeToken(grpc::CallbackServerContext* ctx, const tern::v1::RevokeTokenRequest* req,
                                        tern::v1::RevokeTokenResponse* resp) override;
  grpc::ServerUnaryReactor* ListTokens(grpc::CallbackServerContext* ctx, const tern::v1::ListTokensRequest* req,
                                       tern::v1::ListTokensResponse* resp) override;
  grpc::ServerUnaryReactor* ListAudit(grpc::CallbackServerContext* ctx, const tern::v1::ListAuditRequest* req,
                                      tern::v1::ListAuditResponse* resp) override;
  grpc::ServerUnaryReactor* DenyCertificate(grpc::CallbackServerContext* ctx,
                                            const tern::v1::DenyCertificateRequest* req,
                                            tern::v1::DeniedCertificate* resp) override;
  grpc::ServerUnaryReactor* AllowCertificate(grpc::CallbackServerContext* ctx,
                                             const tern::v1::AllowCertificateRequest* req,
                                             tern::v1::AllowCertificateResponse* resp) override;
  grpc::ServerUnaryReactor* ListDeniedCertificates(grpc::CallbackServerContext* ctx,
                                                   const tern::v1::ListDeniedCertificatesRequest* req,
                                                   tern::v1::ListDeniedCertificatesResponse* resp) override;

  // Runs on the loop after a certificate is denied (to close what it holds open).
  void on_denied(std::function<void(const tern::v1::DeniedCertificate&)> fn) { on_denied_ = std::move(fn); }
  // Reloads the denied certificates into the authenticator (loop thread).
  absl::Status refresh_denied();

  // Reloads the live tokens into the authenticator (loop thread).
  absl::Status refresh_tokens();

 private:
  EventLoop& loop_;
  AdminStore& store_;
  Authenticator& auth_;
  std::function<void()> before_audit_read_;
  std::function<void(const tern::v1::DeniedCertificate&)> on_denied_;
};

}  // namespace tern
