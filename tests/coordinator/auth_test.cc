// Who may do what: Authenticator's roles, certificates, tokens and insecure
// mode, and which calls the audit trail records.
#include "coordinator/auth.h"
#include "core/words.h"

#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/test/server_context_test_spouse.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "core/sha256.h"
#include "core/tls.h"
#include "tern/v1/admin.pb.h"
#include "tern/v1/agent.pb.h"
#include "tern/v1/fleet.pb.h"
#include "tern/v1/rollout.pb.h"
#include "tern/v1/service.pb.h"
#include "tests/support/command.h"
#include "tests/support/temp_dir.h"

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

const Permission kAllPermissions[] = {Permission::kAnyone, Permission::kRead, Permission::kOperate,
                                      Permission::kAdmin, Permission::kAgent};

const char* permission_name(Permission p) {
  switch (p) {
    case Permission::kAnyone: return "anything";
    case Permission::kRead: return "read";
    case Permission::kOperate: return "operate";
    case Permission::kAdmin: return "admin";
    case Permission::kAgent: return "agent";
  }
  return "?";
}

// The permission matrix, as auth.h states it: viewers read; operators also
// operate; admins also administer; agents only do agent calls; a principal
// with no role does nothing but what needs no role (WhoAmI).
struct Grants {
  Role role;
  bool read, operate, admin, agent;
  bool may(Permission p) const {
    switch (p) {
      case Permission::kAnyone: return true;
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
      SCOPED_TRACE(std::string(word(g.role)) + " asks to " + permission_name(p));
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
      EXPECT_TRUE(absl::StrContains(msg, word(g.role))) << msg;
      bool names_a_way = false;
      for (const auto& other : kMatrix) {
        if (other.may(p) && absl::StrContains(msg, word(other.role))) names_a_way = true;
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
  for (const std::string header : {"s3cret", "Basic s3cret", "Bearers3cret", "Bearer", "Bearer ", "Bearerx s3cret", ""}) {
    EXPECT_EQ(auth.authorize(Call(header).ctx(), Permission::kRead).status().code(),
              absl::StatusCode::kUnauthenticated)
        << "authorization: " << header;
  }
  EXPECT_TRUE(auth.authorize(Call("Bearer s3cret").ctx(), Permission::kAdmin).ok());
}

// The scheme is case-insensitive (RFC 7235 section 2.1, which RFC 6750 builds
// on): a client that sends "bearer" is not refused for its spelling.
TEST(AuthenticateTest, TheBearerSchemeIsCaseInsensitive) {
  Authenticator auth(false);
  auth.set_tokens({token("ci", tern::v1::ROLE_ADMIN, "s3cret")});
  for (const std::string header : {"bearer s3cret", "BEARER s3cret", "bEaReR s3cret", "Bearer  s3cret"}) {
    auto got = auth.authenticate(Call(header).ctx());
    ASSERT_TRUE(got.ok()) << "authorization: " << header << ": " << got.status();
    EXPECT_EQ(got->name(), "ci");
  }
  EXPECT_EQ(auth.authenticate(Call("bearer S3CRET").ctx()).status().code(), absl::StatusCode::kUnauthenticated)
      << "the token itself is not";
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
    auto parsed = parse_role(word(r));
    ASSERT_TRUE(parsed.ok()) << roles->value(i)->name() << ": " << parsed.status();
    EXPECT_EQ(*parsed, r);
  }
  EXPECT_EQ(std::string(word(tern::v1::ROLE_VIEWER)), "viewer");
  EXPECT_EQ(std::string(word(tern::v1::ROLE_OPERATOR)), "operator");
  EXPECT_EQ(std::string(word(tern::v1::ROLE_ADMIN)), "admin");
  EXPECT_EQ(std::string(word(tern::v1::ROLE_AGENT)), "agent");
}

TEST(RoleNameTest, AnUnknownRoleIsRefusedByName) {
  for (const std::string bad : {"root", "", "none", "superuser"}) {
    auto r = parse_role(bad);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(r.status().message(), "\"" + bad + "\"")) << r.status();
  }
}

// ---- certificates ----

// The handler of the test server below: asks an Authenticator for the
// permission its method names ("/test/read", "/test/agent", ...) and answers
// with the principal in the trailing metadata, or with the refusal.
class PermissionAsker final : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    std::optional<Permission> wanted;
    for (Permission p : kAllPermissions) {
      if (ctx->method() == std::string("/test/") + permission_name(p)) wanted = p;
    }
    if (!wanted) return new Finished(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, ctx->method()));
    auto who = auth_.authorize(*ctx, *wanted);
    if (!who.ok()) {
      return new Finished(
          grpc::Status(static_cast<grpc::StatusCode>(who.status().code()), std::string(who.status().message())));
    }
    ctx->AddTrailingMetadata("principal", who->name() + "/" + word(who->role()) + "/" + who->via());
    return new Finished(grpc::Status::OK);
  }

 private:
  class Finished final : public grpc::ServerGenericBidiReactor {
   public:
    explicit Finished(grpc::Status st) { Finish(std::move(st)); }
    void OnDone() override { delete this; }
  };
  Authenticator auth_{/*insecure=*/false};
};

// A TLS server as the coordinator runs it (tls_server_credentials: client
// certificates verified against the fleet CA when presented) with a
// PermissionAsker, and a test CA with a certificate per role.
class CertificateAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir;
    for (std::vector<std::string> args : {std::vector<std::string>{"init", pki()},
                                          {"coordinator", pki(), "coord"},
                                          {"operator", pki(), "vera", "viewer"},
                                          {"operator", pki(), "otto", "operator"},
                                          {"operator", pki(), "ada", "admin"},
                                          {"agent", pki(), "web-1"}}) {
      args.insert(args.begin(), std::string(TERN_SOURCE_DIR) + "/scripts/tern-pki.sh");
      const auto made = testing::run_cmd(args);
      ASSERT_EQ(made.code, 0) << made.err;
    }
    auto tls = load_tls({pki() + "/ca.crt", pki() + "/coordinator.crt", pki() + "/coordinator.key", ""}, true,
                        "coordinator");
    ASSERT_TRUE(tls.ok()) << tls.status();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", tls_server_credentials(*tls), &port_);
    asker_ = new PermissionAsker;
    builder.RegisterCallbackGenericService(asker_);
    server_ = builder.BuildAndStart().release();
    ASSERT_NE(server_, nullptr);
  }
  static void TearDownTestSuite() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    delete server_;
    server_ = nullptr;
    delete asker_;
    asker_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  static std::string pki() { return dir_->file("pki"); }

  struct Answer {
    grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
    std::string message;
    std::string principal;  // "name/role/via" when allowed
  };
  // A call presenting `cert` (a file stem in the PKI dir; empty: none).
  static Answer ask(const std::string& cert, Permission p) {
    TlsFiles files{pki() + "/ca.crt", "", "", "coord"};
    if (!cert.empty()) files.cert = pki() + "/" + cert + ".crt", files.key = pki() + "/" + cert + ".key";
    auto tls = load_tls(files, !cert.empty(), "ternctl");
    EXPECT_TRUE(tls.ok()) << tls.status();
    if (!tls.ok()) return {};
    auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port_), tls_channel_credentials(*tls),
                                             tls_channel_args(*tls));
    grpc::GenericStub stub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    grpc::Slice empty("");
    const grpc::ByteBuffer request(&empty, 1);
    grpc::ByteBuffer response;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, std::string("/test/") + permission_name(p), grpc::StubOptions(), &request, &response,
                   [&](grpc::Status st) { done.set_value(std::move(st)); });
    const grpc::Status st = done.get_future().get();
    Answer a{st.error_code(), st.error_message(), ""};
    const auto& trailers = ctx.GetServerTrailingMetadata();
    if (auto it = trailers.find("principal"); it != trailers.end()) a.principal.assign(it->second.data(), it->second.size());
    return a;
  }

 private:
  static inline testing::TempDir* dir_ = nullptr;
  static inline PermissionAsker* asker_ = nullptr;
  static inline grpc::Server* server_ = nullptr;
  static inline int port_ = 0;
};

// The certificate's CN names the caller and its OU the role; the same
// matrix as for tokens.
TEST_F(CertificateAuthTest, TheRoleIsTheCertificatesOrgUnit) {
  struct Holder {
    const char* cert;
    const char* name;
    Role role;
  };
  for (const Holder& h : {Holder{"operator-vera", "vera", tern::v1::ROLE_VIEWER},
                          Holder{"operator-otto", "otto", tern::v1::ROLE_OPERATOR},
                          Holder{"operator-ada", "ada", tern::v1::ROLE_ADMIN},
                          Holder{"agent-web-1", "web-1", tern::v1::ROLE_AGENT}}) {
    const Grants* grants = nullptr;
    for (const auto& g : kMatrix) {
      if (g.role == h.role) grants = &g;
    }
    ASSERT_NE(grants, nullptr);
    for (Permission p : kAllPermissions) {
      SCOPED_TRACE(std::string(h.cert) + " asks to " + permission_name(p));
      const Answer a = ask(h.cert, p);
      if (grants->may(p)) {
        EXPECT_EQ(a.code, grpc::StatusCode::OK) << a.message;
        EXPECT_EQ(a.principal, std::string(h.name) + "/" + word(h.role) + "/certificate");
      } else {
        EXPECT_EQ(a.code, grpc::StatusCode::PERMISSION_DENIED) << a.message;
        EXPECT_TRUE(absl::StrContains(a.message, h.name)) << a.message;
      }
    }
  }
}

TEST_F(CertificateAuthTest, ACertificateThatNamesNoRoleIsRefused) {
  // The coordinator's own certificate is a valid client certificate of the
  // fleet CA, but OU=coordinator is no Tern role.
  for (Permission p : kAllPermissions) {
    const Answer a = ask("coordinator", p);
    EXPECT_EQ(a.code, grpc::StatusCode::PERMISSION_DENIED) << permission_name(p) << ": " << a.message;
    EXPECT_TRUE(a.principal.empty());
  }
}

TEST_F(CertificateAuthTest, NoCertificateAndNoTokenIsUnauthenticated) {
  const Answer a = ask("", Permission::kRead);
  EXPECT_EQ(a.code, grpc::StatusCode::UNAUTHENTICATED) << a.message;
  EXPECT_FALSE(a.message.empty());
}

// ---- the audit trail ----

}  // namespace
}  // namespace tern
