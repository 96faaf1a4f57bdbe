// ternctl version, whoami, token ... and audit: the coordinator itself, who
// the caller is to it, its tokens and its audit trail.
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <memory>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "core/version.h"
#include "ctl/ctl_internal.h"
#include "ctl/table.h"
#include "tern/v1/admin.grpc.pb.h"
#include "tern/v1/fleet.grpc.pb.h"

namespace tern {
namespace {

using google::protobuf::util::TimeUtil;
using AdminStub = tern::v1::AdminService::Stub;
using FleetStub = tern::v1::FleetService::Stub;

int cmd_version(const CtlContext& c, bool client_only) {
  tern::v1::VersionInfo server;
  grpc::Status st;
  if (!client_only) st = c.unary(&FleetStub::GetVersion, tern::v1::GetVersionRequest(), server);
  if (c.json) {
    std::string coordinator = !client_only && st.ok() ? to_json(server) : "null";
    while (!coordinator.empty() && coordinator.back() == '\n') coordinator.pop_back();
    c.out << "{\n  \"client\": \"" << kVersion << "\",\n  \"coordinator\": " << coordinator << "\n}\n";
  } else {
    c.out << "ternctl " << kVersion << "\n";
    if (!client_only && st.ok()) {
      c.out << "tern-coordinator " << server.version() << " at " << c.coordinator << " (epoch " << server.epoch()
          << ", up since " << when(server.started()) << ")\n";
    }
  }
  if (!client_only && !st.ok()) return c.rpc_error("coordinator version", st);
  return kExitOk;
}

int cmd_whoami(const CtlContext& c) {
  auto print = [&](const tern::v1::Principal& p) {
    c.out << p.name() << " (" << shown(p.role()) << ", by " << p.via() << ")\n";
  };
  return c.show("whoami", &AdminStub::WhoAmI, tern::v1::WhoAmIRequest(), print);
}

int cmd_token_create(const CtlContext& c, const std::string& name, const std::string& role, const std::string& ttl) {
  tern::v1::CreateTokenRequest req;
  req.set_name(name);
  if (!ttl.empty()) {
    const auto d = duration_flag(c, "token create: --ttl", ttl);
    if (!d) return kExitUsage;
    *req.mutable_ttl() = TimeUtil::MillisecondsToDuration(d->count());
  }
  req.set_role(role == "admin" ? tern::v1::ROLE_ADMIN : role == "operator" ? tern::v1::ROLE_OPERATOR
                                                                            : tern::v1::ROLE_VIEWER);
  auto print = [&](const tern::v1::CreateTokenResponse& resp) {
    c.out << resp.secret() << "\n";
    c.err << "token " << name << " (" << role << ") created, valid until "
          << when(resp.token().expires()) << "; the secret above is shown only now. "
          << "Use it with --token-file or TERN_TOKEN.\n";
  };
  return c.show(absl::StrCat("token create ", name), &AdminStub::CreateToken, req, print);
}

int cmd_token_list(const CtlContext& c) {
  auto print = [&](const tern::v1::ListTokensResponse& resp) {
    Table t({"NAME", "ROLE", "CREATED", "BY", "EXPIRES", "LAST USED", "REVOKED"});
    auto at = [](const google::protobuf::Timestamp& ts, bool set) { return set ? when(ts) : std::string("-"); };
    for (const auto& tk : resp.tokens()) {
      t.add({tk.name(), shown(tk.role()), at(tk.created(), true), tk.created_by(),
             at(tk.expires(), tk.has_expires()), at(tk.last_used(), tk.has_last_used()),
             tk.revoked() ? "yes" : "-"});
    }
    t.print(c.out);
  };
  return c.show("token list", &AdminStub::ListTokens, tern::v1::ListTokensRequest(), print);
}

int cmd_token_revoke(const CtlContext& c, const std::string& name) {
  tern::v1::RevokeTokenRequest req;
  req.set_name(name);
  tern::v1::RevokeTokenResponse resp;
  const int rc = c.call(absl::StrCat("token revoke ", name), &AdminStub::RevokeToken, req, resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << "{}\n";
  } else {
    c.out << "token " << name << " revoked\n";
  }
  return kExitOk;
}

int cmd_cert_deny(const CtlContext& c, const std::string& serial, const std::string& cn, const std::string& reason) {
  if (serial.empty() == cn.empty()) return c.usage_error("cert deny", "give exactly one of --serial and --cn");
  tern::v1::DenyCertificateRequest req;
  req.set_serial(serial);
  req.set_common_name(cn);
  req.set_reason(reason);
  auto print = [&](const tern::v1::DeniedCertificate& d) {
    c.out << "denied " << (d.serial().empty() ? "every certificate named " + d.common_name() : "serial " + d.serial())
          << "; refused from now on, and any agent stream it holds is closed\n";
  };
  return c.show("cert deny", &AdminStub::DenyCertificate, req, print);
}

int cmd_cert_allow(const CtlContext& c, const std::string& serial, const std::string& cn) {
  if (serial.empty() == cn.empty()) return c.usage_error("cert allow", "give exactly one of --serial and --cn");
  tern::v1::AllowCertificateRequest req;
  req.set_serial(serial);
  req.set_common_name(cn);
  tern::v1::AllowCertificateResponse resp;
  const int rc = c.call("cert allow", &AdminStub::AllowCertificate, req, resp);
  if (rc == kExitOk && !c.json) c.out << "allowed again\n";
  if (rc == kExitOk && c.json) c.out << "{}\n";
  return rc;
}

int cmd_cert_denied(const CtlContext& c) {
  auto print = [&](const tern::v1::ListDeniedCertificatesResponse& resp) {
    Table t({"SERIAL", "CN", "REASON", "SINCE", "BY"});
    for (const auto& d : resp.denied()) {
      t.add({d.serial().empty() ? "-" : d.serial(), d.common_name().empty() ? "-" : d.common_name(), d.reason(),
             when(d.created()), d.created_by()});
    }
    t.print(c.out);
  };
  return c.show("cert denied", &AdminStub::ListDeniedCertificates, tern::v1::ListDeniedCertificatesRequest(), print);
}

int cmd_audit(const CtlContext& c, uint32_t limit) {
  tern::v1::ListAuditRequest req;
  req.set_limit(limit);
  auto print = [&](const tern::v1::ListAuditResponse& resp) {
    Table t({"TIME", "WHO", "ROLE", "CALL", "RESULT", "REQUEST"});
    for (const auto& e : resp.entries()) {
      std::string call = e.method().substr(e.method().find_last_of('/') + 1);
      std::string result = e.code() == "OK" ? "OK" : absl::StrCat(e.code(), ": ", e.message().substr(0, 60));
      t.add({when(e.time()), e.principal().name(), shown(e.principal().role()), call,
             result, e.request().substr(0, 60)});
    }
    t.print(c.out);
  };
  return c.show("audit", &AdminStub::ListAudit, req, print);
}

}  // namespace

void add_version_command(CLI::App& app, CtlCommands& cmds) {
  auto client_only = std::make_shared<bool>(false);
  auto* version = app.add_subcommand("version", "print ternctl's and the coordinator's versions");
  version->add_flag("--client", *client_only, "only ternctl's own version; do not call the coordinator");
  cmds.push_back({version, [client_only](const CtlContext& c) { return cmd_version(c, *client_only); },
                  [client_only] { return *client_only; }});
}

void add_admin_commands(CLI::App& app, CtlCommands& cmds) {
  struct Args {
    std::string token_name, token_role = "viewer", token_ttl, serial, cn, reason;
    uint32_t audit_limit = 50;
  };
  auto a = std::make_shared<Args>();
  auto* whoami = app.add_subcommand("whoami", "who the coordinator thinks you are, and your role");
  auto* token = app.add_subcommand("token", "bearer tokens for ternctl and API callers (admin)");
  token->require_subcommand(1);
  auto* token_create = token->add_subcommand("create", "create a token; prints its secret once");
  token_create->add_option("name", a->token_name, "who or what it is for")->required();
  token_create->add_option("--role", a->token_role, "viewer, operator or admin")
      ->check(CLI::IsMember({"viewer", "operator", "admin"}));
  token_create->add_option("--ttl", a->token_ttl, "how long it works (default 90d as 2160h; at most 3 years)");
  auto* token_list = token->add_subcommand("list", "tokens (never their secrets), when they expire and were last used");
  auto* token_revoke = token->add_subcommand("revoke", "revoke a token");
  token_revoke->add_option("name", a->token_name, "the token's name")->required();
  auto* cert = app.add_subcommand("cert", "revoke client certificates without replacing the CA (admin)");
  cert->require_subcommand(1);
  auto* cert_deny = cert->add_subcommand("deny", "refuse a certificate from now on, by serial or by CN");
  cert_deny->add_option("--serial", a->serial, "its serial, as `openssl x509 -noout -serial` prints it");
  cert_deny->add_option("--cn", a->cn, "every certificate with this CN (a host id or an operator's name)");
  cert_deny->add_option("--reason", a->reason, "why, for the record");
  auto* cert_allow = cert->add_subcommand("allow", "take a certificate off the deny list");
  cert_allow->add_option("--serial", a->serial, "its serial");
  cert_allow->add_option("--cn", a->cn, "its CN");
  auto* cert_denied = cert->add_subcommand("denied", "the deny list");
  cmds.push_back({cert_deny, [a](const CtlContext& c) { return cmd_cert_deny(c, a->serial, a->cn, a->reason); }});
  cmds.push_back({cert_allow, [a](const CtlContext& c) { return cmd_cert_allow(c, a->serial, a->cn); }});
  cmds.push_back({cert_denied, [](const CtlContext& c) { return cmd_cert_denied(c); }});
  auto* audit = app.add_subcommand("audit", "the audit trail: every mutating call, who, when, result (admin)");
  audit->add_option("-n,--limit", a->audit_limit, "newest entries to show");
  cmds.push_back({whoami, [](const CtlContext& c) { return cmd_whoami(c); }});
  cmds.push_back(
      {token_create,
       [a](const CtlContext& c) { return cmd_token_create(c, a->token_name, a->token_role, a->token_ttl); }});
  cmds.push_back({token_list, [](const CtlContext& c) { return cmd_token_list(c); }});
  cmds.push_back({token_revoke, [a](const CtlContext& c) { return cmd_token_revoke(c, a->token_name); }});
  cmds.push_back({audit, [a](const CtlContext& c) { return cmd_audit(c, a->audit_limit); }});
}

}  // namespace tern
