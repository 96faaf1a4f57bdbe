// Who may do what: Authenticator's roles, tokens and insecure mode, and which
// calls the audit trail records. The certificate path needs a TLS handshake
// and is covered by the security integration tests.
#include "coordinator/auth.h"

#include <google/protobuf/descriptor.h>
#include <grpcpp/test/server_context_test_spouse.h>
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "core/sha256.h"
#include "tern/v1/admin.pb.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/fleet.pb.h"
#include "tern/v1/rollout.pb.h"
#include "tern/v1/service.pb.h"

namespace tern {
namespace {

using tern::v1::Principal;
using tern::v1::Role;

// A call as a handler sees it: a server context with the client's metadata.
// Without a real TLS connection it carries no certificate.
class Call {
 public:
  // No authorization header when `authorization` is nullopt.
  explicit Call(std::optional<std::string> authorization = std::nullopt) : spouse_(&ctx_) {
    if (authorization) spouse_.AddClientMetadata("authorization", *authorization);
  }
  const grpc::ServerContextBase& ctx() const { return ctx_; }

 private:
  grpc::ServerContext ctx_;
  grpc::testing::ServerContextTestSpouse spouse_;
};

Call bearer(const std::string& secret) { return Call("Bearer " + secret); }

const Permission kAllPermissions[] = {Permission::kRead, Permission::kOperate, Permission::kAdmin,
                                      Permission::kAgent};

const char* permission_name(Permission p) {
  switch (p) {
    case Permission::kRead: return "read";
    case Permission::kOperate: return "operate";
    case Permission::kAdmin: return "admin";
    case Permission::kAgent: return "agent";
  }
  return "?";
}

// The permission matrix, as auth.h states it: viewers read; operators also
// operate; admins also administer; agents only do agent calls; a principal
// with no role does nothing.
struct Grants {
  Role role;
  bool read, operate, admin, agent;
  bool may(Permission p) const {
    switch (p) {
      case Permission::kRead: return read;
      case Permission::kOperate: return operate;
      case Permission::kAdmin: return admin;
      case Permission::kAgent: return agent;
    }
    return false;
  }
};
const Grants kMatrix[] = {
    {tern::v1::ROLE_UNSPECIFIED, false, false, false, false},
    {tern::v1::ROLE_VIEWER, true, false, false, false},
    {tern::v1::ROLE_OPERATOR, true, true, false, false},
    {tern::v1::ROLE_ADMIN, true, true, true, false},
    {tern::v1::ROLE_AGENT, false, false, false, true},
};

TokenRecord token(const std::string& name, Role role, const std::string& secret, bool revoked = false) {
  TokenRecord t;
  t.info.set_name(name);
  t.info.set_role(role);
  t.info.set_revoked(revoked);
  t.secret_sha256 = sha256_hex(secret);
  return t;
}

TEST(AuthMatrixTest, CoversEveryRole) {
  const auto* roles = tern::v1::Role_descriptor();
  for (int i = 0; i < roles->value_count(); ++i) {
    const auto r = static_cast<Role>(roles->value(i)->number());
    bool listed = false;
    for (const auto& g : kMatrix) listed = listed || g.role == r;
    EXPECT_TRUE(listed) << roles->value(i)->name() << " has no row in the permission matrix";
  }
}

// One token per row of the matrix; a caller's name says nothing of its role.
class AuthorizeTest : public ::testing::Test {
 protected:
  AuthorizeTest() {
    std::vector<TokenRecord> tokens;
    for (size_t i = 0; i < std::size(kMatrix); ++i) tokens.push_back(token(name(i), kMatrix[i].role, secret(i)));
    auth_.set_tokens(tokens);
  }
  static std::string name(size_t row) { return "caller-" + std::to_string(row); }
  static std::string secret(size_t row) { return "secret-" + std::to_string(row); }

  Authenticator auth_{/*insecure=*/false};
};

TEST_F(AuthorizeTest, EveryRoleGetsExactlyItsPermissions) {
  for (size_t i = 0; i < std::size(kMatrix); ++i) {
    const Grants& g = kMatrix[i];
    for (Permission p : kAllPermissions) {
      SCOPED_TRACE(std::string(role_name(g.role)) + " asks to " + permission_name(p));
      auto got = auth_.authorize(bearer(secret(i)).ctx(), p);
      if (g.may(p)) {
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(got->name(), name(i));
        EXPECT_EQ(got->role(), g.role);
        EXPECT_EQ(got->via(), "token");
      } else {
        EXPECT_EQ(got.status().code(), absl::StatusCode::kPermissionDenied) << got.status();
      }
    }
  }
}

// A refusal says who asked and what would have allowed it.
TEST_F(AuthorizeTest, ARefusalNamesTheCallerItsRoleAndARoleThatMay) {
  for (size_t i = 0; i < std::size(kMatrix); ++i) {
    const Grants& g = kMatrix[i];
    for (Permission p : kAllPermissions) {
      if (g.may(p)) continue;
      const std::string msg(auth_.authorize(bearer(secret(i)).ctx(), p).status().message());
      EXPECT_TRUE(absl::StrContains(msg, name(i))) << msg;
      EXPECT_TRUE(absl::StrContains(msg, role_name(g.role))) << msg;
      bool names_a_way = false;
      for (const auto& other : kMatrix) {
        if (other.may(p) && absl::StrContains(msg, role_name(other.role))) names_a_way = true;
      }
      EXPECT_TRUE(names_a_way) << "to " << permission_name(p) << ": " << msg;
    }
  }
}

TEST(AuthenticateTest, NoCredentialsIsUnauthenticatedForEveryPermission) {
  Authenticator auth(false);
  Call anonymous;
  EXPECT_EQ(auth.authenticate(anonymous.ctx()).status().code(), absl::StatusCode::kUnauthenticated);
  for (Permission p : kAllPermissions) {
    auto got = auth.authorize(anonymous.ctx(), p);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kUnauthenticated) << permission_name(p) << ": " << got.status();
    EXPECT_FALSE(got.status().message().empty());
  }
}

TEST(AuthenticateTest, TheHeaderMustBeABearerToken) {
  Authenticator auth(false);
  auth.set_tokens({token("ci", tern::v1::ROLE_ADMIN, "s3cret")});
  for (const std::string header : {"s3cret", "Basic s3cret", "bearer s3cret", "Bearer", ""}) {
    EXPECT_EQ(auth.authorize(Call(header).ctx(), Permission::kRead).status().code(),
              absl::StatusCode::kUnauthenticated)
        << "authorization: " << header;
  }
  EXPECT_TRUE(auth.authorize(Call("Bearer s3cret").ctx(), Permission::kAdmin).ok());
}

TEST(AuthenticateTest, AnUnknownTokenOrTheStoredHashIsUnauthenticated) {
  Authenticator auth(false);
  auth.set_tokens({token("ci", tern::v1::ROLE_ADMIN, "s3cret")});
  EXPECT_EQ(auth.authenticate(bearer("guess").ctx()).status().code(), absl::StatusCode::kUnauthenticated);
  // The coordinator keeps only the hash; knowing it is not knowing the secret.
  EXPECT_EQ(auth.authenticate(bearer(sha256_hex("s3cret")).ctx()).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(AuthenticateTest, ARevokedTokenIsRefusedAndTheOthersStillWork) {
  Authenticator auth(false);
  auth.set_tokens({token("old", tern::v1::ROLE_ADMIN, "old-secret", /*revoked=*/true),
                   token("new", tern::v1::ROLE_VIEWER, "new-secret")});
  EXPECT_EQ(auth.authorize(bearer("old-secret").ctx(), Permission::kRead).status().code(),
            absl::StatusCode::kUnauthenticated);
  auto p = auth.authorize(bearer("new-secret").ctx(), Permission::kRead);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->name(), "new");
}

TEST(AuthenticateTest, SetTokensReplacesTheWholeSet) {
  Authenticator auth(false);
  auth.set_tokens({token("a", tern::v1::ROLE_OPERATOR, "secret-a")});
  ASSERT_TRUE(auth.authenticate(bearer("secret-a").ctx()).ok());
  auth.set_tokens({token("b", tern::v1::ROLE_OPERATOR, "secret-b")});
  EXPECT_EQ(auth.authenticate(bearer("secret-a").ctx()).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth.authenticate(bearer("secret-b").ctx()).ok());
  auth.set_tokens({});
  EXPECT_EQ(auth.authenticate(bearer("secret-b").ctx()).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(AuthenticateTest, ANewSecretIsFreshAndWorksAsAToken) {
  const auto [secret, hash] = Authenticator::new_secret();
  EXPECT_TRUE(std::regex_match(secret, std::regex("tern_[0-9a-f]{64}"))) << secret;
  EXPECT_EQ(hash, sha256_hex(secret));
  EXPECT_NE(Authenticator::new_secret().first, secret);
  Authenticator auth(false);
  TokenRecord t;
  t.info.set_name("deploy-bot");
  t.info.set_role(tern::v1::ROLE_OPERATOR);
  t.secret_sha256 = hash;
  auth.set_tokens({t});
  auto p = auth.authorize(bearer(secret).ctx(), Permission::kOperate);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->name(), "deploy-bot");
}

// gRPC threads authenticate while the event loop changes the tokens.
TEST(AuthenticateTest, TokensChangeWhileCallsAreAuthenticated) {
  Authenticator auth(false);
  const TokenRecord kept = token("kept", tern::v1::ROLE_VIEWER, "kept-secret");
  auth.set_tokens({kept});
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 2; ++i) {
    callers.emplace_back([&] {
      while (!stop) {
        if (!auth.authorize(bearer("kept-secret").ctx(), Permission::kRead).ok()) ++failures;
      }
    });
  }
  for (int i = 0; i < 500; ++i) {
    auth.set_tokens({kept, token("t" + std::to_string(i), tern::v1::ROLE_ADMIN, "s" + std::to_string(i))});
  }
  stop = true;
  for (auto& t : callers) t.join();
  EXPECT_EQ(failures, 0) << "a token in every set was refused while the set changed";
}

TEST(InsecureModeTest, EveryCallerIsAnAnonymousAdmin) {
  Authenticator auth(/*insecure=*/true);
  EXPECT_TRUE(auth.insecure());
  EXPECT_FALSE(Authenticator(false).insecure());
  for (const std::optional<std::string>& header : {std::optional<std::string>(), {"Bearer nonsense"}, {"Basic x"}}) {
    Call call(header);
    auto p = auth.authenticate(call.ctx());
    ASSERT_TRUE(p.ok()) << header.value_or("no header") << ": " << p.status();
    EXPECT_EQ(p->name(), "anonymous");
    EXPECT_EQ(p->role(), tern::v1::ROLE_ADMIN);
    EXPECT_EQ(p->via(), "insecure");
  }
}

TEST(InsecureModeTest, EveryPermissionIsGrantedAndAgentsAreWhoTheySay) {
  Authenticator auth(true);
  for (Permission p : kAllPermissions) {
    auto got = auth.authorize(Call().ctx(), p);
    ASSERT_TRUE(got.ok()) << permission_name(p) << ": " << got.status();
    EXPECT_EQ(got->via(), "insecure");
    EXPECT_EQ(got->role(), p == Permission::kAgent ? tern::v1::ROLE_AGENT : tern::v1::ROLE_ADMIN)
        << permission_name(p);
  }
}

TEST(RoleNameTest, EveryRoleHasANameThatParsesBack) {
  const auto* roles = tern::v1::Role_descriptor();
  for (int i = 0; i < roles->value_count(); ++i) {
    const auto r = static_cast<Role>(roles->value(i)->number());
    if (r == tern::v1::ROLE_UNSPECIFIED) continue;
    auto parsed = parse_role(role_name(r));
    ASSERT_TRUE(parsed.ok()) << roles->value(i)->name() << ": " << parsed.status();
    EXPECT_EQ(*parsed, r);
  }
  EXPECT_EQ(std::string(role_name(tern::v1::ROLE_VIEWER)), "viewer");
  EXPECT_EQ(std::string(role_name(tern::v1::ROLE_OPERATOR)), "operator");
  EXPECT_EQ(std::string(role_name(tern::v1::ROLE_ADMIN)), "admin");
  EXPECT_EQ(std::string(role_name(tern::v1::ROLE_AGENT)), "agent");
}

TEST(RoleNameTest, AnUnknownRoleIsRefusedByName) {
  for (const std::string bad : {"root", "", "none", "superuser"}) {
    auto r = parse_role(bad);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(r.status().message(), "\"" + bad + "\"")) << r.status();
  }
}

// ---- the audit trail ----

// Every method of the API's services.
std::vector<const google::protobuf::MethodDescriptor*> all_methods() {
  std::vector<const google::protobuf::MethodDescriptor*> out;
  for (const auto* file : {tern::v1::WhoAmIRequest::descriptor()->file(), tern::v1::AgentMessage::descriptor()->file(),
                           tern::v1::ListHostsRequest::descriptor()->file(),
                           tern::v1::StartRolloutRequest::descriptor()->file(),
                           tern::v1::ApplyServiceRequest::descriptor()->file()}) {
    for (int s = 0; s < file->service_count(); ++s) {
      for (int m = 0; m < file->service(s)->method_count(); ++m) out.push_back(file->service(s)->method(m));
    }
  }
  return out;
}

// gRPC's name for a method: "/tern.v1.FleetService/DeployHost".
std::string path_of(const google::protobuf::MethodDescriptor* m) {
  return "/" + m->service()->full_name() + "/" + m->name();
}

// Only what changes something is audited: for the operators' services that
// is every method that is not a read (Get, List, Watch), a dry run (Plan) or
// WhoAmI. The agents' own stream is not an operator's action.
TEST(AuditTest, EveryCallThatChangesSomethingIsAuditedAndNoReadIs) {
  const auto methods = all_methods();
  ASSERT_GT(methods.size(), 25u) << "the API's services were not all found";
  int audited = 0;
  for (const auto* m : methods) {
    const std::string& n = m->name();
    const bool read = absl::StartsWith(n, "Get") || absl::StartsWith(n, "List") || absl::StartsWith(n, "Watch") ||
                      absl::StartsWith(n, "Plan") || n == "WhoAmI";
    const bool agent = m->service()->name() == "AgentService";
    EXPECT_EQ(AuditInterceptorFactory::is_mutating(path_of(m)), !read && !agent) << path_of(m);
    if (!read && !agent) ++audited;
  }
  EXPECT_GT(audited, 0);
}

}  // namespace
}  // namespace tern
