#include "ctl/ctl.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/clock.h"
#include "core/duration.h"
#include "core/label_selector.h"
#include "core/version.h"
#include "core/signing.h"
#include "core/tls.h"
#include "ctl/ctl_internal.h"
#include "ctl/table.h"
#include "core/service_spec.h"
#include "core/sha256.h"
#include "tern/v1/admin.grpc.pb.h"
#include "tern/v1/fleet.grpc.pb.h"
#include "tern/v1/service.grpc.pb.h"

namespace tern {

std::string to_json(const google::protobuf::Message& msg, bool compact) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = !compact;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(msg, &out, opts);
  return out;
}

void CtlContext::set_deadline(grpc::ClientContext& ctx) const {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

// One line: what was asked, what failed, what to do.
int CtlContext::rpc_error(const std::string& what, const grpc::Status& st) const {
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      err << "ternctl: " << what << ": cannot reach the coordinator at " << coordinator << " ("
          << st.error_message() << "); is tern-coordinator running there? Set --coordinator or TERN_COORDINATOR.\n";
      return kExitUnavailable;
    case grpc::StatusCode::NOT_FOUND:
      err << "ternctl: " << what << ": " << st.error_message() << "\n";
      return kExitNotFound;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      err << "ternctl: " << what << ": refused: " << st.error_message() << "\n";
      return kExitDenied;
    case grpc::StatusCode::UNIMPLEMENTED:
      err << "ternctl: " << what << ": the coordinator at " << coordinator
          << " does not support this call; upgrade tern-coordinator\n";
      return kExitFailed;
    default:
      err << "ternctl: " << what << ": " << st.error_message() << "\n";
      return kExitFailed;
  }
}

std::string ago(const google::protobuf::Timestamp& t, int64_t now_ms) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  int64_t d = now_ms - google::protobuf::util::TimeUtil::TimestampToMilliseconds(t);
  if (d < 0) d = 0;
  d -= d % 1000;  // whole seconds are enough for a table
  return d == 0 ? "now" : format_duration(Millis(d)) + " ago";
}

std::string clock_time(const google::protobuf::Timestamp& t) {
  std::time_t secs = static_cast<std::time_t>(t.seconds());
  std::tm tm{};
  localtime_r(&secs, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

namespace {

using google::protobuf::util::TimeUtil;
using AdminStub = tern::v1::AdminService::Stub;
using FleetStub = tern::v1::FleetService::Stub;
using ServiceStub = tern::v1::ServiceService::Stub;

// The global flags as given, before they become a CtlContext.
struct GlobalFlags {
  std::string coordinator;
  std::string output = "table";
  std::string timeout = "10s";
  TlsFiles tls;
  std::string token;
  bool insecure = false;
};

std::string env_or(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// TLS with a client certificate, or TLS with a bearer token, or (only when
// asked for) plaintext.
absl::StatusOr<std::shared_ptr<grpc::Channel>> make_channel(const GlobalFlags& g) {
  if (g.insecure) {
    if (!g.tls.empty() || !g.token.empty()) {
      return absl::InvalidArgumentError("--insecure cannot be combined with --ca/--cert/--key/--token");
    }
    return grpc::CreateChannel(g.coordinator, grpc::InsecureChannelCredentials());
  }
  if (g.tls.ca.empty()) {
    return absl::InvalidArgumentError(
        "no credentials: give --ca (the fleet CA) with --cert/--key or --token (or TERN_CA, TERN_CERT, TERN_KEY, "
        "TERN_TOKEN), or --insecure for a coordinator running without TLS");
  }
  auto tls = load_tls(g.tls, /*need_cert=*/false, "ternctl");
  if (!tls.ok()) return tls.status();
  if (tls->cert_pem.empty() && g.token.empty()) {
    return absl::InvalidArgumentError("give --cert and --key, or --token, to say who you are");
  }
  auto creds = tls_channel_credentials(*tls);
  if (!g.token.empty()) creds = grpc::CompositeChannelCredentials(creds, grpc::AccessTokenCredentials(g.token));
  return grpc::CreateCustomChannel(g.coordinator, creds, tls_channel_args(*tls));
}

const char* state_word(tern::v1::HostState s) {
  switch (s) {
    case tern::v1::HOST_STATE_CONNECTED: return "connected";
    case tern::v1::HOST_STATE_DISCONNECTED: return "disconnected";
    case tern::v1::HOST_STATE_UNREACHABLE: return "unreachable";
    default: return "unknown";
  }
}

int cmd_hosts(const CtlContext& c, const std::string& selector) {
  if (auto sel = LabelSelector::parse(selector); !sel.ok()) {
    c.err << "ternctl: hosts: " << sel.status().message() << "\n";
    return kExitUsage;
  }
  tern::v1::ListHostsRequest req;
  req.set_selector(selector);
  tern::v1::ListHostsResponse resp;
  const int rc = c.call("list hosts", &FleetStub::ListHosts, req, resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
    return kExitOk;
  }
  const int64_t now = to_unix_millis(SystemClock::instance().now());
  Table t({"HOST", "STATE", "SINCE", "LAST SEEN", "VERSION", "CONNECTS", "LABELS"});
  for (const auto& h : resp.hosts()) {
    Labels labels(h.labels().begin(), h.labels().end());
    t.add({h.host_id(), state_word(h.state()), ago(h.state_since(), now), ago(h.last_seen(), now),
           h.agent_version().empty() ? "-" : h.agent_version(), std::to_string(h.connect_count()),
           labels.empty() ? "-" : format_labels(labels)});
  }
  t.print(c.out);
  if (resp.hosts().empty()) {
    c.err << (selector.empty() ? "no hosts have registered yet\n"
                             : absl::StrCat("no hosts match \"", selector, "\"\n"));
  }
  return kExitOk;
}

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
          << ", up since " << TimeUtil::ToString(server.started()) << ")\n";
    }
  }
  if (!client_only && !st.ok()) return c.rpc_error("coordinator version", st);
  return kExitOk;
}

// ---- services and artifacts ----

int cmd_service_apply(const CtlContext& c, const std::string& file) {
  auto spec = load_service_spec_file(file);
  if (!spec.ok()) {
    c.err << "ternctl: service apply: " << spec.status().message() << "\n";
    return kExitUsage;
  }
  tern::v1::ApplyServiceRequest req;
  *req.mutable_spec() = *spec;
  tern::v1::ApplyServiceResponse resp;
  const int rc = c.call(absl::StrCat("service apply ", spec->name()), &ServiceStub::ApplyService, req, resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
  } else {
    c.out << "service " << resp.service().spec().name() << (resp.changed() ? " applied" : " unchanged")
        << " (generation " << resp.service().generation() << ")\n";
  }
  return kExitOk;
}

std::string ports_word(const tern::v1::ServiceSpec& spec) {
  std::vector<std::string> parts;
  for (const auto& p : spec.ports()) {
    parts.push_back(absl::StrCat(p.public_port(), "/", p.protocol(), "->", p.blue_port(), "|", p.green_port()));
  }
  return absl::StrJoin(parts, ",");
}

int cmd_service_list(const CtlContext& c) {
  tern::v1::ListServicesResponse resp;
  const int rc = c.call("list services", &ServiceStub::ListServices, tern::v1::ListServicesRequest(), resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
    return kExitOk;
  }
  Table t({"SERVICE", "GENERATION", "SELECTOR", "PORTS (PUBLIC->BLUE|GREEN)", "KEEP WARM"});
  for (const auto& r : resp.services()) {
    t.add({r.spec().name(), std::to_string(r.generation()), r.spec().selector().empty() ? "(all)" : r.spec().selector(),
           ports_word(r.spec()), r.spec().keep_warm() ? "yes" : "no"});
  }
  t.print(c.out);
  if (resp.services().empty()) c.err << "no services yet; add one with `ternctl service apply -f SPEC.yaml`\n";
  return kExitOk;
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 3) v /= 1024, ++u;
  std::ostringstream o;
  o << std::fixed << std::setprecision(u == 0 ? 0 : 1) << v << " " << units[u];
  return o.str();
}

int cmd_artifact_push(const CtlContext& c, const std::string& file, const std::string& service,
                      const std::string& version, const std::string& kind, const std::string& name,
                      const std::string& sign_key) {
  // Hashed first, so the coordinator can check the bytes end to end.
  auto digest = sha256_file(file);
  if (!digest.ok()) {
    c.err << "ternctl: artifact push: " << digest.status().message() << "\n";
    return kExitUsage;
  }
  std::string signature;
  if (!sign_key.empty()) {
    auto sig = sign_artifact(sign_key, *digest);
    if (!sig.ok()) {
      c.err << "ternctl: artifact push: --sign-key: " << sig.status().message() << "\n";
      return kExitUsage;
    }
    signature = *std::move(sig);
  }
  std::ifstream in(file, std::ios::binary);
  in.seekg(0, std::ios::end);
  const uint64_t total = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  auto stub = tern::v1::ServiceService::NewStub(c.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::hours(1));
  tern::v1::Artifact resp;
  auto writer = stub->UploadArtifact(&ctx, &resp);
  tern::v1::UploadArtifactRequest req;
  auto* meta = req.mutable_meta();
  meta->set_service(service);
  meta->set_version(version);
  meta->set_sha256(*digest);
  meta->set_kind(kind);
  meta->set_signature(signature);
  std::string base = name.empty() ? file.substr(file.find_last_of('/') + 1) : name;
  if (kind != "tar.gz") meta->set_file_name(base);
  bool ok = writer->Write(req);
  std::string buf(64 * 1024, '\0');
  uint64_t sent = 0;
  int last_tenth = 0;
  while (ok && in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    req.Clear();
    req.set_data(buf.data(), n);
    ok = writer->Write(req);
    sent += n;
    const int tenth = total ? static_cast<int>(sent * 10 / total) : 10;
    if (total > (8u << 20) && tenth > last_tenth && !c.json) {
      c.err << "  uploaded " << human_bytes(sent) << " of " << human_bytes(total) << "\n";
      last_tenth = tenth;
    }
  }
  writer->WritesDone();
  grpc::Status st = writer->Finish();
  if (!st.ok()) return c.rpc_error(absl::StrCat("artifact push ", service, " ", version), st);
  if (c.json) {
    c.out << to_json(resp);
  } else {
    c.out << "pushed " << resp.service() << " " << resp.version() << " (" << resp.kind() << ", "
        << human_bytes(resp.size()) << ", sha256 " << resp.sha256().substr(0, 12) << ")\n";
  }
  return kExitOk;
}

int cmd_artifact_list(const CtlContext& c, const std::string& service) {
  tern::v1::ListArtifactsRequest req;
  req.set_service(service);
  tern::v1::ListArtifactsResponse resp;
  const int rc = c.call("list artifacts", &ServiceStub::ListArtifacts, req, resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
    return kExitOk;
  }
  const int64_t now = to_unix_millis(SystemClock::instance().now());
  Table t({"SERVICE", "VERSION", "KIND", "SIZE", "SHA256", "CREATED"});
  for (const auto& a : resp.artifacts()) {
    t.add({a.service(), a.version(), a.kind(), human_bytes(a.size()), a.sha256().substr(0, 12), ago(a.created(), now)});
  }
  t.print(c.out);
  return kExitOk;
}

// ---- one host ----

const char* phase_word(tern::v1::SlotPhase p) {
  switch (p) {
    case tern::v1::SLOT_PHASE_EMPTY: return "empty";
    case tern::v1::SLOT_PHASE_STAGING: return "staging";
    case tern::v1::SLOT_PHASE_STARTING: return "starting";
    case tern::v1::SLOT_PHASE_HEALTHY: return "healthy";
    case tern::v1::SLOT_PHASE_UNHEALTHY: return "unhealthy";
    case tern::v1::SLOT_PHASE_DRAINING: return "draining";
    case tern::v1::SLOT_PHASE_STOPPED: return "stopped";
    case tern::v1::SLOT_PHASE_CRASHED: return "crashed";
    default: return "-";
  }
}

const char* color_word(tern::v1::SlotColor c) {
  return c == tern::v1::SLOT_COLOR_BLUE ? "blue" : c == tern::v1::SLOT_COLOR_GREEN ? "green" : "-";
}

void print_slots(const std::vector<const tern::v1::ServiceStatus*>& services, std::ostream& out) {
  Table t({"SERVICE", "SLOT", "RELEASE", "PORT", "PID", "HEALTH", "ACTIVE", "WEIGHT", "MESSAGE"});
  for (const auto* svc : services) {
    for (const auto& sl : svc->slots()) {
      t.add({svc->service(), color_word(sl.color()), sl.release().version().empty() ? "-" : sl.release().version(),
             std::to_string(sl.port()), sl.pid() > 0 ? std::to_string(sl.pid()) : "-", phase_word(sl.phase()),
             sl.active() ? "yes" : "-", sl.weight() > 0 ? absl::StrCat(sl.weight(), "%") : "-",
             sl.message().empty() ? "" : sl.message()});
    }
  }
  t.print(out);
}

int cmd_host_history(const CtlContext& c, const std::string& host) {
  tern::v1::GetHostHistoryRequest req;
  req.set_host_id(host);
  req.set_limit(100);
  tern::v1::GetHostHistoryResponse resp;
  const int rc = c.call(absl::StrCat("host history ", host), &FleetStub::GetHostHistory, req, resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
    return kExitOk;
  }
  Table t({"TIME", "EVENT", "DETAIL"});
  for (const auto& e : resp.events()) t.add({TimeUtil::ToString(e.time()).substr(0, 19), e.kind(), e.detail()});
  t.print(c.out);
  return kExitOk;
}

int cmd_host_status(const CtlContext& c, const std::string& host) {
  tern::v1::GetHostRequest req;
  req.set_host_id(host);
  tern::v1::Host resp;
  const int rc = c.call(absl::StrCat("host status ", host), &FleetStub::GetHost, req, resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
    return kExitOk;
  }
  const int64_t now = to_unix_millis(SystemClock::instance().now());
  c.out << "host " << resp.host_id() << ": " << state_word(resp.state()) << " since " << ago(resp.state_since(), now)
      << ", agent " << (resp.agent_version().empty() ? "-" : resp.agent_version()) << "\n";
  if (resp.services().empty()) {
    c.out << "no services on this host\n";
    return kExitOk;
  }
  std::vector<const tern::v1::ServiceStatus*> svcs;
  for (const auto& sv : resp.services()) svcs.push_back(&sv);
  print_slots(svcs, c.out);
  return kExitOk;
}

// Follows a host operation's stream: one line per step, then the outcome.
int follow_operation(const CtlContext& c, const std::string& what,
                     grpc::ClientReaderInterface<tern::v1::HostOperationUpdate>& reader) {
  tern::v1::HostOperationUpdate u, last;
  bool done = false;
  while (reader.Read(&u)) {
    if (!c.json) c.out << "  " << clock_time(u.time()) << "  " << u.message() << "\n" << std::flush;
    if (u.done()) {
      done = true;
      last = u;
    }
  }
  grpc::Status st = reader.Finish();
  if (!st.ok()) return c.rpc_error(what, st);
  if (!done) {
    c.err << "ternctl: " << what << ": the coordinator ended the stream without an outcome; check `ternctl host status`\n";
    return kExitFailed;
  }
  if (c.json) c.out << to_json(last);
  if (last.result().outcome() != tern::v1::COMMAND_OUTCOME_SUCCEEDED) {
    c.err << "ternctl: " << what << " failed: " << last.result().message() << "\n";
    return kExitFailed;
  }
  if (!c.json) {
    std::vector<const tern::v1::ServiceStatus*> svcs{&last.status()};
    print_slots(svcs, c.out);
  }
  return kExitOk;
}

struct DeployFlags {
  std::string version, url, sha256, wait = "15m";
  uint32_t weight = 100;
  bool no_switch = false;
};

int cmd_host_deploy(const CtlContext& c, const std::string& host, const std::string& service, const DeployFlags& f) {
  if (f.version.empty()) {
    c.err << "ternctl: host deploy: --version is required\n";
    return kExitUsage;
  }
  if (f.weight == 0 || f.weight > 100) {
    c.err << "ternctl: host deploy: --weight must be 1-100\n";
    return kExitUsage;
  }
  auto wait = parse_duration(f.wait);
  if (!wait.ok()) {
    c.err << "ternctl: host deploy: --wait: " << wait.status().message() << "\n";
    return kExitUsage;
  }
  auto stub = tern::v1::FleetService::NewStub(c.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + *wait);
  tern::v1::DeployHostRequest req;
  req.set_host_id(host);
  req.set_service(service);
  req.set_version(f.version);
  req.set_weight(f.weight);
  req.set_no_switch(f.no_switch);
  if (!f.url.empty()) {
    req.mutable_release()->set_url(f.url);
    req.mutable_release()->set_sha256(f.sha256);
    req.mutable_release()->set_version(f.version);
    req.mutable_release()->set_name(f.url.substr(f.url.find_last_of('/') + 1));
  }
  if (!c.json) c.out << "deploying " << service << " " << f.version << " to " << host << "\n";
  auto reader = stub->DeployHost(&ctx, req);
  return follow_operation(c, absl::StrCat("deploy ", service, " ", f.version, " to ", host), *reader);
}

int cmd_host_rollback(const CtlContext& c, const std::string& host, const std::string& service, const std::string& wait) {
  auto w = parse_duration(wait);
  if (!w.ok()) {
    c.err << "ternctl: host rollback: --wait: " << w.status().message() << "\n";
    return kExitUsage;
  }
  auto stub = tern::v1::FleetService::NewStub(c.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + *w);
  tern::v1::RollbackHostRequest req;
  req.set_host_id(host);
  req.set_service(service);
  if (!c.json) c.out << "rolling back " << service << " on " << host << "\n";
  auto reader = stub->RollbackHost(&ctx, req);
  return follow_operation(c, absl::StrCat("rollback ", service, " on ", host), *reader);
}


const char* role_word(tern::v1::Role r) {
  switch (r) {
    case tern::v1::ROLE_VIEWER: return "viewer";
    case tern::v1::ROLE_OPERATOR: return "operator";
    case tern::v1::ROLE_ADMIN: return "admin";
    case tern::v1::ROLE_AGENT: return "agent";
    default: return "-";
  }
}

int cmd_whoami(const CtlContext& c) {
  tern::v1::Principal p;
  const int rc = c.call("whoami", &AdminStub::WhoAmI, tern::v1::WhoAmIRequest(), p);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(p);
  } else {
    c.out << p.name() << " (" << role_word(p.role()) << ", by " << p.via() << ")\n";
  }
  return kExitOk;
}

int cmd_token_create(const CtlContext& c, const std::string& name, const std::string& role) {
  tern::v1::CreateTokenRequest req;
  req.set_name(name);
  req.set_role(role == "admin" ? tern::v1::ROLE_ADMIN : role == "operator" ? tern::v1::ROLE_OPERATOR
                                                                            : tern::v1::ROLE_VIEWER);
  tern::v1::CreateTokenResponse resp;
  const int rc = c.call(absl::StrCat("token create ", name), &AdminStub::CreateToken, req, resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
  } else {
    c.out << resp.secret() << "\n";
    c.err << "token " << name << " (" << role << ") created; the secret above is shown only now. "
        << "Use it with --token or TERN_TOKEN.\n";
  }
  return kExitOk;
}

int cmd_token_list(const CtlContext& c) {
  tern::v1::ListTokensResponse resp;
  const int rc = c.call("token list", &AdminStub::ListTokens, tern::v1::ListTokensRequest(), resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
    return kExitOk;
  }
  Table t({"NAME", "ROLE", "CREATED", "BY", "REVOKED"});
  for (const auto& tk : resp.tokens()) {
    t.add({tk.name(), role_word(tk.role()), TimeUtil::ToString(tk.created()).substr(0, 19), tk.created_by(),
           tk.revoked() ? "yes" : "-"});
  }
  t.print(c.out);
  return kExitOk;
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

int cmd_audit(const CtlContext& c, uint32_t limit) {
  tern::v1::ListAuditRequest req;
  req.set_limit(limit);
  tern::v1::ListAuditResponse resp;
  const int rc = c.call("audit", &AdminStub::ListAudit, req, resp);
  if (rc != kExitOk) return rc;
  if (c.json) {
    c.out << to_json(resp);
    return kExitOk;
  }
  Table t({"TIME", "WHO", "ROLE", "CALL", "RESULT", "REQUEST"});
  for (const auto& e : resp.entries()) {
    std::string call = e.method().substr(e.method().find_last_of('/') + 1);
    std::string result = e.code() == "OK" ? "OK" : absl::StrCat(e.code(), ": ", e.message().substr(0, 60));
    t.add({TimeUtil::ToString(e.time()).substr(0, 19), e.principal().name(), role_word(e.principal().role()), call,
           result, e.request().substr(0, 60)});
  }
  t.print(c.out);
  return kExitOk;
}

}  // namespace

int run_ctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  GlobalFlags g;
  const char* env = std::getenv("TERN_COORDINATOR");
  g.coordinator = env && *env ? env : "127.0.0.1:7400";

  CLI::App app{"ternctl: drive tern blue/green and canary rollouts"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags may follow the subcommand: `ternctl hosts -o json`
  app.add_option("--coordinator", g.coordinator, "coordinator address (env TERN_COORDINATOR; default 127.0.0.1:7400)");
  app.add_option("-o,--output", g.output, "output format")->check(CLI::IsMember({"table", "json"}));
  app.add_option("--timeout", g.timeout, "deadline for each call (e.g. 10s)");
  g.tls.ca = env_or("TERN_CA");
  g.tls.cert = env_or("TERN_CERT");
  g.tls.key = env_or("TERN_KEY");
  g.token = env_or("TERN_TOKEN");
  g.insecure = env_or("TERN_INSECURE") == "1";
  app.add_option("--ca", g.tls.ca, "fleet CA certificate (PEM) (env TERN_CA)");
  app.add_option("--cert", g.tls.cert, "your client certificate (PEM); its OU is your role (env TERN_CERT)");
  app.add_option("--key", g.tls.key, "your private key (PEM) (env TERN_KEY)");
  app.add_option("--token", g.token, "a bearer token instead of a certificate (env TERN_TOKEN)");
  app.add_option("--server-name", g.tls.server_name, "name to expect in the coordinator's certificate");
  app.add_flag("--insecure", g.insecure, "plaintext, for a coordinator started with --insecure (env TERN_INSECURE=1)");

  std::string selector;
  auto* hosts = app.add_subcommand("hosts", "list the fleet's hosts and their state");
  hosts->add_option("-l,--selector", selector, "label selector, e.g. role=web,zone!=c");

  bool client_only = false;
  auto* version = app.add_subcommand("version", "print ternctl's and the coordinator's versions");
  version->add_flag("--client", client_only, "only ternctl's own version; do not call the coordinator");

  auto* service = app.add_subcommand("service", "apply and list service specs");
  service->require_subcommand(1);
  std::string spec_file;
  auto* service_apply = service->add_subcommand("apply", "validate a service spec and store it; agents get it");
  service_apply->add_option("-f,--file", spec_file, "service spec YAML")->required();
  auto* service_list = service->add_subcommand("list", "list services");

  auto* artifact = app.add_subcommand("artifact", "upload and list release artifacts");
  artifact->require_subcommand(1);
  std::string art_file, art_service, art_version, art_kind, art_name;
  auto* artifact_push = artifact->add_subcommand("push", "upload an executable or a .tar.gz bundle as a version");
  artifact_push->add_option("file", art_file, "the file to upload")->required();
  artifact_push->add_option("--service", art_service, "the service it belongs to")->required();
  artifact_push->add_option("--version", art_version, "the version it is")->required();
  artifact_push->add_option("--kind", art_kind, "executable or tar.gz (default: told apart by content)")
      ->check(CLI::IsMember({"executable", "tar.gz"}));
  artifact_push->add_option("--name", art_name, "file name of an executable in the release dir (default: its own)");
  std::string sign_key;
  artifact_push->add_option("--sign-key", sign_key,
                            "sign it with this ed25519 private key (PEM); agents with trusted_keys require it");

  auto* whoami = app.add_subcommand("whoami", "who the coordinator thinks you are, and your role");
  auto* token = app.add_subcommand("token", "bearer tokens for ternctl and API callers (admin)");
  token->require_subcommand(1);
  std::string token_name, token_role = "viewer";
  auto* token_create = token->add_subcommand("create", "create a token; prints its secret once");
  token_create->add_option("name", token_name, "who or what it is for")->required();
  token_create->add_option("--role", token_role, "viewer, operator or admin")
      ->check(CLI::IsMember({"viewer", "operator", "admin"}));
  auto* token_list = token->add_subcommand("list", "tokens (never their secrets)");
  auto* token_revoke = token->add_subcommand("revoke", "revoke a token");
  token_revoke->add_option("name", token_name, "the token's name")->required();
  uint32_t audit_limit = 50;
  auto* audit = app.add_subcommand("audit", "the audit trail: every mutating call, who, when, result (admin)");
  audit->add_option("-n,--limit", audit_limit, "newest entries to show");
  auto* artifact_list = artifact->add_subcommand("list", "list artifacts");
  artifact_list->add_option("--service", art_service, "only this service's");

  auto* host = app.add_subcommand("host", "one host: deploy, roll back, status");
  host->require_subcommand(1);
  std::string host_id, host_service, wait = "15m";
  DeployFlags deploy_flags;
  auto* host_deploy = host->add_subcommand("deploy", "deploy a release on one host (stage, start, probe, switch, drain)");
  host_deploy->add_option("host", host_id, "host id")->required();
  host_deploy->add_option("service", host_service, "service name")->required();
  host_deploy->add_option("--version", deploy_flags.version, "version to deploy")->required();
  host_deploy->add_option("--weight", deploy_flags.weight, "share of new connections for the new release (1-100)");
  host_deploy->add_flag("--no-switch", deploy_flags.no_switch, "start and probe only; leave traffic where it is");
  host_deploy->add_option("--url", deploy_flags.url, "fetch the release from this http(s) URL instead of the store");
  host_deploy->add_option("--sha256", deploy_flags.sha256, "sha256 of the file at --url");
  host_deploy->add_option("--wait", deploy_flags.wait, "give up waiting after this long (default 15m)");
  auto* host_rollback = host->add_subcommand("rollback", "flip a host back to the previous release");
  host_rollback->add_option("host", host_id, "host id")->required();
  host_rollback->add_option("service", host_service, "service name")->required();
  host_rollback->add_option("--wait", wait, "give up waiting after this long (default 15m)");
  auto* host_status = host->add_subcommand("status", "slots of every service on a host");
  host_status->add_option("host", host_id, "host id")->required();
  auto* host_history = host->add_subcommand("history", "a host's events: connects, losses, refusals");
  host_history->add_option("host", host_id, "host id")->required();

  auto* rollout = app.add_subcommand("rollout", "fleet-wide rollouts in waves");
  rollout->require_subcommand(1);
  RolloutFlags rf;
  std::string rollout_id, reason, rollout_wait = "1h";
  uint64_t generation = 0;
  bool active_only = false;
  auto add_spec_flags = [&](CLI::App* cmd) {
    cmd->add_option("-f,--file", rf.file, "rollout spec YAML (see examples/rollout.yaml)");
    cmd->add_option("service", rf.service, "service (without -f)");
    cmd->add_option("--version", rf.version, "release to roll out (without -f)");
    cmd->add_option("--waves", rf.waves, "wave sizes, cumulative: hosts or percent (default 1,10%,50%,100%)");
    cmd->add_option("--bake", rf.bake, "bake time after each wave (e.g. 2m)");
    cmd->add_option("-l,--selector", rf.selector, "only hosts matching this label selector");
    cmd->add_option("--max-parallel", rf.max_parallel, "hosts deploying at once in a wave (0: all)");
    cmd->add_option("--max-failed", rf.max_failed, "hosts that may fail before on-failure applies (default 0)");
    cmd->add_option("--on-failure", rf.on_failure, "rollback (default) or pause")
        ->check(CLI::IsMember({"rollback", "pause"}));
    cmd->add_option("--spread", rf.spread, "label whose values early waves spread across (e.g. zone)");
  };
  auto* rollout_plan = rollout->add_subcommand("plan", "dry run: which hosts go in which wave");
  add_spec_flags(rollout_plan);
  auto* rollout_start = rollout->add_subcommand("start", "start a rollout");
  add_spec_flags(rollout_start);
  rollout_start->add_flag("--watch", rf.watch, "follow it until it ends (exit code = outcome)");
  rollout_start->add_option("--wait", rollout_wait, "with --watch: give up after this long (default 1h)");
  auto* rollout_watch = rollout->add_subcommand("watch", "follow a rollout; exits with its outcome");
  rollout_watch->add_option("id", rollout_id, "rollout id")->required();
  rollout_watch->add_option("--wait", rollout_wait, "give up after this long (default 1h)");
  auto* rollout_status = rollout->add_subcommand("status", "a rollout and its hosts");
  rollout_status->add_option("id", rollout_id, "rollout id")->required();
  auto* rollout_list = rollout->add_subcommand("list", "rollouts, newest first");
  rollout_list->add_option("--service", rf.service, "only this service's");
  rollout_list->add_flag("--active", active_only, "only those not finished");
  auto* rollout_history = rollout->add_subcommand("history", "every event of a rollout");
  rollout_history->add_option("id", rollout_id, "rollout id")->required();
  std::map<std::string, CLI::App*> rollout_verbs;
  for (const char* verb : {"pause", "resume", "promote", "abort", "rollback"}) {
    const std::map<std::string, std::string> help = {
        {"pause", "stop starting new deploys"},
        {"resume", "continue a paused rollout"},
        {"promote", "pass the current wave's gate (or cut its bake short)"},
        {"abort", "stop where it is; hosts keep what they run"},
        {"rollback", "flip every host that got the new release back"}};
    auto* cmd = rollout->add_subcommand(verb, help.at(verb));
    cmd->add_option("id", rollout_id, "rollout id")->required();
    cmd->add_option("--generation", generation, "refuse unless the rollout is at this generation (default: current)");
    cmd->add_option("--reason", reason, "recorded in the history");
    rollout_verbs[verb] = cmd;
  }

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    // Help for a subcommand arrives as CallForHelp too, so only real errors get here.
    err << "ternctl: " << e.what() << " (see ternctl --help)\n";
    return kExitUsage;
  }
  auto timeout = parse_duration(g.timeout);
  if (!timeout.ok()) {
    err << "ternctl: --timeout: " << timeout.status().message() << "\n";
    return kExitUsage;
  }
  CtlContext c{out, err, g.coordinator, g.output == "json", *timeout, nullptr};
  if (!(*version && client_only)) {
    auto channel = make_channel(g);
    if (!channel.ok()) {
      err << "ternctl: " << channel.status().message() << "\n";
      return kExitUsage;
    }
    c.channel = *std::move(channel);
  }
  if (*hosts) return cmd_hosts(c, selector);
  if (*version) return cmd_version(c, client_only);
  if (*service_apply) return cmd_service_apply(c, spec_file);
  if (*service_list) return cmd_service_list(c);
  if (*artifact_push) return cmd_artifact_push(c, art_file, art_service, art_version, art_kind, art_name, sign_key);
  if (*whoami) return cmd_whoami(c);
  if (*token_create) return cmd_token_create(c, token_name, token_role);
  if (*token_list) return cmd_token_list(c);
  if (*token_revoke) return cmd_token_revoke(c, token_name);
  if (*audit) return cmd_audit(c, audit_limit);
  if (*artifact_list) return cmd_artifact_list(c, art_service);
  if (*host_deploy) return cmd_host_deploy(c, host_id, host_service, deploy_flags);
  if (*host_rollback) return cmd_host_rollback(c, host_id, host_service, wait);
  if (*host_status) return cmd_host_status(c, host_id);
  if (*host_history) return cmd_host_history(c, host_id);
  if (*rollout) {
    auto w = parse_duration(rollout_wait);
    if (!w.ok()) {
      err << "ternctl: --wait: " << w.status().message() << "\n";
      return kExitUsage;
    }
    rf.wait = *w;
    if (*rollout_plan) return cmd_rollout_plan(c, rf);
    if (*rollout_start) return cmd_rollout_start(c, rf);
    if (*rollout_watch) return cmd_rollout_watch(c, rollout_id, rf.wait);
    if (*rollout_status) return cmd_rollout_status(c, rollout_id);
    if (*rollout_list) return cmd_rollout_list(c, rf.service, active_only);
    if (*rollout_history) return cmd_rollout_history(c, rollout_id);
    for (const auto& [verb, cmd] : rollout_verbs) {
      if (*cmd) return cmd_rollout_command(c, verb, rollout_id, generation, reason);
    }
  }
  err << "ternctl: no command given (see ternctl --help)\n";
  return kExitUsage;
}

}  // namespace tern
