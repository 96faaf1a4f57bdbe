#pragma once

#include <functional>
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

  // Reloads the live tokens into the authenticator (loop thread).
  absl::Status refresh_tokens();

 private:
  EventLoop& loop_;
  AdminStore& store_;
  Authenticator& auth_;
  std::function<void()> before_audit_read_;
};

}  // namespace tern
